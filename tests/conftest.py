"""Suite-wide settings: the HIL plugin, DDS isolation for every test process, and the `compute`
marker that lets `make test` run the tests without clocks on both cores."""
import os
from pathlib import Path

import pytest

from s2r.core.ros_env import isolate_this_process

# ROS 2 traffic of tests stays on this machine, on a domain no other process here holds --
# whatever the shell had set (a robot network's domain must never see test traffic).
isolate_this_process()
os.environ.setdefault("OMP_NUM_THREADS", "2")


# The HIL suite's options (--hardware, --emulate), fixtures and targets: the installed plugin
# (s2r/hil/plugin.py; its pytest11 entry point loads it in an installed s2r too).
pytest_plugins = ["s2r.hil.plugin"]


# Tests that only compute (no clocks, no node processes, no real-time threads): `make test` runs
# them on both cores (pytest-xdist), then everything else on its own, so the timing-sensitive tests
# never share the machine with the rest of the suite.
TESTS = Path(__file__).resolve().parent
COMPUTE_ONLY = ("unit/learning/", "unit/controllers/", "unit/sim/", "integration/test_ray_",
                "unit/test_executor", "unit/test_identify.py", "unit/test_excite.py", "unit/test_safety.py",
                "unit/test_safety_modes.py", "unit/test_safety_result.py", "unit/test_joint_limiter.py",
                "unit/test_tune.py", "unit/test_video.py", "unit/test_config.py", "unit/test_hostile_configs.py",
                "unit/test_robot_description.py", "unit/test_schema.py", "unit/test_gym_conformance.py",
                "unit/test_yamlio.py", "unit/test_progress.py", "unit/test_layers.py", "unit/test_demo.py",
                "unit/test_resources.py", "unit/test_ros_package_deps.py", "unit/drivers/test_dynamixel_protocol.py",
                "integration/test_ros_colcon.py")

# Real-time tests that mostly wait on their clocks (the HIL checks, streaming to one robot each):
# `make test` runs two at a time (marker `paired`), each robot's checks on one worker.
PAIRED = ("hil/",)


def pytest_collection_modifyitems(config, items):
    for item in items:
        try:
            rel = Path(str(item.path)).resolve().relative_to(TESTS).as_posix()
        except ValueError:
            continue                    # a test from outside tests/ (pytest --pyargs s2r.hil)
        if rel.startswith(COMPUTE_ONLY):
            item.add_marker(pytest.mark.compute)
        elif rel.startswith(PAIRED):
            # one robot's checks on one worker (its session is module-scoped), two robots at a time
            target = getattr(item, "callspec", None) and item.callspec.id.split("-")[0]
            item.add_marker(pytest.mark.paired)
            item.add_marker(pytest.mark.xdist_group(str(target or rel)))
