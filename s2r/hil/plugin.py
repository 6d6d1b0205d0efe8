"""pytest plugin of the HIL suite: the --hardware/--emulate options, the targets, the fixtures.

Loaded automatically wherever s2r is installed (entry point `pytest11`, named as this module so
`-p s2r.hil.plugin` is the same plugin). Without --hardware the targets are every `*_sim` hardware
config and every real setup whose driver has a protocol-level emulator (against that emulator),
from the config lookup order (s2r.core.resources). Fixtures are only built for tests that ask for
`hil_target`, and imports wait until then, so the plugin costs little in other test sessions.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

EMULATED_DRIVERS = ("dynamixel", "ros2")
TEMPLATE_NAME = "my_robot"          # real_robot_template.yaml: a form to fill in, not a setup


def pytest_addoption(parser):
    g = parser.getgroup("s2r hardware-in-the-loop")
    try:
        g.addoption("--hardware", action="append", default=None, metavar="CONFIG",
                    help="hardware config (a path, or a name: ./hardware_configs, $S2R_PATH, packaged) for "
                         "the HIL suite; repeatable. Default: every *_sim config, and every emulated real setup")
        g.addoption("--emulate", action="store_true",
                    help="run the HIL suite against the config's protocol-level emulator instead of the real bus")
    except ValueError:               # already added by a conftest of an older checkout
        pass


def hil_targets(config) -> list[tuple[str, bool]]:
    """(config path or name, emulate?) pairs for this session."""
    from s2r.core import resources
    from s2r.core.config import load_config

    given = config.getoption("--hardware", default=None)
    if given:
        return [(n, bool(config.getoption("--emulate", default=False))) for n in given]
    found = resources.names("hardware_config")
    targets = [(str(p), False) for n, p in found.items() if n.endswith("_sim")]
    for n, p in found.items():
        if n.endswith("_sim"):
            continue
        cfg = load_config(p)
        if cfg.driver_type in EMULATED_DRIVERS and cfg.name != TEMPLATE_NAME:
            targets.append((str(p), True))
    return targets


def pytest_generate_tests(metafunc):
    if "hil_target" in metafunc.fixturenames:
        targets = hil_targets(metafunc.config)
        ids = [Path(p).stem + ("-emulated" if emu else "") for p, emu in targets]
        metafunc.parametrize("hil_target", targets, ids=ids, scope="module")


def _isolate_ros() -> None:
    """Emulated robots talk ROS 2 on this machine only, on a domain no other process here holds,
    unless this process already is (a test suite's conftest, a second emulated target); a real
    robot keeps the network settings the shell has."""
    if not (os.environ.get("ROS_DOMAIN_ID") and os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST"):
        from s2r.core.ros_env import isolate_this_process
        isolate_this_process()


@pytest.fixture(scope="module")
def hil_config(hil_target):
    from s2r.core.config import load_config

    return load_config(hil_target[0])


@pytest.fixture(scope="module")
def hil_session(hil_config, hil_target):
    """(config, connected SafetyLayer, emulator handle or None) for one robot, shared by a module."""
    from s2r.drivers import open_driver

    with contextlib.ExitStack() as stack:
        cfg, emu = hil_config, None
        if hil_target[1]:
            from s2r.drivers.emulators import start_emulated     # as driver_node's `emulate` starts it
            _isolate_ros()
            emu = start_emulated(cfg)
            stack.callback(emu.close)
            cfg = emu.config
        # the configured hardware mode, except that sim setups run in real time like a robot
        robot = open_driver(cfg, realtime=True)
        stack.callback(robot.disconnect)
        yield cfg, robot, emu


@pytest.fixture
def robot(hil_session):
    """The robot, enabled and holding its measured position at the start of each test."""
    _, r, _ = hil_session
    ok, msg = r.enable()
    if not ok:
        ok, msg = r.reset()
    assert ok, msg
    return r


@pytest.fixture
def cfg(hil_session):
    return hil_session[0]


class _SimFaults:
    """Fault injection on the simulator: the physics server dies, as a bus does when unplugged."""

    def __init__(self, driver):
        self.driver = driver

    def inject(self, fault):
        assert fault == "unplug"
        self.driver.kill_physics()

    def clear(self, fault=None):
        """Nothing to plug back: the driver's reset_fault() starts a new physics server."""


@pytest.fixture
def fault_injector(hil_session):
    """Something with inject('unplug') / clear(): the emulator, or the simulator's own. A real robot
    has none (unplugging it needs an operator), so tests using this are skipped there."""
    _, r, emu = hil_session
    if emu is not None:
        return emu
    if hasattr(r.driver, "kill_physics"):
        return _SimFaults(r.driver)
    pytest.skip("fault injection needs the simulator or an emulator (--emulate); on a real robot, "
                "unplug the bus by hand and watch `s2r check`")
