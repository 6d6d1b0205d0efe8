"""The sim driver under a randomization preset (SimDriver.randomize): the same robot physics as a
sim task under the same draw, and the per-step effects (latency, sensor delay, noise, jitter) in
its control loop."""
import time

import numpy as np
import pybullet as p
import pytest

import s2r.sim.tasks
from s2r.drivers import Command, CommandMode
from s2r.drivers.sim_driver import SimDriver
from s2r.core.config import load_config

ARM = [f"panda_joint{i}" for i in range(1, 8)]


def const(v, mode=None):
    d = {"dist": "constant", "value": v}
    if mode:
        d["mode"] = mode
    return d


def driver(preset, realtime=False, seed=0, joints=ARM):
    drv = SimDriver(load_config("panda_sim"), realtime=realtime)
    drv.connect()
    drv.randomize(preset, seed, joints)
    return drv


PHYSICS = {"groups": {
    "dynamics": {"link_mass_scale": const(1.7), "joint_damping_scale": const(4.0), "gain_scale": const(0.65),
                 "gravity_offset": {"dist": "normal", "std": 0.0, "mean": 0.3}},
    "unmodeled": {"backlash": const(0.001), "coulomb_friction": const(0.3), "stiction": const(0.5),
                  "torque_limit_scale": const(0.8), "motor_droop": const(0.1)}}}


class DampingSpy:
    """The joint damping last set by p.changeDynamics, per (body, joint) (pybullet does not report it)."""

    def __init__(self, monkeypatch):
        import s2r.sim.robots
        self.set = {}
        real = p.changeDynamics

        def spy(body, link, *a, **kw):
            if "jointDamping" in kw:
                self.set[(kw.get("physicsClientId"), body, link)] = kw["jointDamping"]
            return real(body, link, *a, **kw)
        monkeypatch.setattr(s2r.sim.robots.p, "changeDynamics", spy)


def physics(sim_, robot, joints, spy):
    """Every physical parameter a draw sets, for `joints` of `robot`."""
    c, b = robot.client, robot.body
    i = [robot.joint_names.index(j) for j in joints]
    links = [p.getDynamicsInfo(b, k, physicsClientId=c)[:3:2] for k in range(p.getNumJoints(b, physicsClientId=c))]
    u = robot._unmodeled
    return {"links": np.array([[m, *inertia] for m, inertia in links]),
            "damping": np.array([spy.set[(c, b, robot.idx[k])] for k in i]),
            "kp": robot.kp[i], "kd": robot.kd[i], "gravity": np.array(sim_.gravity),
            "half_gap": u.half_gap[i], "hi": u.hi[i], "droop": u.droop[i], "f_static": u.f_static[i],
            "f_kinetic": u.f_kinetic[i]}


def test_driver_has_the_task_robot_physics_under_the_same_draw(monkeypatch):
    spy = DampingSpy(monkeypatch)
    env = s2r.sim.tasks.make("s2r/ArmReach-v0", randomization=PHYSICS, render_mode=None).unwrapped
    try:
        env.reset(seed=3)
        want = physics(env.sim, env.robot, ARM, spy)
    finally:
        env.close()
    drv = driver(PHYSICS)
    try:
        got = physics(drv.simulation, drv.sim, ARM, spy)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, err_msg=k)
        # the randomized values really differ from the nominal ones (the check is not vacuous)
        assert got["kp"][0] == pytest.approx(0.65 * 600) and got["damping"][1] == pytest.approx(4.0 * 0.1987)
        assert got["gravity"][2] == pytest.approx(-9.51)
        # joints outside `joints` (the fingers) stay nominal
        fingers = [drv.sim.joint_names.index("panda_finger_joint1")]
        assert drv.sim.kp[fingers][0] == 500 and drv.sim._unmodeled.half_gap[fingers][0] == 0
        # a restarted physics server keeps the draw
        drv.kill_physics()
        drv.reset_fault()
        again = physics(drv.simulation, drv.sim, ARM, spy)
        np.testing.assert_allclose(again["kp"], want["kp"])
        np.testing.assert_allclose(again["damping"], want["damping"])
    finally:
        drv.disconnect()


def test_action_latency_delays_commands_by_whole_periods():
    drv = driver({"groups": {"timing": {"action_latency": const(3)}}})
    try:
        q0 = drv.sim.q_target.copy()
        cmds = [q0 + (k + 1) * 0.004 * (np.arange(9) < 7) for k in range(6)]
        for k, c in enumerate(cmds):
            drv.write(Command(CommandMode.POSITION, c))
            # after write k the reference has reached command k - 3 (before that: where it was)
            np.testing.assert_allclose(drv.sim.q_target, cmds[k - 3] if k >= 3 else q0, atol=1e-12)
        # a stop drops the commands still in flight: the reference then follows the stop alone
        assert len(drv._reality.pending) == 3
        drv.hold()
        assert not drv._reality.pending
        for _ in range(60):
            drv.step()
        rest = drv.sim.q_target.copy()
        drv.step()
        np.testing.assert_array_equal(drv.sim.q_target, rest)
    finally:
        drv.disconnect()


