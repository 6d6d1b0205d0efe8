"""Domain randomization: YAML specs, bad input, seeding, and that it really changes physics and images."""
import numpy as np
import pybullet as p
import pytest

from s2r.sim.randomization import AutomaticDomainRandomization, RandomizationError, Randomizer

DIMS = {"joints": 7, "links": 11, "objects": 1, "action": 7, "surfaces": 5}


def const(group, name, value):
    return {"groups": {group: {name: {"dist": "constant", "value": value}}}}


def test_presets_cover_the_groups_and_sample_reproducibly():
    d, s = Randomizer.load("default"), Randomizer.load("stress")
    assert set(d.groups) == {"dynamics", "timing", "noise", "visuals"}
    assert set(d.params) == set(s.params)
    assert d.params["link_mass_scale"].bounds() == (0.5, 1.5)
    assert s.params["link_mass_scale"].bounds()[1] > 1.5          # stress is wider
    assert not Randomizer.load("off") and not Randomizer.load(None)
    a = d.sample_episode(np.random.default_rng(4), DIMS)
    b = d.sample_episode(np.random.default_rng(4), DIMS)
    c = d.sample_episode(np.random.default_rng(5), DIMS)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["link_mass_scale"], c["link_mass_scale"])
    assert a["link_mass_scale"].shape == (11,) and np.all((0.5 <= a["link_mass_scale"]) & (a["link_mass_scale"] <= 1.5))
    assert 0 <= a["action_latency"] <= 2
    assert set(d.sample_step(np.random.default_rng(0), DIMS)) == set(d.per_step_names())
    block = d.sample_steps(np.random.default_rng(0), DIMS, 5)            # 5 steps' values at once
    assert set(block) == set(d.per_step_names())
    assert block["action_noise"].shape == (5, 7) and block["control_period_jitter"].shape == (5,)
    assert block["object_position_noise"].shape == (5, 1, 3)
    assert np.all(np.abs(block["control_period_jitter"]) <= 0.1) and block["action_noise"].std() > 0.01
    again = d.sample_steps(np.random.default_rng(0), DIMS, 5)
    assert all(np.array_equal(block[k], again[k]) for k in block)
    assert "control_period_jitter" in d.per_step_names() and "link_mass_scale" not in d.per_step_names()


BAD = [
    ({"groups": {"dynamix": {}}}, r"groups\.dynamix: unknown group"),
    ({"groups": {"dynamics": {"link_mas_scale": {"dist": "uniform", "low": 1, "high": 2}}}},
     r"groups\.dynamics\.link_mas_scale: unknown parameter"),
    ({"groups": {"dynamics": {"gain_scale": {"dist": "uniform", "low": 2.0, "high": 1.0}}}},
     r"gain_scale\.low: 2\.0 > high 1\.0 \(inverted range\)"),
    ({"groups": {"dynamics": {"link_mass_scale": {"dist": "uniform", "low": -0.5, "high": 1.5}}}},
     r"link_mass_scale\.low: link_mass_scale must stay positive"),
    ({"groups": {"visuals": {"light_ambient": {"dist": "uniform", "low": -1, "high": 1}}}},
     r"light_ambient\.low: light_ambient must not be negative"),
    ({"groups": {"noise": {"action_noise": {"dist": "normal", "std": -0.1}}}}, r"action_noise\.std: must be >= 0"),
    ({"groups": {"dynamics": {"gain_scale": {"dist": "gauss", "std": 1}}}}, r"gain_scale\.dist: unknown distribution 'gauss'"),
    ({"groups": {"dynamics": {"gain_scale": {"dist": "loguniform", "low": 0.0, "high": 1}}}},
     r"gain_scale\.low: gain_scale must stay positive"),
    ({"groups": {"dynamics": {"object_size_scale": {"dist": "uniform", "low": 0.9, "high": 1.1, "mode": "per_step"}}}},
     r"object_size_scale\.mode: object_size_scale can only change between episodes"),
    ({"groups": {"dynamics": {"gain_scale": {"dist": "uniform", "low": 1, "high": 2, "mode": "sometimes"}}}},
     r"gain_scale\.mode: must be per_episode or per_step"),
    ({"groups": {"dynamics": {"gain_scale": {"dist": "uniform", "low": 1, "hihg": 2}}}}, r"gain_scale\.hihg: unknown field"),
    ({"groups": {"dynamics": {"gain_scale": {"dist": "uniform", "low": 1}}}}, r"gain_scale\.high: missing"),
    ({"groups": {"dynamics": {"gain_scale": {"dist": "normal", "std": 0.1}}}}, r"gain_scale\.dist: gain_scale must not go negative"),
    ({"groups": {"timing": {"gravity_offset": {"dist": "normal", "std": 0.1}}}}, r"gravity_offset belongs to group dynamics"),
    ({"groups": {"timing": {"action_latency": {"dist": "uniform", "low": 0, "high": 2}}}}, r"action_latency takes integers"),
    ({"groups": {"dynamics": {"gain_scale": {"dist": "uniform", "low": "a", "high": 2}}}}, r"gain_scale\.low: expected a finite number"),
    ({"grups": {}}, r"grups: unknown top-level key"),
    ({"groups": {"visuals": {"surface_texture": {"dist": "bernoulli", "p": 1.5}}}}, r"surface_texture\.p: must be in \[0, 1\]"),
]


