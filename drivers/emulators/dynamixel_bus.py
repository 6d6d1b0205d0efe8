"""A Dynamixel X-series servo bus, emulated at the byte level (Protocol 2.0).

`DynamixelBus` is the pure part: bytes in -> status bytes out, with a control table per servo,
first-order motor dynamics advanced lazily on the wall clock, and fault injection.
`PtyBusEmulator` puts a bus behind a real pseudo-terminal pair so that an unmodified serial client
(dynamixel-sdk over pyserial, i.e. our driver) opens the slave path as if it were /dev/ttyUSB0.

Emulated: ping (unicast and broadcast), read, write, reg write + action, reboot, sync read,
sync write, bulk read, bulk write; CRC checks (a bad instruction CRC gets a CRC-error status);
Status Return Level; Return Delay Time and wire time at the port's baud rate; EEPROM locked while
torque is on; goal values outside the limits refused; the Bus Watchdog; hardware errors that turn
torque off until a reboot. Not emulated: fast sync/bulk read, factory reset, control-table
indirect addressing, Protocol 1.0.
"""
from __future__ import annotations

import math
import os
import random
import select
import termios
import threading
import time
import tty
from dataclasses import dataclass, field

from drivers import dynamixel_protocol as P

# first-order dynamics of the emulated motors
POSITION_TIME_CONSTANT_S = 0.02     # position loop closed-loop time constant
VELOCITY_TIME_CONSTANT_S = 0.02     # velocity response time constant
COAST_TIME_CONSTANT_S = 0.05        # velocity decay with torque off (friction)
REBOOT_TIME_S = 0.05                # a rebooting servo is deaf for this long

FAULTS = ("unplug", "drop", "corrupt_crc", "delay", "hardware_error", "position_offset")


@dataclass
class ServoSpec:
    """One emulated servo: its ID, model and where its joint starts and stops (in ticks)."""

    id: int
    model: str = "xm430-w350"
    initial_ticks: float = P.CENTER_TICKS
    hard_stop_lower: float = 0.0        # mechanical range of the joint the servo drives
    hard_stop_upper: float = 4095.0

    def to_dict(self) -> dict:
        return dict(id=self.id, model=self.model, initial_ticks=self.initial_ticks,
                    hard_stop_lower=self.hard_stop_lower, hard_stop_upper=self.hard_stop_upper)


@dataclass
class BusSpec:
    baudrate: int
    servos: list[ServoSpec]
    return_delay_time: int = 250    # factory value (500 us); drivers usually set 0
    seed: int = 0

    def to_dict(self) -> dict:
        return dict(baudrate=self.baudrate, servos=[s.to_dict() for s in self.servos],
                    return_delay_time=self.return_delay_time, seed=self.seed)

    @classmethod
    def from_dict(cls, d: dict) -> "BusSpec":
        return cls(int(d["baudrate"]), [ServoSpec(**s) for s in d["servos"]],
                   int(d.get("return_delay_time", 250)), int(d.get("seed", 0)))


@dataclass
class Fault:
    kind: str
    ids: frozenset[int] | None = None     # None: every servo
    rate: float = 1.0                     # probability per packet
    count: int | None = None              # stop after this many affected packets
    params: dict = field(default_factory=dict)

    def applies(self, servo_id: int, rng: random.Random) -> bool:
        if self.ids is not None and servo_id not in self.ids:
            return False
        if self.count is not None and self.count <= 0:
            return False
        if self.rate < 1.0 and rng.random() >= self.rate:
            return False
        if self.count is not None:
            self.count -= 1
        return True


