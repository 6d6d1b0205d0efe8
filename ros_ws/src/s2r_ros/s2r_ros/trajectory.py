"""Joint trajectories as the driver node executes them: `controllers.joint_trajectory` (kept
importable from here)."""
from s2r.controllers.joint_trajectory import JointTrajectoryPlan, TrajectoryError

__all__ = ["JointTrajectoryPlan", "TrajectoryError"]
