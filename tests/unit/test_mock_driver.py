"""The mock driver: exact in-memory dynamics, its fault knobs, and the safety layer's reaction to
each knob (refusal, hold or latched fault, with a one-line reason and its counter)."""
import time

import numpy as np
import pytest

from s2r.drivers import (Command, CommandMode, DriverError, DriverFault, FaultyDriver, MockDriver, MockFaults,
                     SafetyLayer, open_driver)
from s2r.core.config import load_config

CFG = load_config("panda_sim")
T = CFG.spec().period


def safe(faults=None, config=CFG, **kw):
    """The mock in lockstep behind the safety layer, connected."""
    drv = MockDriver(config, faults=faults, **kw)
    s = SafetyLayer(drv, config.safety)
    s.connect()
    return drv, s


def one_line(text: str) -> bool:
    return "\n" not in text and len(text) < 300


# ------------------------------------------------------------------ exact dynamics
def test_position_reaches_the_set_point_each_period_or_lags_first_order():
    drv = MockDriver(CFG)
    drv.connect()
    q0 = drv.read().q
    goal = q0 + 0.01
    drv.write(Command.position(goal))
    st = drv.read()
    assert np.array_equal(st.q, goal) and np.allclose(st.qd, 0.01 / T) and st.stamp == pytest.approx(T)
    lag = MockDriver(CFG, position_lag=0.5)
    lag.connect()
    for k in range(1, 4):
        lag.write(Command.position(goal))
        assert np.allclose(lag.read().q, goal - 0.01 * 0.5 ** k)


def test_velocity_integrates_effort_is_unit_inertia_with_damping_and_hold_stops():
    drv = MockDriver(CFG, damping=2.0)
    drv.connect()
    q0 = drv.read().q
    v = np.linspace(-0.5, 0.5, 9)
    for _ in range(10):
        drv.write(Command.velocity(v))
    assert np.allclose(drv.read().q, q0 + 10 * T * v) and np.array_equal(drv.read().qd, v)
    drv.hold()
    q1 = drv.read().q
    tau = np.full(9, 3.0)
    qd, q = np.zeros(9), q1.copy()
    for _ in range(5):
        drv.write(Command.effort(tau))
        qd = qd + T * (tau - 2.0 * qd)
        q = q + T * qd
    st = drv.read()
    assert np.allclose(st.qd, qd) and np.allclose(st.q, q) and np.array_equal(st.effort, tau)
    drv.hold()
    drv.step(3)
    assert np.array_equal(drv.read().q, st.q) and not drv.read().qd.any()
    assert drv.stats["commands"] == 15 and drv.stats["holds"] == 2


def test_same_commands_same_states_and_every_command_is_recorded():
    def run():
        drv, s = safe(MockFaults(noise=0.01, seed=3))
        rng = np.random.default_rng(0)
        out = []
        for k in range(60):
            mode = list(CommandMode)[k // 20]
            s.write(Command(mode, 0.2 * rng.standard_normal(9)))
            st = s.read()
            out.append(np.r_[st.q, st.qd, st.stamp])
        return np.array(out), drv
    (a, drv), (b, _) = run(), run()
    assert np.array_equal(a, b) and np.ptp(a[:, 0]) > 0
    assert len(drv.sent) == drv.stats["commands"] > 0
    assert all(isinstance(c.mode, CommandMode) and c.values.shape == (9,) for c in drv.sent)


def test_open_driver_mock_opens_any_config_even_one_without_a_sim_model():
    cfg = load_config("open_manipulator_x")
    assert cfg.robot is None
    s = open_driver(cfg, "mock")
    try:
        assert s.backend == "mock" and s.spec.joint_names == cfg.joint_names and s.state == "enabled"
        q = s.read().q
        assert s.write(Command.position(q)) == "ok"
    finally:
        s.disconnect()
    with pytest.raises(ValueError, match="hardware must be auto, sim, real or mock"):
        open_driver(cfg, "fake")


def test_a_config_file_can_ask_for_the_mock_and_needs_no_robot_model(tmp_path):
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "hardware_configs" / "panda_sim.yaml").read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith(("robot:", "hardware:"))]
    f = tmp_path / "mock_panda.yaml"
    f.write_text("\n".join(["hardware: mock"] + lines) + "\n")
    cfg = load_config(str(f))
    assert cfg.hardware == "mock" and cfg.robot is None
    s = open_driver(cfg)
    try:
        assert s.backend == "mock" and s.write(Command.position(s.read().q)) == "ok"
    finally:
        s.disconnect()


def test_realtime_mock_follows_the_wall_clock_and_the_watchdog_thread_holds_it():
    s = open_driver(CFG, "mock", realtime=True)
    try:
        assert s._wd_thread is not None
        q0 = s.read().q
        v = np.zeros(9)
        v[0] = 0.5
        t0 = time.monotonic()
        assert s.write(Command.velocity(v)) in ("ok", "clamped")
        time.sleep(0.3)                        # no more commands: the watchdog holds within 2 periods
        moved, elapsed = s.read().q[0] - q0[0], time.monotonic() - t0
        assert s.counters.watchdog_trips == 1 and s.state == "holding"
        assert 0.0 < moved <= 0.5 * elapsed and moved < 0.5 * 0.3       # it stopped long before 0.3 s
    finally:
        s.disconnect()


