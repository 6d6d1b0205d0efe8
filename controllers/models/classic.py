"""Benchmark systems as continuous CasADi models: xdot = f(x, u).

Angles are measured from hanging straight down (theta = 0) so that "upright" is theta = pi for the
pendulum, the cart-pole and the acrobot. States of mechanical systems are [positions; velocities].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import casadi as ca
import numpy as np

from ..dynamics import Dynamics

__all__ = ["Model", "pendulum", "cartpole", "acrobot", "two_link_arm", "point_mass", "arm"]


@dataclass(frozen=True)
class Model:
    """A continuous-time model: symbols x, u and the expression xdot = f(x, u)."""

    name: str
    x: ca.SX
    u: ca.SX
    xdot: ca.SX
    nq: int | None = None                       # number of positions when x = [q; v]
    state_names: tuple[str, ...] = ()
    control_names: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)
    u_lower: np.ndarray | None = None           # natural actuator limits, if the model has any
    u_upper: np.ndarray | None = None

    @property
    def nx(self) -> int:
        return self.x.shape[0]

    @property
    def nu(self) -> int:
        return self.u.shape[0]

    @property
    def ode(self) -> ca.Function:
        return ca.Function(f"{self.name}_ode", [self.x, self.u], [self.xdot], ["x", "u"], ["xdot"])

    def discretize(self, dt: float, integrator: str = "rk4", *, jit: bool | None = None) -> Dynamics:
        """Discrete `Dynamics` with explicit Euler ('euler'), 'semi_implicit_euler' or 'rk4'."""
        return Dynamics.from_ode(self.x, self.u, self.xdot, dt, integrator, self.nq,
                                 name=f"{self.name}_{integrator}", jit=jit)


def _positive(**kw):
    for k, v in kw.items():
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{k} must be a positive number, got {v}")


def pendulum(m: float = 1.0, l: float = 1.0, g: float = 9.81, damping: float = 0.0,
             inertia: str = "point") -> Model:
    """Torque-driven pendulum, x = [theta, theta_dot], theta = 0 hanging.

    inertia='point': mass at distance l (I = m l^2); 'rod': uniform rod of length l (I = m l^2 / 3,
    centre of mass at l/2): with m = l = 1, g = 10 this is Gym's Pendulum-v1 with theta_gym = theta - pi.
    """
    _positive(m=m, l=l)
    if inertia not in ("point", "rod"):
        raise ValueError(f"inertia must be 'point' or 'rod', got {inertia!r}")
    I, lc = (m * l * l, l) if inertia == "point" else (m * l * l / 3.0, l / 2.0)
    x, u = ca.SX.sym("x", 2), ca.SX.sym("u", 1)
    th, thd = x[0], x[1]
    thdd = (u[0] - m * g * lc * ca.sin(th) - damping * thd) / I
    return Model("pendulum", x, u, ca.vertcat(thd, thdd), 1, ("theta", "theta_dot"), ("torque",),
                 dict(m=m, l=l, g=g, damping=damping, inertia=inertia))


def cartpole(m_cart: float = 1.0, m_pole: float = 0.1, l: float = 0.5, g: float = 9.81) -> Model:
    """Cart-pole, x = [p, theta, p_dot, theta_dot], force on the cart; pole mass at distance l.

    Tedrake, Underactuated Robotics, ch. 3 (theta = 0 hanging). The acados `pendulum_on_cart`
    example is the same model with its angle shifted by pi.
    """
    _positive(m_cart=m_cart, m_pole=m_pole, l=l)
    x, u = ca.SX.sym("x", 4), ca.SX.sym("u", 1)
    th, pd, thd, f = x[1], x[2], x[3], u[0]
    s, c = ca.sin(th), ca.cos(th)
    den = m_cart + m_pole * s * s
    pdd = (f + m_pole * s * (l * thd * thd + g * c)) / den
    thdd = (-f * c - m_pole * l * thd * thd * c * s - (m_cart + m_pole) * g * s) / (l * den)
    return Model("cartpole", x, u, ca.vertcat(pd, thd, pdd, thdd), 2,
                 ("p", "theta", "p_dot", "theta_dot"), ("force",),
                 dict(m_cart=m_cart, m_pole=m_pole, l=l, g=g))


def _double_pendulum(name, B, m1, m2, l1, lc1, lc2, I1c, I2c, b1, b2, g, control_names) -> Model:
    """Planar two-link chain (Tedrake, Underactuated Robotics, ch. 3): M qdd + C qd = tau_g + B u - b qd."""
    x = ca.SX.sym("x", 4)
    u = ca.SX.sym("u", B.shape[1])
    q1, q2, qd1, qd2 = x[0], x[1], x[2], x[3]
    s1, s2, c2, s12 = ca.sin(q1), ca.sin(q2), ca.cos(q2), ca.sin(q1 + q2)
    I1, I2 = I1c + m1 * lc1 ** 2, I2c + m2 * lc2 ** 2
    M = ca.vertcat(ca.horzcat(I1 + I2 + m2 * l1 ** 2 + 2 * m2 * l1 * lc2 * c2, I2 + m2 * l1 * lc2 * c2),
                   ca.horzcat(I2 + m2 * l1 * lc2 * c2, I2))
    Cqd = ca.vertcat(-2 * m2 * l1 * lc2 * s2 * qd2 * qd1 - m2 * l1 * lc2 * s2 * qd2 * qd2,
                     m2 * l1 * lc2 * s2 * qd1 * qd1)
    tau_g = ca.vertcat(-m1 * g * lc1 * s1 - m2 * g * (l1 * s1 + lc2 * s12), -m2 * g * lc2 * s12)
    rhs = tau_g + ca.DM(B) @ u - Cqd - ca.vertcat(b1 * qd1, b2 * qd2)
    # closed-form 2x2 inverse keeps the expression graph small
    det = M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0]
    qdd = ca.vertcat(M[1, 1] * rhs[0] - M[0, 1] * rhs[1], -M[1, 0] * rhs[0] + M[0, 0] * rhs[1]) / det
    return Model(name, x, u, ca.vertcat(qd1, qd2, qdd), 2,
                 ("q1", "q2", "q1_dot", "q2_dot"), control_names,
                 dict(m1=m1, m2=m2, l1=l1, lc1=lc1, lc2=lc2, I1=I1c, I2=I2c, b1=b1, b2=b2, g=g))


def acrobot(m1: float = 1.0, m2: float = 1.0, l1: float = 1.0, l2: float = 2.0, lc1: float = 0.5,
            lc2: float = 1.0, I1: float = 0.083, I2: float = 0.33, b1: float = 0.1, b2: float = 0.1,
            g: float = 9.81) -> Model:
    """Acrobot (Spong): double pendulum with only the elbow actuated. Defaults: Drake's AcrobotParams.
    I1, I2 are the link inertias about their centres of mass; upright is q = (pi, 0)."""
    _positive(m1=m1, m2=m2, l1=l1, l2=l2)
    model = _double_pendulum("acrobot", np.array([[0.0], [1.0]]), m1, m2, l1, lc1, lc2, I1, I2,
                             b1, b2, g, ("elbow_torque",))
    model.params["l2"] = l2
    return model


def two_link_arm(m1: float = 1.0, m2: float = 1.0, l1: float = 1.0, l2: float = 1.0,
                 g: float = 9.81, damping: float = 0.0) -> Model:
    """Fully actuated planar 2-link arm of uniform rods in a vertical plane (g=0: horizontal plane)."""
    _positive(m1=m1, m2=m2, l1=l1, l2=l2)
    model = _double_pendulum("two_link_arm", np.eye(2), m1, m2, l1, l1 / 2, l2 / 2,
                             m1 * l1 ** 2 / 12, m2 * l2 ** 2 / 12, damping, damping, g,
                             ("shoulder_torque", "elbow_torque"))
    model.params["l2"] = l2
    return model


def two_link_tip(model: Model, x) -> ca.SX:
    """Planar tip position of a two-link model (angles from hanging down)."""
    p = model.params
    q1, q2 = x[0], x[1]
    return ca.vertcat(p["l1"] * ca.sin(q1) + p["l2"] * ca.sin(q1 + q2),
                      -p["l1"] * ca.cos(q1) - p["l2"] * ca.cos(q1 + q2))


def point_mass(dim: int = 2, mass: float = 1.0, damping: float = 0.0) -> Model:
    """Force-driven point mass (a double integrator), x = [p; v] in `dim` dimensions."""
    if dim not in (1, 2, 3):
        raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
    _positive(mass=mass)
    x, u = ca.SX.sym("x", 2 * dim), ca.SX.sym("u", dim)
    v = x[dim:]
    axes = "xyz"[:dim]
    return Model("point_mass", x, u, ca.vertcat(v, (u - damping * v) / mass), dim,
                 tuple(f"p_{a}" for a in axes) + tuple(f"v_{a}" for a in axes),
                 tuple(f"f_{a}" for a in axes), dict(dim=dim, mass=mass, damping=damping))


def arm(rigid_body, *, gravity_compensated: bool = False, damping=0.0) -> Model:
    """A torque-controlled arm from a `RigidBodyModel`: x = [q; qd], u = tau.

    gravity_compensated=True: u is the torque added on top of g(q), like a Franka in torque mode
    (and the simulator's effort mode with gravity compensation on)."""
    n = rigid_body.nq
    x, u = ca.SX.sym("x", 2 * n), ca.SX.sym("u", n)
    q, qd = x[:n], x[n:]
    tau = u - ca.DM(np.broadcast_to(np.asarray(damping, dtype=float), (n,))) * qd
    if gravity_compensated:
        tau = tau + rigid_body.gravity_torques(q)
    qdd = rigid_body.forward_dynamics(q, qd, tau)
    names = rigid_body.joint_names
    lim = rigid_body.effort_limit
    finite = np.isfinite(lim).all()
    return Model(rigid_body.name, x, u, ca.vertcat(qd, qdd), n,
                 tuple(names) + tuple(f"{j}_dot" for j in names), tuple(f"{j}_effort" for j in names),
                 dict(urdf=str(rigid_body.urdf_path), gravity_compensated=gravity_compensated),
                 -lim if finite else None, lim if finite else None)
