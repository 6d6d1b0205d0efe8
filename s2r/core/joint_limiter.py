"""One joint limiter for every place that turns a wish into a command (ros2_control's joint_limits):
the safety layer, the nodes and the simulated tasks all move set-points the same way, so a policy
trained in simulation is limited exactly as the robot will limit it.

Per joint: position limits with a soft margin inside them, a velocity limit (and a per-period step
bound), and the planned acceleration every command speeds up and brakes with
(`DriverSpec.max_acceleration`). Position set-points (`enforce`) and velocity commands
(`enforce_velocity`) obey the braking-distance rule: nothing moves toward a soft limit faster than it
can stop there at the planned deceleration. Stateful: the set-point's last position and speed are
remembered between calls; `reset` starts again from a measured state.

numpy only and imports nothing of this project's, so every layer may use it.
"""
from __future__ import annotations

import numpy as np

# How far a policy's integrated position targets may lead the measured position (rad or m): a
# blocked or limited arm does not wind up a target far away (policy_node's `max_lead_rad`).
MAX_LEAD = 0.2


class PositionTargets:
    """The position targets a policy's actions make, integrated the same way in training (the sim
    tasks) and on the robot (policy_node): a position_delta action is added to the commanded
    targets, q_cmd += a, not to the measured position, which lags the targets under PD control
    (adding to it would shrink every motion by the tracking lag); the targets stay within the joint
    limits and never lead the measured position by more than `max_lead` (one value, or one per
    joint in `idx`). Joints outside `idx` stay at their starting targets. What is sent is then the
    `JointLimiter`'s. mpc_node integrates its planned velocities the same way."""

    def __init__(self, lower, upper, idx, max_lead=MAX_LEAD):
        self.lower, self.upper = np.asarray(lower, float)[idx], np.asarray(upper, float)[idx]
        self.idx = idx
        self.max_lead = np.broadcast_to(np.asarray(max_lead, float), self.lower.shape).copy()
        self.q_cmd: np.ndarray | None = None

    def reset(self) -> None:
        self.q_cmd = None

    def hold(self, q: np.ndarray) -> np.ndarray:
        self.q_cmd = np.array(q, float)
        return self.q_cmd.copy()

    def lead(self, q: np.ndarray) -> np.ndarray:
        """The targets of the joints in `idx`, pulled within `max_lead` of the measured q (where the
        next step starts from: a planner restarts its plan there)."""
        if self.q_cmd is None:
            self.q_cmd = np.array(q, float)
        i = self.idx
        self.q_cmd[i] = np.minimum(np.maximum(self.q_cmd[i], q[i] - self.max_lead), q[i] + self.max_lead)
        return self.q_cmd[i].copy()

    def apply(self, q: np.ndarray, a: np.ndarray, delta: bool = True) -> np.ndarray:
        """The targets after action `a` (a step if `delta`, else absolute targets) at measured q."""
        if self.q_cmd is None:
            self.q_cmd = np.array(q, float)
        i = self.idx
        t = self.q_cmd[i] + a if delta else np.asarray(a, float)
        t = np.minimum(np.maximum(t, self.lower), self.upper)
        self.q_cmd[i] = np.minimum(np.maximum(t, q[i] - self.max_lead), q[i] + self.max_lead)
        return self.q_cmd.copy()


class ActionSetpoints:
    """A policy's position actions -> the set-points the robot is sent, one pipeline for training
    (the sim tasks) and the robot (policy_node): the actions move the `PositionTargets`, the
    safety layer's `JointLimiter` then paces the set-point toward them. A policy trained through
    it meets on the robot the limits it met in training, and may observe where its set-points
    are (`setpoint`, `setpoint_step`)."""

    def __init__(self, targets: PositionTargets, limiter: "JointLimiter"):
        self.targets, self.limiter = targets, limiter

    def reset(self) -> None:
        """Forget the targets and set-points: the next step starts from the measured position."""
        self.targets.reset()
        self.limiter.ref = None

    def start(self, q) -> np.ndarray:
        """Hold at the measured position q, at rest (an episode's start)."""
        q_cmd = self.targets.hold(q)
        self.limiter.reset(q_cmd)
        return q_cmd

    def step(self, q: np.ndarray, a: np.ndarray | None, delta: bool = True, fixed_sel=None, fixed=None) -> np.ndarray:
        """The set-point to send after action `a` at measured q (None: hold where the robot is).
        `fixed[fixed_sel]`: targets of joints outside the action, set by the task."""
        cmd = self.targets.hold(q) if a is None else self.targets.apply(q, a, delta)
        if fixed is not None:
            cmd[fixed_sel] = self.targets.q_cmd[fixed_sel] = fixed[fixed_sel]
        return self.limiter.enforce(q, cmd)

    def correct(self, setpoint: np.ndarray, setpoint_step: np.ndarray, since=()) -> None:
        """The robot's limiter reported the set-point it sent (and its step) for a command of ours:
        this model continues from there, stepped again for the commands sent since (`since`:
        (measured q, targets) pairs, oldest first). The robot's limiter paces from its own
        reading of the robot and starts again from the measured state after a gap, so a model
        run open loop in another process drifts from it."""
        lim = self.limiter
        lim.ref, lim.dref = np.array(setpoint, float), np.array(setpoint_step, float)
        for q, cmd in since:
            lim.enforce(q, cmd)

    @property
    def q_cmd(self) -> np.ndarray | None:
        return self.targets.q_cmd

    @property
    def setpoint(self) -> np.ndarray | None:
        return self.limiter.ref

    @property
    def setpoint_step(self) -> np.ndarray | None:
        return self.limiter.dref


