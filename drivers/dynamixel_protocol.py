"""Dynamixel Protocol 2.0 and the X-series control table, shared by the driver and the emulator.

The driver talks to servos through dynamixel-sdk; this module holds what both sides must agree
on: instruction and error codes, the packet format (header FF FF FD 00, byte stuffing, CRC-16),
the X-series control table, the servo models we support and their units.

References: ROBOTIS e-Manual, "DYNAMIXEL Protocol 2.0" and the X-series control tables
(XM430-W350, XC330-M288, ...).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# ---------------------------------------------------------------------------------- packets
HEADER = bytes((0xFF, 0xFF, 0xFD, 0x00))
BROADCAST_ID = 0xFE
MAX_ID = 0xFC

INST_PING = 0x01
INST_READ = 0x02
INST_WRITE = 0x03
INST_REG_WRITE = 0x04
INST_ACTION = 0x05
INST_FACTORY_RESET = 0x06
INST_REBOOT = 0x08
INST_CLEAR = 0x10
INST_STATUS = 0x55
INST_SYNC_READ = 0x82
INST_SYNC_WRITE = 0x83
INST_FAST_SYNC_READ = 0x8A
INST_BULK_READ = 0x92
INST_BULK_WRITE = 0x93

# status packet error byte: bit 7 is the hardware-error alert, the low 7 bits an error number
ERR_ALERT = 0x80
ERR_RESULT_FAIL = 1
ERR_INSTRUCTION = 2
ERR_CRC = 3
ERR_DATA_RANGE = 4
ERR_DATA_LENGTH = 5
ERR_DATA_LIMIT = 6
ERR_ACCESS = 7

ERROR_NAMES = {
    ERR_RESULT_FAIL: "result fail", ERR_INSTRUCTION: "instruction error", ERR_CRC: "CRC error",
    ERR_DATA_RANGE: "data range error", ERR_DATA_LENGTH: "data length error",
    ERR_DATA_LIMIT: "data limit error", ERR_ACCESS: "access error",
}

# Hardware Error Status (70) bits
HW_INPUT_VOLTAGE = 0x01
HW_OVERHEATING = 0x04
HW_MOTOR_ENCODER = 0x08
HW_ELECTRICAL_SHOCK = 0x10
HW_OVERLOAD = 0x20
HW_ERROR_NAMES = {
    HW_INPUT_VOLTAGE: "input voltage", HW_OVERHEATING: "overheating",
    HW_MOTOR_ENCODER: "motor encoder", HW_ELECTRICAL_SHOCK: "electrical shock",
    HW_OVERLOAD: "overload",
}


def describe_hardware_error(bits: int) -> str:
    names = [name for bit, name in HW_ERROR_NAMES.items() if bits & bit]
    return ", ".join(names) if names else f"0x{bits:02X}"


def _crc_table(poly: int = 0x8005) -> tuple[int, ...]:
    # CRC-16 with polynomial x^16 + x^15 + x^2 + 1 (0x8005), MSB first, initial value 0:
    # the checksum of Protocol 2.0 packets.
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data, crc: int = 0) -> int:
    for b in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Byte stuffing: after every FF FF FD inside instruction+parameters insert an extra FD."""
    out = bytearray()
    for b in body:
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Inverse of `stuff`: FF FF FD FD -> FF FF FD."""
    out = bytearray()
    i = 0
    n = len(body)
    while i < n:
        b = body[i]
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF \
                and i + 1 < n and body[i + 1] == 0xFD:
            i += 1  # skip the stuffed FD
        i += 1
    return bytes(out)


def build_packet(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete Protocol 2.0 packet: header, id, length, instruction, stuffed params, CRC."""
    body = stuff(bytes((instruction,)) + bytes(params))
    length = len(body) + 2  # + CRC
    head = HEADER + bytes((servo_id, length & 0xFF, length >> 8))
    pkt = head + body
    crc = crc16(pkt)
    return pkt + bytes((crc & 0xFF, crc >> 8))


