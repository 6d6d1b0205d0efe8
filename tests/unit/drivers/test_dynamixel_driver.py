"""The Dynamixel driver, unmodified, against the byte-level bus emulator on a real pty pair."""
import dataclasses
import logging
import time

import numpy as np
import pytest

from s2r.drivers import Command, DriverError, DriverFault, SafetyLayer
from s2r.drivers import dynamixel_protocol as P
from s2r.drivers.dynamixel_driver import DynamixelDriver, parse_params
from s2r.drivers.emulators import bus_spec_from_config
from s2r.drivers.emulators.dynamixel_bus import PtyBusEmulator
from s2r.core.config import ConfigError, parse_config

JOINTS = [  # (name, id, lower, upper, offset, sign)
    ("j0", 1, -1.0, 1.0, 0.0, 1),
    ("j1", 2, -0.5, 1.5, 0.3, -1),
    ("j2", 3, -1.2, 0.8, -0.2, 1),
    ("j3", 4, -0.4, 0.4, 0.0, -1),
]


def config(**driver):
    data = {
        "name": "dxl_test", "hardware": "real", "control_rate_hz": 100,
        "driver": {"type": "dynamixel", "modes": ["position", "velocity", "effort"], "port": "/dev/null",
                   "baudrate": 4000000, "model": "xc330-m288", **driver},
        "joints": [{"name": n, "id": i, "limits": {"position": [lo, hi], "velocity": 6.0, "effort": 0.5},
                    "calibration": {"offset": off, "sign": s}} for n, i, lo, hi, off, s in JOINTS],
        "safety": {"max_position_step": 0.05},
    }
    return parse_config(data, "dxl_test.yaml")


@pytest.fixture
def cfg():
    return config()


@pytest.fixture
def bus(cfg):
    with PtyBusEmulator(bus_spec_from_config(cfg), realtime=False) as emu:
        yield emu


def on(cfg, emu, **driver):
    params = {**cfg.driver_params, "port": emu.port, **driver}
    return dataclasses.replace(cfg, driver_params=params)


@pytest.fixture
def driver(cfg, bus):
    d = DynamixelDriver(on(cfg, bus))
    d.connect()
    yield d
    d.disconnect()


def settle(driver, seconds=0.3):
    t = time.monotonic()
    while time.monotonic() - t < seconds:
        st = driver.read()
        time.sleep(0.01)
    return st


# ------------------------------------------------------------------------------ config checks
@pytest.mark.parametrize("driver_params, key, reason", [
    ({"port": None}, "driver.port", "missing"),
    ({"baudrate": 123}, "driver.baudrate", "not a Dynamixel X baud rate"),
    ({"model": "ax12"}, "driver.model", "unknown servo model"),
    ({"protocol_version": 1.0}, "driver.protocol_version", "only Protocol 2.0"),
    ({"position_mode": "extended"}, "driver.position_mode", "must be one of"),
    ({"retries": -1}, "driver.retries", "must be in"),
    ({"bus_watchdog_ms": 10}, "driver.bus_watchdog_ms", "20 ms units"),
    ({"torque_off_on_disconnect": "yes"}, "driver.torque_off_on_disconnect", "true/false"),
    ({"latency_timer": 4}, "driver.latency_timer", "unknown dynamixel driver parameter"),
])
def test_bad_driver_parameters_are_refused_with_the_key(driver_params, key, reason):
    data = config().driver_params | driver_params
    cfg = dataclasses.replace(config(), driver_params={k: v for k, v in data.items() if v is not None})
    with pytest.raises(ConfigError, match=reason) as e:
        parse_params(cfg)
    assert e.value.key == key and e.value.file == "dxl_test.yaml"


def test_joint_ids_and_calibration_are_checked():
    cfg = config()
    no_id = dataclasses.replace(cfg, joints=(dataclasses.replace(cfg.joints[0], id=None),) + cfg.joints[1:])
    with pytest.raises(ConfigError, match="needs its servo id"):
        parse_params(no_id)
    dup = dataclasses.replace(cfg, joints=(cfg.joints[0], dataclasses.replace(cfg.joints[1], id=1)) + cfg.joints[2:])
    with pytest.raises(ConfigError, match="also used by joint 'j0'") as e:
        parse_params(dup)
    assert e.value.key == "joints[1].id"
    # an offset that puts the joint's range past the servo's 0..4095 ticks is a calibration error
    off = dataclasses.replace(cfg, joints=(dataclasses.replace(cfg.joints[0], offset=3.0),) + cfg.joints[1:])
    with pytest.raises(ConfigError, match="outside the servo's 0..4095") as e:
        parse_params(off)
    assert e.value.key == "joints[0].calibration"


