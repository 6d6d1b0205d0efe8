"""Linear-Gaussian controllers and dynamics, and what GPS computes with them in closed form.

    controller   p(u_t | x_t)        = N(K_t x_t + k_t, Sigma_t)           (GPS "affine" form)
                                     = N(K_t (x_t - x_hat_t) + u_hat_t, Q_uu^-1)   (iLQR's form)
    dynamics     p(x_t+1 | x_t, u_t) = N(F_t [x_t; u_t] + f_t, N_t),  x_0 ~ N(mu_0, Sigma_0)

Under both, the state-action marginals are Gaussian (a forward pass), so the expected cost of a
quadratic cost and the KL divergence between the trajectory distributions of two controllers
(same dynamics) are exact: KL(p || q) = sum_t E_{x_t ~ p}[ KL(p(u|x_t) || q(u|x_t)) ].
Arrays: T steps, dX states, dU actions; K (T, dU, dX), k (T, dU), cov (T, dU, dU).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LinearGaussianController", "LinearGaussianDynamics", "forward_marginals", "trajectory_kl",
           "expected_cost", "QuadraticCost", "LocalQuadraticCost", "LogDistanceCost"]


def _sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + np.swapaxes(a, -1, -2))


@dataclass
class LinearGaussianController:
    K: np.ndarray            # (T, dU, dX)
    k: np.ndarray            # (T, dU)
    cov: np.ndarray          # (T, dU, dU)

    def __post_init__(self):
        self.K, self.k, self.cov = (np.asarray(a, dtype=float) for a in (self.K, self.k, self.cov))
        T, dU, dX = self.K.shape
        if self.k.shape != (T, dU) or self.cov.shape != (T, dU, dU):
            raise ValueError(f"controller shapes disagree: K {self.K.shape}, k {self.k.shape}, cov {self.cov.shape}")
        if not (np.all(np.isfinite(self.K)) and np.all(np.isfinite(self.k)) and np.all(np.isfinite(self.cov))):
            raise ValueError("controller contains NaN or inf")
        self.cov = _sym(self.cov)
        self.chol = np.linalg.cholesky(self.cov)          # raises LinAlgError if not positive definite
        self.inv_cov = np.linalg.inv(self.cov)

    @property
    def T(self) -> int:
        return self.K.shape[0]

    @property
    def dX(self) -> int:
        return self.K.shape[2]

    @property
    def dU(self) -> int:
        return self.K.shape[1]

    @classmethod
    def from_nominal(cls, K, k, x_hat, u_hat, Quu) -> "LinearGaussianController":
        """N(K_t (x - x_hat_t) + k_t + u_hat_t, Q_uu^-1): the form iLQR and LQR-FLM produce."""
        K, x_hat = np.asarray(K, float), np.asarray(x_hat, float)
        kbar = np.asarray(k, float) + np.asarray(u_hat, float) - np.einsum("tij,tj->ti", K, x_hat[: K.shape[0]])
        return cls(K, kbar, np.linalg.inv(_sym(np.asarray(Quu, float))))

    @classmethod
    def from_trajectory(cls, result, variance_scale: float = 1.0) -> "LinearGaussianController":
        """From a `controllers.TrajectoryResult` (iLQR with consistent gains): Sigma = scale * Q_uu^-1."""
        K, kbar = result.affine_policy()
        return cls(K, kbar, variance_scale * result.covariance())

    @classmethod
    def pd(cls, T: int, dX: int, dU: int, *, gains=None, x_goal=None, u_ref=None, variance: float = 0.1):
        """A PD law u = G (x_goal - x) + u_ref with exploration noise: gains G (dU, dX) stack the
        proportional and derivative terms (zero gains: hold the reference, explore around it)."""
        G = np.zeros((dU, dX)) if gains is None else np.asarray(gains, float).reshape(dU, dX)
        xg = np.zeros(dX) if x_goal is None else np.asarray(x_goal, float).reshape(dX)
        ur = np.zeros(dU) if u_ref is None else np.asarray(u_ref, float).reshape(dU)
        if not variance > 0:
            raise ValueError(f"variance must be positive, got {variance}")
        return cls(np.repeat(-G[None], T, 0), np.repeat((G @ xg + ur)[None], T, 0),
                   np.repeat(variance * np.eye(dU)[None], T, 0))

    def mean(self, t: int, x) -> np.ndarray:
        return self.K[t] @ x + self.k[t]

    def act(self, t: int, x, noise=None) -> np.ndarray:
        """u = K x + k + chol(Sigma) noise (noise ~ N(0, I); None: the mean)."""
        u = self.K[t] @ x + self.k[t]
        return u if noise is None else u + self.chol[t] @ noise

    def log_prob(self, t: int, x, u) -> float:
        r = np.asarray(u) - self.mean(t, x)
        logdet = 2.0 * np.sum(np.log(np.diag(self.chol[t])))
        return float(-0.5 * (r @ self.inv_cov[t] @ r + logdet + self.dU * np.log(2 * np.pi)))

    def copy(self) -> "LinearGaussianController":
        return LinearGaussianController(self.K.copy(), self.k.copy(), self.cov.copy())


@dataclass
class LinearGaussianDynamics:
    F: np.ndarray            # (T, dX, dX + dU)
    f: np.ndarray            # (T, dX)
    cov: np.ndarray          # (T, dX, dX) process noise N_t
    x0_mean: np.ndarray      # (dX,)
    x0_cov: np.ndarray       # (dX, dX)

    @property
    def T(self) -> int:
        return self.F.shape[0]

    @property
    def dX(self) -> int:
        return self.F.shape[1]

    @property
    def dU(self) -> int:
        return self.F.shape[2] - self.F.shape[1]

    def sample(self, controller: LinearGaussianController, n: int, rng: np.random.Generator):
        """Monte Carlo trajectories: X (n, T+1, dX), U (n, T, dU)."""
        T, dX, dU = self.T, self.dX, self.dU
        X, U = np.empty((n, T + 1, dX)), np.empty((n, T, dU))
        X[:, 0] = rng.multivariate_normal(self.x0_mean, self.x0_cov, n)
        Lx = np.linalg.cholesky(_sym(self.cov) + 1e-12 * np.eye(dX))
        for t in range(T):
            U[:, t] = X[:, t] @ controller.K[t].T + controller.k[t] + rng.standard_normal((n, dU)) @ controller.chol[t].T
            xu = np.concatenate([X[:, t], U[:, t]], axis=1)
            X[:, t + 1] = xu @ self.F[t].T + self.f[t] + rng.standard_normal((n, dX)) @ Lx[t].T
        return X, U


def forward_marginals(controller: LinearGaussianController, dyn: LinearGaussianDynamics):
    """State-action marginals of p(tau): mu (T, dX+dU), sigma (T, dX+dU, dX+dU), and the final
    state's mean (dX,) and covariance (dX, dX)."""
    T, dX, dU = controller.T, controller.dX, controller.dU
    if dyn.T != T or dyn.dX != dX or dyn.dU != dU:
        raise ValueError(f"controller (T={T}, dX={dX}, dU={dU}) and dynamics "
                         f"(T={dyn.T}, dX={dyn.dX}, dU={dyn.dU}) disagree")
    mu, sigma = np.zeros((T, dX + dU)), np.zeros((T, dX + dU, dX + dU))
    mx, Sx = dyn.x0_mean.copy(), dyn.x0_cov.copy()
    for t in range(T):
        K = controller.K[t]
        mu[t, :dX], mu[t, dX:] = mx, K @ mx + controller.k[t]
        sigma[t, :dX, :dX] = Sx
        sigma[t, :dX, dX:] = Sx @ K.T
        sigma[t, dX:, :dX] = K @ Sx
        sigma[t, dX:, dX:] = K @ Sx @ K.T + controller.cov[t]
        mx = dyn.F[t] @ mu[t] + dyn.f[t]
        Sx = _sym(dyn.F[t] @ sigma[t] @ dyn.F[t].T + dyn.cov[t])
    return mu, sigma, mx, Sx


