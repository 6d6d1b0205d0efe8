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
Every event is counted (`counters`) and logged (rate-limited); `write` returns a `WriteResult`
(what was sent and clamped, or why it was refused, and the counter it bumped). `write`, `hold`,
`estop`, `enable` and `reset` never raise: any exception from the wrapped driver (third-party
drivers raise anything) is a driver fault, named in one line. `read` raises `DriverFault` (and latches the
fault) when the driver cannot give a trustworthy state, so that a control loop stops planning on
stale data: loops catch it and hold/report, as the ROS driver node does. Every state change goes
through `_set_state`, which keeps the latches: `reset()` is the only way out of a fault (a
disconnect keeps it latched), `enable()` or `reset()` the only ways out of an e-stop.
"""
from __future__ import annotations

import logging
import math
import threading

import numpy as np

from s2r.core.joint_limiter import JointLimiter
from s2r.core.types import Command, CommandMode, DriverSpec, RobotState, real_values

from .base import Driver, DriverFault
from .safety_actions import SafetyActions
from .safety_limits import CommandLimits
from .safety_types import (DISABLED, DISCONNECTED, ENABLED, ESTOP, FAULT, HOLDING, SafetyCounters, WriteResult,
                           all_finite, excerpt, one_line, refused_result, sent_result)

log = logging.getLogger("s2r.safety")

_MODE_OF = {m.value: m for m in CommandMode}
_F64 = np.dtype(float)


class SafetyLayer(SafetyActions, CommandLimits, Driver):
    """Wraps a driver: every command validated, clamped and forwarded, the robot held on every
    refusal, watchdog trip and e-stop (see the module docstring). The parts: this class (the Driver
    interface, the write path, reading and holding), `SafetyActions` (e-stop, enable, reset, the
    watchdog, the latches) and `CommandLimits` (the limits, the effort limiter, the speed stop)."""

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
                log.warning("driver disconnect failed: %s", one_line(e))
            self.state = DISCONNECTED     # always allowed; a fault reason stays latched

    def read(self) -> RobotState:
        with self._lock:
            if self.state == DISCONNECTED:
                raise DriverFault("not connected")
            try:
                now = self._check_watchdog()
            except Exception as e:          # the driver's clock
                self._enter_fault(one_line(e))
                raise DriverFault(self.fault_reason) from None
            st = self._read_driver(now)
            if st is None:
                raise DriverFault(self.fault_reason)
            return st

    def write(self, command: Command) -> WriteResult:
        """Validate, clamp and forward one command. Returns a `WriteResult`: what was sent and
        what the limits changed, or why it was refused; as a string "ok", "clamped" or
        "rejected: <why>". Never raises: an exception from the driver (or anywhere in here) is a
        driver fault."""
        with self._lock:
            try:
                return self._write(command)
            except Exception as e:
                self._enter_fault(f"safety layer: {one_line(e)}")
                return self._faulted()

    def _write(self, command) -> WriteResult:
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
            return self._reject("rejected_malformed", f"not a Command: {excerpt(command)}")
        # the fields are checked here, not trusted from Command's constructor: they may have been
        # changed since. Fast paths first: this runs on every command.
        if mode.__class__ is not CommandMode:
            try:
                mode = _MODE_OF.get(mode, mode)      # a mode given as its name
            except TypeError:                        # unhashable
                pass
        if mode.__class__ is not CommandMode or mode not in self._modes:
            shown = mode.value if mode.__class__ is CommandMode else excerpt(mode)
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
        if not all_finite(values):
            return self._reject("rejected_nonfinite", "command contains NaN or inf")
        if stamp is not None:
            if stamp.__class__ is not float:
                try:
                    if isinstance(stamp, (bool, np.bool_)) or not isinstance(stamp, (int, float, np.integer, np.floating)):
                        raise TypeError
                    stamp = float(stamp)
                except (TypeError, OverflowError):
                    return self._reject("rejected_malformed", f"stamp {excerpt(stamp)} is not a time in seconds")
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
            return self._faulted()
        why = self._outside_speed_envelope(now, mode)
        if why is None:
            return self._faulted()
        if why:
            return self._reject("rejected_speed", why)
        safe, clamps = self._clamp(mode, values, now)
        if safe is None:
            return self._faulted()
        if mode is CommandMode.EFFORT and self._effort_unsafe:
            return self._reject("rejected_speed", self._effort_unsafe)
        try:
            self.driver.write(Command.trusted(mode, safe))
        except Exception as e:
            self._enter_fault(one_line(e))
            return self._faulted()
        self._mode = mode
        self._last_cmd_time = now
        self._set_state(ENABLED)
        c.accepted += 1
        if not clamps:
            return sent_result(safe, self._unclamped)
        return sent_result(safe, safe != values, clamps)

    def hold(self) -> None:
        with self._lock:
            if self.state in (DISCONNECTED, FAULT):
                return
            if self._hold_measured() and self.state == ENABLED:
                self._set_state(HOLDING)

    @property
    def position_setpoint(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The last position set-point the limiter sent and its step (rad per period), copies;
        None before the first. A controller that models the limiter (policy_node) corrects its
        model with these: the limiter here paces from its own reading of the robot and rebases
        after gaps, which a model in another process cannot foresee."""
        with self._lock:
            lim = self._lim
            if lim is None or lim.ref is None or lim.dref is None:
                return None
            return lim.ref.copy(), lim.dref.copy()

    @property
    def status(self) -> dict:
        with self._lock:
            age = None if self._last_cmd_time is None else self.driver.clock() - self._last_cmd_time
            return {"state": self.state, "backend": self.backend, "fallback": self.fallback,
                    "fault": self.fault_reason, "last_command_age_s": age, **self.counters.as_dict(),
                    "driver_stats": dict(self.driver.stats)}

    # ------------------------------------------------------------------ reading and holding
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
            self._enter_fault(one_line(e))
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
                    and all_finite(q, qd) and math.isfinite(st.stamp))
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
            self._enter_fault(one_line(e))
            return False
        st = self._read_driver()
        if st is None:
            return False
        self._rebase_on(st.q)
        self._mode = None
        return True

    def _faulted(self) -> WriteResult:
        """The refusal of a command that met a driver fault (`_enter_fault` counted it)."""
        return refused_result("driver_faults", f"driver fault: {self.fault_reason}")

    def _reject(self, key: str, why: str, hold: bool = True) -> WriteResult:
        setattr(self.counters, key, getattr(self.counters, key) + 1)
        self._log(key, f"command refused: {why}" + ("; holding" if hold else ""))
        if hold:
            self._last_cmd_time = None
            if self._hold_measured() and self.state == ENABLED:
                self._set_state(HOLDING)
        return refused_result(key, why)

    def _log(self, key: str, msg: str) -> None:
        n = self._logged.get(key, 0) + 1
        self._logged[key] = n
        if n == 1 or n % 100 == 0:
            log.warning("%s%s", msg, f" ({n} times)" if n > 1 else "")
