"""The `unmodeled` randomization group: each effect does what it names, measured in pybullet.

The arm's wrist (panda_joint7, index 6: effort limit 12 N m, kp 50, kd 15) is the test joint: its
axis points down at the home posture, so gravity hardly loads it.
"""
import numpy as np
import pytest

from s2r.sim.randomization import PRESETS_DIR, RandomizationError, Randomizer
from s2r.sim.robots import STICTION_VELOCITY

WRIST = 6
REACH = "s2r/ArmReach-v0"
DIMS = {"joints": 7, "links": 11, "objects": 1, "action": 7, "surfaces": 5}


def unmodeled(**params):
    """A preset of constant values of unmodeled parameters."""
    return {"groups": {"unmodeled": {k: {"dist": "constant", "value": v} for k, v in params.items()}}}


def wrist_action(x):
    a = np.zeros(7)
    a[WRIST] = x
    return a


# ---------------------------------------------------------------------------- backlash
def _backlash_run(make, gap):
    """Creep the wrist reference +G/2 at 0.05 rad/s, reverse it by 0.6 G, then by another G more
    (G = 0.04 rad); the (motor, link) positions at rest after each phase. The wrist's viscous
    friction is raised (as in a geared joint) so the link stops where its flank leaves it."""
    g = {"dynamics": {"joint_damping_scale": {"dist": "constant", "value": 100.0}}}
    if gap:
        g["unmodeled"] = {"backlash": {"dist": "constant", "value": gap}}
    env = make(REACH, randomization={"groups": g})
    env.reset(seed=0)
    e = env.unwrapped
    rate = 0.0005                                   # rad of reference per control step

    def phase(distance):
        n = round(abs(distance) / rate)
        for _ in range(n):
            env.step(wrist_action(np.sign(distance) * rate / e.action_scale[WRIST]))
        for _ in range(40):
            env.step(np.zeros(7))
        return e.robot.q_target[WRIST], e.robot.state()[0][WRIST]

    return [phase(d) for d in (0.02, -0.024, -0.04)]


def test_a_reversal_inside_the_backlash_gap_moves_the_motor_and_not_the_link(make):
    G, h = 0.04, 0.02
    (m0, l0), (m1, l1), (m2, l2) = _backlash_run(make, G)
    # driven forward, the link trails the motor by half the play (the driving flank)
    assert h - 0.004 < m0 - l0 < h + 0.002
    # a reversal by 0.6 of the play: the motor moves 24 mrad, the link stays within a milliradian
    assert m1 - m0 == pytest.approx(-0.024, abs=1e-9)
    assert abs(l1 - l0) < 0.001
    # reversed beyond the play, the other flank drives the link: it now leads the motor by h
    assert -h - 0.002 < m2 - l2 < -h + 0.004
    assert l1 - l2 > 0.015
    # the same commands without backlash: the link follows the motor through the reversal
    (n0, k0), (n1, k1), _ = _backlash_run(make, 0.0)
    assert abs(n0 - k0) < 0.002 and k0 - k1 > 0.8 * 0.024        # (the heavy damping makes it lag)


def test_a_fast_link_overruns_its_stopping_motor_across_the_play(make):
    """A gear flank only pushes: when the motor stops, the link (with little friction) runs on
    through the play instead of being held back by the flank that drove it."""
    h = 0.03
    env = make(REACH, randomization=unmodeled(backlash=2 * h))
    env.reset(seed=0)
    e = env.unwrapped
    m0, l0 = e.robot.q_target[WRIST], e.robot.state()[0][WRIST]
    for _ in range(10):
        env.step(wrist_action(0.2))               # 1 rad/s for 0.1 rad
    for _ in range(60):
        env.step(np.zeros(7))
    m1, l1 = e.robot.q_target[WRIST], e.robot.state()[0][WRIST]
    assert m1 - m0 == pytest.approx(0.1)
    assert l1 - l0 > m1 - m0 + 0.5 * h            # the link ended ahead of the motor...
    assert l1 - m1 < h + 0.006                    # ...against the far flank, not past it


