"""`driver:` of a hardware config: one section type per backend, told apart by `driver.type`.

Each section is a pydantic dataclass: its fields are the backend's parameters with their one
default, type and bounds; the validated section is what the driver runs with (`self.params`).
`check_config(cfg)` checks what depends on the rest of the config (servo ids, joint names, modes)
and `resolve(cfg, ...)` fills what defaults from it (periods); both raise `cfg.error(key, reason)`.

The backends are a registry (`register_driver_section`): the hardware config's `driver` field is a
discriminated union of every registered section, rebuilt when one is added. A driver shipped
elsewhere registers its section next to its factory (`drivers.base.register_driver`):

    @register_driver_section
    @pydantic.dataclasses.dataclass(frozen=True, kw_only=True, config=SECTION_CONFIG)
    class CanbusSection(DriverSection):
        type: Literal["canbus"]
        interface: Name = "can0"
"""

import dataclasses
import functools
import math
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, ConfigDict, Field, StrictStr, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from ..yamlio import excerpt, keyname
from .errors import fail, to_config_error, with_message
from .types import MAX_TEXT, Flag, Int, Number, drop_nulls

SECTION_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)
COMMAND_MODES = ("position", "velocity", "effort")

# What a Dynamixel X servo bus is checked against (drivers/dynamixel_protocol.py has the register
# map and unit conversions; tests/unit/test_schema.py checks that the two agree).
DXL_BAUD_RATES = (9600, 57600, 115200, 1_000_000, 2_000_000, 3_000_000, 4_000_000)
DXL_MODELS = ("xm430-w350", "xm430-w210", "xm540-w270", "xc330-m288", "xc330-m181", "xl330-m288", "xl330-m077")
DXL_MAX_ID = 252
DXL_TICKS_PER_REV, DXL_CENTER_TICKS = 4096, 2048
DXL_POSITION_MODES = ("position", "current_based_position")

ROS2_DEFAULT_COMMAND_TOPICS = {
    "position": "/forward_position_controller/commands",
    "velocity": "/forward_velocity_controller/commands",
    "effort": "/forward_effort_controller/commands",
}

ModeName = Annotated[Literal["position", "velocity", "effort"],
                     with_message(lambda v: f"unknown command mode {excerpt(v)} (position, velocity, effort)")]


def _some_modes(v):
    if not v:
        raise fail("at least one command mode is required")
    return v


@dataclass(frozen=True, kw_only=True, config=SECTION_CONFIG)
class DriverSection:
    """The part every backend shares: its type and the command modes the robot accepts."""

    type: str
    modes: Annotated[tuple[ModeName, ...], AfterValidator(_some_modes),
                     Field(description="command modes the robot accepts")] = COMMAND_MODES

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_absent(cls, data):
        return drop_nulls(data, cls.__pydantic_fields__)

    def check_config(self, cfg) -> None:
        """Refuse what does not fit the rest of `cfg` (a HardwareConfig): `raise cfg.error(key, why)`."""

    def resolve(self, cfg, **options) -> "DriverSection":
        """The section the driver runs with: checked against `cfg`, defaults that depend on it filled."""
        self.check_config(cfg)
        return self


@dataclass(frozen=True, kw_only=True, config=SECTION_CONFIG)
class SimSection(DriverSection):
    """The PyBullet simulator: no parameters of its own (the `sim:` section sets physics)."""

    type: Literal["sim"]


# ---------------------------------------------------------------------------------- dynamixel
def _device(v):
    if not v or len(v) > MAX_TEXT or not v.isprintable():
        raise fail(f"expected a device path, got {excerpt(v)}")
    return v


def _dxl_watchdog(v):
    if v and v < 20:
        raise fail(f"the servo's watchdog counts in 20 ms units; use 0 (off) or 20..2540, got {v}")
    return v


def _dxl_baud(v):
    if v not in DXL_BAUD_RATES:
        raise fail(f"{v} is not a Dynamixel X baud rate ({', '.join(map(str, DXL_BAUD_RATES))})")
    return v


def _protocol(v):
    if v != 2.0:
        raise fail(f"only Protocol 2.0 is supported, got {v}")
    return v


def dxl_ticks(q: float, offset: float, sign: int) -> float:
    """Joint position (rad) -> servo ticks, `raw = sign * q + offset` from the centre tick."""
    return (sign * q + offset) * DXL_TICKS_PER_REV / (2 * math.pi) + DXL_CENTER_TICKS


