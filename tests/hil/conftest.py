"""Hardware-in-the-loop fixtures. The same tests run against the simulator, a protocol-level
emulator (--emulate) or a real robot: `pytest tests/hil --hardware CONFIG`."""
import contextlib
from pathlib import Path

import pytest

from drivers import open_driver
from s2r.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "hardware_configs"


def _configs(config):
    names = config.getoption("--hardware")
    if names:
        return names
    return sorted(str(p) for p in CONFIGS.glob("*_sim.yaml"))


def pytest_generate_tests(metafunc):
    if "hil_config_path" in metafunc.fixturenames:
        paths = _configs(metafunc.config)
        metafunc.parametrize("hil_config_path", paths, ids=[Path(p).stem for p in paths], scope="module")


@pytest.fixture(scope="module")
def hil_config(hil_config_path):
    return load_config(hil_config_path)


@pytest.fixture(scope="module")
def hil_session(hil_config, request):
    """(config, connected SafetyLayer, emulator handle or None) for one robot, shared by a module."""
    with contextlib.ExitStack() as stack:
        cfg, emu = hil_config, None
        if request.config.getoption("--emulate"):
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