# ---------------------------------------------------------------------------- friction
def _wrist_motion(make, preset, torque, steps, qd0=0.0):
    """Wrist angle and velocity after each of `steps` effort-mode steps with `torque` (N m) on the
    wrist (gravity compensated), starting at rest (or with velocity qd0)."""
    env = make(REACH, control="effort", randomization=preset)
    env.reset(seed=0)
    e = env.unwrapped
    if qd0:
        q, qd, _ = e.robot.state()
        qd = qd.copy()
        qd[WRIST] = qd0
        e.robot.reset(q, qd)
    out = []
    for _ in range(steps):
        obs, *_ = env.step(wrist_action(torque / e.effort[WRIST]))
        out.append((obs["joint_pos"][WRIST], obs["joint_vel"][WRIST]))
    return np.array(out)


def test_stiction_holds_below_the_breakaway_torque_and_lets_go_above(make):
    preset = unmodeled(stiction=1.0, coulomb_friction=0.2)
    held = _wrist_motion(make, preset, 0.9, 30)
    q0 = held[0, 0]
    assert np.abs(held[:, 0] - q0).max() < 1e-6 and np.abs(held[:, 1]).max() < STICTION_VELOCITY
    free = _wrist_motion(make, preset, 1.1, 30)
    assert free[-1, 0] - q0 > 0.01 and free[-1, 1] > 0.1
    # without stiction the smaller torque turns the wrist too
    plain = _wrist_motion(make, None, 0.9, 30)
    assert plain[-1, 0] - q0 > 0.05


def test_coulomb_friction_decelerates(make):
    fc, tau = 1.0, 2.0
    preset = unmodeled(coulomb_friction=fc)
    # driven by tau the wrist accelerates at (tau - fc) / I; coasting it decelerates at fc / I
    spin = _wrist_motion(make, preset, tau, 12)[:, 1]
    coast_q, coast = _wrist_motion(make, preset, 0.0, 60, qd0=1.0).T
    accel = (spin[11] - spin[1]) / 0.1
    decel = (coast[1] - coast[11]) / 0.1
    assert accel > 0 and decel > 0
    assert tau * decel / (accel + decel) == pytest.approx(fc, rel=0.1)     # the friction torque, measured
    # a straight line: the per-step velocity decrement changes by under 2 % of itself
    assert np.abs(np.diff(coast[1:11], 2)).max() < 0.02 * decel * 0.01
    # it stops for good after about v0 / decel, unlike the wrist without friction (viscous only)
    stop = int(np.argmax(np.abs(coast) < STICTION_VELOCITY))
    assert stop * 0.01 == pytest.approx(1.0 / decel, rel=0.3)
    assert np.abs(coast[stop + 1:]).max() < 1e-3 and np.ptp(coast_q[stop:]) < 1e-4
    plain = _wrist_motion(make, None, 0.0, 60, qd0=1.0)[:, 1]
    assert plain[-1] > 0.5


# ---------------------------------------------------------------------------- torque limits
def test_torque_saturation_caps_the_applied_torque(make):
    env = make(REACH, control="effort", randomization=unmodeled(torque_limit_scale=0.5))
    env.reset(seed=0)
    e = env.unwrapped
    for _ in range(3):
        env.step(np.ones(7))                     # every joint asks for its full effort limit
        tau = e.robot.state()[2]
        assert np.allclose(tau, 0.5 * e.effort)
    env.step(-np.ones(7))
    assert np.allclose(e.robot.state()[2], -0.5 * e.effort)
    nominal = make(REACH, control="effort")
    nominal.reset(seed=0)
    nominal.step(np.ones(7))
    assert np.allclose(nominal.unwrapped.robot.state()[2][4:], nominal.unwrapped.effort[4:], atol=0.01)  # ~no gravity


def test_motor_droop_lowers_the_torque_with_speed_in_the_direction_of_motion(make):
    droop, scale = 0.1, 0.9
    env = make(REACH, control="effort", randomization=unmodeled(torque_limit_scale=scale, motor_droop=droop))
    env.reset(seed=0)
    e = env.unwrapped
    limit = scale * e.effort[WRIST]
    rows = []
    for _ in range(25):
        env.step(wrist_action(1.0))
        rows.append((e.robot.tau[WRIST], e.robot.state()[1][WRIST]))
    tau, qd = np.array(rows).T
    assert qd[-1] > 2.0                           # the wrist sped up...
    # ...and its torque followed the line limit * (1 - droop qd) (qd read one 1 ms substep earlier)
    assert np.allclose(tau, limit * (1.0 - droop * qd), rtol=0.01)
    assert tau[-1] < 0.8 * limit
    # braking against the motion keeps the whole limit
    env.step(wrist_action(-1.0))
    assert e.robot.tau[WRIST] == pytest.approx(-limit)


