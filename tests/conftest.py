"""Suite-wide settings: the HIL options and DDS isolation for every test process."""
import os

from s2r.core.ros_env import isolate_this_process

# ROS 2 traffic of tests stays on this machine, on a domain no other process here holds --
# whatever the shell had set (a robot network's domain must never see test traffic).
isolate_this_process()
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_addoption(parser):
    g = parser.getgroup("s2r hardware-in-the-loop")
    g.addoption("--hardware", action="append", default=None, metavar="CONFIG",
                help="hardware config (path or name in hardware_configs/) for tests/hil; repeatable. "
                     "Default: every hardware_configs/*_sim.yaml")
    g.addoption("--emulate", action="store_true",
                help="run tests/hil against the config's protocol-level emulator instead of the real bus")
