"""iLQR / BoxDDP: LQ exactness, swing-ups, control limits, warm start, deadline, failure, bad input."""
import time

import casadi as ca
import numpy as np
import pytest

from s2r.controllers import (ILQR, Cost, Dynamics, FiniteDifferenceDynamics, ILQROptions, SolverStatus,
                         finite_horizon_lqr, lqr_trajectory, quadratic_cost)
from s2r.controllers.models import acrobot, arm, pendulum, two_link_arm, two_link_tip

from ctl_helpers import linear_dynamics, lq_cost, wrap


@pytest.mark.parametrize("backward", ["compiled", "python"])
@pytest.mark.parametrize("second_order", [False, True])
def test_ilqr_on_lq_problem_equals_lqr_after_one_iteration(linear_quadratic, backward, second_order):
    A, B, Q, R, Qf = linear_quadratic
    T, x0 = 30, np.array([1.0, -1.0, 2.0, 0.5])
    solver = ILQR(linear_dynamics(A, B), lq_cost(Q, R, Qf), T,
                  options=ILQROptions(mu_init=0.0, max_iter=1, backward=backward, second_order=second_order))
    res = solver.solve(x0)
    ref = lqr_trajectory(A, B, Q, R, Qf, x0, T)
    assert res.iterations == 1
    np.testing.assert_allclose(res.u, ref.u, atol=1e-9)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-9)
    np.testing.assert_allclose(res.K, ref.K, atol=1e-9)
    np.testing.assert_allclose(res.Quu, ref.Quu, atol=1e-9)
    assert res.cost == pytest.approx(ref.cost, rel=1e-10)
    # already optimal: another solve from the solution converges without moving
    again = solver.solve(x0, res.u, max_iter=5)
    assert again.status is SolverStatus.CONVERGED
    np.testing.assert_allclose(again.u, ref.u, atol=1e-9)


def test_affine_policy_and_covariance(linear_quadratic):
    A, B, Q, R, Qf = linear_quadratic
    res = ILQR(linear_dynamics(A, B), lq_cost(Q, R, Qf), 10, options=ILQROptions(mu_init=0.0)).solve(np.ones(4))
    K, kbar = res.affine_policy()
    for t in range(10):
        np.testing.assert_allclose(K[t] @ res.x[t] + kbar[t], res.u[t], atol=1e-12)
        np.testing.assert_allclose(res.control(t, res.x[t] + 0.1), res.u[t] + 0.1 * K[t].sum(axis=1), atol=1e-12)
    np.testing.assert_allclose(res.covariance() @ res.Quu, np.broadcast_to(np.eye(2), (10, 2, 2)), atol=1e-9)
    sol = finite_horizon_lqr(A, B, Q, R, Qf, T=10)
    np.testing.assert_allclose(res.Quu, sol.Quu, atol=1e-9)


def test_cartpole_swing_up(cartpole_problem):
    dyn, cost, goal = cartpole_problem
    res = ILQR(dyn, cost, 100, options=ILQROptions(max_iter=400)).solve(np.zeros(4))
    assert res.status is SolverStatus.CONVERGED, res.message
    assert abs(wrap(res.x[-1, 1] - np.pi)) < 0.05
    assert np.all(np.abs(res.x[-1, 2:]) < 0.1)
    assert res.cost_history[0] > 10 * res.cost and np.all(np.diff(res.cost_history) <= 0)
    # the plan is a consistent rollout of its own controls
    np.testing.assert_allclose(dyn.rollout(np.zeros(4), res.u), res.x, atol=1e-9)


def test_acrobot_swing_up():
    L = 0.2
    model = acrobot(1.0, 1.0, L, L, L / 2, L / 2, L * L / 12, L * L / 12, 0.0, 0.0)
    dyn = model.discretize(0.01, "rk4")
    x, u = model.x, model.u
    goal = np.array([np.pi, 0.0, 0.0, 0.0])
    e = x - goal
    cost = Cost(x, u, 0.5 * ca.dot(ca.DM([1e-3, 1e-3, 1e-4, 1e-4]) * e, e) + 5e-4 * u[0] ** 2,
                0.5e4 * ca.dot(ca.DM([1.0, 1.0, 0.1, 0.1]) * e, e))
    res = ILQR(dyn, cost, 100, options=ILQROptions(max_iter=300)).solve(np.zeros(4))
    assert res.status is SolverStatus.CONVERGED, res.message
    assert np.all(np.abs(res.x[-1, :2] - goal[:2]) < 0.05)


