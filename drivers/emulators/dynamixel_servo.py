"""One emulated Dynamixel X-series servo (`EmulatedServo`): its control table (EEPROM locked while
torque is on, goal values outside the limits refused), first-order motor dynamics advanced lazily
to the time it is asked about, the Bus Watchdog, hardware errors that turn torque off until a
reboot. `ServoSpec` says which servo it is and where its joint's hard stops are."""
from __future__ import annotations

import math
from dataclasses import dataclass

from s2r.drivers import dynamixel_protocol as P

# first-order dynamics of the emulated motors
POSITION_TIME_CONSTANT_S = 0.02     # position loop closed-loop time constant
VELOCITY_TIME_CONSTANT_S = 0.02     # velocity response time constant
COAST_TIME_CONSTANT_S = 0.05        # velocity decay with torque off (friction)
REBOOT_TIME_S = 0.05                # a rebooting servo is deaf for this long


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


class EmulatedServo:
    """One servo: its control table (`get`/`set` by item name, `read`/`write` by address, as the
    bus's packets address it) and its motor, advanced to `now` by `step`."""

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
    def step(self, now: float, quiet_until: float | None = None) -> None:
        """Advance the motor from `last_update` to `now`, tripping the bus watchdog on the way.
        `quiet_until`: the latest time the line is known to have been silent (a packet being
        handled may have arrived any time after it); the watchdog trips only on silence before it."""
        wd = self.get("bus_watchdog")
        if wd > 0 and self.get("torque_enable"):
            trip_at = self.last_rx + wd * P.WATCHDOG_UNIT_S
            if self.last_update < trip_at < (now if quiet_until is None else min(now, quiet_until)):
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
