"""Nonlinear MPC by direct multiple shooting in CasADi.

Decision variables w = [x_0, u_0, x_1, u_1, ..., u_{N-1}, x_N]; constraints
    x_0 = x_init,   x_{k+1} = f(x_k, u_k),   h_lo <= h(x_k, u_k) <= h_hi   (k = 0..N-1)
with simple bounds on every x_k (k >= 1) and u_k. The dynamics are one `Function.map(N)` call, the
whole NLP is expanded to SX (`expand=True`) and solved by

* ``mode="ipopt"``: interior point to convergence, warm-started (primal and dual) from the shifted
  previous solution;
* ``mode="rti"``: the real-time iteration (Diehl, Bock, Schloeder 2005): one full SQP step per call
  (`sqpmethod`, `max_iter=1`, no line search, QP solver `qrqp` by default) around the shifted
  previous solution and multipliers, with a Gauss-Newton Hessian: the Cost's own stage Hessians
  (J_r' W J_r for `Cost.least_squares`, positive semi-definite, so the QP is convex; the exact
  Hessian of a cost through nonlinear kinematics is not), the constraints' curvature dropped, as in
  acados' RTI. The linearization point is the shifted guess as it is, its x_0 the previous plan's
  prediction: the new measured state enters only through the QP's initial-value constraint
  x_0 = x_init (linear, so exact in the QP), and the QP's matrices do not depend on it -- RTI's
  preparation/feedback split (here computed in one `sqpmethod` call).

Every returned plan is checked: non-finite values or simple bounds violated by more than 1e-6 make
the result FAILED (never a silent garbage action). qrqp, CasADi's own active-set solver, returns
infeasible points on some QPs with active bounds (casadi issue #2333); those steps are
re-solved with ``qpsol_fallback`` (default DAQP, also shipped with CasADi, slower but reliable),
and reported as FAILED only if that fails too (set ``qpsol_fallback=None`` to see qrqp alone).

`solve()` has the common planner signature and returns a `TrajectoryResult`; with `feedback=True`
the gains K_t and Quu_t come from a Riccati pass around the solution (otherwise K = 0 and Quu_t is
the stage cost's Hessian l_uu, which keeps the RTI step lean).
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import casadi as ca
import numpy as np

from ._compiled import FastFunction, compile_nlp, jit as _jit
from .lqr import finite_horizon_lqr
from .problem import Problem, as_problem, bounds
from .result import SolverStatus, TrajectoryResult

__all__ = ["NMPC"]

_IPOPT_OK = {"Solve_Succeeded", "Solved_To_Acceptable_Level"}
_IPOPT_USABLE = _IPOPT_OK | {"Maximum_Iterations_Exceeded", "Maximum_WallTime_Exceeded",
                             "Maximum_CpuTime_Exceeded"}


class NMPC:
    """Multiple-shooting NMPC of a `Problem` (its state bounds included): `NMPC(problem, **options)`,
    or the old `NMPC(dynamics, cost, horizon, u_lower=, u_upper=, x_lower=, x_upper=, **options)`.

    path_constraints: list of (h, lower, upper) with h a casadi.Function (x, u) -> column vector.
    ipopt_options / sqp_options: extra solver options (merged over the defaults here).
    time_limit: wall-clock limit of one ipopt solve in seconds (None: none).
    jit: compile the NLP's functions (objective, constraints, derivatives) to C, cached on disk:
    about 2x faster solves after a one-time build of ~10-30 s (off: the CasADi VM on the expanded SX).
    """

    def __init__(self, problem: Problem, cost=None, horizon: int | None = None, *, u_lower=None, u_upper=None,
                 x_lower=None, x_upper=None, path_constraints: Sequence | None = None,
                 mode: str = "ipopt", feedback: bool = False, qpsol: str = "qrqp",
                 qpsol_fallback: str | None = "daqp", ipopt_options: dict | None = None,
                 sqp_options: dict | None = None,
                 time_limit: float | None = None, jit: bool = False):
        self.problem = pr = as_problem(problem, cost, horizon, u_lower, u_upper, x_lower=x_lower,
                                       x_upper=x_upper, who="NMPC")
        dynamics, cost = pr.dynamics, pr.cost
        if dynamics.step_function is None:
            raise ValueError("NMPC needs symbolic Dynamics (a CasADi step_function), not finite differences")
        if mode not in ("ipopt", "rti"):
            raise ValueError(f"mode must be 'ipopt' or 'rti', got {mode!r}")
        self.dynamics, self.cost, self.horizon, self.mode, self.feedback = dynamics, cost, pr.horizon, mode, feedback
        N, nx, nu, npar = self.horizon, pr.nx, pr.nu, cost.n_params
        self.nx, self.nu = nx, nu
        self.u_lower, self.u_upper, self.x_lower, self.x_upper = pr.u_lower, pr.u_upper, pr.x_lower, pr.x_upper

        # ---- multiple-shooting NLP (MX with mapped stage functions, expanded to SX by the solver)
        W = ca.MX.sym("w", N * (nx + nu) + nx)
        xs = [W[k * (nx + nu): k * (nx + nu) + nx] for k in range(N + 1)]
        us = [W[k * (nx + nu) + nx: (k + 1) * (nx + nu)] for k in range(N)]
        X, U = ca.horzcat(*xs[:N]), ca.horzcat(*us)
        x_init = ca.MX.sym("x_init", nx)
        Pm = ca.MX.sym("P", npar, N + 1)
        X_next = dynamics.step_function.map(N)(X, U)
        L = cost.running_function.map(N)(X, U, Pm[:, :N])
        J = ca.sum2(L) + cost.terminal_function(xs[N], Pm[:, N])
        g = [xs[0] - x_init, ca.vec(X_next - ca.horzcat(*xs[1:]))]
        lbg, ubg = [np.zeros(nx), np.zeros(N * nx)], [np.zeros(nx), np.zeros(N * nx)]
        self._path_sizes: list[int] = []
        for item in path_constraints or ():
            try:
                h, lo, hi = item
            except (TypeError, ValueError) as exc:
                raise ValueError("path_constraints entries must be (casadi.Function h(x, u), lower, upper)") from exc
            if not isinstance(h, ca.Function) or h.n_in() != 2 or h.size1_in(0) != nx or h.size1_in(1) != nu:
                raise ValueError(f"path constraint must be a casadi.Function of (x[{nx}], u[{nu}])")
            m = h.size1_out(0)
            lo, hi = bounds(m, lo, hi, "path constraint")
            g.append(ca.vec(h.map(N)(X, U)))
            lbg.append(np.tile(lo, N))
            ubg.append(np.tile(hi, N))
            self._path_sizes.append(m)
        G = ca.vertcat(*g)
        self._lbg, self._ubg = np.concatenate(lbg), np.concatenate(ubg)
        p = ca.vertcat(x_init, ca.vec(Pm))
        nlp = {"x": W, "f": J, "g": G, "p": p}
        self._objective = ca.Function("J", [W, p], [J])
        lbw = [np.full(nx, -np.inf)]                        # x_0 is fixed by its equality constraint
        ubw = [np.full(nx, np.inf)]
        for _ in range(N):
            lbw += [self.u_lower, self.x_lower]
            ubw += [self.u_upper, self.x_upper]
        self._lbw, self._ubw = np.concatenate(lbw), np.concatenate(ubw)
        self._nw = W.shape[0]

        if mode == "ipopt":
            opts = {"expand": True, "print_time": False, "error_on_fail": False,
                    "ipopt": {"print_level": 0, "sb": "yes", "tol": 1e-6, "max_iter": 200,
                              "warm_start_init_point": "yes", "warm_start_bound_push": 1e-6,
                              "warm_start_mult_bound_push": 1e-6, "mu_init": 1e-3,
                              "bound_relax_factor": 0.0}}
            if time_limit is not None:
                opts["ipopt"]["max_wall_time"] = float(time_limit)
            opts["ipopt"].update(ipopt_options or {})
            self._solvers = [("ipopt", self._nlpsol("nmpc_ipopt", "ipopt", nlp, opts, jit))]
        else:
            # Gauss-Newton Hessian of the Lagrangian: the Cost's stage Hessians, block-diagonal over
            # [x_k, u_k] and x_N (J' W J for least-squares costs: PSD whatever the residuals' curvature)
            sigma = ca.MX.sym("lam_f")
            lam_g = ca.MX.sym("lam_g", G.shape[0])
            nz = nx + nu
            Hs = cost.hessian_function.map(N)(X, U, Pm[:, :N])            # (nz, N nz)
            H = sigma * ca.diagcat(*[Hs[:, k * nz:(k + 1) * nz] for k in range(N)],
                                   cost.terminal_hessian_function(xs[N], Pm[:, N]))
            hess = ca.Function("nlp_hess_l", [W, p, sigma, lam_g], [H],
                               ["x", "p", "lam_f", "lam_g"], ["hess_gamma_x_x"]).expand()
            self._hess_lag = hess
            if jit:
                hess = _jit(hess, True)
            # the QP's own constraints, g(w0) + J(w0)(w - w0), to check what the QP solver returns
            W0 = ca.MX.sym("w0", W.shape[0])
            g_fun = ca.Function("g", [W, p], [G])
            G0 = g_fun(W0, p)
            g_lin = ca.Function("g_lin", [W, W0, p], [ca.densify(G0 + ca.jacobian(G0, W0) @ (W - W0))])
            self._g_lin = FastFunction(g_lin.expand())
            self._solvers = []
            for name in [qpsol] + ([qpsol_fallback] if qpsol_fallback and qpsol_fallback != qpsol else []):
                if not ca.has_conic(name):
                    raise ValueError(f"QP solver {name!r} is not available in this CasADi build")
                qp_opts = {"error_on_fail": False}
                if name == "qrqp":
                    qp_opts.update(print_iter=False, print_header=False, print_info=False)
                elif name == "qpoases":
                    qp_opts.update(printLevel="none")
                opts = {"expand": True, "print_time": False, "error_on_fail": False, "qpsol": name,
                        "max_iter": 1, "max_iter_ls": 0, "print_header": False, "print_iteration": False,
                        "print_status": False, "hess_lag": hess, "qpsol_options": qp_opts}
                opts.update(sqp_options or {})
                self._solvers.append((name, self._nlpsol(f"nmpc_rti_{name}", "sqpmethod", nlp, opts, jit)))
        self.reset()

    @staticmethod
    def _nlpsol(name: str, plugin: str, nlp: dict, opts: dict, jit: bool) -> ca.Function:
        """The solver; with `jit`, rebuilt over its compiled (and disk-cached) NLP functions."""
        solver = ca.nlpsol(name, plugin, nlp, opts)
        if jit:
            lib = compile_nlp(solver)
            if lib is not None:
                return ca.nlpsol(name, plugin, lib, {k: v for k, v in opts.items() if k != "expand"})
        return solver

    # ------------------------------------------------------------------ warm start
    def reset(self) -> None:
        """Forget the previous solution (next solve starts cold)."""
        self._w = None
        self._lam_x = None
        self._lam_g = None

    def _initial_guess(self, x0, U_init):
        N, nx, nu = self.horizon, self.nx, self.nu
        if self._w is not None:              # the previous primal-dual solution, shifted one step
            w = np.concatenate([self._w[nx + nu:], self._w[-(nx + nu):]])
            w = w[: self._nw]
            if self.mode == "ipopt":
                w[:nx] = x0                  # (RTI linearizes at the prediction: see the module docstring)
            lam_x = np.concatenate([self._lam_x[nx + nu:], self._lam_x[-(nx + nu):]])[: self._nw]
            gi = self._lam_g                                    # [x_0 eq; dynamics; path blocks]
            parts, i = [gi[:nx]], nx
            for m in [nx] + self._path_sizes:                   # every block is stage-major
                seg = gi[i: i + N * m]
                parts.append(np.concatenate([seg[m:], seg[-m:]]))
                i += N * m
            lam_g = np.concatenate(parts)
            return w, lam_x, lam_g
        U = self.problem.initial_controls(U_init)
        if U is None:
            U = np.zeros((N, nu))
        X = self.problem.rollout(x0, U)
        if not np.all(np.isfinite(X)):
            X = np.repeat(x0[None], N + 1, axis=0)
        X = np.clip(X, self.x_lower, self.x_upper)
        X[0] = x0
        w = np.concatenate([np.concatenate([X[k], U[k]]) for k in range(N)] + [X[N]])
        return w, None, None

    # ------------------------------------------------------------------ solve
    def solve(self, x0, U_init=None, params=None, *, max_iter: int | None = None,
              deadline: float | None = None) -> TrajectoryResult:
        """Solve from x0. The previous solution shifted one step, multipliers included, is the warm
        start whenever there is one; U_init (or a rollout of zeros) seeds a cold start (after
        `reset()` or a failure). `max_iter` and `deadline` are accepted for the planner interface; the
        iteration count is fixed by the mode (see `time_limit` for ipopt)."""
        t0 = time.perf_counter()
        N, nx, nu = self.horizon, self.nx, self.nu
        x0, P = self.problem.initial_state(x0), self.problem.params(params)
        w0, lam_x0, lam_g0 = self._initial_guess(x0, U_init)
        args = dict(x0=w0, lbx=self._lbw, ubx=self._ubw, lbg=self._lbg, ubg=self._ubg,
                    p=np.concatenate([x0, P.ravel()]))
        if lam_x0 is not None:
            args["lam_x0"], args["lam_g0"] = lam_x0, lam_g0
        failures = []
        for name, solver in self._solvers:             # RTI: qrqp first, its fallback QP solver next
            try:
                sol = solver(**args)
                stats = solver.stats()
            except RuntimeError as exc:                     # evaluation errors, solver exceptions
                failures.append(f"{name}: solver error: {exc}")
                continue
            w = np.asarray(sol["x"]).ravel()
            status_text = stats.get("return_status", "")
            status, why = self._classify(w, status_text, stats, w0, args["p"])
            if status is not None:
                break
            failures.append(f"{name}: {why}")
        else:
            return self._failed(w0, x0, "; ".join(failures), t0)
        if failures:
            status_text = f"{status_text} (after {'; '.join(failures)})"
        self._w = w
        self._lam_x = np.asarray(sol["lam_x"]).ravel()
        self._lam_g = np.asarray(sol["lam_g"]).ravel()
        X = np.stack([w[k * (nx + nu): k * (nx + nu) + nx] for k in range(N + 1)])
        U = np.stack([w[k * (nx + nu) + nx: (k + 1) * (nx + nu)] for k in range(N)])
        U = np.clip(U, self.u_lower, self.u_upper)          # bounds hold to the last bit
        K, Quu = np.zeros((N, nu, nx)), None
        if self.feedback:
            K, Quu = self._riccati_gains(X, U, P)
        if Quu is None:
            Quu = self.cost.calc_diff(self.cost.create_data(N), X, U, P).luu
        return TrajectoryResult(x=X, u=U, K=K, k=np.zeros((N, nu)), Quu=Quu, cost=float(sol["f"]),
                                iterations=int(stats.get("iter_count", 1)), status=status,
                                message=status_text, solve_time=time.perf_counter() - t0,
                                u_lower=self.u_lower, u_upper=self.u_upper)

    def _classify(self, w: np.ndarray, status_text: str, stats: dict, w0: np.ndarray, p: np.ndarray):
        """(status, None) for a usable solution, (None, reason) otherwise."""
        if not np.all(np.isfinite(w)):
            return None, f"non-finite solution ({status_text})"
        if self.mode == "ipopt":
            if status_text in _IPOPT_OK:
                status = SolverStatus.CONVERGED
            elif status_text in ("Maximum_WallTime_Exceeded", "Maximum_CpuTime_Exceeded"):
                status = SolverStatus.DEADLINE
            elif status_text in _IPOPT_USABLE:
                status = SolverStatus.MAX_ITERATIONS
            else:
                return None, f"ipopt: {status_text}"
        else:                                   # one SQP step: "max iterations" is the normal outcome
            if status_text == "Solve_Succeeded":
                status = SolverStatus.CONVERGED
            elif status_text == "Maximum_Iterations_Exceeded" or stats.get("success", False):
                status = SolverStatus.MAX_ITERATIONS
            else:
                return None, f"sqpmethod: {status_text}"
        with np.errstate(invalid="ignore"):
            violation = max(float(np.max(self._lbw - w)), float(np.max(w - self._ubw)), 0.0)
        if violation > 1e-6:
            return None, f"{status_text}: the solution violates the bounds by {violation:.3g}"
        if self.mode == "rti":                              # the QP step must satisfy the QP's constraints
            g = self._g_lin(w, w0, p)[0]
            with np.errstate(invalid="ignore"):
                gviol = max(float(np.max(self._lbg - g)), float(np.max(g - self._ubg)), 0.0)
            if gviol > 1e-6:
                return None, f"{status_text}: the QP step violates its constraints by {gviol:.3g}"
        return status, None

    def _riccati_gains(self, X, U, P):
        fx, fu = self.dynamics.jacobians(X[:-1], U)
        d = self.cost.calc_diff(self.cost.create_data(self.horizon), X, U, P)
        try:
            sol = finite_horizon_lqr(fx, fu, d.lxx, d.luu, d.lfxx, N=d.lux)
        except ValueError:
            return np.zeros((self.horizon, self.nu, self.nx)), None
        return sol.K, sol.Quu

    def _failed(self, w0, x0, message, t0) -> TrajectoryResult:
        N, nx, nu = self.horizon, self.nx, self.nu
        self.reset()
        X = np.stack([w0[k * (nx + nu): k * (nx + nu) + nx] for k in range(N + 1)])
        U = np.stack([w0[k * (nx + nu) + nx: (k + 1) * (nx + nu)] for k in range(N)])
        return TrajectoryResult(x=X, u=U, K=np.zeros((N, nu, nx)), k=np.zeros((N, nu)),
                                Quu=np.repeat(np.eye(nu)[None], N, axis=0), cost=math.inf, iterations=0,
                                status=SolverStatus.FAILED, message=message,
                                solve_time=time.perf_counter() - t0,
                                u_lower=self.u_lower, u_upper=self.u_upper)