# ------------------------------------------------------------------ fault knobs -> the safety layer's reaction
def test_disconnect_after_n_calls_latches_a_fault_until_reset():
    drv, s = safe()
    q = s.read().q
    drv.faults = MockFaults(disconnect_after=2)
    s.read()
    s.read()
    with pytest.raises(DriverFault, match="injected fault: no response from the robot"):
        s.read()
    assert s.state == "fault" and s.counters.driver_faults == 1 and one_line(s.fault_reason)
    n = len(drv.sent)
    res = s.write(Command.position(q))
    assert res.startswith("rejected: robot is fault: injected fault") and len(drv.sent) == n
    assert s.counters.rejected_fault == 1 and s.counters.driver_faults == 1
    assert s.enable()[0] is False                          # a fault needs reset
    ok, msg = s.reset()
    assert ok, msg
    assert np.array_equal(s.read().q, q)                   # held where it was, no jump
    assert s.write(Command.position(q)) == "ok"            # once per setting: it answers again


def test_a_robot_that_stays_gone_fails_the_reset():
    drv, s = safe()
    drv.faults = MockFaults(recoverable=False)
    drv.unplug()
    with pytest.raises(DriverFault):
        s.read()
    ok, msg = s.reset()
    assert not ok and msg.startswith("reset failed: injected fault") and "still gone" in msg
    assert s.state == "fault" and one_line(msg)


def test_a_stuck_joint_is_not_pulled_after_a_set_point_running_away():
    drv, s = safe(MockFaults(stuck_joints=("panda_joint2",)))
    q0 = s.read().q
    target = q0 + 0.4
    for _ in range(200):
        s.write(Command.position(target))
    q = s.read().q
    assert q[1] == q0[1]                                   # stuck
    assert np.allclose(q[[0, 2, 3, 4, 5, 6]], target[[0, 2, 3, 4, 5, 6]])
    lead = s._lim.lead[1]
    assert abs(drv.sent[-1].values[1] - q0[1]) <= lead + 1e-12     # the set-point stays near it
    assert s.counters.clamped_step > 0 and s.state == "enabled"


def test_latency_applies_commands_k_periods_late_and_a_hold_drops_those_in_flight():
    drv, s = safe(MockFaults(latency=3))
    q0 = s.read().q
    goals = [q0 + 0.001 * k for k in range(1, 8)]
    for g in goals:
        assert s.write(Command.position(g)) in ("ok", "clamped")
        if len(drv.sent) > 3:
            assert np.allclose(drv.true_state().q, drv.sent[-4].values)   # the one 3 periods ago
    assert drv.stats["delayed_commands"] == 7
    before = drv.true_state().q
    s.estop()                                              # a hold: in-flight commands never arrive
    drv.step(5)
    assert np.array_equal(drv.true_state().q, before) and s.state == "estop"
    assert s.write(Command.position(q0)).startswith("rejected: robot is estop")