# ---------------------------------------------------------------------------- sensing
def test_encoder_offset_shifts_the_observed_joint_positions_only(make):
    preset = {"groups": {"unmodeled": {"encoder_offset": {"dist": "normal", "std": 0.05}}}}
    biased, plain = make(REACH, randomization=preset), make(REACH)
    obs, info = biased.reset(seed=3)
    obs_p, _ = plain.reset(seed=3)
    offset = info["randomization"]["encoder_offset"]
    assert offset.shape == (7,) and np.abs(offset).max() > 0.01
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 7))
    for a in actions:
        true_q = biased.unwrapped.robot.state()[0]
        assert np.allclose(obs["joint_pos"] - true_q, offset, atol=1e-12)
        assert np.array_equal(true_q, plain.unwrapped.robot.state()[0])     # the true state is unchanged
        assert np.array_equal(obs["joint_vel"], obs_p["joint_vel"])
        assert np.array_equal(obs["tcp_pos"], obs_p["tcp_pos"])
        obs, *_ = biased.step(a)
        obs_p, *_ = plain.step(a)


def test_sensor_delay_returns_the_observation_of_k_steps_ago(make):
    k = 3
    delayed = make(REACH, randomization=unmodeled(sensor_delay=k))
    plain = make(REACH)
    first, _ = delayed.reset(seed=5)
    truth = [plain.reset(seed=5)[0]]
    actions = np.random.default_rng(1).uniform(-1, 1, (12, 7))
    for t, a in enumerate(actions, start=1):
        obs, r, *_ , info = delayed.step(a)
        o, r_p, *_ = plain.step(a)
        truth.append(o)
        assert r == r_p                           # rewards come from the current state
        want = truth[max(t - k, 0)]
        assert set(obs) == set(want) and all(np.array_equal(obs[n], want[n]) for n in want), t
    # the first k observations repeat the reset one as separate arrays
    assert np.array_equal(first["joint_pos"], truth[0]["joint_pos"])


def test_sensor_delay_and_action_latency_are_different_things(make):
    a = np.random.default_rng(2).uniform(-1, 1, (6, 7))
    latency = {"groups": {"timing": {"action_latency": {"dist": "constant", "value": 2}}}}
    late_actions = make(REACH, randomization=latency)
    late_obs = make(REACH, randomization=unmodeled(sensor_delay=2))
    late_actions.reset(seed=0)
    late_obs.reset(seed=0)
    for x in a:
        late_actions.step(x)
        late_obs.step(x)
    # a sensor delay leaves the robot's motion alone; an action latency changes it
    q_obs_env = late_obs.unwrapped.robot.state()[0]
    q_act_env = late_actions.unwrapped.robot.state()[0]
    plain = make(REACH)
    plain.reset(seed=0)
    for x in a:
        plain.step(x)
    assert np.array_equal(q_obs_env, plain.unwrapped.robot.state()[0])
    assert not np.allclose(q_act_env, q_obs_env, atol=1e-3)


# ---------------------------------------------------------------------------- camera calibration
def _marker_centroid(env, size):
    e = env.unwrapped
    seg = e.render_image(size, segmentation=True).segmentation
    v, u = np.nonzero(seg == e.target_marker)
    assert len(u) > 30, "the target marker must be in view"
    return np.array([u.mean(), v.mean()])


@pytest.mark.parametrize("errors", [
    {"camera_focal_error": 0.08, "camera_principal_error": [6.0, -4.0]},
    {"camera_position_error": [0.0, 0.03, -0.02], "camera_rotation_error": [0.0, 0.02, 0.0]},
], ids=["intrinsics", "extrinsics"])
def test_camera_miscalibration_moves_a_known_point_as_the_pinhole_model_predicts(make, errors):
    size = 256
    kw = {"target_marker_radius": 0.03, "render_size": size}
    nominal = make(REACH, **kw)
    wrong = make(REACH, randomization={"groups": {"unmodeled": {k: {"dist": "constant", "value": v}
                                                                for k, v in errors.items()}}}, **kw)
    nominal.reset(seed=4)
    wrong.reset(seed=4)
    e, w = nominal.unwrapped, wrong.unwrapped
    calibrated, true = w._camera_at(size), w._camera_at(size, w.render_camera)
    target = w.target[None]
    predicted = (true.project(target) - calibrated.project(target))[0]
    measured = _marker_centroid(wrong, size) - _marker_centroid(nominal, size)
    assert np.linalg.norm(predicted) > 5.0                    # a shift of several pixels...
    assert np.allclose(measured, predicted, atol=0.35)          # ...where the pinhole model puts it
    # the metadata still describes the calibrated camera
    assert w.camera_info() == e.camera_info()
    assert np.allclose(calibrated.project(target), e._camera_at(size).project(target))
    if "camera_principal_error" in errors:        # offsets are pixels at the config's 128 px: x2 here
        assert np.allclose(true.intrinsics.K()[:2, 2] - calibrated.intrinsics.K()[:2, 2], [12.0, -8.0])
        assert true.intrinsics.fx == pytest.approx(1.08 * calibrated.intrinsics.fx)


