"""The contracts between the controllers' pieces: Problem, calc / calc_diff data, the finite-difference
wrapper, the Planner protocol and iLQR's named steps."""
import numpy as np
import pytest

from s2r.controllers import (CEM, ILQR, MPC, MPPI, NMPC, BatchRollout, FiniteDifferenceDynamics, ILQROptions, Planner,
                         Problem, RandomShooting, finite_horizon_lqr, lqr_trajectory)

from ctl_helpers import linear_dynamics, lq_cost


def _one_line_error(fn, match):
    with pytest.raises(ValueError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)
    return str(info.value)


# ----------------------------------------------------------------------------- Problem
def test_problem_validates_once_with_one_line_refusals(cartpole_problem, linear_quadratic):
    dyn, cost, _ = cartpole_problem
    A, B, Q, R, Qf = linear_quadratic
    for bad in (0, -3, 2.5, np.nan, True, "10"):
        _one_line_error(lambda: Problem(dyn, cost, bad), "horizon must be a positive integer")
    _one_line_error(lambda: Problem(dyn, lq_cost(Q, R, Qf), 10), "disagree on dimensions")
    _one_line_error(lambda: Problem(dyn, cost, 10, u_lower=1.0, u_upper=-1.0), "infeasible control limits")
    _one_line_error(lambda: Problem(dyn, cost, 10, u_lower=[np.nan]), "control limits contain NaN")
    _one_line_error(lambda: Problem(dyn, cost, 10, x_lower=np.ones(4), x_upper=np.zeros(4)),
                    "infeasible state bounds")
    _one_line_error(lambda: Problem(object(), cost, 10), "dynamics has no")

    problem = Problem(dyn, cost, 10, u_lower=-5.0, u_upper=5.0)
    assert (problem.nx, problem.nu, problem.horizon) == (4, 1, 10) and problem.bounded
    np.testing.assert_array_equal(problem.u_lower, [-5.0])
    _one_line_error(lambda: problem.initial_state([0.0, np.nan, 0.0, 0.0]), "NaN")
    _one_line_error(lambda: problem.initial_controls(np.zeros((9, 1))), "shape")
    np.testing.assert_array_equal(problem.initial_controls(np.full((10, 1), 9.0)), 5.0)   # clipped
    # given a Problem, the limits may not be passed again (they would silently disagree)
    _one_line_error(lambda: ILQR(problem, u_lower=-1.0), "do not pass u_lower again")
    _one_line_error(lambda: ILQR(dyn, cost), "pass a Problem, or dynamics, cost and horizon")


def test_every_planner_shares_the_problem_it_is_given(gym_pendulum):
    dyn, cost = gym_pendulum
    problem = Problem(dyn, cost, 12, u_lower=-2.0, u_upper=2.0)
    planners = [ILQR(problem), MPPI(problem, n_samples=64), CEM(problem, n_samples=64),
                RandomShooting(problem, n_samples=64), NMPC(problem)]
    for p in planners:
        assert p.problem is problem
        assert (p.horizon, p.nx, p.nu) == (12, 2, 1)
        assert p.u_lower is problem.u_lower and p.u_upper is problem.u_upper   # not re-validated copies
    # the same one-line refusals of a bad x0 from every planner (one validation path)
    messages = {_one_line_error(lambda p=p: p.solve([np.nan, 0.0]), "initial state x0") for p in planners}
    assert len(messages) == 1
    # state bounds: only NMPC enforces them; the others refuse such a problem instead of ignoring it
    bounded = Problem(dyn, cost, 12, u_lower=-2.0, u_upper=2.0, x_lower=[-10.0, -8.0], x_upper=[10.0, 8.0])
    for cls in (ILQR, MPPI, CEM, RandomShooting):
        _one_line_error(lambda cls=cls: cls(bounded), "state bounds needs NMPC")
    np.testing.assert_array_equal(NMPC(bounded).x_upper, [10.0, 8.0])


