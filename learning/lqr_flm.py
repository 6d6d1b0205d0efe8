"""LQR-FLM: the local controller update under a KL bound (Levine & Abbeel 2014, Sec. 3.1).

    min_p  E_p[sum_t l(x_t, u_t)]   s.t.  KL(p(tau) || p_bar(tau)) <= epsilon

Lagrangian with dual variable eta: for a fixed eta the minimizer is the maximum-entropy LQR
solution of the surrogate cost  l(x, u) / eta - log p_bar(u | x)  under the fitted linear-Gaussian
dynamics (`kl_regularized_lqr`):

    p(u_t | x_t) = N(K_t x_t + k_t, Q_uu,t^-1),   K_t = -Q_uu^-1 Q_ux,  k_t = -Q_uu^-1 q_u

and the dual is solved by a bracketing search over log eta until KL(p || p_bar) is within 10 % of
epsilon (`lqr_flm_update`). The step size epsilon adapts from predicted versus actual improvement
(`adjust_step`). p_bar is the previous controller (LQR-FLM) or the linearized global policy (MDGPS).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .linear_gaussian import (LinearGaussianController, LinearGaussianDynamics, QuadraticCost, expected_cost,
                              trajectory_kl)

__all__ = ["NotPositiveDefinite", "kl_regularized_lqr", "lqr_flm_update", "LQRFLMResult", "adjust_step"]
log = logging.getLogger(__name__)


class NotPositiveDefinite(ArithmeticError):
    """Q_uu of the surrogate cost is not positive definite at this eta (the dual search raises eta)."""


def kl_regularized_lqr(dyn: LinearGaussianDynamics, cost: QuadraticCost, prev: LinearGaussianController,
                       eta: float) -> LinearGaussianController:
    """The backward pass of LQR on  l / eta - log p_bar(u | x)  (max-entropy solution)."""
    T, dX, dU = dyn.T, dyn.dX, dyn.dU
    C, c, CT, cT = cost.quadratic()
    K, k, cov = np.empty((T, dU, dX)), np.empty((T, dU)), np.empty((T, dU, dU))
    V, v = CT / eta, cT / eta                                            # value at the final state
    ix, iu = slice(0, dX), slice(dX, dX + dU)
    for t in reversed(range(T)):
        # -log p_bar(u|x) = 1/2 r' P r + const, r = [-K_bar I][x; u] - k_bar
        M = np.concatenate([-prev.K[t], np.eye(dU)], axis=1)
        P = prev.inv_cov[t]
        Ct = C[t] / eta + M.T @ P @ M
        ct = c[t] / eta - M.T @ P @ prev.k[t]
        F, fv = dyn.F[t], dyn.f[t]
        Q = Ct + F.T @ V @ F                                             # Q-function, quadratic
        q = ct + F.T @ (V @ fv + v)                                      # and linear terms
        Q = 0.5 * (Q + Q.T)
        try:
            L = np.linalg.cholesky(Q[iu, iu])
        except np.linalg.LinAlgError:
            raise NotPositiveDefinite(f"Q_uu not positive definite at t={t}, eta={eta:g}") from None
        Linv = np.linalg.inv(L)
        Quu_inv = Linv.T @ Linv
        K[t] = -Quu_inv @ Q[iu, ix]
        k[t] = -Quu_inv @ q[iu]
        cov[t] = Quu_inv
        V = Q[ix, ix] + Q[ix, iu] @ K[t]
        V = 0.5 * (V + V.T)
        v = q[ix] + Q[ix, iu] @ k[t]
    if not (np.all(np.isfinite(K)) and np.all(np.isfinite(k))):
        raise NotPositiveDefinite(f"non-finite gains at eta={eta:g}")
    return LinearGaussianController(K, k, cov)


@dataclass
class LQRFLMResult:
    controller: LinearGaussianController
    eta: float
    kl: float
    epsilon: float
    iterations: int
    predicted_cost: float        # E[cost] of the new controller under the fitted dynamics


def lqr_flm_update(dyn: LinearGaussianDynamics, cost: QuadraticCost, prev: LinearGaussianController,
                   epsilon: float, eta: float = 1.0, *, eta_min: float = 1e-8, eta_max: float = 1e16,
                   tol: float = 0.1, max_iter: int = 60) -> LQRFLMResult:
    """Dual search over eta: the new controller with KL(p || p_bar) within tol * epsilon of epsilon
    (or below it when even eta_min keeps the bound: the constraint is then inactive)."""
    if not epsilon > 0:
        raise ValueError(f"KL bound epsilon must be positive, got {epsilon}")
    lo, hi = None, None                 # eta bracket: kl(lo) > eps, kl(hi) < eps
    eta = float(np.clip(eta, eta_min, eta_max))
    best = None
    for it in range(1, max_iter + 1):
        try:
            p = kl_regularized_lqr(dyn, cost, prev, eta)
            kl = trajectory_kl(p, prev, dyn)
        except (NotPositiveDefinite, np.linalg.LinAlgError):
            lo = eta                     # too aggressive: a larger eta weights the prior more
            eta = eta * 10.0 if hi is None else np.sqrt(eta * hi)
            if eta > eta_max:
                raise NotPositiveDefinite(f"no positive definite Q_uu up to eta={eta_max:g}")
            continue
        if kl <= epsilon * (1 + tol):
            best = (p, eta, kl)          # feasible
        if abs(kl - epsilon) <= tol * epsilon:
            break
        if kl > epsilon:
            lo = eta
            eta = eta * 10.0 if hi is None else np.sqrt(eta * hi)
        else:
            hi = eta
            if eta <= eta_min:
                break                    # constraint inactive
            eta = max(eta / 10.0, eta_min) if lo is None else np.sqrt(lo * eta)
        if eta > eta_max:
            break
    if best is None:
        raise NotPositiveDefinite(f"dual search found no controller within KL {epsilon:g} (last eta {eta:g})")
    p, eta, kl = best
    return LQRFLMResult(p, float(eta), float(kl), float(epsilon), it, expected_cost(p, dyn, cost))


def adjust_step(step_mult: float, previous_cost: float, predicted_new_cost: float, actual_new_cost: float,
                *, min_mult: float = 0.01, max_mult: float = 10.0) -> float:
    """Step size from predicted versus actual improvement (Levine & Abbeel 2014, Sec. 3.1):

        mult = predicted / (2 max(1e-4, predicted - actual)),  clipped to [0.1, 10]

    so epsilon grows while the linear-Gaussian model predicts well and shrinks when it does not."""
    predicted = previous_cost - predicted_new_cost
    actual = previous_cost - actual_new_cost
    mult = predicted / (2.0 * max(1e-4, predicted - actual))
    mult = float(np.clip(mult, 0.1, 10.0)) if np.isfinite(mult) else 0.5
    return float(np.clip(step_mult * mult, min_mult, max_mult))
