"""Hardware-in-the-loop checks, backend-agnostic: they only use the Driver/SafetyLayer interface
and the config, so they run unchanged on the simulator, an emulator, or a real robot.

Motions are small and slow (the config's `hil.sweep_amplitude`), away from the joint limits
except in the limit test, which approaches the nearest limit at the safety layer's step limit.
"""
import time

import numpy as np

from s2r.drivers import Command, CommandMode, DriverFault


def stream(robot, seconds, command_fn=None, on_write=None):
    """Read (and optionally command) at the control rate on a steady clock for `seconds`.
    `on_write(result)` is called right after each command is written.
    Returns a list of (t, state, command_values_or_None, write_result)."""
    period = robot.spec.period
    log = []
    t0 = time.monotonic()
    k = 0
    while True:
        t = time.monotonic() - t0
        if t >= seconds:
            return log
        st = robot.read()
        cmd = command_fn(t, st) if command_fn else None
        res = robot.write(Command.position(cmd)) if cmd is not None else None
        if res is not None and on_write is not None:
            on_write(res)
        log.append((t, st, cmd, res))
        k += 1
        delay = t0 + k * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def over_tolerance(names, measured, allowed, what, allowed_name, hint, unit="rad") -> str:
    """The failure message of a per-joint check `measured <= allowed`: the joint that exceeds its
    allowance most, by name, with its value, the allowance and what to change."""
    measured = np.atleast_1d(np.asarray(measured, float))
    allowed = np.broadcast_to(np.asarray(allowed, float), measured.shape)
    j = int(np.argmax(measured - allowed))
    return f"joint {names[j]}: {what} {measured[j]:.4g} {unit} > {allowed_name} {allowed[j]:.4g} {unit}: {hint}"


def gains_hint(cfg) -> str:
    return f"raise its kp/kd (`s2r tune {cfg.name}`) or hil.tracking_tolerance"


def sweep_amplitudes(robot, cfg, q0):
    spec = robot.spec
    room = np.minimum(q0 - spec.lower, spec.upper - q0)
    return np.minimum(cfg.hil.sweep_amplitude, 0.4 * np.maximum(room, 0.0))


def max_step(robot, cfg):
    spec = robot.spec
    return np.minimum(cfg.safety.max_position_step, spec.max_velocity * cfg.safety.velocity_scale * spec.period)


def test_connect_and_spec(robot, cfg):
    spec = robot.spec
    assert spec.joint_names == cfg.joint_names
    assert CommandMode.POSITION in spec.modes
    a, b = robot.read(), robot.read()
    names, tol = spec.joint_names, cfg.hil.tracking_tolerance
    calibration = "check its calibration (offset, sign) and limits.position"
    for st in (a, b):
        assert st.q.shape == st.qd.shape == st.effort.shape == (spec.n_joints,)
        assert np.all(np.isfinite(st.q)) and np.all(np.isfinite(st.qd))
        assert np.all(st.q >= spec.lower - cfg.hil.tracking_tolerance), \
            over_tolerance(names, spec.lower - st.q, tol, "below its lower limit by", "hil.tracking_tolerance", calibration)
        assert np.all(st.q <= spec.upper + cfg.hil.tracking_tolerance), \
            over_tolerance(names, st.q - spec.upper, tol, "above its upper limit by", "hil.tracking_tolerance", calibration)
    assert b.stamp >= a.stamp


def test_state_rate(robot, cfg):
    """New states arrive at the control rate and their stamps never go back. A read may return the
    last state again, with its stamp: the ROS bridge read between two joint_states messages, or a
    Dynamixel read whose bus cycle timed out (then flagged stale). Only new, fresh states count
    towards the rate."""
    log = stream(robot, 1.0)
    stamps = np.array([st.stamp for _, st, _, _ in log])
    fresh = np.array([not st.sensors.get("stale", False) for _, st, _, _ in log])
    assert np.all(np.diff(stamps) >= 0), "state stamps must never go back"
    new = fresh & np.r_[True, np.diff(stamps) > 0]
    achieved = new.sum() / (log[-1][0] - log[0][0] + robot.spec.period)
    assert achieved >= cfg.hil.min_state_rate_ratio * cfg.control_rate_hz, \
        f"new-state rate {achieved:.1f} Hz < hil.min_state_rate_ratio {cfg.hil.min_state_rate_ratio:.0%} of " \
        f"control_rate_hz {cfg.control_rate_hz:g} Hz: the driver (or a loaded host) cannot keep the rate; " \
        "lower control_rate_hz or the ratio"


