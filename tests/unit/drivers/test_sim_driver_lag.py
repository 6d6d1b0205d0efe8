"""The sim driver's set-points and stops when the real-time stepping thread lags the commands.

On a loaded host the stepping thread can be held off for several control periods while a client
keeps streaming (or sprints to catch up with its own schedule): several set-points then reach the
driver within one simulated period, and then the thread simulates several periods at once. The
reference must still move at the stream's speed and never faster than the joints may (their
velocity limit), a stream that goes on must not be taken for a stopped one, and a hold must stop
the joints from how they move, not from the speed at which the reference would have to cover
the piled-up set-points. The stepping thread is made to lag deterministically here by holding
the driver's lock, which it takes for every substep.
The stepping thread catching up (several periods at once) is `step()` called under that lock;
the lockstep tests are the same orders of calls with the simulation advanced by hand.
"""
import time

import numpy as np
import pytest

from s2r.core.config import load_config
from s2r.drivers import Command
from s2r.drivers.sim_driver import SimDriver

PILED = 5            # set-points that reach the driver within one simulated period
SPEED = 0.5          # the stream's own speed, as a fraction of each joint's velocity limit


@pytest.fixture(params=["panda_sim", "iiwa_sim"])
def cfg(request):
    return load_config(request.param)


def away_from_limits(spec, q):
    """+1 / -1 per joint: toward the farther position limit."""
    return np.where(spec.upper - q >= q - spec.lower, 1.0, -1.0)


def run_until(drv, sim_time, timeout=30.0):
    """Wait (real time) until the stepping thread has simulated up to `sim_time` seconds."""
    deadline = time.monotonic() + timeout
    while drv.simulation.time < sim_time:
        assert time.monotonic() < deadline, f"the stepping thread did not reach {sim_time} s of simulated time"
        time.sleep(0.01)


def pile_up(drv):
    """With the stepping thread held off (the caller holds drv._lock): a stream at SPEED x the
    velocity limit whose PILED set-points all arrive before any physics runs. Returns (q0, goal)."""
    spec = drv.spec
    q0 = drv.read().q
    step = SPEED * spec.max_velocity * spec.period * away_from_limits(spec, q0)
    for k in range(1, PILED + 1):
        drv.write(Command.position(q0 + k * step))
    return q0, q0 + PILED * step


def test_piled_up_set_points_move_the_reference_within_the_velocity_limit(cfg):
    drv = SimDriver(cfg, realtime=True)
    drv.connect()
    try:
        with drv._lock:                      # the stepping thread lags: no physics meanwhile
            q0, goal = pile_up(drv)
            v_ref = np.abs(np.asarray(drv.sim.qd_target, float))
        assert np.all(v_ref <= drv.spec.max_velocity * (1 + 1e-9)), \
            f"reference speed {v_ref.round(3)} > velocity limit {drv.spec.max_velocity}"
        # the set-points are still followed to the last one, at the velocity limit instead of in
        # one period; the stream then ends moving, and the joints brake to rest beyond it
        spec = drv.spec
        run_until(drv, drv.simulation.time + 1.0 + float(np.max(np.abs(goal - q0) / spec.max_velocity)))
        d = away_from_limits(spec, q0)
        beyond = (drv.read().q - goal) * d
        braking = spec.max_velocity ** 2 / (2 * spec.max_acceleration)
        tol = cfg.hil.tracking_tolerance
        assert np.all(beyond >= -tol), f"stopped short of the last set-point by {(-beyond).max():.3f} rad"
        assert np.all(beyond <= braking + tol), f"ran {beyond.max():.3f} rad past the last set-point"
    finally:
        drv.disconnect()


