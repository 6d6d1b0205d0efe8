"""The safety layer's actions around commands (`drivers.safety.SafetyLayer`): the latched e-stop,
enable / disable, reset after a driver fault, the command watchdog on the driver's steady clock,
and the one place the state changes (`_set_state`, `_enter_fault`), which keeps the latches."""
from __future__ import annotations

import logging
import threading

from .safety_types import DISABLED, DISCONNECTED, ENABLED, ESTOP, FAULT, HOLDING, LEAVE, one_line

log = logging.getLogger("s2r.safety")


class SafetyActions:
    """Mixin of `SafetyLayer`: e-stop, enable, reset, the watchdog and the state latches. It works
    on the layer's lock, state, driver, counters and limiter (`SafetyLayer.__init__`,
    `_cache_limits`)."""

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
                self._enter_fault(f"safety layer: {one_line(e)}")
                return False, f"reset failed: {self.fault_reason}"

    def _reset(self) -> tuple[bool, str]:
        if self.state == DISCONNECTED:
            return False, "not connected"
        try:
            self.driver.reset_fault()
        except Exception as e:
            self._enter_fault(one_line(e))
            return False, f"reset failed: {self.fault_reason}"
        self._set_state(ENABLED, by="reset")
        self.fault_reason = ""
        if not self._hold_measured():         # enters FAULT again if the driver still fails
            return False, f"reset failed: {self.fault_reason}"
        self._last_cmd_time = None
        return True, "reset, holding the measured position"

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
                    self._enter_fault(f"watchdog: {one_line(e)}")
                self._wd_stop.wait(0.1)

    def _check_watchdog(self) -> float:
        """Hold if the last command is too old. Returns the driver clock's time."""
        now = self.driver.clock()
        if self.state != ENABLED or self._last_cmd_time is None:
            return now
        age = now - self._last_cmd_time
        if age > self._wd_timeout + 1e-9:
            self.last_watchdog_age = age        # before the count: a reader seeing the trip sees its age
            self.counters.watchdog_trips += 1
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
        `LEAVE` (passed as `by`) leaves one, so no other path -- a failed hold inside an e-stop,
        an enable or the watchdog -- can clear a fault. Returns whether the state is now `new`."""
        cur = self.state
        if cur != new and cur in LEAVE and by not in LEAVE[cur]:
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
            log.warning("no hold after the fault (%s); the driver's own fault handling applies", one_line(e))