def test_action_latency_in_real_time_counts_simulated_periods():
    drv = driver({"groups": {"timing": {"action_latency": const(3)}}}, realtime=True)
    try:
        time.sleep(0.05)
        with drv._lock:
            q0 = drv.sim.q_target.copy()
            target = q0 + 0.01 * (np.arange(9) < 7)
            drv.write(Command(CommandMode.POSITION, target))
            written = drv.simulation.steps
            assert np.array_equal(drv.sim.q_target, q0)
        applied = None
        deadline = time.monotonic() + 5.0
        while applied is None and time.monotonic() < deadline:
            with drv._lock:
                if not np.array_equal(drv.sim.q_target, q0):
                    applied = drv.simulation.steps
            time.sleep(0.0005)
        assert applied is not None
        # 3 periods of 10 physics substeps (1 ms each), whatever the wall clock did
        assert 30 <= applied - written <= 40
    finally:
        drv.disconnect()


def test_sensor_delay_noise_and_offsets_act_on_reads_only():
    preset = {"groups": {"unmodeled": {"sensor_delay": const(2), "encoder_offset": const(0.01)},
                         "noise": {"joint_noise": {"dist": "normal", "std": 0.002, "mode": "per_step"}}}}
    drv = driver(preset)
    try:
        q0 = drv.sim.q_target.copy()
        truth, reads = [], []
        for k in range(8):
            drv.write(Command(CommandMode.POSITION, q0 + (k + 1) * 0.01 * (np.arange(9) < 7)))
            truth.append(drv.true_state().q)
            reads.append((drv.read().q, drv._reality.current["joint_noise"]))
        arm = np.arange(9) < 7
        for k in range(2, 8):
            q, noise = reads[k]
            # the state of 2 periods ago, plus this period's noise and the fixed offset on the arm only
            np.testing.assert_allclose(q, truth[k - 2] + (noise + 0.01) * arm, atol=1e-12)
            assert np.abs(noise[arm]).max() > 0 and not noise[~arm].any()
        assert np.abs(truth[-1] - truth[-3]).max() > 0.005       # it moved: the delay is visible
    finally:
        drv.disconnect()


def test_action_bias_offsets_each_target_and_jitter_changes_the_period():
    preset = {"groups": {"noise": {"action_bias": const(0.1)},
                         "timing": {"control_period_jitter": const(0.2, "per_step")}}}
    drv = driver(preset)
    try:
        q0 = drv.sim.q_target.copy()
        s0 = drv.simulation.steps
        for _ in range(3):
            drv.write(Command(CommandMode.POSITION, q0))
        # every set-point gets 0.1 x max_position_step (0.05 rad) on the arm, not accumulated
        np.testing.assert_allclose(drv.sim.q_target, q0 + 0.005 * (np.arange(9) < 7), atol=1e-12)
        assert drv.simulation.steps - s0 == 3 * 12          # 10 substeps x 1.2
    finally:
        drv.disconnect()


def test_action_bias_moves_the_arm_alike_in_the_task_and_the_driver_unseen_by_the_policy():
    """The actuation's error is added to the targets the robot applies, the same in the task and the
    driver: the held arm settles at the offset (not drifting away by it every step), and the
    task's own targets (the policy's `cmd_offset` and `setpoint` inputs) never include it."""
    preset = {"groups": {"noise": {"action_bias": const(0.2)}}}
    env, moved_env, moved_drv, cmd_moved = held_in_task_and_driver(preset, 60)
    assert not cmd_moved
    offset = 0.2 * env.action_scale                       # 10 mrad on each arm joint
    np.testing.assert_allclose(moved_env[env.act_idx], offset, atol=0.003)
    np.testing.assert_allclose(moved_drv, moved_env, atol=1e-6)


def test_what_the_driver_cannot_apply_is_refused_by_name():
    drv = SimDriver(load_config("panda_sim"), realtime=False)
    drv.connect()
    try:
        with pytest.raises(ValueError, match="object_mass_scale"):
            drv.randomize({"groups": {"dynamics": {"object_mass_scale": const(2.0)}}})
        with pytest.raises(ValueError, match="camera_position_error"):
            drv.randomize({"groups": {"unmodeled": {"camera_position_error": {"dist": "normal", "std": 0.01}}}})
        with pytest.raises(ValueError, match="wrist"):
            drv.randomize({"groups": {"dynamics": {"gain_scale": const(0.5)}}}, joints=["wrist"])
        assert drv.randomization is None
    finally:
        drv.disconnect()


