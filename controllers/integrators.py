"""Fixed-step integrators that turn a continuous ODE xdot = f(x, u) into a discrete step, symbolically.

`f` is any callable on CasADi expressions (a casadi.Function or a Python function). The state of a
mechanical system is x = [q; v] with nq positions first; semi-implicit (symplectic) Euler updates the
velocities first and the positions with the new velocities, which conserves energy far better than
explicit Euler at the same cost (and is what MuJoCo, PyBullet and Gym's pendulum use).
"""
from __future__ import annotations

from typing import Callable

import casadi as ca

__all__ = ["INTEGRATORS", "explicit_euler", "semi_implicit_euler", "rk4", "integrate"]


def explicit_euler(f: Callable, x, u, dt: float, nq: int | None = None):
    """x+ = x + dt f(x, u)."""
    return x + dt * f(x, u)


def semi_implicit_euler(f: Callable, x, u, dt: float, nq: int | None = None):
    """v+ = v + dt f_v(q, v, u);  q+ = q + dt f_q(q, v+, u)   (symplectic Euler, x = [q; v])."""
    if nq is None:
        raise ValueError("semi-implicit Euler needs nq: the state must be [positions; velocities]")
    n = x.shape[0]
    if not 0 < nq < n:
        raise ValueError(f"semi-implicit Euler: nq={nq} must split the {n}-dimensional state")
    q, v = x[:nq], x[nq:]
    v_next = v + dt * f(x, u)[nq:]
    q_next = q + dt * f(ca.vertcat(q, v_next), u)[:nq]
    return ca.vertcat(q_next, v_next)


def rk4(f: Callable, x, u, dt: float, nq: int | None = None):
    """Classic fourth-order Runge-Kutta with the control held constant over the step."""
    k1 = f(x, u)
    k2 = f(x + dt / 2 * k1, u)
    k3 = f(x + dt / 2 * k2, u)
    k4 = f(x + dt * k3, u)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


INTEGRATORS = {"euler": explicit_euler, "explicit_euler": explicit_euler,
               "semi_implicit_euler": semi_implicit_euler, "symplectic_euler": semi_implicit_euler,
               "rk4": rk4}


def integrate(f: Callable, x, u, dt: float, method: str = "rk4", nq: int | None = None):
    """One integration step of `method` ('euler', 'semi_implicit_euler' or 'rk4')."""
    if method not in INTEGRATORS:
        raise ValueError(f"unknown integrator {method!r}; choose one of {sorted(INTEGRATORS)}")
    if not dt > 0:
        raise ValueError(f"time step must be positive, got {dt}")
    return INTEGRATORS[method](f, x, u, dt, nq)
