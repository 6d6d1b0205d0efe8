"""Dynamixel X-series servo bus driver (Protocol 2.0, dynamixel-sdk over a serial port).

Each cycle is one GroupSyncRead of present current, velocity and position (addresses 126..135) of
every joint and one GroupSyncWrite of the goal for the active mode: Goal Position (116) for
position, Goal Velocity (104) for velocity, Goal Current (102) for effort. Ticks and raw units are
converted with the per-joint calibration (`q = sign * (theta - offset)`, theta measured from the
servo's centre tick 2048, see drivers/dynamixel_protocol.py) and the servo model's units.

Faults. A transaction that fails is retried `retries` times (drivers/dynamixel_bus.py); a cycle
whose transaction still fails returns the last good state marked
`stale` (read) or is dropped (write) and counts toward `fault_after_failures` consecutive failures,
after which the driver latches a `DriverFault` naming the servo IDs that do not answer. At connect,
a set-up transaction that still fails clears the port and the whole set-up runs once more
(`stats["connect_retries"]`); a second failure is a `DriverError`. `reset_fault()` does the same
(`stats["reset_retries"]`). A status
packet with the hardware-error alert bit latches a fault naming the servo and its error. A reading
outside the joint's limits by more than `reading_margin`, or a jump faster than the joint can move,
is flagged in `state.sensors["untrusted"]` and not used (the last trusted value stands in); if it
persists for `untrusted_budget` cycles the driver latches a fault. While latched, every read,
write and hold raises `DriverFault`, after stopping what can be stopped (zero velocity/current
goals). `reset_fault()` re-probes the bus, reboots servos that report a hardware error, and
re-enables torque holding the measured position.

The servos' own Bus Watchdog (98) is armed (`bus_watchdog_ms`) so that if the host or the cable
dies, each servo stops by itself: in position mode it holds, in velocity and current mode it goes
to zero. A tripped servo refuses goals until the watchdog is cleared, so the driver re-arms it
after a pause: before a transaction, and again after one that a stall of this process delayed.

Driver parameters (`driver:` in the hardware config) are `s2r.core.schema.drivers.DynamixelParams`,
checked when the config loads; the bus transactions are drivers/dynamixel_bus.py.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from s2r.core.schema.drivers import DynamixelParams, driver_params
from s2r.core.types import Command, CommandMode, DriverSpec, RobotState

from . import dynamixel_protocol as P
from .base import Driver, DriverError, DriverFault, register_driver
from .dynamixel_bus import BusError, ServoBus
from .plausibility import ReadingGuard

log = logging.getLogger("s2r.dynamixel")

POSITION_MODE_NAMES = {"position": P.MODE_POSITION, "current_based_position": P.MODE_CURRENT_BASED_POSITION}
# hold() from velocity mode: how long the servos may take to stop before the switch to position
# mode (an X-series velocity loop stops a joint in well under this), and what counts as stopped
# (1.5 units of Present Velocity: its resolution is one)
STOP_WAIT_S = 0.25
AT_REST_RAD_S = 1.5 * P.RAD_S_PER_VELOCITY_UNIT


def parse_params(cfg, require_port: bool = True) -> DynamixelParams:
    """`cfg.driver_params` validated and checked against the joints (servo ids, calibration);
    a ConfigError naming the key, e.g. `driver.baudrate: ...`. `require_port`: False where an
    emulated bus supplies the port."""
    if cfg.driver_type != "dynamixel":
        raise cfg.error("driver.type", f"the dynamixel driver cannot run a {cfg.driver_type!r} config")
    return driver_params(cfg, require_port=require_port)


class DynamixelDriver(Driver):
    name = "dynamixel"

    def __init__(self, config):
        self.config = config
        self.params = parse_params(config)
        self._spec: DriverSpec = config.spec()
        self.joints = config.joints
        self.ids = [j.id for j in config.joints]
        self.model = P.MODELS[self.params.model]
        self.kt = self.params.torque_constant or self.model.torque_constant
        n = len(self.ids)
        self.offset, self.sign = config.calibration
        lo_t = P.joint_to_ticks(self._spec.lower, self.offset, self.sign)
        hi_t = P.joint_to_ticks(self._spec.upper, self.offset, self.sign)
        self.min_ticks = np.ceil(np.minimum(lo_t, hi_t)).astype(int)
        self.max_ticks = np.floor(np.maximum(lo_t, hi_t)).astype(int)
        self.position_mode = POSITION_MODE_NAMES[self.params.position_mode]
        self._connected = False
        self.bus: ServoBus | None = None
        self._mode: int | None = None
        self._fault: str | None = None
        self._failures = 0
        self.guard = ReadingGuard(self._spec, self.params.reading_margin, self.params.untrusted_budget,
                                  [f"{j.name} (servo {j.id})" for j in self.joints])
        self._last_state: RobotState | None = None
        self._velocity_limit = np.full(n, self.model.velocity_limit)
        self._current_limit = np.full(n, self.model.current_limit)
        self.stats = dict(cycles=0, retries=0, failed_transactions=0, stale_reads=0, untrusted_readings=0,
                          connect_retries=0, reset_retries=0, faults=0, mode_switches=0, watchdog_rearms=0)

    # ------------------------------------------------------------------ interface
    @property
    def spec(self) -> DriverSpec:
        return self._spec

    @property
    def fault(self) -> str | None:
        return self._fault

    def connect(self) -> None:
        if self._connected:
            return
        try:
            import dynamixel_sdk as sdk
        except ImportError:
            raise DriverError("dynamixel-sdk is not installed (pip install dynamixel-sdk)") from None
        p = self.params
        self.bus = ServoBus(sdk, p.port, p.baudrate, p.latency_timer_ms, self.ids, p.retries, self.stats, self._joint)
        try:
            opened = self.bus.open()
        except BusError as e:  # device missing, permission
            self._close_port()
            raise DriverError(f"cannot open {p.port}: {e.cause}") from None
        if not opened:
            self._close_port()
            raise DriverError(f"cannot open {p.port} at {p.baudrate} baud")
        self.bus.check_usb_latency()
        try:
            self._once_more(lambda: (self._probe(), self._configure()), "connect_retries")
        except (BusError, DriverError) as e:
            self._close_port()
            raise DriverError(str(e)) from None
        self._connected = True
        log.info("dynamixel: %d servos on %s at %d baud", len(self.ids), p.port, p.baudrate)

    @property
    def _port(self):
        """The SDK's port handler while the port is open (None once closed)."""
        return None if self.bus is None else self.bus.port

    def _read_one(self, sid: int, address: int, size: int, signed: bool = False) -> int:
        return self.bus.read_one(sid, address, size, signed)

    def disconnect(self) -> None:
        if self.bus is None:
            return
        if self.params.torque_off_on_disconnect:
            try:
                self.bus.sync_write(P.ADDR_TORQUE_ENABLE, 1, [0] * len(self.ids), retries=1)
                self.bus.sync_write(P.ADDR_BUS_WATCHDOG, 1, [0] * len(self.ids), retries=1)
            except BusError as e:
                log.warning("dynamixel: torque off on disconnect failed: %s", e)
        self._close_port()
        self._connected = False

    def read(self) -> RobotState:
        self._require()
        self._raise_if_faulted()
        try:
            raw = self._watched(lambda: self.bus.with_retries(self.bus.read_present))
        except BusError as e:
            return self._failed_cycle(e)
        self._failures = 0
        self.stats["cycles"] += 1
        return self._to_state(raw)

    def write(self, command: Command) -> None:
        self._require()
        self._raise_if_faulted()
        mode = CommandMode(command.mode)
        if mode not in self._spec.modes:
            raise DriverError(f"mode {mode.value!r} not enabled for this robot")
        values = np.asarray(command.values, dtype=float)
        if values.shape != (len(self.ids),) or not np.all(np.isfinite(values)):
            raise DriverError(f"expected {len(self.ids)} finite values, got {values!r}")
        try:
            self._rearm_watchdog_if_idle()
            self._ensure_mode(self._servo_mode(mode))
            if mode == CommandMode.POSITION:
                goal = (P.ADDR_GOAL_POSITION, 4, self._position_ticks(values))
            elif mode == CommandMode.VELOCITY:
                units = np.rint(self.sign * values / P.RAD_S_PER_VELOCITY_UNIT)
                goal = (P.ADDR_GOAL_VELOCITY, 4, np.clip(units, -self._velocity_limit, self._velocity_limit))
            else:
                amps = self.sign * values / self.kt
                units = np.rint(amps / self.model.current_unit_a)
                goal = (P.ADDR_GOAL_CURRENT, 2, np.clip(units, -self._current_limit, self._current_limit))
            self._watched(lambda: self.bus.sync_write(*goal))
        except BusError as e:
            self._count_failure(e)

    def hold(self) -> None:
        """Position mode, goal = the measured (trusted) position. From velocity mode the servos
        first stop in velocity mode (goal velocity zero, for at most STOP_WAIT_S), so that the
        switch, which needs torque off, happens at rest: switched while moving, they coast with
        torque off past the position read before the switch, and the position loop then pulls
        them back to it at up to their own speed limit. (Current mode has no stop of its own:
        zero current lets a loaded joint fall, so the position loop takes over at once.)"""
        self._require()
        self._raise_if_faulted()
        state = self.read()
        try:
            if self._mode == P.MODE_VELOCITY:
                state = self._stop_in_velocity_mode(state)
            self._ensure_mode(self.position_mode)
            self.bus.sync_write(P.ADDR_GOAL_POSITION, 4, self._position_ticks(state.q))
        except BusError as e:
            self._count_failure(e)

    def _stop_in_velocity_mode(self, state: RobotState) -> RobotState:
        """Goal velocity zero, then read until every servo reports (almost) no speed or
        STOP_WAIT_S passed. Returns the last state read."""
        self.bus.sync_write(P.ADDR_GOAL_VELOCITY, 4, [0] * len(self.ids))
        deadline = time.monotonic() + STOP_WAIT_S
        while np.max(np.abs(state.qd), initial=0.0) > AT_REST_RAD_S and time.monotonic() < deadline:
            time.sleep(0.002)
            state = self.read()
        return state

    def reset_fault(self) -> None:
        """Recover from a latched fault: the bus must answer again, servos reporting a hardware
        error are rebooted once and must come back clean, readings must be plausible. Servos that
        kept torque are not switched off meanwhile. Ends holding the measured position."""
        self._require()
        if self._fault is None:
            return
        try:
            self._once_more(self._recover, "reset_retries")
        except BusError as e:
            raise DriverFault(f"reset failed, still faulted: {e}") from None
        log.warning("dynamixel: fault cleared (%s); holding the measured position", self._fault)
        self._fault = None
        self._failures = 0

    def _once_more(self, setup, stat: str) -> None:
        """Run a multi-transaction set-up (connect, fault recovery). One transient timeout among its
        hundreds of transactions (a servo silent through a whole retry round) clears the port and
        runs it once more, counted in stats[stat]; a second failure raises."""
        try:
            setup()
        except BusError as e:
            log.warning("dynamixel: set-up transaction failed (%s); clearing the port and running it again", e)
            self.stats[stat] += 1
            self.bus.clear()
            setup()

    # ------------------------------------------------------------------ setup
    def _probe(self) -> None:
        """Every configured servo answers a ping with the configured model."""
        missing, wrong = [], []
        for sid in self.ids:
            model = self.bus.ping(sid)
            if model is None:
                missing.append(sid)
            elif model != self.model.number:
                wrong.append(f"servo {sid} ({self._joint(sid)}) is a {P.model_name(model)}, "
                             f"config says {self.model.name}")
        if missing:
            raise BusError(f"no answer from servo ID(s) {self._names(missing)} on {self.params.port} at "
                            f"{self.params.baudrate} baud (check power, cable, IDs and baud rate)", missing)
        if wrong:
            raise DriverError("; ".join(wrong))

    def _configure(self) -> None:
        """At connect: clear latched hardware errors, set every servo up with torque off, check
        the readings, then torque on holding the measured position."""
        self._clear_hardware_errors()
        self._setup_registers(self.ids)
        self._mode = self.position_mode
        q = self._read_checked_state("torque left off")
        self._enable_holding(self.ids, q)
        self._arm_watchdog()

    def _recover(self) -> None:
        """After a fault: servos that kept torque keep holding (an arm must not drop); servos that
        lost it (rebooted after a hardware error) are set up again. Ends holding the measured position."""
        self._probe()
        rebooted = self._clear_hardware_errors()
        cold = [sid for sid in self.ids if sid in rebooted or not self.bus.read_one(sid, P.ADDR_TORQUE_ENABLE, 1)]
        if cold:
            self._setup_registers(cold)
        # a tripped bus watchdog refuses goals until cleared
        self.bus.sync_write(P.ADDR_BUS_WATCHDOG, 1, [0] * len(self.ids))
        q = self._read_checked_state("readings not trusted")
        if self._mode == self.position_mode:
            self.bus.sync_write(P.ADDR_GOAL_POSITION, 4, self._position_ticks(q))
            self._enable_holding(cold, q)
        else:   # faulted in velocity or current mode: back to position control, holding q
            self._enable_holding(cold, q)
            self._mode = None
            self._ensure_mode(self.position_mode)
        self._arm_watchdog()

    def _clear_hardware_errors(self) -> list[int]:
        """Reboot the servos that report a latched hardware error; fail if one stays in error."""
        errors = self.bus.hardware_errors(self.ids)
        for sid in errors:
            self.bus.reboot_and_wait(sid)
        still = self.bus.hardware_errors(list(errors))
        if still:
            raise BusError("after a reboot " + self._describe_hw(still), still)
        return list(errors)

    def _setup_registers(self, ids) -> None:
        """Torque off, then mode, limits, return delay, current limit and gains (EEPROM items are
        written only when they differ)."""
        p = self.params
        for sid in ids:
            self.bus.write_one(sid, P.ADDR_TORQUE_ENABLE, 1, 0)
            self.bus.write_one(sid, P.ADDR_BUS_WATCHDOG, 1, 0)
        for sid in ids:
            k = self.ids.index(sid)
            want = [(P.ADDR_RETURN_DELAY_TIME, 1, p.return_delay_us // 2),
                    (P.ADDR_OPERATING_MODE, 1, self.position_mode),
                    (P.ADDR_MAX_POSITION_LIMIT, 4, int(self.max_ticks[k])),
                    (P.ADDR_MIN_POSITION_LIMIT, 4, int(self.min_ticks[k]))]
            if p.current_limit_ma is not None:
                want.append((P.ADDR_CURRENT_LIMIT, 2, int(round(p.current_limit_ma * 1e-3 / self.model.current_unit_a))))
            for addr, size, value in want:
                if self.bus.read_one(sid, addr, size) != value:
                    self.bus.write_one(sid, addr, size, value)
            for addr, value in ((P.ADDR_POSITION_P_GAIN, p.position_p_gain), (P.ADDR_POSITION_I_GAIN, p.position_i_gain),
                                (P.ADDR_POSITION_D_GAIN, p.position_d_gain)):
                if value is not None:
                    self.bus.write_one(sid, addr, 2, value)
            self._velocity_limit[k] = self.bus.read_one(sid, P.ADDR_VELOCITY_LIMIT, 4)
            self._current_limit[k] = self.bus.read_one(sid, P.ADDR_CURRENT_LIMIT, 2)
            if self.position_mode == P.MODE_CURRENT_BASED_POSITION:
                self.bus.write_one(sid, P.ADDR_GOAL_CURRENT, 2, int(self._current_limit[k]))

    def _read_checked_state(self, what: str) -> np.ndarray:
        """Read every joint; a reading outside the limits (beyond the margin) means the calibration
        is wrong or the joint is somewhere it cannot be: refuse, naming the joints."""
        raw = self.bus.with_retries(self.bus.read_present)
        q = self._ticks_to_q(raw)
        if self.guard.out_of_range(q).any():
            raise DriverError(f"{what}, readings not trusted: " + self.guard.describe_out_of_range(q)
                              + " (check calibration offset/sign, or move the joint by hand)")
        self.guard.reset(q, time.monotonic())
        self._to_state(raw)         # the state a failed first cycle falls back to
        return q

    def _enable_holding(self, ids, q: np.ndarray) -> None:
        ticks = self._position_ticks(q)
        for sid in ids:
            self.bus.write_one(sid, P.ADDR_GOAL_POSITION, 4, int(ticks[self.ids.index(sid)]))
            self.bus.write_one(sid, P.ADDR_TORQUE_ENABLE, 1, 1)

    def _arm_watchdog(self) -> None:
        units = self.params.bus_watchdog_ms // 20
        if units:
            self.bus.sync_write(P.ADDR_BUS_WATCHDOG, 1, [0] * len(self.ids))
            self.bus.sync_write(P.ADDR_BUS_WATCHDOG, 1, [units] * len(self.ids))

    def _rearm_watchdog_if_idle(self, since: float | None = None) -> bool:
        """After a pause longer than the watchdog (from the bus's last transaction, or `since`), the
        servos have stopped and refuse goals until the watchdog is cleared: clear and re-arm it."""
        last = self.bus.last_io if since is None else since
        if self.params.bus_watchdog_ms and time.monotonic() - last > 0.8 * self.params.bus_watchdog_ms / 1000:
            self.stats["watchdog_rearms"] += 1
            self._arm_watchdog()
            return True
        return False

    def _watched(self, transaction):
        """Run a cyclic transaction so that a tripped bus watchdog cannot silently refuse its goals:
        re-armed before it after a known pause, and once more after it, with the transaction run
        again, when this process stalled between the check and the packet long enough for the
        servos to have tripped (a goal a tripped servo refuses gets no status packet to say so)."""
        self._rearm_watchdog_if_idle()
        before = self.bus.last_io
        out = transaction()
        if self._rearm_watchdog_if_idle(since=before):
            out = transaction()
        return out

    def _servo_mode(self, mode: CommandMode) -> int:
        return {CommandMode.POSITION: self.position_mode, CommandMode.VELOCITY: P.MODE_VELOCITY,
                CommandMode.EFFORT: P.MODE_CURRENT}[mode]

    def _ensure_mode(self, servo_mode: int) -> None:
        """Operating Mode is in EEPROM: torque off, switch, goals that hold still, torque on."""
        if self._mode == servo_mode:
            return
        self.stats["mode_switches"] += 1
        n = len(self.ids)
        q = self.guard.trusted if self.guard.trusted is not None else self._ticks_to_q(self.bus.read_present())
        self.bus.sync_write(P.ADDR_TORQUE_ENABLE, 1, [0] * n)
        self.bus.sync_write(P.ADDR_OPERATING_MODE, 1, [servo_mode] * n)
        self._mode = None
        if servo_mode in P.POSITION_MODES:
            if servo_mode == P.MODE_CURRENT_BASED_POSITION:   # the current bound of the position loop
                self.bus.sync_write(P.ADDR_GOAL_CURRENT, 2, self._current_limit)
            self.bus.sync_write(P.ADDR_GOAL_POSITION, 4, self._position_ticks(q))
        elif servo_mode == P.MODE_VELOCITY:
            self.bus.sync_write(P.ADDR_GOAL_VELOCITY, 4, [0] * n)
        else:
            self.bus.sync_write(P.ADDR_GOAL_CURRENT, 2, [0] * n)
        self.bus.sync_write(P.ADDR_TORQUE_ENABLE, 1, [1] * n)
        # sync writes get no status: read back that every servo took the switch
        bad = [sid for sid in self.ids if self.bus.read_one(sid, P.ADDR_OPERATING_MODE, 1) != servo_mode
               or self.bus.read_one(sid, P.ADDR_TORQUE_ENABLE, 1) != 1]
        if bad:
            raise BusError(f"servo(s) {self._names(bad)} did not switch to "
                            f"{P.OPERATING_MODE_NAMES[servo_mode]} mode with torque on", bad)
        self._mode = servo_mode
        log.info("dynamixel: operating mode -> %s", P.OPERATING_MODE_NAMES[servo_mode])

    # ------------------------------------------------------------------ conversions and checks
    def _ticks_to_q(self, raw) -> np.ndarray:
        ticks = np.array([P.to_signed(int.from_bytes(raw[sid][0][6:10], "little"), 4) for sid in self.ids], float)
        return P.ticks_to_joint(ticks, self.offset, self.sign)

    def _to_state(self, raw) -> RobotState:
        now = time.monotonic()
        cur = np.array([P.to_signed(int.from_bytes(raw[sid][0][0:2], "little"), 2) for sid in self.ids], float)
        vel = np.array([P.to_signed(int.from_bytes(raw[sid][0][2:6], "little"), 4) for sid in self.ids], float)
        q = self._ticks_to_q(raw)
        qd = self.sign * vel * P.RAD_S_PER_VELOCITY_UNIT
        effort = self.sign * cur * self.model.current_unit_a * self.kt
        alerts = [sid for sid in self.ids if raw[sid][1] & P.ERR_ALERT]
        if alerts:
            try:
                errors = self.bus.hardware_errors(alerts)
            except BusError:
                errors = {sid: 0 for sid in alerts}
            self._latch(self._describe_hw(errors) if any(errors.values())
                        else f"hardware error alert from servo(s) {self._names(alerts)}")
            raise DriverFault(self._fault)
        checked = self.guard.check(q, qd, now)
        sensors = {"stale": False, "untrusted": checked.untrusted, "bus_failures": self._failures}
        if checked.untrusted:
            self.stats["untrusted_readings"] += 1
            sensors["q_raw"] = checked.raw_q
        if checked.fault:
            self._latch(checked.fault)
            raise DriverFault(self._fault)
        state = RobotState(now, checked.q, checked.qd, effort, sensors)
        self._last_state = state
        return state

    def _position_ticks(self, q) -> np.ndarray:
        ticks = np.rint(P.joint_to_ticks(np.asarray(q, float), self.offset, self.sign))
        return np.clip(ticks, self.min_ticks, self.max_ticks).astype(int)

    # ------------------------------------------------------------------ faults
    def _failed_cycle(self, e: BusError) -> RobotState:
        self._count_failure(e)
        if self._last_state is None:
            raise DriverError(f"no state from the bus yet: {e}")
        self.stats["stale_reads"] += 1
        s = self._last_state
        return RobotState(s.stamp, s.q.copy(), s.qd.copy(), s.effort.copy(),
                          {**s.sensors, "stale": True, "bus_failures": self._failures})

    def _count_failure(self, e: BusError) -> None:
        self._failures += 1
        log.warning("dynamixel: bus transaction failed (%d/%d in a row): %s",
                    self._failures, self.params.fault_after_failures, e)
        if self._failures >= self.params.fault_after_failures:
            self._latch(f"bus fault on {self.params.port} after {self._failures} failed cycles: {self.bus.diagnose(e)}")
            raise DriverFault(self._fault)

    def _latch(self, reason: str) -> None:
        if self._fault is None:
            self.stats["faults"] += 1
            log.error("dynamixel: FAULT: %s -- commands refused until reset_fault()", reason)
        self._fault = reason
        self._safe_stop()

    def _safe_stop(self) -> None:
        """Best effort, one attempt, never raises: stop motion the servos would continue on their own.
        Position-mode servos already hold their last goal; if the bus is dead, their watchdog acts."""
        n = len(self.ids)
        if self.bus is None:
            return
        try:
            if self._mode == P.MODE_VELOCITY:
                self.bus.sync_write(P.ADDR_GOAL_VELOCITY, 4, [0] * n, retries=0)
            elif self._mode == P.MODE_CURRENT:
                self.bus.sync_write(P.ADDR_GOAL_CURRENT, 2, [0] * n, retries=0)
            elif self._mode in P.POSITION_MODES and self.guard.trusted is not None:
                self.bus.sync_write(P.ADDR_GOAL_POSITION, 4, self._position_ticks(self.guard.trusted), retries=0)
        except BusError:
            pass

    def _raise_if_faulted(self) -> None:
        if self._fault is not None:
            self._safe_stop()
            raise DriverFault(self._fault)

    def _require(self) -> None:
        if not self._connected:
            raise DriverError("dynamixel driver is not connected (call connect() first)")

    # ------------------------------------------------------------------ helpers
    def _joint(self, sid: int) -> str:
        return next((j.name for j in self.joints if j.id == sid), "?")

    def _names(self, ids) -> str:
        return ", ".join(f"{sid} ({self._joint(sid)})" for sid in ids)

    def _describe_hw(self, errors: dict[int, int]) -> str:
        return "; ".join(f"servo {sid} ({self._joint(sid)}) hardware error: {P.describe_hardware_error(bits)}"
                         for sid, bits in errors.items())

    def _close_port(self) -> None:
        if self.bus is not None:
            error = self.bus.close()
            if error is not None:           # closing a vanished device
                log.debug("closing %s: %s", self.params.port, error)
        self.bus = None

@register_driver("dynamixel")
def make_dynamixel_driver(config, **_kw) -> DynamixelDriver:
    return DynamixelDriver(config)