@pytest.mark.parametrize("spec,message", BAD)
def test_bad_specs_name_the_key(spec, message):
    with pytest.raises(RandomizationError, match=message):
        Randomizer.load(spec)


def test_bad_preset_and_file(tmp_path):
    with pytest.raises(RandomizationError, match="unknown randomization preset 'stres'"):
        Randomizer.load("stres")
    f = tmp_path / "r.yaml"
    f.write_text("groups:\n  dynamics:\n    gain_scale: {dist: uniform, low: 3, high: 1}\n")
    with pytest.raises(RandomizationError, match=r"r\.yaml: groups\.dynamics\.gain_scale\.low: 3\.0 > high 1\.0"):
        Randomizer.load(str(f))


def test_env_refuses_a_bad_randomization(make):
    with pytest.raises(RandomizationError, match="link_mas_scale"):
        make("s2r/ArmReach-v0", randomization={"groups": {"dynamics": {"link_mas_scale": {"dist": "constant", "value": 1}}}})


def test_adr_widens_on_success_and_narrows_on_failure():
    r = Randomizer.load({"groups": {"dynamics": {"gain_scale": {"dist": "uniform", "low": 0.9, "high": 1.1}}}})
    adr = AutomaticDomainRandomization(r, ["gain_scale"], delta=0.05, buffer_size=3, boundary_prob=1.0)
    rng = np.random.default_rng(0)
    pin, boundary = adr.next_pin(rng)
    assert boundary[0] == "gain_scale" and pin["gain_scale"] in (0.9, 1.1)
    values = r.sample_episode(rng, DIMS, pin=pin)
    assert np.all(values["gain_scale"] == pin["gain_scale"])
    for _ in range(3):
        adr.report(("gain_scale", "high"), True)
    assert r.params["gain_scale"].bounds() == (0.9, pytest.approx(1.15))
    for _ in range(3):
        adr.report(("gain_scale", "high"), False)
    assert r.params["gain_scale"].bounds() == (0.9, pytest.approx(1.1))   # not narrower than the start
    with pytest.raises(RandomizationError, match="inverted"):
        r.set_bounds("gain_scale", 2.0, 1.0)


