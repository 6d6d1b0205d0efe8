"""Robot bringup on a full ROS 2 install: `ros2 launch s2r_ros robot_bringup.launch.py`.

Reads bringup/robot_panda.yaml (or `bringup:=PATH`), the same file as `s2r launch robot_panda`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bringup import describe  # noqa: E402


def generate_launch_description():
    return describe("robot_panda.yaml")