class JointLimiter:
    """Position and velocity commands made feasible for joints with these limits.

    `period`: the control period the commands come at. `max_step`: the most a position set-point
    moves per period (also bounded by velocity x period). `margin`: how far inside the position
    limits commands aim (per joint at most a quarter of its range). `horizon`: how long a velocity
    command may stay in force (until the next one or a hold); it must not reach a limit meanwhile.
    """

    def __init__(self, lower, upper, max_velocity, max_acceleration, period: float, *,
                 max_step: float | None = None, margin: float = 0.0, horizon: float | None = None):
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.period = T = float(period)
        m = np.minimum(margin, 0.25 * (self.upper - self.lower))
        self.lower_soft, self.upper_soft = self.lower + m, self.upper - m
        self.vmax = np.asarray(max_velocity, float)
        self.accel = np.broadcast_to(np.asarray(max_acceleration, float), self.vmax.shape).copy()
        self.max_step = self.vmax * T if max_step is None else np.minimum(max_step, self.vmax * T)
        # how far a position set-point may lead the measured position: a joint tracking at full
        # speed lags its set-point by about a step, plus its controller's error
        self.lead = 3.0 * self.max_step
        self._two_lead = 2.0 * self.lead
        self.horizon = T if horizon is None else float(horizon)
        self._aT = self.accel * T
        self._aTT = self._aT * T
        self.ref: np.ndarray | None = None     # the last position set-point
        self.dref: np.ndarray | None = None    # ... and its step (speed x period)
        self.target: np.ndarray | None = None  # the last desired position, within the soft limits
        self.vref: np.ndarray | None = None    # velocity mode: where the commanded velocities have led
        self.vcmd: np.ndarray | None = None    # ... the last velocity sent, and when
        self.vtime = 0.0

    @classmethod
    def for_robot(cls, spec, safety, names=None) -> "JointLimiter":
        """The limiter the safety layer applies to a robot: `spec` a DriverSpec (limits, rate),
        `safety` its config's safety section; `names` a subset of the spec's joints, in their
        order (default: all)."""
        idx = list(range(spec.n_joints)) if names is None else [spec.joint_names.index(n) for n in names]
        T = spec.period
        scale = safety.velocity_scale
        return cls(spec.lower[idx], spec.upper[idx], spec.max_velocity[idx] * scale,
                   spec.max_acceleration[idx] * scale, T, max_step=safety.max_position_step,
                   margin=safety.limit_margin, horizon=safety.watchdog_periods * T + T)

    @property
    def soft_limits(self) -> tuple[np.ndarray, np.ndarray]:
        return self.lower_soft, self.upper_soft

    def reset(self, q, qd=None) -> None:
        """Start again from the measured position q (and speed qd; None: at rest)."""
        q = np.asarray(q, float)
        # the next set-point is at most one step from q; from q outside the limits by up to a
        # step, that step is toward the limits and ends within them (further out: at the limit)
        self.ref = np.minimum(np.maximum(q, self.lower - self.max_step), self.upper + self.max_step)
        self.vref = q.copy()
        self.dref = np.zeros(len(self.lower)) if qd is None else \
            np.minimum(np.maximum(np.asarray(qd, float) * self.period, -self.max_step), self.max_step)
        self.vcmd = None

    # ------------------------------------------------------------------ position set-points
    def enforce(self, current: np.ndarray, desired: np.ndarray) -> np.ndarray:
        """The set-point to send this period toward `desired`, given the measured position
        `current`. `target` is then `desired` within the soft limits (the caller may compare the
        three to count what was limited).

        The set-point moves like a joint may: toward the target no faster than it can stop there
        (so never past a target that holds still) and at most one step a period; its speed changes
        by at most a T per period (a set-point jumping from rest to full speed throws the
        neighbouring links, whose controllers then overshoot their own limits); toward a soft limit
        no faster than it can stop within it, which wins over the rest; no further from the measured
        position than `lead`; and never outside the limits, which wins over everything."""
        if self.ref is None:
            self.reset(current)
        lo, hi, ref = self.lower_soft, self.upper_soft, self.ref
        out = np.minimum(np.maximum(desired, lo), hi)
        want = out - ref
        # the reaches to the target, the lower and the upper soft limit in one call (hot path)
        reach, down, up = self.setpoint_reach(np.stack((np.abs(want), ref - lo, hi - ref)))
        step = np.minimum(np.maximum(want, -reach), reach)
        dprev, aTT = self.dref, self._aTT
        step = np.minimum(np.maximum(step, dprev - aTT), dprev + aTT)
        step = np.minimum(np.maximum(step, -down), up)
        # a joint that cannot follow (effort-limited, dragged by its neighbours) is not pulled
        # after a set-point running away from it, to overshoot when it catches up
        behind = current - self.lead - ref          # the lowest set-point allowed, less ref
        step = np.minimum(np.maximum(step, np.minimum(behind, 0.0)), np.maximum(behind + self._two_lead, 0.0))
        # ref is within one step of the limits; a set-point pulled back inside keeps the planned
        # speed, not the jump
        stepped = np.minimum(np.maximum(ref + step, self.lower), self.upper)
        self.ref, self.dref, self.target = stepped, step, out
        return stepped

    # ------------------------------------------------------------------ velocity commands
    def enforce_velocity(self, desired: np.ndarray, q: np.ndarray, qd: np.ndarray,
                         now: float) -> tuple[np.ndarray, bool, bool]:
        """The velocity to command now toward `desired`, given the measured q and qd at time `now`
        (seconds, any monotonic clock): (velocity, beyond the velocity or acceleration limit,
        braked for a soft limit)."""
        if self.vref is None:
            self.reset(q, qd)
        vmax = self.vmax
        vref = self.vref
        if self.vcmd is not None:
            # the driver integrates the last velocity for as long as it is in force (what a
            # velocity-tracking controller does; for one that does not, the measured q leads)
            vref += self.vcmd * (now - self.vtime)
        # speed changes by at most a T per period, so that a tracking controller keeps up with the
        # reference instead of lagging and overshooting
        base = self.vcmd if self.vcmd is not None else np.minimum(np.maximum(qd, -vmax), vmax)
        aT = self._aT
        limited = np.minimum(np.maximum(desired, np.maximum(base - aT, -vmax)), np.minimum(base + aT, vmax))
        lo, hi = self.lower_soft, self.upper_soft
        up = self.braking_speed(hi - np.maximum(q, vref))
        down = self.braking_speed(np.minimum(q, vref) - lo)
        # a joint measured faster than its braking speed (its controller lags or leads the
        # reference) is asked for less by as much as it exceeds it, so that it brakes harder
        up = np.maximum(up - np.maximum(qd - up, 0.0), -vmax)
        down = np.maximum(down - np.maximum(-qd - down, 0.0), -vmax)
        out = np.minimum(np.maximum(limited, -down), up)
        self.vcmd, self.vtime = out, now
        return out, not np.array_equal(limited, desired), not np.array_equal(out, limited)

    # ------------------------------------------------------------------ the braking-distance rule
    def setpoint_reach(self, d: np.ndarray) -> np.ndarray:
        """The largest step a position set-point may take toward a point `d` away and still stop
        there with its step shrinking by at most a T^2 a period; at most one step (`max_step`).
        Stepping s, s - aT^2, s - 2 aT^2, ... covers at least s^2 / (2 aT^2) + s / 2 and at most
        aT^2 / 8 more, so s solves that for d - aT^2 / 8; a point within aT^2 is reached exactly,
        in one step."""
        d = np.maximum(d, 0.0)
        aTT = self._aTT
        h, e = 0.5 * aTT, np.maximum(d - 0.125 * aTT, 0.0)
        s = 4.0 * h * e / (np.sqrt(h * h + 4.0 * h * e) + h)      # sqrt(h^2 + 4 h e) - h, without cancellation
        return np.minimum(np.maximum(s, np.minimum(d, aTT)), self.max_step)

    def stop_speed(self, d: np.ndarray, accel: np.ndarray | None = None) -> np.ndarray:
        """The fastest a joint `d` from a point can move toward it and still stop there at the
        deceleration a (default: the planned one), after this period's motion:
        v <= sqrt(2 a (d - v T)). 0 at or past it."""
        d = np.maximum(d, 0.0)
        a = self.accel if accel is None else accel
        aT, two_ad = a * self.period, 2.0 * a * d   # sqrt((aT)^2 + 2 a d) - aT, without cancellation
        return two_ad / (np.sqrt(aT * aT + two_ad) + aT)

    def braking_speed(self, d: np.ndarray) -> np.ndarray:
        """The fastest a velocity or effort command may move a joint toward a limit `d` away: it
        can still stop within the limit (`stop_speed`), and a command in force for the whole
        horizon does not reach it (v <= d / horizon); never above the velocity limit. 0 at or past it."""
        return np.minimum(np.minimum(self.stop_speed(d), np.maximum(d, 0.0) / self.horizon), self.vmax)
