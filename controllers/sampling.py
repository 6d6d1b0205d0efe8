"""Sampling-based planners: random shooting, the cross-entropy method and MPPI.

All three evaluate K control sequences of length T at once: the rollout and its cost for one
sequence are a single compiled function (dynamics and cost inlined, unrolled over T) mapped over
the K samples, so a batch is one call into compiled code; noise, weights and updates are vectorized
numpy over (K, T, nu). Every planner owns a seeded `np.random.Generator` (`seed`, `reset()`).

* `RandomShooting`: best of K random sequences (uniform in the control box, or Gaussian around the
  warm start when unbounded).
* `CEM` (Rubinstein 1999; as used for planning in PETS, Chua et al. 2018): fit a diagonal Gaussian
  to the elite fraction, smooth the update, iterate.
* `MPPI` (Williams et al., "Information theoretic MPC for model-based reinforcement learning",
  ICRA 2017, Alg. 2): exponentially weighted average of the sampled perturbations with temperature
  lambda; a sample's cost is the state cost of its rollout, sum_t q(x_t) + phi(x_T), plus the
  gamma u' Sigma^-1 eps control-cost term, and the update is smoothed by a moving average.

They return the common `TrajectoryResult` with K = k = 0 (open loop) and Quu = the inverse of the
sampling covariance they ended with.
"""
from __future__ import annotations

import math
import time

import casadi as ca
import numpy as np

from ._compiled import FastFunction, jit as _jit
from .cost import Cost
from .problem import Problem, as_problem
from .result import SolverStatus, TrajectoryResult

__all__ = ["RandomShooting", "CEM", "MPPI", "BatchRollout"]


class BatchRollout:
    """J(x0, U_k, P) for K control sequences U (K, T, nu) in one compiled call.

    Dynamics with a CasADi `step_function` are inlined with the cost into one straight-line C
    function mapped over the samples; black-box dynamics step all K samples at once through their
    `calc`. state_cost: score the rollouts with the running cost at zero control,
    q(x, p) = l(x, 0, p) (the cost less its control terms, for a cost separable in u), plus the
    terminal cost."""

    def __init__(self, dynamics, cost: Cost, horizon: int, n_samples: int, *, jit: bool | None = None,
                 state_cost: bool = False):
        self.dynamics, self.cost, self.T, self.K = dynamics, cost, int(horizon), int(n_samples)
        nx, nu, npar, T = dynamics.nx, dynamics.nu, cost.n_params, self.T
        xs, us, ps = ca.SX.sym("x", nx), ca.SX.sym("u", nu), ca.SX.sym("p", npar)
        zero_u = ca.DM.zeros(nu)
        self._running = (ca.Function(f"{cost.name}_q", [xs, us, ps], [cost.running_function(xs, zero_u, ps)])
                         if state_cost else cost.running_function)
        self._batch = self._run_v = None
        if dynamics.step_function is not None:
            x0, U, P = ca.SX.sym("x0", nx), ca.SX.sym("U", nu, T), ca.SX.sym("P", npar, T + 1)
            x, J = x0, 0
            for t in range(T):                             # unrolled: one straight-line C function
                J = J + self._running(x, U[:, t], P[:, t])
                x = dynamics.step_function(x, U[:, t])
            J = J + cost.terminal_function(x, P[:, T])
            J = ca.if_else(J == J, J, ca.inf)               # NaN (diverged rollout) -> +inf
            tag = "state_cost" if state_cost else "rollout_cost"
            single = ca.Function(f"{tag}_{dynamics.name}_{T}", [x0, U, P], [J])
            # the loop over samples is compiled too (serial: CasADi's "thread" map measured ~40x
            # slower than serial on this workload)
            batch = single.map(f"{tag}_{dynamics.name}_{T}_x{self.K}", "serial", self.K, [0, 2], [])
            self._batch = FastFunction(_jit(batch, jit))
        else:
            self._run_v = FastFunction(self._running.map(self.K)) if state_cost else None
            self._data = dynamics.create_data(self.K)

    def __call__(self, x0: np.ndarray, U: np.ndarray, P: np.ndarray) -> np.ndarray:
        if self._batch is not None:
            return self._batch(x0, U, P)[0].copy()
        K, T = U.shape[0], self.T                           # black-box dynamics: step all samples
        X = np.repeat(x0[None], K, axis=0)
        J = np.zeros(K)
        with np.errstate(invalid="ignore", over="ignore"):
            for t in range(T):
                Ut, Pt = np.ascontiguousarray(U[:, t]), np.repeat(P[t][None], K, axis=0)
                J += self._run_v(X, Ut, Pt)[0] if self._run_v is not None else self.cost.running_batch(X, Ut, Pt)
                X = self.dynamics.calc(self._data, X, Ut).copy()
            J += self.cost.terminal_batch(X, P[T])
        return np.where(np.isfinite(J), J, np.inf)