def build_status(servo_id: int, error: int, params: bytes = b"") -> bytes:
    """A status packet: instruction 0x55, then the error byte, then the parameters."""
    return build_packet(servo_id, INST_STATUS, bytes((error,)) + bytes(params))


@dataclass
class Packet:
    servo_id: int
    instruction: int
    params: bytes       # unstuffed
    crc_ok: bool
    raw: bytes          # as received, stuffed, with header and CRC


class PacketReader:
    """Incremental Protocol 2.0 parser for a byte stream (either direction).

    `feed(data, now)` returns the complete packets found so far. Bytes before a header are
    dropped; a packet that stays incomplete for longer than `stale_s` is abandoned and the reader
    resynchronises on the next header, like a servo's receive timeout.
    """

    def __init__(self, stale_s: float = 0.05, max_length: int = 1024):
        self.buf = bytearray()
        self.stale_s = stale_s
        self.max_length = max_length
        self._partial_since: float | None = None
        self.discarded = 0

    def feed(self, data: bytes, now: float) -> list[Packet]:
        self.buf += data
        if self._partial_since is not None and now - self._partial_since > self.stale_s:
            # abandon the stale partial packet: skip its header and look for the next one
            self._drop(1)
        out = []
        while True:
            start = self.buf.find(HEADER)
            if start < 0:
                keep = 3 if len(self.buf) >= 3 else len(self.buf)   # a header may straddle reads
                self._drop(len(self.buf) - keep)
                break
            if start:
                self._drop(start)
            if len(self.buf) < 7:
                break
            length = self.buf[5] | (self.buf[6] << 8)
            if length < 3 or length > self.max_length:
                self._drop(1)
                continue
            total = 7 + length
            if len(self.buf) < total:
                break
            raw = bytes(self.buf[:total])
            del self.buf[:total]
            self._partial_since = None
            crc_ok = crc16(raw[:-2]) == (raw[-2] | (raw[-1] << 8))
            body = unstuff(raw[7:-2])
            out.append(Packet(raw[4], body[0] if body else 0, body[1:], crc_ok, raw))
        if self.buf.startswith(HEADER):
            if self._partial_since is None:
                self._partial_since = now
        else:
            self._partial_since = None
        return out

    def _drop(self, n: int) -> None:
        if n > 0:
            del self.buf[:n]
            self.discarded += n
            self._partial_since = None


def u16(v: int) -> bytes:
    return int(v & 0xFFFF).to_bytes(2, "little")


def u32(v: int) -> bytes:
    return int(v & 0xFFFFFFFF).to_bytes(4, "little")


def to_signed(value: int, size: int) -> int:
    bits = 8 * size
    value &= (1 << bits) - 1
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


# ----------------------------------------------------------------------------- control table
EEPROM, RAM = "eeprom", "ram"


@dataclass(frozen=True)
class ControlItem:
    name: str
    address: int
    size: int
    writable: bool
    area: str
    signed: bool = False
    default: int = 0


def _item(name, address, size, writable, area, signed=False, default=0):
    return ControlItem(name, address, size, writable, area, signed, default)


