"""Hardware-in-the-loop fixtures. The same tests run against the simulator, a protocol-level
emulator (--emulate) or a real robot: `pytest tests/hil --hardware CONFIG`."""
import contextlib
from pathlib import Path

import pytest

from drivers import open_driver
from s2r.core.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "hardware_configs"


EMULATED_DRIVERS = ("dynamixel", "ros2")


def _targets(config):
    """(config path, emulate?) pairs. Default: every *_sim.yaml on the simulator, and every real
    setup whose driver has a protocol-level emulator, against that emulator."""
    names = config.getoption("--hardware")
    if names:
        return [(n, config.getoption("--emulate")) for n in names]
    targets = [(str(p), False) for p in sorted(CONFIGS.glob("*_sim.yaml"))]
    for p in sorted(CONFIGS.glob("*.yaml")):
        if p.name.endswith("_sim.yaml"):
            continue
        cfg = load_config(p)
        if cfg.driver_type in EMULATED_DRIVERS and cfg.name != "my_robot":
            targets.append((str(p), True))
    return targets


def pytest_generate_tests(metafunc):
    if "hil_target" in metafunc.fixturenames:
        targets = _targets(metafunc.config)
        ids = [Path(p).stem + ("-emulated" if emu else "") for p, emu in targets]
        metafunc.parametrize("hil_target", targets, ids=ids, scope="module")


@pytest.fixture(scope="module")
def hil_config(hil_target):
    return load_config(hil_target[0])


@pytest.fixture(scope="module")
def hil_session(hil_config, hil_target):
    """(config, connected SafetyLayer, emulator handle or None) for one robot, shared by a module."""
    with contextlib.ExitStack() as stack:
        cfg, emu = hil_config, None
        if hil_target[1]:
            from drivers.emulators import emulated
            emu = stack.enter_context(emulated(cfg))
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
