"""Shared problems for the controllers tests (built once per session: compiling is the slow part)."""
import casadi as ca
import numpy as np
import pytest

from s2r.controllers import Cost
from s2r.controllers.models import RigidBodyModel, cartpole, pendulum

from ctl_helpers import PANDA_ARM_JOINTS, PANDA_URDF


@pytest.fixture(scope="session")
def cartpole_problem():
    """Cart-pole swing-up of the benchmark: m_cart=1, m_pole=0.1, l=0.5, dt=0.05, T=100, from hanging."""
    model = cartpole(1.0, 0.1, 0.5)
    dyn = model.discretize(0.05, "rk4")
    x, u = model.x, model.u
    goal = np.array([0.0, np.pi, 0.0, 0.0])
    e = x - goal
    cost = Cost(x, u, 0.5 * e.T @ ca.DM(np.diag([1.0, 1.0, 0.1, 0.1])) @ e + 0.005 * u[0] ** 2,
                0.5 * e.T @ ca.DM(np.diag([100.0, 100.0, 10.0, 10.0])) @ e, name="cartpole_swingup")
    return dyn, cost, goal


@pytest.fixture(scope="session")
def gym_pendulum():
    """Gym Pendulum-v1 (g=10, m=l=1, dt=0.05) and its cost, theta measured from hanging."""
    model = pendulum(1.0, 1.0, 10.0, inertia="rod")
    dyn = model.discretize(0.05, "semi_implicit_euler")
    x, u = model.x, model.u
    th = x[0] - 2 * np.pi * ca.floor(x[0] / (2 * np.pi)) - np.pi      # Gym's angle_normalize(theta_gym)
    cost = Cost(x, u, th ** 2 + 0.1 * x[1] ** 2 + 0.001 * u[0] ** 2, th ** 2 + 0.1 * x[1] ** 2,
                name="gym_pendulum")
    return dyn, cost


@pytest.fixture(scope="session")
def panda():
    return RigidBodyModel(PANDA_URDF, joints=PANDA_ARM_JOINTS,
                          locked={"panda_finger_joint1": 0.02, "panda_finger_joint2": 0.02})


@pytest.fixture(scope="session")
def linear_quadratic():
    """A random controllable linear system with a quadratic cost."""
    rng = np.random.default_rng(7)
    nx, nu = 4, 2
    A = np.eye(nx) + 0.1 * rng.normal(size=(nx, nx))
    B = 0.1 * rng.normal(size=(nx, nu))
    Q = np.diag([1.0, 2.0, 0.5, 0.1])
    R = np.diag([0.1, 0.3])
    Qf = 10 * np.eye(nx)
    return A, B, Q, R, Qf
