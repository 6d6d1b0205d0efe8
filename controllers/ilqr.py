"""iLQR / DDP with control limits, solving a `Problem`.

Tassa, Erez, Todorov, "Synthesis and stabilization of complex behaviors through online trajectory
optimization", IROS 2012 (the algorithm box, Sec. II), with the box-QP of Tassa, Mansard, Todorov,
"Control-limited differential dynamic programming", ICRA 2014 (BoxDDP).

`solve` is the loop below; each step is a method of its own (as in Crocoddyl's SolverDDP):

    repeat
        derivatives      f_x, f_u, l_* along the nominal (x_hat, u_hat): dynamics / cost calc_diff
        backward_pass    Q-function expansion (eq. 5), regularized (eq. 10), gains k, K (eq. 11 /
                         box-QP), value update (eq. 11); None when Q_uu is not positive definite,
                         then increase_regularization and retry
        gradient test    converged when the feedforward step is tiny (Tassa's iLQG)
        line_search      forward_pass x_0 = x0; u_t = clamp(u_hat_t + alpha k_t + K_t (x_t - x_hat_t));
                         x_{t+1} = f, for alpha in 1 ... 1e-3, accept when z = actual / expected
                         reduction > z_min (eq. 13)
        accepted: decrease_regularization, cost-decrease test; rejected: increase_regularization
    until converged, mu > mu_max, max_iter or the deadline

Speed: the per-step math is CasADi SX compiled to C (`_ddp_kernels`) and run over the whole horizon
by one `mapaccum` call; the forward pass is the dynamics' `rollout_affine_cost` (for symbolic
`Dynamics` one compiled call, the running cost evaluated inside it). With multi-dimensional control
limits the backward pass runs step by step in Python around `box_qp`. `second_order=True` adds the dynamics' terms V_x . f_xx (full DDP).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import casadi as ca
import numpy as np

from ._compiled import FastFunction
from ._ddp_kernels import backward_step_function, q_function, value_function
from .box_qp import box_qp
from .cost import CostData
from .problem import Problem, as_problem, control_bounds
from .result import SolverStatus, TrajectoryResult

__all__ = ["ILQR", "ILQROptions", "BackwardPass", "Expansion", "control_bounds"]


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


@dataclass
class Expansion:
    """The derivatives along a nominal, in reversed time order (index i is step t = T-1-i), as the
    backward pass consumes them; `cost` holds the terminal terms too."""

    fx: np.ndarray       # (T, nx, nx)
    fu: np.ndarray       # (T, nx, nu)
    cost: CostData
    Xr: np.ndarray       # (T, nx) nominal states x_{T-1} ... x_0
    Ur: np.ndarray       # (T, nu)


@dataclass
class BackwardPass:
    """Gains in forward time order and the expected reduction terms dV = (sum k'Q_u, sum 1/2 k'Q_uu k)."""

    K: np.ndarray        # (T, nu, nx)
    k: np.ndarray        # (T, nu)
    Quu: np.ndarray      # (T, nu, nu) unregularized
    dV: np.ndarray       # (2,)

    def expected_reduction(self, alpha: float) -> float:
        return -alpha * (self.dV[0] + alpha * self.dV[1])


class ILQR:
    """iLQR/BoxDDP: `ILQR(problem, options=None, *, jit=None)`.

    The old form `ILQR(dynamics, cost, horizon, u_lower=None, u_upper=None, options=None)` builds the
    `Problem` itself. One instance evaluates through shared buffers: use it from one thread at a time.
    """

    def __init__(self, problem: Problem, cost=None, horizon=None, u_lower=None, u_upper=None,
                 options: ILQROptions | None = None, *, jit: bool | None = None):
        self.problem = pr = as_problem(problem, cost, horizon, u_lower, u_upper, who="ILQR")
        pr.require_no_state_bounds("ILQR")
        self.dynamics, self.cost, self.T = pr.dynamics, pr.cost, pr.horizon
        self.horizon, self.nx, self.nu = pr.horizon, pr.nx, pr.nu
        self.u_lower, self.u_upper, self.has_limits = pr.u_lower, pr.u_upper, pr.has_control_limits
        self.options = o = options or ILQROptions()
        if o.backward not in ("auto", "compiled", "python"):
            raise ValueError(f"backward must be 'auto', 'compiled' or 'python', got {o.backward!r}")
        if not (0 < o.mu_min <= o.mu_max) or o.mu_init < 0 or o.delta0 <= 1:
            raise ValueError("need 0 < mu_min <= mu_max, mu_init >= 0 and delta0 > 1")
        T, nx, nu = self.T, self.nx, self.nu
        hess = self.dynamics.second_order_function() if o.second_order else None   # refuses black boxes
        self._lo = np.ascontiguousarray(np.broadcast_to(self.u_lower, (T, nu)))
        self._hi = np.ascontiguousarray(np.broadcast_to(self.u_upper, (T, nu)))
        self._mu, self._delta = o.mu_init, 1.0
        # backward pass: compiled over the horizon unless multi-dimensional limits need box_qp
        compiled_ok = not (self.has_limits and nu > 1)
        if o.backward == "compiled" and not compiled_ok:
            raise ValueError("the compiled backward pass handles control limits only for nu == 1")
        self._compiled_backward = compiled_ok and o.backward != "python"
        if self._compiled_backward:
            step = backward_step_function(nx, nu, self.has_limits, o.second_order, jit)
            if hess is not None:                           # wrap: evaluate V_x' . f_xx inside the step
                mx_in = [ca.MX.sym(step.name_in(i), step.sparsity_in(i)) for i in range(step.n_in())]
                x = ca.MX.sym("x", nx)
                Hxx, Huu, Hux = hess(x, mx_in[9], mx_in[0])   # (x, u, lam = V_x')
                step = ca.Function("ddp_backward_step", mx_in[:13] + [x], step(*(mx_in[:13] + [Hxx, Huu, Hux])))
            self._backward = FastFunction(step.mapaccum("backward", T, [0, 1], [0, 1]))
        else:
            self._q_fn = FastFunction(q_function(nx, nu, o.second_order, jit))
            self._v_fn = FastFunction(value_function(nx, nu, jit))
            self._hess_fn = FastFunction(hess) if hess is not None else None
        self._dyn_data = self.dynamics.create_data(T)       # calc_diff fills these every iteration
        self._cost_diff = self.cost.create_data(T)
        self._k_warm: np.ndarray | None = None              # box-QP warm start (python backward pass)

    # ------------------------------------------------------------------ named steps
    def derivatives(self, X: np.ndarray, U: np.ndarray, P: np.ndarray) -> Expansion:
        """Dynamics and cost `calc_diff` along the nominal X (T+1, nx), U (T, nu), in reversed time.
        The arrays are the solver's buffers: the next call overwrites them."""
        T = self.T
        Xr = np.ascontiguousarray(X[T - 1::-1])
        Ur = np.ascontiguousarray(U[::-1])
        d = self.dynamics.calc_diff(self._dyn_data, Xr, Ur)
        c = self.cost.calc_diff(self._cost_diff, np.concatenate([Xr, X[T:]]), Ur,
                                np.concatenate([P[T - 1::-1], P[T:]]))
        return Expansion(d.fx, d.fu, c, Xr, Ur)

    def backward_pass(self, D: Expansion, mu: float) -> BackwardPass | None:
        """Gains from the Riccati-like recursion with regularization mu; None when the regularized
        Q_uu is not positive definite somewhere (the caller raises mu and retries)."""
        if self._compiled_backward:
            return self._backward_compiled(D, mu)
        return self._backward_python(D, mu)

    def _backward_compiled(self, D: Expansion, mu: float) -> BackwardPass | None:
        T, nx, nu, c = self.T, self.nx, self.nu, D.cost
        args = [c.lfx, c.lfxx, D.fx, D.fu, c.lx, c.lu, c.lxx, c.luu, c.lux, D.Ur, self._lo, self._hi, np.full(T, mu)]
        if self.options.second_order:
            args.append(D.Xr)
        _, _, KT, k, Quu, dV, piv = self._backward(*args)
        if not (np.all(piv > 0) and np.all(np.isfinite(KT)) and np.all(np.isfinite(k))):
            return None
        return BackwardPass(KT.reshape(T, nu, nx)[::-1].copy(), k.reshape(T, nu)[::-1].copy(),
                            Quu.reshape(T, nu, nu)[::-1].copy(), dV.reshape(T, 2).sum(axis=0))

    def _backward_python(self, D: Expansion, mu: float) -> BackwardPass | None:
        """Step by step, box_qp for the controls (Tassa 2014 Alg. 1 inside the backward pass)."""
        T, nx, nu, c = self.T, self.nx, self.nu, D.cost
        K, k, Quu_out, dV = np.zeros((T, nu, nx)), np.zeros((T, nu)), np.zeros((T, nu, nu)), np.zeros(2)
        Vx, Vxx = c.lfx.copy(), c.lfxx.copy()
        k_prev = self._k_warm
        for i in range(T):                                  # i: reversed index, t = T-1-i
            t = T - 1 - i
            args = [Vx, Vxx, D.fx[i], D.fu[i], c.lx[i], c.lu[i], c.lxx[i], c.luu[i], c.lux[i], mu]
            if self._hess_fn is not None:
                args += list(self._hess_fn(D.Xr[i], D.Ur[i], Vx))
            Qx, Qu, Qxx, Quu, Qux, Quu_reg, Qux_reg = (a.copy() for a in self._q_fn(*args))
            Quu, Quu_reg, Qux_reg = Quu.reshape(nu, nu), Quu_reg.reshape(nu, nu), Qux_reg.reshape(nu, nx)
            if self.has_limits:
                res = box_qp(Quu_reg, Qu, self.u_lower - D.Ur[i], self.u_upper - D.Ur[i],
                             k_prev[t] if k_prev is not None else None)
                if not res.status.ok:
                    return None
                k[t] = res.x
                if res.free.any():                          # clamped rows of K stay zero
                    L = res.chol_free
                    K[t][res.free] = -np.linalg.solve(L.T, np.linalg.solve(L, Qux_reg[res.free]))
            else:
                try:
                    L = np.linalg.cholesky(Quu_reg)
                except np.linalg.LinAlgError:
                    return None
                sol = -np.linalg.solve(L.T, np.linalg.solve(L, np.column_stack([Qu, Qux_reg])))
                k[t], K[t] = sol[:, 0], sol[:, 1:]
            Vx, Vxx, dv = (a.copy() for a in self._v_fn(Qx, Qu, Qxx, Quu, Qux, K[t], k[t]))
            Vxx = Vxx.reshape(nx, nx)
            dV += dv
            Quu_out[t] = Quu
        self._k_warm = k.copy()
        return BackwardPass(K, k, Quu_out, dV)

    def forward_pass(self, x0: np.ndarray, X: np.ndarray, U: np.ndarray, K: np.ndarray, k: np.ndarray,
                     alpha: float, P: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """The closed-loop rollout of eq. 12 around the nominal (X, U) with step alpha: new states,
        controls and their cost (inf for a diverged rollout)."""
        Xn, Un, l = self.dynamics.rollout_affine_cost(x0, X, U, K, k, alpha, self._lo, self._hi, self.cost, P)
        if not np.all(np.isfinite(Xn)):
            return Xn, Un, math.inf
        J = float(l.sum()) + self.cost.terminal_value(Xn[self.T], P[self.T])
        return Xn, Un, (J if math.isfinite(J) else math.inf)

    def line_search(self, x0, X, U, J: float, bp: BackwardPass, P, deadline: float | None):
        """Backtracking over `options.alphas` (eq. 13): the first trial with z > z_min as
        (Xn, Un, Jn), or None (every trial rejected, or the deadline passed)."""
        for alpha in self.options.alphas:
            Xn, Un, Jn = self.forward_pass(x0, X, U, bp.K, bp.k, alpha, P)
            expected = bp.expected_reduction(alpha)
            z = (J - Jn) / expected if expected > 0 else math.copysign(1.0, J - Jn)
            if math.isfinite(Jn) and z > self.options.z_min:
                return Xn, Un, Jn
            if deadline is not None and time.perf_counter() > deadline:
                return None
        return None

    def increase_regularization(self) -> None:
        o = self.options
        self._delta = max(o.delta0, self._delta * o.delta0)
        self._mu = max(o.mu_min, self._mu * self._delta)

    def decrease_regularization(self) -> None:
        o = self.options
        self._delta = min(1.0 / o.delta0, self._delta / o.delta0)
        self._mu = self._mu * self._delta if self._mu * self._delta > o.mu_min else 0.0

    @property
    def regularization(self) -> float:
        return self._mu

    def gradient_norm(self, k: np.ndarray, U: np.ndarray) -> float:
        """mean_t max_i |k_ti| / (|u_ti| + 1): the stopping test's size of the feedforward step."""
        return float(np.mean(np.max(np.abs(k) / (np.abs(U) + 1.0), axis=1)))

    def _regularized_backward_pass(self, D: Expansion, max_mu: float) -> BackwardPass | None:
        """backward_pass, raising mu until it succeeds; None once mu exceeds max_mu."""
        while True:
            bp = self.backward_pass(D, self._mu)
            if bp is not None:
                return bp
            self.increase_regularization()
            if self._mu > max_mu:
                return None

    # ------------------------------------------------------------------ the loop
    def solve(self, x0, U_init=None, params=None, *, max_iter: int | None = None,
              deadline: float | None = None) -> TrajectoryResult:
        """Optimize from x0. U_init: (T, nu) warm start (or a TrajectoryResult); params: cost
        parameters (one vector or (T+1, np)); deadline: `time.perf_counter()` value at which to stop
        and return the best plan so far (status DEADLINE). The deadline is checked after every
        forward-pass trial, so a solve always does at least one backward and one forward pass."""
        t_start = time.perf_counter()
        o, pr = self.options, self.problem
        T, nx, nu = self.T, self.nx, self.nu
        x0, P = pr.initial_state(x0), pr.params(params)
        U = pr.initial_controls(U_init)
        if U is None:
            U = np.zeros((T, nu))
            self._mu, self._k_warm = o.mu_init, None
        else:               # keep the regularization of the last solve, but never start above mu_init
            self._mu = min(self._mu, o.mu_init)
        self._delta = 1.0
        max_iter = o.max_iter if max_iter is None else int(max_iter)

        K, k, Quu = np.zeros((T, nu, nx)), np.zeros((T, nu)), np.zeros((T, nu, nu))
        X, U, J = self.forward_pass(x0, np.zeros((T + 1, nx)), U, K, k, 0.0, P)
        history = [J]

        def result(it, status, message):
            return TrajectoryResult(x=X, u=U, K=K, k=k, Quu=Quu, cost=float(J), iterations=it, status=status,
                                    message=message, cost_history=history,
                                    solve_time=time.perf_counter() - t_start,
                                    u_lower=self.u_lower if self.has_limits else None,
                                    u_upper=self.u_upper if self.has_limits else None)

        if not math.isfinite(J):
            return result(0, SolverStatus.FAILED, "initial rollout diverged (non-finite state or cost)")
        status, message = SolverStatus.MAX_ITERATIONS, f"reached max_iter={max_iter}"
        it, D, gains_current = 0, None, False
        for it in range(1, max_iter + 1):
            if D is None:
                D = self.derivatives(X, U, P)
            bp = self._regularized_backward_pass(D, o.mu_max)
            if bp is None:
                return result(it, SolverStatus.FAILED, f"backward pass failed: mu exceeded {o.mu_max:g}")
            K, k, Quu, gains_current = bp.K, bp.k, bp.Quu, True
            g_norm = self.gradient_norm(k, U)
            if g_norm < o.tol_grad and self._mu < 1e-5:
                self.decrease_regularization()
                status, message = SolverStatus.CONVERGED, f"gradient norm {g_norm:.2e} < {o.tol_grad:g}"
                break
            trial = self.line_search(x0, X, U, J, bp, P, deadline)
            if trial is not None:
                self.decrease_regularization()
                dJ = J - trial[2]
                X, U, J = trial
                history.append(J)
                D, gains_current = None, False
                if dJ < o.tol_cost * (1.0 + abs(J)):
                    status, message = SolverStatus.CONVERGED, f"cost decrease {dJ:.2e} below tolerance"
                    break
            else:
                self.increase_regularization()
                if self._mu > o.mu_max:
                    status, message = SolverStatus.FAILED, f"line search failed and mu exceeded {o.mu_max:g}"
                    break
            if deadline is not None and time.perf_counter() > deadline:
                status, message = SolverStatus.DEADLINE, "deadline reached"
                break
        if o.consistent_gains and not gains_current and status in (SolverStatus.CONVERGED,
                                                                   SolverStatus.MAX_ITERATIONS):
            bp = self._final_gains(X, U, P)
            if bp is not None:                              # gains and Quu at the returned nominal
                K, k, Quu = bp.K, bp.k, bp.Quu
        return result(it, status, message)

    def _final_gains(self, X, U, P) -> BackwardPass | None:
        """A backward pass at the returned nominal (`consistent_gains`), raising mu as needed."""
        D = self.derivatives(X, U, P)
        for _ in range(60):
            bp = self.backward_pass(D, self._mu)
            if bp is not None:
                return bp
            self.increase_regularization()
        return None
