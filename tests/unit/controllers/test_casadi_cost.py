"""Cost: derivatives over the horizon match finite differences; parameters; least squares; bad input."""
import casadi as ca
import numpy as np
import pytest

from s2r.controllers import Cost, quadratic_cost

from ctl_helpers import central_jacobian


@pytest.fixture(scope="module")
def nonlinear_cost():
    x, u, p = ca.SX.sym("x", 3), ca.SX.sym("u", 2), ca.SX.sym("p", 2)
    running = ca.sin(x[0]) * u[0] ** 2 + p[0] * ca.exp(0.3 * x[1]) * x[2] + u[1] * x[0] * x[2] + p[1] * u[1] ** 4
    terminal = ca.cos(x[0] * x[1]) + p[0] * x[2] ** 3
    return Cost(x, u, running, terminal, p, jit=False)


def test_derivatives_match_finite_differences(nonlinear_cost):
    c = nonlinear_cost
    rng = np.random.default_rng(0)
    T = 4
    X, U = rng.normal(size=(T + 1, 3)), rng.normal(size=(T, 2))
    P = rng.normal(size=(T + 1, 2))
    d = c.derivatives(X, U, P)
    run = c.running_function
    for t in range(T):
        def l(z, t=t):
            return float(run(z[:3], z[3:], P[t]))

        def grad(z, t=t):
            return central_jacobian(l, z, 1e-6)
        z = np.concatenate([X[t], U[t]])
        assert d.l[t] == pytest.approx(l(z), abs=1e-12)
        g = grad(z)
        np.testing.assert_allclose(d.lx[t], g[:3], atol=1e-7)
        np.testing.assert_allclose(d.lu[t], g[3:], atol=1e-7)
        H = central_jacobian(grad, z, 1e-4)
        np.testing.assert_allclose(d.lxx[t], H[:3, :3], atol=1e-5)
        np.testing.assert_allclose(d.luu[t], H[3:, 3:], atol=1e-5)
        np.testing.assert_allclose(d.lux[t], H[3:, :3], atol=1e-5)
    lf = lambda z: float(c.terminal_function(z, P[T]))  # noqa: E731
    np.testing.assert_allclose(d.lfx, central_jacobian(lf, X[T]), atol=1e-7)
    np.testing.assert_allclose(d.lfxx, central_jacobian(lambda z: central_jacobian(lf, z, 1e-6), X[T], 1e-4),
                               atol=1e-5)
    assert d.total == pytest.approx(c.total(X, U, P), abs=1e-12)


def test_parameters_broadcast_and_default(nonlinear_cost):
    c = nonlinear_cost
    rng = np.random.default_rng(1)
    X, U = rng.normal(size=(6, 3)), rng.normal(size=(5, 2))
    p = np.array([0.3, -1.2])
    assert c.total(X, U, p) == pytest.approx(c.total(X, U, np.tile(p, (6, 1))))
    c.set_default_params(p)
    assert c.total(X, U) == pytest.approx(c.total(X, U, p))
    with pytest.raises(ValueError, match="NaN"):
        c.total(X, U, [np.nan, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        c.set_default_params([0.0, np.inf])
    with pytest.raises(ValueError, match="shape"):
        c.total(X, U, np.zeros((3, 2)))


def test_least_squares_uses_gauss_newton_hessian():
    x, u, g = ca.SX.sym("x", 2), ca.SX.sym("u", 1), ca.SX.sym("g", 2)
    r = ca.vertcat(ca.sin(x[0]) - g[0], x[0] * x[1] - g[1], u[0])
    rf = ca.vertcat(x[1] ** 2 - g[1])
    W = np.array([2.0, 3.0, 0.5])
    c = Cost.least_squares(x, u, r, W, rf, [4.0], g, jit=False)
    X, U, P = np.array([[0.4, -0.7], [0.1, 0.2]]), np.array([[0.3]]), np.array([0.2, 0.1])
    d = c.derivatives(X, U, P)
    rv = np.array(ca.Function("r", [x, u, g], [r])(X[0], U[0], P)).ravel()
    J = np.array(ca.Function("J", [x, u, g], [ca.jacobian(r, ca.vertcat(x, u))])(X[0], U[0], P))
    assert d.l[0] == pytest.approx(0.5 * rv @ (W * rv))
    np.testing.assert_allclose(np.concatenate([d.lx[0], d.lu[0]]), J.T @ (W * rv), atol=1e-12)
    H = J.T @ np.diag(W) @ J
    np.testing.assert_allclose(d.lxx[0], H[:2, :2], atol=1e-12)
    np.testing.assert_allclose(d.luu[0], H[2:, 2:], atol=1e-12)
    np.testing.assert_allclose(d.lux[0], H[2:, :2], atol=1e-12)
    assert np.all(np.linalg.eigvalsh(H) >= -1e-12)


def test_quadratic_cost_values():
    c = quadratic_cost(2, 1, [1.0, 2.0], 0.5, np.diag([3.0, 4.0]), jit=False)
    X, U = np.array([[1.0, 1.0], [2.0, 0.0]]), np.array([[2.0]])
    goal = np.array([1.0, -1.0])
    expected = 0.5 * (0 + 2 * 4) + 0.5 * 0.5 * 4 + 0.5 * (3 * 1 + 4 * 1)
    assert c.total(X, U, goal) == pytest.approx(expected)


def test_bad_cost_input():
    x, u, y = ca.SX.sym("x", 2), ca.SX.sym("u", 1), ca.SX.sym("y")
    with pytest.raises(ValueError, match="scalar"):
        Cost(x, u, x, x[0])
    with pytest.raises(ValueError, match="depend"):
        Cost(x, u, x[0] * y, x[1])
    with pytest.raises(ValueError, match="Q"):
        quadratic_cost(2, 1, np.eye(3), 1.0, np.eye(2))
    with pytest.raises(ValueError, match="symmetric"):
        quadratic_cost(2, 1, np.array([[1.0, 2.0], [0.0, 1.0]]), 1.0, np.eye(2))
    with pytest.raises(ValueError, match="weights"):
        Cost.least_squares(x, u, ca.vertcat(x, u), [1.0, 2.0], x, 1.0)
    c = quadratic_cost(2, 1, 1.0, 1.0, 1.0, jit=False)
    with pytest.raises(ValueError, match="shape"):
        c.derivatives(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="NaN"):
        c.derivatives(np.full((3, 2), np.nan), np.zeros((2, 1)))
