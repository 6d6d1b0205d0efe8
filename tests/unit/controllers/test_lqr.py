"""LQR: Riccati recursion against the batch least-squares optimum; DARE against scipy."""
import numpy as np
import pytest
import scipy.linalg

from s2r.controllers import finite_horizon_lqr, infinite_horizon_lqr, lqr_trajectory


def _batch_qp_solution(A, B, Q, R, Qf, x0, T):
    """Minimize the LQ cost over u_0..u_{T-1} directly: x = Sx x0 + Su u, a dense least-squares QP."""
    nx, nu = B.shape
    Sx = np.zeros(((T + 1) * nx, nx))
    Su = np.zeros(((T + 1) * nx, T * nu))
    Sx[:nx] = np.eye(nx)
    for t in range(T):
        Sx[(t + 1) * nx:(t + 2) * nx] = A @ Sx[t * nx:(t + 1) * nx]
        Su[(t + 1) * nx:(t + 2) * nx] = A @ Su[t * nx:(t + 1) * nx]
        Su[(t + 1) * nx:(t + 2) * nx, t * nu:(t + 1) * nu] += B
    Qbar = scipy.linalg.block_diag(*([Q] * T + [Qf]))
    Rbar = scipy.linalg.block_diag(*([R] * T))
    H = Su.T @ Qbar @ Su + Rbar
    g = Su.T @ Qbar @ Sx @ x0
    return -np.linalg.solve(H, g).reshape(T, nu)


def test_finite_horizon_equals_batch_optimum(linear_quadratic):
    A, B, Q, R, Qf = linear_quadratic
    x0 = np.array([1.0, -2.0, 0.5, 3.0])
    res = lqr_trajectory(A, B, Q, R, Qf, x0, 20)
    np.testing.assert_allclose(res.u, _batch_qp_solution(A, B, Q, R, Qf, x0, 20), atol=1e-9)
    sol = finite_horizon_lqr(A, B, Q, R, Qf, T=20)
    assert res.cost == pytest.approx(0.5 * x0 @ sol.P[0] @ x0, rel=1e-10)   # V_0(x0) = 1/2 x0' P_0 x0


def test_time_varying_lqr_equals_batch_optimum_per_step():
    rng = np.random.default_rng(4)
    T, nx, nu = 6, 3, 2
    A = np.eye(nx) + 0.2 * rng.normal(size=(T, nx, nx))
    B = rng.normal(size=(T, nx, nu))
    sol = finite_horizon_lqr(A, B, np.eye(nx), 0.5 * np.eye(nu), 3 * np.eye(nx))
    x0 = rng.normal(size=nx)
    x, cost = x0.copy(), 0.0
    for t in range(T):
        u = sol.K[t] @ x
        cost += 0.5 * (x @ x + 0.5 * u @ u)
        x = A[t] @ x + B[t] @ u
    cost += 1.5 * x @ x
    assert cost == pytest.approx(0.5 * x0 @ sol.P[0] @ x0, rel=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_infinite_horizon_matches_scipy_dare(seed):
    rng = np.random.default_rng(seed)
    nx, nu = 5, 2
    A = rng.normal(size=(nx, nx))                      # generally unstable
    B = rng.normal(size=(nx, nu))
    M = rng.normal(size=(nx, nx))
    Q = M @ M.T + 0.1 * np.eye(nx)
    R = np.diag(rng.uniform(0.1, 2.0, nu))
    K, P = infinite_horizon_lqr(A, B, Q, R)
    P_ref = scipy.linalg.solve_discrete_are(A, B, Q, R)
    np.testing.assert_allclose(P, P_ref, rtol=1e-8, atol=1e-8)
    assert np.max(np.abs(np.linalg.eigvals(A + B @ K))) < 1.0
    # with a cross term N (scipy's s = N')
    N = 0.1 * rng.normal(size=(nu, nx))
    K, P = infinite_horizon_lqr(A, B, Q, R, N)
    np.testing.assert_allclose(P, scipy.linalg.solve_discrete_are(A, B, Q, R, s=N.T), rtol=1e-8, atol=1e-8)


def test_long_finite_horizon_converges_to_dare(linear_quadratic):
    A, B, Q, R, _ = linear_quadratic
    K_inf, P_inf = infinite_horizon_lqr(A, B, Q, R)
    sol = finite_horizon_lqr(A, B, Q, R, np.zeros_like(Q), T=400)
    np.testing.assert_allclose(sol.P[0], scipy.linalg.solve_discrete_are(A, B, Q, R), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(sol.K[0], K_inf, atol=1e-8)


def test_lqr_bad_input(linear_quadratic):
    A, B, Q, R, Qf = linear_quadratic
    with pytest.raises(ValueError, match="B"):
        finite_horizon_lqr(A, B[:3], Q, R, Qf, T=5)
    with pytest.raises(ValueError, match="NaN"):
        finite_horizon_lqr(A, B, np.full_like(Q, np.nan), R, Qf, T=5)
    with pytest.raises(ValueError, match="horizon"):
        finite_horizon_lqr(A, B, Q, R, Qf, T=0)
    with pytest.raises(ValueError, match="shapes"):
        infinite_horizon_lqr(A, B, Q, R[:1, :1])
    with pytest.raises(ValueError, match="converge|stabilizable"):
        infinite_horizon_lqr(np.diag([2.0, 0.5]), np.array([[0.0], [1.0]]), np.eye(2), np.eye(1))