# X-series (XM430 / XC330 / XL330 family), Protocol 2.0. Defaults are the factory values, except
# the ones the emulator overrides per model (model number, current limit, ...).
X_SERIES_TABLE: tuple[ControlItem, ...] = (
    _item("model_number", 0, 2, False, EEPROM),
    _item("model_information", 2, 4, False, EEPROM),
    _item("firmware_version", 6, 1, False, EEPROM, default=48),
    _item("id", 7, 1, True, EEPROM, default=1),
    _item("baud_rate", 8, 1, True, EEPROM, default=1),
    _item("return_delay_time", 9, 1, True, EEPROM, default=250),
    _item("drive_mode", 10, 1, True, EEPROM),
    _item("operating_mode", 11, 1, True, EEPROM, default=3),
    _item("secondary_id", 12, 1, True, EEPROM, default=255),
    _item("protocol_type", 13, 1, True, EEPROM, default=2),
    _item("homing_offset", 20, 4, True, EEPROM, signed=True),
    _item("moving_threshold", 24, 4, True, EEPROM, default=10),
    _item("temperature_limit", 31, 1, True, EEPROM, default=80),
    _item("max_voltage_limit", 32, 2, True, EEPROM, default=160),
    _item("min_voltage_limit", 34, 2, True, EEPROM, default=95),
    _item("pwm_limit", 36, 2, True, EEPROM, default=885),
    _item("current_limit", 38, 2, True, EEPROM, default=1193),
    _item("velocity_limit", 44, 4, True, EEPROM, default=200),
    _item("max_position_limit", 48, 4, True, EEPROM, default=4095),
    _item("min_position_limit", 52, 4, True, EEPROM, default=0),
    _item("shutdown", 63, 1, True, EEPROM, default=0x34),
    _item("torque_enable", 64, 1, True, RAM),
    _item("led", 65, 1, True, RAM),
    _item("status_return_level", 68, 1, True, RAM, default=2),
    _item("registered_instruction", 69, 1, False, RAM),
    _item("hardware_error_status", 70, 1, False, RAM),
    _item("velocity_i_gain", 76, 2, True, RAM, default=1920),
    _item("velocity_p_gain", 78, 2, True, RAM, default=100),
    _item("position_d_gain", 80, 2, True, RAM),
    _item("position_i_gain", 82, 2, True, RAM),
    _item("position_p_gain", 84, 2, True, RAM, default=800),
    _item("feedforward_2nd_gain", 88, 2, True, RAM),
    _item("feedforward_1st_gain", 90, 2, True, RAM),
    _item("bus_watchdog", 98, 1, True, RAM, signed=True),
    _item("goal_pwm", 100, 2, True, RAM, signed=True, default=885),
    _item("goal_current", 102, 2, True, RAM, signed=True, default=1193),
    _item("goal_velocity", 104, 4, True, RAM, signed=True),
    _item("profile_acceleration", 108, 4, True, RAM),
    _item("profile_velocity", 112, 4, True, RAM),
    _item("goal_position", 116, 4, True, RAM, signed=True),
    _item("realtime_tick", 120, 2, False, RAM),
    _item("moving", 122, 1, False, RAM),
    _item("moving_status", 123, 1, False, RAM),
    _item("present_pwm", 124, 2, False, RAM, signed=True),
    _item("present_current", 126, 2, False, RAM, signed=True),
    _item("present_velocity", 128, 4, False, RAM, signed=True),
    _item("present_position", 132, 4, False, RAM, signed=True),
    _item("velocity_trajectory", 136, 4, False, RAM, signed=True),
    _item("position_trajectory", 140, 4, False, RAM, signed=True),
    _item("present_input_voltage", 144, 2, False, RAM, default=120),
    _item("present_temperature", 146, 1, False, RAM, default=30),
)
CONTROL_TABLE_SIZE = 147
ITEMS: dict[str, ControlItem] = {it.name: it for it in X_SERIES_TABLE}
ITEM_AT: dict[int, ControlItem] = {it.address: it for it in X_SERIES_TABLE}

ADDR_MODEL_NUMBER = 0
ADDR_RETURN_DELAY_TIME = 9
ADDR_OPERATING_MODE = 11
ADDR_CURRENT_LIMIT = 38
ADDR_VELOCITY_LIMIT = 44
ADDR_MAX_POSITION_LIMIT = 48
ADDR_MIN_POSITION_LIMIT = 52
ADDR_TORQUE_ENABLE = 64
ADDR_STATUS_RETURN_LEVEL = 68
ADDR_HARDWARE_ERROR_STATUS = 70
ADDR_POSITION_D_GAIN = 80
ADDR_POSITION_I_GAIN = 82
ADDR_POSITION_P_GAIN = 84
ADDR_BUS_WATCHDOG = 98
ADDR_GOAL_CURRENT = 102
ADDR_GOAL_VELOCITY = 104
ADDR_PROFILE_ACCELERATION = 108
ADDR_PROFILE_VELOCITY = 112
ADDR_GOAL_POSITION = 116
ADDR_PRESENT_CURRENT = 126
ADDR_PRESENT_VELOCITY = 128
ADDR_PRESENT_POSITION = 132

