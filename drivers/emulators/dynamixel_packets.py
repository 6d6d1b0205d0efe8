"""The servos on one emulated Dynamixel bus (`DynamixelBus`), the pure part: instruction bytes in,
status bytes out (Protocol 2.0: ping, read, write, reg write + action, reboot, sync and bulk read
and write, CRC checks, Status Return Level, Return Delay Time and wire time at the baud rate),
with fault injection (`FAULTS`: unplugged servos, dropped and corrupted packets, delays, hardware
errors, encoder offsets)."""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from s2r.drivers import dynamixel_protocol as P

from .dynamixel_servo import EmulatedServo, ServoSpec

FAULTS = ("unplug", "drop", "corrupt_crc", "delay", "hardware_error", "position_offset")


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
        self._quiet_until: float | None = None       # of the bytes `receive` is handling

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

    def receive(self, data: bytes, now: float, port_baudrate: int | None = None,
                quiet_until: float | None = None) -> Reply:
        """The status packets for `data`, handled at `now`. `quiet_until`: the latest time the line
        was seen silent before these bytes (the server's last empty poll or read); the bus watchdog
        judges silence up to it, so that a late wake-up of this process is not taken for a host
        gone quiet (a servo's firmware sees the bytes as they arrive; this process may not)."""
        reply = Reply()
        self._quiet_until = quiet_until
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
            s.step(now, self._quiet_until)
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