def test_bad_commands_are_refused_and_robot_holds(robot, cfg):
    n = robot.spec.n_joints
    q0 = robot.read().q
    before = robot.counters.rejected
    results = [robot.write(Command.position(np.full(n, np.nan))),
               robot.write(Command.position(np.zeros(n + 1))),
               robot.write(Command.position(q0, names=[f"nope_{i}" for i in range(n)]))]
    assert all(r.startswith("rejected") for r in results), results
    assert robot.counters.rejected == before + 3
    log = stream(robot, 0.5)
    drift = np.abs(log[-1][1].q - q0)
    assert drift.max() <= cfg.hil.tracking_tolerance, over_tolerance(
        robot.spec.joint_names, drift, cfg.hil.tracking_tolerance, "drifted after refused commands by",
        "hil.tracking_tolerance", "it does not hold still: " + gains_hint(cfg))


def test_position_limit_and_step_are_enforced(robot, cfg):
    spec = robot.spec
    q0 = robot.read().q
    # the joint nearest one of its limits, driven toward and past it
    dist_lo, dist_hi = q0 - spec.lower, spec.upper - q0
    j = int(np.argmin(np.minimum(dist_lo, dist_hi)))
    up = dist_hi[j] <= dist_lo[j]
    limit = spec.upper[j] if up else spec.lower[j]
    beyond = q0.copy()
    beyond[j] = limit + (0.3 if up else -0.3)
    step = max_step(robot, cfg)[j]
    seconds = abs(limit - q0[j]) / step * spec.period + 1.0
    clamped_before = robot.counters.clamped_position
    log = stream(robot, seconds, lambda t, st: beyond)
    q = np.array([st.q[j] for _, st, _, _ in log])
    tol = cfg.hil.tracking_tolerance
    name = spec.joint_names[j]
    assert robot.counters.clamped_position > clamped_before, \
        f"joint {name}: commanded 0.3 rad past its limit, the safety layer clamped nothing " \
        f"({robot.counters.rejected} commands refused): check safety.* and the joint's limits"
    past = (q.max() - limit) if up else (limit - q.min())
    assert (q.max() <= limit + tol) if up else (q.min() >= limit - tol), over_tolerance(
        [name], past, tol, f"went past its {'upper' if up else 'lower'} limit by", "hil.tracking_tolerance",
        f"raise its kd or lower its kp (`s2r tune {cfg.name}`), lower limits.acceleration or raise safety.limit_margin")
    assert abs(q[-1] - limit) <= tol, over_tolerance(
        [name], abs(q[-1] - limit), tol, "did not reach its limit: stopped", "hil.tracking_tolerance",
        "set-points stop safety.limit_margin inside the limit, so the margin must be below the tolerance; "
        f"a joint lagging its set-point needs more kp (`s2r tune {cfg.name}`)")
    speed = np.abs(np.diff(q)) / np.maximum(np.diff([t for t, *_ in log]), 1e-6)
    assert speed.max() <= step / spec.period * 1.5 + tol / spec.period, over_tolerance(
        [name], speed.max(), step / spec.period * 1.5 + tol / spec.period, "moved at",
        "1.5 x the step limit + tolerance per period", "the step clamp did not hold it or the joint oscillates: "
        f"lower its kp/kd (`s2r tune {cfg.name} --check`)", unit="rad/s")
    # come back the same way
    stream(robot, seconds, lambda t, st: q0)