def test_shipped_configs_validate():
    from s2r.core.config import load_config
    for name in ("leap_hand", "open_manipulator_x"):
        cfg = load_config(name)
        p = parse_params(cfg)
        assert p.port == "/dev/ttyUSB0" and len(cfg.joints) in (16, 5)


# ------------------------------------------------------------------------------ connect
def test_connect_configures_every_servo(driver, bus, cfg):
    snap = bus.snapshot()
    for j, (name, sid, lo, hi, off, sign) in zip(cfg.joints, JOINTS):
        s = snap[sid]
        assert s["torque_enable"] == 1
        assert s["operating_mode"] == P.MODE_POSITION
        assert s["return_delay_time"] == 0
        assert s["bus_watchdog"] == 5                       # 100 ms in 20 ms units
        ticks = sorted([P.joint_to_ticks(lo, off, sign), P.joint_to_ticks(hi, off, sign)])
        assert s["min_position_limit"] == int(np.ceil(ticks[0]))
        assert s["max_position_limit"] == int(np.floor(ticks[1]))
        assert s["goal_position"] == s["present_position"]  # holds where it is, no jump


def test_connect_writes_gains_current_limit_and_current_based_mode(cfg, bus):
    d = DynamixelDriver(on(cfg, bus, position_mode="current_based_position", current_limit_ma=300,
                           position_p_gain=640, position_d_gain=120))
    d.connect()
    s = bus.snapshot()[2]
    assert (s["operating_mode"], s["current_limit"], s["goal_current"]) == (P.MODE_CURRENT_BASED_POSITION, 300, 300)
    assert (s["position_p_gain"], s["position_d_gain"]) == (640, 120)
    d.disconnect()


def test_connect_names_missing_servos(cfg):
    spec = bus_spec_from_config(cfg)
    spec.servos = [s for s in spec.servos if s.id not in (2, 4)]
    with PtyBusEmulator(spec, realtime=False) as emu:
        with pytest.raises(DriverError, match=r"no answer from servo ID\(s\) 2 \(j1\), 4 \(j3\)"):
            DynamixelDriver(on(cfg, emu)).connect()


def test_connect_rides_out_one_transient_failure_and_counts_it(cfg, bus):
    """Set-up is hundreds of transactions; a servo silent for one whole retry round (3 replies lost)
    does not fail the connect: the port is cleared and set-up runs again, counted."""
    bus.inject("drop", ids=[3], count=3)
    d = DynamixelDriver(on(cfg, bus))
    d.connect()
    assert d.stats["connect_retries"] == 1 and d.stats["failed_transactions"] >= 3
    assert bus.snapshot()[3]["torque_enable"] == 1
    d.disconnect()


def test_connect_names_a_wrong_model_and_a_wrong_baud_rate(cfg, bus):
    with pytest.raises(DriverError, match="servo 1 \\(j0\\) is a xc330-m288, config says xm430-w350"):
        DynamixelDriver(on(cfg, bus, model="xm430-w350")).connect()
    with pytest.raises(DriverError, match="at 1000000 baud"):
        DynamixelDriver(on(cfg, bus, baudrate=1000000)).connect()


def test_connect_to_a_missing_port_is_a_driver_error(cfg):
    with pytest.raises(DriverError, match="cannot open /dev/does-not-exist"):
        DynamixelDriver(dataclasses.replace(cfg, driver_params={**cfg.driver_params, "port": "/dev/does-not-exist"})).connect()


def test_a_miscalibrated_joint_is_not_trusted_and_torque_stays_off(cfg, bus):
    bus.inject("position_offset", ids=[3], ticks=900)        # ~1.4 rad off
    with pytest.raises(DriverError, match=r"j2 \(servo 3\) reads .* outside .*check calibration"):
        DynamixelDriver(on(cfg, bus)).connect()
    assert all(s["torque_enable"] == 0 for s in bus.snapshot().values())


