"""What every trajectory optimizer returns: a time-varying linear controller and how it was found.

    u_t = u_hat_t + K_t (x_t - x_hat_t)

`k_t` is the feedforward step of the last backward pass (close to zero once converged; already
folded into u_hat). `Quu_t` is the Hessian of the Q-function in u, so a linear-Gaussian policy for
guided policy search is N(u_hat_t + K_t (x - x_hat_t), Quu_t^-1) (Levine & Koltun 2013).
Sampling planners have no Q-function: their K and k are zero and Quu_t is the inverse of the
sampling covariance they ended with, so Quu^-1 keeps meaning "exploration covariance".
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SolverStatus", "TrajectoryResult"]


class SolverStatus(str, enum.Enum):
    CONVERGED = "converged"            # a convergence test passed
    MAX_ITERATIONS = "max_iterations"  # iteration budget used up; the plan is the best found
    DEADLINE = "deadline"              # real-time budget hit; the plan is the best found so far
    FAILED = "failed"                  # no usable plan (regularization blew up, NaN, solver error)

    @property
    def usable(self) -> bool:
        """The plan is a consistent, finite rollout that can be executed."""
        return self is not SolverStatus.FAILED


@dataclass
class TrajectoryResult:
    x: np.ndarray          # (T+1, nx) nominal states x_hat
    u: np.ndarray          # (T, nu)   nominal controls u_hat
    K: np.ndarray          # (T, nu, nx) feedback gains
    k: np.ndarray          # (T, nu) last feedforward step
    Quu: np.ndarray        # (T, nu, nu) Q-function Hessian in u (Sigma = Quu^-1)
    cost: float
    iterations: int
    status: SolverStatus
    message: str = ""
    cost_history: list[float] = field(default_factory=list)
    solve_time: float = 0.0
    u_lower: np.ndarray | None = None
    u_upper: np.ndarray | None = None

    @property
    def horizon(self) -> int:
        return self.u.shape[0]

    @property
    def success(self) -> bool:
        return self.status.usable

    def control(self, t: int, x) -> np.ndarray:
        """u_t = u_hat_t + K_t (x - x_hat_t), clipped to the control limits the plan was made with."""
        if not 0 <= t < self.horizon:
            raise ValueError(f"t={t} outside the plan's horizon {self.horizon}")
        x = np.asarray(x, dtype=float).reshape(-1)
        if x.shape != self.x[t].shape or not np.all(np.isfinite(x)):
            raise ValueError(f"state must be {self.x.shape[1]} finite values, got {x}")
        u = self.u[t] + self.K[t] @ (x - self.x[t])
        if self.u_lower is not None:
            u = np.clip(u, self.u_lower, self.u_upper)
        return u

    def affine_policy(self) -> tuple[np.ndarray, np.ndarray]:
        """The same controller as u_t = K_t x_t + kbar_t (kbar_t = u_hat_t - K_t x_hat_t), GPS form."""
        kbar = self.u - np.einsum("tij,tj->ti", self.K, self.x[:-1])
        return self.K.copy(), kbar

    def covariance(self) -> np.ndarray:
        """Sigma_t = Quu_t^-1 (T, nu, nu)."""
        return np.linalg.inv(self.Quu)

    def shifted(self, steps: int = 1) -> "TrajectoryResult":
        """The plan advanced by `steps`, padded by holding the last control and gains: the warm start
        (and the fallback) of receding-horizon control."""
        if steps < 0:
            raise ValueError("steps must be >= 0")
        s = min(steps, self.horizon)

        def pad(a):                                         # drop s entries, repeat the last s times
            return np.concatenate([a[s:], np.repeat(a[-1:], s, axis=0)])

        return TrajectoryResult(x=pad(self.x), u=pad(self.u), K=pad(self.K), k=pad(self.k), Quu=pad(self.Quu),
                                cost=self.cost, iterations=0, status=self.status, message=f"shifted by {steps}",
                                u_lower=self.u_lower, u_upper=self.u_upper)