def test_watchdog_holds_when_commands_stop(robot, cfg):
    spec = robot.spec
    q0 = robot.read().q
    amp = sweep_amplitudes(robot, cfg, q0)
    # the trip count as of the last command: on a loaded host the stream's last sleep can
    # outlast the watchdog's timeout, and that trip is the one expected here
    trips = []
    stream(robot, 0.5, lambda t, st: q0 + amp * np.sin(np.pi * t),
           on_write=lambda res: trips.append(robot.counters.watchdog_trips))
    trips = trips[-1]
    t_stop = time.monotonic()
    while robot.status["state"] != "holding" and time.monotonic() - t_stop < 2.0:
        time.sleep(spec.period / 4)
    assert robot.counters.watchdog_trips == trips + 1, \
        f"the watchdog tripped {robot.counters.watchdog_trips - trips} times (expected once) when commands stopped; " \
        f"state {robot.status['state']}, {robot.counters.rejected_speed} commands refused by the speed stop " \
        f"(a joint moving faster than it can stop: `s2r tune {cfg.name} --check`)"
    timeout = cfg.safety.watchdog_periods * spec.period
    assert robot.last_watchdog_age <= timeout + max(spec.period, 0.02), \
        f"watchdog fired {robot.last_watchdog_age * 1e3:.1f} ms after the last command (timeout {timeout * 1e3:.0f} ms, " \
        "safety.watchdog_periods): its clock or thread runs late on this host"
    st = robot.read()
    q_hold = st.q
    # as after an e-stop: the hold brakes from the motion it finds at the planned deceleration, so
    # the robot comes to rest within its braking distance of where the hold found it, then holds
    braking = st.qd ** 2 / (2 * spec.max_acceleration) + np.abs(st.qd) * spec.period
    tol = cfg.hil.tracking_tolerance
    log = stream(robot, 0.5)
    moved = np.abs(log[-1][1].q - q_hold)
    assert np.all(moved <= braking + tol), over_tolerance(
        spec.joint_names, moved, braking + tol, "moved after the watchdog's hold by",
        "its braking distance + hil.tracking_tolerance", "it brakes slower than limits.acceleration plans or does "
        f"not hold: raise its kp/kd (`s2r tune {cfg.name}`), or the tolerance")
    stream(robot, 1.0, lambda t, st: q0)


def test_estop_latches_and_recovers_without_jump(robot, cfg):
    spec = robot.spec
    q0 = robot.read().q
    amp = sweep_amplitudes(robot, cfg, q0)
    stream(robot, 0.3, lambda t, st: q0 + amp * np.sin(np.pi * t))
    robot.estop()
    st = robot.read()
    q_stop = st.q
    # the stop brakes from the motion at (at least) the planned deceleration: the robot comes to
    # rest within its braking distance of where the e-stop found it, then holds
    braking = st.qd ** 2 / (2 * spec.max_acceleration) + np.abs(st.qd) * spec.period
    refused = robot.counters.rejected_estop
    far = np.clip(q0 + amp, spec.lower, spec.upper)
    log = stream(robot, 0.5, lambda t, st: far)
    assert all(res.startswith("rejected") for *_, res in log)
    assert robot.counters.rejected_estop == refused + len(log)
    assert robot.status["state"] == "estop"
    tol = cfg.hil.tracking_tolerance
    names = spec.joint_names
    after = np.abs(log[-1][1].q - q_stop)
    assert np.all(np.abs(log[-1][1].q - q_stop) <= braking + tol), over_tolerance(
        names, after, braking + tol, "moved after the e-stop by", "its braking distance + hil.tracking_tolerance",
        f"it brakes slower than limits.acceleration plans or does not hold: raise its kp/kd (`s2r tune {cfg.name}`)")
    ok, msg = robot.enable()
    assert ok, msg
    q_enable = robot.read().q
    jump = np.abs(q_enable - log[-1][1].q)
    assert np.abs(q_enable - log[-1][1].q).max() <= tol, over_tolerance(
        names, jump, tol, "re-enable must hold the measured position; it moved", "hil.tracking_tolerance",
        gains_hint(cfg))
    # first command after re-enable: bounded by the step limit, never a jump to the far target
    log = stream(robot, 3 * spec.period, lambda t, st: far)
    moved = np.abs(log[-1][1].q - q_enable)
    assert np.all(moved <= 3 * max_step(robot, cfg) + tol), over_tolerance(
        names, moved, 3 * max_step(robot, cfg) + tol, "moved in 3 periods after re-enable",
        "3 steps (safety.max_position_step) + hil.tracking_tolerance",
        "the first command after re-enable jumped: the safety layer must rebase its step clamp")
    stream(robot, 1.5, lambda t, st: q0)


