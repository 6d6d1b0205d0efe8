"""Time-varying linear-Gaussian dynamics fitted from a few samples with a GMM prior.

Levine & Abbeel, "Learning Neural Network Policies with Guided Policy Search under Unknown
Dynamics", NIPS 2014, Sec. 3 ("LQR-FLM") and its appendix:

    1. fit a Gaussian mixture (at most 20 clusters) to all transitions [x_t, u_t, x_t+1] of the
       recent iterations, pooled over time steps (MDGPS keeps one mixture per condition)
    2. per time step t: the mixture's posterior over the step's points gives a normal-inverse-
       Wishart prior (mu_0, Phi, m, n_0): mu_0 and Phi are the responsibility-weighted mean and
       covariance of the clusters
    3. the posterior joint Gaussian of [x_t, u_t, x_t+1] (NIW update with the N samples at t),
       conditioned on [x_t, u_t]: x_t+1 ~ N(F_t [x_t; u_t] + f_t, N_t)

The same machinery fits a linear-Gaussian approximation of the global policy (`fit_linear_gaussian`
with inputs x and outputs pi(o)), as GPS's policy prior does.
"""
from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from .linear_gaussian import LinearGaussianController, LinearGaussianDynamics

__all__ = ["GaussianMixture", "GMMPrior", "fit_linear_gaussian", "fit_linear_gaussian_dynamics",
           "fit_initial_state", "linearize_policy"]


