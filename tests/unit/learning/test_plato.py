"""PLATO's adaptive teacher: a KL-regularized MPC over the horizon toward the learner N(mu, Sigma)."""
import numpy as np
import torch

from s2r.learning.agents import PointMassAgent
from s2r.learning.gps import PolicyRunner
from s2r.learning.plato import PLATO, PLATOConfig, make_teacher

C = np.array([0.5, -0.5])


class _ConstantLearner(torch.nn.Module):
    """mu_theta(o) = C whatever the observation."""

    def forward(self, s):
        return torch.as_tensor(C, dtype=torch.float32).expand(len(s), 2)


def _plan(teacher, x0, lam, cov):
    teacher.reset()
    return teacher.adaptive(x0, {"state": x0}, PolicyRunner(_ConstantLearner()), lam, cov).plan


def test_adaptive_teacher_moves_toward_the_learner_over_the_whole_horizon():
    """The teacher's plan (every step, not only the executed one) approaches the learner's mean as
    lambda grows, and the learner's covariance says along which action it must: a loose axis
    (variance 100) is left to the cost, a tight one (0.01) follows the learner."""
    agent = PointMassAgent()
    teacher = make_teacher(agent, 15, 3)
    x0 = np.array([1.0, 0.5, 0.0, 0.0])
    plain = _plan(teacher, x0, 1e-6, np.eye(2))
    dev = [np.abs(_plan(teacher, x0, lam, np.eye(2)).u - C).mean(axis=1) for lam in (1e-6, 1.0, 100.0)]
    assert dev[0].mean() > 1.0                                  # the cost alone wants strong forces
    assert dev[0].mean() > dev[1].mean() > dev[2].mean()
    assert dev[2][1:].max() < 0.05                               # later steps too, not a one-step blend
    teacher.reset()
    u_star, _ = teacher(x0)
    np.testing.assert_allclose(plain.u[0], u_star, atol=1e-3)    # lambda -> 0: the plain teacher
    loose = _plan(teacher, x0, 1.0, np.diag([100.0, 0.01])).u
    assert np.abs(loose[:, 0] - C[0]).mean() > 10 * np.abs(loose[:, 1] - C[1]).mean()


def test_plato_weights_labels_by_the_teachers_q_uu_and_estimates_the_learner_covariance():
    plato = PLATO(PointMassAgent(), PLATOConfig(policy_steps=150, eval_episodes=2, episodes_per_iteration=2))
    stats = [plato.iterate() for _ in range(2)]
    labels, precs = np.concatenate(plato.data["label"]), np.concatenate(plato.data["prec"])
    assert precs.shape == (len(labels), 2, 2) and stats[-1]["dataset"] == len(labels)
    assert np.all(np.linalg.eigvalsh(precs) > 0)
    teacher = make_teacher(plato.agent, plato.cfg.mpc_horizon, plato.cfg.mpc_iterations)
    teacher.reset()
    _, Quu = teacher(plato.agent.x0[0])
    np.testing.assert_allclose(precs[0], Quu, rtol=1e-6)        # the first label's weight: its Q_uu
    S = torch.as_tensor(np.concatenate(plato.data["state"]), dtype=torch.float32)
    with torch.no_grad():
        r = labels - plato.policy(S).double().numpy()
    np.testing.assert_allclose(plato.learner_cov, r.T @ r / len(r), rtol=1e-2, atol=1e-6)
    again = PLATO(PointMassAgent(), PLATOConfig(policy_steps=150, eval_episodes=2, episodes_per_iteration=2))
    again.load_state_dict(plato.state_dict())
    np.testing.assert_array_equal(again.learner_cov, plato.learner_cov)