class EmulatedServo:
    def __init__(self, spec: ServoSpec, baudrate: int, return_delay_time: int, now: float):
        if spec.model not in P.MODELS:
            raise ValueError(f"unknown servo model {spec.model!r} (known: {', '.join(P.MODELS)})")
        if not 0 <= spec.id <= P.MAX_ID:
            raise ValueError(f"servo id {spec.id} out of range 0..{P.MAX_ID}")
        self.spec = spec
        self.model = P.MODELS[spec.model]
        self.baud_code = P.BAUD_CODES[baudrate]
        self.return_delay_time = return_delay_time
        self.table = bytearray(P.CONTROL_TABLE_SIZE)
        self.pos = float(spec.initial_ticks)      # ticks, continuous
        self.vel = 0.0                            # ticks/s
        self.current = 0.0                        # current units
        self.last_update = now
        self.last_rx = now
        self.deaf_until = 0.0
        self.registered: tuple[int, bytes] | None = None
        self.position_offset = 0                  # injected encoder error, ticks
        self.persistent_hw_error = 0
        self.torque_off_count = 0                 # times torque went from on to off (diagnostics)
        self._load_defaults(eeprom=True)
        self._publish(now)

    # -- control table --------------------------------------------------------------------
    @property
    def id(self) -> int:
        return self.table[7]

    def get(self, name: str) -> int:
        it = P.ITEMS[name]
        v = int.from_bytes(self.table[it.address:it.address + it.size], "little")
        return P.to_signed(v, it.size) if it.signed else v

    def set(self, name: str, value: int) -> None:
        it = P.ITEMS[name]
        self.table[it.address:it.address + it.size] = (int(value) & ((1 << (8 * it.size)) - 1)) \
            .to_bytes(it.size, "little")

    def _load_defaults(self, eeprom: bool) -> None:
        for it in P.X_SERIES_TABLE:
            if it.area == P.RAM or eeprom:
                self.set(it.name, it.default)
        if eeprom:
            self.set("model_number", self.model.number)
            self.set("id", self.spec.id)
            self.set("baud_rate", self.baud_code)
            self.set("return_delay_time", self.return_delay_time)
            self.set("current_limit", self.model.current_limit)
            self.set("velocity_limit", self.model.velocity_limit)
        self.set("goal_current", self.get("current_limit"))
        self.set("goal_position", int(round(self.pos)))

    def snapshot(self) -> dict:
        d = {it.name: self.get(it.name) for it in P.X_SERIES_TABLE}
        d["model"] = self.model.name
        d["torque_off_count"] = self.torque_off_count
        return d

    # -- dynamics ---------------------------------------------------------------------------
    def step(self, now: float) -> None:
        """Advance the motor from `last_update` to `now`, tripping the bus watchdog on the way."""
        wd = self.get("bus_watchdog")
        if wd > 0 and self.get("torque_enable"):
            trip_at = self.last_rx + wd * P.WATCHDOG_UNIT_S
            if self.last_update < trip_at < now:
                self._integrate(trip_at - self.last_update)
                self.last_update = trip_at
                self._trip_watchdog()
        self._integrate(max(0.0, now - self.last_update))
        self.last_update = now
        self._publish(now)

    def _trip_watchdog(self) -> None:
        # the servo stops and the goal values become read-only until Bus Watchdog is written 0
        self.set("bus_watchdog", -1)
        self.set("goal_position", int(round(self.pos)))
        self.set("goal_velocity", 0)
        self.set("goal_current", 0 if self.get("operating_mode") == P.MODE_CURRENT
                 else self.get("current_limit"))

    def _vmax(self) -> float:
        """Velocity limit in ticks/s (Profile Velocity if set, else Velocity Limit)."""
        units = self.get("profile_velocity") or self.get("velocity_limit")
        return max(units, 1) * P.RAD_S_PER_VELOCITY_UNIT / P.RAD_PER_TICK

    def _integrate(self, dt: float) -> None:
        if dt <= 0:
            return
        mode = self.get("operating_mode")
        lo, hi = self.spec.hard_stop_lower, self.spec.hard_stop_upper
        current_limit = self.get("current_limit")
        if not self.get("torque_enable"):
            self.vel *= math.exp(-dt / COAST_TIME_CONSTANT_S)
            self.current = 0.0
        elif mode in P.POSITION_MODES:
            target = float(self.get("goal_position"))
            err = target - self.pos
            vmax = self._vmax()
            if abs(err) / POSITION_TIME_CONSTANT_S > vmax:
                step = math.copysign(min(abs(err), vmax * dt), err)
            else:
                step = err * (1.0 - math.exp(-dt / POSITION_TIME_CONSTANT_S))
            self.vel = step / dt
            # a position loop draws current in proportion to its error (full current at ~17 deg)
            limit = current_limit
            if mode == P.MODE_CURRENT_BASED_POSITION:
                limit = min(limit, abs(self.get("goal_current")))
            self.current = max(-limit, min(limit, (target - self.pos - step) * current_limit / 200.0))
            self.pos += step
        elif mode == P.MODE_VELOCITY:
            target_vel = self.get("goal_velocity") * P.RAD_S_PER_VELOCITY_UNIT / P.RAD_PER_TICK
            a = 1.0 - math.exp(-dt / VELOCITY_TIME_CONSTANT_S)
            self.vel += (target_vel - self.vel) * a
            self.pos += self.vel * dt
            self.current = max(-current_limit, min(current_limit, (target_vel - self.vel) * 0.5))
        elif mode == P.MODE_CURRENT:
            goal = max(-current_limit, min(current_limit, self.get("goal_current")))
            # an unloaded motor: free speed proportional to current, full speed at the limit
            target_vel = self._vmax() * goal / max(current_limit, 1)
            a = 1.0 - math.exp(-dt / VELOCITY_TIME_CONSTANT_S)
            self.vel += (target_vel - self.vel) * a
            self.pos += self.vel * dt
            self.current = float(goal)
        else:   # PWM mode: treated as torque off
            self.vel *= math.exp(-dt / COAST_TIME_CONSTANT_S)
            self.current = 0.0
        if self.pos < lo or self.pos > hi:      # against a hard stop
            self.pos = min(max(self.pos, lo), hi)
            self.vel = 0.0

    def _publish(self, now: float) -> None:
        ticks = int(round(self.pos)) + self.position_offset
        self.set("present_position", ticks)
        self.set("position_trajectory", int(round(self.pos)))
        vel_units = int(round(self.vel * P.RAD_PER_TICK / P.RAD_S_PER_VELOCITY_UNIT))
        self.set("present_velocity", vel_units)
        self.set("velocity_trajectory", vel_units)
        self.set("present_current", int(round(self.current)))
        self.set("moving", int(abs(vel_units) > self.get("moving_threshold")))
        self.set("realtime_tick", int(now * 1000) % 32768)

    # -- hardware error / reboot ---------------------------------------------------------------
    def raise_hardware_error(self, bits: int) -> None:
        self.set("hardware_error_status", self.get("hardware_error_status") | bits)
        self._torque_off()

    def _torque_off(self) -> None:
        if self.get("torque_enable"):
            self.torque_off_count += 1
        self.set("torque_enable", 0)

    def reboot(self, now: float) -> None:
        self._torque_off()
        self._load_defaults(eeprom=False)
        if self.persistent_hw_error:
            self.raise_hardware_error(self.persistent_hw_error)
        self.deaf_until = now + REBOOT_TIME_S
        self.last_rx = now

    # -- memory access ---------------------------------------------------------------------
    def read(self, address: int, length: int) -> tuple[int, bytes]:
        if length < 1 or address + length > P.CONTROL_TABLE_SIZE:
            return P.ERR_ACCESS, b""
        return 0, bytes(self.table[address:address + length])

    def write(self, address: int, data: bytes, now: float) -> int:
        """Validate the whole write first; apply it only if every item accepts its value."""
        end = address + len(data)
        if not data or end > P.CONTROL_TABLE_SIZE:
            return P.ERR_ACCESS
        items = [it for it in P.X_SERIES_TABLE if it.address < end and it.address + it.size > address]
        if not items:
            return P.ERR_ACCESS
        values = {}
        for it in items:
            if it.address < address or it.address + it.size > end:
                return P.ERR_DATA_LENGTH
            raw = int.from_bytes(data[it.address - address:it.address - address + it.size], "little")
            values[it] = P.to_signed(raw, it.size) if it.signed else raw
        torque = self.get("torque_enable")
        for it, v in values.items():
            err = self._check(it, v, torque, values)
            if err:
                return err
        for it, v in values.items():
            if it.name == "torque_enable" and not v:
                self._torque_off()
            self.set(it.name, v)
            if it.name == "torque_enable" and v and not torque:
                # torque on: hold where the motor is unless a goal was written with it
                self.vel = 0.0
            if it.name == "bus_watchdog":
                self.last_rx = now
        return 0

    def _check(self, it: P.ControlItem, v: int, torque: int, values: dict) -> int:
        if not it.writable:
            return P.ERR_ACCESS
        if it.area == P.EEPROM and torque:
            return P.ERR_ACCESS
        name = it.name
        if name == "torque_enable":
            if v not in (0, 1):
                return P.ERR_DATA_RANGE
            if v and self.get("hardware_error_status"):
                return P.ERR_RESULT_FAIL     # only a reboot re-enables torque after a hardware error
        elif name == "operating_mode" and v not in P.OPERATING_MODE_NAMES:
            return P.ERR_DATA_RANGE
        elif name == "baud_rate" and v not in P.BAUD_RATES:
            return P.ERR_DATA_RANGE
        elif name == "id" and not 0 <= v <= P.MAX_ID:
            return P.ERR_DATA_RANGE
        elif name == "bus_watchdog" and not 0 <= v <= 127:
            return P.ERR_DATA_RANGE
        elif name.startswith("goal_"):
            if self.get("bus_watchdog") == -1:
                return P.ERR_DATA_RANGE
            if name == "goal_position" and self.get("operating_mode") in (P.MODE_POSITION, P.MODE_CURRENT_BASED_POSITION):
                if not self.get("min_position_limit") <= v <= self.get("max_position_limit"):
                    return P.ERR_DATA_LIMIT
            if name == "goal_velocity" and abs(v) > self.get("velocity_limit"):
                return P.ERR_DATA_LIMIT
            if name == "goal_current" and abs(v) > self.get("current_limit"):
                return P.ERR_DATA_LIMIT
        return 0