class _SamplingPlanner:
    """The common part: a validated `Problem` (or the old dynamics, cost, horizon, limits), the
    seeded generator and the batch rollout."""

    def __init__(self, problem, cost, horizon, n_samples: int, u_lower, u_upper, seed: int | None, jit):
        self.problem = pr = as_problem(problem, cost, horizon, u_lower, u_upper, who=type(self).__name__)
        pr.require_no_state_bounds(type(self).__name__)
        if int(n_samples) != n_samples or n_samples < 2:
            raise ValueError(f"n_samples must be an integer >= 2, got {n_samples}")
        self.dynamics, self.cost = pr.dynamics, pr.cost
        self.horizon, self.n_samples = pr.horizon, int(n_samples)
        self.nx, self.nu = pr.nx, pr.nu
        self.u_lower, self.u_upper, self.bounded = pr.u_lower, pr.u_upper, pr.bounded
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._rollout = BatchRollout(self.dynamics, self.cost, self.horizon, self.n_samples, jit=jit,
                                     state_cost=self._state_cost)

    _state_cost = False                                     # MPPI scores rollouts by their state cost

    def reset(self, seed: int | None = None) -> None:
        """Re-seed the generator (with `seed`, or the constructor's seed)."""
        self.rng = np.random.default_rng(self.seed if seed is None else seed)

    def _start(self, x0, U_init, params):
        pr = self.problem
        return pr.initial_state(x0), pr.params(params), pr.initial_controls(U_init)

    def _clip(self, U):
        return np.clip(U, self.u_lower, self.u_upper)

    def _result(self, x0, U, P, Sigma, iterations, status, message, t0, history, dU=None):
        T, nu = self.horizon, self.nu
        X = self.problem.rollout(x0, U)
        J = self.problem.total_cost(X, U, P)
        if not math.isfinite(J):
            status, message = SolverStatus.FAILED, "every sampled rollout diverged"
        if Sigma.ndim == 3 and Sigma is getattr(self, "_Quu", None):
            Quu = Sigma.copy()                              # precomputed Sigma^-1 per step
        elif Sigma.ndim == 2:
            Quu = np.repeat(np.linalg.inv(Sigma)[None], T, axis=0)
        else:
            Quu = np.linalg.inv(Sigma)
        return TrajectoryResult(x=X, u=U, K=np.zeros((T, nu, self.nx)),
                                k=np.zeros((T, nu)) if dU is None else dU, Quu=Quu, cost=float(J),
                                iterations=iterations, status=status, message=message,
                                cost_history=history, solve_time=time.perf_counter() - t0,
                                u_lower=self.u_lower, u_upper=self.u_upper)


class RandomShooting(_SamplingPlanner):
    """Best of `n_samples` random control sequences (the warm start competes as one of them).

    Bounded controls: uniform in the box. Unbounded: Gaussian with std `noise_std` around the warm
    start (or zero)."""

    def __init__(self, problem: Problem, cost: Cost | None = None, horizon: int | None = None,
                 n_samples: int = 1000, *, u_lower=None, u_upper=None, noise_std=1.0, seed: int | None = 0,
                 jit: bool | None = None):
        super().__init__(problem, cost, horizon, n_samples, u_lower, u_upper, seed, jit)
        self.noise_std = np.broadcast_to(np.asarray(noise_std, dtype=float), (self.nu,)).copy()
        if not np.all(self.noise_std > 0):
            raise ValueError("noise_std must be positive")

    def solve(self, x0, U_init=None, params=None, *, max_iter=None, deadline=None) -> TrajectoryResult:
        t0 = time.perf_counter()
        x0, P, U0 = self._start(x0, U_init, params)
        K, T, nu = self.n_samples, self.horizon, self.nu
        if self.bounded:
            V = self.rng.uniform(self.u_lower, self.u_upper, size=(K, T, nu))
        else:
            center = np.zeros((T, nu)) if U0 is None else U0
            V = self._clip(center + self.noise_std * self.rng.standard_normal((K, T, nu)))
        if U0 is not None:
            V[0] = self._clip(U0)
        J = self._rollout(x0, V, P)
        best = int(np.argmin(J))
        Sigma = np.diag(((self.u_upper - self.u_lower) ** 2 / 12.0) if self.bounded else self.noise_std ** 2)
        return self._result(x0, V[best].copy(), P, Sigma, 1, SolverStatus.CONVERGED,
                            f"best of {K} samples", t0, [float(J[best])])