def trajectory_kl(p: LinearGaussianController, q: LinearGaussianController, dyn: LinearGaussianDynamics,
                  per_step: bool = False):
    """KL(p(tau) || q(tau)) for two controllers under the same dynamics and initial state
    distribution: sum_t E_{x_t ~ p}[KL(p(u|x_t) || q(u|x_t))] (the dynamics terms cancel)."""
    mu, sigma, _, _ = forward_marginals(p, dyn)
    dX, dU = p.dX, p.dU
    kl = np.empty(p.T)
    for t in range(p.T):
        P = q.inv_cov[t]
        dK, dk = p.K[t] - q.K[t], p.k[t] - q.k[t]
        mx, Sx = mu[t, :dX], sigma[t, :dX, :dX]
        dm = dK @ mx + dk                          # mean difference at the mean state
        logdet_q = 2.0 * np.sum(np.log(np.diag(q.chol[t])))
        logdet_p = 2.0 * np.sum(np.log(np.diag(p.chol[t])))
        kl[t] = 0.5 * (np.trace(P @ p.cov[t]) - dU + logdet_q - logdet_p
                       + dm @ P @ dm + np.trace(dK.T @ P @ dK @ Sx))
    kl = np.maximum(kl, 0.0)
    return kl if per_step else float(kl.sum())