@dataclass
class Reply:
    """Status bytes to send back, and the bus time (s) they would take at the port's baud rate."""

    data: bytes = b""
    wire_s: float = 0.0
    delay_s: float = 0.0     # injected delay, on top of the wire time


class DynamixelBus:
    """The servos on one bus; `receive(bytes, now)` -> the status packets they send back."""

    def __init__(self, spec: BusSpec, now: float | None = None):
        now = time.monotonic() if now is None else now
        self.spec = spec
        self.baudrate = spec.baudrate
        self.servos: dict[int, EmulatedServo] = {}
        for s in spec.servos:
            if s.id in self.servos:
                raise ValueError(f"duplicate servo id {s.id}")
            self.servos[s.id] = EmulatedServo(s, spec.baudrate, spec.return_delay_time, now)
        self.reader = P.PacketReader()
        self.faults: list[Fault] = []
        self.rng = random.Random(spec.seed)
        self.stats = dict(packets=0, crc_errors=0, replies=0, dropped=0, corrupted=0,
                          ignored_baud=0)

    # -- faults ---------------------------------------------------------------------------------
    def inject(self, fault: str, ids=None, rate: float = 1.0, count: int | None = None, **params) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})")
        idset = None if ids is None else frozenset(int(i) for i in ([ids] if isinstance(ids, int) else ids))
        if idset is not None and not idset <= set(self.servos):
            raise ValueError(f"no servo with id {sorted(idset - set(self.servos))} on this bus")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        now = time.monotonic()
        if fault == "hardware_error":
            bits = int(params.get("bits", P.HW_OVERLOAD))
            for sid in (idset if idset is not None else self.servos):
                servo = self.servos[sid]
                servo.step(now)
                servo.raise_hardware_error(bits)
                if params.get("persistent", False):
                    servo.persistent_hw_error |= bits
            return
        if fault == "position_offset":
            for sid in (idset if idset is not None else self.servos):
                self.servos[sid].position_offset = int(params.get("ticks", 1024))
                self.servos[sid].step(now)
            return
        if fault == "delay":
            params.setdefault("seconds", 0.1)
        if fault == "drop":
            packets = params.setdefault("packets", "status")
            if packets not in ("status", "instruction"):
                raise ValueError("drop: packets must be 'status' or 'instruction'")
        self.faults.append(Fault(fault, idset, float(rate), count, dict(params)))

    def clear(self, fault: str | None = None) -> None:
        """Remove injected faults (all, or one kind). A servo's latched hardware error stays until it
        is rebooted, as on a real servo; clearing only removes the cause."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})")
        self.faults = [f for f in self.faults if fault is not None and f.kind != fault]
        now = time.monotonic()
        for s in self.servos.values():
            if fault in (None, "hardware_error"):
                s.persistent_hw_error = 0
            if fault in (None, "position_offset"):
                s.position_offset = 0
                s.step(now)

    def _fault(self, kind: str, servo_id: int, **match) -> Fault | None:
        for f in self.faults:
            if f.kind == kind and all(f.params.get(k) == v for k, v in match.items()) \
                    and f.applies(servo_id, self.rng):
                return f
        return None

    def _unplugged(self, servo_id: int) -> bool:
        return any(f.kind == "unplug" and (f.ids is None or servo_id in f.ids) for f in self.faults)

    # -- packets --------------------------------------------------------------------------------
    def snapshot(self, now: float | None = None) -> dict[int, dict]:
        now = time.monotonic() if now is None else now
        out = {}
        for sid, s in self.servos.items():
            s.step(now)
            out[sid] = s.snapshot()
        return out

    def receive(self, data: bytes, now: float, port_baudrate: int | None = None) -> Reply:
        reply = Reply()
        for pkt in self.reader.feed(data, now):
            self.stats["packets"] += 1
            reply.wire_s += len(pkt.raw) * 10.0 / self.baudrate     # the instruction on the wire
            if port_baudrate is not None and port_baudrate != self.baudrate:
                # at the wrong baud rate the servos see noise, not packets
                self.stats["ignored_baud"] += 1
                continue
            for sid, status, delay in self._handle(pkt, now):
                if self._fault("drop", sid, packets="status"):
                    self.stats["dropped"] += 1
                    continue
                if self._fault("corrupt_crc", sid):
                    status = status[:-2] + bytes((status[-2] ^ 0xA5, status[-1] ^ 0x5A))
                    self.stats["corrupted"] += 1
                f = self._fault("delay", sid)
                reply.wire_s += delay + len(status) * 10.0 / self.baudrate
                reply.delay_s += f.params["seconds"] if f else 0.0
                reply.data += status
                self.stats["replies"] += 1
        return reply

    def _rekey(self) -> None:
        """A write to ID (7) moves the servo to its new address."""
        if any(sid != s.id for sid, s in self.servos.items()):
            self.servos = {s.id: s for s in self.servos.values()}

    def _listeners(self, ids, now: float) -> list[EmulatedServo]:
        """Servos among `ids` that hear this packet (present, plugged in, not rebooting)."""
        out = []
        for sid in ids:
            s = self.servos.get(sid)
            if s is None or self._unplugged(sid) or now < s.deaf_until:
                continue
            if self._fault("drop", sid, packets="instruction"):
                self.stats["dropped"] += 1
                continue
            s.step(now)
            s.last_rx = now
            out.append(s)
        return out

    def _status(self, s: EmulatedServo, error: int, params: bytes = b"", level: int = 2):
        """(id, packet, return delay) if the servo's Status Return Level allows replying."""
        if s.get("status_return_level") < level:
            return None
        if s.get("hardware_error_status"):
            error |= P.ERR_ALERT
        return (s.id, P.build_status(s.id, error, params),
                s.get("return_delay_time") * P.RETURN_DELAY_UNIT_S)

    def _handle(self, pkt: P.Packet, now: float) -> list:
        inst, prm, bid = pkt.instruction, pkt.params, pkt.servo_id
        broadcast = bid == P.BROADCAST_ID
        if not pkt.crc_ok:
            self.stats["crc_errors"] += 1
            if broadcast:
                return []
            targets = self._listeners([bid], now)
            return [r for r in (self._status(s, P.ERR_CRC) for s in targets) if r]
        out = []

        def add(r):
            if r:
                out.append(r)

        if inst == P.INST_PING:
            # ping is answered whatever the Status Return Level
            for s in self._listeners(sorted(self.servos) if broadcast else [bid], now):
                add(self._status(s, 0, P.u16(s.get("model_number")) + bytes((s.get("firmware_version"),)), level=0))
        elif inst in (P.INST_READ, P.INST_WRITE, P.INST_REG_WRITE):
            if broadcast and inst == P.INST_READ:
                return []
            if len(prm) < (4 if inst == P.INST_READ else 3):
                for s in ([] if broadcast else self._listeners([bid], now)):
                    add(self._status(s, P.ERR_DATA_LENGTH))
                return out
            addr = prm[0] | (prm[1] << 8)
            for s in self._listeners(sorted(self.servos) if broadcast else [bid], now):
                if inst == P.INST_READ:
                    err, data = s.read(addr, prm[2] | (prm[3] << 8))
                    add(self._status(s, err, data, level=1))
                elif inst == P.INST_WRITE:
                    err = s.write(addr, prm[2:], now)
                    if not broadcast:
                        add(self._status(s, err))
                    self._rekey()
                else:
                    s.registered = (addr, bytes(prm[2:]))
                    s.set("registered_instruction", 1)
                    if not broadcast:
                        add(self._status(s, 0))
        elif inst == P.INST_ACTION:
            for s in self._listeners(sorted(self.servos) if broadcast else [bid], now):
                err = P.ERR_INSTRUCTION
                if s.registered is not None:
                    err = s.write(s.registered[0], s.registered[1], now)
                    s.registered = None
                    s.set("registered_instruction", 0)
                if not broadcast:
                    add(self._status(s, err))
        elif inst == P.INST_REBOOT:
            for s in self._listeners(sorted(self.servos) if broadcast else [bid], now):
                if not broadcast:
                    add(self._status(s, 0))
                s.reboot(now)
        elif inst in (P.INST_SYNC_READ, P.INST_SYNC_WRITE):
            if not broadcast or len(prm) < 4:
                return []
            addr, length = prm[0] | (prm[1] << 8), prm[2] | (prm[3] << 8)
            body = prm[4:]
            if inst == P.INST_SYNC_READ:
                ids = list(body)
                for s in self._listeners(ids, now):
                    err, data = s.read(addr, length)
                    add(self._status(s, err, data, level=1))
            else:
                chunk = 1 + length
                entries = {body[i]: body[i + 1:i + chunk] for i in range(0, len(body) - chunk + 1, chunk)}
                for s in self._listeners(list(entries), now):
                    s.write(addr, entries[s.id], now)
        elif inst in (P.INST_BULK_READ, P.INST_BULK_WRITE):
            if not broadcast:
                return []
            i, entries = 0, []
            while i + 5 <= len(prm):
                sid, addr, length = prm[i], prm[i + 1] | (prm[i + 2] << 8), prm[i + 3] | (prm[i + 4] << 8)
                if inst == P.INST_BULK_READ:
                    entries.append((sid, addr, length, b""))
                    i += 5
                else:
                    entries.append((sid, addr, length, bytes(prm[i + 5:i + 5 + length])))
                    i += 5 + length
            for sid, addr, length, data in entries:
                for s in self._listeners([sid], now):
                    if inst == P.INST_BULK_READ:
                        err, d = s.read(addr, length)
                        add(self._status(s, err, d, level=1))
                    else:
                        s.write(addr, data, now)
        else:
            # fast sync/bulk read, factory reset, clear: not emulated
            if not broadcast:
                for s in self._listeners([bid], now):
                    add(self._status(s, P.ERR_INSTRUCTION))
        return out


