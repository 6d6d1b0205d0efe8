"""HandReachAgent: the GPS agent of s2r/HandReach-v0 (state-based, 16-DoF hand): dimensions, the
policy input `s2r eval` rebuilds from the metadata, the task's own success, the initial controllers
from the scripted expert, a short real MDGPS run, and bad input."""
import numpy as np
import pytest

from s2r.learning.features import FEATURES, ObservationBuilder, sim_context
from s2r.learning.gps import MDGPS, GPSConfig
from s2r.learning.hand_agent import HandReachAgent, TipLogDistanceCost

EXTRA = ["cmd_offset", "setpoint_offset", "setpoint_step"]    # the task's default inputs (registry.default_inputs)


@pytest.fixture(scope="module")
def agent():
    a = HandReachAgent(n_conditions=2, T=40, obs_features=EXTRA, state_features=EXTRA)
    yield a
    a.close()


def test_dimensions_cost_and_metadata(agent):
    n, k = 16, 4
    assert (agent.n_tips, agent.dU, agent.T) == (k, n, 40)
    m = len(EXTRA) * n
    assert agent.dX == 3 * n + m + 3 * k and agent.obs_dim == 2 * n + 3 * k + m
    meta = agent.metadata()
    assert meta["task"] == "s2r/HandReach-v0" and meta["tip_count"] == k and len(meta["tip_links"]) == k
    assert meta["obs_keys"] == ["joint_pos", "joint_vel", "target_minus_tips", *EXTRA]
    assert all(key in FEATURES for key in meta["obs_keys"])
    assert meta["joint_names"] == list(agent.env.joint_names) and meta["episode_steps"] == 40
    # the final step weighs the fingertip errors more; one log term per fingertip at the last step
    c = agent.cost
    assert isinstance(c, TipLogDistanceCost) and len(c.terms) == k
    d = np.diagonal(c.quad.Q, axis1=1, axis2=2)
    assert np.all(d[-1, -3 * k:] > d[0, -3 * k:]) and np.all(d[:, :n] == 0.0)


def test_metadata_builds_the_policy_input_the_agent_trained_on(agent):
    """`s2r eval` builds the policy's input from the export's obs_keys and metadata: the same
    values as the agent's rollouts (target - fingertips by tip, then the set-point features)."""
    rng = np.random.default_rng(0)
    s = agent.rollout(0, lambda t, x, obs: rng.uniform(-1, 1, agent.dU), seed=3)
    assert s.X.shape == (41, agent.dX) and s.state_obs.shape == (41, agent.obs_dim)
    assert np.all(np.isfinite(s.X)) and np.all(np.isfinite(s.state_obs))
    # x's last 12 entries are tips - targets, the policy's target_minus_tips their negative
    np.testing.assert_allclose(s.X[:, -12:], -s.state_obs[:, 32:44], atol=1e-12)
    meta = agent.metadata()
    b = ObservationBuilder(meta["obs_keys"], meta, n_joints=16, n_actions=16)
    env = agent.env
    obs, _ = env.reset(seed=agent.condition_seeds[0])
    agent.inputs.reset()
    for t in range(3):
        ctx = sim_context(obs, env)
        np.testing.assert_array_equal(b.observe(ctx), agent.inputs.observe(sim_context(obs, env)))
        u = np.full(16, 0.5)
        b.record_action(u * agent.action_scale)
        agent.inputs.record_action(u * agent.action_scale)
        obs, *_ = env.step(u)
    with pytest.raises(ValueError, match="tip_count"):      # metadata without the tip count: one line
        ObservationBuilder(meta["obs_keys"], {}, n_joints=16, n_actions=16)


@pytest.mark.parametrize("kind", ["jacobian", "ik"])
def test_initial_controllers_reach_every_fingertip_and_success_is_the_tasks(kind):
    """The first local controllers (damped least squares on the fingertip errors, or the scripted
    expert's inverse kinematics; linear in x) bring all four fingertips within the task's 1.5 cm
    under exploration noise; a sample says success exactly when the task does, and final_distance
    is the largest fingertip error."""
    a = HandReachAgent(n_conditions=3, T=100, init_controller=kind, obs_features=EXTRA, state_features=EXTRA)
    try:
        ctrls = a.initial_controllers(0.01)
        rng = np.random.default_rng(0)
        for c, ctrl in enumerate(ctrls):
            assert (ctrl.T, ctrl.dX, ctrl.dU) == (100, a.dX, 16)
            z = rng.standard_normal((100, 16))
            s = a.rollout(c, lambda t, x, obs, k=ctrl, z=z: k.act(t, x, z[t]), seed=c)
            err = np.linalg.norm(s.X[-1, -12:].reshape(4, 3), axis=1)
            assert s.success and s.final_distance == pytest.approx(err.max(), abs=1e-9) and err.max() < 0.015
            assert np.linalg.norm(s.X[0, -12:].reshape(4, 3), axis=1).max() > 0.03    # there was a way to go
        idle = a.held_out(0, lambda t, x, obs: np.zeros(a.dU))                       # holding still fails
        assert not idle.success and idle.final_distance > 0.015
    finally:
        a.close()


