"""Suite-wide settings: the HIL plugin and DDS isolation for every test process."""
import os

from s2r.core.ros_env import isolate_this_process

# ROS 2 traffic of tests stays on this machine, on a domain no other process here holds --
# whatever the shell had set (a robot network's domain must never see test traffic).
isolate_this_process()
os.environ.setdefault("OMP_NUM_THREADS", "2")


# The HIL suite's options (--hardware, --emulate), fixtures and targets: the installed plugin
# (s2r/hil/plugin.py; its pytest11 entry point loads it in an installed s2r too).
pytest_plugins = ["s2r.hil.plugin"]
