"""Sequences the safety fuzz suite (tests/fuzz) found carrying a joint past its position limits,
replayed deterministically, and the mechanisms that keep it inside: stops braked at the planned
deceleration (holds, a position stream that stops, a mode switch), effort braking that cannot
reverse a joint, set-points that do not run away from a joint that cannot follow, the speed
stop in every mode, and the Dynamixel hold that stops before switching with torque off."""
import dataclasses
import time

import numpy as np
import pytest

from s2r.drivers import Command, CommandMode, SafetyLayer
from s2r.drivers import dynamixel_protocol as P
from s2r.drivers.dynamixel_driver import DynamixelDriver
from s2r.drivers.emulators import bus_spec_from_config
from s2r.drivers.emulators.dynamixel_bus import EmulatedServo, PtyBusEmulator
from s2r.drivers.sim_driver import SimDriver
from s2r.core.config import load_config

TOL = 0.005          # rad (m): the largest position-limit overshoot allowed


@pytest.fixture(scope="module")
def panda():
    cfg = load_config("panda_sim")
    drv = SimDriver(cfg, realtime=False)
    s = SafetyLayer(drv, cfg.safety)
    s.connect()
    yield cfg, drv, s
    s.disconnect()


def place(panda, q):
    """The shared robot at q, at rest, holding; the layer enabled with fresh estimates."""
    cfg, drv, s = panda
    s.reset()
    drv.sim.reset(np.clip(q, s.spec.lower, s.spec.upper))
    assert s.reset()[0] and s.state == "enabled"
    return s.spec


def home(panda):
    cfg, drv, s = panda
    return np.clip(drv.sim.q_home, s.spec.lower, s.spec.upper)


def overshoot(spec, q):
    return float(np.max(np.maximum(spec.lower - q, q - spec.upper)))


def periods_to_full_speed(spec, k=0):
    """Control periods joint k takes from rest to its velocity limit at the planned acceleration."""
    return int(np.ceil(spec.max_velocity[k] / spec.max_acceleration[k] / spec.period))


def spin_joint1(panda):
    """Joint 1 at (about) its velocity limit, from home. Returns its speed."""
    cfg, drv, s = panda
    spec = place(panda, home(panda))
    periods = periods_to_full_speed(spec) + 20
    v = np.zeros(spec.n_joints)
    v[0] = spec.max_velocity[0]
    for _ in range(periods):
        assert s.write(Command.velocity(v)) in ("ok", "clamped")
    qd = drv.read().qd[0]
    assert qd > 0.9 * spec.max_velocity[0]
    return qd


def stopping(panda, advance):
    """Joint 1's distance and largest speed of a wrist joint while `advance()` runs each period."""
    cfg, drv, s = panda
    periods = periods_to_full_speed(s.spec) + 30
    q0 = drv.read().q[0]
    wrist = 0.0
    for _ in range(periods):
        advance()
        st = drv.read()
        wrist = max(wrist, float(np.abs(st.qd[4:7]).max()))
    assert abs(drv.read().qd[0]) < 0.05
    return drv.read().q[0] - q0, wrist


# ------------------------------------------------------------------ stops braked at the planned deceleration
def test_a_hold_stops_a_moving_joint_at_the_planned_deceleration(panda):
    """A hold used to step the reference to the measured position: every moving joint braked as
    hard as its effort limit allows (joint 1: ~110 rad/s^2, 25x the plan) and threw the wrist
    (0.9 rad/s); the driver's stop now takes the planned braking distance."""
    cfg, drv, s = panda
    v = spin_joint1(panda)
    a = s.spec.max_acceleration[0]
    distance, wrist = stopping(panda, s.hold)
    assert 0.8 * v * v / (2 * a) < distance < 1.3 * v * v / (2 * a)
    assert wrist < 0.4


def test_holding_every_period_continues_one_stop(panda):
    cfg, drv, s = panda
    spin_joint1(panda)
    held = []

    def hold_once():                          # then let the stop run on its own
        drv.step(1) if held else s.hold()
        held.append(True)

    once, _ = stopping(panda, hold_once)
    spin_joint1(panda)
    every, _ = stopping(panda, s.hold)       # planned again each time, the stop would never end
    assert every == pytest.approx(once, abs=0.01)


def test_a_position_stream_that_stops_is_braked_under_control(panda):
    """Set-points that stop coming (the stream ends, the watchdog has not fired yet): the
    reference stayed at the last set-point and stopped joint 3 dead at 2.2 rad/s (85 rad/s^2)."""
    cfg, drv, s = panda
    spec = place(panda, home(panda))
    target = drv.read().q.copy()
    target[2] = spec.upper[2]
    for _ in range(periods_to_full_speed(spec, 2) + 5):
        s.write(Command.position(target))
    qd = [drv.read().qd[2]]
    for _ in range(10):                       # no commands
        drv.step(1)
        qd.append(drv.read().qd[2])
    assert qd[0] > 2.0
    decel = -np.diff(qd) / spec.period
    assert decel.max() < 1.5 * spec.max_acceleration[2]


def test_a_position_command_after_velocity_continues_the_motion(panda):
    """The first set-point after velocity mode was applied as a step with zero speed: joint 1
    braked at ~100 rad/s^2 although the set-point continued its motion."""
    cfg, drv, s = panda
    spin_joint1(panda)
    target = drv.read().q.copy()
    target[0] = s.spec.upper[0]
    before = drv.read().qd[0]
    s.write(Command.position(target))
    after = drv.read().qd[0]
    assert before - after < 0.25              # one period at the plan: 0.04 rad/s


