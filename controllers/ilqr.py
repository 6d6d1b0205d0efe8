"""iLQR / DDP with control limits.

Tassa, Erez, Todorov, "Synthesis and stabilization of complex behaviors through online trajectory
optimization", IROS 2012 (the algorithm box, Sec. II), with the box-QP of Tassa, Mansard, Todorov,
"Control-limited differential dynamic programming", ICRA 2014 (BoxDDP).

    repeat
        derivatives of f and l along the nominal (x_hat, u_hat)
        backward pass: Q-function expansion (eq. 5), regularized (eq. 10), gains k, K (eq. 11 /
            box-QP), value update (eq. 11); on a non-positive-definite Q_uu increase mu and restart
        forward pass: x_0 = x0; u_t = clamp(u_hat_t + alpha k_t + K_t (x_t - x_hat_t)); x_{t+1} = f
            for alpha in 1 ... 1e-3, accept when  z = actual / expected reduction > z_min  (eq. 13)
        accepted: decrease mu, converged if the cost stopped improving
        rejected: increase mu
    until converged, the gradient norm is small, mu > mu_max, max_iter or the deadline

Speed: the per-step math is CasADi SX compiled to C and run over the whole horizon by one
`mapaccum` call (both passes), so one iteration is a handful of calls into compiled code. With
multi-dimensional control limits the backward pass runs step by step in Python around `box_qp`.
Setting `second_order=True` adds the dynamics' second-order terms V_x . f_xx (full DDP).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import casadi as ca
import numpy as np

from ._compiled import FastFunction, jit as _jit
from .box_qp import box_qp
from .cost import Cost
from .dynamics import as_trajectory, as_vector
from .result import SolverStatus, TrajectoryResult

__all__ = ["ILQR", "ILQROptions", "control_bounds"]


@dataclass
class ILQROptions:
    max_iter: int = 100
    tol_cost: float = 1e-7         # converged when the accepted decrease < tol_cost * (1 + |J|)
    tol_grad: float = 1e-4         # converged when mean_t max_i |k_ti| / (|u_ti| + 1) < tol_grad
    mu_init: float = 1.0           # regularization mu (eq. 10) and its schedule (Sec. II-F)
    mu_min: float = 1e-6
    mu_max: float = 1e10
    delta0: float = 2.0
    alphas: tuple = field(default_factory=lambda: tuple(10.0 ** np.linspace(0.0, -3.0, 11)))
    z_min: float = 0.0             # line-search acceptance: actual / expected reduction > z_min
    second_order: bool = False     # DDP: include V_x . f_xx terms
    consistent_gains: bool = False  # True: end with a backward pass at the returned nominal, so K and
                                    # Quu belong to it exactly (what GPS wants; MPC needs only u_0)
    backward: str = "auto"         # "auto" | "compiled" | "python"


def control_bounds(nu: int, lower, upper) -> tuple[np.ndarray, np.ndarray]:
    """Validate control limits (None = unbounded): finite-or-inf, no NaN, lower <= upper."""
    lo = np.full(nu, -np.inf) if lower is None else np.broadcast_to(np.asarray(lower, dtype=float), (nu,)).copy()
    hi = np.full(nu, np.inf) if upper is None else np.broadcast_to(np.asarray(upper, dtype=float), (nu,)).copy()
    if np.any(np.isnan(lo)) or np.any(np.isnan(hi)):
        raise ValueError("control limits contain NaN")
    if np.any(lo > hi):
        raise ValueError(f"infeasible control limits: lower {lo} > upper {hi}")
    return lo, hi


# ----------------------------------------------------------------------------- symbolic pieces
def _q_expansion(Vx, Vxx, fx, fu, lx, lu, lxx, luu, lux, mu, Hxx=None, Huu=None, Hux=None):
    """Q-function expansion (Tassa 2012 eq. 5) and its regularized Q_uu, Q_ux (eq. 10)."""
    VxxFx, VxxFu = Vxx @ fx, Vxx @ fu
    Qx = lx + fx.T @ Vx                                   # (5a)
    Qu = lu + fu.T @ Vx                                   # (5b)
    Qxx = lxx + fx.T @ VxxFx                              # (5c)
    Quu = luu + fu.T @ VxxFu                              # (5d)
    Qux = lux + fu.T @ VxxFx                              # (5e)
    if Hxx is not None:                                   # DDP: + V_x . f_xx, f_uu, f_ux
        Qxx, Quu, Qux = Qxx + Hxx, Quu + Huu, Qux + Hux
    Quu_reg = Quu + mu * (fu.T @ fu)                      # (10a) f_u'(V_xx + mu I) f_u
    Qux_reg = Qux + mu * (fu.T @ fx)                      # (10b) f_u'(V_xx + mu I) f_x
    return Qx, Qu, Qxx, Quu, Qux, Quu_reg, Qux_reg


def _value_update(Qx, Qu, Qxx, Quu, Qux, K, k):
    """Value function update (Tassa 2012 eq. 11) and the expected-reduction terms dV."""
    dV = ca.vertcat(k.T @ Qu, 0.5 * k.T @ Quu @ k)
    Vx = Qx + K.T @ Quu @ k + K.T @ Qu + Qux.T @ k
    Vxx = Qxx + K.T @ Quu @ K + K.T @ Qux + Qux.T @ K
    return Vx, 0.5 * (Vxx + Vxx.T), dV


def _cholesky_solve(A, B):
    """A^-1 B for a small symbolic SPD A, and the Cholesky pivots (all > 0 iff A is PD)."""
    n = A.shape[0]
    L = [[None] * n for _ in range(n)]
    pivots = []
    for j in range(n):
        s = A[j, j] - sum((L[j][m] ** 2 for m in range(j)), ca.SX(0))
        pivots.append(s)
        L[j][j] = ca.sqrt(ca.fmax(s, 1e-300))
        for i in range(j + 1, n):
            L[i][j] = (A[i, j] - sum((L[i][m] * L[j][m] for m in range(j)), ca.SX(0))) / L[j][j]
    Y = [None] * n                                         # L y = b
    for i in range(n):
        Y[i] = (B[i, :] - sum((L[i][m] * Y[m] for m in range(i)), ca.SX.zeros(1, B.shape[1]))) / L[i][i]
    X = [None] * n                                         # L' x = y
    for i in reversed(range(n)):
        X[i] = (Y[i] - sum((L[m][i] * X[m] for m in range(i + 1, n)), ca.SX.zeros(1, B.shape[1]))) / L[i][i]
    return ca.vertcat(*X), ca.mmin(ca.vertcat(*pivots))


def _sym_c(name: str, rows: int, cols: int):
    """A symbol whose CasADi column-major data is the numpy C-order (rows, cols) matrix: (sym, A)."""
    s = ca.SX.sym(name, cols, rows)
    return s, s.T


def _step_symbols(nx: int, nu: int, second_order: bool, box_inputs: bool):
    """The symbolic inputs of one backward step: (Function inputs, the Q expansion's arguments,
    (u, lo, hi) or None). Vxx is symmetric, so its layout does not matter."""
    Vx, Vxx = ca.SX.sym("Vx", nx), ca.SX.sym("Vxx", nx, nx)
    fxs, fx = _sym_c("fx", nx, nx)
    fus, fu = _sym_c("fu", nx, nu)
    lx, lu = ca.SX.sym("lx", nx), ca.SX.sym("lu", nu)
    lxxs, lxx = _sym_c("lxx", nx, nx)
    luus, luu = _sym_c("luu", nu, nu)
    luxs, lux = _sym_c("lux", nu, nx)
    mu = ca.SX.sym("mu")
    ins = [Vx, Vxx, fxs, fus, lx, lu, lxxs, luus, luxs]
    bounds = None
    if box_inputs:
        bounds = (ca.SX.sym("u", nu), ca.SX.sym("lo", nu), ca.SX.sym("hi", nu))
        ins += list(bounds)
    ins.append(mu)
    H = (None, None, None)
    if second_order:
        Hxx, Huu = ca.SX.sym("Hxx", nx, nx), ca.SX.sym("Huu", nu, nu)
        Huxs, Hux = _sym_c("Hux", nu, nx)
        ins += [Hxx, Huu, Huxs]
        H = (Hxx, Huu, Hux)
    return ins, (Vx, Vxx, fx, fu, lx, lu, lxx, luu, lux, mu, *H), bounds


def _backward_step_function(nx: int, nu: int, box: bool, second_order: bool, jit) -> ca.Function:
    """One step of the backward pass as a compiled Function (accumulators: V_x, V_xx)."""
    ins, q_args, (u, lo, hi) = _step_symbols(nx, nu, second_order, box_inputs=True)
    Qx, Qu, Qxx, Quu, Qux, Quu_reg, Qux_reg = _q_expansion(*q_args)
    sol, min_pivot = _cholesky_solve(Quu_reg, ca.horzcat(Qu, Qux_reg))
    k, K = -sol[:, 0], -sol[:, 1:]                          # (11) unconstrained gains
    if box:                                                 # nu == 1: the box-QP in closed form
        k_free = k
        k = ca.fmin(ca.fmax(k_free, lo - u), hi - u)
        clamped = ca.logic_or(k_free < lo - u, k_free > hi - u)
        K = ca.if_else(clamped, ca.SX.zeros(1, nx), K)      # clamped rows get no feedback
    Vx_new, Vxx_new, dV = _value_update(Qx, Qu, Qxx, Quu, Qux, K, k)
    d = ca.densify
    f = ca.Function(f"ilqr_backward_{nx}x{nu}{'_box' if box else ''}{'_ddp' if second_order else ''}",
                    ins, [d(Vx_new), d(Vxx_new), d(K.T), d(k), d(Quu), dV, min_pivot])
    return _jit(f, jit)


def _q_function(nx: int, nu: int, second_order: bool, jit) -> ca.Function:
    """The Q expansion of one step alone (for the step-by-step backward pass around box_qp)."""
    ins, q_args, _ = _step_symbols(nx, nu, second_order, box_inputs=False)
    Q = _q_expansion(*q_args)
    d = ca.densify
    outs = [d(Q[0]), d(Q[1]), d(Q[2].T), d(Q[3].T), d(Q[4].T), d(Q[5].T), d(Q[6].T)]
    return _jit(ca.Function(f"ilqr_q_{nx}x{nu}{'_ddp' if second_order else ''}", ins, outs), jit)


def _value_function(nx: int, nu: int, jit) -> ca.Function:
    Qx, Qu = ca.SX.sym("Qx", nx), ca.SX.sym("Qu", nu)
    Qxx = ca.SX.sym("Qxx", nx, nx)
    Quus, Quu = _sym_c("Quu", nu, nu)
    Quxs, Qux = _sym_c("Qux", nu, nx)
    Ks, K = _sym_c("K", nu, nx)
    k = ca.SX.sym("k", nu)
    Vx, Vxx, dV = _value_update(Qx, Qu, Qxx, Quu, Qux, K, k)
    return _jit(ca.Function(f"ilqr_value_{nx}x{nu}", [Qx, Qu, Qxx, Quus, Quxs, Ks, k],
                            [ca.densify(Vx), ca.densify(Vxx), dV]), jit)


# ----------------------------------------------------------------------------- solver
class ILQR:
    """iLQR/BoxDDP over a fixed horizon of `horizon` controls.

    dynamics: `Dynamics` (compiled forward pass) or `FiniteDifferenceDynamics` (Python rollout);
    cost: `Cost`; u_lower / u_upper: control limits (None = unbounded). One instance evaluates
    through shared buffers: use it from one thread at a time.
    """

    def __init__(self, dynamics, cost: Cost, horizon: int, u_lower=None, u_upper=None,
                 options: ILQROptions | None = None, *, jit: bool | None = None):
        if dynamics.nx != cost.nx or dynamics.nu != cost.nu:
            raise ValueError(f"dynamics (nx={dynamics.nx}, nu={dynamics.nu}) and cost "
                             f"(nx={cost.nx}, nu={cost.nu}) disagree on dimensions")
        if int(horizon) != horizon or horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon}")
        self.dynamics, self.cost, self.T = dynamics, cost, int(horizon)
        self.horizon = self.T
        self.nx, self.nu = dynamics.nx, dynamics.nu
        self.options = options or ILQROptions()
        o = self.options
        if o.backward not in ("auto", "compiled", "python"):
            raise ValueError(f"backward must be 'auto', 'compiled' or 'python', got {o.backward!r}")
        if o.second_order and not dynamics.is_symbolic:
            raise ValueError("second_order (DDP) needs symbolic Dynamics, not finite differences")
        if not (0 < o.mu_min <= o.mu_max) or o.mu_init < 0 or o.delta0 <= 1:
            raise ValueError("need 0 < mu_min <= mu_max, mu_init >= 0 and delta0 > 1")
        self.u_lower, self.u_upper = control_bounds(self.nu, u_lower, u_upper)
        self.has_limits = bool(np.any(np.isfinite(self.u_lower)) or np.any(np.isfinite(self.u_upper)))
        T, nx, nu = self.T, self.nx, self.nu
        self._lo = np.ascontiguousarray(np.broadcast_to(self.u_lower, (T, nu)))
        self._hi = np.ascontiguousarray(np.broadcast_to(self.u_upper, (T, nu)))
        self._mu = o.mu_init
        # backward pass: compiled over the horizon unless multi-dimensional limits need box_qp
        compiled_ok = not (self.has_limits and nu > 1)
        if o.backward == "compiled" and not compiled_ok:
            raise ValueError("the compiled backward pass handles control limits only for nu == 1")
        self._compiled_backward = compiled_ok and o.backward != "python"
        if self._compiled_backward:
            step = _backward_step_function(nx, nu, self.has_limits, o.second_order, jit)
            if o.second_order:                             # wrap: evaluate V_x' . f_xx inside the step
                hess = dynamics.second_order_function()
                mx_in = [ca.MX.sym(step.name_in(i), step.sparsity_in(i)) for i in range(step.n_in())]
                x = ca.MX.sym("x", nx)
                Hxx, Huu, Hux = hess(x, mx_in[9], mx_in[0])   # (x, u, lam = V_x')
                args = mx_in[:13] + [Hxx, Huu, Hux]
                step = ca.Function("ddp_backward_step", mx_in[:13] + [x], step(*args))
            self._backward = FastFunction(step.mapaccum("backward", T, [0, 1], [0, 1]))
        else:
            self._q_fn = FastFunction(_q_function(nx, nu, o.second_order, jit))
            self._v_fn = FastFunction(_value_function(nx, nu, jit))
            self._hess_fn = FastFunction(dynamics.second_order_function()) if o.second_order else None
        # forward pass: closed-loop rollout with the new gains, compiled when the dynamics are
        if dynamics.is_symbolic:
            x, xh, uh = ca.MX.sym("x", nx), ca.MX.sym("xh", nx), ca.MX.sym("uh", nu)
            KT, k, alpha = ca.MX.sym("KT", nx, nu), ca.MX.sym("k", nu), ca.MX.sym("alpha")
            lo, hi, p = ca.MX.sym("lo", nu), ca.MX.sym("hi", nu), ca.MX.sym("p", cost.n_params)
            u = ca.fmin(ca.fmax(uh + alpha * k + KT.T @ (x - xh), lo), hi)
            step = ca.Function("ilqr_forward_step", [x, xh, uh, KT, k, alpha, lo, hi, p],
                               [dynamics.compiled_step(x, u), u, cost.compiled_running(x, u, p)])
            self._forward = FastFunction(step.mapaccum("forward", T))
            self._alpha_row = np.ones(T)
        self._k_warm: np.ndarray | None = None              # box-QP warm start (python backward pass)

    # ------------------------------------------------------------------ passes
    def _rollout(self, x0, X, U, K, k, alpha, P):
        """Forward pass (Tassa 2012 eq. 12): returns new states, controls and the cost."""
        T, nx, nu = self.T, self.nx, self.nu
        if self.dynamics.is_symbolic:
            f = self._forward
            self._alpha_row.fill(alpha)
            Xn, Un, L = f(x0, X[:T], U, K, k, self._alpha_row, self._lo, self._hi, P[:T])
            Xnew = np.empty((T + 1, nx))
            Xnew[0] = x0
            Xnew[1:] = Xn.reshape(T, nx)
            Unew = Un.reshape(T, nu).copy()
            J = float(L.sum()) + float(self.cost._terminal_v(Xnew[T], P[T])[0][0])
        else:
            Xnew = np.empty((T + 1, nx))
            Unew = np.empty((T, nu))
            Xnew[0] = x0
            for t in range(T):
                u = U[t] + alpha * k[t] + K[t] @ (Xnew[t] - X[t])
                Unew[t] = np.minimum(np.maximum(u, self.u_lower), self.u_upper)
                Xnew[t + 1] = self.dynamics._call(Xnew[t][None], Unew[t][None])[0]
            J = self.cost._total(Xnew, Unew, P) if np.all(np.isfinite(Xnew)) else math.inf
        if not math.isfinite(J):
            J = math.inf
        return Xnew, Unew, J

    def _derivatives(self, X, U, P):
        """f_x, f_u, l_* along the nominal, all in reversed time order for the backward pass."""
        T = self.T
        Xr, Ur, Pr = X[T - 1::-1], U[::-1], P[T - 1::-1]
        fx, fu = self.dynamics._jacobians(np.ascontiguousarray(Xr), np.ascontiguousarray(Ur))
        c = self.cost._derivatives(np.ascontiguousarray(np.concatenate([Xr, X[T:]])),
                                   np.ascontiguousarray(Ur),
                                   np.ascontiguousarray(np.concatenate([Pr, P[T:]])))
        return fx, fu, c, Xr, Ur

    def _backward_pass(self, D, mu):
        """Returns (ok, K, k, Quu, dV) in forward time order; ok=False when Q_uu_reg is not PD."""
        fx, fu, c, Xr, Ur = D
        T, nx, nu = self.T, self.nx, self.nu
        if self._compiled_backward:
            b = self._backward
            args = [c.lfx, c.lfxx, fx, fu, c.lx, c.lu, c.lxx, c.luu, c.lux, Ur,
                    self._lo, self._hi, np.full(T, mu)]
            if self.options.second_order:
                args.append(Xr)
            _, _, KT, k, Quu, dV, piv = b(*args)
            if not (np.all(piv > 0) and np.all(np.isfinite(KT)) and np.all(np.isfinite(k))):
                return False, None, None, None, None
            K = KT.reshape(T, nu, nx)[::-1].copy()
            return True, K, k.reshape(T, nu)[::-1].copy(), Quu.reshape(T, nu, nu)[::-1].copy(), \
                dV.reshape(T, 2).sum(axis=0)
        # step by step, box_qp for the controls (Tassa 2014 Alg. 1 inside the backward pass)
        K = np.zeros((T, nu, nx))
        k = np.zeros((T, nu))
        Quu_out = np.zeros((T, nu, nu))
        dV = np.zeros(2)
        Vx, Vxx = c.lfx.copy(), c.lfxx.copy()
        k_prev = self._k_warm
        for i in range(T):                                  # i: reversed index, t = T-1-i
            t = T - 1 - i
            args = [Vx, Vxx, fx[i], fu[i], c.lx[i], c.lu[i], c.lxx[i], c.luu[i], c.lux[i], mu]
            if self.options.second_order:
                args += list(self._hess_fn(Xr[i], Ur[i], Vx))
            Qx, Qu, Qxx, Quu, Qux, Quu_reg, Qux_reg = (a.copy() for a in self._q_fn(*args))
            Quu, Quu_reg, Qux_reg = Quu.reshape(nu, nu), Quu_reg.reshape(nu, nu), Qux_reg.reshape(nu, nx)
            if self.has_limits:
                x0 = k_prev[t] if k_prev is not None else None
                res = box_qp(Quu_reg, Qu, self.u_lower - Ur[i], self.u_upper - Ur[i], x0)
                if not res.status.ok:
                    return False, None, None, None, None
                k[t] = res.x
                if res.free.any():                          # clamped rows of K stay zero
                    L = res.chol_free
                    Qf = Qux_reg[res.free]
                    K[t][res.free] = -np.linalg.solve(L.T, np.linalg.solve(L, Qf))
            else:
                try:
                    L = np.linalg.cholesky(Quu_reg)
                except np.linalg.LinAlgError:
                    return False, None, None, None, None
                rhs = np.column_stack([Qu, Qux_reg])
                sol = -np.linalg.solve(L.T, np.linalg.solve(L, rhs))
                k[t], K[t] = sol[:, 0], sol[:, 1:]
            Vx, Vxx, dv = (a.copy() for a in self._v_fn(Qx, Qu, Qxx, Quu, Qux, K[t], k[t]))
            Vxx = Vxx.reshape(nx, nx)
            dV += dv
            Quu_out[t] = Quu
        self._k_warm = k.copy()
        return True, K, k, Quu_out, dV

    # ------------------------------------------------------------------ main loop
    def _increase_mu(self):
        o = self.options
        self._delta = max(o.delta0, self._delta * o.delta0)
        self._mu = max(o.mu_min, self._mu * self._delta)

    def _decrease_mu(self):
        o = self.options
        self._delta = min(1.0 / o.delta0, self._delta / o.delta0)
        self._mu = self._mu * self._delta if self._mu * self._delta > o.mu_min else 0.0

    def solve(self, x0, U_init=None, params=None, *, max_iter: int | None = None,
              deadline: float | None = None) -> TrajectoryResult:
        """Optimize from x0. U_init: (T, nu) warm start (or a TrajectoryResult); params: cost
        parameters (one vector or (T+1, np)); deadline: `time.perf_counter()` value at which to stop
        and return the best plan so far (status DEADLINE). The deadline is checked after every
        forward-pass trial, so a solve always does at least one backward and one forward pass."""
        t_start = time.perf_counter()
        o = self.options
        T, nx, nu = self.T, self.nx, self.nu
        x0 = as_vector(x0, nx, "initial state x0")
        P = self.cost.params_for_horizon(params, T)
        warm = U_init is not None
        if isinstance(U_init, TrajectoryResult):
            U_init = U_init.u
        U = np.zeros((T, nu)) if U_init is None else as_trajectory(U_init, T, nu, "initial controls U_init")
        U = np.clip(U, self.u_lower, self.u_upper)
        max_iter = o.max_iter if max_iter is None else int(max_iter)
        if warm:            # keep the regularization of the last solve, but never start above mu_init
            self._mu = min(self._mu, o.mu_init)
        else:
            self._mu = o.mu_init
            self._k_warm = None
        self._delta = 1.0

        zeros_K, zeros_k = np.zeros((T, nu, nx)), np.zeros((T, nu))
        X, U, J = self._rollout(x0, np.zeros((T + 1, nx)), U, zeros_K, zeros_k, 0.0, P)
        history = [J]
        K, k, Quu = zeros_K, zeros_k, np.zeros((T, nu, nu))
        gains_current = False
        if not math.isfinite(J):
            return self._result(X, U, K, k, Quu, J, 0, SolverStatus.FAILED,
                                "initial rollout diverged (non-finite state or cost)", history, t_start)

        status, message = SolverStatus.MAX_ITERATIONS, f"reached max_iter={max_iter}"
        it = 0
        D = None
        for it in range(1, max_iter + 1):
            if D is None:
                D = self._derivatives(X, U, P)
            # ---- backward pass, raising mu until Q_uu is positive definite
            while True:
                ok, K_new, k_new, Quu_new, dV = self._backward_pass(D, self._mu)
                if ok:
                    break
                self._increase_mu()
                if self._mu > o.mu_max:
                    return self._result(X, U, K, k, Quu, J, it, SolverStatus.FAILED,
                                        f"backward pass failed: mu exceeded {o.mu_max:g}", history, t_start)
            K, k, Quu, gains_current = K_new, k_new, Quu_new, True
            # ---- gradient-norm convergence (Tassa's iLQG)
            g_norm = float(np.mean(np.max(np.abs(k) / (np.abs(U) + 1.0), axis=1)))
            if g_norm < o.tol_grad and self._mu < 1e-5:
                self._decrease_mu()
                status, message = SolverStatus.CONVERGED, f"gradient norm {g_norm:.2e} < {o.tol_grad:g}"
                break
            # ---- forward pass with backtracking line search (eq. 13)
            accepted = False
            for alpha in o.alphas:
                Xn, Un, Jn = self._rollout(x0, X, U, K, k, alpha, P)
                expected = -alpha * (dV[0] + alpha * dV[1])
                z = (J - Jn) / expected if expected > 0 else math.copysign(1.0, J - Jn)
                if math.isfinite(Jn) and z > o.z_min:
                    accepted = True
                    break
                if deadline is not None and time.perf_counter() > deadline:
                    break
            if accepted:
                self._decrease_mu()
                dJ = J - Jn
                X, U, J = Xn, Un, Jn
                history.append(J)
                D, gains_current = None, False
                if dJ < o.tol_cost * (1.0 + abs(J)):
                    status, message = SolverStatus.CONVERGED, f"cost decrease {dJ:.2e} below tolerance"
                    break
            else:
                self._increase_mu()
                if self._mu > o.mu_max:
                    status = SolverStatus.FAILED
                    message = f"line search failed and mu exceeded {o.mu_max:g}"
                    break
            if deadline is not None and time.perf_counter() > deadline:
                status, message = SolverStatus.DEADLINE, "deadline reached"
                break
        if o.consistent_gains and not gains_current and status in (SolverStatus.CONVERGED,
                                                                   SolverStatus.MAX_ITERATIONS):
            D = self._derivatives(X, U, P)                  # gains and Quu at the returned nominal
            for _ in range(60):
                ok, K_new, k_new, Quu_new, _ = self._backward_pass(D, self._mu)
                if ok:
                    K, k, Quu = K_new, k_new, Quu_new
                    break
                self._increase_mu()
        return self._result(X, U, K, k, Quu, J, it, status, message, history, t_start)

    def _result(self, X, U, K, k, Quu, J, it, status, message, history, t_start) -> TrajectoryResult:
        return TrajectoryResult(x=X, u=U, K=K, k=k, Quu=Quu, cost=float(J), iterations=it, status=status,
                                message=message, cost_history=history,
                                solve_time=time.perf_counter() - t_start,
                                u_lower=self.u_lower if self.has_limits else None,
                                u_upper=self.u_upper if self.has_limits else None)
