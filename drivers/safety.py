"""The safety layer: wraps every driver, always. Nothing reaches a robot except through here.

Per command: refuse (and hold) what is malformed -- unsupported mode, unknown joint names, wrong
length, NaN/inf, stale; clamp what is merely too big -- position limits, a per-step position
delta (at most `max_position_step` and the velocity limit times the period), velocity and effort
limits (with outward motion at a position limit cut); then write.
Around commands: a watchdog on the driver's steady clock holds the robot when commands stop for
`watchdog_periods` control periods; a latched e-stop; re-enable and reset start by holding the
measured position, so the first command afterwards is delta-clamped from where the robot is.
Every event is counted (`counters`) and logged (rate-limited). `write` never raises; `read`
raises `DriverFault` (and latches the fault) when the driver cannot give a trustworthy state, so
that a control loop stops planning on stale data: loops catch it and hold/report, as the ROS
driver node does. `reset()` is the only way out of a fault.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import asdict, dataclass

import numpy as np

from .base import Driver, DriverError, DriverFault
from .types import Command, CommandMode, DriverSpec, RobotState

log = logging.getLogger("s2r.safety")

ENABLED, HOLDING, DISABLED, ESTOP, FAULT, DISCONNECTED = (
    "enabled", "holding", "disabled", "estop", "fault", "disconnected")


@dataclass
class SafetyCounters:
    commands: int = 0
    accepted: int = 0
    rejected_mode: int = 0
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
        self._ref: np.ndarray | None = None        # position the next position command is delta-clamped from
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
    def watchdog_timeout(self) -> float:
        return self.cfg.watchdog_periods * self.spec.period

    def connect(self) -> None:
        with self._lock:
            if self.state != DISCONNECTED:
                return
            self.driver.connect()
            self._cache_limits()
            self.state = ENABLED
            self._hold_measured()        # a driver that cannot hold or be read enters FAULT here

    def disconnect(self) -> None:
        self.stop_watchdog()
        with self._lock:
            if self.state == DISCONNECTED:
                return
            try:
                self.driver.disconnect()
            except DriverError as e:
                log.warning("driver disconnect failed: %s", e)
            self.state = DISCONNECTED

    def read(self) -> RobotState:
        with self._lock:
            self._check_watchdog()
            try:
                st = self.driver.read()
            except DriverError as e:
                self._enter_fault(str(e))
                raise DriverFault(self.fault_reason) from None
            if st.q.shape != self._lo.shape or st.qd.shape != self._lo.shape or not _all_finite(st.q, st.qd):
                self.counters.bad_states += 1
                self._log("bad_state", "driver returned a non-finite or wrongly shaped state; not trusted")
                self._enter_fault("driver returned a non-finite or wrongly shaped state")
                raise DriverFault(self.fault_reason)
            self._last_state = st
            return st

    def write(self, command: Command) -> str:
        """Validate, clamp and forward one command. Returns 'ok', 'clamped' or 'rejected: <why>'."""
        with self._lock:
            self.counters.commands += 1
            now = self._check_watchdog()
            if self.state in (DISCONNECTED, FAULT, ESTOP, DISABLED):
                key = {DISCONNECTED: "rejected_fault", FAULT: "rejected_fault",
                       ESTOP: "rejected_estop", DISABLED: "rejected_disabled"}[self.state]
                return self._reject(key, f"robot is {self.state}" + (f": {self.fault_reason}" if self.fault_reason else ""),
                                    hold=False)
            spec = self._spec
            mode = command.mode
            if mode not in spec.modes:
                return self._reject("rejected_mode", f"mode {mode.value!r} not supported "
                                    f"(supported: {', '.join(sorted(m.value for m in spec.modes))})")
            values = command.values
            if command.names is not None:
                if sorted(command.names) != sorted(spec.joint_names) or len(command.names) != len(values):
                    unknown = sorted(set(command.names) - set(spec.joint_names))
                    missing = sorted(set(spec.joint_names) - set(command.names))
                    return self._reject("rejected_names", f"joint names do not match the robot "
                                        f"(unknown: {unknown}, missing: {missing})")
                order = {n: i for i, n in enumerate(command.names)}
                values = values[[order[n] for n in spec.joint_names]]
            if values.shape != self._lo.shape:
                return self._reject("rejected_shape", f"expected {spec.n_joints} values, got shape {values.shape}")
            if not _all_finite(values):
                return self._reject("rejected_nonfinite", "command contains NaN or inf")
            if command.stamp is not None and now - command.stamp > self._wd_timeout:
                return self._reject("rejected_stale", f"command is {now - command.stamp:.3f} s old")

            safe, clamped = self._clamp(mode, values)
            try:
                self.driver.write(Command.trusted(mode, safe))
            except DriverError as e:
                self._enter_fault(str(e))
                return f"rejected: driver fault: {e}"
            self._last_cmd_time = now
            self.state = ENABLED
            self.counters.accepted += 1
            return "clamped" if clamped else "ok"

    def hold(self) -> None:
        with self._lock:
            if self.state in (DISCONNECTED, FAULT):
                return
            self._hold_measured()
            if self.state == ENABLED:
                self.state = HOLDING

    # ------------------------------------------------------------------ safety actions
    def estop(self) -> None:
        """Latched stop: the robot holds, every command is refused until `enable()`."""
        with self._lock:
            self.counters.estops += 1
            log.error("E-STOP: robot holding; commands refused until re-enabled")
            if self.state not in (DISCONNECTED, FAULT):
                self._hold_measured()
                self.state = ESTOP

    def enable(self, on: bool = True) -> tuple[bool, str]:
        """Re-enable (after e-stop, watchdog or disable) by holding the measured position; or disable."""
        with self._lock:
            if self.state == DISCONNECTED:
                return False, "not connected"
            if self.state == FAULT:
                return False, f"driver fault, reset first: {self.fault_reason}"
            self._hold_measured()
            self.state = ENABLED if on else DISABLED
            self._last_cmd_time = None
            return True, "enabled, holding the measured position" if on else "disabled, holding"

    def reset(self) -> tuple[bool, str]:
        """Clear a driver fault and the e-stop latch, then hold the measured position."""
        with self._lock:
            if self.state == DISCONNECTED:
                return False, "not connected"
            try:
                self.driver.reset_fault()
            except DriverError as e:
                self._enter_fault(str(e))
                return False, f"reset failed: {e}"
            self.state, self.fault_reason = ENABLED, ""
            self._hold_measured()                 # enters FAULT again if the driver still fails
            if self.state == FAULT:
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

    def _check_watchdog(self) -> float:
        """Hold if the last command is too old. Returns the driver clock's time."""
        now = self.driver.clock()
        if self.state != ENABLED or self._last_cmd_time is None:
            return now
        age = now - self._last_cmd_time
        if age > self._wd_timeout + 1e-9:
            self.counters.watchdog_trips += 1
            self.last_watchdog_age = age
            self._log("watchdog", f"no command for {age * 1e3:.0f} ms (> {self.watchdog_timeout * 1e3:.0f} ms): holding")
            self._hold_measured()
            self.state = HOLDING
            self._last_cmd_time = None
        return now

    # ------------------------------------------------------------------ internals
    def _cache_limits(self) -> None:
        """Limit vectors, computed once per connect (this runs on every command)."""
        self._spec = spec = self.spec
        cfg = self.cfg
        self._lo, self._hi, self._period = spec.lower, spec.upper, spec.period
        self._vmax = spec.max_velocity * cfg.velocity_scale
        self._emax = spec.max_effort * cfg.effort_scale
        # the step per period is bounded by the configured step and the joint's velocity limit
        self._max_step = np.minimum(cfg.max_position_step, self._vmax * self._period)
        self._wd_timeout = cfg.watchdog_periods * self._period

    def _clamp(self, mode: CommandMode, v: np.ndarray) -> tuple[np.ndarray, bool]:
        lo, hi = self._lo, self._hi
        clamped = False
        c = self.counters
        if mode == CommandMode.POSITION:
            out = np.minimum(np.maximum(v, lo), hi)
            ref = self._ref
            # at most one step from the previous set-point; ref and out lie within the limits,
            # so the result does too
            stepped = np.minimum(np.maximum(out, ref - self._max_step), ref + self._max_step)
            # (identical bytes: nothing was clamped, the common case; else compare as numbers)
            if stepped.tobytes() != v.tobytes() and not (stepped == v).all():
                clamped = True
                if not (out == v).all():
                    c.clamped_position += 1
                if not (stepped == out).all():
                    c.clamped_step += 1
            self._ref = out = stepped
        elif mode == CommandMode.VELOCITY:
            q = self._measured_q()
            # never faster than the limit, never past a position limit within the next period
            upper = np.minimum(self._vmax, np.maximum((hi - q) / self._period, 0.0))
            lower = np.maximum(-self._vmax, np.minimum((lo - q) / self._period, 0.0))
            out = np.minimum(np.maximum(v, lower), upper)
            if not np.array_equal(out, v):
                c.clamped_velocity += 1
                clamped = True
            self._ref = np.minimum(np.maximum(q, lo), hi)
        else:
            emax = self._emax
            out = np.minimum(np.maximum(v, -emax), emax)
            q = self._measured_q()
            out = np.where(((q >= hi) & (out > 0)) | ((q <= lo) & (out < 0)), 0.0, out)
            if not np.array_equal(out, v):
                c.clamped_effort += 1
                clamped = True
            self._ref = np.minimum(np.maximum(q, lo), hi)
        return out, clamped

    def _measured_q(self) -> np.ndarray:
        if self._last_state is None:
            self._last_state = self.driver.read()
        return self._last_state.q

    def _hold_measured(self) -> None:
        try:
            self.driver.hold()
            self._last_state = self.driver.read()
            self._ref = np.minimum(np.maximum(self._last_state.q, self._lo), self._hi)
        except DriverError as e:
            self._enter_fault(str(e))

    def _reject(self, key: str, why: str, hold: bool = True) -> str:
        setattr(self.counters, key, getattr(self.counters, key) + 1)
        self._log(key, f"command refused: {why}" + ("; holding" if hold else ""))
        if hold:
            self._hold_measured()
            if self.state == ENABLED:
                self.state = HOLDING
            self._last_cmd_time = None
        return f"rejected: {why}"

    def _enter_fault(self, reason: str) -> None:
        self.fault_reason = reason
        if self.state == FAULT:
            return
        self.counters.driver_faults += 1
        self.state = FAULT
        log.error("driver fault: %s -- commands refused until reset", reason)
        try:
            self.driver.hold()      # best effort: drivers also make themselves safe when they fault
        except DriverError as e:
            log.warning("no hold after the fault (%s); the driver's own fault handling applies", e)

    def _log(self, key: str, msg: str) -> None:
        n = self._logged.get(key, 0) + 1
        self._logged[key] = n
        if n == 1 or n % 100 == 0:
            log.warning("%s%s", msg, f" ({n} times)" if n > 1 else "")


def _all_finite(*arrays: np.ndarray) -> bool:
    """No NaN or inf in any of the (float) arrays. The sum of squares is finite exactly when every
    element is, unless it overflows (|x| > ~1e154): only then look element by element. One BLAS
    call instead of two reductions per array: this runs on every state and command."""
    total = 0.0
    for a in arrays:
        total += a.dot(a)
    if math.isfinite(total):
        return True
    return all(np.isfinite(a).all() for a in arrays)