class QuadraticCost:
    """l_t(x, u) = 1/2 (x - x*)' Q_t (x - x*) + 1/2 u' R_t u for t < T and 1/2 (x - x*)' Q_T (x - x*)
    at the final state: exact as its own second-order expansion, which is what LQR-FLM uses.

    Q (T+1, dX, dX) or (dX, dX) / (dX,) for every running step with `Q_final` for the last state;
    R (dU, dU) or (dU,); x_target (dX,) or, moving, (T+1, dX) (kept as (T+1, dX))."""

    def __init__(self, T: int, dX: int, dU: int, Q, R, Q_final=None, x_target=None):
        def mat(M, n, what):
            M = np.asarray(M, dtype=float)
            M = np.diag(M) if M.ndim == 1 else M
            if M.shape[-2:] != (n, n) or not np.all(np.isfinite(M)):
                raise ValueError(f"{what}: expected ({n}, {n}) finite weights, got {np.shape(M)}")
            return M
        Q = mat(Q, dX, "Q")
        if Q.ndim == 2:
            Qf = Q if Q_final is None else mat(Q_final, dX, "Q_final")
            Q = np.concatenate([np.repeat(Q[None], T, 0), Qf[None]])
        if Q.shape[0] != T + 1:
            raise ValueError(f"Q: expected {T + 1} matrices (T running + final), got {Q.shape[0]}")
        R = mat(R, dU, "R")
        self.T, self.dX, self.dU = T, dX, dU
        self.Q, self.R = Q, (np.repeat(R[None], T, 0) if R.ndim == 2 else R)
        xt = np.zeros(dX) if x_target is None else np.asarray(x_target, float)
        if xt.shape not in ((dX,), (T + 1, dX)) or not np.all(np.isfinite(xt)):
            raise ValueError(f"x_target: expected finite ({dX},) or ({T + 1}, {dX}), got {xt.shape}")
        self.x_target = np.broadcast_to(xt, (T + 1, dX)).copy()

    def evaluate(self, X, U) -> np.ndarray:
        """Per-step costs (T+1,) of one trajectory X (T+1, dX), U (T, dU); the last is the final cost."""
        E = np.asarray(X) - self.x_target
        c = 0.5 * np.einsum("ti,tij,tj->t", E, self.Q, E)
        c[:-1] += 0.5 * np.einsum("ti,tij,tj->t", U, self.R, U)
        return c

    def quadratic(self):
        """(C (T, dX+dU, dX+dU), c (T, dX+dU), C_final (dX, dX), c_final (dX,)) with constants dropped."""
        T, dX, dU = self.T, self.dX, self.dU
        C = np.zeros((T, dX + dU, dX + dU))
        C[:, :dX, :dX], C[:, dX:, dX:] = self.Q[:-1], self.R
        c = np.zeros((T, dX + dU))
        c[:, :dX] = -np.einsum("tij,tj->ti", self.Q[:-1], self.x_target[:-1])
        return C, c, self.Q[-1], -self.Q[-1] @ self.x_target[-1]

    def constant(self) -> float:
        return float(0.5 * np.einsum("ti,tij,tj->", self.x_target, self.Q, self.x_target))

    def expand(self, X_bar) -> "QuadraticCost":
        """The second-order expansion around a nominal trajectory: the cost itself."""
        return self