# ------------------------------------------------------------------ the sequences the fuzz suite found
def test_a_wrist_dragged_by_its_neighbour_stays_within_its_limits(panda):
    """Every joint at its lower soft limit but joint 5, mid-range; 35 position commands to the
    lower limits. Joint 5 accelerates at the plan and drags the wrist (joint 7) 45 mrad past its
    set-point (pybullet_data's placeholder inertias couple them 1:1): 5.1 mrad past its limit
    with a 40 mrad margin and the default planned acceleration."""
    cfg, drv, s = panda
    spec = s.spec
    lo_s, hi_s = s.soft_limits
    q0 = lo_s.copy()
    q0[4] = 0.5 * (lo_s[4] + hi_s[4])
    place(panda, q0)
    s.hold()
    s.hold()
    worst = 0.0
    for _ in range(35):
        s.write(Command.position(spec.lower.copy()))
        worst = max(worst, overshoot(spec, drv.read().q))
    for _ in range(60):
        drv.step(1)
        worst = max(worst, overshoot(spec, drv.read().q))
    assert worst <= TOL


def test_a_finger_in_its_margin_is_brought_back_without_a_throw(panda):
    """A finger inside its margin, zero effort asked: the braking-distance rule brings it back,
    and with the gain's low estimate (the prior, 100x below the finger's true gain) the effort it
    chose (the finger's full 20 N) threw the finger the other way at 10x its speed limit."""
    cfg, drv, s = panda
    spec = s.spec
    q0 = home(panda)
    q0[7] = spec.upper[7] - 0.4 * (spec.upper[7] - s.soft_limits[1][7])
    place(panda, q0)
    fastest = 0.0
    for _ in range(30):
        r = s.write(Command.effort(np.zeros(spec.n_joints)))
        assert r in ("ok", "clamped") or "faster than it can stop" in r, r
        st = drv.read()
        fastest = max(fastest, abs(st.qd[7]))
        assert overshoot(spec, st.q) <= TOL
    assert fastest <= 1.1 * spec.max_velocity[7]


def test_a_set_point_does_not_run_away_from_a_joint_that_cannot_follow(panda):
    """A joint whose controller cannot keep up (here joint 1 limited to 3 N m) lagged its
    set-point without bound (0.2 rad after 40 periods, growing), then was pulled after it at
    full effort and overshot when it caught up."""
    cfg, drv, s = panda
    spec = place(panda, home(panda))
    limits = drv.sim.effort_limits.copy()
    try:
        drv.sim.effort_limits[0] = 3.0
        drv.sim._neg_effort_limits = -drv.sim.effort_limits
        target = drv.read().q.copy()
        target[0] = spec.upper[0]
        step = min(cfg.safety.max_position_step, spec.max_velocity[0] * spec.period)
        for _ in range(60):
            assert s.write(Command.position(target)) == "clamped"
            assert drv.sim.q_target[0] - drv.read().q[0] <= 3 * step + 0.05
    finally:
        drv.sim.effort_limits[:] = limits
        drv.sim._neg_effort_limits = -limits


@pytest.mark.parametrize("mode", [CommandMode.POSITION, CommandMode.VELOCITY])
def test_a_joint_pushed_faster_than_it_can_stop_is_held_in_every_mode(panda, mode):
    """The speed stop was effort mode's only; a joint a position or velocity stream cannot hold
    back (here a finger pushed at 0.3 m/s toward its limit) is now refused and held too."""
    cfg, drv, s = panda
    spec = s.spec
    q0 = home(panda)
    place(panda, q0)
    qd = np.zeros(spec.n_joints)
    qd[7] = 1.5 * spec.max_velocity[7]
    q = drv.read().q
    drv.sim.reset(q, qd)                      # pushed
    values = q if mode == CommandMode.POSITION else np.zeros(spec.n_joints)
    r = s.write(Command(mode, values))
    assert r.startswith("rejected") and "panda_finger_joint1 moves at" in r and "faster than it can stop" in r
    assert s.state == "holding"


# ------------------------------------------------------------------ the Dynamixel hold
def test_a_dynamixel_hold_stops_in_velocity_mode_before_switching_with_torque_off():
    """Operating Mode is in EEPROM: switching to position control for the hold needs torque off.
    Switched at once from velocity mode, a servo at 1 rad/s coasted with torque off, and its
    position loop then pulled it back to the position read before the switch."""
    cfg = load_config("open_manipulator_x")
    emu = PtyBusEmulator(bus_spec_from_config(cfg), realtime=False).start()
    speeds = []                                # a servo's speed each time its torque goes off
    original = EmulatedServo.write

    def write(self, address, data, now):
        if address == P.ADDR_TORQUE_ENABLE and data[:1] == b"\x00" and self.get("torque_enable"):
            self.step(now)
            speeds.append(abs(self.vel) * P.RAD_PER_TICK)
        return original(self, address, data, now)

    EmulatedServo.write = write
    try:
        d = DynamixelDriver(dataclasses.replace(cfg, driver_params={**cfg.driver_params, "port": emu.port}))
        d.connect()
        for sign in (1.0, -1.0):
            v = np.zeros(len(cfg.joints))
            v[0] = sign * 1.0
            for _ in range(30):
                d.write(Command.velocity(v))
                d.read()
                time.sleep(0.01)
            assert abs(d.read().qd[0]) > 0.8
            speeds.clear()
            d.hold()
            assert speeds and max(speeds) <= 2 * P.RAD_S_PER_VELOCITY_UNIT
            snap = emu.snapshot()[cfg.joints[0].id]
            assert snap["operating_mode"] == P.MODE_POSITION and snap["torque_enable"] == 1
            assert abs(snap["goal_position"] - snap["present_position"]) <= 2
        d.disconnect()
    finally:
        EmulatedServo.write = original
        emu.stop()