# ----------------------------------------------------------------------------- calc / calc_diff
def test_dynamics_and_cost_calc_fill_their_data(cartpole_problem):
    dyn, cost, goal = cartpole_problem
    rng = np.random.default_rng(3)
    T = 7
    X, U = rng.normal(size=(T + 1, 4)), rng.normal(size=(T, 1))
    P = cost.params_for_horizon(None, T)
    d = dyn.create_data(T)
    out = dyn.calc(d, X[:T], U)
    assert out is d.x_next
    np.testing.assert_allclose(d.x_next, [dyn.step(x, u) for x, u in zip(X[:T], U)], rtol=1e-13)
    assert dyn.calc_diff(d, X[:T], U) is d
    fx, fu = dyn.jacobians(X[:T], U)
    np.testing.assert_array_equal(d.fx, fx)
    np.testing.assert_array_equal(d.fu, fu)
    _one_line_error(lambda: dyn.calc(d, X, U), r"expected states \(7, 4\)")

    c = cost.create_data(T)
    J = cost.calc(c, X, U, P)
    assert J == pytest.approx(cost.total(X, U), rel=1e-14)
    assert J == pytest.approx(c.l.sum() + c.lf, rel=1e-14)
    ref = cost.derivatives(X, U)
    assert cost.calc_diff(c, X, U, P) is c
    for name in ("l", "lx", "lu", "lxx", "luu", "lux", "lfx", "lfxx"):
        np.testing.assert_allclose(getattr(c, name), getattr(ref, name), rtol=1e-14, err_msg=name)
    assert c.lf == pytest.approx(ref.lf, rel=1e-14)
    _one_line_error(lambda: cost.calc(c, X[:T], U, P), "cost calc: expected X")


