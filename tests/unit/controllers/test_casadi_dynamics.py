"""Dynamics: exact Jacobians over a horizon, integrators, finite-difference path, bad input."""
import casadi as ca
import numpy as np
import pytest

from s2r.controllers import Dynamics, FiniteDifferenceDynamics
from s2r.controllers._compiled import jit_available
from s2r.controllers.models import acrobot, cartpole, pendulum, point_mass, two_link_arm

from ctl_helpers import central_jacobian

MODELS = {
    "pendulum": pendulum(),
    "cartpole": cartpole(),
    "acrobot": acrobot(),
    "two_link_arm": two_link_arm(),
    "point_mass": point_mass(3),
}


@pytest.mark.parametrize("integrator", ["euler", "semi_implicit_euler", "rk4"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_jacobians_match_finite_differences(name, integrator):
    model = MODELS[name]
    dyn = model.discretize(0.02, integrator, jit=False)
    rng = np.random.default_rng(hash((name, integrator)) % 2**32)
    T = 5
    X = rng.normal(size=(T, model.nx))
    U = rng.normal(size=(T, model.nu))
    fx, fu = dyn.jacobians(X, U)
    assert fx.shape == (T, model.nx, model.nx) and fu.shape == (T, model.nx, model.nu)
    for t in range(T):
        np.testing.assert_allclose(fx[t], central_jacobian(lambda x: dyn.step(x, U[t]), X[t]), atol=1e-7)
        np.testing.assert_allclose(fu[t], central_jacobian(lambda u: dyn.step(X[t], u), U[t]), atol=1e-7)


def test_rollout_and_batch_equal_repeated_steps():
    dyn = MODELS["cartpole"].discretize(0.05, "rk4")
    rng = np.random.default_rng(0)
    U = rng.normal(size=(30, 1))
    X = dyn.rollout(np.zeros(4), U)
    x = np.zeros(4)
    for t in range(30):
        x = dyn.step(x, U[t])
        np.testing.assert_allclose(X[t + 1], x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dyn.step_batch(X[:-1], U), X[1:], atol=1e-12)


def test_integrator_accuracy_order():
    """On the pendulum, RK4 beats semi-implicit Euler beats explicit Euler against a fine RK4 reference;
    semi-implicit Euler keeps the energy bounded where explicit Euler gains energy."""
    model = pendulum(damping=0.0)
    x0 = np.array([1.0, 0.0])
    fine = model.discretize(0.001, "rk4", jit=False)
    ref = fine.rollout(x0, np.zeros((2000, 1)))[-1]
    errs = {m: np.linalg.norm(model.discretize(0.05, m, jit=False).rollout(x0, np.zeros((40, 1)))[-1] - ref)
            for m in ("euler", "semi_implicit_euler", "rk4")}
    assert errs["rk4"] < 1e-4 < errs["semi_implicit_euler"] < errs["euler"]

    def energy(X):
        return 0.5 * X[:, 1] ** 2 - 9.81 * np.cos(X[:, 0])
    long = np.zeros((2000, 1))
    E0 = energy(x0[None])[0]
    drift_euler = abs(energy(model.discretize(0.01, "euler", jit=False).rollout(x0, long))[-1] - E0)
    drift_symp = np.abs(energy(model.discretize(0.01, "semi_implicit_euler", jit=False).rollout(x0, long)) - E0).max()
    assert drift_symp < 0.2 < drift_euler


def test_semi_implicit_euler_is_symplectic_euler():
    model = point_mass(1)
    dyn = model.discretize(0.1, "semi_implicit_euler", jit=False)
    # v+ = v + dt u; p+ = p + dt v+
    np.testing.assert_allclose(dyn.step([1.0, 2.0], [3.0]), [1.0 + 0.1 * 2.3, 2.3])


@pytest.mark.skipif(not jit_available(), reason="no C compiler on this machine")
def test_compiled_code_equals_casadi_vm():
    model = MODELS["acrobot"]
    vm = model.discretize(0.01, "rk4", jit=False)
    cc = model.discretize(0.01, "rk4", jit=True)
    assert "external" in cc.compiled_jacobians.class_name().lower() or cc.compiled_jacobians.is_a("external")
    rng = np.random.default_rng(1)
    X, U = rng.normal(size=(20, 4)), rng.normal(size=(20, 1))
    for a, b in zip(vm.jacobians(X, U), cc.jacobians(X, U)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(vm.rollout(X[0], U), cc.rollout(X[0], U), rtol=1e-12, atol=1e-12)


def test_second_order_terms_match_finite_differences():
    dyn = MODELS["cartpole"].discretize(0.05, "rk4", jit=False)
    rng = np.random.default_rng(3)
    x, u, lam = rng.normal(size=4), rng.normal(size=1), rng.normal(size=4)
    Hxx, Huu, Hux = (np.array(a) for a in dyn.second_order_function()(x, u, lam))

    def grad(z):
        fx, fu = dyn.jacobians(z[None, :4], z[None, 4:])
        return np.concatenate([lam @ fx[0], lam @ fu[0]])
    H = central_jacobian(grad, np.concatenate([x, u]))
    np.testing.assert_allclose(Hxx, H[:4, :4], atol=1e-6)
    np.testing.assert_allclose(Huu, H[4:, 4:], atol=1e-6)
    np.testing.assert_allclose(Hux.reshape(1, 4), H[4:, :4], atol=1e-6)


@pytest.mark.parametrize("batched", [False, True])
def test_finite_difference_dynamics_match_symbolic(batched):
    dyn = MODELS["cartpole"].discretize(0.05, "rk4")
    if batched:
        fd = FiniteDifferenceDynamics(lambda X, U: dyn.step_batch(X, U), 4, 1, batched=True)
    else:
        fd = FiniteDifferenceDynamics(dyn.step, 4, 1)
    rng = np.random.default_rng(2)
    X, U = rng.normal(size=(6, 4)), rng.normal(size=(6, 1))
    for a, b in zip(fd.jacobians(X, U), dyn.jacobians(X, U)):
        np.testing.assert_allclose(a, b, atol=1e-7)
    np.testing.assert_allclose(fd.rollout(X[0], U), dyn.rollout(X[0], U), atol=1e-12)
    np.testing.assert_allclose(fd.step_batch(X, U), dyn.step_batch(X, U), atol=1e-12)


def test_bad_input_raises_clear_errors():
    dyn = MODELS["cartpole"].discretize(0.05, "rk4", jit=False)
    with pytest.raises(ValueError, match="expected 4"):
        dyn.step(np.zeros(3), [0.0])
    with pytest.raises(ValueError, match="NaN"):
        dyn.step([0, np.nan, 0, 0], [0.0])
    with pytest.raises(ValueError, match="shape"):
        dyn.jacobians(np.zeros((5, 4)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="NaN"):
        dyn.rollout(np.zeros(4), np.full((3, 1), np.inf))
    x, u, y = ca.SX.sym("x", 2), ca.SX.sym("u", 1), ca.SX.sym("y")
    with pytest.raises(ValueError, match="only on x and u"):
        Dynamics(x, u, x + y)
    with pytest.raises(ValueError, match="shape"):
        Dynamics(x, u, ca.vertcat(x, u))
    with pytest.raises(ValueError, match="nq"):
        Dynamics.from_ode(x, u, ca.vertcat(x[1], u), 0.1, "semi_implicit_euler")
    with pytest.raises(ValueError, match="unknown integrator"):
        Dynamics.from_ode(x, u, ca.vertcat(x[1], u), 0.1, "leapfrog")
    with pytest.raises(ValueError, match="positive"):
        Dynamics.from_ode(x, u, ca.vertcat(x[1], u), 0.0)
    with pytest.raises(ValueError, match="positive"):
        cartpole(m_cart=-1.0)
    with pytest.raises(ValueError):
        FiniteDifferenceDynamics(lambda x, u: x, 0, 1)
