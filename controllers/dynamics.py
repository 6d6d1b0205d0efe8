"""Discrete dynamics x_{t+1} = f(x_t, u_t) and its Jacobians over a whole horizon in one call.

`Dynamics` is built once from CasADi symbols: the step and its exact Jacobians are compiled (C code
when a compiler is available, see `_compiled`), then mapped over the horizon, so `calc_diff` over
T steps is one call into compiled code. `FiniteDifferenceDynamics` wraps a black-box step (a
simulator, or another model) behind the same interface, its Jacobians by central differences.

The interface (`DynamicsModel`, in Crocoddyl's calc / calcDiff shape, over a horizon at once):

    data = model.create_data(T)          DynamicsData: x_next (T, nx), fx (T, nx, nx), fu (T, nx, nu)
    model.calc(data, X, U)               x_next[t] = f(X[t], U[t])
    model.calc_diff(data, X, U)          fx[t], fu[t] = df/dx, df/du at (X[t], U[t])
    model.rollout_affine(...)            closed-loop rollout under u_t = clip(u_hat + a k + K dx)

`calc` / `calc_diff` / `rollout_affine` are the solvers' hot path: they check shapes only, the caller
(a `Problem`) validated the values. `step`, `step_batch`, `rollout` and `jacobians` validate fully.
Array conventions: a trajectory of states is (T, nx), of controls (T, nu); all float64, C order.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable

import casadi as ca
import numpy as np

from ._compiled import FastFunction, jit as _jit, jit_many
from .integrators import integrate

__all__ = ["Dynamics", "DynamicsData", "DynamicsModel", "FiniteDifferenceDynamics", "as_vector", "as_trajectory"]


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


@dataclass
class DynamicsData:
    """What `calc` / `calc_diff` fill for a horizon of T steps (preallocated, reused across calls)."""

    x_next: np.ndarray   # (T, nx)
    fx: np.ndarray       # (T, nx, nx)
    fu: np.ndarray       # (T, nx, nu)

    @property
    def horizon(self) -> int:
        return self.x_next.shape[0]


def _check_horizon(data: DynamicsData, X: np.ndarray, U: np.ndarray, nx: int, nu: int) -> int:
    T = data.x_next.shape[0]
    if X.shape != (T, nx) or U.shape != (T, nu):
        raise ValueError(f"calc: expected states ({T}, {nx}) and controls ({T}, {nu}) for this data, "
                         f"got {X.shape} and {U.shape}")
    return T


class DynamicsModel(abc.ABC):
    """The interface every dynamics model implements; the validated conveniences are built on it.

    Subclasses set `name`, `nx`, `nu`, `dt`, `nq` and implement `calc` and `calc_diff` (and may
    override the rest for speed). `step_function` is the CasADi Function (x, u) -> x_next when the
    model is symbolic (NMPC and the sampling planners compile it into their own graphs), else None.
    """

    name: str
    nx: int
    nu: int
    dt: float | None = None
    nq: int | None = None
    step_function: ca.Function | None = None

    def create_data(self, T: int) -> DynamicsData:
        return DynamicsData(np.zeros((T, self.nx)), np.zeros((T, self.nx, self.nx)), np.zeros((T, self.nx, self.nu)))

    @abc.abstractmethod
    def calc(self, data: DynamicsData, X: np.ndarray, U: np.ndarray) -> np.ndarray:
        """data.x_next[t] = f(X[t], U[t]) for every t; returns data.x_next."""

    @abc.abstractmethod
    def calc_diff(self, data: DynamicsData, X: np.ndarray, U: np.ndarray) -> DynamicsData:
        """data.fx[t], data.fu[t] = the Jacobians at (X[t], U[t]); returns data."""

    def second_order_function(self) -> ca.Function:
        """(x, u, lam) -> (Hxx, Huu, Hux) of lam . f(x, u), for DDP's second-order terms."""
        raise ValueError(f"second_order (DDP) needs symbolic Dynamics, not {type(self).__name__}")

    # ------------------------------------------------------------------ validated conveniences
    def step(self, x, u) -> np.ndarray:
        """One step x+ = f(x, u)."""
        x = as_vector(x, self.nx, "state x")
        u = as_vector(u, self.nu, "control u")
        return self.calc(self.create_data(1), x[None], u[None])[0].copy()

    def step_batch(self, X, U) -> np.ndarray:
        """Many independent steps at once: X (N, nx), U (N, nu) -> (N, nx)."""
        X = as_trajectory(X, None, self.nx, "states X")
        U = as_trajectory(U, X.shape[0], self.nu, "controls U")
        return self.calc(self.create_data(X.shape[0]), X, U).copy()

    def rollout(self, x0, U) -> np.ndarray:
        """Open-loop rollout from x0 under controls U (T, nu): returns states (T+1, nx)."""
        x0 = as_vector(x0, self.nx, "initial state x0")
        U = as_trajectory(U, None, self.nu, "controls U")
        X = np.empty((U.shape[0] + 1, self.nx))
        X[0] = x0
        data = self.create_data(1)
        for t in range(U.shape[0]):
            X[t + 1] = self.calc(data, X[t:t + 1], U[t:t + 1])[0]
        return X

    def jacobians(self, X, U) -> tuple[np.ndarray, np.ndarray]:
        """fx (T, nx, nx) and fu (T, nx, nu) at every (x_t, u_t)."""
        X = as_trajectory(X, None, self.nx, "states X")
        U = as_trajectory(U, X.shape[0], self.nu, "controls U")
        data = self.calc_diff(self.create_data(X.shape[0]), X, U)
        return data.fx, data.fu

    def rollout_affine(self, x0: np.ndarray, X_ref: np.ndarray, U_ref: np.ndarray, K: np.ndarray,
                       k: np.ndarray, alpha: float, lo: np.ndarray, hi: np.ndarray):
        """The forward pass of iLQR/DDP: from x0, u_t = clip(U_ref[t] + alpha k[t] + K[t] (x_t - X_ref[t]),
        lo[t], hi[t]) and x_{t+1} = f(x_t, u_t). X_ref (>= T, nx), U_ref, k, lo, hi (T, nu), K (T, nu, nx).
        Returns states (T+1, nx) and controls (T, nu)."""
        T = U_ref.shape[0]
        X = np.empty((T + 1, self.nx))
        Un = np.empty((T, self.nu))
        X[0] = x0
        data = self.create_data(1)
        for t in range(T):
            u = U_ref[t] + alpha * k[t] + K[t] @ (X[t] - X_ref[t])
            Un[t] = np.minimum(np.maximum(u, lo[t]), hi[t])
            X[t + 1] = self.calc(data, X[t:t + 1], Un[t:t + 1])[0]
        return X, Un

    def rollout_affine_cost(self, x0, X_ref, U_ref, K, k, alpha, lo, hi, cost, P):
        """`rollout_affine` and the running costs l(x_t, u_t, P[t]) of the new trajectory (T,)
        (the terminal cost is left to the caller). Returns (X, U, l)."""
        X, U = self.rollout_affine(x0, X_ref, U_ref, K, k, alpha, lo, hi)
        T = U.shape[0]
        with np.errstate(invalid="ignore", over="ignore"):
            return X, U, cost.running_batch(X[:T], U, np.ascontiguousarray(P[:T]))