def test_adr_moves_integers_by_whole_steps_within_limits_and_keeps_its_state():
    r = Randomizer.load({"groups": {"timing": {"action_latency": {"dist": "randint", "low": 0, "high": 2}},
                                    "dynamics": {"joint_damping_scale": {"dist": "loguniform", "low": 0.5, "high": 2},
                                                 "friction_scale": {"dist": "uniform", "low": 0.7, "high": 1.3},
                                                 "gravity_offset": {"dist": "normal", "std": 0.4}}}})
    assert set(AutomaticDomainRandomization.eligible(r)) == {"joint_damping_scale", "friction_scale", "action_latency"}
    # no objects in the task: their friction is no range worth widening
    assert set(AutomaticDomainRandomization.eligible(r, {"objects": 0})) == {"joint_damping_scale", "action_latency"}
    adr = AutomaticDomainRandomization(r, ["action_latency", "joint_damping_scale"], delta={"action_latency": 0.3,
                                       "joint_damping_scale": 0.4}, buffer_size=1, limits={"action_latency": (0, 3)})
    for _ in range(3):
        adr.report(("action_latency", "high"), True)
        adr.report(("joint_damping_scale", "low"), True)
    assert adr.bounds()["action_latency"] == (0, 3)                  # 1 step at a time, stopped at the limit
    assert isinstance(adr.bounds()["action_latency"][1], int)
    assert adr.bounds()["joint_damping_scale"][0] == pytest.approx(0.5 * np.exp(-1.2))   # log steps: factors
    twin = AutomaticDomainRandomization(Randomizer.load(
        {"groups": {"timing": {"action_latency": {"dist": "randint", "low": 0, "high": 2}}}}),
        ["action_latency"], delta=1, buffer_size=2)
    twin.load_state_dict({"bounds": {"action_latency": [0, 3]}, "buffers": {"action_latency:low": [1.0]}})
    assert twin.bounds()["action_latency"] == (0, 3) and twin.state_dict() == {
        "bounds": {"action_latency": [0, 3]}, "buffers": {"action_latency:low": [1.0], "action_latency:high": []}}
    with pytest.raises(RandomizationError, match="gravity_offset: ADR needs"):
        AutomaticDomainRandomization(r, ["gravity_offset"], delta=0.1)
    with pytest.raises(RandomizationError, match="friction_scale: ADR delta must be > 0"):
        AutomaticDomainRandomization(r, ["friction_scale"], delta={"friction_scale": float("nan")})


# ---------------------------------------------------------------------------- physics really changes
def _holding_torque(env, seed=0, steps=60):
    obs, info = env.reset(seed=seed)
    for _ in range(steps):
        obs, *_ = env.step(np.zeros(7))
    assert np.max(np.abs(obs["joint_vel"])) < 1e-2     # static: the applied torque balances gravity
    return env.unwrapped.robot.state()[2]


def test_link_mass_measured_through_inverse_dynamics(make):
    """The weight of heavier links is held by the arm, partly by the controller's model (the
    robot as loaded) and the rest by its PD, at the pose it sags to."""
    nominal = make("s2r/ArmReach-v0")
    heavy = make("s2r/ArmReach-v0", randomization=const("dynamics", "link_mass_scale", 1.5))
    _holding_torque(nominal)
    tau1 = _holding_torque(heavy, steps=300)      # settled where it sags to
    e, n = heavy.unwrapped, nominal.unwrapped
    q_all = [p.getJointState(e.robot.body, i, physicsClientId=e.client)[0] for i in e.robot.all_idx]
    z = [0.0] * len(q_all)
    tau0 = np.array(p.calculateInverseDynamics(n.robot.body, q_all, z, z, physicsClientId=n.client))[:7]
    # shoulder (joint 2) and elbow (joint 4) carry the arm's weight: torque scales with the mass
    for j in (1, 3):
        assert abs(tau0[j]) > 1.0
        assert tau1[j] / tau0[j] == pytest.approx(1.5, rel=0.01)
    # compensated by the model as loaded, the extra weight makes the arm sag from its start
    assert np.abs(e.robot.state()[0] - n.robot.state()[0]).max() > 0.005
    m_nom = np.array([p.getDynamicsInfo(n.robot.body, i, physicsClientId=n.client)[0] for i in range(e.n_links)])
    m_dr = np.array([p.getDynamicsInfo(e.robot.body, i, physicsClientId=e.client)[0] for i in range(e.n_links)])
    assert np.allclose(m_dr, 1.5 * m_nom)