# ------------------------------------------------------------------------------ the pty side
_TERMIOS_BAUD = {getattr(termios, f"B{b}"): b for b in P.BAUD_RATES.values() if hasattr(termios, f"B{b}")}


class PtyBusEmulator:
    """A `DynamixelBus` behind a pseudo-terminal: open `port` with any serial library.

    The serving thread reads the pty master, answers each instruction and, with `realtime=True`,
    waits for the time the exchange would take on a real bus at the port's baud rate (bytes at
    10 bits each plus each servo's Return Delay Time) before the reply appears. The baud rate the
    client set on the port is checked against the servos' Baud Rate register, like real hardware:
    a mismatch gets no answer.
    """

    def __init__(self, spec: BusSpec, realtime: bool = True):
        self.bus = DynamixelBus(spec)
        self.realtime = realtime
        self.lock = threading.Lock()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        # the slave stays open here too: the client's baud rate is read from it, and the master
        # does not see EIO while no client has the port open
        self.port = os.ttyname(self._slave)
        os.set_blocking(self._master, False)
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._busy_until = 0.0
        self.error: BaseException | None = None

    def start(self) -> "PtyBusEmulator":
        self._thread = threading.Thread(target=self._serve, name="dxl-bus-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(timeout=5)
            self._thread = None
        for fd in (self._master, self._slave, self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._master = self._slave = -1

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def inject(self, fault: str, **kw) -> None:
        with self.lock:
            self.bus.inject(fault, **kw)

    def clear(self, fault: str | None = None) -> None:
        with self.lock:
            self.bus.clear(fault)

    def snapshot(self, timeout: float = 2.0) -> dict[int, dict]:
        """Every servo's control table, after all bytes written to the port so far are handled."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if not self._pending() or time.monotonic() > deadline:
                    return self.bus.snapshot()
            time.sleep(0.001)

    def _pending(self) -> bool:
        try:
            return bool(select.select([self._master], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def stats(self) -> dict:
        with self.lock:
            return dict(self.bus.stats)

    def port_baudrate(self) -> int | None:
        try:
            return _TERMIOS_BAUD.get(termios.tcgetattr(self._slave)[5])
        except termios.error:
            return None

    def _serve(self) -> None:
        try:
            poller = select.poll()
            poller.register(self._master, select.POLLIN)
            poller.register(self._stop_r, select.POLLIN)
            while True:
                events = dict(poller.poll(100))
                if self._stop_r in events:
                    return
                if self._master not in events:
                    continue
                with self.lock:     # read and handle under the lock: snapshot() sees all or nothing
                    try:
                        data = os.read(self._master, 65536)
                    except BlockingIOError:
                        continue
                    except OSError:     # the slave side went away
                        data = None
                    if data is not None:
                        t_rx = time.monotonic()
                        reply = self.bus.receive(data, t_rx, self.port_baudrate())
                if data is None:
                    time.sleep(0.01)
                    continue
                # the bus carries one packet at a time: this exchange starts when the last ends
                self._busy_until = max(t_rx, self._busy_until) + reply.delay_s \
                    + (reply.wire_s if self.realtime else 0.0)
                if not reply.data:
                    continue
                remaining = self._busy_until - time.monotonic()
                if remaining > 0:
                    time.sleep(remaining)
                view = memoryview(reply.data)
                while view:
                    try:
                        n = os.write(self._master, view)
                        view = view[n:]
                    except BlockingIOError:
                        select.select([], [self._master], [], 0.1)
        except BaseException as e:     # surfaced to the owner through `error`
            self.error = e