def test_tracking_of_a_joint_sweep(robot, cfg):
    q0 = robot.read().q
    amp = sweep_amplitudes(robot, cfg, q0)
    f = 0.25
    ref = lambda t: q0 + amp * np.sin(np.pi * f * t) ** 2  # starts and ends at rest
    log = stream(robot, 1.0 / f, lambda t, st: ref(t))
    # each measurement is compared with the set-point sent one period earlier
    err = np.array([np.abs(log[k][1].q - log[k - 1][2]) for k in range(1, len(log))]).max(axis=0)   # per joint
    assert err.max() <= cfg.hil.tracking_tolerance, over_tolerance(
        robot.spec.joint_names, err, cfg.hil.tracking_tolerance, "max tracking error", "hil.tracking_tolerance",
        gains_hint(cfg))


def test_read_write_latency_fits_the_control_period(robot, cfg):
    q0 = robot.read().q
    lat = []
    for _ in range(int(cfg.control_rate_hz)):             # one second of cycles
        t0 = time.perf_counter()
        robot.read()
        robot.write(Command.position(q0))
        lat.append(time.perf_counter() - t0)
        time.sleep(max(0.0, robot.spec.period - lat[-1]))
    lat = np.array(lat)
    period = robot.spec.period
    print(f"read+write latency: p50 {1e3 * np.median(lat):.2f} ms, p99 {1e3 * np.percentile(lat, 99):.2f} ms, "
          f"{np.mean(lat < period):.0%} of cycles within the {1e3 * period:.0f} ms period")
    # a loop at the control rate needs the typical cycle to leave room for planning; tail latency is
    # reported (it depends on the host's load), the bulk of the cycles must fit
    assert np.median(lat) < 0.5 * period, f"read+write p50 {1e3 * np.median(lat):.1f} ms leaves no room in a " \
        f"{1e3 * period:.0f} ms period (over half of it): lower control_rate_hz, or unload the host"
    assert np.mean(lat < period) >= 0.9, f"only {np.mean(lat < period):.0%} of read+write cycles fit the " \
        f"{1e3 * period:.0f} ms period (90 % must): lower control_rate_hz, or unload the host"


def test_fault_leads_to_safe_state_and_explicit_recovery(robot, cfg, fault_injector):
    q0 = robot.read().q
    amp = sweep_amplitudes(robot, cfg, q0)
    stream(robot, 0.3, lambda t, st: q0 + amp * np.sin(np.pi * t))      # moving when it fails
    fault_injector.inject("unplug")
    deadline = time.monotonic() + 3.0
    while robot.status["state"] != "fault" and time.monotonic() < deadline:
        try:
            robot.read()
            robot.write(Command.position(q0))
        except DriverFault:
            pass
        time.sleep(robot.spec.period)
    status = robot.status
    assert status["state"] == "fault", status
    assert status["fault"], "the fault must say what failed"
    assert robot.write(Command.position(q0)).startswith("rejected")
    assert robot.enable()[0] is False, "a fault needs an explicit reset, not just enable"
    fault_injector.clear()
    deadline = time.monotonic() + 5.0
    ok, msg = robot.reset()
    while not ok and time.monotonic() < deadline:                          # the bus may need a moment
        time.sleep(0.1)
        ok, msg = robot.reset()
    assert ok, msg
    q_reset = robot.read().q
    log = stream(robot, 0.5)
    moved = np.abs(log[-1][1].q - q_reset)
    assert moved.max() <= cfg.hil.tracking_tolerance, over_tolerance(
        robot.spec.joint_names, moved, cfg.hil.tracking_tolerance, "recovery must hold, not jump; it moved",
        "hil.tracking_tolerance", gains_hint(cfg))
    stream(robot, 1.0, lambda t, st: q0)
