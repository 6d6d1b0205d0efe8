"""PLATO on the hand tasks: the teacher is the agents' expert law (learning.plato.ExpertTeacher),
the HandReach damped least-squares law and the scripted grasp; its labels, its one-step
KL-regularized mixing with the learner, and short real PLATO runs."""
import numpy as np
import pytest

from s2r.learning.hand_agent import HandReachAgent
from s2r.learning.hand_grasp_agent import HandGraspLiftAgent
from s2r.learning.plato import PLATO, ExpertTeacher, PLATOConfig, make_teacher

EXTRA = ["cmd_offset", "setpoint_offset", "setpoint_step"]


def test_hand_reach_teacher_is_the_initial_controllers_law():
    a = HandReachAgent(n_conditions=1, T=10, obs_features=EXTRA, state_features=EXTRA[1:])
    try:
        teacher = make_teacher(a, 15, 2)
        assert isinstance(teacher, ExpertTeacher)
        ctrl = a.initial_controllers(1e-6)[0]          # the law along its own rollout: u_t = K_t x_t
        obs, _ = a.env.reset(seed=a.condition_seeds[0])
        a.state_inputs.reset()
        from s2r.learning.features import sim_context
        x = a.full_state(obs, a.state_inputs.observe(sim_context(obs, a.env)))
        teacher.reset(a.teacher_params())
        u, Quu = teacher(x)
        np.testing.assert_allclose(u, np.clip(ctrl.K[0] @ x + ctrl.k[0], -1, 1), atol=1e-9)
        assert np.array_equal(Quu, np.eye(a.dU)) and np.abs(u).max() > 0.1
    finally:
        a.close()


def test_adaptive_teacher_moves_from_expert_to_learner():
    class Learner:
        def mean(self, obs):
            return np.full(3, 0.5)

    class FakeAgent:
        def teacher_reset(self):
            pass

        def teacher_action(self, x):
            return -np.ones(3)
    t = ExpertTeacher(FakeAgent())
    t.reset()
    t(np.zeros(4))
    cov = np.diag([1.0, 0.1, 10.0])
    assert np.allclose(t.adaptive(None, {}, Learner(), 1e-9, cov).u, -1.0, atol=1e-6)
    assert np.allclose(t.adaptive(None, {}, Learner(), 1e9, cov).u, 0.5, atol=1e-6)
    mid = t.adaptive(None, {}, Learner(), 1.0, cov).u        # confident dimensions follow the learner more
    assert -1 < mid[2] < mid[0] < mid[1] < 0.5


def test_plato_on_grasp_lift_runs_the_scripted_teacher():
    """Two real PLATO iterations: the first executes the teacher alone (the scripted grasp lifts the
    cube on every episode), the second the mixed action; the data set grows by a full episode each."""
    a = HandGraspLiftAgent(n_conditions=2, obs_features=EXTRA, state_features=EXTRA[1:])
    try:
        p = PLATO(a, PLATOConfig(iterations=2, episodes_per_iteration=2, policy_steps=50, eval_episodes=1))
        s1 = p.iterate()
        assert s1["train_success"] == 1.0 and s1["dataset"] == 2 * a.T
        labels = np.concatenate(p.data["label"])
        assert labels.shape == (2 * a.T, a.dU) and np.abs(labels[:, -1]).max() > 0.4     # the lift is labelled
        s2 = p.iterate()
        assert s2["dataset"] == 4 * a.T and np.isfinite(s2["cost"])
        a._expert = None
        with pytest.raises(ValueError, match="teacher_reset"):          # no episode started for the teacher
            a.teacher_action(np.zeros(a.dX))
    finally:
        a.close()
