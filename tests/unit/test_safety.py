"""The safety layer: refusals, clamps and the watchdog on the mock driver; position limits, e-stop
and re-enable without a jump, physics-server faults and a property test over random command streams
around the real sim driver (lockstep), where the robot's tracking and controlled stop matter."""
import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2r.drivers import Command, CommandMode, DriverFault, MockDriver, MockFaults, SafetyLayer
from s2r.drivers.sim_driver import SimDriver
from s2r.core.config import load_config


class RecordingSimDriver(SimDriver):
    """The sim driver, remembering every command that got past the safety layer (as the mock
    driver's `sent` does), for the tests whose outcome depends on the robot's dynamics."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent = []

    def write(self, command):
        self.sent.append((command.mode, command.values.copy(), self.sim.state()[0].copy()))
        super().write(command)


def make(config="panda_sim", **safety):
    cfg = load_config(config)
    if safety:
        cfg = dataclasses.replace(cfg, safety=dataclasses.replace(cfg.safety, **safety))
    drv = RecordingSimDriver(cfg, realtime=False)
    s = SafetyLayer(drv, cfg.safety)
    s.connect()
    return cfg, drv, s


@pytest.fixture
def mock():
    """A fresh mock panda behind the safety layer, enabled and at rest."""
    cfg = load_config("panda_sim")
    drv = MockDriver(cfg)
    s = SafetyLayer(drv, cfg.safety)
    s.connect()
    yield cfg, drv, s
    s.disconnect()


@pytest.fixture(scope="module")
def panda():
    cfg, drv, s = make()
    yield cfg, drv, s
    s.disconnect()


@pytest.fixture
def safe(panda):
    """The shared robot at home, at rest and enabled (a test may leave it anywhere, moving)."""
    cfg, drv, s = panda
    s.reset()
    drv.sim.reset(np.clip(drv.sim.q_home, s.spec.lower, s.spec.upper))
    assert s.reset()[0] and s.enable()[0]
    drv.sent.clear()
    return cfg, drv, s


def test_connect_holds_measured_position(safe):
    cfg, drv, s = safe
    assert s.status["state"] == "enabled"
    q = s.read().q
    assert np.allclose(drv.sim.q_target, q)


@pytest.mark.parametrize("values,counter", [
    (lambda n, q: np.full(n, np.nan), "rejected_nonfinite"),
    (lambda n, q: np.r_[q[:-1], np.inf], "rejected_nonfinite"),
    (lambda n, q: q[:-1], "rejected_shape"),
    (lambda n, q: np.zeros((n, 2)), "rejected_shape"),
    (lambda n, q: "abc", "rejected_shape"),   # unparseable: one NaN, wrong length
])
def test_malformed_commands_are_refused_counted_and_held(mock, values, counter):
    cfg, drv, s = mock
    q = s.read().q
    before, holds = getattr(s.counters, counter), drv.stats["holds"]
    res = s.write(Command.position(values(len(q), q)))
    assert res.startswith("rejected")
    assert getattr(s.counters, counter) == before + 1
    assert drv.sent == []                       # nothing reached the driver
    assert s.status["state"] == "holding" and drv.stats["holds"] == holds + 1
    assert np.array_equal(s.read().q, q)


def test_unsupported_mode_and_wrong_names(mock):
    cfg, drv, s = mock
    hand_cfg = load_config("hand_sim")
    assert CommandMode.VELOCITY not in hand_cfg.spec().modes
    q = s.read().q
    assert s.write(Command.position(q, names=list(cfg.joint_names[:-1]) + ["elbow"])).startswith("rejected")
    assert s.counters.rejected_names >= 1
    # names in another order are reordered, not refused
    order = list(reversed(cfg.joint_names))
    assert s.write(Command.position(q[::-1], names=order)) == "ok"
    assert np.allclose(drv.sent[-1][1], q)


def test_stale_command_is_refused(mock):
    cfg, drv, s = mock
    q = s.read().q
    stamp = s.clock() - 10 * s.spec.period
    assert s.write(Command.position(q, stamp=stamp)).startswith("rejected")
    assert s.counters.rejected_stale >= 1
    assert s.write(Command.position(q, stamp=s.clock())) == "ok"


def test_position_clamped_to_limits_and_step(safe):
    cfg, drv, s = safe
    q = s.read().q
    target = q.copy()
    target[0] = 100.0
    step = min(cfg.safety.max_position_step, cfg.joints[0].limits.velocity * s.spec.period)
    aTT = cfg.joints[0].limits.planned_acceleration * s.spec.period ** 2      # the set-point's speed change a T^2
    prev, steps = q[0], []
    for _ in range(int(np.ceil(step / aTT)) + 5):    # the set-point accelerates from rest, a T^2 a period, to one step
        assert s.write(Command.position(target)) == "clamped"
        sent = drv.sent[-1][1]
        steps.append(sent[0] - prev)
        prev = sent[0]
    assert steps[0] == pytest.approx(aTT)
    assert np.all(np.diff(steps) <= aTT + 1e-12) and np.all(np.array(steps) <= step + 1e-12)
    assert steps[-1] == pytest.approx(step)
    for _ in range(400):
        s.write(Command.position(target))
    # clamped to the soft limit, the margin inside the configured one: the tracking controller's
    # overshoot stays within the configured limit
    soft = cfg.joints[0].limits.upper - cfg.safety.limit_margin
    assert s.soft_limits[1][0] == soft
    assert max(v[0] for _, v, _ in drv.sent) == pytest.approx(soft)
    assert s.read().q[0] <= cfg.joints[0].limits.upper


def test_a_joint_inside_the_margin_is_moved_inward_never_outward(safe):
    cfg, drv, s = safe
    spec, m = s.spec, cfg.safety.limit_margin
    q = np.clip(drv.sim.q_home, spec.lower, spec.upper)
    q[3] = spec.upper[3] - 0.2 * m            # inside the margin (an arm joint's is the configured one)
    step = min(cfg.safety.max_position_step, spec.max_velocity[1] * spec.period)
    q[1] = spec.lower[1] - 0.5 * step         # outside the limits (pushed there), by half a step
    drv.sim.reset(q)
    assert s.reset()[0]                       # the hold brings a joint outside back to its limit
    for _ in range(30):
        s.hold()
    q0 = s.read().q
    assert spec.lower[1] - 1e-3 <= q0[1] < spec.lower[1] + 0.5 * m and q0[3] > spec.upper[3] - m
    toward = q0.copy()
    toward[3], toward[1] = spec.upper[3] + 1.0, spec.lower[1] - 1.0      # streamed outward
    prev = q0
    for _ in range(60):
        assert s.write(Command.position(toward)) == "clamped"
        sent = drv.sent[-1][1]
        assert sent[3] <= max(prev[3], spec.upper[3] - m) + 1e-12 and sent[3] <= spec.upper[3]
        assert sent[1] >= min(max(prev[1], spec.lower[1]), spec.lower[1] + m) - 1e-12
        prev = sent
    assert sent[3] == pytest.approx(spec.upper[3] - m) and sent[1] == pytest.approx(spec.lower[1] + m)
    assert s.read().q[1] >= spec.lower[1] - 0.005 and s.read().q[3] <= spec.upper[3]


def test_velocity_and_effort_clamped(mock):
    cfg, drv, s = mock
    spec = s.spec
    assert s.write(Command.velocity(np.full(spec.n_joints, 50.0))) == "clamped"
    assert np.all(np.abs(drv.sent[-1][1]) <= spec.max_velocity + 1e-12)
    assert s.write(Command.effort(np.full(spec.n_joints, -1e6))) == "clamped"
    assert np.all(np.abs(drv.sent[-1][1]) <= spec.max_effort + 1e-12)


def test_outward_effort_at_a_limit_is_cut():
    cfg, drv, s = make()
    try:
        q = s.read().q
        q_at = q.copy()
        q_at[5] = cfg.joints[5].limits.upper + 0.01
        drv.sim.reset(q_at)
        s.read()
        tau = np.zeros(len(q))
        tau[5] = 5.0
        s.write(Command.effort(tau))
        # nothing outward; the braking-distance rule brings it back inside, within the effort limit
        assert -cfg.joints[5].limits.effort <= drv.sent[-1][1][5] <= 0.0
    finally:
        s.disconnect()


def test_estop_latches_and_reenable_holds_measured_position(safe):
    cfg, drv, s = safe
    q = s.read().q
    for k in range(20):                         # moving when the e-stop hits
        s.write(Command.position(q + 0.01 * k))
    s.estop()
    n_sent = len(drv.sent)
    for _ in range(5):
        assert s.write(Command.position(q)).startswith("rejected")
    assert len(drv.sent) == n_sent and s.status["state"] == "estop" and s.counters.rejected_estop >= 5
    for _ in range(100):                        # the controlled stop, and the wrist settling
        s.hold()
    q_before = s.read().q
    assert s.enable()[0]
    q_enabled = s.read().q
    assert np.allclose(drv.sim.q_target, q_enabled, atol=1e-3)   # held where it was measured
    assert np.allclose(q_enabled, q_before, atol=1e-3)             # no jump
    # a far command right after re-enable moves by at most one step, from the measured position
    s.write(Command.position(q_enabled + 1.0))
    step = np.minimum(cfg.safety.max_position_step, s.spec.max_velocity * s.spec.period)
    assert np.all(np.abs(drv.sent[-1][1] - np.clip(q_enabled, s.spec.lower, s.spec.upper)) <= step + 1e-9)


def test_watchdog_holds_on_the_driver_clock(mock):
    cfg, drv, s = mock
    q = s.read().q
    s.write(Command.position(q + 0.02))
    drv.step(1)                                  # one period without a command: still fine
    s.read()
    assert s.status["state"] == "enabled"
    drv.step(1)                                  # 3 periods since the command (> 2): hold
    s.read()
    assert s.status["state"] == "holding" and s.counters.watchdog_trips >= 1
    assert s.last_watchdog_age <= (cfg.safety.watchdog_periods + 1) * s.spec.period + 1e-9


def test_physics_server_loss_is_latched_until_reset_and_recovered_where_measured():
    cfg, drv, s = make()
    q_before = s.read().q
    drv.kill_physics()                           # the "bus" disappears
    with pytest.raises(DriverFault, match="physics server"):
        s.read()
    assert s.status["state"] == "fault" and s.counters.driver_faults == 1
    assert s.write(Command.position(np.zeros(9))).startswith("rejected")
    assert s.counters.driver_faults == 1         # one fault, however many refusals
    assert s.enable()[0] is False                # enable is not enough: reset is required
    ok, msg = s.reset()
    assert ok, msg
    assert np.allclose(s.read().q, q_before, atol=1e-3)       # recovered where it was measured
    assert s.write(Command.position(q_before)) == "ok"
    s.disconnect()


def test_reset_fails_cleanly_when_the_driver_still_cannot_hold(mock):
    cfg, drv, s = mock
    drv.faults = MockFaults(fail_hold=True)      # reset_fault succeeds, the hold after it does not
    s.estop()
    assert s.status["state"] == "fault"
    ok, msg = s.reset()
    assert not ok and msg.startswith("reset failed: injected fault") and s.status["state"] == "fault"


JOINTS = 9


@st.composite
def commands(draw):
    mode = draw(st.sampled_from(list(CommandMode)))
    n = draw(st.sampled_from([JOINTS, JOINTS, JOINTS, JOINTS - 1, JOINTS + 1, 0]))
    vals = draw(st.lists(st.one_of(st.floats(-1e3, 1e3), st.just(float("nan")), st.just(float("inf")),
                                   st.just(-float("inf")), st.floats(-1e12, 1e12)), min_size=n, max_size=n))
    return Command(mode, np.array(vals, dtype=float))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=st.lists(commands(), min_size=1, max_size=25))
def test_property_random_streams_never_exceed_limits(panda, stream):
    cfg, drv, s = panda
    s.enable()
    drv.sent.clear()
    spec = s.spec
    lo, hi = spec.lower, spec.upper
    vmax, emax = spec.max_velocity, spec.max_effort
    step = np.minimum(cfg.safety.max_position_step, vmax * spec.period)
    for cmd in stream:
        ref = s._lim.ref.copy()
        switching = s._mode is not CommandMode.POSITION     # a mode switch (or a hold) rebases on a fresh reading
        n_before = len(drv.sent)
        res = s.write(cmd)                                       # never raises
        assert isinstance(res, str)
        if len(drv.sent) == n_before:
            assert res.startswith("rejected")
            continue
        mode, v, q_meas = drv.sent[-1]
        assert np.all(np.isfinite(v)) and v.shape == (JOINTS,)
        if mode == CommandMode.POSITION:
            assert np.all(v >= lo) and np.all(v <= hi)
            if switching:
                ref = np.clip(q_meas, lo - step, hi + step)
            # within the soft limits, or between them and where it was (moved inward only)
            lo_s, hi_s = s.soft_limits
            assert np.all((v >= lo_s) | (v >= ref - 1e-12)) and np.all((v <= hi_s) | (v <= ref + 1e-12))
            assert np.all(np.abs(v - ref) <= step + 1e-9)
        elif mode == CommandMode.VELOCITY:
            assert np.all(np.abs(v) <= vmax + 1e-12)
        else:
            assert np.all(np.abs(v) <= emax + 1e-12)
    st_ = s.read()
    assert np.all(np.isfinite(st_.q))
