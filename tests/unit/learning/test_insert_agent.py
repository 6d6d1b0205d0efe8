"""ArmInsertAgent: the GPS agent of s2r/ArmInsert-v0 (state-based): dimensions, rollouts, the task's
own success, held-out seeds, and a short MDGPS run with a checkpoint round trip."""
import numpy as np
import pytest

from s2r.learning.gps import MDGPS, GPSConfig
from s2r.learning.features import FEATURES
from s2r.learning.insert_agent import ArmInsertAgent, peg_bottom_fk, phase


@pytest.fixture(scope="module")
def agent():
    a = ArmInsertAgent(n_conditions=2, T=30)
    yield a
    a.close()


def test_dimensions_cost_and_metadata(agent):
    n = 7
    assert (agent.dX, agent.dU, agent.obs_dim, agent.T) == (3 * n + 3, n, 2 * n + 4, 30)
    assert agent.task == "s2r/ArmInsert-v0" and not agent.images
    c = agent.cost.quad
    assert c.Q.shape == (31, agent.dX, agent.dX)
    diag = np.diagonal(c.Q, axis1=1, axis2=2)
    assert np.all(diag[:-1, -3:] == diag[0, -3]) and np.all(diag[-1, -3:] > diag[0, -3])  # the final step weighs more
    # the peg's target: approach_height over the hole for the first half (line up), then the hole
    h = c.x_target[:, -1]
    assert np.all(h[:15] == agent.APPROACH_HEIGHT) and np.all(h[15:] == 0.0) and np.all(c.x_target[:, :-1] == 0.0)
    assert np.array_equal(h, agent.hover_heights())
    with pytest.raises(ValueError, match="approach_height"):
        ArmInsertAgent(approach_height=-0.01)
    meta = agent.metadata()
    assert meta["task"] == "s2r/ArmInsert-v0" and meta["inputs"] == ["state"]
    assert meta["joint_names"] == [f"panda_joint{i}" for i in range(1, 8)]
    assert meta["obs_keys"] == ["joint_pos", "joint_vel", "target_minus_peg_bottom", "phase"]
    assert set(meta["obs_keys"]) <= set(FEATURES)                 # each one named feature (learning.features)
    assert meta["episode_steps"] == 30
    assert meta["peg_bottom_offset"] == pytest.approx(0.065)
    with pytest.raises(ValueError, match="state-based"):
        ArmInsertAgent(images=True)
    for bad in (dict(log_weight=-0.01), dict(final_position_weight=float("nan")), dict(action_weight=-1.0)):
        with pytest.raises(ValueError, match="cost weights"):     # refused before the simulator starts
            ArmInsertAgent(**bad)
    with pytest.raises(ValueError, match="log_alpha"):
        ArmInsertAgent(log_alpha=0.0)


def test_rollout_is_finite_and_success_is_the_tasks_own(agent):
    import s2r.sim.tasks
    rng = np.random.default_rng(0)
    s = agent.rollout(0, lambda t, x, obs: rng.uniform(-0.5, 0.5, 7), seed=0)
    assert s.X.shape == (31, agent.dX) and s.U.shape == (30, agent.dU) and s.state_obs.shape == (31, agent.obs_dim)
    assert np.all(np.isfinite(s.X)) and np.all(np.isfinite(s.U)) and np.all(np.isfinite(s.state_obs))
    # the policy's forward-kinematics peg bottom agrees with the task's (observed peg pose)
    np.testing.assert_allclose(s.X[:, -3:], -s.state_obs[:, -4:-1], atol=2e-3)
    # replay the same actions in a fresh env: the task's info["success"] / distance at the end
    env = s2r.sim.tasks.make("s2r/ArmInsert-v0").unwrapped
    try:
        obs, _ = env.reset(seed=agent.condition_seeds[0])
        np.testing.assert_allclose(s.X[0], np.concatenate([obs["joint_pos"], obs["joint_vel"], np.zeros(7),
                                                          env.peg_bottom(obs) - obs["target"]]), atol=1e-12)
        np.testing.assert_allclose(peg_bottom_fk(obs), env.peg_bottom(obs), atol=1e-3)
        for u in s.U:
            obs, _, _, _, info = env.step(u)
    finally:
        env.close()
    assert s.success == info["success"]
    assert s.final_distance == pytest.approx(info["distance"])