@pytest.fixture(scope="module")
def limited_pendulum():
    model = pendulum(1.0, 1.0, 10.0, inertia="rod")
    dyn = model.discretize(0.05, "semi_implicit_euler")
    cost = quadratic_cost(2, 1, [1.0, 0.1], [0.01], [100.0, 10.0], name="pendulum_quadratic")
    cost.set_default_params([np.pi, 0.0])
    return dyn, cost


def test_box_limits_hold_exactly_and_both_backward_passes_agree(limited_pendulum):
    """|u| <= 2 cannot lift the pendulum directly: the limits are active for long stretches."""
    dyn, cost = limited_pendulum
    results = {}
    for backward in ("compiled", "python"):
        solver = ILQR(dyn, cost, 80, u_lower=-2.0, u_upper=2.0, options=ILQROptions(max_iter=200, backward=backward))
        results[backward] = solver.solve(np.zeros(2))
    a, b = results["compiled"], results["python"]
    for r in (a, b):
        assert r.status is SolverStatus.CONVERGED, r.message
        assert np.all(r.u >= -2.0) and np.all(r.u <= 2.0)
        assert np.sum(np.abs(r.u) == 2.0) > 10                   # saturated, not merely clipped once
        assert abs(wrap(r.x[-1, 0] - np.pi)) < 0.05
    np.testing.assert_allclose(a.u, b.u, atol=1e-6)
    np.testing.assert_allclose(a.K, b.K, atol=1e-5)
    assert a.iterations == b.iterations


def test_multi_dimensional_box_ddp_on_two_link_arm():
    """nu = 2 with torque limits goes through the projected-Newton box QP; clamped controls get no feedback."""
    model = two_link_arm(g=9.81)
    dyn = model.discretize(0.02, "rk4")
    x, u = model.x, model.u
    target = ca.DM([1.2, 0.8])
    r_run = ca.vertcat(two_link_tip(model, x) - target, u)
    r_term = ca.vertcat(two_link_tip(model, x) - target, x[2:])
    cost = Cost.least_squares(x, u, r_run, [1.0, 1.0, 1e-3, 1e-3], r_term, [1e3, 1e3, 10.0, 10.0])
    lim = np.array([12.0, 6.0])
    solver = ILQR(dyn, cost, 75, u_lower=-lim, u_upper=lim)
    res = solver.solve(np.zeros(4))
    assert res.status is SolverStatus.CONVERGED, res.message
    assert np.all(np.abs(res.u) <= lim)
    saturated = np.abs(res.u) == lim
    assert saturated.any()
    tip = np.array(ca.Function("tip", [x], [two_link_tip(model, x)])(res.x[-1])).ravel()
    np.testing.assert_allclose(tip, [1.2, 0.8], atol=0.02)
    # rows of K for controls pinned at a limit whose gradient pushes outwards are exactly zero
    assert np.all(res.K[saturated] == 0.0)


def test_finite_difference_dynamics_give_the_same_solution(limited_pendulum):
    dyn, cost = limited_pendulum
    fd = FiniteDifferenceDynamics(dyn.step, 2, 1, dt=0.05)
    kw = dict(u_lower=-2.0, u_upper=2.0, options=ILQROptions(max_iter=200))
    a = ILQR(dyn, cost, 60, **kw).solve(np.zeros(2))
    b = ILQR(fd, cost, 60, **kw).solve(np.zeros(2))
    assert b.status is SolverStatus.CONVERGED
    assert b.cost == pytest.approx(a.cost, rel=1e-4)
    np.testing.assert_allclose(b.u, a.u, atol=1e-2)


def test_warm_start_converges_immediately(cartpole_problem):
    dyn, cost, _ = cartpole_problem
    solver = ILQR(dyn, cost, 100, options=ILQROptions(max_iter=400))
    cold = solver.solve(np.zeros(4))
    warm = solver.solve(np.zeros(4), cold)
    assert warm.iterations <= 2 and warm.status is SolverStatus.CONVERGED
    assert warm.cost == pytest.approx(cold.cost, rel=1e-6)


