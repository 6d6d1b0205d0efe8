"""The safety layer: wraps every driver, always. Nothing reaches a robot except through here.

Per command: refuse (and hold) what is malformed -- unsupported mode, fields of the wrong type
(values that are not real numbers, a stamp that is not a finite time), wrong length, unknown joint
names, NaN/inf, stale; clamp what is merely too big -- position limits, a per-step position delta
(at most `max_position_step` and the velocity limit times the period), velocity and effort
limits; then write. Commands aim at soft limits `limit_margin` inside the configured position
limits (position set-points are clamped to them, velocity and effort commands brake to them): the
margin is room for a tracking controller's overshoot and for motion a joint's neighbours impose
on it, so that the measured position stays within the configured limits. A joint inside the
margin (or outside the limits) is moved inward, never outward. Velocity and effort commands obey
a braking-distance rule (`s2r.core.joint_limiter`): no joint approaches a soft limit faster than it can
stop within it, and effort that would drive a joint past that speed (or its velocity limit) is
cut to what keeps it there, braking if needed; the effort needed is predicted from the
acceleration measured last period, so whatever else moves the joint is accounted for. Position
set-points also stay within a few steps of the measured position (`JointLimiter.lead`), so that a joint that
cannot follow is not pulled after a set-point running away from it. In every mode a speed stop
(`_outside_speed_envelope`) refuses the command and holds while a joint moves toward a limit
faster than it can stop a quarter into the margin (at the limit in position mode; in effort mode,
also when the effort would take it there): what commands cannot foresee -- a neighbour's whip, a controller that lags --
is handed to the driver's stop. Every mode switch, the first command after a hold and a position
command after a gap in the stream rebase the position step clamp (and the velocity reference) on
a fresh reading, so the first command starts where the robot is and how fast it moves.
Around commands: a watchdog on the driver's steady clock holds the robot when commands stop for
`watchdog_periods` control periods; a latched e-stop; re-enable and reset start by holding the
measured position, so the first command afterwards is delta-clamped from where the robot is.
A hold is the driver's: it stops the robot and holds it (the sim and Dynamixel drivers stop
under control, from the motion, at least at the planned deceleration).
Every event is counted (`counters`) and logged (rate-limited). `write`, `hold`, `estop`, `enable`
and `reset` never raise: any exception from the wrapped driver (third-party drivers raise
anything) is a driver fault, named in one line. `read` raises `DriverFault` (and latches the
fault) when the driver cannot give a trustworthy state, so that a control loop stops planning on
stale data: loops catch it and hold/report, as the ROS driver node does. Every state change goes
through `_set_state`, which keeps the latches: `reset()` is the only way out of a fault (a
disconnect keeps it latched), `enable()` or `reset()` the only ways out of an e-stop.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import asdict, dataclass

import numpy as np

from s2r.core.joint_limiter import JointLimiter

from .base import Driver, DriverError, DriverFault
from s2r.core.types import Command, CommandMode, DriverSpec, RobotState, real_values

log = logging.getLogger("s2r.safety")

ENABLED, HOLDING, DISABLED, ESTOP, FAULT, DISCONNECTED = (
    "enabled", "holding", "disabled", "estop", "fault", "disconnected")

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
_MODE_OF = {m.value: m for m in CommandMode}
_F64 = np.dtype(float)


@dataclass
class SafetyCounters:
    commands: int = 0
    accepted: int = 0
    rejected_mode: int = 0
    rejected_malformed: int = 0      # a field of the wrong type: values not real numbers, a bad stamp
    rejected_speed: int = 0          # a joint outside its speed envelope (held)
    rejected_names: int = 0
    rejected_shape: int = 0
    rejected_nonfinite: int = 0
    rejected_stale: int = 0
    rejected_estop: int = 0
    rejected_disabled: int = 0
    rejected_fault: int = 0
    clamped_position: int = 0
    clamped_step: int = 0
    clamped_velocity: int = 0
    clamped_effort: int = 0
    braked: int = 0                  # velocity/effort commands cut by the braking-distance rule
    watchdog_trips: int = 0
    estops: int = 0
    driver_faults: int = 0
    bad_states: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def rejected(self) -> int:
        return sum(v for k, v in asdict(self).items() if k.startswith("rejected_"))


class SafetyLayer(Driver):
    def __init__(self, driver: Driver, config, *, backend: str | None = None, fallback: bool = False):
        self.driver = driver
        self.cfg = config
        self.backend = backend or driver.name
        self.fallback = fallback
        self.counters = SafetyCounters()
        self.state = DISCONNECTED
        self.fault_reason = ""
        self._lock = threading.RLock()
        self._lim: JointLimiter | None = None      # position and velocity limits, per connect
        self._mode: CommandMode | None = None      # the driver's mode: of the last command; None after a hold (rebase)
        self._eff_prev: tuple | None = None         # effort mode: (effort sent, qd, stamp of the state it used)
        self._eff_acc: tuple | None = None          # ... (acceleration last measured, the effort that caused it)
        self._order: tuple = ((), None)            # last `names` order seen and its index array
        self._effort_unsafe = ""                   # effort mode: why the last clamped effort is unsafe, if it is
        self._last_state: RobotState | None = None
        self._last_cmd_time: float | None = None
        self._wd_thread: threading.Thread | None = None
        self._wd_stop = threading.Event()
        self._logged: dict[str, int] = {}
        self.last_watchdog_age: float | None = None    # command age when the watchdog last fired

    # ------------------------------------------------------------------ Driver interface
    name = "safety"

    @property
    def spec(self) -> DriverSpec:
        return self.driver.spec

    @property
    def connected(self) -> bool:
        return self.state != DISCONNECTED

    def clock(self) -> float:
        return self.driver.clock()

    @property
    def soft_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) that commands aim at: the position limits less each joint's margin
        (`safety.limit_margin`, at most a quarter of the joint's range). Valid once connected."""
        return self._lo_s.copy(), self._hi_s.copy()

    @property
    def watchdog_timeout(self) -> float:
        return self.cfg.watchdog_periods * self.spec.period

    def connect(self) -> None:
        with self._lock:
            if self.state != DISCONNECTED:
                return
            self.driver.connect()
            self._cache_limits()
            if self.fault_reason:
                # a fault latched before a disconnect stays latched: reset() is the only way out
                self._set_state(FAULT, by="connect")
                self._hold_measured()
                return
            self._set_state(ENABLED, by="connect")
            self._hold_measured()        # a driver that cannot hold or be read enters FAULT here

    def disconnect(self) -> None:
        self.stop_watchdog()
        with self._lock:
            if self.state == DISCONNECTED:
                return
            try:
                self.driver.disconnect()
            except Exception as e:
                log.warning("driver disconnect failed: %s", _one_line(e))
            self.state = DISCONNECTED     # always allowed; a fault reason stays latched

    def read(self) -> RobotState:
        with self._lock:
            if self.state == DISCONNECTED:
                raise DriverFault("not connected")
            try:
                now = self._check_watchdog()
            except Exception as e:          # the driver's clock
                self._enter_fault(_one_line(e))
                raise DriverFault(self.fault_reason) from None
            st = self._read_driver(now)
            if st is None:
                raise DriverFault(self.fault_reason)
            return st

    def write(self, command: Command) -> str:
        """Validate, clamp and forward one command. Returns 'ok', 'clamped' or 'rejected: <why>'.
        Never raises: an exception from the driver (or anywhere in here) is a driver fault."""
        with self._lock:
            try:
                return self._write(command)
            except Exception as e:
                self._enter_fault(f"safety layer: {_one_line(e)}")
                return f"rejected: driver fault: {self.fault_reason}"

    def _write(self, command) -> str:
        c = self.counters
        c.commands += 1
        now = self._check_watchdog()
        state = self.state
        if state in (DISCONNECTED, FAULT, ESTOP, DISABLED):
            key = {DISCONNECTED: "rejected_fault", FAULT: "rejected_fault",
                   ESTOP: "rejected_estop", DISABLED: "rejected_disabled"}[state]
            return self._reject(key, f"robot is {state}" + (f": {self.fault_reason}" if self.fault_reason else ""),
                                hold=False)
        try:
            mode, values, names, stamp = command.mode, command.values, command.names, command.stamp
        except Exception:
            return self._reject("rejected_malformed", f"not a Command: {_excerpt(command)}")
        # the fields are checked here, not trusted from Command's constructor: they may have been
        # changed since. Fast paths first: this runs on every command.
        if mode.__class__ is not CommandMode:
            try:
                mode = _MODE_OF.get(mode, mode)      # a mode given as its name
            except TypeError:                        # unhashable
                pass
        if mode.__class__ is not CommandMode or mode not in self._modes:
            shown = mode.value if mode.__class__ is CommandMode else _excerpt(mode)
            return self._reject("rejected_mode", f"mode {shown} not supported "
                                f"(supported: {', '.join(sorted(m.value for m in self._modes))})")
        if values.__class__ is not np.ndarray or values.dtype is not _F64:
            values, why = real_values(values)
            if why:
                return self._reject("rejected_malformed", why)
        if values.shape != self._lo.shape:
            return self._reject("rejected_shape", f"expected {self._lo.size} values, got shape {values.shape}")
        if names is not None and names is not self._names:
            order = self._name_order(names)
            if order.__class__ is str:
                return self._reject("rejected_names", order)
            if order is not None:
                values = values[order]
        if not _all_finite(values):
            return self._reject("rejected_nonfinite", "command contains NaN or inf")
        if stamp is not None:
            if stamp.__class__ is not float:
                try:
                    if isinstance(stamp, (bool, np.bool_)) or not isinstance(stamp, (int, float, np.integer, np.floating)):
                        raise TypeError
                    stamp = float(stamp)
                except (TypeError, OverflowError):
                    return self._reject("rejected_malformed", f"stamp {_excerpt(stamp)} is not a time in seconds")
            if not math.isfinite(stamp):
                return self._reject("rejected_malformed", f"stamp {stamp} is not finite")
            age = now - stamp
            if age > self._wd_timeout:
                return self._reject("rejected_stale", f"command is {age:.3g} s old")
            if age < -self._wd_timeout:
                return self._reject("rejected_stale", f"command stamp is {-age:.3g} s ahead of the driver clock")

        # a mode switch, the first command after a hold, and a position command after a gap in
        # the stream start from the measured state: what the robot did meanwhile (held the last
        # set-point, stopped under control) is the driver's, and unknown here
        last = self._last_cmd_time
        gap = mode is CommandMode.POSITION and (last is None or now - last > 1.5 * self._period)
        if (mode is not self._mode or gap) and not self._rebase(now):
            return f"rejected: driver fault: {self.fault_reason}"
        why = self._outside_speed_envelope(now, mode)
        if why is None:
            return f"rejected: driver fault: {self.fault_reason}"
        if why:
            return self._reject("rejected_speed", why)
        safe, clamped = self._clamp(mode, values, now)
        if safe is None:
            return f"rejected: driver fault: {self.fault_reason}"
        if mode is CommandMode.EFFORT and self._effort_unsafe:
            return self._reject("rejected_speed", self._effort_unsafe)
        try:
            self.driver.write(Command.trusted(mode, safe))
        except Exception as e:
            self._enter_fault(_one_line(e))
            return f"rejected: driver fault: {self.fault_reason}"
        self._mode = mode
        self._last_cmd_time = now
        self._set_state(ENABLED)
        c.accepted += 1
        return "clamped" if clamped else "ok"

    def hold(self) -> None:
        with self._lock:
            if self.state in (DISCONNECTED, FAULT):
                return
            if self._hold_measured() and self.state == ENABLED:
                self._set_state(HOLDING)

    # ------------------------------------------------------------------ safety actions
    def estop(self) -> None:
        """Latched stop: the robot holds, every command is refused until `enable()`."""
        with self._lock:
            self.counters.estops += 1
            log.error("E-STOP: robot holding; commands refused until re-enabled")
            if self.state not in (DISCONNECTED, FAULT) and self._hold_measured():
                self._set_state(ESTOP)       # a hold that failed left FAULT, the stronger latch

    def enable(self, on: bool = True) -> tuple[bool, str]:
        """Re-enable (after e-stop, watchdog or disable) by holding the measured position; or disable."""
        with self._lock:
            if self.state == DISCONNECTED:
                return False, "not connected"
            if self.state == FAULT:
                return False, f"driver fault, reset first: {self.fault_reason}"
            if not self._hold_measured():
                return False, f"driver fault while holding, reset first: {self.fault_reason}"
            self._set_state(ENABLED if on else DISABLED, by="enable")
            self._last_cmd_time = None
            return True, "enabled, holding the measured position" if on else "disabled, holding"

    def reset(self) -> tuple[bool, str]:
        """Clear a driver fault and the e-stop latch, then hold the measured position. Never raises."""
        with self._lock:
            try:
                return self._reset()
            except Exception as e:
                self._enter_fault(f"safety layer: {_one_line(e)}")
                return False, f"reset failed: {self.fault_reason}"

    def _reset(self) -> tuple[bool, str]:
        if self.state == DISCONNECTED:
            return False, "not connected"
        try:
            self.driver.reset_fault()
        except Exception as e:
            self._enter_fault(_one_line(e))
            return False, f"reset failed: {self.fault_reason}"
        self._set_state(ENABLED, by="reset")
        self.fault_reason = ""
        if not self._hold_measured():         # enters FAULT again if the driver still fails
            return False, f"reset failed: {self.fault_reason}"
        self._last_cmd_time = None
        return True, "reset, holding the measured position"

    @property
    def status(self) -> dict:
        with self._lock:
            age = None if self._last_cmd_time is None else self.driver.clock() - self._last_cmd_time
            return {"state": self.state, "backend": self.backend, "fallback": self.fallback,
                    "fault": self.fault_reason, "last_command_age_s": age, **self.counters.as_dict(),
                    "driver_stats": dict(self.driver.stats)}

    # ------------------------------------------------------------------ watchdog
    def start_watchdog(self) -> None:
        """Enforce the watchdog from a thread, so the robot holds even if the caller stops calling."""
        if self._wd_thread is not None:
            return
        self._wd_stop.clear()
        self._wd_thread = threading.Thread(target=self._watchdog_loop, name="safety-watchdog", daemon=True)
        self._wd_thread.start()

    def stop_watchdog(self) -> None:
        self._wd_stop.set()
        if self._wd_thread is not None:
            self._wd_thread.join(timeout=1.0)
            self._wd_thread = None

    def _watchdog_loop(self) -> None:
        while not self._wd_stop.is_set():
            try:
                with self._lock:
                    deadline = None if self._last_cmd_time is None or self.state != ENABLED \
                        else self._last_cmd_time + self.watchdog_timeout
                    now = self.driver.clock() if self.state != DISCONNECTED else 0.0
                if deadline is None:
                    self._wd_stop.wait(self.spec.period / 2)
                elif deadline > now:
                    self._wd_stop.wait(deadline - now)
                else:
                    with self._lock:
                        self._check_watchdog()
            except Exception as e:           # the driver's clock or spec: the watchdog must not die silently
                with self._lock:
                    self._enter_fault(f"watchdog: {_one_line(e)}")
                self._wd_stop.wait(0.1)

    def _check_watchdog(self) -> float:
        """Hold if the last command is too old. Returns the driver clock's time."""
        now = self.driver.clock()
        if self.state != ENABLED or self._last_cmd_time is None:
            return now
        age = now - self._last_cmd_time
        if age > self._wd_timeout + 1e-9:
            self.counters.watchdog_trips += 1
            self.last_watchdog_age = age
            # a hold later than planned (a loaded host): velocity and effort commands plan with
            # the lateness seen from now on, up to ten timeouts
            horizon = min(age + self._period, 10.0 * self._wd_timeout)
            if horizon > self._lim.horizon:
                self._lim.horizon = horizon
            self._log("watchdog", f"no command for {age * 1e3:.0f} ms (> {self.watchdog_timeout * 1e3:.0f} ms): holding")
            self._last_cmd_time = None
            if self._hold_measured():
                self._set_state(HOLDING)
        return now

    # ------------------------------------------------------------------ state
    def _set_state(self, new: str, by: str = "") -> bool:
        """The one place the state changes, apart from entering FAULT (`_enter_fault`) and
        `disconnect`. FAULT, ESTOP, DISABLED and DISCONNECTED are latches: only the action named in
        `_LEAVE` (passed as `by`) leaves one, so no other path -- a failed hold inside an e-stop,
        an enable or the watchdog -- can clear a fault. Returns whether the state is now `new`."""
        cur = self.state
        if cur != new and cur in _LEAVE and by not in _LEAVE[cur]:
            return False
        self.state = new
        return True

    def _enter_fault(self, reason: str) -> None:
        self.fault_reason = reason
        if self.state in (FAULT, DISCONNECTED):
            return
        self.counters.driver_faults += 1
        self.state = FAULT
        log.error("driver fault: %s -- commands refused until reset", reason)
        try:
            self.driver.hold()      # best effort: drivers also make themselves safe when they fault
        except Exception as e:
            log.warning("no hold after the fault (%s); the driver's own fault handling applies", _one_line(e))

    # ------------------------------------------------------------------ internals
    def _cache_limits(self) -> None:
        """Limit vectors, computed once per connect (this runs on every command)."""
        self._spec = spec = self.spec
        cfg = self.cfg
        self._modes = frozenset(spec.modes)
        self._names = tuple(spec.joint_names)
        self._name_set = frozenset(self._names)
        self._lo, self._hi, self._period = spec.lower, spec.upper, spec.period
        self._vmax = spec.max_velocity * cfg.velocity_scale
        self._emax = spec.max_effort * cfg.effort_scale
        self._wd_timeout = cfg.watchdog_periods * self._period
        # a velocity or effort command stays in force until the next one or the watchdog's hold
        # (the watchdog checks once a period, so its hold may come up to a period after the timeout)
        # (the limiter's `horizon`, which a late watchdog lengthens: `_check_watchdog`)
        self._lim = lim = JointLimiter(
            self._lo, self._hi, self._vmax, spec.max_acceleration * cfg.velocity_scale, self._period,
            max_step=cfg.max_position_step, margin=cfg.limit_margin, horizon=self._wd_timeout + self._period)
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
                return f"names must be a sequence of joint names, not {_excerpt(names)}"
            t = tuple(names)
            last, idx = self._order
            if t == last:
                return idx
            if not all(n.__class__ is str for n in t):
                return f"joint names must be strings: {_excerpt(t)}"
            if len(t) != len(self._names) or frozenset(t) != self._name_set:
                given = set(t)
                unknown = sorted(given - self._name_set)[:5]
                missing = sorted(self._name_set - given)[:5]
                dup = len(t) - len(given)
                return (f"joint names do not match the robot (unknown: {[_excerpt(n) for n in unknown]}, "
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

    def _clamp(self, mode: CommandMode, v: np.ndarray, now: float) -> tuple[np.ndarray | None, bool]:
        """The command made safe, and whether it was changed. (None, False): the driver failed."""
        clamped = False
        c = self.counters
        if mode == CommandMode.POSITION:
            # the measured position the set-point may not run away from: the speed stop read it
            # this period
            stepped = self._lim.enforce(self._last_state.q, v)
            # (identical bytes: nothing was clamped, the common case; else compare as numbers)
            if stepped.tobytes() != v.tobytes() and not (stepped == v).all():
                clamped = True
                out = self._lim.target
                if not (out == v).all():
                    c.clamped_position += 1
                if not (stepped == out).all():
                    c.clamped_step += 1
            return stepped, clamped
        st = self._fresh_state(now)
        if st is None:
            return None, False
        if mode == CommandMode.VELOCITY:
            out, limited, braked = self._lim.enforce_velocity(v, st.q, st.qd, now)
            if limited:
                c.clamped_velocity += 1
                clamped = True
            if braked:
                c.braked += 1
                clamped = True
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
            clamped = True
        if not np.array_equal(out, limited):
            c.braked += 1
            clamped = True
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

    def _fresh_state(self, now: float) -> RobotState | None:
        """The last state if it is from this period, else one read now (None: the driver failed)."""
        st = self._last_state
        if st is not None and abs(now - st.stamp) <= 0.5 * self._period:
            return st
        return self._read_driver(now)

    def _read_driver(self, now: float | None = None) -> RobotState | None:
        """One state from the driver, checked; on failure FAULT is entered and None returned."""
        try:
            st = self.driver.read()
        except Exception as e:
            self._enter_fault(_one_line(e))
            return None
        if not self._trusted(st):
            self.counters.bad_states += 1
            self._log("bad_state", "driver returned a non-finite or wrongly shaped state; not trusted")
            self._enter_fault("driver returned a non-finite or wrongly shaped state")
            return None
        self._last_state = st
        return st

    def _trusted(self, st) -> bool:
        try:
            q, qd = st.q, st.qd
            return (isinstance(q, np.ndarray) and isinstance(qd, np.ndarray) and q.dtype.kind == "f"
                    and qd.dtype.kind == "f" and q.shape == self._lo.shape and qd.shape == self._lo.shape
                    and _all_finite(q, qd) and math.isfinite(st.stamp))
        except Exception:
            return False

    def _rebase(self, now: float) -> bool:
        """At a mode switch (or the first command after a hold, or a position command after a gap
        in the stream): the position step clamp and the velocity reference start from where the
        robot is, read now. False (FAULT entered) if the driver cannot be read."""
        st = self._read_driver(now)
        if st is None:
            return False
        self._rebase_on(st.q, st.qd)
        return True

    def _rebase_on(self, q: np.ndarray, qd: np.ndarray | None = None) -> None:
        # the set-point's speed: at rest after a hold; at a mode switch or the first command after
        # a hold, the robot's measured speed (a client streaming slower than the watchdog allows
        # would otherwise restart from rest at every command)
        self._lim.reset(q, qd)
        self._eff_prev = self._eff_acc = None

    def _hold_measured(self) -> bool:
        """Hold the measured position and rebase on it. False (and FAULT entered) if the driver
        cannot hold or be read. The robot may still move after a hold (it was moving, it settles),
        so the next command rebases again on a fresh reading (`_mode` None)."""
        try:
            self.driver.hold()
        except Exception as e:
            self._enter_fault(_one_line(e))
            return False
        st = self._read_driver()
        if st is None:
            return False
        self._rebase_on(st.q)
        self._mode = None
        return True

    def _reject(self, key: str, why: str, hold: bool = True) -> str:
        setattr(self.counters, key, getattr(self.counters, key) + 1)
        self._log(key, f"command refused: {why}" + ("; holding" if hold else ""))
        if hold:
            self._last_cmd_time = None
            if self._hold_measured() and self.state == ENABLED:
                self._set_state(HOLDING)
        return f"rejected: {why}"

    def _log(self, key: str, msg: str) -> None:
        n = self._logged.get(key, 0) + 1
        self._logged[key] = n
        if n == 1 or n % 100 == 0:
            log.warning("%s%s", msg, f" ({n} times)" if n > 1 else "")


# which action may leave each latched state (`SafetyLayer._set_state`)
_LEAVE = {FAULT: ("reset",), ESTOP: ("enable", "reset"), DISABLED: ("enable", "reset"),
          DISCONNECTED: ("connect",)}


def _one_line(e: BaseException) -> str:
    """An exception as one bounded line; the type is named unless it is the drivers' own error."""
    try:
        text = " ".join(str(e).split())
    except Exception:
        text = ""
    if not isinstance(e, DriverError):
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    text = text or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _excerpt(x, limit: int = 40) -> str:
    """A bounded repr of a value from a command, for messages."""
    try:
        r = repr(x)
    except Exception:
        r = f"<{type(x).__name__}>"
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _all_finite(*arrays: np.ndarray) -> bool:
    """No NaN or inf in any of the (float) arrays. The sum of squares is finite exactly when every
    element is; scaled by 1e-160 first, so that no finite double overflows it (which warned) and
    tiny values merely underflow to zero. One BLAS call per array instead of two reductions: this
    runs on every state and command."""
    total = 0.0
    for a in arrays:
        s = a * 1e-160
        total += s.dot(s)
    if math.isfinite(total):
        return True
    return all(np.isfinite(a).all() for a in arrays)
