"""learning.features: one definition of every policy input, used by training (the agents), `s2r eval`
and policy_node; the new inputs (previous action, command offset, histories) by hand under action
latency; unbuildable obs keys refused in one line."""
import numpy as np
import pytest

import s2r.sim.tasks
from s2r.learning.features import (FEATURES, FeatureError, ObsContext, ObservationBuilder, compute_features, parse_key,
                               sim_context, sim_sources)
from s2r.learning.insert_agent import ArmInsertAgent
from s2r.core.config import load_config
from s2r_ros.policy_node import PolicyInputs

T = 8
N = 7
EXTRA = ("prev_action", "cmd_offset", "joint_pos@hist3", "prev_action@hist2")
LATENCY = "groups:\n  timing:\n    action_latency: {dist: constant, value: 2}\n"


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


@pytest.fixture(scope="module")
def latency_preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("preset") / "latency2.yaml"
    path.write_text(LATENCY)
    return str(path)


@pytest.fixture(scope="module")
def recorded(latency_preset):
    """A short ArmInsert episode (held-out seed 10000) under an action latency of 2 steps, with the
    opt-in inputs for the policy and the actions in flight in the controllers' state: the agent's
    sample (training path) and the same episode replayed in a fresh task, step by step (obs, q_cmd,
    the actions in flight). Actions are multiples of 0.5, so that eval's scale and unscale is exact."""
    rng = np.random.default_rng(3)
    U = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=(T, N))
    agent = ArmInsertAgent(n_conditions=1, T=T, randomization=latency_preset, obs_features=EXTRA,
                           state_features=("prev_action@hist2",))
    try:
        sample = agent.held_out(0, lambda t, x, obs: U[t])
        meta = agent.metadata() | {"format": "s2r-policy/1", "policy": {"arch": "mlp", "obs_dim": agent.obs_dim}}
        sizes, scale, dX = agent.inputs.sizes, agent.action_scale.copy(), agent.dX
    finally:
        agent.close()
    env = s2r.sim.tasks.make("ArmInsert", randomization=latency_preset).unwrapped
    try:
        obs, info = env.reset(seed=10_000)
        assert info["randomization"]["action_latency"] == 2
        steps = []
        for t in range(T + 1):
            steps.append({"obs": obs, "q_cmd": env.q_cmd.copy(), "in_flight": env.actions_in_flight(),
                          "applied": env.robot._q_goal.copy()})
            if t < T:
                obs, *_ = env.step(U[t])
    finally:
        env.close()
    return {"U": U, "sample": sample, "meta": meta, "sizes": sizes, "scale": scale, "dX": dX, "steps": steps}


def _columns(keys, sizes) -> dict:
    edges = np.cumsum([0, *sizes])
    return {k: slice(a, b) for k, a, b in zip(keys, edges[:-1], edges[1:])}


def test_existing_keys_keep_their_values():
    """The keys existing exports list are the same numbers as before the registry (the formulas the
    agents and the node used), so exported policies keep working."""
    env = s2r.sim.tasks.make("ArmInsert").unwrapped
    try:
        obs, _ = env.reset(seed=4)
        obs, *_ = env.step(np.full(N, 0.3))
        from s2r.controllers.reach import quat_matrix
        peg = obs["tcp_pos"] + 0.065 * quat_matrix(obs["tcp_quat"])[:, 2]
        want = {"joint_pos": obs["joint_pos"], "joint_vel": obs["joint_vel"], "tcp_pos": obs["tcp_pos"],
                "target": obs["target"], "target_minus_tcp": obs["target"] - obs["tcp_pos"],
                "target_minus_peg_bottom": obs["target"] - peg, "phase": [0.25]}
        ctx = sim_context(obs, env)
        ctx.set("step", 5)
        for key, value in want.items():
            got = compute_features([key], ctx, {"episode_steps": 20, "peg_bottom_offset": 0.065})
            assert np.array_equal(got, np.asarray(value, float)), key
        np.testing.assert_allclose(obs["target"] - peg, obs["target"] - env.peg_bottom(obs), atol=1e-3)
        assert sim_sources(env) == {"joint_pos", "joint_vel", "action_joint_pos", "tcp_pos", "tcp_rot", "target",
                                    "q_cmd", "setpoint", "setpoint_step"}
        assert all(sim_context(obs, env).provides(s) for s in sim_sources(env))
    finally:
        env.close()


