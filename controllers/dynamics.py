"""Discrete dynamics x_{t+1} = f(x_t, u_t) and its Jacobians over a whole horizon in one call.

`Dynamics` is built once from CasADi symbols: the step and its exact Jacobians are compiled (C code
when a compiler is available, see `_compiled`), then mapped over the horizon, so `jacobians(X, U)`
for T steps is one call into compiled code. `FiniteDifferenceDynamics` wraps a black-box step (a
simulator) behind the same interface with central differences.

Array conventions (every public method): a trajectory of states is (T, nx), of controls (T, nu),
Jacobians are (T, nx, nx) and (T, nx, nu); all float64, C order.
"""
from __future__ import annotations

from typing import Callable

import casadi as ca
import numpy as np

from ._compiled import FastFunction, jit as _jit, jit_many
from .integrators import integrate

__all__ = ["Dynamics", "FiniteDifferenceDynamics", "as_vector", "as_trajectory"]


def as_vector(a, n: int, what: str) -> np.ndarray:
    """Validate one finite vector of length n (clear ValueError otherwise)."""
    v = np.asarray(a, dtype=float)
    if v.size != n or (v.ndim > 1 and max(v.shape) != n):
        raise ValueError(f"{what}: expected {n} values, got shape {np.shape(a)}")
    v = v.reshape(n)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{what}: contains NaN or inf: {v}")
    return v


def as_trajectory(a, T: int | None, n: int, what: str) -> np.ndarray:
    """Validate a finite (T, n) array (T=None: any length >= 1)."""
    m = np.asarray(a, dtype=float)
    if m.ndim == 1 and n == 1:
        m = m.reshape(-1, 1)
    if m.ndim != 2 or m.shape[1] != n or (T is not None and m.shape[0] != T) or m.shape[0] < 1:
        want = f"({T if T is not None else 'T'}, {n})"
        raise ValueError(f"{what}: expected shape {want}, got {np.shape(a)}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{what}: contains NaN or inf")
    return np.ascontiguousarray(m)


def _check_symbol(s, what: str) -> ca.SX:
    if not isinstance(s, ca.SX) or not s.is_column() or not s.is_valid_input():
        raise ValueError(f"{what} must be a column of pure CasADi SX symbols (casadi.SX.sym)")
    return s


class Dynamics:
    """Discrete dynamics from CasADi symbols: `Dynamics(x, u, x_next)`.

    x, u: SX symbol columns; x_next: SX expression of (x, u). Use `Dynamics.from_ode` to discretize
    a continuous model with explicit Euler, semi-implicit Euler or RK4. `jit=None` compiles to C
    when a compiler is available (see `controllers._compiled`).
    """

    is_symbolic = True

    def __init__(self, x: ca.SX, u: ca.SX, x_next: ca.SX, *, name: str = "dynamics",
                 dt: float | None = None, nq: int | None = None, jit: bool | None = None):
        _check_symbol(x, "x")
        _check_symbol(u, "u")
        x_next = ca.SX(x_next)
        if x_next.shape != x.shape:
            raise ValueError(f"x_next has shape {x_next.shape}, expected {x.shape} like x")
        self.name, self.dt, self.nq = name, dt, nq
        self.nx, self.nu = x.shape[0], u.shape[0]
        self._x, self._u, self._x_next = x, u, x_next
        try:
            # the symbolic step: compose it into other expressions (NMPC, rollouts)
            self.step_function = ca.Function(f"{name}_step", [x, u], [x_next], ["x", "u"], ["x_next"])
        except RuntimeError as exc:
            raise ValueError(f"x_next may depend only on x and u: {exc}") from exc
        fx, fu = ca.jacobian(x_next, x), ca.jacobian(x_next, u)
        # transposed outputs: CasADi's column-major A^T is numpy's C-order A
        jac = ca.Function(f"{name}_jac", [x, u], [ca.densify(fx.T), ca.densify(fu.T)])
        self.compiled_step, self.compiled_jacobians = jit_many([self.step_function, jac], jit)
        self._jit = jit
        self._step = FastFunction(self.compiled_step)
        self._horizon: dict[tuple, FastFunction] = {}
        self._second_order: ca.Function | None = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_ode(cls, x: ca.SX, u: ca.SX, xdot: ca.SX | Callable, dt: float,
                 integrator: str = "rk4", nq: int | None = None, *, name: str = "dynamics",
                 jit: bool | None = None) -> "Dynamics":
        """Discretize xdot = f(x, u) (an SX expression of x, u, or a callable) with `integrator`."""
        _check_symbol(x, "x")
        _check_symbol(u, "u")
        f = xdot if callable(xdot) else ca.Function("ode", [x, u], [xdot])
        x_next = integrate(f, x, u, dt, integrator, nq)
        return cls(x, u, x_next, name=name, dt=dt, nq=nq, jit=jit)

    # ------------------------------------------------------------------ evaluation
    def _mapped(self, kind: str, n: int) -> FastFunction:
        key = (kind, n)
        if key not in self._horizon:
            if kind == "jac":
                f = self.compiled_jacobians.map(n)
            elif kind == "step":
                f = self.compiled_step.map(n)
            elif kind == "rollout":
                f = self.compiled_step.mapaccum(n)
            else:
                raise KeyError(kind)
            self._horizon[key] = FastFunction(f)
        return self._horizon[key]

    def step(self, x, u) -> np.ndarray:
        """One step x+ = f(x, u)."""
        x = as_vector(x, self.nx, "state x")
        u = as_vector(u, self.nu, "control u")
        return self._step(x, u)[0].copy()

    def step_batch(self, X, U) -> np.ndarray:
        """Many independent steps at once: X (N, nx), U (N, nu) -> (N, nx)."""
        X = as_trajectory(X, None, self.nx, "states X")
        U = as_trajectory(U, X.shape[0], self.nu, "controls U")
        return self._mapped("step", X.shape[0])(X, U)[0].reshape(X.shape).copy()

    def rollout(self, x0, U) -> np.ndarray:
        """Open-loop rollout from x0 under controls U (T, nu): returns states (T+1, nx)."""
        x0 = as_vector(x0, self.nx, "initial state x0")
        U = as_trajectory(U, None, self.nu, "controls U")
        T = U.shape[0]
        out = self._mapped("rollout", T)(x0, U)[0]
        X = np.empty((T + 1, self.nx))
        X[0] = x0
        X[1:] = out.reshape(T, self.nx)
        return X

    def jacobians(self, X, U) -> tuple[np.ndarray, np.ndarray]:
        """fx (T, nx, nx) and fu (T, nx, nu) at every (x_t, u_t), in one compiled call."""
        X = as_trajectory(X, None, self.nx, "states X")
        U = as_trajectory(U, X.shape[0], self.nu, "controls U")
        return self._jacobians(X, U)

    def _jacobians(self, X: np.ndarray, U: np.ndarray):
        T = X.shape[0]
        fxT, fuT = self._mapped("jac", T)(X, U)
        return fxT.reshape(T, self.nx, self.nx).copy(), fuT.reshape(T, self.nx, self.nu).copy()

    def second_order_function(self) -> ca.Function:
        """(x, u, lam) -> (Hxx, Huu, Hux) of lam . f(x, u): the DDP tensor terms (Tassa 2012 eq. 5)."""
        if self._second_order is None:
            lam = ca.SX.sym("lam", self.nx)
            z = ca.vertcat(self._x, self._u)
            H = ca.hessian(ca.dot(lam, self._x_next), z)[0]
            nx = self.nx
            f = ca.Function(f"{self.name}_hess", [self._x, self._u, lam],
                            [ca.densify(H[:nx, :nx]), ca.densify(H[nx:, nx:]), ca.densify(H[nx:, :nx].T)])
            self._second_order = _jit(f, self._jit)
        return self._second_order