def test_a_scripted_insertion_succeeds_and_the_sample_says_so():
    """Joint targets by inverse kinematics: the peg bottom 4 cm above the hole, then 1 cm below the
    target. The task reports success at the end, and so does the sample (its own flag, not a distance)."""
    import pybullet as p
    a = ArmInsertAgent(n_conditions=1, T=120, condition_seeds=[30_000])   # a training seed
    try:
        env = a.env
        env.reset(seed=a.condition_seeds[0])
        target = env.target.copy()

        def joints_for(bottom):                    # hand pointing down, the peg's bottom at `bottom`
            hand = bottom + [0, 0, 0.065 + 0.1034]
            q = p.calculateInverseKinematics(env.robot.body, env._hand, hand.tolist(),
                                             p.getQuaternionFromEuler([np.pi, 0, 0]), maxNumIterations=200,
                                             residualThreshold=1e-6, physicsClientId=env.client)
            return np.array(q[:7])
        above, inside = joints_for(target + [0, 0, 0.04]), joints_for(target - [0, 0, 0.01])

        def act(t, x, obs):                        # x[:7] + x[14:21] = the position targets q_cmd
            goal = above if t < 70 else inside
            return np.clip((goal - x[:7] - x[14:21]) / 0.05 * 0.3, -1, 1)
        s = a.rollout(0, act, seed=0)
        _, success, extra = env.reward_success(env._true_obs)
        assert success and s.success
        assert s.final_distance == pytest.approx(extra["distance"]) and s.info["depth"] > 0.015
        miss = a.rollout(0, lambda t, x, obs: np.zeros(7), seed=0)      # holding still above the box
        assert not miss.success
    finally:
        a.close()


def test_held_out_seeds_are_disjoint_from_training_seeds(agent):
    seen = []
    rng = np.random.default_rng(1)
    a = ArmInsertAgent.__new__(ArmInsertAgent)       # resample needs no simulator
    a.n_conditions, a.condition_seeds = 64, []
    for _ in range(20):
        seen += a.resample(rng)
    held = range(ArmInsertAgent.HELD_OUT_BASE, ArmInsertAgent.HELD_OUT_BASE + ArmInsertAgent.HELD_OUT_SEEDS)
    assert not set(seen) & set(held) and len(seen) == 64 * 20
    assert all(s not in held for s in agent.condition_seeds)
    with pytest.raises(ValueError):
        agent.held_out(ArmInsertAgent.HELD_OUT_SEEDS, lambda t, x, o: np.zeros(7))
    # held-out episode i is seed 10000 + i: the box and start posture of that seed
    import s2r.sim.tasks
    env = s2r.sim.tasks.make("s2r/ArmInsert-v0").unwrapped
    try:
        obs, _ = env.reset(seed=10_003)
        s = agent.held_out(3, lambda t, x, o: np.zeros(7))
        np.testing.assert_allclose(s.X[0, -3:], env.peg_bottom(obs) - obs["target"], atol=1e-9)
    finally:
        env.close()


def test_short_gps_run_end_to_end_with_checkpoint(agent):
    cfg = GPSConfig(iterations=2, samples_per_condition=3, policy_steps=30, eval_episodes=2,
                    resample_conditions=True, min_points_per_cluster=20)
    gps = MDGPS(agent, cfg)
    stats = [gps.iterate() for _ in range(2)]
    for s in stats:
        assert np.isfinite(s["cost"]) and 0.0 <= s["success"] <= 1.0 and s["rollouts"] == 6
    assert stats[0]["sampled_from"] == "local" and stats[1]["sampled_from"] == "policy"
    assert all(not (10_000 <= seed < 20_000) for seed in agent.condition_seeds)
    st = gps.state_dict()
    resumed = MDGPS(agent, cfg)
    resumed.load_state_dict(st)
    assert resumed.iteration == 2 and resumed.history == gps.history
    assert agent.condition_seeds == st["condition_seeds"]
    obs = np.stack([agent.state_obs(agent.env.reset(seed=10_000)[0], 3)])
    import torch
    with torch.inference_mode():
        a = gps.policy(torch.as_tensor(obs, dtype=torch.float32))
        b = resumed.policy(torch.as_tensor(obs, dtype=torch.float32))
    assert torch.equal(a, b)


def test_make_agent_and_the_policy_input_of_its_metadata(agent):
    """`s2r train gps --task ArmInsert` gets this agent, and what its metadata's obs_keys build
    (learning.registry.state_vector, used by `s2r eval`) is the policy input the agent trained on."""
    from s2r.learning.registry import make_agent, state_vector
    obs, _ = agent.env.reset(seed=5)
    meta = agent.metadata()
    for t in (0, 7, agent.T, agent.T + 9):
        assert np.array_equal(state_vector(obs, meta["obs_keys"], t, params=meta), agent.state_obs(obs, t))
    with pytest.raises(ValueError, match="metadata has no episode_steps"):
        state_vector(obs, meta["obs_keys"], 3, params={"peg_bottom_offset": meta["peg_bottom_offset"]})
    with pytest.raises(ValueError, match="metadata has no peg_bottom_offset"):
        state_vector(obs, meta["obs_keys"], 3, meta["episode_steps"])
    made = make_agent("ArmInsert", n_conditions=1, T=10)
    try:
        assert type(made) is ArmInsertAgent and made.n_conditions == 1 and made.T == 10
    finally:
        made.close()


