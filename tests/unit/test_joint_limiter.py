"""s2r.core.joint_limiter: the one joint limiter the safety layer, the nodes and the tasks share."""
import numpy as np
import pytest

from s2r.core.joint_limiter import JointLimiter

T = 0.01


def limiter(**kw):
    args = dict(lower=[-1.0, -2.0], upper=[1.0, 2.0], max_velocity=[2.0, 1.0], max_acceleration=[4.0, 2.0],
                period=T, max_step=0.05, margin=0.05)
    args.update(kw)
    return JointLimiter(args.pop("lower"), args.pop("upper"), args.pop("max_velocity"),
                        args.pop("max_acceleration"), args.pop("period"), **args)


def follow(lim, desired, n, q0=None):
    """Set-points sent for n periods toward `desired`, the joints tracking them exactly."""
    q = np.zeros(2) if q0 is None else np.array(q0, float)
    lim.reset(q)
    out = []
    for _ in range(n):
        q = lim.enforce(q, np.asarray(desired, float))
        out.append(q.copy())
    return np.array(out)


def test_set_points_speed_up_and_brake_at_the_planned_acceleration_and_stop_on_target():
    lim = limiter()
    sp = follow(lim, [0.5, -0.3], 300)
    v = np.diff(np.vstack([np.zeros(2), sp]), axis=0) / T
    a = np.diff(np.vstack([np.zeros(2), v]), axis=0) / T
    assert np.all(np.abs(v) <= lim.vmax + 1e-9)
    assert np.all(np.abs(a) <= lim.accel * (1 + 1e-9) + 1e-9)
    assert sp[-1] == pytest.approx([0.5, -0.3], abs=1e-12)
    # never past a target that holds still
    assert sp[:, 0].max() <= 0.5 + 1e-12 and sp[:, 1].min() >= -0.3 - 1e-12


def test_a_target_beyond_the_limits_ends_at_the_soft_limit_and_is_reported():
    lim = limiter()
    sp = follow(lim, [5.0, -5.0], 400)
    assert sp[-1] == pytest.approx([1.0 - 0.05, -2.0 + 0.05])
    assert lim.target == pytest.approx(lim.soft_limits[1] * [1, 0] + lim.soft_limits[0] * [0, 1])
    assert np.all(sp[:, 0] <= 0.95 + 1e-12)


def test_the_margin_is_at_most_a_quarter_of_a_joints_range():
    lim = limiter(lower=[0.0, -2.0], upper=[0.04, 2.0])
    lo, hi = lim.soft_limits
    assert lo[0] == pytest.approx(0.01) and hi[0] == pytest.approx(0.03)
    assert lo[1] == pytest.approx(-1.95)


def test_a_set_point_stays_within_its_lead_of_a_joint_that_does_not_follow():
    lim = limiter()
    lim.reset(np.zeros(2))
    for _ in range(200):
        sp = lim.enforce(np.zeros(2), np.array([0.9, 1.5]))      # the joints never move
        assert np.all(np.abs(sp) <= lim.lead + 1e-12)


def test_velocity_commands_brake_before_a_soft_limit():
    lim = limiter(horizon=0.03)
    q, qd, now = np.zeros(2), np.zeros(2), 0.0
    lim.reset(q)
    hi = lim.soft_limits[1]
    for _ in range(400):
        v, _, _ = lim.enforce_velocity(np.array([2.0, 1.0]), q, qd, now)
        assert np.all(np.abs(v) - np.abs(qd) <= lim.accel * T + 1e-9)     # speeds up by at most a T
        q, qd, now = q + v * T, v, now + T
        assert np.all(q <= hi + 1e-9)
    assert q == pytest.approx(hi, abs=0.02)


def test_braking_speed_is_zero_at_a_limit_and_bounded_by_the_horizon():
    lim = limiter(horizon=0.5)
    assert lim.braking_speed(np.zeros(2)) == pytest.approx([0.0, 0.0])
    d = np.array([0.01, 0.01])
    assert np.all(lim.braking_speed(d) <= d / 0.5 + 1e-12)
    far = lim.braking_speed(np.array([100.0, 100.0]))
    assert far == pytest.approx(lim.vmax)


def test_a_late_watchdog_makes_the_safety_layer_plan_with_its_lateness():
    from s2r.drivers import Command, SafetyLayer
    from s2r.drivers.sim_driver import SimDriver
    from s2r.core.config import load_config

    cfg = load_config("panda_sim")
    drv = SimDriver(cfg, realtime=False)
    s = SafetyLayer(drv, cfg.safety)
    s.connect()
    try:
        planned = s._lim.horizon
        assert s.write(Command.velocity(np.zeros(s.spec.n_joints))) in ("ok", "clamped")
        drv.step(int(round(3 * s.watchdog_timeout / s.spec.period)))   # no commands for 3 timeouts
        s.write(Command.velocity(np.zeros(s.spec.n_joints)))     # checks the watchdog first: it trips late
        assert s.counters.watchdog_trips == 1
        assert s._lim.horizon > planned and s._lim.horizon >= s.last_watchdog_age
    finally:
        s.disconnect()


def test_a_model_of_the_robots_limiter_continues_from_what_the_robot_reports():
    """policy_node models the safety layer's limiter (ActionSetpoints); the robot's limiter paces
    from its own reading and starts again from the measured state after a gap, so the model drifts
    open loop. Corrected by a report of one command's set-point, with the commands sent since
    stepped again, it is the robot's limiter exactly."""
    from s2r.core.joint_limiter import ActionSetpoints, PositionTargets

    idx = np.arange(2)
    model = ActionSetpoints(PositionTargets([-1.0, -2.0], [1.0, 2.0], idx), limiter())
    robot = limiter()
    rng = np.random.default_rng(0)
    q = np.zeros(2)
    sent, reports = [], []
    for k in range(30):
        q_model = q + rng.normal(0, 1e-3, 2)          # the model's state is a little older
        model.step(q_model, np.full(2, 0.02))
        cmd = model.q_cmd.copy()
        if k == 10:                                    # a gap in the stream: the robot starts again
            robot.reset(q, np.zeros(2))
        robot.enforce(q, cmd)
        reports.append((robot.ref.copy(), robot.dref.copy()))
        sent.append((q_model, cmd))
        q = q + 0.5 * (robot.ref - q)                  # a joint lagging its set-point
    assert np.abs(model.setpoint - robot.ref).max() > 1e-3          # drifted open loop
    # the report of command 26 arrives after command 29 was sent: 27..29 are stepped again
    model.correct(*reports[26], since=sent[27:])
    twin = limiter()
    twin.ref, twin.dref = reports[26][0].copy(), reports[26][1].copy()
    for qm, cmd in sent[27:]:
        twin.enforce(qm, cmd)
    np.testing.assert_array_equal(model.setpoint, twin.ref)
    np.testing.assert_array_equal(model.setpoint_step, twin.dref)
    model.correct(*reports[29])
    np.testing.assert_array_equal(model.setpoint, robot.ref)
