"""Receding-horizon MPC: warm start, real-time deadline, fallback on solver failure, bad input."""
import numpy as np
import pytest

from s2r.controllers import ILQR, MPC, ILQROptions, SolverStatus, TrajectoryResult, quadratic_cost
from s2r.controllers.models import pendulum

from ctl_helpers import wrap


@pytest.fixture(scope="module")
def pendulum_task():
    """Swing a torque-limited (|u| <= 2) gym pendulum up from hanging."""
    dyn = pendulum(1.0, 1.0, 10.0, inertia="rod").discretize(0.05, "semi_implicit_euler")
    cost = quadratic_cost(2, 1, [1.0, 0.1], [0.01], [100.0, 10.0], name="pendulum_quadratic")
    cost.set_default_params([np.pi, 0.0])
    return dyn, cost


def _planner(dyn, cost):
    return ILQR(dyn, cost, 40, u_lower=-2.0, u_upper=2.0, options=ILQROptions(consistent_gains=False))


def _run(mpc, dyn, steps=150):
    x = np.zeros(2)
    out = []
    for _ in range(steps):
        st = mpc.step(x)
        assert np.all(np.isfinite(st.u)) and np.all(np.abs(st.u) <= 2.0)
        out.append(st)
        x = dyn.step(x, st.u)
    return x, out


def test_mpc_swings_up_with_warm_started_ilqr(pendulum_task):
    dyn, cost = pendulum_task
    mpc = MPC(_planner(dyn, cost))
    x, steps = _run(mpc, dyn)
    assert abs(wrap(x[0] - np.pi)) < 0.01 and abs(x[1]) < 0.05
    assert all(s.status.usable and not s.fallback for s in steps)
    # the shifted warm start makes later solves cheap
    assert np.mean([s.iterations for s in steps[10:]]) < 0.5 * steps[0].iterations
    assert len(mpc.history) == 150 and mpc.plan is steps[-1].plan


def test_mpc_keeps_working_when_every_solve_is_cut_by_the_deadline(pendulum_task):
    dyn, cost = pendulum_task
    mpc = MPC(_planner(dyn, cost), budget=1e-6)                      # far below one iteration
    x, steps = _run(mpc, dyn)
    deadline_steps = [s for s in steps if s.status is SolverStatus.DEADLINE]
    assert len(deadline_steps) > 50                                 # the budget really cut the solves
    assert all(s.iterations == 1 for s in steps)                    # (the rest converged in that one)
    assert {s.status for s in steps} <= {SolverStatus.DEADLINE, SolverStatus.CONVERGED}
    assert not any(s.fallback for s in steps)                       # a cut solve is a usable plan
    assert abs(wrap(x[0] - np.pi)) < 0.01 and abs(x[1]) < 0.05     # one iteration per step suffices


class FlakyPlanner:
    """Wraps a planner; fails (status FAILED, or raises) at chosen calls."""

    def __init__(self, inner, fail_at, raise_at=()):
        self.inner, self.fail_at, self.raise_at, self.calls = inner, set(fail_at), set(raise_at), 0
        self.horizon, self.nx, self.nu = inner.horizon, inner.nx, inner.nu

    def solve(self, x0, U_init=None, params=None, *, max_iter=None, deadline=None):
        self.calls += 1
        if self.calls in self.raise_at:
            raise RuntimeError("solver crashed")
        res = self.inner.solve(x0, U_init, params, max_iter=max_iter, deadline=deadline)
        if self.calls in self.fail_at:
            res.status, res.message = SolverStatus.FAILED, "injected failure"
            res.u = np.full_like(res.u, np.nan)                      # garbage that must never be applied
        return res


def test_mpc_falls_back_to_the_shifted_previous_plan(pendulum_task):
    dyn, cost = pendulum_task
    mpc = MPC(FlakyPlanner(_planner(dyn, cost), fail_at={5, 6}, raise_at={20}))
    x = np.zeros(2)
    for k in range(1, 40):
        before = mpc.plan
        st = mpc.step(x)
        if k in (5, 6, 20):
            assert st.fallback and st.status is SolverStatus.FAILED
            assert "fallback" in st.message and ("injected" in st.message or "crashed" in st.message)
            # the previous plan advanced one step, executed with its own feedback
            expected = np.clip(before.u[1] + before.K[1] @ (x - before.x[1]), -2.0, 2.0)
            np.testing.assert_allclose(st.u, expected, atol=1e-12)
            np.testing.assert_allclose(st.plan.u[:-1], before.u[1:])
        else:
            assert not st.fallback and st.status.usable
        x = dyn.step(x, st.u)
    assert np.all(np.isfinite(x))


def test_mpc_without_any_plan_applies_the_default_and_says_so(pendulum_task):
    dyn, cost = pendulum_task
    mpc = MPC(FlakyPlanner(_planner(dyn, cost), fail_at={1}), default_u=[0.5])
    st = mpc.step(np.zeros(2))
    assert st.fallback and st.status is SolverStatus.FAILED and st.plan is None
    np.testing.assert_array_equal(st.u, [0.5])
    assert not mpc.step(np.zeros(2)).fallback


def test_shifted_plan_pads_with_the_last_control():
    T = 4
    plan = TrajectoryResult(x=np.arange(T + 1.0)[:, None], u=np.arange(T, dtype=float)[:, None],
                            K=np.zeros((T, 1, 1)), k=np.zeros((T, 1)), Quu=np.ones((T, 1, 1)), cost=0.0,
                            iterations=1, status=SolverStatus.CONVERGED)
    s = plan.shifted(1)
    np.testing.assert_array_equal(s.u.ravel(), [1, 2, 3, 3])
    np.testing.assert_array_equal(s.x.ravel(), [1, 2, 3, 4, 4])
    np.testing.assert_array_equal(plan.shifted(10).u.ravel(), [3, 3, 3, 3])


def test_mpc_bad_input(pendulum_task):
    dyn, cost = pendulum_task
    mpc = MPC(_planner(dyn, cost))
    with pytest.raises(ValueError, match="NaN"):
        mpc.step([np.nan, 0.0])
    with pytest.raises(ValueError, match="expected 2"):
        mpc.step(np.zeros(3))
    with pytest.raises(ValueError, match="solve"):
        MPC(object())
    with pytest.raises(ValueError, match="budget"):
        MPC(_planner(dyn, cost), budget=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        MPC(_planner(dyn, cost), max_iter=0)