def test_short_gps_run_moves_the_fingertips_toward_their_targets(agent):
    """Two real MDGPS iterations (2 conditions, 3 samples, 40 steps): the trained policy brings the
    fingertips of held-out starts nearer their targets than they started, and nearer than holding still."""
    cfg = GPSConfig(iterations=2, samples_per_condition=3, policy_steps=300, eval_episodes=3,
                    resample_conditions=True, min_points_per_cluster=20, max_clusters=4, hidden=(64, 64))
    gps = MDGPS(agent, cfg)
    stats = [gps.iterate() for _ in range(2)]
    assert all(np.isfinite(s["cost"]) and s["rollouts"] == 6 for s in stats)
    assert stats[1]["sampled_from"] == "policy"
    from s2r.learning.gps_policy import PolicyRunner
    runner = PolicyRunner(gps.policy)
    moved = [agent.held_out(i, lambda t, x, obs: runner(t, x, obs)) for i in range(3)]
    still = [agent.held_out(i, lambda t, x, obs: np.zeros(agent.dU)) for i in range(3)]
    start = [np.linalg.norm(s.X[0, -12:].reshape(4, 3), axis=1).mean() for s in moved]
    end = [np.linalg.norm(s.X[-1, -12:].reshape(4, 3), axis=1).mean() for s in moved]
    end_still = [np.linalg.norm(s.X[-1, -12:].reshape(4, 3), axis=1).mean() for s in still]
    assert np.mean(end) < 0.6 * np.mean(start) and np.mean(end) < 0.6 * np.mean(end_still)


def test_bad_input_is_one_line():
    from s2r.learning.registry import make_agent
    with pytest.raises(ValueError, match="state-based"):
        make_agent("HandReach", images=True)
    for bad, word in ((dict(final_position_weight=-1.0), "cost weights"), (dict(log_alpha=0.0), "log_alpha"),
                      (dict(init_gain=1.5), "init_gain"), (dict(T=0), "T must be"),
                      (dict(init_controller="scripted"), "init_controller")):
        with pytest.raises(ValueError, match=word):            # refused before the simulator starts
            HandReachAgent(**bad)
    for task in ("ArmReach", "ArmInsert", "HandReach"):        # every task agent, one check
        with pytest.raises(ValueError, match=r"cost weights must be finite and >= 0, got \{'position_weight': -1"):
            make_agent(task, position_weight=-1.0)


def test_cli_refuses_images_for_the_hand_in_one_line(tmp_path, capsys):
    from s2r.learning.cli import train_main
    rc = train_main(["gps", "--task", "HandReach", "--images", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "state-based" in err and "HandReach" in err


def test_train_gps_task_hand_reach_runs_its_recipe():
    """`s2r train gps --task HandReach` starts from learning/experiments/hand_reach.yaml (options
    still override it), with the hand's agent and the task's default inputs."""
    from s2r.learning.cli import _build, _train_parser
    from s2r.learning.experiment import load_experiment
    recipe = load_experiment("hand_reach")
    agent, algo, meta = _build(_train_parser().parse_args(["gps", "--task", "HandReach", "--conditions", "2"]))
    try:
        assert isinstance(agent, HandReachAgent) and meta["task"] == "s2r/HandReach-v0" and agent.n_conditions == 2
        # the task's default inputs (the recipe names none): the hand's state holds q_cmd - q already
        assert recipe.obs_features is None and meta["obs_features"] == EXTRA and meta["state_features"] == EXTRA[1:]
        assert (algo.cfg.dynamics_prior, algo.cfg.policy_replay, algo.cfg.samples_per_condition) == \
            (recipe.gps.dynamics_prior, recipe.gps.policy_replay, recipe.samples)
        assert agent.metadata()["obs_keys"] == ["joint_pos", "joint_vel", "target_minus_tips", *EXTRA]
    finally:
        agent.close()
