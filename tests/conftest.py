"""Suite-wide settings: the HIL options and DDS isolation for every test process."""
import os

# ROS 2 traffic of tests stays on this machine and off other sessions' domains.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_addoption(parser):
    g = parser.getgroup("s2r hardware-in-the-loop")
    g.addoption("--hardware", action="append", default=None, metavar="CONFIG",
                help="hardware config (path or name in hardware_configs/) for tests/hil; repeatable. "
                     "Default: every hardware_configs/*_sim.yaml")
    g.addoption("--emulate", action="store_true",
                help="run tests/hil against the config's protocol-level emulator instead of the real bus")