def test_cost_has_a_log_distance_term_from_each_steps_target(agent):
    """The log term pulls at millimetres over the whole episode, from each step's target: the hover
    point 1 cm over the lid, then the hole (with it only over the descent, most failures on held-out
    starts were the peg resting on the lid 1-2 cm off the hole)."""
    c = agent.cost
    assert np.all(c.weights[:-1] == agent.weights["log_weight"]) and c.weights[0] > 0
    assert c.weights[-1] == agent.weights["final_log_weight"]
    assert list(c.index) == list(range(agent.dX - 3, agent.dX))     # on peg_bottom - target
    h = agent.hover_heights()
    hover = np.flatnonzero(h > 0)
    assert hover.size and hover[0] == 0

    def log_cost(offset, steps):
        X, U = np.zeros((agent.T + 1, agent.dX)), np.zeros((agent.T, agent.dU))
        X[:, -1] = h
        X[:, -3:] += offset
        return (c.evaluate(X, U) - c.quad.evaluate(X, U))[steps].sum()
    for steps in (hover, np.arange(hover[-1] + 1, agent.T + 1)):    # hover, then descent
        near, nearer = log_cost(0.004, steps), log_cost(0.0004, steps)   # 7 mm, 0.7 mm off the target
        assert nearer < near - 0.01 * len(steps), steps[[0, -1]]   # still rewards the last mm
    # measured from the hover point, not the hole: lined up over the hole is its minimum
    X = np.zeros((agent.T + 1, agent.dX))
    X[:, -1] = h
    on_plan = c.evaluate(X, np.zeros((agent.T, agent.dU)))[hover]
    X[:, -1] = 0.0
    at_hole = c.evaluate(X, np.zeros((agent.T, agent.dU)))[hover]
    assert np.all(on_plan < at_hole)


def test_initial_controllers_line_the_peg_up_over_the_hole_then_insert_it():
    """GPS's first local controllers (a linear PD law on the peg bottom and the hand's orientation):
    their means bring the peg over the lid, lined up with the hole, before the descent (within 1 cm:
    the safety layer's joint limiter paces the arm), then insert it; without the orientation rows of
    the law the peg tilts and jams on some of these."""
    a = ArmInsertAgent(condition_seeds=[10_000 + i for i in range(4)])      # held-out starts 0-3
    try:
        ctrls = a.initial_controllers(a.init_variance)
        assert len(ctrls) == 4 and ctrls[0].K.shape == (a.T, a.dU, a.dX)
        assert np.all(ctrls[0].K[:, :, :a.n] != 0)                  # feedback on q: the orientation
        np.testing.assert_allclose(ctrls[0].cov[0], a.init_variance * np.eye(a.dU))
        hover_end = int(a.weights["descend_fraction"] * a.T) - 1
        for c, ctl in enumerate(ctrls):
            s = a.rollout(c, lambda t, x, obs: ctl.mean(t, x), seed=0)
            e = s.X[hover_end, -3:]                                  # lined up, above the lid
            assert np.linalg.norm(e[:2]) < 0.01 and abs(e[2] - a.APPROACH_HEIGHT) < 0.01, e
            assert s.success and s.info["depth"] > 0.015, (c, s.X[-1, -3:])
        # the law's constant part differs per condition: it is built at each one's start posture
        assert not np.allclose(ctrls[0].k, ctrls[1].k)
    finally:
        a.close()


def test_the_policy_sees_the_episode_phase(agent):
    """The local controllers line the peg up, then lower it, on the clock; the policy sees how far
    the episode is (its last input), so it can tell the two halves apart at the same state."""
    assert [phase(t, 200) for t in (0, 50, 200, 260)] == [0.0, 0.25, 1.0, 1.0]
    s = agent.rollout(0, lambda t, x, obs: np.zeros(agent.dU), seed=0)
    assert np.allclose(s.state_obs[:, -1], np.minimum(np.arange(agent.T + 1) / agent.T, 1.0))
    assert s.state_obs.shape == (agent.T + 1, agent.obs_dim)