class CEM(_SamplingPlanner):
    """Cross-entropy method over control sequences with a diagonal Gaussian."""

    def __init__(self, problem: Problem, cost: Cost | None = None, horizon: int | None = None,
                 n_samples: int = 500, *, u_lower=None, u_upper=None, iterations: int = 5,
                 elite_fraction: float = 0.1, smoothing: float = 0.1, init_std=None, min_std: float = 1e-3,
                 seed: int | None = 0, jit: bool | None = None):
        super().__init__(problem, cost, horizon, n_samples, u_lower, u_upper, seed, jit)
        if not 0 < elite_fraction <= 1 or not 0 <= smoothing < 1 or iterations < 1:
            raise ValueError("need 0 < elite_fraction <= 1, 0 <= smoothing < 1 and iterations >= 1")
        self.iterations, self.smoothing, self.min_std = int(iterations), float(smoothing), float(min_std)
        self.n_elite = max(2, int(math.ceil(elite_fraction * self.n_samples)))
        if init_std is None:
            init_std = (self.u_upper - self.u_lower) / 4.0 if self.bounded else np.ones(self.nu)
        self.init_std = np.broadcast_to(np.asarray(init_std, dtype=float), (self.nu,)).copy()
        if not np.all(self.init_std > 0):
            raise ValueError("init_std must be positive")

    def solve(self, x0, U_init=None, params=None, *, max_iter=None, deadline=None) -> TrajectoryResult:
        t0 = time.perf_counter()
        x0, P, U0 = self._start(x0, U_init, params)
        K, T, nu = self.n_samples, self.horizon, self.nu
        mean = np.zeros((T, nu)) if U0 is None else self._clip(U0)
        mean = self._clip(mean)
        std = np.broadcast_to(self.init_std, (T, nu)).copy()
        best_U, best_J = mean.copy(), math.inf
        history, status, message = [], SolverStatus.MAX_ITERATIONS, "iterations done"
        n_iter = self.iterations if max_iter is None else max(1, int(max_iter))
        it = 0
        for it in range(1, n_iter + 1):
            V = self._clip(mean + std * self.rng.standard_normal((K, T, nu)))
            V[0] = mean                                     # the current mean competes too
            J = self._rollout(x0, V, P)
            elite = np.argpartition(J, self.n_elite - 1)[: self.n_elite]
            i = int(np.argmin(J))
            if J[i] < best_J:
                best_J, best_U = float(J[i]), V[i].copy()
            history.append(best_J)
            a = self.smoothing                              # mean/std <- a old + (1 - a) elite fit
            mean = a * mean + (1 - a) * V[elite].mean(axis=0)
            std = a * std + (1 - a) * V[elite].std(axis=0)
            if std.max() < self.min_std:
                status, message = SolverStatus.CONVERGED, "sampling distribution collapsed"
                break
            if deadline is not None and time.perf_counter() > deadline:
                status, message = SolverStatus.DEADLINE, "deadline reached"
                break
        Sigma = np.stack([np.diag(np.maximum(s, self.min_std) ** 2) for s in std])
        return self._result(x0, best_U, P, Sigma, it, status, message, t0, history)


