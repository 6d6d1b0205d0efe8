"""CasADi NMPC: closed-loop cart-pole (acados example) with ipopt and RTI, bounds never violated,
warm start, failures reported, bad input."""
import casadi as ca
import numpy as np
import pytest

from s2r.controllers import ILQR, MPC, NMPC, FiniteDifferenceDynamics, ILQROptions, SolverStatus, quadratic_cost
from s2r.controllers._compiled import jit_available
from s2r.controllers.models import cartpole

from ctl_helpers import wrap

GOAL = np.array([0.0, np.pi, 0.0, 0.0])
F_MAX = 80.0


@pytest.fixture(scope="module")
def acados_cartpole():
    """acados' pendulum_on_cart: M=1, m=0.1, l=0.8, N=40, Tf=0.8, |F| <= 80 (angle shifted by pi)."""
    dyn = cartpole(1.0, 0.1, 0.8).discretize(0.02, "rk4")
    cost = quadratic_cost(4, 1, [1e3, 1e3, 1e-2, 1e-2], [1e-2], [1e3, 1e3, 1e-2, 1e-2], name="acados_cartpole")
    cost.set_default_params(GOAL)
    return dyn, cost


def _speed_constraint():
    x, u = ca.SX.sym("x", 4), ca.SX.sym("u", 1)
    return ca.Function("cart_speed", [x, u], [x[2]])


def _closed_loop(planner, dyn, steps=150):
    mpc = MPC(planner)
    x = np.zeros(4)
    X, U, out = [x], [], []
    for _ in range(steps):
        st = mpc.step(x)
        out.append(st)
        U.append(st.u)
        x = dyn.step(x, st.u)
        X.append(x)
    return np.array(X), np.array(U), out


@pytest.mark.parametrize("mode", ["ipopt", "rti"])
def test_closed_loop_swing_up_respects_force_limit(acados_cartpole, mode):
    dyn, cost = acados_cartpole
    X, U, steps = _closed_loop(NMPC(dyn, cost, 40, u_lower=-F_MAX, u_upper=F_MAX, mode=mode), dyn)
    assert all(s.status.usable and not s.fallback for s in steps)
    assert np.all(np.abs(U) <= F_MAX) and np.isclose(np.abs(U).max(), F_MAX)   # the limit is used
    assert abs(wrap(X[-1, 1] - np.pi)) < 0.05 and np.abs(X[-1, 2:]).max() < 0.1
    if mode == "rti":
        assert all(s.iterations == 1 for s in steps)


@pytest.mark.parametrize("mode,qpsol", [("ipopt", None), ("rti", None), ("rti", "daqp")])
def test_state_bounds_and_path_constraints_never_violated(acados_cartpole, mode, qpsol):
    """Cart position |p| <= 0.8 and speed |v| <= 6 (a path constraint) both become active."""
    dyn, cost = acados_cartpole
    kw = {} if qpsol is None else {"qpsol": qpsol}
    planner = NMPC(dyn, cost, 40, u_lower=-F_MAX, u_upper=F_MAX, x_lower=[-0.8, -np.inf, -np.inf, -np.inf],
                   x_upper=[0.8, np.inf, np.inf, np.inf], path_constraints=[(_speed_constraint(), -6.0, 6.0)],
                   mode=mode, **kw)
    X, U, steps = _closed_loop(planner, dyn)
    for s in steps:
        assert s.status.usable and not s.fallback
        assert np.all(np.abs(s.plan.x[1:, 0]) <= 0.8 + 1e-6)
        assert np.all(np.abs(s.plan.x[:-1, 2]) <= 6.0 + 1e-6)
    assert np.all(np.abs(U) <= F_MAX)
    assert np.all(np.abs(X[:, 0]) <= 0.8 + 1e-6) and np.all(np.abs(X[:, 2]) <= 6.0 + 1e-6)
    assert np.abs(X[:, 0]).max() > 0.79 and np.abs(X[:, 2]).max() > 5.9      # the bounds were active
    assert abs(wrap(X[-1, 1] - np.pi)) < 0.05