# ------------------------------------------------------------------------------ modes
def test_read_applies_offset_and_sign(driver, bus, cfg):
    st = driver.read()
    snap = bus.snapshot()
    for k, (name, sid, lo, hi, off, sign) in enumerate(JOINTS):
        ticks = snap[sid]["present_position"]
        assert st.q[k] == pytest.approx(sign * ((ticks - 2048) * 2 * np.pi / 4096 - off))
    assert st.sensors["untrusted"] == () and st.sensors["stale"] is False
    assert st.stamp <= time.monotonic()


def test_position_commands_track_through_the_calibration(driver, bus):
    target = np.array([0.4, 0.9, -0.6, -0.2])
    driver.write(Command.position(target))
    snap = bus.snapshot()
    for k, (name, sid, lo, hi, off, sign) in enumerate(JOINTS):
        assert snap[sid]["goal_position"] == round(P.joint_to_ticks(target[k], off, sign))
    st = settle(driver)
    assert np.abs(st.q - target).max() < 2 * P.RAD_PER_TICK


def test_position_goals_never_leave_the_servo_limits(driver, bus):
    driver.write(Command.position(np.array([5.0, -5.0, 5.0, -5.0])))
    for (name, sid, *_), s in zip(JOINTS, (bus.snapshot()[i] for i in (1, 2, 3, 4))):
        assert s["min_position_limit"] <= s["goal_position"] <= s["max_position_limit"]


def test_velocity_mode(driver, bus):
    driver.write(Command.velocity(np.array([0.5, 0.5, 0.0, 0.0])))
    snap = bus.snapshot()
    assert snap[1]["operating_mode"] == P.MODE_VELOCITY and snap[1]["torque_enable"] == 1
    assert snap[1]["goal_velocity"] == round(0.5 / P.RAD_S_PER_VELOCITY_UNIT)
    assert snap[2]["goal_velocity"] == -round(0.5 / P.RAD_S_PER_VELOCITY_UNIT)   # sign -1
    q0 = driver.read().q
    for _ in range(20):
        driver.write(Command.velocity(np.array([0.5, 0.5, 0.0, 0.0])))
        time.sleep(0.01)
    st = driver.read()
    assert st.qd[:2] == pytest.approx([0.5, 0.5], abs=0.05)
    assert np.all(st.q[:2] > q0[:2])


def test_effort_mode_converts_torque_to_current(driver, bus, cfg):
    tau = np.array([0.1, 0.1, -0.05, 0.0])
    driver.write(Command.effort(tau))
    kt, unit = P.MODELS["xc330-m288"].torque_constant, P.MODELS["xc330-m288"].current_unit_a
    snap = bus.snapshot()
    assert snap[1]["operating_mode"] == P.MODE_CURRENT
    assert snap[1]["goal_current"] == round(0.1 / kt / unit)
    assert snap[2]["goal_current"] == -round(0.1 / kt / unit)        # sign -1
    st = driver.read()
    assert st.effort[:3] == pytest.approx(tau[:3], abs=kt * unit)


def test_hold_switches_back_to_position_at_the_measured_position(driver, bus):
    driver.write(Command.velocity(np.array([0.8, 0.0, 0.0, 0.0])))
    time.sleep(0.1)
    driver.hold()
    snap = bus.snapshot()
    assert snap[1]["operating_mode"] == P.MODE_POSITION
    assert abs(snap[1]["goal_position"] - snap[1]["present_position"]) <= 2


@pytest.mark.parametrize("torque_off", [True, False])
def test_torque_off_on_disconnect_is_configurable(cfg, bus, torque_off):
    d = DynamixelDriver(on(cfg, bus, torque_off_on_disconnect=torque_off))
    d.connect()
    d.disconnect()
    assert all(s["torque_enable"] == (0 if torque_off else 1) for s in bus.snapshot().values())


def test_an_unsupported_mode_or_shape_is_a_driver_error(bus):
    cfg = config()
    cfg = dataclasses.replace(cfg, modes=frozenset({Command.position([0]).mode}))
    d = DynamixelDriver(on(cfg, bus))
    d.connect()
    with pytest.raises(DriverError, match="not enabled"):
        d.write(Command.effort(np.zeros(4)))
    with pytest.raises(DriverError, match="expected 4 finite values"):
        d.write(Command.position(np.zeros(3)))
    d.disconnect()