def test_new_inputs_by_hand_under_action_latency(recorded):
    """prev_action = the previous action (metadata units, zeros at the start); prev_action@hist2 =
    the last two actions = those whose set-points are in flight under a latency of 2, also in the
    local controllers' state x; cmd_offset = q_cmd - q, whose targets move at once (as policy_node's)
    while the robot gets them from the third step on; joint_pos@hist3 = the last three joint
    positions, the first repeated before the start."""
    U, s, scale, steps = recorded["U"], recorded["sample"], recorded["scale"], recorded["steps"]
    keys = recorded["meta"]["obs_keys"]
    assert keys == ["joint_pos", "joint_vel", "target_minus_peg_bottom", "phase", *EXTRA]
    col = _columns(keys, recorded["sizes"])
    S = s.state_obs
    assert S.shape == (T + 1, 2 * N + 3 + 1 + N + N + 3 * N + 2 * N) and recorded["dX"] == 3 * N + 3 + 2 * N
    q = [st["obs"]["joint_pos"] for st in steps]
    q_cmd0 = steps[0]["q_cmd"]
    for t in range(T + 1):
        prev = U[t - 1] * scale if t else np.zeros(N)
        assert np.array_equal(S[t, col["prev_action"]], prev)
        flight = np.concatenate([np.zeros(N)] * 2 + [u * scale for u in U[:t]])[-2 * N:]
        assert np.array_equal(S[t, col["prev_action@hist2"]], flight)
        assert len(steps[t]["in_flight"]) == 2
        assert np.array_equal(s.X[t, 3 * N:5 * N], flight)               # x = [q, qd, q_cmd - q, in flight, e]
        assert np.array_equal(S[t, col["cmd_offset"]], steps[t]["q_cmd"] - q[t])
        assert np.array_equal(s.X[t, 2 * N:3 * N], S[t, col["cmd_offset"]])
        if t <= 2:                                                         # nothing applied yet
            assert np.array_equal(steps[t]["applied"], steps[0]["applied"])
        hist = np.concatenate([q[max(t - 2, 0)], q[max(t - 1, 0)], q[t]])
        assert np.array_equal(S[t, col["joint_pos@hist3"]], hist)
        assert S[t, col["phase"]][0] == t / T
    np.testing.assert_allclose(steps[1]["q_cmd"] - q_cmd0, U[0] * scale, atol=1e-12)   # the first action, at once
    assert np.array_equal(steps[3]["applied"], steps[1]["in_flight"][-1])   # its set-point, two steps late
    assert np.abs(S[3:, col["cmd_offset"]]).max() > 0.01


def test_training_eval_and_policy_node_build_identical_inputs(recorded, latency_preset, tmp_path, monkeypatch, capsys):
    """The same recorded states give the same policy input in training (the agent's sample), in
    `s2r eval` (the inputs its loaded policy is called with) and in policy_node (PolicyInputs fed
    the recorded joint states, goal and position targets): one function. Only the forward
    kinematics differ (URDF on the robot, pybullet in simulation), within 0.1 mm."""
    from s2r.learning import deploy
    from s2r.learning.cli import eval_main
    U, S, meta, scale = recorded["U"], recorded["sample"].state_obs, recorded["meta"], recorded["scale"]
    seen = []

    def policy(state):                                   # the recorded actions, in the metadata's units
        seen.append(np.array(state[0], copy=True))
        return (U[len(seen) - 1] * scale)[None]
    monkeypatch.setattr(deploy, "load_policy", lambda path, threads=2: (policy, meta))
    path = tmp_path / "policy.pt"
    path.write_bytes(b"recorded")
    assert eval_main([str(path), "--task", "ArmInsert", "--episodes", "1", "--randomize", latency_preset]) == 0
    assert "success" in capsys.readouterr().out
    assert len(seen) == T and np.array_equal(np.array(seen), S[:T].astype(np.float32))

    cfg = load_config("panda_sim")
    node = PolicyInputs(meta, cfg.robot_description(), cfg.joint_names, meta["joint_names"], "position_delta")
    fingers = np.full(len(cfg.joint_names) - N, 0.04)
    rows = []
    for t, st in enumerate(recorded["steps"]):
        obs = st["obs"]
        rows.append(node(np.r_[obs["joint_pos"], fingers], np.r_[obs["joint_vel"], 0, 0], goal=obs["target"],
                         q_cmd=np.r_[st["q_cmd"], fingers]))
        if t < T:
            node.record_action(U[t] * scale, None)
    rows = np.array(rows)
    fk = _columns(meta["obs_keys"], recorded["sizes"])["target_minus_peg_bottom"]
    exact = np.ones(S.shape[1], bool)
    exact[fk] = False
    assert np.array_equal(rows[:, exact], S[:, exact])
    np.testing.assert_allclose(rows[:, fk], S[:, fk], atol=1e-4)
    assert node.step == T + 1