def test_infeasible_qp_step_is_reported_and_mpc_falls_back(acados_cartpole):
    """qrqp alone returns bound-violating points on this problem (casadi#2333): never applied."""
    dyn, cost = acados_cartpole
    planner = NMPC(dyn, cost, 40, u_lower=-F_MAX, u_upper=F_MAX, x_lower=[-0.8, -np.inf, -np.inf, -np.inf],
                   x_upper=[0.8, np.inf, np.inf, np.inf], path_constraints=[(_speed_constraint(), -6.0, 6.0)],
                   mode="rti", qpsol="qrqp", qpsol_fallback=None)
    res = planner.solve(np.zeros(4))
    assert res.status is SolverStatus.FAILED and "violates the bounds" in res.message
    X, U, steps = _closed_loop(planner, dyn, steps=40)
    assert any(s.fallback for s in steps)
    assert np.all(np.isfinite(U)) and np.all(np.abs(U) <= F_MAX)
    for s in steps:
        if s.plan is not None:
            assert np.all(np.abs(s.plan.x[1:, 0]) <= 0.8 + 1e-6)


def test_warm_start_cuts_ipopt_iterations(acados_cartpole):
    dyn, cost = acados_cartpole
    planner = NMPC(dyn, cost, 40, u_lower=-F_MAX, u_upper=F_MAX)
    first = planner.solve(np.zeros(4))
    x1 = dyn.step(np.zeros(4), first.u[0])
    second = planner.solve(x1)
    assert first.status is second.status is SolverStatus.CONVERGED
    assert second.iterations < first.iterations / 2
    np.testing.assert_allclose(second.u[:-2], first.u[1:-1], atol=2.0)
    planner.reset()
    assert planner.solve(x1).iterations > second.iterations


def test_feedback_gains_match_ilqr_at_the_same_optimum():
    dyn = cartpole().discretize(0.05, "rk4")
    cost = quadratic_cost(4, 1, [1.0, 1.0, 0.1, 0.1], [0.1], [100.0, 100.0, 10.0, 10.0])
    x0 = np.array([0.0, np.pi - 0.5, 0.0, 0.0])
    nm = NMPC(dyn, cost, 30, feedback=True, ipopt_options={"tol": 1e-10})
    a = nm.solve(x0, params=GOAL)
    b = ILQR(dyn, cost, 30, options=ILQROptions(mu_init=0.0, tol_grad=1e-9, tol_cost=1e-14)).solve(x0, a.u, GOAL)
    np.testing.assert_allclose(a.u, b.u, atol=1e-5)
    np.testing.assert_allclose(a.K, b.K, atol=1e-4)
    np.testing.assert_allclose(a.Quu, b.Quu, rtol=1e-5)


