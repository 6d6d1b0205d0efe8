"""Running + terminal cost J = sum_t l(x_t, u_t, p_t) + l_f(x_T, p_T) and its derivatives.

Built once from CasADi symbols and compiled like `Dynamics`, with the same calc / calc_diff shape:

    data = cost.create_data(T)            CostData: l (T,), lx, lu, lxx, luu, lux per step; lf, lfx, lfxx
    J = cost.calc(data, X, U, P)          fills l and lf, returns J
    cost.calc_diff(data, X, U, P)         fills everything (two compiled calls for the whole horizon)

X (T+1, nx), U (T, nu), P (T+1, np) as `params_for_horizon` makes them: the hot path checks shapes
only. `total` and `derivatives` are the validated conveniences.

Parameters `p` are symbols the cost depends on that change between solves without rebuilding
anything (a goal, a reference trajectory, a weight): pass one vector for every step, or one per
step ((T+1, np) for a horizon of T controls, the last row for the terminal cost).

Two Hessian flavours: `Cost(...)` differentiates the expressions exactly; `Cost.least_squares`
takes residuals l = 1/2 r' W r and uses the Gauss-Newton Hessian J_r' W J_r (as Crocoddyl does
for its residual models): always positive semi-definite and much cheaper through kinematics.
"""
from __future__ import annotations

from dataclasses import dataclass

import casadi as ca
import numpy as np

from ._compiled import FastFunction, jit_many
from .dynamics import _check_symbol, as_trajectory, as_vector

__all__ = ["Cost", "CostData", "CostDerivatives", "quadratic_cost"]


@dataclass
class CostDerivatives:
    """Derivatives along a trajectory of T controls: running terms (T, ...), terminal terms."""

    l: np.ndarray      # (T,)
    lx: np.ndarray     # (T, nx)
    lu: np.ndarray     # (T, nu)
    lxx: np.ndarray    # (T, nx, nx)
    luu: np.ndarray    # (T, nu, nu)
    lux: np.ndarray    # (T, nu, nx)
    lf: float
    lfx: np.ndarray    # (nx,)
    lfxx: np.ndarray   # (nx, nx)

    @property
    def total(self) -> float:
        return float(self.l.sum() + self.lf)

    @property
    def horizon(self) -> int:
        return self.l.shape[0]


CostData = CostDerivatives          # the calc / calc_diff data object (Crocoddyl's name for it)