def test_the_node_keeps_its_episode():
    """policy_node's step counts its calls since the episode (goal) began; a refused action counts
    as a hold: zeros, or the held position for absolute position actions."""
    cfg = load_config("panda_sim")
    meta = {"obs_keys": ["phase", "prev_action", "cmd_offset"], "episode_steps": 4}
    q = np.linspace(0.1, 0.9, len(cfg.joint_names))
    for action, held in (("position_delta", np.zeros(2)), ("position", q[[1, 3]])):
        node = PolicyInputs(meta, cfg.robot_description(), cfg.joint_names, ["panda_joint2", "panda_joint4"], action)
        assert not node.needs_goal and node.size == 5
        x = node(q, 0 * q)
        assert x[0] == 0.0 and np.array_equal(x[1:], np.zeros(4))       # no targets yet: offset 0
        node.record_action(np.array([0.01, -0.02]), q)
        q_cmd = q + 0.05
        x = node(q, 0 * q, q_cmd=q_cmd)
        assert x[0] == 0.25 and np.array_equal(x[1:3], [0.01, -0.02]) and np.allclose(x[3:], 0.05)
        node.record_action(None, q)
        assert np.array_equal(node(q, 0 * q)[1:3], held)
        node.reset()
        assert node.step == 0 and np.array_equal(node(q, 0 * q), np.zeros(5))


@pytest.mark.parametrize("meta, action, match", [
    ({"obs_keys": ["joint_pos", "cmd_offset"]}, "velocity",
     "obs key 'cmd_offset' needs q_cmd .* which policy_node with velocity actions does not provide"),
    ({"obs_keys": ["joint_pos", "joint_torque"]}, "position_delta", "unknown obs key 'joint_torque'"),
    ({"obs_keys": ["joint_pos", "phase"]}, "position_delta", "obs key 'phase' needs episode_steps .* metadata has no"),
    ({"obs_keys": ["phase"], "episode_steps": 0}, "position", "needs episode_steps to be a positive integer, got 0"),
    ({"obs_keys": ["target_minus_peg_bottom"]}, "position", "metadata has no peg_bottom_offset"),
    ({"obs_keys": ["joint_pos@hist0"]}, "position", "history length must be 1..100, got 0"),
    ({"obs_keys": ["joint_pos@4"]}, "position", "a history is <feature>@hist<K>"),
    ({"obs_keys": ["joint_pos", "joint_pos"]}, "position", "listed twice"),
    ({"obs_keys": ["joint_pos", "joint_vel"], "policy": {"arch": "mlp", "obs_dim": 17}}, "position",
     "the policy takes 17 state values, but its obs_keys .* make 14 here"),
    ({"obs_keys": ["tcp_pos"], "ee_link": "no_such_link"}, "position", "cannot build the TCP's forward kinematics"),
    ({"obs_keys": ["joint_pos"], "obs_joint_names": ["elbow"]}, "position", r"joints \['elbow'\] are not in"),
    ({"obs_keys": "joint_pos"}, "position", "metadata obs_keys must be a list of names, got 'joint_pos'"),
    ({"obs_keys": ["joint_pos"], "obs_joint_names": 7}, "position", "obs_joint_names must be a list of names"),
    ({"obs_keys": ["x" * 10**6]}, "position", r"unknown obs key 'x{20,80}\.\.\.x{20,80}' \(known: joint_pos"),
])
def test_the_node_refuses_obs_keys_it_cannot_build_in_one_line(meta, action, match):
    cfg = load_config("panda_sim")
    arm = [j for j in cfg.joint_names if "finger" not in j]
    with pytest.raises(ValueError, match=match) as e:
        PolicyInputs(meta, cfg.robot_description(), cfg.joint_names, arm, action)
    _one_line(e)


