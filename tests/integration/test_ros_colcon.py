"""`colcon build` of ros_ws (colcon and ament_package from PyPI), what it installs, and the
installed launch files turning the bringup YAML into launch_ros Nodes.

There is no `launch` / `launch_ros` on PyPI, so the launch files are executed against minimal
stand-ins that record what they are given (the real ones take the same keyword arguments).
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from s2r.launch import load_bringup

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
NODES = ["driver_node", "camera_node", "mpc_node", "policy_node", "reach_sequencer", "recorder_node"]


def colcon() -> str:
    exe = shutil.which("colcon") or str(Path(sys.executable).parent / "colcon")
    if not os.path.exists(exe):
        pytest.fail("colcon is not installed (pip install colcon-common-extensions ros-ament-package)")
    return exe


def stub_launch_modules(monkeypatch):
    """Record-only stand-ins for the launch and launch_ros packages of a full ROS 2 install."""
    class Rec:
        def __init__(self, *args, **kw):
            self.args, self.kw = args, kw

    class LaunchConfiguration(Rec):
        def perform(self, context):
            return context[self.args[0]]

    mods = {name: types.ModuleType(name) for name in
            ("launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions")}
    mods["launch"].LaunchDescription = type("LaunchDescription", (Rec,), {})
    for n in ("DeclareLaunchArgument", "OpaqueFunction", "Shutdown"):
        setattr(mods["launch.actions"], n, type(n, (Rec,), {}))
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch_ros.actions"].Node = type("Node", (Rec,), {})
    for name, m in mods.items():
        monkeypatch.setitem(sys.modules, name, m)


def test_colcon_build_installs_the_package_and_its_launch_files(tmp_path, monkeypatch):
    r = subprocess.run([colcon(), "--log-base", "log", "build", "--base-paths", str(REPO / "ros_ws" / "src"),
                        "--build-base", "build", "--install-base", "install"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Summary: 1 package finished" in r.stdout
    prefix = tmp_path / "install" / "s2r_ros"
    for n in NODES:                                   # `ros2 run s2r_ros <node>` looks in lib/<package>
        exe = prefix / "lib" / "s2r_ros" / n
        assert exe.is_file() and os.access(exe, os.X_OK)
    share = prefix / "share" / "s2r_ros"
    for f in ("package.xml", "launch/sim_bringup.launch.py", "launch/robot_bringup.launch.py", "launch/_bringup.py",
              "bringup/sim_panda.yaml", "bringup/robot_panda.yaml"):
        assert (share / f).is_file(), f
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "s2r_ros").is_file()
    assert (tmp_path / "install" / "setup.bash").is_file()

    # an installed node runs (and refuses a bad config in one line, exit 2)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix), ROS_DOMAIN_ID="101")
    r = subprocess.run([str(prefix / "lib" / "s2r_ros" / "camera_node"), "--ros-args", "-p", "config:=no_such_config"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "config error" in r.stdout + r.stderr

    # the installed launch files read the installed bringup YAML (found through the ament index)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    stub_launch_modules(monkeypatch)
    for launch_file, bringup in (("sim_bringup.launch.py", "sim_panda.yaml"),
                                 ("robot_bringup.launch.py", "robot_panda.yaml")):
        spec = importlib.util.spec_from_file_location(f"lf_{bringup[:-5]}", share / "launch" / launch_file)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        ld = mod.generate_launch_description()
        declare, opaque = ld.args[0]
        assert declare.args[0] == "bringup" and declare.kw["default_value"] == str(share / "bringup" / bringup)
        nodes = opaque.kw["function"]({"bringup": declare.kw["default_value"]})
        expected = load_bringup(share / "bringup" / bringup)
        assert [n.kw["name"] for n in nodes] == [n.name for n in expected.nodes]
        for node, spec_ in zip(nodes, expected.nodes):
            assert node.kw["package"] == "s2r_ros" and node.kw["executable"] == spec_.executable
            assert node.kw["parameters"] == [spec_.parameters]
            assert node.kw["remappings"] == list(spec_.remappings.items())
            assert ("on_exit" in node.kw) == spec_.required
