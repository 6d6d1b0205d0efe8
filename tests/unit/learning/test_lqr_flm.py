"""Dynamics fitting, trajectory KL and the KL-constrained LQR update on known linear systems."""
import numpy as np
import pytest

from s2r.learning.dynamics import GMMPrior, fit_linear_gaussian_dynamics, linearize_policy
from s2r.learning.linear_gaussian import (LinearGaussianController, LinearGaussianDynamics, QuadraticCost,
                                      expected_cost, trajectory_kl)
from s2r.learning.lqr_flm import adjust_step, kl_regularized_lqr, lqr_flm_update


def double_integrator(T=20, dt=0.1, noise=1e-4):
    A = np.array([[1, 0, dt, 0], [0, 1, 0, dt], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    B = np.array([[0, 0], [0, 0], [dt, 0], [0, dt]])
    F = np.repeat(np.concatenate([A, B], axis=1)[None], T, 0)
    return LinearGaussianDynamics(F, np.zeros((T, 4)), np.repeat(noise * np.eye(4)[None], T, 0),
                                  np.array([1.0, -0.5, 0.0, 0.0]), 1e-3 * np.eye(4))


def test_dynamics_fit_recovers_a_known_linear_gaussian_system():
    rng = np.random.default_rng(0)
    T, dX, dU = 5, 3, 2
    F = rng.normal(0, 0.5, (T, dX, dX + dU))
    f = rng.normal(0, 0.1, (T, dX))
    noise = np.repeat(0.01 * np.eye(dX)[None], T, 0)
    dyn = LinearGaussianDynamics(F, f, noise, np.zeros(dX), np.eye(dX))
    ctrl = LinearGaussianController(np.zeros((T, dU, dX)), np.zeros((T, dU)), np.repeat(np.eye(dU)[None], T, 0))
    X, U = dyn.sample(ctrl, 400, rng)
    fit = fit_linear_gaussian_dynamics(X, U)
    assert np.abs(fit.F - F).max() < 0.05
    assert np.abs(fit.f - f).max() < 0.05
    assert np.allclose(fit.cov, noise, atol=5e-3)
    # with only 5 samples per step the regression is underdetermined: the GMM prior, fitted on all
    # steps' transitions of a time-invariant system, makes it well-posed and close again
    Fti = np.repeat(F[:1], T, 0)
    dyn_ti = LinearGaussianDynamics(Fti, np.repeat(f[:1], T, 0), noise, np.zeros(dX), np.eye(dX))
    X, U = dyn_ti.sample(ctrl, 5, rng)
    Xb, Ub = dyn_ti.sample(ctrl, 100, rng)
    pts = np.concatenate([Xb[:, :-1], Ub, Xb[:, 1:]], axis=2).reshape(-1, 2 * dX + dU)
    prior = GMMPrior(max_clusters=4, min_points_per_cluster=100, strength=5.0).update(pts, rng)
    with_prior = fit_linear_gaussian_dynamics(X, U, prior)
    without = fit_linear_gaussian_dynamics(X, U)
    err_prior, err_none = np.abs(with_prior.F - Fti).max(), np.abs(without.F - Fti).max()
    assert err_prior < 0.15 and err_none > 2 * err_prior


def test_gmm_prior_caps_clusters_at_20():
    with pytest.raises(ValueError, match="1..20"):
        GMMPrior(max_clusters=21)


def test_trajectory_kl_matches_monte_carlo():
    rng = np.random.default_rng(1)
    dyn = double_integrator(T=10, noise=1e-3)
    T, dX, dU = 10, 4, 2
    p = LinearGaussianController(rng.normal(0, 0.3, (T, dU, dX)), rng.normal(0, 0.2, (T, dU)),
                                 np.repeat(np.diag([0.2, 0.3])[None], T, 0))
    q = LinearGaussianController(rng.normal(0, 0.3, (T, dU, dX)), rng.normal(0, 0.2, (T, dU)),
                                 np.repeat(np.array([[0.3, 0.05], [0.05, 0.2]])[None], T, 0))
    kl = trajectory_kl(p, q, dyn)
    X, U = dyn.sample(p, 20000, rng)
    log_ratio = np.zeros(len(X))
    for t in range(T):
        for pol, sign in ((p, 1.0), (q, -1.0)):
            r = U[:, t] - (X[:, t] @ pol.K[t].T + pol.k[t])
            logdet = 2 * np.sum(np.log(np.diag(pol.chol[t])))
            log_ratio += sign * -0.5 * (np.einsum("ni,ij,nj->n", r, pol.inv_cov[t], r) + logdet)
    mc, se = log_ratio.mean(), log_ratio.std() / np.sqrt(len(X))
    assert kl > 1.0
    assert abs(mc - kl) < 4 * se + 1e-3 * kl
    assert trajectory_kl(p, p, dyn) == pytest.approx(0.0, abs=1e-9)


def test_expected_cost_matches_monte_carlo():
    rng = np.random.default_rng(2)
    dyn = double_integrator(T=10)
    cost = QuadraticCost(10, 4, 2, Q=np.ones(4), R=0.1 * np.ones(2), Q_final=10 * np.ones(4),
                         x_target=np.array([0.2, 0.1, 0, 0]))
    p = LinearGaussianController.pd(10, 4, 2, gains=np.array([[1, 0, 0.5, 0], [0, 1, 0, 0.5]]), variance=0.05)
    X, U = dyn.sample(p, 20000, rng)
    mc = np.mean([cost.evaluate(x, u).sum() for x, u in zip(X, U)])
    assert expected_cost(p, dyn, cost) == pytest.approx(mc, rel=0.02)


def test_lqr_flm_lowers_cost_under_the_kl_bound():
    T = 20
    dyn = double_integrator(T=T)
    cost = QuadraticCost(T, 4, 2, Q=np.array([1, 1, 0.1, 0.1]), R=0.01 * np.ones(2),
                         Q_final=100 * np.array([1, 1, 1, 1]))
    prev = LinearGaussianController.pd(T, 4, 2, variance=0.5)
    J0 = expected_cost(prev, dyn, cost)
    eta, costs = 1.0, [J0]
    for eps in (0.5, 2.0, 8.0):
        res = lqr_flm_update(dyn, cost, prev, epsilon=eps, eta=eta)
        assert res.kl <= 1.1 * eps
        assert trajectory_kl(res.controller, prev, dyn) == pytest.approx(res.kl)
        assert res.predicted_cost == pytest.approx(expected_cost(res.controller, dyn, cost))
        costs.append(res.predicted_cost)
        eta = res.eta
    assert costs[1] < J0 and costs[2] < costs[1] and costs[3] < costs[2]     # a larger bound, a larger step
    # repeated steps (each bounded) approach the unconstrained LQR optimum
    p = prev
    for _ in range(15):
        p = lqr_flm_update(dyn, cost, p, epsilon=10.0).controller
    lqr = kl_regularized_lqr(dyn, cost, p, eta=1e-6)
    assert expected_cost(p, dyn, cost) < 0.1 * J0
    assert expected_cost(p, dyn, cost) == pytest.approx(expected_cost(lqr, dyn, cost), rel=0.2, abs=0.05)


def test_lqr_flm_rejects_a_non_positive_bound():
    dyn = double_integrator(T=5)
    cost = QuadraticCost(5, 4, 2, Q=np.ones(4), R=np.ones(2))
    with pytest.raises(ValueError, match="epsilon"):
        lqr_flm_update(dyn, cost, LinearGaussianController.pd(5, 4, 2), epsilon=0.0)


def test_step_adjustment_grows_when_the_model_predicts_well_and_shrinks_when_not():
    assert adjust_step(1.0, 10.0, 5.0, 5.0) > 1.0          # actual = predicted improvement
    assert adjust_step(1.0, 10.0, 5.0, 11.0) < 1.0         # got worse
    assert adjust_step(1.0, 10.0, 5.0, 11.0, min_mult=0.5) == 0.5


def test_policy_linearization_recovers_a_linear_policy():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 6, 4))
    Kp = rng.normal(size=(2, 4))
    U = X[:, :5] @ Kp.T + 0.3
    lin = linearize_policy(X, U, 0.1 * np.eye(2))
    assert np.allclose(lin.K, Kp, atol=1e-3) and np.allclose(lin.k, 0.3, atol=1e-3)
    assert np.allclose(lin.cov, 0.1 * np.eye(2), atol=1e-3)