@dataclass(frozen=True, kw_only=True, config=SECTION_CONFIG)
class DynamixelParams(DriverSection):
    """Dynamixel X servos on one serial bus (Protocol 2.0); every joint needs its servo `id`."""

    type: Literal["dynamixel"]
    port: Annotated[StrictStr, AfterValidator(_device),
                    Field(description="serial device, e.g. /dev/ttyUSB0 (an emulated bus supplies one)")] | None = None
    baudrate: Annotated[int, Field(strict=True, json_schema_extra={"enum": list(DXL_BAUD_RATES)}),
                        AfterValidator(_dxl_baud)] = 1_000_000
    model: Annotated[Literal[DXL_MODELS], with_message(
        lambda v: f"unknown servo model {excerpt(v)} (supported: {', '.join(DXL_MODELS)})")] = "xm430-w350"
    protocol_version: Annotated[Number(1.0, 2.0), AfterValidator(_protocol)] = 2.0
    position_mode: Literal[DXL_POSITION_MODES] = "position"
    torque_off_on_disconnect: Flag = True
    retries: Int(0, 10) = Field(2, description="immediate retries of a failed transaction")
    fault_after_failures: Int(1, 1000) = Field(3, description="consecutive failed cycles before a latched fault")
    latency_timer_ms: Number(0.5, 100) = Field(16.0, description="USB adapter latency timer; receive timeout "
                                                                 "= 2 x this + 2 ms")
    bus_watchdog_ms: Annotated[Int(0, 127 * 20), AfterValidator(_dxl_watchdog)] = Field(
        100, description="servos stop by themselves this long after the bus goes quiet; 0: off")
    return_delay_us: Int(0, 508) = 0
    reading_margin: Number(0.0, math.pi) = Field(0.2, description="rad outside the limits before a reading "
                                                                   "is not trusted")
    untrusted_budget: Int(1, 1000) = Field(3, description="cycles of untrusted readings before a latched fault")
    torque_constant: Number(1e-6, 100) | None = Field(None, description="N m per A; default: the servo model's")
    current_limit_ma: Number(1, 20000) | None = None
    position_p_gain: Int(0, 16383) | None = None
    position_i_gain: Int(0, 16383) | None = None
    position_d_gain: Int(0, 16383) | None = None

    def check_config(self, cfg) -> None:
        seen: dict[int, str] = {}
        for i, j in enumerate(cfg.joints):
            if j.id is None:
                raise cfg.error(f"joints[{i}].id", "a dynamixel joint needs its servo id")
            if j.id > DXL_MAX_ID:
                raise cfg.error(f"joints[{i}].id", f"servo ids are 0..{DXL_MAX_ID}, got {j.id}")
            if j.id in seen:
                raise cfg.error(f"joints[{i}].id", f"servo id {j.id} is also used by joint {seen[j.id]!r}")
            seen[j.id] = j.name
            a, b = (dxl_ticks(x, j.offset, j.sign) for x in (j.limits.lower, j.limits.upper))
            if min(a, b) < 0 or max(a, b) > DXL_TICKS_PER_REV - 1:
                raise cfg.error(f"joints[{i}].calibration", f"joint {j.name!r}: limits "
                                f"[{j.limits.lower:g}, {j.limits.upper:g}] map to servo ticks "
                                f"[{min(a, b):.0f}, {max(a, b):.0f}], outside the servo's 0..4095: check offset/sign")

    def resolve(self, cfg, require_port: bool = True) -> "DynamixelParams":
        """`require_port`: the driver needs one; a config checked at load or an emulator does not."""
        self.check_config(cfg)
        if self.port is None and require_port:
            raise cfg.error("driver.port", "missing required key (the serial device, e.g. /dev/ttyUSB0)")
        return self


# ---------------------------------------------------------------------------------- ros2 bridge
def _topic(v):
    if not (0 < len(v) <= 256 and v.isprintable() and " " not in v):
        raise fail(f"expected a topic name, got {excerpt(v)}")
    return v


Topic = Annotated[StrictStr, AfterValidator(_topic), with_message(lambda v: f"expected a topic name, got {excerpt(v)}")]


def _node_name(v):
    if not v.replace("_", "").isalnum() or v[0].isdigit() or len(v) > 256:
        raise fail(f"expected a ROS node name (letters, digits, _), got {excerpt(v)}")
    return v


def _robot_joint(v):
    if not v or len(v) > 256 or not v.isprintable():
        raise fail(f"expected the robot's joint name, got {excerpt(v)}")
    return v