def _slide_distance(env, seed=0):
    obs, _ = env.reset(seed=seed)
    e = env.unwrapped
    block = e.objects[0]
    start = np.array([0.45, 0.2, e.table.height + e.block_half])
    p.resetBasePositionAndOrientation(block, start.tolist(), (0, 0, 0, 1), physicsClientId=e.client)
    p.resetBaseVelocity(block, [0.0, -0.8, 0.0], [0, 0, 0], physicsClientId=e.client)
    for _ in range(80):
        obs, *_ = env.step(np.zeros(7))
    return np.linalg.norm(obs["object_pos"][0][:2] - start[:2])


def test_friction_measured_by_a_slide(make):
    slippery = make("s2r/ArmPush-v0", randomization=const("dynamics", "friction_scale", 0.6))
    nominal = make("s2r/ArmPush-v0")
    d_slip, d_nom = _slide_distance(slippery), _slide_distance(nominal)
    # the slide d = v^2 / (2 mu g): 0.6x friction on block and table slides 1/0.6 to 1/0.6^2 as far
    assert 1.4 < d_slip / d_nom < 3.5


def test_gravity_per_step_and_latency(make):
    spec = {"groups": {"dynamics": {"gravity_offset": {"dist": "normal", "std": 0.4, "mode": "per_step"}},
                       "timing": {"action_latency": {"dist": "constant", "value": 2}}}}
    env = make("s2r/ArmReach-v0", randomization=spec)
    obs, info = env.reset(seed=1)
    e = env.unwrapped
    q_cmd0, goal0 = e.q_cmd.copy(), e.robot._q_goal.copy()
    gs, sent = [], []
    for k in range(3):
        obs, r, term, trunc, info = env.step(np.ones(7))
        gs.append(info["randomization"]["gravity_offset"])
        assert np.allclose(e.sim.gravity, np.array([0, 0, -9.81]) + gs[-1])
        # the commanded targets move at once (as policy_node's); the robot applies them 2 steps late
        assert not np.allclose(e.q_cmd, q_cmd0)
        assert len(e.actions_in_flight()) == 2
        sent.append(np.array(e.setpoints.setpoint))
        moved = not np.allclose(e.robot._q_goal, goal0)
        assert moved == (k == 2), "set-points must reach the robot exactly 2 steps late"
    assert np.array_equal(e.robot._q_goal, sent[0])          # the first set-point, as it was made
    assert not np.allclose(gs[0], gs[1])


def test_gains_are_applied_and_damping_slows_a_joint(make):
    env = make("s2r/ArmReach-v0", randomization={"groups": {"dynamics": {"gain_scale": {"dist": "constant", "value": 1.3}}}})
    env.reset(seed=0)
    e = env.unwrapped
    assert np.allclose(e.robot.kp, 1.3 * e.kp) and np.allclose(e.robot.kd, 1.3 * e.kd)

    def wrist_speed(scale):
        spec = {"groups": {"dynamics": {"joint_damping_scale": {"dist": "constant", "value": scale}}}}
        env = make("s2r/ArmReach-v0", control="effort", randomization=spec)
        env.reset(seed=0)
        a = np.zeros(7)
        a[6] = 0.5                                 # 6 N m on the last joint, gravity compensated
        for _ in range(20):
            obs, *_ = env.step(a)
        return abs(obs["joint_vel"][6])

    slow, fast = wrist_speed(100.0), wrist_speed(1.0)
    assert fast > 2.0 * slow > 0


def test_visual_randomization_changes_images_reproducibly(make):
    vis = {"groups": {"visuals": Randomizer_default_visuals()}}
    plain = make("s2r/ArmPush-v0", render_size=48)
    rand = make("s2r/ArmPush-v0", render_size=48, randomization=vis)
    plain.reset(seed=2)
    rand.reset(seed=2)
    a, b = plain.render().astype(int), rand.render().astype(int)
    assert np.abs(a - b).mean() > 20
    rand.reset(seed=3)
    c = rand.render().astype(int)
    assert np.abs(b - c).mean() > 20
    rand.reset(seed=2)
    assert np.array_equal(rand.render().astype(int), b)
    plain.reset(seed=2)
    assert np.array_equal(plain.render().astype(int), a)