def test_builder_and_context_errors_name_the_key():
    ctx = ObsContext({"joint_pos": np.zeros(2), "joint_vel": np.zeros(2)}, "the test's context")
    with pytest.raises(FeatureError, match="obs key 'target_minus_tcp' needs target .* the test's context") as e:
        compute_features(["joint_pos", "target_minus_tcp"], ctx)
    _one_line(e)
    with pytest.raises(FeatureError, match="needs last_action"):          # the episode's memory
        compute_features(["prev_action"], ctx)
    with pytest.raises(FeatureError, match="needs the episode's history"):
        compute_features(["joint_pos@hist2"], ctx)
    with pytest.raises(FeatureError, match="unknown observation source 'torque'"):
        ObsContext({"torque": 1.0})
    b = ObservationBuilder(["joint_pos@hist2", "prev_action"], n_joints=2, n_actions=3)
    assert b.size == 7 and b.sources == ["joint_pos"]
    with pytest.raises(FeatureError, match="recorded action has 2 values, the policy has 3 actions"):
        b.record_action([1.0, 2.0])
    with pytest.raises(FeatureError, match="needs joint_pos .* which the robot does not provide"):
        ObservationBuilder(["joint_pos"], n_joints=2, n_actions=2).require(["joint_vel"], "the robot")
    with pytest.raises(FeatureError, match="obs_keys must be a list of feature keys, got 'joint_pos'"):
        ObservationBuilder("joint_pos", n_joints=2, n_actions=2)
    for key in ("nope", "nope@hist2", "joint_pos@hist101", 3):
        with pytest.raises(FeatureError) as e:
            parse_key(key)
        _one_line(e)
    assert parse_key("prev_action@hist4") == (FEATURES["prev_action"], 4)


def test_agents_take_the_opt_in_features_and_refuse_unknown_ones():
    """Defaults are unchanged (benchmarks stay comparable); extras are checked before the simulator
    starts, and a feature the task cannot build (the peg's offset on the reach task) in one line."""
    from s2r.learning.agents import ArmReachAgent
    from s2r.learning.registry import make_agent
    with pytest.raises(ValueError, match="unknown obs key 'joint_torque'"):
        ArmReachAgent(obs_features=["joint_torque"])
    with pytest.raises(ValueError, match="metadata has no peg_bottom_offset|agent has no peg_bottom_offset") as e:
        ArmReachAgent(obs_features=["target_minus_peg_bottom"])
    _one_line(e)
    with pytest.raises(ValueError, match="PointMass takes no extra"):
        make_agent("PointMass", obs_features=["prev_action"])
    a = ArmReachAgent(n_conditions=1, T=3, obs_features=["prev_action"], state_features="cmd_offset")
    try:
        assert a.metadata()["obs_keys"] == ["joint_pos", "joint_vel", "target_minus_tcp", "prev_action"]
        assert (a.obs_dim, a.dX) == (3 * N + 3, 4 * N + 3)
        s = a.rollout(0, lambda t, x, obs: np.full(N, 0.5), seed=0)
        assert s.state_obs.shape == (4, a.obs_dim) and s.X.shape == (4, a.dX)
        assert np.array_equal(s.X[:, 2 * N:3 * N], s.X[:, 3 * N:4 * N])   # cmd_offset = x's q_cmd - q
        assert np.array_equal(s.state_obs[1:, -N:], np.tile(0.5 * a.action_scale, (3, 1)))
        with pytest.raises(FeatureError, match="needs last_action"):     # memory: rollouts only
            a.state_obs(a.env.reset(seed=0)[0])
    finally:
        a.close()
    image = ArmReachAgent(images=True, image_size=32, n_conditions=1, obs_features=["prev_action"])
    try:       # the CNN's joint state and vision pretraining's joint states grow the same way
        assert image.metadata()["obs_keys"] == ["image", "joint_pos", "joint_vel", "tcp_pos", "prev_action"]
        _, _, joints = image.pose_dataset(4, np.random.default_rng(1))
        assert image.joint_dim == 3 * N + 3 and joints.shape == (4, image.joint_dim)
        assert np.all(np.abs(joints[:, -N:]) <= image.action_scale) and np.any(joints[:, -N:] != 0)
    finally:
        image.close()
    plain = ArmReachAgent(n_conditions=1)
    try:
        assert plain.metadata()["obs_keys"] == ["joint_pos", "joint_vel", "target_minus_tcp"]
        assert (plain.obs_dim, plain.dX) == (2 * N + 3, 3 * N + 3) and "obs_joint_names" not in plain.metadata()
    finally:
        plain.close()