@dataclass
class LocalQuadraticCost:
    """A second-order expansion of a cost around a nominal trajectory, in the form LQR-FLM and
    `expected_cost` use: l_t ~ 1/2 [x; u]' C_t [x; u] + c_t' [x; u] (+ const), final 1/2 x' CT x + cT' x."""
    C: np.ndarray          # (T, dX+dU, dX+dU)
    c: np.ndarray          # (T, dX+dU)
    CT: np.ndarray         # (dX, dX)
    cT: np.ndarray         # (dX,)
    const: float

    def quadratic(self):
        return self.C, self.c, self.CT, self.cT

    def constant(self) -> float:
        return self.const


class LogDistanceCost:
    """A quadratic cost plus a log-distance term on some state coordinates (the distance cost of
    Levine et al. 2016, "End-to-End Training of Deep Visuomotor Policies", Sec. 5):

        l_t = q_t(x, u) + w_t log(|x[index] - x*[index]|^2 + alpha)

    The quadratic part pulls hard far from the target and goes flat near it; the log term's pull,
    2 w d / (d^2 + alpha), grows as d shrinks down to sqrt(alpha), so it keeps pulling at
    millimetres (peg insertion). `expand` gives LQR-FLM the expansion around a nominal trajectory:
    the exact gradient, and the Gauss-Newton part of the Hessian, 2 w / (d^2 + alpha) I (the
    dropped term, -4 w e e' / (d^2 + alpha)^2, makes the log concave away from the target and
    the LQR backward pass indefinite)."""

    def __init__(self, quadratic: QuadraticCost, index, weights, alpha: float = 1e-5):
        self.quad = quadratic
        self.T, self.dX, self.dU = quadratic.T, quadratic.dX, quadratic.dU
        self.index = np.arange(self.dX)[index]
        w = np.broadcast_to(np.asarray(weights, float), (self.T + 1,)).copy()
        if not (np.all(np.isfinite(w)) and np.all(w >= 0)) or not alpha > 0:
            raise ValueError("log-distance weights must be finite and >= 0, alpha > 0")
        self.weights, self.alpha = w, float(alpha)

    def _offset(self, X) -> np.ndarray:
        return np.asarray(X)[..., self.index] - self.quad.x_target[:, self.index]

    def evaluate(self, X, U) -> np.ndarray:
        E = self._offset(X)
        return self.quad.evaluate(X, U) + self.weights * np.log((E ** 2).sum(-1) + self.alpha)

    def expand(self, X_bar) -> LocalQuadraticCost:
        X_bar = np.asarray(X_bar, float)
        if X_bar.shape != (self.T + 1, self.dX):
            raise ValueError(f"nominal trajectory: expected ({self.T + 1}, {self.dX}), got {X_bar.shape}")
        C, c, CT, cT = (a.copy() for a in self.quad.quadratic())
        const = self.quad.constant()
        E = self._offset(X_bar)
        s = (E ** 2).sum(-1) + self.alpha
        g = 2 * self.weights[:, None] * E / s[:, None]          # d/dx of the log term, (T+1, k)
        h = 2 * self.weights / s                                 # Gauss-Newton curvature, times I
        xb = X_bar[:, self.index]
        lin = g - h[:, None] * xb                                # the expansion's linear term in x
        const += float(np.sum(self.weights * np.log(s) - (g * xb).sum(-1) + 0.5 * h * (xb ** 2).sum(-1)))
        i = self.index
        C[:, i, i] += h[:-1, None]
        c[:, i] += lin[:-1]
        CT[i, i] += h[-1]
        cT[i] += lin[-1]
        return LocalQuadraticCost(C, c, CT, cT, const)


def expected_cost(controller: LinearGaussianController, dyn: LinearGaussianDynamics, cost: QuadraticCost) -> float:
    """E_p[sum_t l_t] under the linear-Gaussian trajectory distribution (exact for a quadratic cost)."""
    mu, sigma, mT, ST = forward_marginals(controller, dyn)
    C, c, CT, cT = cost.quadratic()
    J = 0.5 * np.einsum("tij,tji->", C, sigma) + 0.5 * np.einsum("ti,tij,tj->", mu, C, mu) + np.einsum("ti,ti->", c, mu)
    J += 0.5 * np.trace(CT @ ST) + 0.5 * mT @ CT @ mT + cT @ mT
    return float(J + cost.constant())
