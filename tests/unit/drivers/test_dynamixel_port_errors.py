"""The serial adapter vanishing under a connected Dynamixel driver (a real pty closed under it):
every OS-level error of the port (termios.error, OSError, SerialException) comes out of the
driver as a DriverError naming the port, so `SafetyLayer.reset` answers one line, never raises."""
import logging

import numpy as np
import pytest

from s2r.drivers import Command, DriverError, DriverFault, SafetyLayer
from s2r.drivers.dynamixel_driver import DynamixelDriver
from s2r.drivers.emulators import bus_spec_from_config
from s2r.drivers.emulators.dynamixel_bus import PtyBusEmulator

from test_dynamixel_driver import config, on  # the same servo setup as the driver tests


@pytest.fixture
def cfg():
    return config()


@pytest.fixture
def robot(cfg, caplog):
    caplog.set_level(logging.CRITICAL)
    emu = PtyBusEmulator(bus_spec_from_config(cfg), realtime=False).start()
    driver = DynamixelDriver(on(cfg, emu))
    robot = SafetyLayer(driver, cfg.safety)
    robot.connect()
    yield robot, driver, emu
    emu.stop()
    robot.disconnect()


def read_until_fault(robot, n=10):
    for _ in range(n):
        try:
            robot.read()
        except DriverFault:
            return
    pytest.fail("no fault latched")


def test_reset_after_the_adapter_vanished_during_a_fault_is_a_one_line_refusal(robot):
    """The exact path of the report: a latched fault, then the adapter disappears, then reset():
    the recovery's clearPort() used to raise termios.error out of SafetyLayer.reset."""
    robot, driver, emu = robot
    emu.inject("unplug")
    read_until_fault(robot)
    assert robot.status["state"] == "fault"
    emu.stop()                                       # the pty is gone
    ok, msg = robot.reset()
    assert not ok and "\n" not in msg
    assert msg.startswith("reset failed: ") and f"serial port {driver.params.port}" in msg, msg
    assert robot.status["state"] == "fault"
    with pytest.raises(DriverFault, match="still faulted: serial port"):
        driver.reset_fault()                         # the driver itself: a DriverError, nothing else
    assert robot.write(Command.position(np.zeros(4))).startswith("rejected")
    robot.disconnect()                               # torque-off fails quietly; the port is closed
    assert driver._port is None


def test_the_adapter_vanishing_mid_run_latches_a_fault_naming_the_port(robot):
    robot, driver, emu = robot
    q0 = robot.read().q
    emu.stop()
    results = []
    for _ in range(10):
        try:
            robot.read()
        except DriverError as e:
            assert isinstance(e, DriverFault)
        results.append(robot.write(Command.position(q0)))      # write never raises
    assert robot.status["state"] == "fault"
    fault = robot.status["fault"]
    assert f"serial port {driver.params.port}" in fault and "the adapter is gone" in fault, fault
    assert all(r.startswith("rejected") for r in results[-5:])
    ok, msg = robot.reset()
    assert not ok and msg.startswith("reset failed: ") and "\n" not in msg
    ok, msg = robot.reset()                          # and again: the refusal is stable
    assert not ok and "serial port" in msg
