"""Dynamixel X-series servo bus driver (Protocol 2.0, dynamixel-sdk over a serial port).

Each cycle is one GroupSyncRead of present current, velocity and position (addresses 126..135) of
every joint and one GroupSyncWrite of the goal for the active mode: Goal Position (116) for
position, Goal Velocity (104) for velocity, Goal Current (102) for effort. Ticks and raw units are
converted with the per-joint calibration (`q = sign * (theta - offset)`, theta measured from the
servo's centre tick 2048, see drivers/dynamixel_protocol.py) and the servo model's units.

Faults. A transaction that fails (no status packet, CRC error, timeout, serial error) is retried
`retries` times (at once in the cycle; a one-servo transaction first waits out and discards a late
reply, `_with_retries`); a cycle whose transaction still fails returns the last good state marked
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
to zero.

Driver parameters (`driver:` in the hardware config), all checked on load:
  port (required), baudrate, model, position_mode, torque_off_on_disconnect, retries,
  fault_after_failures, latency_timer_ms, bus_watchdog_ms, return_delay_us, reading_margin,
  untrusted_budget, torque_constant, current_limit_ma, position_p_gain, position_i_gain,
  position_d_gain, protocol_version.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from s2r.core.yamlio import keyname
from s2r.core.yamlio import excerpt

from . import dynamixel_protocol as P
from .base import Driver, DriverError, DriverFault, register_driver
from .plausibility import ReadingGuard
from s2r.core.types import Command, CommandMode, DriverSpec, RobotState

log = logging.getLogger("s2r.dynamixel")

SDK_BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600,
                  1000000, 1152000, 2000000, 2500000, 3000000, 3500000, 4000000)
POSITION_MODE_NAMES = {"position": P.MODE_POSITION, "current_based_position": P.MODE_CURRENT_BASED_POSITION}
# hold() from velocity mode: how long the servos may take to stop before the switch to position
# mode (an X-series velocity loop stops a joint in well under this), and what counts as stopped
# (1.5 units of Present Velocity: its resolution is one)
STOP_WAIT_S = 0.25
AT_REST_RAD_S = 1.5 * P.RAD_S_PER_VELOCITY_UNIT


@dataclass(frozen=True)
class DynamixelParams:
    port: str
    baudrate: int = 1_000_000
    model: str = "xm430-w350"
    protocol_version: float = 2.0
    position_mode: str = "position"
    torque_off_on_disconnect: bool = True
    retries: int = 2
    fault_after_failures: int = 3
    latency_timer_ms: float = 16.0
    bus_watchdog_ms: int = 100
    return_delay_us: int = 0
    reading_margin: float = 0.2
    untrusted_budget: int = 3
    torque_constant: float | None = None
    current_limit_ma: float | None = None
    position_p_gain: int | None = None
    position_i_gain: int | None = None
    position_d_gain: int | None = None


def parse_params(cfg, require_port: bool = True) -> DynamixelParams:
    """Validate `cfg.driver_params` (and the joints' servo ids) for this driver.

    Raises the config's ConfigError naming the key, e.g. `driver.baudrate: ...`.
    """
    raw = dict(cfg.driver_params)
    known = {f.name for f in fields(DynamixelParams)}
    for k in sorted(map(keyname, raw)):
        if k not in known:
            raise cfg.error(f"driver.{k}", f"unknown dynamixel driver parameter (known: {', '.join(sorted(known))})")

    def num(key, default, kind=float, lo=None, hi=None, optional=False):
        if key not in raw or raw[key] is None:
            if default is None and not optional:
                raise cfg.error(f"driver.{key}", "missing required key")
            return default
        v = raw[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
            raise cfg.error(f"driver.{key}", f"expected {'an integer' if kind is int else 'a number'}, got {excerpt(v)}")
        if not math.isfinite(v):
            raise cfg.error(f"driver.{key}", f"must be finite, got {v}")
        if lo is not None and v < lo or hi is not None and v > hi:
            raise cfg.error(f"driver.{key}", f"must be in [{lo}, {hi}], got {v}")
        return kind(v)

    def flag(key, default):
        v = raw.get(key, default)
        if not isinstance(v, bool):
            raise cfg.error(f"driver.{key}", f"expected true/false, got {excerpt(v)}")
        return v

    port = raw.get("port")
    if port is None:
        if require_port:
            raise cfg.error("driver.port", "missing required key (the serial device, e.g. /dev/ttyUSB0)")
        port = ""
    elif not isinstance(port, str) or not port or len(port) > 4096 or not port.isprintable():
        raise cfg.error("driver.port", f"expected a device path, got {excerpt(port)}")
    baud = num("baudrate", 1_000_000, int)
    if baud not in SDK_BAUD_RATES or baud not in P.BAUD_CODES:
        ok = sorted(set(SDK_BAUD_RATES) & set(P.BAUD_CODES))
        raise cfg.error("driver.baudrate", f"{baud} is not a Dynamixel X baud rate ({', '.join(map(str, ok))})")
    model = raw.get("model", "xm430-w350")
    if not isinstance(model, str) or model not in P.MODELS:
        raise cfg.error("driver.model", f"unknown servo model {excerpt(model)} (supported: {', '.join(P.MODELS)})")
    proto = num("protocol_version", 2.0)
    if proto != 2.0:
        raise cfg.error("driver.protocol_version", f"only Protocol 2.0 is supported, got {proto}")
    pmode = raw.get("position_mode", "position")
    if not isinstance(pmode, str) or pmode not in POSITION_MODE_NAMES:
        raise cfg.error("driver.position_mode", f"must be one of {', '.join(POSITION_MODE_NAMES)}; got {excerpt(pmode)}")
    params = DynamixelParams(
        port=port, baudrate=baud, model=model, protocol_version=proto, position_mode=pmode,
        torque_off_on_disconnect=flag("torque_off_on_disconnect", True),
        retries=num("retries", 2, int, 0, 10),
        fault_after_failures=num("fault_after_failures", 3, int, 1, 1000),
        latency_timer_ms=num("latency_timer_ms", 16.0, float, 0.5, 100),
        bus_watchdog_ms=num("bus_watchdog_ms", 100, int, 0, 127 * 20),
        return_delay_us=num("return_delay_us", 0, int, 0, 508),
        reading_margin=num("reading_margin", 0.2, float, 0.0, math.pi),
        untrusted_budget=num("untrusted_budget", 3, int, 1, 1000),
        torque_constant=num("torque_constant", None, float, 1e-6, 100, optional=True),
        current_limit_ma=num("current_limit_ma", None, float, 1, 20000, optional=True),
        position_p_gain=num("position_p_gain", None, int, 0, 16383, optional=True),
        position_i_gain=num("position_i_gain", None, int, 0, 16383, optional=True),
        position_d_gain=num("position_d_gain", None, int, 0, 16383, optional=True),
    )
    if params.bus_watchdog_ms and params.bus_watchdog_ms < 20:
        raise cfg.error("driver.bus_watchdog_ms", f"the servo's watchdog counts in 20 ms units; use 0 (off) "
                        f"or 20..2540, got {params.bus_watchdog_ms}")
    seen: dict[int, str] = {}
    for i, j in enumerate(cfg.joints):
        if j.id is None:
            raise cfg.error(f"joints[{i}].id", "a dynamixel joint needs its servo id")
        if j.id > P.MAX_ID:
            raise cfg.error(f"joints[{i}].id", f"servo ids are 0..{P.MAX_ID}, got {j.id}")
        if j.id in seen:
            raise cfg.error(f"joints[{i}].id", f"servo id {j.id} is also used by joint {seen[j.id]!r}")
        seen[j.id] = j.name
        a = P.joint_to_ticks(j.limits.lower, j.offset, j.sign)
        b = P.joint_to_ticks(j.limits.upper, j.offset, j.sign)
        if min(a, b) < 0 or max(a, b) > P.TICKS_PER_REV - 1:
            raise cfg.error(f"joints[{i}].calibration", f"joint {j.name!r}: limits "
                            f"[{j.limits.lower:g}, {j.limits.upper:g}] map to servo ticks "
                            f"[{min(a, b):.0f}, {max(a, b):.0f}], outside the servo's 0..4095: check offset/sign")
    return params


class _BusError(Exception):
    """One failed bus transaction (internal: counted, retried, turned into DriverFault)."""

    def __init__(self, msg: str, ids=(), cause: str = ""):
        super().__init__(msg)
        self.ids = tuple(ids)
        self.cause = cause or msg


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
        self._port = self._ph = None
        self._mode: int | None = None
        self._fault: str | None = None
        self._failures = 0
        self.guard = ReadingGuard(self._spec, self.params.reading_margin, self.params.untrusted_budget,
                                  [f"{j.name} (servo {j.id})" for j in self.joints])
        self._last_state: RobotState | None = None
        self._last_bus_time = 0.0
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
        self._sdk = sdk
        p = self.params
        self._port = _make_port_handler(sdk, p.port, p.latency_timer_ms)
        try:
            opened = self._txn(self._port.openPort) and self._txn(self._port.setBaudRate, p.baudrate)
        except _BusError as e:  # device missing, permission
            self._close_port()
            raise DriverError(f"cannot open {p.port}: {e.cause}") from None
        if not opened:
            self._close_port()
            raise DriverError(f"cannot open {p.port} at {p.baudrate} baud")
        self._check_usb_latency()
        self._ph = sdk.PacketHandler(2.0)
        self._sync_read = sdk.GroupSyncRead(self._port, self._ph, P.PRESENT_BLOCK_ADDRESS, P.PRESENT_BLOCK_LENGTH)
        for i in self.ids:
            self._sync_read.addParam(i)
        try:
            self._once_more(lambda: (self._probe(), self._configure()), "connect_retries")
        except (_BusError, DriverError) as e:
            self._close_port()
            raise DriverError(str(e)) from None
        self._connected = True
        log.info("dynamixel: %d servos on %s at %d baud", len(self.ids), p.port, p.baudrate)

    def disconnect(self) -> None:
        if self._port is None:
            return
        if self.params.torque_off_on_disconnect:
            try:
                self._sync_write(P.ADDR_TORQUE_ENABLE, 1, [0] * len(self.ids), retries=1)
                self._sync_write(P.ADDR_BUS_WATCHDOG, 1, [0] * len(self.ids), retries=1)
            except _BusError as e:
                log.warning("dynamixel: torque off on disconnect failed: %s", e)
        self._close_port()
        self._connected = False

    def read(self) -> RobotState:
        self._require()
        self._raise_if_faulted()
        try:
            self._rearm_watchdog_if_idle()
            raw = self._with_retries(self._read_present)
        except _BusError as e:
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
                self._sync_write(P.ADDR_GOAL_POSITION, 4, self._position_ticks(values))
            elif mode == CommandMode.VELOCITY:
                units = np.rint(self.sign * values / P.RAD_S_PER_VELOCITY_UNIT)
                self._sync_write(P.ADDR_GOAL_VELOCITY, 4, np.clip(units, -self._velocity_limit, self._velocity_limit))
            else:
                amps = self.sign * values / self.kt
                units = np.rint(amps / self.model.current_unit_a)
                self._sync_write(P.ADDR_GOAL_CURRENT, 2, np.clip(units, -self._current_limit, self._current_limit))
        except _BusError as e:
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
            self._sync_write(P.ADDR_GOAL_POSITION, 4, self._position_ticks(state.q))
        except _BusError as e:
            self._count_failure(e)

    def _stop_in_velocity_mode(self, state: RobotState) -> RobotState:
        """Goal velocity zero, then read until every servo reports (almost) no speed or
        STOP_WAIT_S passed. Returns the last state read."""
        self._sync_write(P.ADDR_GOAL_VELOCITY, 4, [0] * len(self.ids))
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
        except _BusError as e:
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
        except _BusError as e:
            log.warning("dynamixel: set-up transaction failed (%s); clearing the port and running it again", e)
            self.stats[stat] += 1
            self._txn(self._port.clearPort)
            setup()

    # ------------------------------------------------------------------ bus transactions
    def _txn(self, fn, *args):
        """The one place the port is used (the SDK's transactions and the port's own calls: open,
        baud rate, clear). An OS-level serial error -- termios.error, OSError,
        serial.SerialException, or a TypeError from a port closed under it -- becomes a failed
        transaction naming the port, which the callers count, retry, and turn into a DriverError
        or DriverFault; it never leaves the driver as itself."""
        try:
            return fn(*args)
        except Exception as e:
            if self._port is not None:
                self._port.is_using = False
            cause = _one_line(e)
            raise _BusError(f"serial port {self.params.port}: {cause}", self.ids, cause) from None

    def _with_retries(self, fn, retries: int | None = None, drain: bool = False):
        """fn, retried on a bus error. drain (one-servo transactions): before a retry, wait one more
        receive timeout and clear the port, so that a late status packet of the failed attempt is
        not read as the retry's answer -- nor the retry's own as the next transaction's: Protocol 2.0
        status packets carry no address, and a late Velocity Limit reply once passed for the
        Current Limit. The cyclic sync read does not wait (its late packets have the same layout
        and would only be one cycle old)."""
        retries = self.params.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                return fn()
            except _BusError:
                self.stats["failed_transactions"] += 1
                if attempt == retries:
                    raise
                self.stats["retries"] += 1
                if drain and self._port is not None:
                    time.sleep(_rx_timeout_ms(self.params.latency_timer_ms, 0) * 1e-3)
                    self._txn(self._port.clearPort)

    def _read_present(self) -> dict[int, tuple[bytes, int]]:
        """GroupSyncRead tx, then each servo's status packet in turn (keeping its error byte)."""
        sdk, ph, port = self._sdk, self._ph, self._port
        res = self._txn(self._sync_read.txPacket)
        if res != sdk.COMM_SUCCESS:
            raise _BusError(f"sync read not sent: {ph.getTxRxResult(res)}", self.ids)
        out = {}
        for sid in self.ids:
            data, res, err = self._txn(ph.readRx, port, sid, P.PRESENT_BLOCK_LENGTH)
            if res != sdk.COMM_SUCCESS:
                raise _BusError(f"{_RESULT_TEXT.get(res, res)} from servo {sid}", [sid])
            out[sid] = (bytes(data), err)
        self._last_bus_time = time.monotonic()
        return out

    def _sync_write(self, address: int, size: int, values, retries: int | None = None) -> None:
        sdk = self._sdk
        gsw = sdk.GroupSyncWrite(self._port, self._ph, address, size)
        mask = (1 << (8 * size)) - 1
        for sid, v in zip(self.ids, values):
            gsw.addParam(sid, list((int(v) & mask).to_bytes(size, "little")))

        def send():
            res = self._txn(gsw.txPacket)
            if res != sdk.COMM_SUCCESS:
                raise _BusError(f"sync write to {address} not sent: {self._ph.getTxRxResult(res)}", self.ids)
        self._with_retries(send, retries)
        self._last_bus_time = time.monotonic()

    def _write_one(self, sid: int, address: int, size: int, value: int) -> None:
        sdk, ph = self._sdk, self._ph
        fn = {1: ph.write1ByteTxRx, 2: ph.write2ByteTxRx, 4: ph.write4ByteTxRx}[size]

        def once():
            res, err = self._txn(fn, self._port, sid, address, int(value) & ((1 << (8 * size)) - 1))
            if res != sdk.COMM_SUCCESS:
                raise _BusError(f"{_RESULT_TEXT.get(res, res)} from servo {sid}", [sid])
            if err & 0x7F:
                raise DriverError(f"servo {sid} ({self._joint(sid)}) refused writing {value} to address "
                                  f"{address}: {P.ERROR_NAMES.get(err & 0x7F, err)}")
        self._with_retries(once, drain=True)

    def _read_one(self, sid: int, address: int, size: int, signed: bool = False) -> int:
        sdk, ph = self._sdk, self._ph

        def once():
            data, res, err = self._txn(ph.readTxRx, self._port, sid, address, size)
            if res != sdk.COMM_SUCCESS:
                raise _BusError(f"{_RESULT_TEXT.get(res, res)} from servo {sid}", [sid])
            v = int.from_bytes(bytes(data[:size]), "little")
            return P.to_signed(v, size) if signed else v
        return self._with_retries(once, drain=True)

    def _ping(self, sid: int, retries: int | None = None) -> int | None:
        sdk = self._sdk

        def once():
            model, res, _ = self._txn(self._ph.ping, self._port, sid)
            if res != sdk.COMM_SUCCESS:
                raise _BusError(f"no answer from servo {sid}", [sid])
            return model
        try:
            return self._with_retries(once, retries, drain=True)
        except _BusError:
            return None

    # ------------------------------------------------------------------ setup
    def _probe(self) -> None:
        """Every configured servo answers a ping with the configured model."""
        missing, wrong = [], []
        for sid in self.ids:
            model = self._ping(sid)
            if model is None:
                missing.append(sid)
            elif model != self.model.number:
                wrong.append(f"servo {sid} ({self._joint(sid)}) is a {P.model_name(model)}, "
                             f"config says {self.model.name}")
        if missing:
            raise _BusError(f"no answer from servo ID(s) {self._names(missing)} on {self.params.port} at "
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
        cold = [sid for sid in self.ids if sid in rebooted or not self._read_one(sid, P.ADDR_TORQUE_ENABLE, 1)]
        if cold:
            self._setup_registers(cold)
        # a tripped bus watchdog refuses goals until cleared
        self._sync_write(P.ADDR_BUS_WATCHDOG, 1, [0] * len(self.ids))
        q = self._read_checked_state("readings not trusted")
        if self._mode == self.position_mode:
            self._sync_write(P.ADDR_GOAL_POSITION, 4, self._position_ticks(q))
            self._enable_holding(cold, q)
        else:   # faulted in velocity or current mode: back to position control, holding q
            self._enable_holding(cold, q)
            self._mode = None
            self._ensure_mode(self.position_mode)
        self._arm_watchdog()

    def _clear_hardware_errors(self) -> list[int]:
        """Reboot the servos that report a latched hardware error; fail if one stays in error."""
        errors = self._hardware_errors(self.ids)
        for sid in errors:
            self._reboot(sid)
        still = self._hardware_errors(list(errors))
        if still:
            raise _BusError("after a reboot " + self._describe_hw(still), still)
        return list(errors)

    def _setup_registers(self, ids) -> None:
        """Torque off, then mode, limits, return delay, current limit and gains (EEPROM items are
        written only when they differ)."""
        p = self.params
        for sid in ids:
            self._write_one(sid, P.ADDR_TORQUE_ENABLE, 1, 0)
            self._write_one(sid, P.ADDR_BUS_WATCHDOG, 1, 0)
        for sid in ids:
            k = self.ids.index(sid)
            want = [(P.ADDR_RETURN_DELAY_TIME, 1, p.return_delay_us // 2),
                    (P.ADDR_OPERATING_MODE, 1, self.position_mode),
                    (P.ADDR_MAX_POSITION_LIMIT, 4, int(self.max_ticks[k])),
                    (P.ADDR_MIN_POSITION_LIMIT, 4, int(self.min_ticks[k]))]
            if p.current_limit_ma is not None:
                want.append((P.ADDR_CURRENT_LIMIT, 2, int(round(p.current_limit_ma * 1e-3 / self.model.current_unit_a))))
            for addr, size, value in want:
                if self._read_one(sid, addr, size) != value:
                    self._write_one(sid, addr, size, value)
            for addr, value in ((P.ADDR_POSITION_P_GAIN, p.position_p_gain), (P.ADDR_POSITION_I_GAIN, p.position_i_gain),
                                (P.ADDR_POSITION_D_GAIN, p.position_d_gain)):
                if value is not None:
                    self._write_one(sid, addr, 2, value)
            self._velocity_limit[k] = self._read_one(sid, P.ADDR_VELOCITY_LIMIT, 4)
            self._current_limit[k] = self._read_one(sid, P.ADDR_CURRENT_LIMIT, 2)
            if self.position_mode == P.MODE_CURRENT_BASED_POSITION:
                self._write_one(sid, P.ADDR_GOAL_CURRENT, 2, int(self._current_limit[k]))

    def _read_checked_state(self, what: str) -> np.ndarray:
        """Read every joint; a reading outside the limits (beyond the margin) means the calibration
        is wrong or the joint is somewhere it cannot be: refuse, naming the joints."""
        raw = self._with_retries(self._read_present)
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
            self._write_one(sid, P.ADDR_GOAL_POSITION, 4, int(ticks[self.ids.index(sid)]))
            self._write_one(sid, P.ADDR_TORQUE_ENABLE, 1, 1)

    def _arm_watchdog(self) -> None:
        units = self.params.bus_watchdog_ms // 20
        if units:
            self._sync_write(P.ADDR_BUS_WATCHDOG, 1, [0] * len(self.ids))
            self._sync_write(P.ADDR_BUS_WATCHDOG, 1, [units] * len(self.ids))

    def _rearm_watchdog_if_idle(self) -> None:
        """After a pause longer than the watchdog, the servos have stopped and refuse goals until the
        watchdog is cleared: clear and re-arm it before the next goal."""
        if self.params.bus_watchdog_ms and \
                time.monotonic() - self._last_bus_time > 0.8 * self.params.bus_watchdog_ms / 1000:
            self.stats["watchdog_rearms"] += 1
            self._arm_watchdog()

    def _servo_mode(self, mode: CommandMode) -> int:
        return {CommandMode.POSITION: self.position_mode, CommandMode.VELOCITY: P.MODE_VELOCITY,
                CommandMode.EFFORT: P.MODE_CURRENT}[mode]

    def _ensure_mode(self, servo_mode: int) -> None:
        """Operating Mode is in EEPROM: torque off, switch, goals that hold still, torque on."""
        if self._mode == servo_mode:
            return
        self.stats["mode_switches"] += 1
        n = len(self.ids)
        q = self.guard.trusted if self.guard.trusted is not None else self._ticks_to_q(self._read_present())
        self._sync_write(P.ADDR_TORQUE_ENABLE, 1, [0] * n)
        self._sync_write(P.ADDR_OPERATING_MODE, 1, [servo_mode] * n)
        self._mode = None
        if servo_mode in P.POSITION_MODES:
            if servo_mode == P.MODE_CURRENT_BASED_POSITION:   # the current bound of the position loop
                self._sync_write(P.ADDR_GOAL_CURRENT, 2, self._current_limit)
            self._sync_write(P.ADDR_GOAL_POSITION, 4, self._position_ticks(q))
        elif servo_mode == P.MODE_VELOCITY:
            self._sync_write(P.ADDR_GOAL_VELOCITY, 4, [0] * n)
        else:
            self._sync_write(P.ADDR_GOAL_CURRENT, 2, [0] * n)
        self._sync_write(P.ADDR_TORQUE_ENABLE, 1, [1] * n)
        # sync writes get no status: read back that every servo took the switch
        bad = [sid for sid in self.ids if self._read_one(sid, P.ADDR_OPERATING_MODE, 1) != servo_mode
               or self._read_one(sid, P.ADDR_TORQUE_ENABLE, 1) != 1]
        if bad:
            raise _BusError(f"servo(s) {self._names(bad)} did not switch to "
                            f"{P.OPERATING_MODE_NAMES[servo_mode]} mode with torque on", bad)
        self._mode = servo_mode
        log.info("dynamixel: operating mode -> %s", P.OPERATING_MODE_NAMES[servo_mode])

    def _hardware_errors(self, ids) -> dict[int, int]:
        errs = {}
        for sid in ids:
            bits = self._read_one(sid, P.ADDR_HARDWARE_ERROR_STATUS, 1)
            if bits:
                errs[sid] = bits
        return errs

    def _reboot(self, sid: int) -> None:
        log.warning("dynamixel: rebooting servo %d (%s) to clear its hardware error", sid, self._joint(sid))
        self._txn(self._ph.reboot, self._port, sid)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if self._ping(sid, retries=0) is not None:
                return
        raise _BusError(f"servo {sid} ({self._joint(sid)}) did not come back after a reboot", [sid])

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
                errors = self._hardware_errors(alerts)
            except _BusError:
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
    def _failed_cycle(self, e: _BusError) -> RobotState:
        self._count_failure(e)
        if self._last_state is None:
            raise DriverError(f"no state from the bus yet: {e}")
        self.stats["stale_reads"] += 1
        s = self._last_state
        return RobotState(s.stamp, s.q.copy(), s.qd.copy(), s.effort.copy(),
                          {**s.sensors, "stale": True, "bus_failures": self._failures})

    def _count_failure(self, e: _BusError) -> None:
        self._failures += 1
        log.warning("dynamixel: bus transaction failed (%d/%d in a row): %s",
                    self._failures, self.params.fault_after_failures, e)
        if self._failures >= self.params.fault_after_failures:
            self._latch(f"bus fault on {self.params.port} after {self._failures} failed cycles: {self._diagnose(e)}")
            raise DriverFault(self._fault)

    def _diagnose(self, e: _BusError) -> str:
        """Ping every servo once to say which ones are silent and which answer garbled."""
        silent, garbled = [], []
        for sid in self.ids:
            try:
                _, res, _ = self._txn(self._ph.ping, self._port, sid)
            except _BusError as port_error:
                return f"{port_error} (the adapter is gone or was unplugged)"
            if res == self._sdk.COMM_RX_CORRUPT:
                garbled.append(sid)
            elif res != self._sdk.COMM_SUCCESS:
                silent.append(sid)
        parts = []
        if silent:
            ms = _rx_timeout_ms(self.params.latency_timer_ms, 0)
            parts.append(f"servo ID(s) {self._names(silent)} do not answer within {ms:g} ms "
                         "(power, cable, or the adapter is gone)")
        if garbled:
            parts.append(f"servo ID(s) {self._names(garbled)} answer with corrupt packets (CRC: noise, a loose "
                         "connector or a baud rate mismatch)")
        return "; ".join(parts) or f"servo ID(s) {self._names(e.ids)} failed ({e})"

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
        try:
            if self._mode == P.MODE_VELOCITY:
                self._sync_write(P.ADDR_GOAL_VELOCITY, 4, [0] * n, retries=0)
            elif self._mode == P.MODE_CURRENT:
                self._sync_write(P.ADDR_GOAL_CURRENT, 2, [0] * n, retries=0)
            elif self._mode in P.POSITION_MODES and self.guard.trusted is not None:
                self._sync_write(P.ADDR_GOAL_POSITION, 4, self._position_ticks(self.guard.trusted), retries=0)
        except _BusError:
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
        try:
            if self._port is not None and self._port.is_open:
                self._port.closePort()
        except Exception as e:  # closing a vanished device
            log.debug("closing %s: %s", self.params.port, e)
        self._port = None

    def _check_usb_latency(self) -> None:
        """A USB serial adapter's latency timer (16 ms by default on FTDI) caps the loop rate."""
        name = Path(os.path.realpath(self.params.port)).name
        f = Path("/sys/bus/usb-serial/devices") / name / "latency_timer"
        try:
            ms = int(f.read_text())
        except (OSError, ValueError):
            return
        if ms > self.params.latency_timer_ms:
            log.warning("dynamixel: %s latency_timer is %d ms (> latency_timer_ms %g): the loop will be slow; "
                        "echo 1 | sudo tee %s", self.params.port, ms, self.params.latency_timer_ms, f)


_RESULT_TEXT = {-1000: "port busy", -1001: "tx failed", -1002: "rx failed", -2000: "bad instruction packet",
                -3000: "still receiving", -3001: "no status packet (timeout)", -3002: "corrupt status packet (CRC)",
                -9000: "not available"}


def _one_line(e: BaseException, limit: int = 200) -> str:
    """`module.Type: message` of an exception, on one bounded line (termios.error, OSError ...)."""
    kind = type(e).__name__ if type(e).__module__ == "builtins" else f"{type(e).__module__}.{type(e).__name__}"
    text = " ".join(f"{kind}: {e}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _rx_timeout_ms(latency_timer_ms: float, wire_ms: float) -> float:
    """How long a status packet is waited for: bytes on the wire + 2 x latency timer + 2 ms (the SDK's rule)."""
    return wire_ms + latency_timer_ms * 2.0 + 2.0


def _make_port_handler(sdk, port: str, latency_timer_ms: float):
    """dynamixel-sdk's PortHandler with the receive timeout based on our latency timer instead of
    the SDK's fixed 16 ms (timeout = bytes on the wire + 2 x latency timer + 2 ms, as in the SDK)."""

    class PortHandler(sdk.PortHandler):
        def setPacketTimeout(self, packet_length):
            self.packet_start_time = self.getCurrentTime()
            self.packet_timeout = _rx_timeout_ms(latency_timer_ms, self.tx_time_per_byte * packet_length)

    return PortHandler(port)


@register_driver("dynamixel")
def make_dynamixel_driver(config, **_kw) -> DynamixelDriver:
    return DynamixelDriver(config)