def test_held_out_textures_are_new_images_and_an_unknown_index_is_refused(make):
    from s2r.core.schema.randomization import TEXTURE_COUNT
    from s2r.sim import scene
    files = scene.texture_files()
    assert len(files) == TEXTURE_COUNT > 8
    images = [f.read_bytes() for f in files]
    assert len(set(images)) == TEXTURE_COUNT             # the held-out ones (8 on) repeat no training one

    def floor_image(index):
        spec = {"groups": {"visuals": {"surface_texture": {"dist": "bernoulli", "p": 1.0},
                                       "texture_index": {"dist": "constant", "value": index}}}}
        env = make("s2r/ArmPush-v0", render_size=48, randomization=spec)
        env.reset(seed=2)
        return env.render().astype(int)

    trained = [floor_image(i) for i in (0, 7)]
    held_out = floor_image(TEXTURE_COUNT - 1)
    assert min(np.abs(held_out - t).mean() for t in trained) > 5
    with pytest.raises(RandomizationError, match=r"texture_index\.value"):
        Randomizer.load({"groups": {"visuals": {"texture_index": {"dist": "constant", "value": TEXTURE_COUNT}}}})


def Randomizer_default_visuals():
    import yaml

    from s2r.sim.randomization import PRESETS_DIR
    return yaml.safe_load((PRESETS_DIR / "default.yaml").read_text())["groups"]["visuals"]


def test_observation_noise_is_reported_and_applied(make):
    spec = {"groups": {"noise": {"joint_noise": {"dist": "normal", "std": 0.01},
                                 "object_position_bias": {"dist": "constant", "value": 0.02}}}}
    env = make("s2r/ArmPush-v0", randomization=spec)
    obs, info = env.reset(seed=0)
    e = env.unwrapped
    true_q = e.robot.state()[0]
    assert np.allclose(obs["joint_pos"] - true_q, info["randomization"]["joint_noise"])
    true_block = np.array(p.getBasePositionAndOrientation(e.objects[0], physicsClientId=e.client)[0])
    assert np.allclose(obs["object_pos"][0] - true_block, 0.02)


def test_noise_seed_keeps_the_episode_draw_and_changes_only_per_step_noise(make):
    """reset(seed, options={"noise_seed": n}): the start, the target and the per-episode draw are the
    seed's; the per-step noise is n's (equal for equal n, different for different n)."""
    spec = {"groups": {"dynamics": {"link_mass_scale": {"dist": "uniform", "low": 0.5, "high": 1.5}},
                       "noise": {"action_noise": {"dist": "normal", "std": 0.1},
                                 "joint_noise": {"dist": "normal", "std": 0.01}}}}
    env = make("s2r/ArmReach-v0", randomization=spec)
    runs = {}
    for key, options in (("a", {"noise_seed": 1}), ("a2", {"noise_seed": 1}), ("b", {"noise_seed": 2}), ("plain", None)):
        obs, info = env.reset(seed=7, options=options)
        steps = [env.step(np.zeros(env.action_space.shape)) for _ in range(3)]
        runs[key] = (obs, info, steps)
    (oa, ia, sa), (_, _, sa2), (ob, ib, sb), (op, ip, _) = runs["a"], runs["a2"], runs["b"], runs["plain"]
    for o, i in ((ob, ib), (op, ip)):
        np.testing.assert_array_equal(o["target"], oa["target"])
        np.testing.assert_array_equal(i["randomization"]["link_mass_scale"], ia["randomization"]["link_mass_scale"])
    for x, y in zip(sa, sa2):
        np.testing.assert_array_equal(x[4]["randomization"]["action_noise"], y[4]["randomization"]["action_noise"])
        np.testing.assert_array_equal(x[0]["joint_pos"], y[0]["joint_pos"])
    for x, y in zip(sa, sb):
        assert not np.array_equal(x[4]["randomization"]["action_noise"], y[4]["randomization"]["action_noise"])
    with pytest.raises(ValueError, match="noise_seed must be a non-negative integer"):
        env.reset(seed=7, options={"noise_seed": -1})


