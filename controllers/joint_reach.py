"""Joint-velocity reaching of an arm's link (or a joint-space goal), the problem the mpc_node solves.

A position-controlled arm (its joint impedance controller tracks streamed set-points, as a Franka
or a Dynamixel does) is planned at the joint-velocity level:

    x = q (arm joints),  u = qd,  x_{t+1} = x_t + dt u_t                  (Dynamics)
    l = 1/2 || r(x, u, p) ||^2 with r = [ sqrt(w_ee)  (fk(q) - g),       end-effector goal
                                          sqrt(w_q)   (q - q_goal),       joint-space goal
                                          sqrt(w_rest)(q - q_rest),       posture in the null space
                                          sqrt(w_u)   u,                  effort
                                          sqrt(w_lim) soft joint limits ] (Cost.least_squares)
    |u| <= velocity limit                                                  (ILQR box limits)

fk is the URDF forward kinematics of the named link (controllers.models.RigidBodyModel). The goal
parameter p = [g (3), w_ee on/off, q_goal (n), w_q on/off] selects an end-effector or a joint-space
goal without recompiling. `controllers.MPC` runs it receding-horizon with warm starts and a
real-time budget. (`ArmReach` in reach.py is the torque-level sibling.)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import casadi as ca
import numpy as np

__all__ = ["ReachSpec", "n_params", "ee_goal_params", "joint_goal_params", "build_reach"]


@dataclass
class ReachSpec:
    urdf: str
    joints: tuple[str, ...]             # planned joints (the arm), in config order
    locked: dict                        # every other movable URDF joint -> fixed position
    ee_link: str
    lower: np.ndarray                   # joint limits of the planned joints
    upper: np.ndarray
    max_velocity: np.ndarray            # |qd| limits used as control bounds
    q_rest: np.ndarray                  # preferred posture (null-space regularization)
    dt: float = 0.05                    # planning step (s)
    horizon: int = 20                   # steps
    w_ee: float = 200.0                 # running end-effector position weight
    w_ee_terminal: float = 2000.0
    w_q: float = 20.0                   # running joint-goal weight
    w_q_terminal: float = 200.0
    w_rest: float = 0.05
    w_u: float = 0.2
    w_limits: float = 500.0
    limit_margin: float = 0.05          # rad inside the limits where the soft barrier starts
    extra: dict = field(default_factory=dict)


def n_params(n: int) -> int:
    """Size of the goal parameter of an n-joint reach."""
    return 3 + 1 + n + 1


def ee_goal_params(goal_xyz, n: int) -> np.ndarray:
    """The goal parameter for an end-effector position goal."""
    return np.concatenate([np.asarray(goal_xyz, float), [1.0], np.zeros(n), [0.0]])


def joint_goal_params(q_goal, n: int) -> np.ndarray:
    """The goal parameter for a joint-space goal."""
    return np.concatenate([np.zeros(3), [0.0], np.asarray(q_goal, float), [1.0]])


def build_reach(spec: ReachSpec, budget: float | None = None, max_iter: int = 3):
    """(mpc, fk): an MPC over iLQR for `spec`, and q -> end-effector position (3,)."""
    from .cost import Cost
    from .dynamics import Dynamics
    from .ilqr import ILQR, ILQROptions
    from .models import RigidBodyModel
    from .mpc import MPC
    from .problem import Problem

    n = len(spec.joints)
    rb = RigidBodyModel(spec.urdf, joints=list(spec.joints), locked=dict(spec.locked))
    x, u = ca.SX.sym("q", n), ca.SX.sym("qd", n)
    p = ca.SX.sym("p", n_params(n))
    g, on_ee, q_goal, on_q = p[:3], p[3], p[4:4 + n], p[4 + n]
    _, ee = rb.link_pose(spec.ee_link, x)
    lo, hi = ca.DM(spec.lower + spec.limit_margin), ca.DM(spec.upper - spec.limit_margin)
    limits = ca.vertcat(ca.fmax(x - hi, 0), ca.fmax(lo - x, 0))
    rest = x - ca.DM(spec.q_rest)

    def residual(w_ee, w_q, with_u):
        parts = [ca.sqrt(w_ee * on_ee) * (ee - g), ca.sqrt(w_q * on_q) * (x - q_goal),
                 np.sqrt(spec.w_rest) * rest, np.sqrt(spec.w_limits) * limits]
        if with_u:
            parts.append(np.sqrt(spec.w_u) * u)
        return ca.vertcat(*parts)

    cost = Cost.least_squares(x, u, residual(spec.w_ee, spec.w_q, True), 1.0,
                              residual(spec.w_ee_terminal, spec.w_q_terminal, False), 1.0, p,
                              name=f"reach_{rb.name}_{n}")
    dyn = Dynamics(x, u, x + spec.dt * u, name=f"joint_velocity_{n}", dt=spec.dt)
    vmax = np.asarray(spec.max_velocity, float)
    problem = Problem(dyn, cost, spec.horizon, u_lower=-vmax, u_upper=vmax)
    ilqr = ILQR(problem, options=ILQROptions(max_iter=max_iter))
    mpc = MPC(ilqr, budget=budget, max_iter=max_iter)
    fk_fn = rb.link_pose_function(spec.ee_link)

    def fk(q) -> np.ndarray:
        return np.asarray(fk_fn(np.asarray(q, float))[1]).reshape(3)

    return mpc, fk
