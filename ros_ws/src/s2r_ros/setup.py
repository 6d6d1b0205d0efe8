from glob import glob

from setuptools import setup

package_name = "s2r_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=[package_name],
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="s2r developers",
    description="ROS 2 nodes of s2r",
    license="Apache-2.0",
    entry_points={"console_scripts": []},
)