class GaussianMixture:
    """A Gaussian mixture fitted by EM (full covariances, regularized)."""

    def __init__(self, max_clusters: int = 20, min_points_per_cluster: int = 40, iterations: int = 100,
                 reg: float = 1e-6, tol: float = 1e-5):
        if not 1 <= max_clusters <= 20:
            raise ValueError(f"max_clusters must be in 1..20 (LQR-FLM's prior), got {max_clusters}")
        self.max_clusters, self.min_points = max_clusters, min_points_per_cluster
        self.iterations, self.reg, self.tol = iterations, reg, tol
        self.weights = self.means = self.covs = None

    def _log_resp(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log p(x, k) (N, K) and log p(x) (N,)."""
        N, D = X.shape
        logp = np.empty((N, len(self.weights)))
        for j, (w, m, S) in enumerate(zip(self.weights, self.means, self.covs)):
            L = np.linalg.cholesky(S)
            z = np.linalg.solve(L, (X - m).T)
            logp[:, j] = (np.log(w) - 0.5 * np.sum(z * z, axis=0) - np.sum(np.log(np.diag(L)))
                          - 0.5 * D * np.log(2 * np.pi))
        return logp, logsumexp(logp, axis=1)

    def fit(self, X: np.ndarray, rng: np.random.Generator) -> "GaussianMixture":
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or not np.all(np.isfinite(X)):
            raise ValueError("GMM data must be a finite (N, D) array")
        N, D = X.shape
        K = int(max(1, min(self.max_clusters, N // self.min_points)))
        scale = np.var(X, axis=0).mean() + 1e-12
        reg = self.reg * scale * np.eye(D) + 1e-10 * np.eye(D)
        # initial responsibilities: a random hard assignment
        resp = np.zeros((N, K))
        resp[np.arange(N), rng.integers(0, K, N)] = 1.0
        prev = -np.inf
        for _ in range(self.iterations):
            nk = resp.sum(axis=0) + 1e-10                                   # M step
            self.weights = nk / N
            self.means = (resp.T @ X) / nk[:, None]
            self.covs = np.empty((K, D, D))
            for j in range(K):
                d = X - self.means[j]
                self.covs[j] = (resp[:, j, None] * d).T @ d / nk[j] + reg
            logp, ll = self._log_resp(X)                                    # E step
            resp = np.exp(logp - ll[:, None])
            mean_ll = float(ll.mean())
            if abs(mean_ll - prev) < self.tol * (1.0 + abs(mean_ll)):
                break
            prev = mean_ll
        return self

    def responsibilities(self, X: np.ndarray) -> np.ndarray:
        logp, ll = self._log_resp(np.asarray(X, float))
        return np.exp(logp - ll[:, None])

    def moment_match(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mixture restricted to where X lies: responsibility-weighted mean and covariance."""
        w = self.responsibilities(X).mean(axis=0)
        w = w / w.sum()
        mu0 = w @ self.means
        d = self.means - mu0
        Phi = np.einsum("k,kij->ij", w, self.covs) + np.einsum("k,ki,kj->ij", w, d, d)
        return mu0, Phi


class GMMPrior:
    """NIW prior for per-time-step regression from a GMM over all points (Levine & Abbeel 2014).

    strength: the prior's pseudo-count m = n_0 (how many samples' worth it is)."""

    def __init__(self, max_clusters: int = 20, min_points_per_cluster: int = 40, strength: float = 1.0,
                 max_points: int = 20000):
        if not strength > 0:
            raise ValueError(f"prior strength must be positive, got {strength}")
        self.gmm = GaussianMixture(max_clusters, min_points_per_cluster)
        self.strength, self.max_points = strength, max_points
        self.fitted = False

    def update(self, points: np.ndarray, rng: np.random.Generator) -> "GMMPrior":
        points = np.asarray(points, float)
        if len(points) > self.max_points:
            points = points[rng.choice(len(points), self.max_points, replace=False)]
        self.gmm.fit(points, rng)
        self.fitted = True
        return self

    def evaluate(self, points: np.ndarray):
        """(mu_0, Phi, m, n_0) for the points of one time step."""
        mu0, Phi = self.gmm.moment_match(points)
        return mu0, Phi, self.strength, self.strength


def fit_linear_gaussian(Xin: np.ndarray, Yout: np.ndarray, prior: GMMPrior | None = None, reg: float = 1e-6):
    """y ~ N(A x + b, S) from N pairs, with the NIW posterior of the joint Gaussian of [x, y]:

        Sigma = (n_0 Phi + N S_hat + N m / (N + m) (mu_hat - mu_0)(mu_hat - mu_0)') / (N + n_0)
        mu    = mu_hat

    then conditioned on x. The mean is the samples' own (as in Levine et al. 2016's implementation,
    `mu = mun`): the prior shapes the covariance, hence the slopes A, but the fit passes through the
    data's mean, so E[y | x = mean x] is the samples' mean y (the MAP mean (m mu_0 + N mu_hat) / (m + N)
    would pull it toward the prior: a sixth of the way with 5 samples). Without a prior:
    ridge-regularized maximum likelihood."""
    Xin, Yout = np.asarray(Xin, float), np.asarray(Yout, float)
    N, dx = Xin.shape
    XY = np.concatenate([Xin, Yout], axis=1)
    mu_hat = XY.mean(axis=0)
    d = XY - mu_hat
    S_hat = d.T @ d / N
    if prior is not None and prior.fitted:
        mu0, Phi, m, n0 = prior.evaluate(XY)
        dm = (mu_hat - mu0)[:, None]
        sigma = (n0 * Phi + N * S_hat + (N * m / (N + m)) * (dm @ dm.T)) / (N + n0)
    else:
        sigma = S_hat
    mu = mu_hat
    sigma = 0.5 * (sigma + sigma.T)
    Sxx = sigma[:dx, :dx] + reg * (np.trace(sigma[:dx, :dx]) / dx + 1e-12) * np.eye(dx)
    A = np.linalg.solve(Sxx, sigma[:dx, dx:]).T                         # Sigma_yx Sigma_xx^-1
    b = mu[dx:] - A @ mu[:dx]
    S = sigma[dx:, dx:] - A @ Sxx @ A.T
    S = 0.5 * (S + S.T)
    return A, b, S


def fit_initial_state(X0: np.ndarray, min_var: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """x_0 ~ N(mean, cov) from the samples' first states (a variance floor for a few samples)."""
    X0 = np.asarray(X0, float)
    mean = X0.mean(axis=0)
    cov = np.diag(np.maximum(X0.var(axis=0), min_var))
    return mean, cov


def fit_linear_gaussian_dynamics(X: np.ndarray, U: np.ndarray, prior: GMMPrior | None = None,
                                 min_noise: float = 1e-8) -> LinearGaussianDynamics:
    """x_t+1 ~ N(F_t [x_t; u_t] + f_t, N_t) per step from N samples X (N, T+1, dX), U (N, T, dU)."""
    X, U = np.asarray(X, float), np.asarray(U, float)
    if X.ndim != 3 or U.ndim != 3 or X.shape[0] != U.shape[0] or X.shape[1] != U.shape[1] + 1:
        raise ValueError(f"dynamics fit needs X (N, T+1, dX) and U (N, T, dU), got {X.shape} and {U.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(U))):
        raise ValueError("dynamics fit: samples contain NaN or inf")
    N, T1, dX = X.shape
    T, dU = T1 - 1, U.shape[2]
    F, f, cov = np.empty((T, dX, dX + dU)), np.empty((T, dX)), np.empty((T, dX, dX))
    for t in range(T):
        xu = np.concatenate([X[:, t], U[:, t]], axis=1)
        F[t], f[t], cov[t] = fit_linear_gaussian(xu, X[:, t + 1], prior)
        cov[t] += min_noise * np.eye(dX)
    x0_mean, x0_cov = fit_initial_state(X[:, 0])
    return LinearGaussianDynamics(F, f, cov, x0_mean, x0_cov)


def linearize_policy(X: np.ndarray, U_policy: np.ndarray, policy_cov: np.ndarray,
                     prior: GMMPrior | None = None) -> LinearGaussianController:
    """A linear-Gaussian approximation pi_bar_t(u|x) = N(K_t x + k_t, S_t + Sigma_pi) of the global
    policy at the samples' states X (N, T+1, dX), its mean actions U_policy (N, T, dU) there, and its
    own covariance Sigma_pi (dU, dU) -- the policy linearization of MDGPS."""
    N, T1, dX = X.shape
    T, dU = U_policy.shape[1], U_policy.shape[2]
    K, k, cov = np.empty((T, dU, dX)), np.empty((T, dU)), np.empty((T, dU, dU))
    for t in range(T):
        K[t], k[t], S = fit_linear_gaussian(X[:, t], U_policy[:, t], prior)
        cov[t] = S + policy_cov
    return LinearGaussianController(K, k, cov)