def test_a_second_draw_replaces_the_first_instead_of_compounding_it():
    """Every draw applies on top of the robot as loaded: masses after two draws of scale 1.7 are
    1.7x the loaded ones, not 2.9x (the masses the first draw left are not the nominal)."""
    drv = SimDriver(load_config("panda_sim"), realtime=False)
    drv.connect()
    try:
        b, c = drv.sim.body, drv.simulation.client
        links = range(p.getNumJoints(b, physicsClientId=c))
        loaded = np.array([p.getDynamicsInfo(b, i, physicsClientId=c)[0] for i in links])
        heavy = {"groups": {"dynamics": {"link_mass_scale": const(1.7)}}}
        for seed in (0, 1):
            drv.randomize(heavy, seed)
            now = np.array([p.getDynamicsInfo(b, i, physicsClientId=c)[0] for i in links])
            assert np.allclose(now, 1.7 * loaded), seed
        drv.randomize({"groups": {"dynamics": {"link_mass_scale": const(1.0)}}}, 2)
        assert np.allclose([p.getDynamicsInfo(b, i, physicsClientId=c)[0] for i in links], loaded)
    finally:
        drv.disconnect()


HEAVY = {"groups": {"dynamics": {"link_mass_scale": const(1.7)}}}


def gravity_torques(robot, q_all):
    """The gravity compensation `robot` applies at joint positions q_all (all movable joints)."""
    z = [0.0] * len(q_all)
    return np.array(p.calculateInverseDynamics(robot.body, list(map(float, q_all)), z, z,
                                               physicsClientId=robot.client))


@pytest.mark.parametrize("realtime", [False, True])
def test_heavier_links_are_compensated_by_the_model_as_loaded(realtime):
    """Gravity compensation is the controller's model of the robot as loaded, in the task and in
    the sim driver alike, however the draw and the driver's stepping thread interleave: drawn
    link masses are not compensated (the arm sags under its PD, as on a robot)."""
    from s2r.drivers.sim_loading import load_configured_robot
    from s2r.sim.robots import Simulation

    cfg = load_config("panda_sim")
    nominal_sim = Simulation(cfg.sim.physics_hz)
    nominal = load_configured_robot(nominal_sim, cfg)
    q_all = nominal.q_home_all + 0.3
    want = gravity_torques(nominal, q_all)
    env = s2r.sim.tasks.make("s2r/ArmReach-v0", randomization=HEAVY, render_mode=None).unwrapped
    drv = SimDriver(cfg, realtime=realtime)
    try:
        env.reset(seed=3)
        assert p.getDynamicsInfo(env.robot.body, 3, physicsClientId=env.robot.client)[0] == \
            pytest.approx(1.7 * p.getDynamicsInfo(nominal.body, 3, physicsClientId=nominal.client)[0])
        np.testing.assert_allclose(gravity_torques(env.robot, q_all), want, atol=1e-9)
        drv.connect()
        if realtime:
            time.sleep(0.05)               # the stepping thread has compensated gravity before the draw
        drv.randomize(HEAVY, 0, ARM)
        with drv._lock:
            np.testing.assert_allclose(gravity_torques(drv.sim, q_all), want, atol=1e-9)
        assert abs(want[3]) > 5.0          # the check is not vacuous: joint 4 carries the arm
    finally:
        env.close()
        drv.disconnect()
        p.disconnect(nominal_sim.client)


def test_a_heavier_arm_sags_alike_in_the_task_and_the_driver():
    """Held at its start, the heavier arm of one draw sags the same in the task and in the driver."""
    _, sag_env, sag_drv, _ = held_in_task_and_driver(HEAVY, 50)
    assert np.abs(sag_env).max() > 0.01              # 1.7x links under nominal compensation sag
    np.testing.assert_allclose(sag_drv, sag_env, atol=1e-6)


def held_in_task_and_driver(preset, steps: int):
    """ArmReach's start (seed 3) held for `steps` periods under one draw of `preset`, in the task
    (zero actions) and in the sim driver (its set-point streamed): (env, the task's joint motion,
    the driver's, whether the task's own targets q_cmd moved)."""
    env = s2r.sim.tasks.make("s2r/ArmReach-v0", randomization=preset, render_mode=None).unwrapped
    drv = driver(preset)
    try:
        env.reset(seed=3)
        q0 = env.robot.state()[0].copy()
        cmd0 = env.q_cmd.copy()
        names = list(drv.spec.joint_names)
        idx = [names.index(j) for j in env.joint_names]
        full = drv.sim.state()[0].copy()
        full[idx] = q0
        drv.sim.reset(full)
        drv.sim.set_target("position", full)
        for _ in range(steps):
            env.step(np.zeros(len(env.act_idx)))
            drv.write(Command(CommandMode.POSITION, full.copy()))
        return env, env.robot.state()[0] - q0, drv.true_state().q[idx] - q0, not np.array_equal(env.q_cmd, cmd0)
    finally:
        env.close()
        drv.disconnect()