# ------------------------------------------------------------------------------ faults
def test_unplugged_bus_mid_motion_latches_a_fault_naming_the_servos(driver, bus, caplog):
    driver.write(Command.position(np.array([0.5, 0.5, 0.5, 0.3])))
    bus.inject("unplug")
    states = []
    with pytest.raises(DriverFault) as e:
        for _ in range(10):
            states.append(driver.read())
    assert len(states) == 2 and all(s.sensors["stale"] for s in states)    # within the budget: stale
    assert "servo ID(s) 1 (j0), 2 (j1), 3 (j2), 4 (j3) do not answer within" in str(e.value)
    with pytest.raises(DriverFault):
        driver.write(Command.position(np.zeros(4)))
    with pytest.raises(DriverFault):
        driver.hold()
    with pytest.raises(DriverFault, match="still faulted"):
        driver.reset_fault()
    bus.clear()
    offs = {i: s["torque_off_count"] for i, s in bus.snapshot().items()}
    driver.reset_fault()
    st = driver.read()
    snap = bus.snapshot()
    # recovery holds the measured position: goal == present, no jump to the old target ...
    assert all(abs(snap[i]["goal_position"] - snap[i]["present_position"]) <= 2 for i in (1, 2, 3, 4))
    # ... and never switched torque off on the way (an arm would drop)
    assert {i: s["torque_off_count"] for i, s in snap.items()} == offs
    assert all(s["torque_enable"] == 1 and s["bus_watchdog"] == 5 for s in snap.values())
    assert not st.sensors["stale"]


def test_reset_rides_out_one_transient_failure_and_counts_it(driver, bus):
    """Fault recovery re-probes and re-arms every servo: a servo silent for one whole retry round
    during it (3 replies lost) does not leave the robot faulted; the port is cleared and recovery
    runs once more, counted. A servo that stays silent still fails the reset."""
    bus.inject("unplug")
    with pytest.raises(DriverFault):
        for _ in range(10):
            driver.read()
    bus.clear()
    bus.inject("drop", ids=[3], count=3)
    driver.reset_fault()
    assert driver.fault is None and driver.stats["reset_retries"] == 1
    assert not driver.read().sensors["stale"]
    bus.inject("unplug", ids=[2])
    with pytest.raises(DriverFault):
        for _ in range(10):
            driver.read()
    with pytest.raises(DriverFault, match="still faulted"):
        driver.reset_fault()
    assert driver.stats["reset_retries"] == 2


def test_a_partially_unplugged_bus_names_only_the_silent_servos(driver, bus):
    bus.inject("unplug", ids=[2, 4])
    with pytest.raises(DriverFault, match=r"servo ID\(s\) 2 \(j1\), 4 \(j3\) do not answer"):
        for _ in range(10):
            driver.read()


def test_a_dropped_status_packet_is_retried_without_a_fault(driver, bus):
    bus.inject("drop", ids=[3], count=1)
    st = driver.read()
    assert not st.sensors["stale"]
    assert driver.stats["retries"] >= 1 and driver.fault is None


def test_corrupt_crc_is_retried_then_faults(driver, bus):
    bus.inject("corrupt_crc", ids=[3], count=2)     # within one cycle's retries
    assert not driver.read().sensors["stale"]
    bus.inject("corrupt_crc", ids=[3])              # every reply of servo 3
    with pytest.raises(DriverFault, match=r"servo ID\(s\) 3 \(j2\) answer with corrupt packets"):
        for _ in range(10):
            driver.read()


def test_a_slow_bus_times_out_then_faults(cfg, bus):
    d = DynamixelDriver(on(cfg, bus, retries=0, fault_after_failures=2))
    d.connect()
    bus.inject("delay", seconds=0.3)                # far beyond the 2 x 16 + 2 ms timeout
    with pytest.raises(DriverFault, match=r"servo ID\(s\) 1 \(j0\), .* do not answer within 34 ms"):
        for _ in range(5):
            d.read()
    d.disconnect()