# One sync read per cycle covers present current, velocity and position (126..135).
PRESENT_BLOCK_ADDRESS = ADDR_PRESENT_CURRENT
PRESENT_BLOCK_LENGTH = 10

# Operating Mode (11)
MODE_CURRENT = 0
MODE_VELOCITY = 1
MODE_POSITION = 3
MODE_EXTENDED_POSITION = 4
MODE_CURRENT_BASED_POSITION = 5
MODE_PWM = 16
OPERATING_MODE_NAMES = {
    MODE_CURRENT: "current", MODE_VELOCITY: "velocity", MODE_POSITION: "position",
    MODE_EXTENDED_POSITION: "extended position", MODE_CURRENT_BASED_POSITION: "current-based position",
    MODE_PWM: "PWM",
}
POSITION_MODES = (MODE_POSITION, MODE_EXTENDED_POSITION, MODE_CURRENT_BASED_POSITION)

# Baud Rate (8) register value -> bits per second
BAUD_RATES = {0: 9600, 1: 57600, 2: 115200, 3: 1_000_000, 4: 2_000_000, 5: 3_000_000,
              6: 4_000_000, 7: 4_500_000}
BAUD_CODES = {bps: code for code, bps in BAUD_RATES.items()}

# ------------------------------------------------------------------------------------ units
TICKS_PER_REV = 4096
CENTER_TICKS = 2048
RAD_PER_TICK = 2 * math.pi / TICKS_PER_REV
RAD_S_PER_VELOCITY_UNIT = 0.229 * 2 * math.pi / 60      # 0.229 rev/min per unit
WATCHDOG_UNIT_S = 0.020                                  # Bus Watchdog (98): 20 ms per unit
RETURN_DELAY_UNIT_S = 2e-6                               # Return Delay Time (9): 2 us per unit


@dataclass(frozen=True)
class ServoModel:
    """What differs between the X-series models we support.

    `torque_constant` (N*m/A) converts current to joint torque; it is the stall torque over the
    stall current from the datasheet, an approximation (torque is not linear in current near
    stall). Override it with the driver's `torque_constant` parameter after measuring.
    """

    name: str
    number: int
    current_unit_a: float
    torque_constant: float
    current_limit: int          # factory Current Limit (38), in current units
    velocity_limit: int         # factory Velocity Limit (44), in velocity units


MODELS: dict[str, ServoModel] = {m.name: m for m in (
    ServoModel("xm430-w350", 1020, 2.69e-3, 1.78, 1193, 128),
    ServoModel("xm430-w210", 1030, 2.69e-3, 1.30, 1193, 210),
    ServoModel("xm540-w270", 1120, 2.69e-3, 2.20, 2047, 128),
    ServoModel("xc330-m288", 1240, 1.0e-3, 0.52, 1750, 450),
    ServoModel("xc330-m181", 1230, 1.0e-3, 0.34, 1750, 700),
    ServoModel("xl330-m288", 1200, 1.0e-3, 0.35, 1750, 445),
    ServoModel("xl330-m077", 1190, 1.0e-3, 0.12, 1750, 1023),
)}
MODEL_BY_NUMBER: dict[int, ServoModel] = {m.number: m for m in MODELS.values()}


def model_name(number: int) -> str:
    m = MODEL_BY_NUMBER.get(number)
    return m.name if m else f"model number {number}"


# Calibration. The servo angle theta is measured from the servo's centre tick (2048):
#   theta = (ticks - 2048) * 2*pi/4096
# and the joint angle is  q = sign * (theta - offset), i.e. `offset` is the servo angle (rad) at
# the joint's zero and `sign` flips the direction.
def ticks_to_joint(ticks, offset: float, sign: int):
    return sign * ((ticks - CENTER_TICKS) * RAD_PER_TICK - offset)


def joint_to_ticks(q, offset: float, sign: int):
    """Joint angle (rad) -> servo ticks (float; round before writing)."""
    return (sign * q + offset) / RAD_PER_TICK + CENTER_TICKS