# ---------------------------------------------------------------------------- presets
BAD = [
    ({"groups": {"unmodeled": {"backlash": {"dist": "uniform", "low": -0.001, "high": 0.003}}}},
     r"^groups\.unmodeled\.backlash\.low: backlash must not be negative"),
    ({"groups": {"unmodeled": {"backlsh": {"dist": "uniform", "low": 0.001, "high": 0.003}}}},
     r"^groups\.unmodeled\.backlsh: unknown parameter \(group unmodeled has: backlash, "),
    ({"groups": {"dynamics": {"backlash": {"dist": "constant", "value": 0.01}}}},
     r"^groups\.dynamics\.backlash: backlash belongs to group unmodeled"),
    ({"groups": {"unmodeled": {"stiction": {"dist": "normal", "std": 0.1}}}},
     r"^groups\.unmodeled\.stiction\.dist: stiction must not go negative"),
    ({"groups": {"unmodeled": {"coulomb_friction": {"dist": "uniform", "low": 0.5, "high": 0.1}}}},
     r"^groups\.unmodeled\.coulomb_friction\.low: 0\.5 > high 0\.1 \(inverted range\)"),
    ({"groups": {"unmodeled": {"torque_limit_scale": {"dist": "constant", "value": 0.0}}}},
     r"^groups\.unmodeled\.torque_limit_scale\.value: torque_limit_scale must stay positive"),
    ({"groups": {"unmodeled": {"sensor_delay": {"dist": "uniform", "low": 0, "high": 2}}}},
     r"^groups\.unmodeled\.sensor_delay\.dist: sensor_delay takes integers"),
    ({"groups": {"unmodeled": {"camera_focal_error": {"dist": "uniform", "low": -0.1, "high": 1.5}}}},
     r"^groups\.unmodeled\.camera_focal_error\.high: camera_focal_error takes values within \+-0\.9"),
    ({"groups": {"unmodeled": {"camera_principal_error": {"dist": "normal", "std": [1.0, 2.0, 3.0]}}}},
     r"^groups\.unmodeled\.camera_principal_error\.std: expected a number or a list of 2 numbers"),
    ({"groups": {"unmodeled": {"backlash": {"dist": "uniform", "low": 0.001, "high": 0.002, "mode": "per_step"}}}},
     r"^groups\.unmodeled\.backlash\.mode: backlash can only change between episodes"),
    ({"groups": {"unmodeled": {"motor_droop": {"dist": "uniform", "low": 0.0, "high": 0.1, "scale": 2}}}},
     r"^groups\.unmodeled\.motor_droop\.scale: unknown field"),
]


@pytest.mark.parametrize("spec,message", BAD)
def test_bad_unmodeled_specs_name_the_key(spec, message):
    with pytest.raises(RandomizationError, match=message) as err:
        Randomizer.load(spec)
    assert "\n" not in str(err.value)


def test_bad_unmodeled_preset_file_names_the_file_and_key(tmp_path):
    f = tmp_path / "reality.yaml"
    f.write_text("groups:\n  unmodeled:\n    backlash: {dist: uniform, low: -0.002, high: 0.005}\n")
    with pytest.raises(RandomizationError, match=r"reality\.yaml: groups\.unmodeled\.backlash\.low: "):
        Randomizer.load(str(f))