def test_hardware_error_faults_and_reset_reboots_the_servo(driver, bus):
    bus.inject("hardware_error", ids=[2], bits=P.HW_OVERLOAD)
    with pytest.raises(DriverFault, match=r"servo 2 \(j1\) hardware error: overload"):
        driver.read()
    with pytest.raises(DriverFault):
        driver.write(Command.position(np.zeros(4)))
    offs = {i: s["torque_off_count"] for i, s in bus.snapshot().items()}
    driver.reset_fault()                              # reboots servo 2, torque back on holding
    snap = bus.snapshot()
    assert snap[2]["hardware_error_status"] == 0 and snap[2]["torque_enable"] == 1
    assert snap[2]["operating_mode"] == P.MODE_POSITION
    assert abs(snap[2]["goal_position"] - snap[2]["present_position"]) <= 2
    # the other servos kept holding throughout
    assert all(snap[i]["torque_off_count"] == offs[i] for i in (1, 3, 4))
    driver.read()


def test_connect_reboots_a_servo_with_a_latched_hardware_error(cfg, bus):
    bus.inject("hardware_error", ids=[3], bits=P.HW_ELECTRICAL_SHOCK)
    d = DynamixelDriver(on(cfg, bus))
    d.connect()
    snap = bus.snapshot()[3]
    assert snap["hardware_error_status"] == 0 and snap["torque_enable"] == 1
    d.disconnect()


def test_reset_after_a_fault_in_current_mode_returns_to_position_control(driver, bus):
    driver.write(Command.effort(np.array([0.05, 0.0, 0.0, 0.0])))
    bus.inject("unplug")
    with pytest.raises(DriverFault):
        for _ in range(10):
            driver.read()
    bus.clear()
    driver.reset_fault()
    snap = bus.snapshot()
    assert all(s["operating_mode"] == P.MODE_POSITION and s["torque_enable"] == 1 for s in snap.values())
    assert all(abs(s["goal_position"] - s["present_position"]) <= 2 for s in snap.values())


def test_a_persistent_hardware_error_keeps_the_fault(driver, bus):
    bus.inject("hardware_error", ids=[4], bits=P.HW_OVERHEATING, persistent=True)
    with pytest.raises(DriverFault, match="overheating"):
        driver.read()
    with pytest.raises(DriverFault, match="reset failed.*servo 4 \\(j3\\) hardware error: overheating"):
        driver.reset_fault()


def test_implausible_readings_are_flagged_then_fault(driver, bus):
    q0 = driver.read().q
    bus.inject("position_offset", ids=[1], ticks=1500)          # j0 reads ~2.3 rad: past its limit
    st = driver.read()
    assert st.sensors["untrusted"] == ("j0",)
    assert st.q[0] == pytest.approx(q0[0], abs=1e-3)             # last trusted value stands in
    assert st.sensors["q_raw"][0] > 1.5
    with pytest.raises(DriverFault, match=r"j0 \(servo 1\) readings not trusted for 3 cycles"):
        for _ in range(5):
            driver.read()
    bus.clear()
    driver.reset_fault()
    assert driver.read().sensors["untrusted"] == ()


def test_servo_watchdog_stops_a_current_command_when_the_host_goes_quiet(driver, bus):
    driver.write(Command.effort(np.array([0.1, 0.0, 0.0, 0.0])))
    assert bus.snapshot()[1]["present_current"] != 0
    time.sleep(0.3)                                   # host silent for 3 watchdog periods
    snap = bus.snapshot()[1]
    assert snap["bus_watchdog"] == -1 and snap["present_current"] == 0
    # the driver re-arms the watchdog after a pause, and the next command works again
    driver.write(Command.effort(np.array([0.1, 0.0, 0.0, 0.0])))
    snap = bus.snapshot()[1]
    assert snap["bus_watchdog"] == 5 and snap["goal_current"] > 0
    assert driver.stats["watchdog_rearms"] >= 1