class Cost:
    """Cost(x, u, running, terminal, p=None): running = l(x, u, p), terminal = l_f(x, p), SX scalars."""

    def __init__(self, x: ca.SX, u: ca.SX, running: ca.SX, terminal: ca.SX, p: ca.SX | None = None,
                 *, name: str = "cost", jit: bool | None = None, _hessians=None):
        _check_symbol(x, "x")
        _check_symbol(u, "u")
        if p is None:
            p = ca.SX.sym("p", 0)
        if p.numel():
            _check_symbol(p, "p")
        running, terminal = ca.SX(running), ca.SX(terminal)
        if running.numel() != 1 or terminal.numel() != 1:
            raise ValueError("running and terminal costs must be scalar expressions")
        self.name = name
        self.nx, self.nu, self.n_params = x.shape[0], u.shape[0], p.shape[0]
        self._x, self._u, self._p = x, u, p
        self._default_params = np.zeros(self.n_params)
        try:
            self.running_function = ca.Function(f"{name}_l", [x, u, p], [running], ["x", "u", "p"], ["l"])
            self.terminal_function = ca.Function(f"{name}_lf", [x, p], [terminal], ["x", "p"], ["lf"])
        except RuntimeError as exc:
            raise ValueError(f"the running cost may depend on x, u, p and the terminal cost on x, p "
                             f"only: {exc}") from exc
        if _hessians is None:
            z = ca.vertcat(x, u)
            H = ca.hessian(running, z)[0]
            lxx, luu, lux = H[:self.nx, :self.nx], H[self.nx:, self.nx:], H[self.nx:, :self.nx]
            lfxx = ca.hessian(terminal, x)[0]
        else:
            lxx, luu, lux, lfxx = _hessians
        # the Hessians the cost works with (Gauss-Newton for least squares), as symbolic functions
        # for solvers that build their own QPs (NMPC's real-time iteration)
        self.hessian_function = ca.Function(f"{name}_H", [x, u, p], [ca.densify(ca.blockcat(lxx, lux.T, lux, luu))],
                                            ["x", "u", "p"], ["H"])
        self.terminal_hessian_function = ca.Function(f"{name}_Hf", [x, p], [ca.densify(lfxx)], ["x", "p"], ["Hf"])
        lx, lu = ca.gradient(running, x), ca.gradient(running, u)
        lfx = ca.gradient(terminal, x)
        d = ca.densify
        # transposed matrix outputs: CasADi column-major A^T == numpy C-order A
        run = ca.Function(f"{name}_dl", [x, u, p],
                          [d(running), d(lx), d(lu), d(lxx.T), d(luu.T), d(lux.T)])
        term = ca.Function(f"{name}_dlf", [x, p], [d(terminal), d(lfx), d(lfxx.T)])
        (self.compiled_running, self.compiled_terminal, self.compiled_running_derivatives,
         self.compiled_terminal_derivatives) = jit_many([self.running_function, self.terminal_function, run, term], jit)
        self._terminal_d = FastFunction(self.compiled_terminal_derivatives)
        self._terminal_v = FastFunction(self.compiled_terminal)
        self._horizon: dict[tuple, FastFunction] = {}

    # ------------------------------------------------------------------ constructors
    @classmethod
    def least_squares(cls, x: ca.SX, u: ca.SX, running_residual: ca.SX, running_weights,
                      terminal_residual: ca.SX, terminal_weights, p: ca.SX | None = None,
                      *, name: str = "cost", jit: bool | None = None) -> "Cost":
        """l = 1/2 r(x,u,p)' W r(x,u,p), l_f = 1/2 r_f(x,p)' W_f r_f(x,p) with Gauss-Newton Hessians.

        Weights: a vector (diagonal W) or a matrix; they may contain symbols of `p`.
        """
        r, rf = ca.SX(running_residual), ca.SX(terminal_residual)
        if not r.is_column() or not rf.is_column():
            raise ValueError("residuals must be column expressions")
        W, Wf = cls._weight_matrix(running_weights, r.shape[0], "running_weights"), \
            cls._weight_matrix(terminal_weights, rf.shape[0], "terminal_weights")
        z = ca.vertcat(x, u)
        Jr, Jf = ca.jacobian(r, z), ca.jacobian(rf, x)
        H = Jr.T @ W @ Jr                                         # Gauss-Newton: J' W J
        nx = x.shape[0]
        hess = (H[:nx, :nx], H[nx:, nx:], H[nx:, :nx], Jf.T @ Wf @ Jf)
        return cls(x, u, 0.5 * r.T @ W @ r, 0.5 * rf.T @ Wf @ rf, p, name=name, jit=jit, _hessians=hess)

    @staticmethod
    def _weight_matrix(w, n: int, what: str) -> ca.SX:
        w = ca.SX(w) if not isinstance(w, ca.SX) else w
        if w.is_column() and w.shape[0] == n:
            return ca.diag(w)
        if w.shape == (n, n):
            return w
        if w.numel() == 1:
            return w * ca.SX.eye(n)
        raise ValueError(f"{what}: expected {n} diagonal weights or an ({n}, {n}) matrix, got {w.shape}")

    # ------------------------------------------------------------------ parameters
    def set_default_params(self, p) -> None:
        """Parameters used when a call passes none (e.g. a fixed goal)."""
        self._default_params = as_vector(p, self.n_params, "cost parameters p")

    def params_for_horizon(self, params, T: int) -> np.ndarray:
        """Expand None / one vector / (T+1, np) rows to the (T+1, np) per-step parameters."""
        if self.n_params == 0:
            return np.zeros((T + 1, 0))
        if params is None:
            params = self._default_params
        P = np.asarray(params, dtype=float)
        if P.ndim == 1 or P.size == self.n_params:
            P = np.broadcast_to(as_vector(P, self.n_params, "cost parameters p"), (T + 1, self.n_params))
        else:
            P = as_trajectory(P, T + 1, self.n_params, "cost parameters (one row per step)")
        return np.ascontiguousarray(P)

    # ------------------------------------------------------------------ evaluation
    def _mapped(self, kind: str, T: int) -> FastFunction:
        key = (kind, T)
        if key not in self._horizon:
            f = self.compiled_running_derivatives if kind == "d" else self.compiled_running
            self._horizon[key] = FastFunction(f.map(T))
        return self._horizon[key]

    def create_data(self, T: int) -> CostData:
        nx, nu = self.nx, self.nu
        return CostData(np.zeros(T), np.zeros((T, nx)), np.zeros((T, nu)), np.zeros((T, nx, nx)),
                        np.zeros((T, nu, nu)), np.zeros((T, nu, nx)), 0.0, np.zeros(nx), np.zeros((nx, nx)))

    def _check(self, data: CostData, X: np.ndarray, U: np.ndarray, P: np.ndarray) -> int:
        T = data.l.shape[0]
        if X.shape != (T + 1, self.nx) or U.shape != (T, self.nu) or P.shape != (T + 1, self.n_params):
            raise ValueError(f"cost calc: expected X ({T + 1}, {self.nx}), U ({T}, {self.nu}), "
                             f"P ({T + 1}, {self.n_params}); got {X.shape}, {U.shape}, {P.shape}")
        return T

    def calc(self, data: CostData, X: np.ndarray, U: np.ndarray, P: np.ndarray) -> float:
        """Fill data.l (running costs) and data.lf (terminal cost); return J = sum l + lf."""
        T = self._check(data, X, U, P)
        data.l[:] = self._mapped("v", T)(X[:T], U, P[:T])[0]
        data.lf = float(self._terminal_v(X[T], P[T])[0][0])
        return float(data.l.sum() + data.lf)

    def calc_diff(self, data: CostData, X: np.ndarray, U: np.ndarray, P: np.ndarray) -> CostData:
        """Fill every field of data: values, gradients and Hessians along the horizon; returns data."""
        T = self._check(data, X, U, P)
        nx, nu = self.nx, self.nu
        l, lx, lu, lxx, luu, lux = self._mapped("d", T)(X[:T], U, P[:T])
        data.l[:] = l
        data.lx[...] = lx.reshape(T, nx)
        data.lu[...] = lu.reshape(T, nu)
        data.lxx[...] = lxx.reshape(T, nx, nx)
        data.luu[...] = luu.reshape(T, nu, nu)
        data.lux[...] = lux.reshape(T, nu, nx)
        lf, lfx, lfxx = self._terminal_d(X[T], P[T])
        data.lf = float(lf[0])
        data.lfx[:] = lfx
        data.lfxx[...] = lfxx.reshape(nx, nx)
        return data

    def running_batch(self, X: np.ndarray, U: np.ndarray, P: np.ndarray) -> np.ndarray:
        """l(X[i], U[i], P[i]) for N independent rows (N, nx), (N, nu), (N, np) -> (N,)."""
        return self._mapped("v", X.shape[0])(X, U, P)[0].copy()

    def terminal_value(self, x: np.ndarray, p: np.ndarray) -> float:
        """l_f(x, p) for one state."""
        return float(self._terminal_v(x, p)[0][0])

    def terminal_batch(self, X: np.ndarray, p: np.ndarray) -> np.ndarray:
        """l_f(X[i], p) for N states (N, nx) and one parameter vector -> (N,)."""
        f = self._terminal_v
        return np.array([f(x, p)[0][0] for x in X])

    def total(self, X, U, params=None) -> float:
        """J for states (T+1, nx) and controls (T, nu)."""
        U = as_trajectory(U, None, self.nu, "controls U")
        X = as_trajectory(X, U.shape[0] + 1, self.nx, "states X")
        return self.calc(self.create_data(U.shape[0]), X, U, self.params_for_horizon(params, U.shape[0]))

    def derivatives(self, X, U, params=None) -> CostDerivatives:
        """l, lx, lu, lxx, luu, lux for t < T and l_f, l_fx, l_fxx at T, in two compiled calls."""
        U = as_trajectory(U, None, self.nu, "controls U")
        X = as_trajectory(X, U.shape[0] + 1, self.nx, "states X")
        P = self.params_for_horizon(params, U.shape[0])
        return self.calc_diff(self.create_data(U.shape[0]), X, U, P)