class FiniteDifferenceDynamics:
    """Black-box discrete dynamics (e.g. one simulator step) with central-difference Jacobians.

    step(x, u) -> x_next on (nx,), (nu,) arrays; with `batched=True` it instead takes (N, nx),
    (N, nu) and returns (N, nx), and all 2 (nx + nu) T perturbed steps run in one call.
    """

    is_symbolic = False

    def __init__(self, step: Callable, nx: int, nu: int, *, eps: float = 1e-6,
                 batched: bool = False, dt: float | None = None, name: str = "fd_dynamics"):
        if not callable(step):
            raise ValueError("step must be callable")
        if nx < 1 or nu < 1:
            raise ValueError(f"nx and nu must be positive, got {nx}, {nu}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self._f, self.nx, self.nu, self.eps, self.batched = step, int(nx), int(nu), eps, batched
        self.dt, self.name, self.nq = dt, name, None
        self.step_function = None

    def _call(self, X: np.ndarray, U: np.ndarray) -> np.ndarray:
        if self.batched:
            out = np.asarray(self._f(X, U), dtype=float).reshape(X.shape[0], self.nx)
        else:
            out = np.array([np.asarray(self._f(x, u), dtype=float).reshape(self.nx) for x, u in zip(X, U)])
        return out

    def step(self, x, u) -> np.ndarray:
        x = as_vector(x, self.nx, "state x")
        u = as_vector(u, self.nu, "control u")
        return self._call(x[None], u[None])[0]

    def step_batch(self, X, U) -> np.ndarray:
        X = as_trajectory(X, None, self.nx, "states X")
        U = as_trajectory(U, X.shape[0], self.nu, "controls U")
        return self._call(X, U)

    def rollout(self, x0, U) -> np.ndarray:
        x0 = as_vector(x0, self.nx, "initial state x0")
        U = as_trajectory(U, None, self.nu, "controls U")
        X = np.empty((U.shape[0] + 1, self.nx))
        X[0] = x0
        for t, u in enumerate(U):
            X[t + 1] = self._call(X[t][None], u[None])[0]
        return X

    def jacobians(self, X, U) -> tuple[np.ndarray, np.ndarray]:
        X = as_trajectory(X, None, self.nx, "states X")
        U = as_trajectory(U, X.shape[0], self.nu, "controls U")
        return self._jacobians(X, U)

    def _jacobians(self, X: np.ndarray, U: np.ndarray):
        """Central differences, all perturbations of all steps stacked into one batch."""
        T, nx, nu, h = X.shape[0], self.nx, self.nu, self.eps
        n = nx + nu
        Z = np.concatenate([X, U], axis=1)                       # (T, n)
        D = np.concatenate([np.eye(n), -np.eye(n)]) * h          # (2n, n)
        Zp = (Z[:, None, :] + D[None]).reshape(T * 2 * n, n)
        Y = self._call(Zp[:, :nx], Zp[:, nx:]).reshape(T, 2, n, nx)
        J = (Y[:, 0] - Y[:, 1]) / (2 * h)                        # (T, n, nx): d x+ / d z_j
        J = J.transpose(0, 2, 1)                                 # (T, nx, n)
        return np.ascontiguousarray(J[:, :, :nx]), np.ascontiguousarray(J[:, :, nx:])