def test_noise_is_seeded_and_commands_rebase_on_the_noisy_measurement():
    def reads(seed):
        drv, s = safe(MockFaults(noise=0.002, seed=seed))
        return np.array([s.read().q for _ in range(200)]), drv, s
    a, drv, s = reads(7)
    b, _, _ = reads(7)
    c, _, _ = reads(8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.std(a - drv.true_state().q, axis=0) == pytest.approx(np.full(9, 0.002), rel=0.25)
    # a position stream starts from a (noisy) reading, at most one step from it
    measured = s.read().q
    s.write(Command.position(measured + 1.0))
    assert s.state == "enabled" and np.max(np.abs(drv.sent[-1].values - measured)) < 0.02 + 0.01


def test_nan_in_the_state_is_a_fault_with_its_counter_and_reset_needs_a_good_state():
    drv, s = safe()
    q = s.read().q
    drv.faults = MockFaults(nan_after=2, nan_joints=(4,))
    s.read()
    s.read()
    with pytest.raises(DriverFault, match="non-finite or wrongly shaped state"):
        s.read()
    assert s.counters.bad_states == 1 and s.counters.driver_faults == 1 and s.state == "fault"
    assert s.write(Command.position(q)).startswith("rejected: robot is fault")
    ok, msg = s.reset()                                    # still NaN: the reset's hold reads it
    assert not ok and "non-finite" in msg
    drv.faults = MockFaults()
    assert s.reset()[0] and s.write(Command.position(q)) == "ok"


@pytest.mark.parametrize("call", ["write", "read", "hold"])
def test_a_bus_error_latches_a_driver_fault_named_in_one_line(call):
    drv, s = safe()
    q = s.read().q
    s.write(Command.position(q))
    drv.faults = MockFaults(bus_error_every=1, bus_error_on=(call,), error="servo 3 timeout")
    n = len(drv.sent)
    if call == "hold":
        s.estop()
        res = ""
    else:
        res = s.write(Command.velocity(np.zeros(9)))      # a mode switch: reads, then writes
    assert s.state == "fault" and s.counters.driver_faults == 1
    assert s.fault_reason.startswith(f"injected fault: servo 3 timeout (bus error on {call}")
    assert one_line(s.fault_reason) and len(drv.sent) == n
    if res:
        assert res.startswith("rejected: driver fault: injected fault")
    drv.faults = MockFaults()
    assert s.reset()[0] and s.write(Command.position(q)) == "ok"


def test_random_bus_errors_are_seeded():
    def first_fault(seed):
        drv, s = safe(MockFaults(bus_error_rate=0.05, seed=seed))
        q = s.read().q
        for k in range(1000):
            if s.write(Command.position(q)).startswith("rejected"):
                return k, s.fault_reason
        return None
    a, b = first_fault(1), first_fault(1)
    assert a is not None and a == b and "bus error" in a[1]
    assert first_fault(2) != a


def test_a_failing_hold_connects_in_fault_and_keeps_estop_and_watchdog_latched():
    drv, s = safe(MockFaults(fail_hold=True, error="no response from servo 3"))
    assert s.state == "fault" and "servo 3" in s.fault_reason
    assert s.write(Command.position(np.zeros(9))).startswith("rejected")
    drv.faults = MockFaults()
    assert s.reset()[0]
    q = s.read().q
    assert s.write(Command.position(q)) == "ok"
    drv.inject(fail_hold=True)
    drv.step(3)                                            # commands stop: the watchdog holds, and fails
    s.read()
    assert s.state == "fault" and s.counters.watchdog_trips == 1 and "hold not acknowledged" in s.fault_reason


def test_any_exception_type_from_the_driver_is_a_one_line_fault():
    drv, s = safe()
    drv.faults = MockFaults(bus_error_every=1, bus_error_on=("write",), error_type=ZeroDivisionError,
                            error="bus\nvanished")
    q = s.read().q
    res = s.write(Command.position(q))
    assert res.startswith("rejected: driver fault: ZeroDivisionError: injected fault: bus vanished")
    assert one_line(res) and s.state == "fault"


def test_connect_error_is_one_line_naming_the_config():
    with pytest.raises(DriverError, match=r"panda_sim.*: driver: the mock driver did not connect: "
                                          r"could not open port /dev/ttyUSB0") as e:
        open_driver(CFG, "mock", faults=MockFaults(connect_error="could not open port /dev/ttyUSB0"))
    assert one_line(str(e.value))


# ------------------------------------------------------------------ the same knobs on another backend
def test_faulty_driver_wraps_the_simulator():
    s = open_driver(CFG, "sim", realtime=False, faults=MockFaults())
    try:
        assert isinstance(s.driver, FaultyDriver) and s.backend == "sim"
        q = s.read().q
        assert s.write(Command.position(q)) == "ok"
        s.driver.unplug("injected fault: no response from the robot")
        with pytest.raises(DriverFault, match="injected fault"):
            s.read()
        assert s.state == "fault" and s.counters.driver_faults == 1
        assert s.reset()[0] and np.allclose(s.read().q, q, atol=1e-3)
    finally:
        s.disconnect()
    with pytest.raises(ValueError, match="stuck_joints: only the mock driver"):
        open_driver(CFG, "sim", realtime=False, faults=MockFaults(stuck_joints=(0,)))


def test_faulty_driver_latency_in_lockstep():
    inner = MockDriver(CFG)
    inner.connect()
    drv = FaultyDriver(inner, MockFaults(latency=2))
    q0 = drv.read().q
    for k in range(1, 6):
        drv.write(Command.position(q0 + 0.001 * k))
        assert inner.read().stamp == pytest.approx(k * T)             # one period per write
        assert np.allclose(inner.read().q, q0 + 0.001 * max(k - 2, 0))


# ------------------------------------------------------------------ bad knobs
@pytest.mark.parametrize("knobs,key", [
    (dict(disconnect_after=-1), "disconnect_after"),
    (dict(latency=1.5), "latency"),
    (dict(noise=float("nan")), "noise"),
    (dict(bus_error_rate=2.0), "bus_error_rate"),
    (dict(bus_error_on=("flush",)), "bus_error_on"),
    (dict(stuck_joints="panda_joint1"), "stuck_joints"),
    (dict(error_type=42), "error_type"),
    (dict(fail_hold="yes"), "fail_hold"),
])
def test_bad_knobs_are_refused_in_one_line_naming_the_key(knobs, key):
    with pytest.raises(ValueError, match=f"^MockFaults.{key}: ") as e:
        MockFaults(**knobs)
    assert one_line(str(e.value))


def test_unknown_joint_in_a_knob_and_bad_model_values_are_refused():
    with pytest.raises(ValueError, match=r"MockFaults.stuck_joints: 'elbow' is not one of the robot's joints"):
        MockDriver(CFG, faults=MockFaults(stuck_joints=("elbow",)))
    with pytest.raises(ValueError, match="MockDriver position_lag"):
        MockDriver(CFG, position_lag=1.0)
    with pytest.raises(ValueError, match="MockDriver q0: expected 9 finite positions"):
        MockDriver(CFG, q0=[0.0] * 3)