def test_nmpc_bad_input(acados_cartpole):
    dyn, cost = acados_cartpole
    with pytest.raises(ValueError, match="infeasible control limits"):
        NMPC(dyn, cost, 10, u_lower=1.0, u_upper=-1.0)
    with pytest.raises(ValueError, match="infeasible state bounds"):
        NMPC(dyn, cost, 10, x_lower=[0, 0, 0, 1.0], x_upper=[1, 1, 1, 0.0])
    with pytest.raises(ValueError, match="infeasible path constraint"):
        NMPC(dyn, cost, 10, path_constraints=[(_speed_constraint(), 1.0, -1.0)])
    with pytest.raises(ValueError, match="casadi.Function"):
        NMPC(dyn, cost, 10, path_constraints=[(lambda x, u: x, -1.0, 1.0)])
    with pytest.raises(ValueError, match="symbolic"):
        NMPC(FiniteDifferenceDynamics(dyn.step, 4, 1), cost, 10)
    with pytest.raises(ValueError, match="mode"):
        NMPC(dyn, cost, 10, mode="sqp")
    with pytest.raises(ValueError, match="not available"):
        NMPC(dyn, cost, 10, mode="rti", qpsol="no_such_solver")
    planner = NMPC(dyn, cost, 10)
    with pytest.raises(ValueError, match="NaN"):
        planner.solve([0.0, np.nan, 0.0, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        planner.solve(np.zeros(4), params=[np.nan, 0, 0, 0])


@pytest.mark.skipif(not jit_available(), reason="no C compiler on this machine")
@pytest.mark.parametrize("mode", ["ipopt", "rti"])
def test_compiled_nlp_gives_the_same_solution(mode):
    dyn = cartpole().discretize(0.1, "euler", jit=False)
    cost = quadratic_cost(4, 1, [1.0, 1.0, 0.1, 0.1], [0.1], [10.0, 10.0, 1.0, 1.0], name="small_nmpc", jit=False)
    x0 = np.array([0.0, np.pi - 0.3, 0.0, 0.0])
    a, b = (NMPC(dyn, cost, 8, u_lower=-5.0, u_upper=5.0, mode=mode, jit=jit).solve(x0, params=GOAL)
            for jit in (False, True))
    assert a.status.usable and b.status.usable
    np.testing.assert_allclose(b.u, a.u, atol=1e-8)
    np.testing.assert_allclose(b.x, a.x, atol=1e-8)


def _tcp_task(panda, weight=20.0):
    """The arm's TCP reach in joint-velocity control (PLATO's ArmReach teacher): q' = q + 0.1 u, a
    least-squares cost on the TCP's distance to a goal parameter (through the forward kinematics) and on u."""
    from s2r.controllers import Cost, Dynamics
    q, u, goal = ca.SX.sym("q", 7), ca.SX.sym("u", 7), ca.SX.sym("goal", 3)
    R, p = panda.link_pose("panda_hand", q)
    tcp = p + 0.1034 * R[:, 2]
    dyn = Dynamics(q, u, q + 0.1 * u, name="panda_kin_nmpc", jit=False)
    cost = Cost.least_squares(q, u, ca.vertcat(tcp - goal, u), np.r_[np.full(3, weight), np.full(7, 0.01)],
                              tcp - goal, np.full(3, 2000.0), goal, name="tcp_reach_nmpc", jit=False)
    return dyn, cost, ca.Function("tcp", [q], [tcp])


def test_rti_qp_is_convex_on_the_tcp_task(panda):
    """The RTI Hessian is the Cost's Gauss-Newton one, J_r' W J_r per stage: positive semi-definite
    wherever the kinematics bend (the exact Hessian of the same cost, with the residuals' curvature,
    is indefinite there), so qrqp solves every closed-loop step without the fallback."""
    dyn, cost, tcp = _tcp_task(panda)
    N = 10
    planner = NMPC(dyn, cost, N, u_lower=-1.0, u_upper=1.0, mode="rti")
    q0 = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8])
    goal = np.array(tcp(q0)).ravel() + np.array([0.25, -0.3, -0.2])
    rng = np.random.default_rng(0)
    p = np.concatenate([q0, np.tile(goal, N + 1)])
    W = ca.MX.sym("w", planner._nw)
    exact = ca.Function("H", [W], [ca.hessian(planner._objective(W, p), W)[0]])
    for _ in range(5):
        w = rng.uniform(-2.0, 2.0, planner._nw)
        H = np.array(planner._hess_lag(w, p, 1.0, np.zeros(len(planner._lbg))))
        np.testing.assert_allclose(H, H.T, atol=1e-12)
        assert np.linalg.eigvalsh(H).min() > -1e-9 * np.abs(H).max()
        assert np.linalg.eigvalsh(np.array(exact(w))).min() < -1e-3          # what the exact Hessian gives
    q, dist = q0.copy(), []
    for _ in range(30):
        res = planner.solve(q, params=goal)
        assert res.status.usable and "after" not in res.message             # qrqp alone, no fallback
        np.testing.assert_allclose(res.x[0], q, atol=1e-9)                  # the QP puts the plan at x0
        q = dyn.step(q, res.u[0])
        dist.append(float(np.linalg.norm(np.array(tcp(q)).ravel() - goal)))
    assert dist[-1] < 0.01 and dist[-1] < 0.05 * dist[0]


def test_rti_linearizes_at_the_shifted_prediction_not_at_the_measured_state(acados_cartpole):
    """Preparation/feedback split: the warm start (the linearization point) is the previous plan
    shifted, x_0 included (its prediction of the state); a measured state that differs from it
    enters only through the QP's x_0 = x_init row, and the new plan starts exactly there."""
    dyn, cost = acados_cartpole
    planner = NMPC(dyn, cost, 40, u_lower=-F_MAX, u_upper=F_MAX, mode="rti")
    first = planner.solve(np.zeros(4))
    measured = first.x[1] + np.array([0.01, -0.02, 0.05, 0.0])
    w0, _, _ = planner._initial_guess(measured, None)
    np.testing.assert_array_equal(w0[:4], first.x[1])
    second = planner.solve(measured)
    assert second.status.usable
    np.testing.assert_allclose(second.x[0], measured, atol=1e-12)