def test_a_hold_while_the_stepping_thread_lags_stops_the_joints_where_they_are(cfg):
    """An e-stop (a hold) arriving after piled-up set-points, before the joints have started to
    follow them: the joints are at rest, so they stay (within the HIL tracking tolerance)."""
    drv = SimDriver(cfg, realtime=True)
    drv.connect()
    try:
        with drv._lock:
            q0, _ = pile_up(drv)
            drv.hold()
            st = drv.read()
        assert np.abs(st.qd).max() < 1e-6          # nothing has moved yet
        run_until(drv, drv.simulation.time + 1.0)
        moved = np.abs(drv.read().q - q0)
        tol = cfg.hil.tracking_tolerance
        j = int(np.argmax(moved))
        assert moved.max() <= tol, f"{drv.spec.joint_names[j]} moved {moved[j]:.3f} rad after a hold at rest (> {tol})"
    finally:
        drv.disconnect()


@pytest.mark.parametrize("order", ["set-point, hold", "set-point, stream ends"])
def test_a_stop_brakes_from_the_joints_motion_not_the_set_points(cfg, order):
    """Lockstep: one set-point a full velocity-limit step from rest (as the first set-point after
    a gap in the stream, ramped from the measured position), then a hold, or no further
    set-point (the stream ends and the driver stops by itself). The joints end within their
    braking distance (at the planned deceleration) of where the stop found them."""
    drv = SimDriver(cfg, realtime=False)
    drv.connect()
    try:
        spec = drv.spec
        q0 = drv.read().q
        drv.write(Command.position(q0 + spec.max_velocity * spec.period * away_from_limits(spec, q0)))
        st = drv.read()
        if order == "set-point, hold":
            drv.hold()
        drv.step(round(1.5 * spec.rate_hz))
        braking = st.qd ** 2 / (2 * spec.max_acceleration) + np.abs(st.qd) * spec.period
        moved = np.abs(drv.read().q - st.q)
        allowed = braking + cfg.hil.tracking_tolerance
        j = int(np.argmax(moved - allowed))
        assert np.all(moved <= allowed), \
            f"{spec.joint_names[j]} moved {moved[j]:.3f} rad after the stop, its braking distance + tolerance " \
            f"is {allowed[j]:.3f} rad (it moved at {st.qd[j]:+.3f} rad/s)"
    finally:
        drv.disconnect()


def test_set_points_arriving_together_are_crossed_at_the_streams_speed(cfg):
    """Two set-points of a stream within one simulated period (the second early, as a client
    catching up sends it): the reference moves at the stream's speed, one step a period, not at
    twice that, which jerks the arm and shakes the joints coupled to it."""
    drv = SimDriver(cfg, realtime=True)
    drv.connect()
    try:
        spec = drv.spec
        with drv._lock:
            q = drv.read().q
            step = 0.25 * spec.max_velocity * spec.period * away_from_limits(spec, q)
            drv.write(Command.position(q + step))
            drv.step(1)                          # the stepping thread runs one period
            drv.write(Command.position(q + 2 * step))
            drv.write(Command.position(q + 3 * step))    # early: before any physics
            v_ref = np.asarray(drv.sim.qd_target, float)
        stream_speed = step / spec.period
        assert np.allclose(v_ref, stream_speed, rtol=0.01), \
            f"reference speed {np.round(v_ref, 3)}, the stream moves at {np.round(stream_speed, 3)}"
    finally:
        drv.disconnect()


def test_a_stepping_thread_catching_up_does_not_end_a_stream_that_goes_on(cfg):
    """The stepping thread simulates several periods at once (catching up after the host held it
    off) between two set-points that came on time: the stream goes on, the next set-point
    continues from the last one, and no stop runs in between (a stop, then a restart from the
    measured position, is a jerk the client never commanded)."""
    drv = SimDriver(cfg, realtime=True)
    drv.connect()
    try:
        spec = drv.spec
        with drv._lock:
            q = drv.read().q
            step = 0.25 * spec.max_velocity * spec.period * away_from_limits(spec, q)
            drv.write(Command.position(q + step))
            drv.step(3)                          # three periods of physics in no time at all
            assert drv._stopping is None, "the stream was taken for stopped"
            drv.write(Command.position(q + 2 * step))
            anchor = drv.sim.q_target.copy()     # where the new set-point's ramp starts
        assert np.allclose(anchor, q + step), \
            f"the next set-point started from {np.round(anchor - q, 4)}, not the last one {np.round(step, 4)}"
    finally:
        drv.disconnect()