class MPPI(_SamplingPlanner):
    """Model predictive path integral control (Williams et al. 2017).

    temperature: lambda; noise_sigma: (nu, nu) covariance or nu variances; smoothing_window: odd
    moving-average length applied to the weighted update along time (1 = none); iterations: updates
    per solve. gamma: weight of the u' Sigma^-1 eps term (default lambda, as in the paper).

    A sample V = U + eps is scored as in Alg. 2, by its state cost plus the control-cost term,

        S(V) = sum_t q(x_t) + phi(x_T) + gamma sum_t u_t' Sigma^-1 eps_t,   q(x) = l(x, 0)

    (`sample_costs`): in the information-theoretic derivation the control cost is
    lambda/2 u' Sigma^-1 u, and the gamma term is what of it differs between samples, so the
    Cost's own control terms are not added again at the perturbed control (that would count the
    control cost twice and penalize exploration). The returned plan's cost is the full Cost.
    """

    def __init__(self, problem: Problem, cost: Cost | None = None, horizon: int | None = None,
                 n_samples: int = 1000, *, u_lower=None, u_upper=None, temperature: float = 1.0,
                 noise_sigma=1.0, gamma: float | None = None, smoothing_window: int = 1, iterations: int = 1,
                 seed: int | None = 0, jit: bool | None = None):
        super().__init__(problem, cost, horizon, n_samples, u_lower, u_upper, seed, jit)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if smoothing_window < 1 or smoothing_window % 2 == 0:
            raise ValueError(f"smoothing_window must be an odd integer >= 1, got {smoothing_window}")
        S = np.asarray(noise_sigma, dtype=float)
        S = np.diag(np.broadcast_to(S, (self.nu,))) if S.ndim < 2 else S
        if S.shape != (self.nu, self.nu) or not np.allclose(S, S.T):
            raise ValueError(f"noise_sigma must be nu variances or a symmetric ({self.nu}, {self.nu}) matrix")
        try:
            self._chol = np.linalg.cholesky(S)
        except np.linalg.LinAlgError as exc:
            raise ValueError("noise_sigma must be positive definite") from exc
        self.temperature, self.sigma = float(temperature), S
        self.sigma_inv = np.linalg.inv(S)
        self._diag_std = np.sqrt(np.diag(S)) if np.allclose(S, np.diag(np.diag(S))) else None
        self._Quu = np.repeat(self.sigma_inv[None], self.horizon, axis=0)
        self.gamma = self.temperature if gamma is None else float(gamma)
        self.smoothing_window, self.iterations = int(smoothing_window), int(iterations)

    _state_cost = True

    def sample_costs(self, x0, U: np.ndarray, eps: np.ndarray, P: np.ndarray) -> np.ndarray:
        """S(U + eps_k) for the K perturbations eps (K, T, nu) of the controls U (T, nu): the state
        cost of each rollout plus gamma sum_t u_t' Sigma^-1 eps_k,t (the class docstring)."""
        S = self._rollout(x0, U + eps, P)
        return S + self.gamma * np.tensordot(eps, U @ self.sigma_inv, axes=2)

    def _smooth(self, dU: np.ndarray) -> np.ndarray:
        w = self.smoothing_window
        if w == 1:
            return dU
        pad = np.concatenate([np.repeat(dU[:1], w // 2, 0), dU, np.repeat(dU[-1:], w // 2, 0)])
        c = np.cumsum(np.concatenate([np.zeros((1, dU.shape[1])), pad]), axis=0)
        return (c[w:] - c[:-w]) / w

    def solve(self, x0, U_init=None, params=None, *, max_iter=None, deadline=None) -> TrajectoryResult:
        t0 = time.perf_counter()
        x0, P, U0 = self._start(x0, U_init, params)
        K, T, nu, lam = self.n_samples, self.horizon, self.nu, self.temperature
        U = np.zeros((T, nu)) if U0 is None else self._clip(U0)
        n_iter = self.iterations if max_iter is None else max(1, int(max_iter))
        history, status, message = [], SolverStatus.MAX_ITERATIONS, "iterations done"
        dU = np.zeros((T, nu))
        it = 0
        for it in range(1, n_iter + 1):
            eps = self.rng.standard_normal((K, T, nu))                       # eps ~ N(0, Sigma)
            eps = eps * self._diag_std if self._diag_std is not None else eps @ self._chol.T
            V = U + eps
            if self.bounded or np.any(np.isfinite(self.u_lower)) or np.any(np.isfinite(self.u_upper)):
                np.clip(V, self.u_lower, self.u_upper, out=V)
                eps = V - U                                 # the perturbation actually applied
            S = self.sample_costs(x0, U, eps, P)            # state cost + gamma u' Sigma^-1 eps
            finite = np.isfinite(S)
            if not finite.all():
                if not finite.any():
                    status, message = SolverStatus.FAILED, "every sampled rollout diverged"
                    break
                S[~finite] = np.inf
            beta = S.min()
            w = np.exp(-(S - beta) / lam)                   # importance weights, exp(-inf) = 0
            w /= w.sum()
            dU = self._smooth(np.tensordot(w, eps, axes=1))
            U = self._clip(U + dU)
            history.append(float(beta))
            if deadline is not None and time.perf_counter() > deadline:
                status, message = SolverStatus.DEADLINE, "deadline reached"
                break
        return self._result(x0, U, P, self._Quu, it, status, message, t0, history, dU)