class Dynamics(DynamicsModel):
    """Discrete dynamics from CasADi symbols: `Dynamics(x, u, x_next)`.

    x, u: SX symbol columns; x_next: SX expression of (x, u). Use `Dynamics.from_ode` to discretize
    a continuous model with explicit Euler, semi-implicit Euler or RK4. `jit=None` compiles to C
    when a compiler is available (see `controllers._compiled`).
    """

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
        self._with_cost: dict[tuple, tuple] = {}            # (T, id(cost)) -> (cost, fused rollout)
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
            elif kind == "affine":
                f = self._affine_step().mapaccum("affine_rollout", n)
            else:
                raise KeyError(kind)
            self._horizon[key] = FastFunction(f)
        return self._horizon[key]

    def _affine_step(self) -> ca.Function:
        """One closed-loop step x -> f(x, clip(u_hat + alpha k + K (x - x_hat))), over the compiled step."""
        nx, nu = self.nx, self.nu
        x, xh, uh = ca.MX.sym("x", nx), ca.MX.sym("xh", nx), ca.MX.sym("uh", nu)
        KT, k, alpha = ca.MX.sym("KT", nx, nu), ca.MX.sym("k", nu), ca.MX.sym("alpha")
        lo, hi = ca.MX.sym("lo", nu), ca.MX.sym("hi", nu)
        u = ca.fmin(ca.fmax(uh + alpha * k + KT.T @ (x - xh), lo), hi)
        return ca.Function(f"{self.name}_affine_step", [x, xh, uh, KT, k, alpha, lo, hi],
                           [self.compiled_step(x, u), u])

    def calc(self, data: DynamicsData, X: np.ndarray, U: np.ndarray) -> np.ndarray:
        T = _check_horizon(data, X, U, self.nx, self.nu)
        out = self._step(X, U)[0] if T == 1 else self._mapped("step", T)(X, U)[0]
        data.x_next[...] = out.reshape(T, self.nx)
        return data.x_next

    def calc_diff(self, data: DynamicsData, X: np.ndarray, U: np.ndarray) -> DynamicsData:
        T = _check_horizon(data, X, U, self.nx, self.nu)
        fxT, fuT = self._mapped("jac", T)(X, U)
        data.fx[...] = fxT.reshape(T, self.nx, self.nx)
        data.fu[...] = fuT.reshape(T, self.nx, self.nu)
        return data

    def step(self, x, u) -> np.ndarray:
        """One step x+ = f(x, u)."""
        x = as_vector(x, self.nx, "state x")
        u = as_vector(u, self.nu, "control u")
        return self._step(x, u)[0].copy()

    def rollout(self, x0, U) -> np.ndarray:
        """Open-loop rollout from x0 under controls U (T, nu): returns states (T+1, nx), in one call."""
        x0 = as_vector(x0, self.nx, "initial state x0")
        U = as_trajectory(U, None, self.nu, "controls U")
        T = U.shape[0]
        out = self._mapped("rollout", T)(x0, U)[0]
        X = np.empty((T + 1, self.nx))
        X[0] = x0
        X[1:] = out.reshape(T, self.nx)
        return X

    def rollout_affine(self, x0, X_ref, U_ref, K, k, alpha, lo, hi):
        """`DynamicsModel.rollout_affine` as one compiled `mapaccum` call."""
        T, nx, nu = U_ref.shape[0], self.nx, self.nu
        f = self._mapped("affine", T)
        alphas = np.full(T, float(alpha))
        Xn, Un = f(x0, X_ref[:T], U_ref, K, k, alphas, lo, hi)
        X = np.empty((T + 1, nx))
        X[0] = x0
        X[1:] = Xn.reshape(T, nx)
        return X, Un.reshape(T, nu).copy()

    def rollout_affine_cost(self, x0, X_ref, U_ref, K, k, alpha, lo, hi, cost, P):
        """`DynamicsModel.rollout_affine_cost` as one compiled call: the cost's compiled running
        cost evaluated inside the same `mapaccum` as the step."""
        T, nx, nu = U_ref.shape[0], self.nx, self.nu
        entry = self._with_cost.get((T, id(cost)))
        if entry is None or entry[0] is not cost:
            step = self._affine_step()
            x, xh, uh, KT, k_, a, lo_, hi_ = step.mx_in()
            p = ca.MX.sym("p", cost.n_params)
            x_next, u = step(x, xh, uh, KT, k_, a, lo_, hi_)
            fused = ca.Function(f"{self.name}_{cost.name}_affine_step", [x, xh, uh, KT, k_, a, lo_, hi_, p],
                                [x_next, u, cost.compiled_running(x, u, p)])
            entry = (cost, FastFunction(fused.mapaccum("affine_rollout_cost", T)))
            self._with_cost[(T, id(cost))] = entry
        Xn, Un, L = entry[1](x0, X_ref[:T], U_ref, K, k, np.full(T, float(alpha)), lo, hi, P[:T])
        X = np.empty((T + 1, nx))
        X[0] = x0
        X[1:] = Xn.reshape(T, nx)
        return X, Un.reshape(T, nu).copy(), L.copy()

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