def test_the_issue_backlash_preset_and_the_example_preset_work(make):
    issue = {"groups": {"unmodeled": {"backlash": {"dist": "uniform", "low": 0.002, "high": 0.005}}}}
    env = make(REACH, randomization=issue)
    obs, info = env.reset(seed=0)
    b = info["randomization"]["backlash"]
    assert b.shape == (7,) and np.all((0.002 <= b) & (b <= 0.005))
    assert np.allclose(env.unwrapped.robot._unmodeled.half_gap, b / 2)

    example = Randomizer.load("unmodeled_example")
    text = (PRESETS_DIR / "unmodeled_example.yaml").read_text()
    assert set(example.groups) == {"unmodeled"}
    from s2r.sim.randomization import PARAMETERS
    assert set(example.params) == {n for n, i in PARAMETERS.items() if i.group == "unmodeled"}
    assert all(n in text for n in example.params)
    # a seed reproduces the draw; another seed draws anew
    a = example.sample_episode(np.random.default_rng(7), DIMS)
    again = example.sample_episode(np.random.default_rng(7), DIMS)
    other = example.sample_episode(np.random.default_rng(8), DIMS)
    assert all(np.array_equal(a[k], again[k]) for k in a)
    assert not np.array_equal(a["backlash"], other["backlash"])
    assert a["camera_principal_error"].shape == (2,) and a["camera_position_error"].shape == (3,)
    assert np.all(a["stiction"] >= 0.3) and 0 <= a["sensor_delay"] <= 2

    # every effect at once on the arm and on the hand (a prismatic joint among revolute ones)
    for task in (REACH, "s2r/HandGraspLift-v0"):
        runs = []
        for _ in range(2):
            env = make(task, randomization="unmodeled_example", image_obs=True, image_size=32)
            obs, info = env.reset(seed=11)
            acts = np.random.default_rng(3).uniform(-1, 1, (15,) + env.action_space.shape)
            traj = [obs] + [env.step(x)[0] for x in acts]
            runs.append((info["randomization"], traj, env.unwrapped.robot.state()[0]))
            assert env.observation_space.contains(traj[-1])
        (dr0, t0, q0), (dr1, t1, q1) = runs
        assert all(np.array_equal(dr0[k], dr1[k]) for k in dr0) and set(dr0) >= set(example.params)
        assert np.array_equal(q0, q1)
        assert all(np.array_equal(x[n], y[n]) for x, y in zip(t0, t1) for n in x)


def test_unmodeled_effects_off_leave_the_plain_torque_loop(make):
    env = make(REACH, randomization=unmodeled(coulomb_friction=0.3))
    env.reset(seed=0)
    # constant friction lives in pybullet's joint motors: no per-substep work in the torque loop
    assert env.unwrapped.robot._unmodeled is None
    env = make(REACH, randomization={"groups": {"unmodeled": {"enabled": False, "backlash":
                                                              {"dist": "constant", "value": 0.01}}}})
    obs, info = env.reset(seed=0)
    assert env.unwrapped.robot._unmodeled is None and "backlash" not in info["randomization"]


def test_set_unmodeled_refuses_bad_values_by_name():
    from s2r.sim.cameras import Intrinsics
    from s2r.sim.robots import Simulation, robot_model
    sim = Simulation()
    try:
        names = [f"panda_joint{i}" for i in range(1, 8)]
        robot = sim.add_robot(robot_model("panda"), names, [50] * 7, [5] * 7, [12] * 7)
        with pytest.raises(ValueError, match=r"^backlash: expected 7 values"):
            robot.set_unmodeled(backlash=[0.01] * 6)
        with pytest.raises(ValueError, match=r"^stiction: must be finite and >= 0"):
            robot.set_unmodeled(stiction=[0.1] * 6 + [-0.1])
        with pytest.raises(ValueError, match=r"^torque_limit_scale: must be finite and > 0"):
            robot.set_unmodeled(torque_limit_scale=0.0)
        with pytest.raises(ValueError, match=r"^motor_droop: must be finite"):
            robot.set_unmodeled(motor_droop=float("nan"))
        robot.set_unmodeled(backlash=0.01, torque_limit_scale=0.5)      # a scalar: every joint
        assert np.allclose(robot._unmodeled.half_gap, 0.005) and np.allclose(robot._unmodeled.hi, 6.0)
        robot.set_unmodeled()                                             # all off: the plain loop again
        assert robot._unmodeled is None
    finally:
        sim.close()
    with pytest.raises(ValueError, match="focal_error must be > -1"):
        Intrinsics(64, 64, 50.0, 50.0, 32.0, 32.0).with_error(focal_error=-1.0)
