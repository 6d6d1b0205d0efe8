"""Random shooting, CEM and MPPI: batched rollouts, seeding, swing-ups, limits, bad input."""
import numpy as np
import pytest

from s2r.controllers import CEM, MPC, MPPI, BatchRollout, FiniteDifferenceDynamics, RandomShooting

from ctl_helpers import wrap

PLANNERS = {
    "mppi": lambda dyn, cost, seed=0: MPPI(dyn, cost, 15, 1000, u_lower=-2.0, u_upper=2.0, temperature=1.0,
                                           noise_sigma=1.0, seed=seed),
    "cem": lambda dyn, cost, seed=0: CEM(dyn, cost, 15, 200, u_lower=-2.0, u_upper=2.0, iterations=4, seed=seed),
    "random_shooting": lambda dyn, cost, seed=0: RandomShooting(dyn, cost, 15, 1000, u_lower=-2.0, u_upper=2.0,
                                                                seed=seed),
}


def test_batch_rollout_equals_one_by_one(gym_pendulum):
    dyn, cost = gym_pendulum
    rng = np.random.default_rng(0)
    U = rng.uniform(-2, 2, size=(7, 15, 1))
    x0 = np.array([0.3, -0.2])
    P = cost.params_for_horizon(None, 15)
    J = BatchRollout(dyn, cost, 15, 7)(x0, U, P)
    expected = [cost.total(dyn.rollout(x0, u), u) for u in U]
    np.testing.assert_allclose(J, expected, rtol=1e-12)
    fd = FiniteDifferenceDynamics(lambda X, U: dyn.step_batch(X, U), 2, 1, batched=True)
    np.testing.assert_allclose(BatchRollout(fd, cost, 15, 7)(x0, U, P), expected, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_seeded_and_reproducible(gym_pendulum, name):
    dyn, cost = gym_pendulum
    a, b, c = (PLANNERS[name](dyn, cost, seed) for seed in (3, 3, 4))
    ra, rb, rc = (p.solve(np.zeros(2)) for p in (a, b, c))
    np.testing.assert_array_equal(ra.u, rb.u)
    assert not np.array_equal(ra.u, rc.u)
    a.reset()
    np.testing.assert_array_equal(a.solve(np.zeros(2)).u, ra.u)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_closed_loop_pendulum_swing_up(gym_pendulum, name):
    """Gym Pendulum-v1 from hanging at rest, |u| <= 2: needs pumping, then balancing."""
    dyn, cost = gym_pendulum
    planner = PLANNERS[name](dyn, cost)
    mpc = MPC(planner)
    x = np.zeros(2)
    for _ in range(200):
        st = mpc.step(x)
        assert st.status.usable and np.all(np.abs(st.u) <= 2.0)
        x = dyn.step(x, st.u)
    assert abs(wrap(x[0] - np.pi)) < 0.1 and abs(x[1]) < 0.5


def test_mppi_result_and_limits(gym_pendulum):
    dyn, cost = gym_pendulum
    planner = MPPI(dyn, cost, 15, 256, u_lower=-0.5, u_upper=0.5, noise_sigma=[4.0], iterations=3,
                   smoothing_window=3, seed=1)
    res = planner.solve(np.zeros(2), np.full((15, 1), 5.0))          # warm start outside the box
    assert np.all(np.abs(res.u) <= 0.5)
    assert res.iterations == 3 and len(res.cost_history) == 3
    np.testing.assert_allclose(res.Quu, np.full((15, 1, 1), 0.25))    # Sigma^-1
    np.testing.assert_array_equal(res.K, 0.0)
    np.testing.assert_allclose(res.x, dyn.rollout(np.zeros(2), res.u))
    assert res.cost == pytest.approx(cost.total(res.x, res.u))


def test_cem_and_random_shooting_improve_on_their_warm_start(gym_pendulum):
    dyn, cost = gym_pendulum
    x0 = np.array([2.5, 0.0])
    U0 = np.zeros((15, 1))
    J0 = cost.total(dyn.rollout(x0, U0), U0)
    for planner in (PLANNERS["cem"](dyn, cost), PLANNERS["random_shooting"](dyn, cost)):
        res = planner.solve(x0, U0)
        assert res.cost <= J0 and np.all(np.abs(res.u) <= 2.0)


def test_mppi_smoothing_is_a_moving_average(gym_pendulum):
    dyn, cost = gym_pendulum
    planner = MPPI(dyn, cost, 15, 16, smoothing_window=3)
    impulse = np.zeros((15, 1))
    impulse[7] = 3.0
    out = planner._smooth(impulse)
    np.testing.assert_allclose(out[6:9, 0], 1.0)
    assert out.sum() == pytest.approx(3.0)
    np.testing.assert_allclose(planner._smooth(np.ones((15, 1))), 1.0)


def test_sampling_bad_input(gym_pendulum, cartpole_problem):
    dyn, cost = gym_pendulum
    with pytest.raises(ValueError, match="temperature"):
        MPPI(dyn, cost, 15, 100, temperature=0.0)
    with pytest.raises(ValueError, match="odd"):
        MPPI(dyn, cost, 15, 100, smoothing_window=4)
    with pytest.raises(ValueError, match="positive definite"):
        MPPI(dyn, cost, 15, 100, noise_sigma=[[-1.0]])
    with pytest.raises(ValueError, match="n_samples"):
        RandomShooting(dyn, cost, 15, 1)
    with pytest.raises(ValueError, match="elite_fraction"):
        CEM(dyn, cost, 15, 100, elite_fraction=0.0)
    with pytest.raises(ValueError, match="infeasible"):
        CEM(dyn, cost, 15, 100, u_lower=1.0, u_upper=0.0)
    with pytest.raises(ValueError, match="disagree"):
        MPPI(cartpole_problem[0], cost, 15, 100)
    planner = MPPI(dyn, cost, 15, 100)
    with pytest.raises(ValueError, match="NaN"):
        planner.solve([np.nan, 0.0])
    with pytest.raises(ValueError, match="shape"):
        planner.solve(np.zeros(2), np.zeros((14, 1)))


def test_mppi_weights_use_the_state_cost_and_the_control_term_once(linear_quadratic):
    """Williams et al. 2017 Alg. 2 by hand on a linear system with a heavy control cost (R):
    S_k = sum_t 1/2 x' Q x + 1/2 x_T' Qf x_T + gamma sum_t u_t' Sigma^-1 eps_k,t, w = softmin(S / lambda),
    U <- U + sum_k w_k eps_k. Adding the running cost at the perturbed control, 1/2 (u + eps)' R (u + eps),
    would count the control cost twice (and move the update away from this one)."""
    from ctl_helpers import linear_dynamics, lq_cost
    A, B, Q, R, Qf = linear_quadratic
    R = 50.0 * R
    dyn, cost = linear_dynamics(A, B), lq_cost(Q, R, Qf)
    K, T, lam, sig = 64, 10, 2.0, np.array([0.5, 2.0])
    x0 = np.array([1.0, -0.5, 0.3, 0.2])
    U0 = np.random.default_rng(5).normal(0, 1, (T, 2))
    planner = MPPI(dyn, cost, T, K, temperature=lam, noise_sigma=sig, seed=11)
    res = planner.solve(x0, U0)
    eps = np.random.default_rng(11).standard_normal((K, T, 2)) * np.sqrt(sig)
    S = np.empty(K)
    for k in range(K):
        X = dyn.rollout(x0, U0 + eps[k])
        S[k] = (0.5 * np.einsum("ti,ij,tj->", X[:-1], Q, X[:-1]) + 0.5 * X[-1] @ Qf @ X[-1]
                + lam * np.einsum("ti,ij,tj->", U0, np.diag(1 / sig), eps[k]))
    w = np.exp(-(S - S.min()) / lam)
    w /= w.sum()
    np.testing.assert_allclose(res.u, U0 + np.tensordot(w, eps, axes=1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(planner.sample_costs(x0, U0, eps, cost.params_for_horizon(None, T)), S, rtol=1e-9)
    assert res.cost == pytest.approx(cost.total(res.x, res.u))            # the plan's cost: the full cost
