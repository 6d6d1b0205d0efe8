"""The reaching problem the mpc_node solves: `controllers.joint_reach` (no algorithm lives here),
and `reach_spec_for`, which reads its ReachSpec off a hardware config and the robot's sim model.
"""
from __future__ import annotations

import numpy as np

from s2r.controllers.joint_reach import ReachSpec, build_reach, ee_goal_params, joint_goal_params, n_params

__all__ = ["ReachSpec", "build_reach", "ee_goal_params", "joint_goal_params", "n_params", "reach_spec_for"]


def reach_spec_for(cfg, *, dt: float = 0.05, horizon: int = 20, velocity_scale: float = 0.5,
                   ee_link: str | None = None, planned_joints=None, **weights) -> ReachSpec:
    """The ReachSpec of a hardware config's robot: its description's URDF and end-effector link, the
    config's limits; the planned joints are the description's arm group (default), the others are
    locked where its home posture has them."""
    model = cfg.robot_description()
    names = list(cfg.joint_names)
    if planned_joints is None:
        planned_joints = list(model.arm_joints)
        if not planned_joints:
            raise ValueError(f"robot {model.name!r} has no arm group to plan for")
    unknown = [j for j in planned_joints if j not in names]
    if unknown:
        raise ValueError(f"planned joints {unknown} are not in the config's joints {names}")
    idx = [names.index(j) for j in planned_joints]
    spec = cfg.spec()
    from s2r.controllers.models import RigidBodyModel
    movable = RigidBodyModel(model.urdf).joint_names
    locked = {j: float(model.home.get(j, 0.0)) for j in movable if j not in planned_joints}
    home = np.array([model.home.get(j, 0.0) for j in planned_joints])
    return ReachSpec(model.urdf, tuple(planned_joints), locked, ee_link or model.ee_link,
                     spec.lower[idx], spec.upper[idx], spec.max_velocity[idx] * velocity_scale,
                     np.clip(home, spec.lower[idx], spec.upper[idx]), dt=dt, horizon=horizon, **weights)