def test_finite_difference_wrapper_matches_the_symbolic_model(cartpole_problem):
    dyn, cost, _ = cartpole_problem
    rng = np.random.default_rng(5)
    T = 6
    X, U = rng.normal(size=(T, 4)), rng.normal(size=(T, 1))
    batched = FiniteDifferenceDynamics.around(dyn)
    one_by_one = FiniteDifferenceDynamics(dyn.step, 4, 1)                  # an unbatched black box
    ref = dyn.calc_diff(dyn.create_data(T), X, U)
    for fd in (batched, one_by_one):
        d = fd.calc_diff(fd.create_data(T), X, U)
        np.testing.assert_allclose(d.fx, ref.fx, atol=1e-7)
        np.testing.assert_allclose(d.fu, ref.fu, atol=1e-7)
        np.testing.assert_array_equal(fd.calc(fd.create_data(T), X, U), dyn.calc(dyn.create_data(T), X, U))
        np.testing.assert_allclose(fd.rollout(X[0], U), dyn.rollout(X[0], U), rtol=1e-12)
    # the forward pass: the wrapper's Python loop and the symbolic model's compiled one agree
    Xref, K, k = rng.normal(size=(T + 1, 4)), 0.3 * rng.normal(size=(T, 1, 4)), rng.normal(size=(T, 1))
    lo, hi = np.full((T, 1), -0.5), np.full((T, 1), 0.5)
    P = cost.params_for_horizon(None, T)
    Xa, Ua, la = dyn.rollout_affine_cost(X[0], Xref, U, K, k, 0.7, lo, hi, cost, P)
    Xb, Ub, lb = batched.rollout_affine_cost(X[0], Xref, U, K, k, 0.7, lo, hi, cost, P)
    np.testing.assert_allclose(Xa, Xb, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Ua, Ub, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(la, lb, rtol=1e-12)
    assert np.all(np.abs(Ua) <= 0.5) and np.any(np.abs(Ua) == 0.5)          # the clamp is applied
    # the same interface, including the refusal of what needs symbols
    for method in ("calc", "calc_diff", "create_data", "rollout_affine", "rollout_affine_cost", "step",
                   "step_batch", "rollout", "jacobians"):
        assert callable(getattr(batched, method))
    # sampling planners score black-box rollouts through the same interface
    V = rng.normal(size=(16, T, 1))
    for state_cost in (False, True):
        compiled = BatchRollout(dyn, cost, T, 16, state_cost=state_cost)(X[0], V, P)
        stepped = BatchRollout(batched, cost, T, 16, state_cost=state_cost)(X[0], V, P)
        np.testing.assert_allclose(stepped, compiled, rtol=1e-12)
    _one_line_error(batched.second_order_function, "needs symbolic Dynamics")
    _one_line_error(lambda: NMPC(batched, cost, 10), "symbolic")


# ----------------------------------------------------------------------------- Planner protocol
def test_every_planner_satisfies_the_planner_protocol(gym_pendulum):
    dyn, cost = gym_pendulum
    problem = Problem(dyn, cost, 10, u_lower=-2.0, u_upper=2.0)
    for planner in (ILQR(problem), NMPC(problem), MPPI(problem, n_samples=32), CEM(problem, n_samples=32),
                    RandomShooting(problem, n_samples=32)):
        assert isinstance(planner, Planner), type(planner).__name__
        step = MPC(planner, max_iter=2).step([0.1, 0.0])
        assert step.u.shape == (1,) and np.all(np.abs(step.u) <= 2.0)
    assert not isinstance(object(), Planner)
    msg = _one_line_error(lambda: MPC(object()), "must be a controllers.Planner")
    assert "'horizon'" in msg and "'solve'" in msg


# ----------------------------------------------------------------------------- iLQR's named steps
@pytest.mark.parametrize("backward", ["compiled", "python"])
def test_backward_pass_on_an_lq_problem_is_the_riccati_solution(linear_quadratic, backward):
    A, B, Q, R, Qf = linear_quadratic
    T, x0 = 15, np.array([1.0, -1.0, 2.0, 0.5])
    solver = ILQR(Problem(linear_dynamics(A, B), lq_cost(Q, R, Qf), T),
                  options=ILQROptions(mu_init=0.0, backward=backward))
    P = solver.problem.params(None)
    U0 = np.zeros((T, 2))
    X0 = solver.problem.rollout(x0, U0)
    bp = solver.backward_pass(solver.derivatives(X0, U0, P), 0.0)
    ref = finite_horizon_lqr(A, B, Q, R, Qf, T=T)
    np.testing.assert_allclose(bp.K, ref.K, atol=1e-10)
    np.testing.assert_allclose(bp.Quu, ref.Quu, atol=1e-10)
    # around the zero-control nominal the feedforward step is the LQR control there: k_0 = K_0 x0
    np.testing.assert_allclose(bp.k[0], ref.K[0] @ x0, atol=1e-10)
    # the full-step forward pass lands on the LQR trajectory, and the quadratic model is exact
    J0 = solver.problem.total_cost(X0, U0, P)
    X1, U1, J1 = solver.forward_pass(x0, X0, U0, bp.K, bp.k, 1.0, P)
    lqr = lqr_trajectory(A, B, Q, R, Qf, x0, T)
    np.testing.assert_allclose(U1, lqr.u, atol=1e-9)
    np.testing.assert_allclose(X1, lqr.x, atol=1e-9)
    assert J0 - J1 == pytest.approx(bp.expected_reduction(1.0), rel=1e-9)
    assert solver.line_search(x0, X0, U0, J0, bp, P, None)[2] == pytest.approx(J1, rel=1e-12)
    # at the optimum the next backward pass has nothing left to do
    bp1 = solver.backward_pass(solver.derivatives(X1, U1, P), 0.0)
    assert solver.gradient_norm(bp1.k, U1) < 1e-9


def test_backward_pass_refuses_an_indefinite_q_uu_until_regularized(linear_quadratic):
    A, B, Q, R, Qf = linear_quadratic
    T = 5
    solver = ILQR(Problem(linear_dynamics(A, B), lq_cost(Q, -R, Qf), T), options=ILQROptions(mu_init=0.0))
    P, U0 = solver.problem.params(None), np.zeros((T, 2))
    D = solver.derivatives(solver.problem.rollout(np.ones(4), U0), U0, P)
    assert solver.backward_pass(D, 0.0) is None                              # R < 0: Q_uu indefinite
    assert solver.backward_pass(D, 1e4) is not None                          # mu f_u'f_u makes it PD


def test_regularization_schedule(cartpole_problem):
    dyn, cost, _ = cartpole_problem
    o = ILQROptions(mu_init=1.0, mu_min=1e-6, delta0=2.0)
    solver = ILQR(Problem(dyn, cost, 5), options=o)
    solver.increase_regularization()
    solver.increase_regularization()                 # delta 2 then 4: mu 1 -> 2 -> 8
    assert solver.regularization == pytest.approx(8.0)
    solver.decrease_regularization()                 # delta -> min(1/2, 4/2) = 1/2
    assert solver.regularization == pytest.approx(4.0)
    for _ in range(60):
        solver.decrease_regularization()
    assert solver.regularization == 0.0              # below mu_min it snaps to zero
