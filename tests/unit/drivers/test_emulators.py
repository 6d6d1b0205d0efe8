"""The emulator harness: `emulated(cfg)` (a separate process steered over a pipe) and
`run_emulator(cfg)` (the foreground runner behind `s2r emulate`)."""
import os
import threading
import time

import numpy as np
import pytest

import dynamixel_sdk as sdk

from s2r.drivers import Command, DriverError, open_driver
from s2r.drivers import dynamixel_protocol as P
from s2r.drivers.emulators import bus_spec_from_config, emulated, initial_positions, run_emulator
from s2r.drivers.emulators.server import EmulatorError, EmulatorProcess
from s2r.core.config import load_config


@pytest.fixture(scope="module")
def leap():
    return load_config("leap_hand")


def test_bus_spec_follows_the_config(leap):
    spec = bus_spec_from_config(leap)
    assert spec.baudrate == 4_000_000
    assert [s.id for s in spec.servos] == list(range(16))
    assert {s.model for s in spec.servos} == {"xc330-m288"}
    q0 = initial_positions(leap)
    for s, j, q in zip(spec.servos, leap.joints, q0):
        assert s.initial_ticks == pytest.approx(P.joint_to_ticks(q, j.offset, j.sign))
        assert s.hard_stop_lower < P.joint_to_ticks(j.limits.lower, 0, 1) < P.joint_to_ticks(j.limits.upper, 0, 1) \
            < s.hard_stop_upper


def test_initial_positions_keep_off_the_limits():
    cfg = load_config("panda_ros2_control")
    q0 = initial_positions(cfg)
    spec = cfg.spec()
    room = 0.1 * (spec.upper - spec.lower)
    assert np.all(q0 >= spec.lower + room - 1e-12) and np.all(q0 <= spec.upper - room + 1e-12)
    assert q0[0] == 0.0 and q0[3] < 0       # panda_joint4 cannot be at zero


def test_emulated_dynamixel_runs_in_its_own_process(leap):
    with emulated(leap) as emu:
        assert emu.kind == "dynamixel" and emu.config.hardware == "real"
        assert emu.config.driver_params["port"] == emu.port and os.path.exists(emu.port)
        assert emu.process.info["pid"] != os.getpid()
        assert emu.process.info["frozen_objects"] > 1000     # its start-up heap is out of full collections
        robot = open_driver(emu.config)
        try:
            q0 = robot.read().q
            for _ in range(30):      # stream at the control rate (the safety watchdog holds otherwise)
                assert robot.write(Command.position(q0 + 0.05)) in ("ok", "clamped")
                time.sleep(0.01)
            assert np.abs(robot.read().q - (q0 + 0.05)).max() < 0.01
            snap = emu.snapshot()
            assert sorted(snap) == list(range(16)) and all(s["torque_enable"] == 1 for s in snap.values())
            emu.inject("unplug", ids=[5])
            deadline = time.monotonic() + 5
            while robot.status["state"] != "fault" and time.monotonic() < deadline:
                try:
                    robot.read()
                except DriverError:
                    pass
                robot.write(Command.position(q0))
            assert "5 (mf_mcp)" in robot.status["fault"]
            emu.clear()
            ok, msg = robot.reset()
            assert ok, msg
            assert emu.stats()["packets"] > 0
            with pytest.raises(ValueError, match="unknown dynamixel fault"):
                emu.inject("gremlins")
            with pytest.raises(EmulatorError, match="no servo with id"):
                emu.inject("unplug", ids=[99])
        finally:
            robot.disconnect()
        pid = emu.process.proc.pid
    assert emu.process.proc.poll() is not None, f"emulator process {pid} still running"


def test_the_emulated_config_refuses_to_fall_back_to_sim(leap):
    with emulated(leap) as emu:
        port = emu.port
    # the emulator is gone: its config must fail loudly instead of silently simulating
    dead = emu.config
    assert dead.driver_params["port"] == port
    with pytest.raises(DriverError, match="did not connect"):
        open_driver(dead)


def test_no_emulator_for_a_sim_config():
    with pytest.raises(ValueError, match="no emulator for driver type 'sim'"):
        with emulated(load_config("hand_sim")):
            pass


def test_a_bad_start_is_reported_not_hung():
    with pytest.raises(EmulatorError, match="unknown servo model"):
        EmulatorProcess("dynamixel", {"baudrate": 1000000, "servos": [{"id": 1, "model": "ax12"}]})


def test_run_emulator_serves_a_port_until_stopped(leap):
    lines, stop = [], threading.Event()
    t = threading.Thread(target=run_emulator, args=(leap,), kwargs=dict(out=lines.append, stop=stop))
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not any("port:" in ln for ln in lines) and time.monotonic() < deadline:
            time.sleep(0.01)
        port = next(ln for ln in lines if "port:" in ln).split("port:")[1].strip()
        ph, ph_port = sdk.PacketHandler(2.0), sdk.PortHandler(port)
        assert ph_port.openPort() and ph_port.setBaudRate(4000000)
        model, res, _ = ph.ping(ph_port, 7)
        assert (res, model) == (sdk.COMM_SUCCESS, 1240)
        ph_port.closePort()
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()
    assert any("16 servos" in ln for ln in lines)
