"""HandGraspLiftAgent: the GPS agent of s2r/HandGraspLift-v0 (state-based, 16-DoF hand on a lift
slide): dimensions, cost and metadata, registration, the initial controllers replaying the scripted
expert, a short real MDGPS run, and bad input."""
import numpy as np
import pytest

from s2r.learning.features import FEATURES, ObservationBuilder, sim_context
from s2r.learning.gps import MDGPS, GPSConfig
from s2r.learning.hand_grasp_agent import HandGraspLiftAgent

EXTRA = ["cmd_offset", "setpoint_offset", "setpoint_step"]    # the task's default inputs (registry.default_inputs)


@pytest.fixture(scope="module")
def agent():
    a = HandGraspLiftAgent(n_conditions=2, condition_seeds=[3, 4], obs_features=EXTRA, state_features=EXTRA[1:])
    yield a
    a.close()


def test_dimensions_cost_metadata_and_registration(agent):
    n = 17                                  # 16 hand joints + wrist_lift
    assert (agent.dU, agent.T) == (n, 200)
    assert agent.dX == 3 * n + 2 * n + 9 and agent.obs_dim == 2 * n + 3 + 1 + 3 * n
    meta = agent.metadata()
    assert meta["task"] == "s2r/HandGraspLift-v0" and meta["joint_names"][-1] == "wrist_lift"
    assert meta["obs_keys"] == ["joint_pos", "joint_vel", "target", "phase", *EXTRA]
    assert all(key in FEATURES for key in meta["obs_keys"]) and meta["episode_steps"] == 200
    # the cube's error is weighed only over the hold window, most at the last step
    d = np.diagonal(agent.cost.Q, axis1=1, axis2=2)[:, -3:]
    assert np.all(d[:100] == 0.0) and np.all(d[150:-1] == 10.0) and np.all(d[-1] == 500.0)
    from s2r.learning.experiment import TASK_EXPERIMENTS, load_experiment
    from s2r.learning.registry import make_agent
    assert TASK_EXPERIMENTS[("gps", "s2r/HandGraspLift-v0", False)] == "hand_grasp_lift"
    assert load_experiment("hand_grasp_lift").task == "HandGraspLift"
    with pytest.raises(ValueError, match="state-based"):
        make_agent("HandGraspLift", images=True)


def test_metadata_builds_the_policy_input_the_agent_trained_on(agent):
    """`s2r eval` rebuilds the policy input from the export's obs_keys and metadata: the same values."""
    meta = agent.metadata()
    b = ObservationBuilder(meta["obs_keys"], meta, n_joints=17, n_actions=17)
    env = agent.env
    obs, _ = env.reset(seed=agent.condition_seeds[0])
    agent.inputs.reset()
    for _ in range(3):
        np.testing.assert_array_equal(b.observe(sim_context(obs, env)), agent.inputs.observe(sim_context(obs, env)))
        u = np.full(17, 0.5)
        b.record_action(u * agent.action_scale)
        agent.inputs.record_action(u * agent.action_scale)
        obs, *_ = env.step(u)


def test_initial_controllers_replay_the_expert_and_reject_noise(agent):
    """The first local controllers are the scripted expert around its own rollout: noiselessly they
    lift the cube on every condition; with exploration noise their feedback on the joint targets
    still lifts it (the noise would otherwise integrate into the commanded posture)."""
    ctrls = agent.initial_controllers(0.01)
    for c, ctrl in enumerate(ctrls):
        X, U = agent.expert_trajectory(agent.condition_seeds[c])
        np.testing.assert_allclose(ctrl.K[50] @ X[50] + ctrl.k[50], U[50], atol=1e-9)   # on the expert's path
        rng = np.random.default_rng(c)
        z = rng.standard_normal((agent.T, agent.dU))
        s = agent.rollout(c, lambda t, x, obs: ctrl.act(t, x, z[t]), seed=c)
        assert s.success and s.info["lift"] > 0.08 and s.final_distance < 0.03
        # the cube part of x: cube - target was the lift height at the start, small at the end
        assert s.X[0, -1] == pytest.approx(-0.10, abs=1e-3) and abs(s.X[-1, -1]) < 0.03


def test_short_gps_run_lifts_the_cube_on_held_out_starts():
    """One real MDGPS iteration (4 conditions x 2 samples): the policy learns the grasp from the
    local controllers and lifts the cube from held-out starts it never trained on (without
    training the policy does not: held-out lift < 1 cm)."""
    a = HandGraspLiftAgent(n_conditions=4, obs_features=EXTRA, state_features=EXTRA[1:])
    try:
        cfg = GPSConfig(iterations=1, samples_per_condition=2, policy_steps=1500, hidden=(128, 128),
                        eval_episodes=0, dynamics_prior="pooled", max_clusters=2, prior_iterations=1, kl_step=0.5)
        gps = MDGPS(a, cfg)
        from s2r.learning.gps import PolicyRunner
        before = [a.held_out(i, lambda t, x, obs, r=PolicyRunner(gps.policy): r(t, x, obs)) for i in range(2)]
        assert max(s.info["lift"] for s in before) < 0.01
        stats = gps.iterate()
        assert stats["rollouts"] == 8 and stats["dropped"] == 0
        after = [a.held_out(i, lambda t, x, obs, r=PolicyRunner(gps.policy): r(t, x, obs)) for i in range(2)]
        assert max(s.info["lift"] for s in after) > 0.05
        assert np.mean([s.final_distance for s in after]) < np.mean([s.final_distance for s in before]) - 0.04
    finally:
        a.close()


@pytest.mark.parametrize("kw, match", [
    ({"hold_fraction": 1.5}, "hold_fraction"),
    ({"init_gain": 0.0}, "init_gain"),
    ({"final_position_weight": -1.0}, "cost weights"),
    ({"T": 0}, "T must be"),
    ({"images": True}, "state-based"),
    ({"obs_features": ["nope"]}, "nope"),
])
def test_bad_input_one_line(kw, match):
    with pytest.raises(ValueError, match=match) as e:
        HandGraspLiftAgent(**kw)
    assert "\n" not in str(e.value)
