"""Projected-Newton box QP: exact feasibility, KKT optimality, agreement with brute force."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r.controllers import BoxQPStatus, box_qp


def _random_problem(seed, n):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n, n))
    H = M @ M.T + 0.1 * np.eye(n)
    g = 3 * rng.normal(size=n)
    lo = -rng.uniform(0.0, 1.5, n)
    hi = rng.uniform(0.0, 1.5, n)
    return H, g, lo, hi


def _brute_force(H, g, lo, hi):
    """Enumerate every active set (free / at lower / at upper) and keep the best feasible point."""
    n = g.size
    best, best_f = None, np.inf
    for pattern in itertools.product((0, 1, 2), repeat=n):
        x = np.zeros(n)
        fixed = np.array(pattern) > 0
        x[np.array(pattern) == 1] = lo[np.array(pattern) == 1]
        x[np.array(pattern) == 2] = hi[np.array(pattern) == 2]
        free = ~fixed
        if free.any():
            x[free] = np.linalg.solve(H[np.ix_(free, free)], -(g[free] + H[np.ix_(free, fixed)] @ x[fixed]))
        if np.all(x >= lo - 1e-12) and np.all(x <= hi + 1e-12):
            f = x @ g + 0.5 * x @ H @ x
            if f < best_f:
                best, best_f = x, f
    return best


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 4))
def test_box_qp_feasible_and_optimal(seed, n):
    H, g, lo, hi = _random_problem(seed, n)
    x0 = np.random.default_rng(seed + 1).normal(size=n) * 3       # warm start outside the box too
    res = box_qp(H, g, lo, hi, x0)
    assert res.status.ok
    assert np.all(res.x >= lo) and np.all(res.x <= hi)             # exactly, no tolerance
    np.testing.assert_allclose(res.x, _brute_force(H, g, lo, hi), atol=1e-6)
    grad = g + H @ res.x                                           # KKT: free gradient ~ 0
    np.testing.assert_allclose(grad[res.free], 0.0, atol=1e-6)
    at_lo, at_hi = res.x == lo, res.x == hi
    assert np.all(grad[~res.free & at_lo] >= 0) and np.all(grad[~res.free & at_hi] <= 0)
    if res.free.any():                                             # the factor DDP uses for K
        Hf = H[np.ix_(res.free, res.free)]
        np.testing.assert_allclose(res.chol_free @ res.chol_free.T, Hf, atol=1e-10)


def test_box_qp_unconstrained_is_newton_step():
    H, g, _, _ = _random_problem(3, 5)
    res = box_qp(H, g, -np.inf, np.inf)
    np.testing.assert_allclose(res.x, -np.linalg.solve(H, g), atol=1e-9)
    assert res.free.all()


def test_box_qp_all_clamped_and_degenerate_box():
    H = np.eye(2)
    res = box_qp(H, np.array([10.0, -10.0]), [-1.0, -1.0], [1.0, 1.0])
    np.testing.assert_array_equal(res.x, [-1.0, 1.0])
    assert res.status == BoxQPStatus.ALL_CLAMPED and not res.free.any()
    res = box_qp(H, np.array([1.0, 1.0]), [0.5, -2.0], [0.5, 2.0])   # lower == upper pins x_0
    assert res.x[0] == 0.5 and res.x[1] == pytest.approx(-1.0)


def test_box_qp_bad_input():
    with pytest.raises(ValueError, match="infeasible box"):
        box_qp(np.eye(2), np.zeros(2), [0.0, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="infeasible box"):
        box_qp(np.eye(1), np.zeros(1), [np.nan], [1.0])
    with pytest.raises(ValueError, match="finite"):
        box_qp(np.eye(2), np.array([np.nan, 0.0]), -1, 1)
    with pytest.raises(ValueError, match="H must be"):
        box_qp(np.eye(3), np.zeros(2), -1, 1)
    res = box_qp(-np.eye(2), np.ones(2), -1, 1, np.zeros(2))        # not positive definite
    assert res.status == BoxQPStatus.HESSIAN_NOT_PD and not res.status.ok
