"""What the safety layer does to a well-formed command (`drivers.safety.SafetyLayer`): the joint
order, position limits and per-step delta (`s2r.core.joint_limiter.JointLimiter`), the
braking-distance rule for velocity and effort commands, the effort limiter with its learned
per-joint gains, and the speed stop (`_outside_speed_envelope`). The limit vectors are computed
once per connect (`_cache_limits`): all of this runs on every command."""
from __future__ import annotations

import numpy as np

from s2r.core.joint_limiter import JointLimiter
from s2r.core.types import CommandMode

from .safety_types import excerpt

# Every command plans with each joint's planned acceleration a (`DriverSpec.max_acceleration`: the
# config's `limits.acceleration`, else velocity / s2r.core.types.BRAKE_TIME), speeding up and braking; the sim
# driver's stop (`hold`) brakes at this rate too. Braking distance from full speed: v_max^2 / (2 a).
# Effort mode: each joint's acceleration per unit effort change is learned from the response to
# effort changes (`_learn_gain`). Until then its high estimate is _GAIN_PRIOR times the gain that
# would take the joint from rest to its velocity limit in one period at its effort limit (a first
# push is small) and its low estimate that gain over _GAIN_PRIOR.
_GAIN_PRIOR = 10.0
_GAIN_RISE = 0.3
_GAIN_DECAY = 0.1


