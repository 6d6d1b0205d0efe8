from glob import glob

from setuptools import setup

package_name = "s2r_ros"

NODES = ["driver_node", "camera_node", "mpc_node", "policy_node", "reach_sequencer", "recorder_node"]

setup(
    name=package_name,
    version="0.1.0",
    packages=[package_name],
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.py")),
        ("share/" + package_name + "/bringup", glob("bringup/*.yaml")),
    ],
    install_requires=["setuptools", "s2r-robotics"],       # the core package the nodes import
    zip_safe=True,
    maintainer="s2r developers",
    maintainer_email="s2r@example.invalid",
    description="ROS 2 nodes of s2r: driver, camera, MPC, policy and recorder nodes, and their launch files",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{n} = {package_name}.{n}:main" for n in NODES]},
)