def test_agent_samples_of_a_condition_differ_only_in_noise():
    """#27 item 6: ArmReachAgent.rollout keeps the condition's episode and draw for every sample but
    gives each sample seed its own per-step noise (before, every sample replayed one noise sequence)."""
    from s2r.learning.agents import ArmReachAgent
    spec = {"groups": {"dynamics": {"gain_scale": {"dist": "uniform", "low": 0.7, "high": 1.3}},
                       "noise": {"action_noise": {"dist": "normal", "std": 0.2}}}}
    agent = ArmReachAgent(randomization=spec, n_conditions=1, T=5)
    hold = lambda t, x, obs: np.zeros(agent.dU)  # noqa: E731
    s1, s1b, s2 = agent.rollout(0, hold, 11), agent.rollout(0, hold, 11), agent.rollout(0, hold, 12)
    np.testing.assert_array_equal(s1.X, s1b.X)
    np.testing.assert_array_equal(s1.X[0], s2.X[0])               # the same start
    assert not np.allclose(s1.X[-1], s2.X[-1])                    # different noise, different motion
    agent.env.close()


def test_the_hand_preset_randomizes_the_fingers_and_the_object(make):
    """`hand` (sim/presets): per-finger-joint gains and damping, a latency of 0-2 periods, link
    masses and, in the grasp task, the object; drawn anew per episode."""
    reach = make("s2r/HandReach-v0", randomization="hand").unwrapped
    lat, gains = set(), []
    for seed in range(12):
        _, info = reach.reset(seed=seed)
        d = info["randomization"]
        lat.add(int(d["action_latency"]))
        gains.append(np.asarray(d["gain_scale"]))
        assert np.asarray(d["joint_damping_scale"]).shape == (16,) and 0.5 <= np.min(d["joint_damping_scale"])
    assert lat == {0, 1, 2}
    g = np.array(gains)
    assert g.shape == (12, 16) and 0.6 <= g.min() and g.max() <= 1.5 and g.std() > 0.1
    np.testing.assert_allclose(reach.robot.kp, reach.robot.nominal_kp * g[-1])
    grasp = make("s2r/HandGraspLift-v0", randomization="hand").unwrapped
    _, info = grasp.reset(seed=3)
    assert 0.5 <= float(np.asarray(info["randomization"]["object_mass_scale"]).ravel()[0]) <= 1.5


def test_a_constant_may_list_one_value_per_joint_or_link():
    """A measured robot, or one episode's draw replayed on the sim driver: constants per element."""
    from s2r.sim.randomization import RandomizationError, Randomizer

    dims = {"joints": 3, "links": 2, "action": 3, "objects": 0, "surfaces": 0}
    r = Randomizer.load({"groups": {"dynamics": {"gain_scale": {"dist": "constant", "value": [0.5, 1.0, 1.5]},
                                                 "link_mass_scale": {"dist": "constant", "value": 1.2}}}})
    d = r.sample_episode(np.random.default_rng(0), dims)
    np.testing.assert_array_equal(d["gain_scale"], [0.5, 1.0, 1.5])
    np.testing.assert_array_equal(d["link_mass_scale"], [1.2, 1.2])
    with pytest.raises(RandomizationError, match="gain_scale: the constant lists 3 values, for 4 joints"):
        r.sample_episode(np.random.default_rng(0), dict(dims, joints=4))
    for bad, where in (({"timing": {"action_latency": {"dist": "constant", "value": [1, 2]}}},
                        "groups.timing.action_latency.value"),
                       ({"dynamics": {"gain_scale": {"dist": "uniform", "low": [0.5, 0.6], "high": 1.0}}},
                        "groups.dynamics.gain_scale.low"),
                       ({"dynamics": {"gain_scale": {"dist": "constant", "value": [1.0, -1.0]}}},
                        "groups.dynamics.gain_scale.value")):
        with pytest.raises(RandomizationError, match=where.replace(".", r"\.")):
            Randomizer.load({"groups": bad})