class CommandLimits:
    """Mixin of `SafetyLayer`: the limits a command is clamped to and the speed stop. It works on
    the layer's spec, config and counters, and its last state (`_fresh_state`)."""

    def _cache_limits(self) -> None:
        """Limit vectors, computed once per connect (this runs on every command)."""
        self._spec = spec = self.spec
        cfg = self.cfg
        self._modes = frozenset(spec.modes)
        self._names = tuple(spec.joint_names)
        self._name_set = frozenset(self._names)
        self._lo, self._hi, self._period = spec.lower, spec.upper, spec.period
        self._unclamped = np.zeros(self._lo.shape, bool)       # `WriteResult.clamped` of every unchanged command
        self._unclamped.setflags(write=False)
        self._vmax = spec.max_velocity * cfg.velocity_scale
        self._emax = spec.max_effort * cfg.effort_scale
        self._wd_timeout = cfg.watchdog_periods * self._period
        # a velocity or effort command stays in force until the next one or the watchdog's hold
        # (the watchdog checks once a period, so its hold may come up to a period after the timeout)
        # (the limiter's `horizon`, which a late watchdog lengthens: `_check_watchdog`)
        self._lim = lim = JointLimiter.for_robot(spec, cfg)   # the tasks and policy_node build the same
        self._lo_s, self._hi_s = lim.soft_limits
        m = self._lo_s - self._lo
        self._lo_m, self._hi_m = self._lo + 0.75 * m, self._hi - 0.75 * m   # a quarter into the margin
        self._brake_a = lim.accel
        self._brake_aT = self._brake_a * self._period
        self._rest = 0.05 * self._vmax          # slower than this, a joint counts as at rest
        # the speed stop's tolerance on the velocity limit `velocity_scale` allows; in position
        # mode on the robot's own (a servo catching up with its set-point overshoots the set-point's
        # speed by 10-15 %, and its own position loop bounds it)
        self._cap = 1.1 * self._vmax
        self._cap_position = 1.1 * np.maximum(spec.max_velocity, self._vmax)
        # the speed stop's envelope, both directions at once: toward the upper (+) and lower (-)
        # limit, to the points a quarter into the margin
        self._sign2 = np.array([[1.0], [-1.0]])
        self._lim2 = np.stack((self._hi_m, -self._lo_m))
        self._lim2_hard = np.stack((self._hi, -self._lo))       # position mode's (`_outside_speed_envelope`)
        # the speed stop judges with the robot's planned deceleration (the driver's stop brakes at
        # least at that), not the one `velocity_scale` narrows commands to
        self._stop_a = np.maximum(spec.max_acceleration, self._brake_a)
        self._two_a, self._two_aT = 2.0 * self._stop_a, 2.0 * self._stop_a * self._period
        with np.errstate(divide="ignore", invalid="ignore"):
            g0 = self._vmax / (self._emax * self._period)
        g0 = np.where(np.isfinite(g0) & (g0 > 0), g0, 1.0)
        self._gain = _GAIN_PRIOR * g0
        self._gain_low = g0 / _GAIN_PRIOR
        self._gain_floor = g0 / _GAIN_PRIOR
        self._eff_prev = self._eff_acc = None

    def _name_order(self, names):
        """Index array putting values given in the order of `names` into the robot's joint order
        (None: already in order), or a one-line reason why `names` do not fit. Never raises."""
        try:
            if isinstance(names, (str, bytes)) or not isinstance(names, (tuple, list)):
                return f"names must be a sequence of joint names, not {excerpt(names)}"
            t = tuple(names)
            last, idx = self._order
            if t == last:
                return idx
            if not all(n.__class__ is str for n in t):
                return f"joint names must be strings: {excerpt(t)}"
            if len(t) != len(self._names) or frozenset(t) != self._name_set:
                given = set(t)
                unknown = sorted(given - self._name_set)[:5]
                missing = sorted(self._name_set - given)[:5]
                dup = len(t) - len(given)
                return (f"joint names do not match the robot (unknown: {[excerpt(n) for n in unknown]}, "
                        f"missing: {missing}" + (f", {dup} duplicated" if dup else "") + ")")
            if t == self._names:
                idx = None
            else:
                pos = {n: i for i, n in enumerate(t)}
                idx = np.array([pos[n] for n in self._names])
            self._order = (t, idx)
            return idx
        except Exception as e:
            return f"joint names could not be read ({type(e).__name__})"

    def _clamp(self, mode: CommandMode, v: np.ndarray, now: float) -> tuple[np.ndarray | None, tuple[str, ...]]:
        """The command made safe, and the clamp counters it bumped (empty: unchanged; in
        `CLAMP_CAUSES`' order). (None, ()): the driver failed."""
        clamped = ()
        c = self.counters
        if mode == CommandMode.POSITION:
            # the measured position the set-point may not run away from: the speed stop read it
            # this period
            stepped = self._lim.enforce(self._last_state.q, v)
            # (identical bytes: nothing was clamped, the common case; else compare as numbers)
            if stepped.tobytes() != v.tobytes() and not (stepped == v).all():
                out = self._lim.target
                if not (out == v).all():
                    c.clamped_position += 1
                    clamped = ("clamped_position",)
                if not (stepped == out).all():
                    c.clamped_step += 1
                    clamped += ("clamped_step",)
            return stepped, clamped
        st = self._fresh_state(now)
        if st is None:
            return None, ()
        if mode == CommandMode.VELOCITY:
            out, limited, braked = self._lim.enforce_velocity(v, st.q, st.qd, now)
            if limited:
                c.clamped_velocity += 1
                clamped = ("clamped_velocity",)
            if braked:
                c.braked += 1
                clamped += ("braked",)
            return out, clamped
        # effort
        emax = self._emax
        T, H = self._period, self._lim.horizon
        prev, acc = self._eff_prev, self._eff_acc
        qd = st.qd
        if prev is not None:
            tau0, qd0, t0 = prev
            dt = st.stamp - t0
            if 0.5 * T <= dt <= 2.0 * H:
                a = (qd - qd0) / dt
                if acc is None:           # from a hold: taken as at rest without effort
                    acc = (np.zeros_like(a), np.zeros_like(a))
                self._learn_gain(tau0 - acc[1], a - acc[0])
                acc = self._eff_acc = (a, tau0)
        # The joint's acceleration under effort tau is predicted as g tau + b: g its gain, between
        # the low and high estimates, and b what else moves it (its neighbours' motion, gravity,
        # contact), taken from last period as the part of the measured acceleration that no gain
        # between the estimates explains by the joint's own effort. The effort keeps the speed
        # within [-down, up], the braking speeds from where this period's motion takes the joint
        # (a joint past a soft limit is brought back at the speed it could brake from), at the
        # end of this period and of the horizon the command may stay in force, for every gain
        # between the estimates: speeding up plans with the high one, braking with the low one.
        q_next = st.q + qd * T
        d_up, d_down = self._hi_s - q_next, q_next - self._lo_s
        up = self._lim.braking_speed(d_up) - self._lim.braking_speed(-d_up)
        down = self._lim.braking_speed(d_down) - self._lim.braking_speed(-d_down)
        g_hi, g_lo = self._gain, self._gain_low
        if acc is not None:
            a0, t_a = acc
            e1, e2 = g_lo * t_a, g_hi * t_a
            b = a0 - np.minimum(np.maximum(a0, np.minimum(e1, e2)), np.maximum(e1, e2))
        else:
            b = 0.0
        tau_hi = tau_lo = None
        for h in (T, H):
            base = qd + b * h
            gap_hi, gap_lo = up - base, -down - base
            hi_h = gap_hi / (np.where(gap_hi >= 0.0, g_hi, g_lo) * h)
            lo_h = gap_lo / (np.where(gap_lo <= 0.0, g_hi, g_lo) * h)
            tau_hi = hi_h if tau_hi is None else np.minimum(tau_hi, hi_h)
            tau_lo = lo_h if tau_lo is None else np.maximum(tau_lo, lo_h)
        limited = np.minimum(np.maximum(v, -emax), emax)
        tau_lo = np.minimum(np.maximum(tau_lo, -emax), emax)
        tau_hi = np.minimum(np.maximum(tau_hi, -emax), emax)
        # Where the gain's uncertainty makes the two bounds conflict (no effort gets the speed
        # into the window for every gain), the smaller effort wins: it brakes (or brings a joint
        # back) as hard as it can without the highest gain throwing the joint past the window's
        # other side. The larger one, sized for the lowest gain, would reverse a joint whose true
        # gain is higher at up to (high / low) times the speed it was meant to remove.
        out = np.where(tau_lo <= tau_hi, np.minimum(np.maximum(limited, tau_lo), tau_hi),
                       np.minimum(np.maximum(tau_hi, 0.0), tau_lo))
        if not np.array_equal(limited, v):
            c.clamped_effort += 1
            clamped = ("clamped_effort",)
        if not np.array_equal(out, limited):
            c.braked += 1
            clamped += ("braked",)
        # The speed stop, one period ahead: where no effort keeps a joint within its speed
        # envelope for every gain between the estimates (braking that only the lowest gain would
        # not manage, a neighbour dragging it), the command is refused and the driver's
        # controlled stop brakes instead, before the joint is out of the envelope.
        base = qd + b * T
        e_lo, e_hi = g_lo * out * T, g_hi * out * T
        up_env, down_env = self._speed_envelope(q_next, rest_in_margin=False)
        self._effort_unsafe = self._speed_excess(base + np.maximum(e_lo, e_hi), base + np.minimum(e_lo, e_hi),
                                                 up_env, down_env, "would move")
        self._eff_prev = (out, qd, st.stamp)
        return out, clamped

    def _outside_speed_envelope(self, now: float, mode: CommandMode) -> str | None:
        """The speed-monitoring stop, in every mode: "" while every joint moves within its speed
        envelope (`_speed_envelope`); else why not, and the command is refused with a hold (the
        driver's stop, which brakes from the motion). Commands keep joints
        inside the envelope (set-points and velocities obey the braking-distance rule, efforts
        the limiter in `_clamp`); what they cannot foresee ends here: a neighbour dragging a joint
        past its set-point, a controller that cannot follow, an unmodelled load. In position mode
        the envelope reaches to the limits themselves: a joint catching up with a set-point that
        brakes into the soft limit (a servo's tracking lag) moves faster than the set-point at the
        same place, and its own position loop, not the planned deceleration, stops it there.
        None: the driver could not be read."""
        st = self._fresh_state(now)
        if st is None:
            return None
        qd = st.qd
        if np.less_equal(np.abs(qd), self._rest).all():          # at rest: within any envelope
            return ""
        # the envelope test without square roots (hot path): a speed v >= 0 toward a point d
        # away exceeds `JointLimiter.stop_speed(d)` exactly when v (v + 2 a T) > 2 a d
        position = mode is CommandMode.POSITION
        points, cap = (self._lim2_hard, self._cap_position) if position else (self._lim2, self._cap)
        v, d = self._sign2 * qd, points - self._sign2 * st.q
        fast = (v > self._rest) & ((v > cap) | (v * (v + self._two_aT) > self._two_a * d))
        if not fast.any():
            return ""
        up, down = self._speed_envelope(st.q, points=points, cap=cap)
        return self._speed_excess(qd, qd, up, down, "moves")

    def _speed_envelope(self, q: np.ndarray, rest_in_margin: bool = True, points: np.ndarray | None = None,
                        cap: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(up, down): the fastest each joint at q may move toward its upper / lower limit: the
        speed from which it stops a quarter into the margin at the planned deceleration (the
        rest is room for the stop's own tracking error), and at most its velocity limit
        plus 10 %. A joint slower than 5 % of its velocity limit counts as at rest (sensor
        noise, a joint settling) -- within the soft limits only where `rest_in_margin` is
        False (a prediction has no noise, and a joint in the margin must not crawl out)."""
        d = (self._lim2 if points is None else points) - self._sign2 * q    # to the upper, the lower point
        v = np.minimum(self._lim.stop_speed(d, self._stop_a), self._cap if cap is None else cap)
        rest = self._rest
        if not rest_in_margin:
            rest = np.where(d > self._hi_m - self._hi_s, rest, 0.0)          # inside the soft limit
        v = np.maximum(v, rest)
        return v[0], v[1]

    def _speed_excess(self, v_up: np.ndarray, v_down: np.ndarray, up: np.ndarray, down: np.ndarray,
                      verb: str) -> str:
        """"" if v_up <= up and -v_down <= down for every joint, else a one-line reason."""
        over = np.maximum(v_up - up, -v_down - down)
        if not (over > 0.0).any():
            return ""
        k = int(np.argmax(over))
        v = v_up[k] if v_up[k] - up[k] >= -v_down[k] - down[k] else v_down[k]
        return (f"{self._names[k]} {verb} at {v:+.3g}, faster than it can stop within its limits "
                f"({up[k] if v > 0 else -down[k]:+.3g})")

    def _learn_gain(self, dtau: np.ndarray, da: np.ndarray) -> None:
        """Update each joint's acceleration per unit effort from the change of its measured
        acceleration `da` between two periods whose efforts differed by `dtau` (what else moves
        the joint cancels out, as far as it changed little in one period). Only an effort change
        that even the low estimate expects to change the speed by >= 1% of the velocity limit per
        period, and that changed the acceleration in its own direction, counts. An observation
        above the high estimate replaces it at once (safe side), lower ones pull it down
        gradually; the low estimate follows observations gradually both ways (one weak response,
        to friction or a contact, must not make braking so hard that it throws the joint the
        other way); neither goes below the floor."""
        g, g_low = self._gain, self._gain_low
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            obs = da / dtau
            informative = (np.abs(g_low * dtau * self._period) >= 0.01 * self._vmax) & (obs > 0.0) & np.isfinite(obs)
        if not informative.any():
            return
        high = np.where(obs > g, obs, g + _GAIN_DECAY * (obs - g))
        low = g_low + _GAIN_RISE * (obs - g_low)
        self._gain = np.maximum(np.where(informative, high, g), self._gain_floor)
        self._gain_low = np.maximum(np.minimum(np.where(informative, low, g_low), self._gain), self._gain_floor)
