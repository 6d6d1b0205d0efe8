"""Robot models: where each simulated robot comes from (URDF, base pose, home posture, tip links,
identified joint damping, cheaper visual variants). They are the robot descriptions
(robots/*.yaml, s2r.core.robot_description): one registry for the simulator and everything else,
found by name or by path."""
from __future__ import annotations

from s2r.core import resources
from s2r.core.robot_description import RobotDescription, load_robot, robot_names

# the robot assets packaged with sim (URDFs the built-in descriptions name as `asset:...`)
ASSETS = resources.packaged_dir("asset")

def robot_model(ref: str, relative_to=None) -> RobotDescription:
    """The robot description `ref` names (a name in the lookup order, or a path); a ValueError
    (ConfigError) naming the file and key when it is missing or does not match its URDF."""
    return load_robot(ref, relative_to)


__all__ = ["ASSETS", "RobotDescription", "robot_model", "robot_names"]