class FiniteDifferenceDynamics(DynamicsModel):
    """A black-box discrete step (e.g. one simulator step, or another model) as a `DynamicsModel`,
    its Jacobians by central differences.

    step(x, u) -> x_next on (nx,), (nu,) arrays; with `batched=True` it instead takes (N, nx),
    (N, nu) and returns (N, nx), and all 2 (nx + nu) T perturbed steps run in one call.
    `FiniteDifferenceDynamics.around(model)` wraps another model's batched step.
    """

    def __init__(self, step: Callable, nx: int, nu: int, *, eps: float = 1e-6,
                 batched: bool = False, dt: float | None = None, name: str = "fd_dynamics",
                 nq: int | None = None):
        if not callable(step):
            raise ValueError("step must be callable")
        if nx < 1 or nu < 1:
            raise ValueError(f"nx and nu must be positive, got {nx}, {nu}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self._f, self.nx, self.nu, self.eps, self.batched = step, int(nx), int(nu), eps, batched
        self.dt, self.name, self.nq = dt, name, nq
        self.step_function = None

    @classmethod
    def around(cls, model: DynamicsModel, *, eps: float = 1e-6) -> "FiniteDifferenceDynamics":
        """Finite differences of `model`'s step (its own derivatives unused): to check them, or to
        treat a model as a black box."""
        return cls(model.step_batch, model.nx, model.nu, eps=eps, batched=True, dt=model.dt,
                   name=f"fd_{model.name}", nq=model.nq)

    def _evaluate(self, X: np.ndarray, U: np.ndarray) -> np.ndarray:
        if self.batched:
            return np.asarray(self._f(X, U), dtype=float).reshape(X.shape[0], self.nx)
        return np.array([np.asarray(self._f(x, u), dtype=float).reshape(self.nx) for x, u in zip(X, U)])

    def calc(self, data: DynamicsData, X: np.ndarray, U: np.ndarray) -> np.ndarray:
        _check_horizon(data, X, U, self.nx, self.nu)
        data.x_next[...] = self._evaluate(X, U)
        return data.x_next

    def step_batch(self, X, U) -> np.ndarray:
        X = as_trajectory(X, None, self.nx, "states X")
        U = as_trajectory(U, X.shape[0], self.nu, "controls U")
        return self._evaluate(X, U)

    def calc_diff(self, data: DynamicsData, X: np.ndarray, U: np.ndarray) -> DynamicsData:
        """Central differences, all perturbations of all steps stacked into one batch."""
        T = _check_horizon(data, X, U, self.nx, self.nu)
        nx, nu, h = self.nx, self.nu, self.eps
        n = nx + nu
        Z = np.concatenate([X, U], axis=1)                       # (T, n)
        D = np.concatenate([np.eye(n), -np.eye(n)]) * h          # (2n, n)
        Zp = (Z[:, None, :] + D[None]).reshape(T * 2 * n, n)
        Y = self._evaluate(Zp[:, :nx], Zp[:, nx:]).reshape(T, 2, n, nx)
        J = ((Y[:, 0] - Y[:, 1]) / (2 * h)).transpose(0, 2, 1)   # (T, nx, n): d x+ / d z_j
        data.fx[...] = J[:, :, :nx]
        data.fu[...] = J[:, :, nx:]
        return data