def test_deadline_returns_best_plan_so_far(cartpole_problem):
    dyn, cost, _ = cartpole_problem
    solver = ILQR(dyn, cost, 100, options=ILQROptions(max_iter=400))
    res = solver.solve(np.zeros(4), deadline=time.perf_counter())       # already past
    assert res.status is SolverStatus.DEADLINE and res.status.usable
    assert res.iterations == 1 and np.all(np.isfinite(res.u)) and np.all(np.isfinite(res.x))
    np.testing.assert_allclose(dyn.rollout(np.zeros(4), res.u), res.x, atol=1e-9)
    assert res.cost <= res.cost_history[0]


def test_panda_reach_with_urdf_dynamics(panda):
    """N=100, dt=0.01 torque control to an end-effector pose; pose cost + 1e-4 regularization."""
    model = arm(panda)
    dyn = model.discretize(0.01, "semi_implicit_euler", jit=False)
    x, u = model.x, model.u
    q = x[:7]
    R, p = panda.link_pose("panda_hand", q)
    goal = ca.SX.sym("goal", 12)
    q0 = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785])
    x0 = np.r_[q0, np.zeros(7)]
    pose = ca.vertcat(p - goal[:3], ca.vec(R) - goal[3:])
    r_run = ca.vertcat(pose, x - x0, u - panda.gravity_torques(q))
    w_run = np.r_[np.ones(3), np.full(9, 0.1), np.full(21, 1e-4)]
    cost = Cost.least_squares(x, u, r_run, w_run, ca.vertcat(pose, x[7:]),
                              np.r_[np.full(3, 1e4), np.full(9, 1e3), np.ones(7)], goal, jit=False)
    fk = panda.link_pose_function("panda_hand")
    Rg, pg = (np.array(a) for a in fk(q0 + np.array([0.4, 0.3, -0.2, 0.3, 0.2, -0.2, 0.1])))
    g0 = np.array(panda.function("gravity_torques")(q0)).ravel()
    res = ILQR(dyn, cost, 100, options=ILQROptions(max_iter=50), jit=False).solve(
        x0, np.tile(g0, (100, 1)), np.r_[pg.ravel(), Rg.T.ravel()])
    assert res.status is SolverStatus.CONVERGED, res.message
    Rf, pf = (np.array(a) for a in fk(res.x[-1, :7]))
    assert np.linalg.norm(pf.ravel() - pg.ravel()) < 1e-3
    assert np.abs(Rf - Rg).max() < 1e-2
    assert np.abs(res.x[-1, 7:]).max() < 0.05


def test_solver_failure_is_reported_not_hidden():
    x, u = ca.SX.sym("x", 1), ca.SX.sym("u", 1)
    explode = Dynamics(x, u, ca.exp(ca.exp(x)) + u, jit=False)             # overflows to inf
    res = ILQR(explode, quadratic_cost(1, 1, 1.0, 1.0, 1.0, jit=False), 20).solve([2.0])
    assert res.status is SolverStatus.FAILED and not res.success
    assert "diverged" in res.message


def test_ilqr_bad_input(cartpole_problem, linear_quadratic):
    dyn, cost, _ = cartpole_problem
    A, B, Q, R, Qf = linear_quadratic
    with pytest.raises(ValueError, match="disagree"):
        ILQR(dyn, lq_cost(Q, R, Qf), 10)
    with pytest.raises(ValueError, match="infeasible control limits"):
        ILQR(dyn, cost, 10, u_lower=1.0, u_upper=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        ILQR(dyn, cost, 10, u_lower=np.nan)
    with pytest.raises(ValueError, match="horizon"):
        ILQR(dyn, cost, 0)
    with pytest.raises(ValueError, match="nu == 1"):
        ILQR(linear_dynamics(A, B), lq_cost(Q, R, Qf), 10, u_lower=-1, u_upper=1,
             options=ILQROptions(backward="compiled"))
    with pytest.raises(ValueError, match="symbolic"):
        ILQR(FiniteDifferenceDynamics(dyn.step, 4, 1), cost, 10, options=ILQROptions(second_order=True))
    solver = ILQR(dyn, cost, 10)
    with pytest.raises(ValueError, match="NaN"):
        solver.solve([0.0, np.nan, 0.0, 0.0])
    with pytest.raises(ValueError, match="expected 4"):
        solver.solve(np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        solver.solve(np.zeros(4), np.zeros((9, 1)))
