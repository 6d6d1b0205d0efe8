"""Helpers shared by the controllers tests (plain functions; fixtures live in conftest.py)."""
import casadi as ca
import numpy as np
import pybullet_data

from s2r.controllers import Dynamics, quadratic_cost

PANDA_URDF = pybullet_data.getDataPath() + "/franka_panda/panda.urdf"
PANDA_ARM_JOINTS = [f"panda_joint{i}" for i in range(1, 8)]


def wrap(a):
    """Angle to (-pi, pi]."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def central_jacobian(f, z, h=1e-6):
    """d f / d z by central differences, f: R^n -> R^m."""
    z = np.asarray(z, dtype=float)
    cols = []
    for j in range(z.size):
        d = np.zeros_like(z)
        d[j] = h
        cols.append((np.asarray(f(z + d)) - np.asarray(f(z - d))) / (2 * h))
    return np.stack(cols, axis=-1)


def linear_dynamics(A, B, jit=None):
    nx, nu = B.shape
    x, u = ca.SX.sym("x", nx), ca.SX.sym("u", nu)
    return Dynamics(x, u, ca.DM(A) @ x + ca.DM(B) @ u, name="linear", jit=jit)


def lq_cost(Q, R, Qf):
    return quadratic_cost(Q.shape[0], R.shape[0], Q, R, Qf, goal_param=False, name="lq")