def quadratic_cost(nx: int, nu: int, Q, R, Qf, *, goal_param: bool = True, name: str = "quadratic",
                   jit: bool | None = None) -> Cost:
    """l = 1/2 (x - x*)' Q (x - x*) + 1/2 u' R u, l_f = 1/2 (x - x*)' Qf (x - x*).

    With `goal_param` the goal x* is the cost parameter (default goal: zeros)."""
    Q, R, Qf = _weights(Q, nx, "Q"), _weights(R, nu, "R"), _weights(Qf, nx, "Qf")
    x, u = ca.SX.sym("x", nx), ca.SX.sym("u", nu)
    goal = ca.SX.sym("goal", nx) if goal_param else ca.SX.zeros(nx)
    e = x - goal
    return Cost(x, u, 0.5 * e.T @ Q @ e + 0.5 * u.T @ R @ u, 0.5 * e.T @ Qf @ e,
                goal if goal_param else None, name=name, jit=jit)


def _weights(M, n: int, what: str) -> np.ndarray:
    """A scalar, n diagonal entries or an (n, n) matrix -> (n, n), finite and symmetric."""
    M = np.asarray(M, dtype=float)
    if M.ndim == 0:
        M = M * np.eye(n)
    elif M.ndim == 1 and M.shape[0] == n:
        M = np.diag(M)
    elif M.shape != (n, n):
        raise ValueError(f"{what}: expected a scalar, {n} diagonal weights or an ({n}, {n}) matrix, "
                         f"got shape {M.shape}")
    if not np.all(np.isfinite(M)) or not np.allclose(M, M.T):
        raise ValueError(f"{what}: weights must be finite and symmetric")
    return M