@dataclass(frozen=True, kw_only=True, config=SECTION_CONFIG)
class Ros2BridgeParams(DriverSection):
    """An arm that has a ROS 2 driver (ros2_control): JointState in, forward command or trajectory
    controllers out."""

    type: Literal["ros2"]
    joint_states_topic: Topic = "/joint_states"
    command_interface: Annotated[Literal["forward", "trajectory"], with_message(
        lambda v: f"must be forward or trajectory; got {excerpt(v)}")] = "forward"
    command_topics: Annotated[dict[Annotated[Literal["position", "velocity", "effort"], with_message(
        lambda v: "unknown command mode (position, velocity, effort)")], Topic],
        Field(description="mode -> Float64MultiArray topic; default: /forward_<mode>_controller/commands")] = \
        Field(default_factory=dict)
    trajectory_topic: Topic = "/joint_trajectory_controller/joint_trajectory"
    trajectory_lookahead_s: Number(1e-4, 10.0) | None = Field(None, description="default: two control periods")
    joint_map: Annotated[dict[StrictStr, Annotated[StrictStr, AfterValidator(_robot_joint), with_message(
        lambda v: f"expected the robot's joint name, got {excerpt(v)}")]],
        Field(description="config joint -> the robot's joint name")] = Field(default_factory=dict)
    stale_after_s: Number(1e-3, 60.0) = 0.1
    connect_timeout_s: Number(0.1, 600.0) = 10.0
    read_wait_s: Number(0.0, 10.0) | None = Field(None, description="default: one control period")
    domain_id: Int(0, 232) | None = None
    node_name: Annotated[StrictStr, AfterValidator(_node_name), with_message(
        lambda v: f"expected a ROS node name (letters, digits, _), got {excerpt(v)}")] = "s2r_ros2_bridge"
    reading_margin: Number(0.0, math.pi) = 0.2
    untrusted_budget: Int(1, 1000) = 3

    def check_config(self, cfg) -> None:
        modes = {m.value for m in cfg.modes}
        if self.command_interface == "trajectory" and "effort" in modes:
            raise cfg.error("driver.modes", "a joint trajectory carries positions and velocities, not effort: "
                                             "drop effort or use command_interface: forward")
        for k in self.joint_map:
            if k not in cfg.joint_names:
                raise cfg.error(f"driver.joint_map.{keyname(k)}",
                                f"not a joint of this config ({', '.join(cfg.joint_names)})")
        mapped = [self.joint_map.get(n, n) for n in cfg.joint_names]
        if len(set(mapped)) != len(mapped):
            raise cfg.error("driver.joint_map", "two config joints map to the same robot joint")

    def resolve(self, cfg, **_options) -> "Ros2BridgeParams":
        self.check_config(cfg)
        period = 1.0 / cfg.control_rate_hz
        modes = sorted(m.value for m in cfg.modes)
        topics = {m: self.command_topics.get(m, ROS2_DEFAULT_COMMAND_TOPICS[m]) for m in modes}
        lookahead = 2 * period if self.trajectory_lookahead_s is None else self.trajectory_lookahead_s
        wait = period if self.read_wait_s is None else self.read_wait_s
        return dataclasses.replace(self, command_topics=topics, trajectory_lookahead_s=lookahead, read_wait_s=wait)


# ---------------------------------------------------------------------------------- the registry
_SECTIONS: dict[str, type] = {}


def register_driver_section(cls: type) -> type:
    """Make `cls` (a DriverSection pydantic dataclass whose `type` is a Literal) the schema of
    `driver:` when `driver.type` is that literal. Returns `cls` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, DriverSection)):
        raise TypeError(f"{cls!r} is not a DriverSection")
    tag = getattr(cls.__pydantic_fields__["type"].annotation, "__args__", (None,))[0]
    if not isinstance(tag, str):
        raise TypeError(f"{cls.__name__}.type must be a Literal of one string")
    _SECTIONS[tag] = cls
    return cls


for _cls in (SimSection, DynamixelParams, Ros2BridgeParams):
    register_driver_section(_cls)


def driver_types() -> tuple[str, ...]:
    return tuple(_SECTIONS)


def driver_sections() -> tuple[type, ...]:
    return tuple(_SECTIONS.values())


def driver_section_union(classes: tuple[type, ...]):
    """The discriminated union of these sections (the hardware config's `driver` field type)."""
    return Annotated[Union[classes], Field(discriminator="type")] if len(classes) > 1 else classes[0]


def unknown_driver_key(driver_type: str) -> str:
    cls = _SECTIONS.get(driver_type)
    known = sorted(set(cls.__pydantic_fields__) - {"type", "modes"}) if cls else []
    if not known:
        return f"unknown key: the {driver_type} driver takes no parameters besides type and modes"
    return f"unknown {driver_type} driver parameter (known: {', '.join(known)})"


@functools.lru_cache(maxsize=None)
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def driver_params(cfg, **options) -> DriverSection:
    """`cfg.driver_params` (with its driver type and modes) validated by the section registered
    for `cfg.driver_type`, checked against and resolved for `cfg`; a ConfigError naming `driver.<key>`."""
    cls = _SECTIONS.get(cfg.driver_type)
    if cls is None:
        raise cfg.error("driver.type", f"must be one of {', '.join(_SECTIONS)}; got {excerpt(cfg.driver_type)}")
    data = {**cfg.driver_params, "type": cfg.driver_type, "modes": [m.value for m in cfg.modes]}
    try:
        section = _adapter(cls).validate_python(data)
    except ValidationError as e:
        raise to_config_error(e, cfg.path, prefix="driver",
                              unknown_key=lambda path, err: unknown_driver_key(cfg.driver_type)) from None
    return section.resolve(cfg, **options)


__all__ = ["COMMAND_MODES", "DriverSection", "DynamixelParams", "Ros2BridgeParams", "SimSection",
           "driver_params", "driver_section_union", "driver_sections", "driver_types", "register_driver_section"]
