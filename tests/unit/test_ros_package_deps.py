"""ros_ws/src/s2r_ros/package.xml lists what the nodes need, so rosdep resolves it on a full ROS
install: every ROS package they import, and a rosdep key for every runtime dependency of the core
package they import (pyproject.toml), but those rosdep has no key for (installed by pip with the
core package)."""
import ast
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "ros_ws" / "src" / "s2r_ros"

# PyPI distribution (pyproject.toml) -> rosdep key (ros/rosdistro rosdep/python.yaml, or a ROS package)
ROSDEP = {
    "numpy": "python3-numpy", "scipy": "python3-scipy", "PyYAML": "python3-yaml",
    "matplotlib": "python3-matplotlib", "opencv-python-headless": "python3-opencv", "torch": "python3-torch",
    "pybullet": "python3-pybullet-pip", "casadi": "casadi-pip", "gymnasium": "python3-gymnasium-pip",
    "pyserial": "python3-serial", "dynamixel-sdk": "dynamixel_sdk",
}
# PyAV and the ONNX packages: no rosdep keys exist; pydantic: rosdep's python3-pydantic is 1.x on
# Ubuntu 24.04 and s2r needs 2.x. pip installs them with the core package, which s2r_ros requires.
NO_ROSDEP_KEY = {"av", "pydantic", "onnx", "onnxruntime", "onnxscript", "rosbags", "mcap"}


def exec_depends() -> set[str]:
    return {e.text.strip() for e in ET.parse(PKG / "package.xml").getroot().iter("exec_depend")}


def ros_imports() -> set[str]:
    """The ROS packages the nodes import (rclpy and *_msgs / *_srvs / *_interfaces)."""
    out = set()
    for f in (PKG / "s2r_ros").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for n in names:
                top = n.split(".")[0]
                if top == "rclpy" or re.search(r"_(msgs|srvs|interfaces)$", top):
                    out.add(top)
    return out


def runtime_distributions() -> set[str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.match(r"[A-Za-z0-9_.-]+", d).group(0) for d in deps}
    return {n for n in names if not n.startswith("ros-")}     # the ROS wheels are the ROS packages above


def test_every_ros_package_the_nodes_import_is_an_exec_depend():
    imported = ros_imports()
    assert {"rclpy", "sensor_msgs", "std_srvs"} <= imported       # the scan sees the imports
    assert imported <= exec_depends(), f"missing in package.xml: {sorted(imported - exec_depends())}"


def test_every_runtime_dependency_has_its_rosdep_key():
    dists = runtime_distributions()
    unknown = dists - set(ROSDEP) - NO_ROSDEP_KEY
    assert not unknown, f"new runtime dependencies without a rosdep mapping here: {sorted(unknown)}"
    missing = {ROSDEP[d] for d in dists if d in ROSDEP} - exec_depends()
    assert not missing, f"missing in package.xml: {sorted(missing)}"


def test_the_ros_package_requires_the_core_package():
    setup = (PKG / "setup.py").read_text()
    assert re.search(r"install_requires=\[[^\]]*\"s2r-robotics\"", setup)