@pytest.mark.parametrize("stalled", ["read", "write"])
def test_a_stall_between_the_watchdog_check_and_the_packet_does_not_freeze_the_servos(driver, bus, stalled):
    """The host checks how long the bus was quiet, then stalls past the servos' bus watchdog before
    its packet goes out (a loaded machine): the servos trip, and a tripped servo refuses goals
    without a status packet to say so. The driver sees the gap after the transaction, re-arms and
    sends again, so the next goals are taken (before: refused for good, the hand frozen)."""
    q0 = settle(driver, 0.1).q
    bus_fn = {"read": "read_present", "write": "sync_write"}[stalled]
    original = getattr(driver.bus, bus_fn)
    stalls = []

    def late(*args, **kw):
        if not stalls:
            stalls.append(1)
            time.sleep(0.15)                              # past the 100 ms watchdog, after the check
        return original(*args, **kw)
    setattr(driver.bus, bus_fn, late)
    rearms = driver.stats["watchdog_rearms"]
    if stalled == "read":
        driver.read()
    target = q0 + np.array([0.2, 0.0, 0.0, 0.0])
    driver.write(Command.position(target))
    assert stalls and driver.stats["watchdog_rearms"] == rearms + 1
    snap = bus.snapshot()[1]
    assert snap["bus_watchdog"] == 5
    st = settle(driver, 0.4)
    assert st.q[0] == pytest.approx(target[0], abs=0.02)


# ------------------------------------------------------------------------------ behind the safety layer
def test_control_loop_through_the_safety_layer_survives_an_unplug(cfg, bus, caplog):
    caplog.set_level(logging.CRITICAL)
    driver = DynamixelDriver(on(cfg, bus))
    robot = SafetyLayer(driver, cfg.safety)
    robot.connect()
    q0 = robot.read().q
    results, faults = [], 0
    for k in range(60):
        if k == 20:
            bus.inject("unplug")
        try:
            robot.read()
        except DriverFault:
            faults += 1
        # write never raises, whatever the bus does
        results.append(robot.write(Command.position(q0 + 0.2 * np.sin(0.1 * k))))
        time.sleep(0.005)
    assert robot.status["state"] == "fault"
    assert "do not answer" in robot.status["fault"]
    assert faults > 0 and all(r.startswith("rejected") for r in results[-10:])
    ok, msg = robot.reset()
    assert not ok and "still faulted" in msg
    bus.clear()
    ok, msg = robot.reset()
    assert ok, msg
    q_reset = robot.read().q
    snap = bus.snapshot()
    assert all(abs(snap[i]["goal_position"] - snap[i]["present_position"]) <= 2 for i in (1, 2, 3, 4))
    # first command after recovery is step-limited from the measured position
    robot.write(Command.position(q_reset + 1.0))
    st = settle(driver, 0.2)
    assert np.abs(st.q - q_reset).max() <= cfg.safety.max_position_step + 0.01
    robot.disconnect()


def test_a_late_status_packet_is_not_taken_for_the_next_transactions_answer(driver, bus):
    """A reply that misses its timeout (a loaded machine, a slow adapter) still arrives: it must
    not be read as the answer to the retry or to the next transaction with the same servo. Here
    servo 2's reply to a Velocity Limit read (4 bytes, 450) comes late; the Current Limit read
    after it must still say 1750 (a fresh-clone CI run once failed connect with 'servo 12 refused
    writing 450 to address 102': the late velocity limit taken for the current limit)."""
    timeout_s = (2 * driver.params.latency_timer_ms + 2) * 1e-3
    bus.inject("delay", ids=[2], count=2, seconds=1.5 * timeout_s)     # the retry is late too
    assert driver._read_one(2, P.ADDR_VELOCITY_LIMIT, 4) == 450
    assert driver._read_one(2, P.ADDR_CURRENT_LIMIT, 2) == 1750
    assert driver.stats["retries"] >= 1


def test_a_transaction_waits_for_the_status_bytes_without_spinning():
    """The SDK polls its non-blocking port until the status packet is in: the reading thread
    would burn a core (and the GIL) for the whole bus time. Here it sleeps in select()."""
    slow = config(baudrate=57600)                 # about 25 ms of wire time per sync read of 4 servos
    with PtyBusEmulator(bus_spec_from_config(slow), realtime=True) as emu:
        d = DynamixelDriver(on(slow, emu))
        d.connect()
        try:
            wall, cpu = time.monotonic(), time.thread_time()
            for _ in range(10):
                d.read()
            wall, cpu = time.monotonic() - wall, time.thread_time() - cpu
        finally:
            d.disconnect()
    assert wall > 0.1                             # the emulator took the bus time a real bus takes
    assert cpu < 0.15 * wall, f"{1e3 * cpu:.0f} ms of CPU over {1e3 * wall:.0f} ms of reads"
