"""Ready-made task: move a named link of a URDF arm to a target position, by iLQR-MPC in torque mode.

This is the controller the Panda closed-loop test runs through the sim driver and the one the demo
and the MPC node can run on a robot: it plans with the arm's rigid-body dynamics read from the same
URDF as the simulator, and outputs joint torques

* added on top of the robot's own gravity compensation (``gravity_compensated=True``: a Franka in
  torque mode, or the simulator's effort mode with gravity compensation on), or
* complete (``gravity_compensated=False``).

    reach = ArmReach(urdf, joints, "panda_hand", dt=0.01, locked={...})
    step = reach.step(q, qd, target_xyz)      # MPCStep; step.u are the torques to send
"""
from __future__ import annotations

import casadi as ca
import numpy as np

from .cost import Cost
from .dynamics import as_vector
from .ilqr import ILQR, ILQROptions
from .models import RigidBodyModel, arm
from .mpc import MPC, MPCStep
from .problem import Problem

__all__ = ["ArmReach", "quat_matrix"]


def quat_matrix(q) -> np.ndarray:
    """The rotation matrix of a quaternion (x, y, z, w), normalized first."""
    x, y, z, w = np.asarray(q, dtype=float) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


class ArmReach:
    """Receding-horizon reach of `link` to a world position.

    urdf, joints, locked: as `RigidBodyModel` (joints not listed are locked, e.g. the fingers);
    base_position / base_orientation (xyzw): where the arm's base sits in the world;
    dt: control period; horizon: MPC steps; max_iter: iLQR iterations per control step;
    budget: optional real-time budget per step in seconds; weights: position error (running,
    terminal), joint velocity (running, terminal) and torque.
    """

    def __init__(self, urdf, joints, link: str, *, dt: float, horizon: int = 50,
                 locked: dict | None = None, base_position=(0.0, 0.0, 0.0),
                 base_orientation=(0.0, 0.0, 0.0, 1.0), gravity_compensated: bool = True,
                 max_iter: int = 3, budget: float | None = None, u_lower=None, u_upper=None,
                 position_weight: float = 100.0, terminal_position_weight: float = 1e4,
                 velocity_weight: float = 0.1, terminal_velocity_weight: float = 10.0,
                 torque_weight: float = 1e-3, jit: bool | None = None):
        self.rigid_body = rb = RigidBodyModel(urdf, joints=joints, locked=locked)
        self.link, self.n = link, rb.nq
        base_p = as_vector(base_position, 3, "base_position")
        base_R = quat_matrix(as_vector(base_orientation, 4, "base_orientation"))
        model = arm(rb, gravity_compensated=gravity_compensated)
        self.dynamics = model.discretize(dt, "semi_implicit_euler", jit=jit)
        x, u = model.x, model.u
        _, p = rb.link_pose(link, x[: self.n])                 # raises for an unknown link
        p_world = ca.DM(base_R) @ p + ca.DM(base_p)
        goal = ca.SX.sym("goal", 3)
        e, v = p_world - goal, x[self.n:]
        n = self.n
        self.cost = Cost.least_squares(
            x, u, ca.vertcat(e, v, u),
            np.r_[np.full(3, position_weight), np.full(n, velocity_weight), np.full(n, torque_weight)],
            ca.vertcat(e, v), np.r_[np.full(3, terminal_position_weight), np.full(n, terminal_velocity_weight)],
            goal, name=f"reach_{link}", jit=jit)
        self.problem = Problem(self.dynamics, self.cost, horizon, u_lower=u_lower, u_upper=u_upper)
        self.planner = ILQR(self.problem, options=ILQROptions(max_iter=max_iter, consistent_gains=False), jit=jit)
        self.mpc = MPC(self.planner, max_iter=max_iter, budget=budget)
        self._fk = ca.Function("link_position", [x], [p_world])

    def link_position(self, q) -> np.ndarray:
        """World position of the controlled link at joint positions q."""
        q = as_vector(q, self.n, "joint positions q")
        return np.array(self._fk(np.r_[q, np.zeros(self.n)])).ravel()

    def step(self, q, qd, target) -> MPCStep:
        """One control step from the measured (q, qd) toward `target` (world xyz); `.u` = torques."""
        x = np.r_[as_vector(q, self.n, "joint positions q"), as_vector(qd, self.n, "joint velocities qd")]
        return self.mpc.step(x, as_vector(target, 3, "target position"))

    def reset(self) -> None:
        self.mpc.reset()
