"""LogDistanceCost: its expansion matches the cost and its gradient at the nominal trajectory, is
convex, and GPS drives a system with it to its target."""
import numpy as np
import pytest

from s2r.learning.agents import PointMassAgent
from s2r.learning.gps import MDGPS, GPSConfig
from s2r.learning.linear_gaussian import LogDistanceCost, QuadraticCost

T, dX, dU = 5, 4, 2


def _cost(moving: bool = False):
    x_target = np.array([0.2, -0.1, 0.0, 0.0])
    if moving:              # a target that moves over the episode (ArmInsertAgent's hover, then the hole)
        x_target = x_target + np.outer(np.linspace(0.3, 0.0, T + 1), [0.0, 1.0, 0.0, 0.0])
    quad = QuadraticCost(T, dX, dU, Q=np.array([1.0, 2.0, 0.1, 0.1]), R=0.3 * np.ones(dU),
                         Q_final=np.array([10.0, 10.0, 1.0, 1.0]), x_target=x_target)
    return LogDistanceCost(quad, slice(0, 2), weights=np.linspace(0.1, 2.0, T + 1), alpha=1e-3)


def _expansion_total(local, X, U):
    C, c, CT, cT = local.quadratic()
    Z = np.concatenate([X[:-1], U], axis=1)
    return (0.5 * np.einsum("ti,tij,tj->", Z, C, Z) + np.einsum("ti,ti->", c, Z)
            + 0.5 * X[-1] @ CT @ X[-1] + cT @ X[-1] + local.constant())


@pytest.mark.parametrize("moving", [False, True])
def test_expansion_is_exact_at_the_nominal_trajectory_with_its_gradient_and_convex(moving):
    rng = np.random.default_rng(0)
    cost = _cost(moving)
    X, U = rng.normal(0, 0.3, (T + 1, dX)), rng.normal(0, 0.5, (T, dU))
    local = cost.expand(X)
    assert _expansion_total(local, X, U) == pytest.approx(cost.evaluate(X, U).sum(), rel=1e-10)
    # its gradient at the nominal trajectory is the exact cost's (central differences)
    C, c, CT, cT = local.quadratic()
    grad = np.concatenate([np.einsum("tij,tj->ti", C[:, :dX, :], np.concatenate([X[:-1], U], 1)) + c[:, :dX],
                           (CT @ X[-1] + cT)[None]])
    num = np.zeros_like(X)
    for idx in np.ndindex(*X.shape):
        E = np.zeros_like(X)
        E[idx] = 1e-6
        num[idx] = (cost.evaluate(X + E, U).sum() - cost.evaluate(X - E, U).sum()) / 2e-6
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-6)
    assert np.all(np.linalg.eigvalsh(C) >= -1e-12) and np.all(np.linalg.eigvalsh(CT) >= -1e-12)


def test_log_term_keeps_pulling_where_the_quadratic_goes_flat():
    cost = _cost()
    q = cost.quad
    for d in (0.1, 0.01, 0.001):
        X = q.x_target.copy()
        X[:, 0] += d
        local = cost.expand(X)
        slope = (local.CT @ X[-1] + local.cT)[0]              # d cost / d x_0 at the final state
        log_slope = slope - q.Q[-1][0, 0] * d                  # minus the quadratic part's
        assert log_slope == pytest.approx(2 * cost.weights[-1] * d / (d * d + cost.alpha), rel=1e-9)
        if d <= 0.01:
            assert log_slope > q.Q[-1][0, 0] * d               # near the target the log term pulls harder


def test_quadratic_cost_is_its_own_expansion():
    q = _cost().quad
    assert q.expand(np.zeros((T + 1, dX))) is q


def test_a_moving_target_is_the_quadratics_minimum_at_every_step():
    q = _cost(moving=True).quad
    U = np.zeros((T, dU))
    assert np.allclose(q.evaluate(q.x_target, U), 0.0) and q.constant() > 0
    C, c, CT, cT = q.quadratic()
    Z = np.concatenate([q.x_target[:-1], U], 1)
    assert np.allclose(np.einsum("tij,tj->ti", C, Z) + c, 0.0) and np.allclose(CT @ q.x_target[-1] + cT, 0.0)
    with pytest.raises(ValueError, match="x_target"):
        QuadraticCost(T, dX, dU, Q=np.ones(dX), R=np.ones(dU), x_target=np.zeros((T, dX)))


def test_expand_refuses_a_trajectory_of_the_wrong_shape_and_bad_weights():
    with pytest.raises(ValueError, match="nominal trajectory"):
        _cost().expand(np.zeros((T, dX)))
    with pytest.raises(ValueError, match="weights"):
        LogDistanceCost(_cost().quad, slice(0, 2), weights=-1.0)


def test_gps_with_a_log_distance_cost_drives_the_point_mass_to_the_origin():
    agent = PointMassAgent()
    agent.cost = LogDistanceCost(agent.cost, slice(0, 2), weights=np.r_[np.full(agent.T, 0.01), 1.0], alpha=1e-4)
    gps = MDGPS(agent, GPSConfig(policy_steps=150, eval_episodes=4))
    costs = [gps.iterate()["cost"] for _ in range(3)]
    assert costs[2] < costs[0] - 5.0
    assert gps.history[-1]["success"] >= 0.5


def test_arm_reach_agent_adds_the_log_term_on_the_tcp_offset_only_when_weighted():
    from s2r.learning.agents import ArmReachAgent
    plain = ArmReachAgent(n_conditions=1, T=5)
    try:
        assert isinstance(plain.cost, QuadraticCost)
    finally:
        plain.close()
    agent = ArmReachAgent(n_conditions=1, T=5, log_weight=0.01, final_log_weight=1.0, log_alpha=1e-4)
    try:
        c = agent.cost
        assert isinstance(c, LogDistanceCost) and c.alpha == 1e-4
        assert list(c.index) == list(range(agent.dX - 3, agent.dX))          # x's tcp - target
        assert np.all(c.weights[:-1] == 0.01) and c.weights[-1] == 1.0
        X, U = np.zeros((6, agent.dX)), np.zeros((5, agent.dU))
        X[:, -3:] = [0.01, 0.0, 0.0]                                          # 1 cm off at every step
        extra = c.evaluate(X, U) - c.quad.evaluate(X, U)
        assert np.allclose(extra, c.weights * np.log(1e-4 + 1e-4))
    finally:
        agent.close()
    with pytest.raises(ValueError, match="log_weight"):
        ArmReachAgent(n_conditions=1, T=5, log_weight=-0.01)
    with pytest.raises(ValueError, match="log_alpha"):
        ArmReachAgent(n_conditions=1, T=5, final_log_weight=1.0, log_alpha=0.0)
