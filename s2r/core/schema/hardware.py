"""The hardware config file (`hardware_configs/*.yaml`) as pydantic models: the YAML's shape, each
default written once, every bound inclusive and finite (a value that would switch a safety
mechanism off in effect -- a rate of 1e-300 Hz, a watchdog of 1e9 periods -- is refused like a
malformed one). `s2r.core.config` turns a validated file into the HardwareConfig callers use.
hardware_configs/README.md explains the keys; `s2r schema hardware` prints this as JSON Schema.
A key given as null counts as absent."""

import functools
import math
from typing import Annotated, Literal, Union

from pydantic import (AfterValidator, Field, StrictInt, StrictStr, ValidationInfo, create_model,
                      field_validator, model_validator)

from ..types import HARDWARE_MODES
from ..yamlio import excerpt
from . import drivers as _drivers
from .errors import fail, with_message
from .types import MAX_TEXT, FileModel, Flag, Fraction, Int, Name, Number, Real, Text, Vec

CAMERA_SOURCES = ("sim", "device")
WATCHDOG_MAX_S = 2.0          # the watchdog holds the robot at most this long after the last command

# Inclusive bounds of every number (hardware_configs/README.md lists them).
BOUNDS = {
    "control_rate_hz": (1.0, 10_000.0),        # Hz
    "physics_hz": (1.0, 20_000.0),             # Hz, and >= control_rate_hz
    "position": (-100.0, 100.0),               # rad or m
    "velocity": (1e-6, 1_000.0),               # rad/s or m/s
    "effort": (1e-6, 100_000.0),               # N m or N
    "acceleration": (1e-3, 10_000.0),          # rad/s^2 or m/s^2
    "kp": (0.0, 1e5),
    "kd": (0.0, 1e4),
    "offset": (-100.0, 100.0),                 # rad
    "id": (0, 65_535),
    "max_position_step": (1e-6, 1.0),          # rad or m per control period, and <= the widest joint range
    "watchdog_periods": (1.0, 100.0),          # control periods, and at most WATCHDOG_MAX_S
    "limit_margin": (0.0, 0.1),                # rad or m; each joint's is at most a quarter of its range
    "image_size": (1, 4096),                   # pixels
    "camera_rate_hz": (0.1, 1_000.0),
    "focal": (1e-3, 1e6),                      # pixels
    "clip": (1e-4, 10_000.0),                  # m
    "camera_position": (-1_000.0, 1_000.0),    # m
    "rpy": (-10.0, 10.0),                      # rad
    "tracking_tolerance": (1e-6, 1.0),         # rad
    "sweep_amplitude": (1e-6, math.pi),        # rad
}


# one bounded type per BOUNDS entry (module-level names: annotations hold no strings)
ControlRate, PhysicsRate = Number(*BOUNDS["control_rate_hz"]), Number(*BOUNDS["physics_hz"])
PositionRange = Vec(2, *BOUNDS["position"])
Velocity, Effort, Acceleration = (Number(*BOUNDS[k]) for k in ("velocity", "effort", "acceleration"))
Kp, Kd, Offset = Number(*BOUNDS["kp"]), Number(*BOUNDS["kd"]), Number(*BOUNDS["offset"])
JointId = Int(*BOUNDS["id"])
Step, WatchdogPeriods, Margin = (Number(*BOUNDS[k]) for k in ("max_position_step", "watchdog_periods", "limit_margin"))
ImageSize, CameraRate, Focal, Clip = Int(*BOUNDS["image_size"]), *(Number(*BOUNDS[k]) for k in
                                                                   ("camera_rate_hz", "focal", "clip"))
CameraPosition, Rpy = Vec(3, *BOUNDS["camera_position"]), Vec(3, *BOUNDS["rpy"])
Tolerance, Amplitude = Number(*BOUNDS["tracking_tolerance"]), Number(*BOUNDS["sweep_amplitude"])


class Limits(FileModel):
    position: PositionRange = Field(description="[lower, upper], rad or m")
    velocity: Velocity = Field(description="rad/s or m/s")
    effort: Effort = Field(description="N m or N")
    acceleration: Acceleration | None = Field(None, description="rad/s^2 or m/s^2, what commands and stops "
                                                                 "plan with; default: velocity / 0.5 s")

    @model_validator(mode="after")
    def _ordered(self):
        lo, hi = self.position
        if not lo < hi:
            raise fail(f"lower {lo:g} >= upper {hi:g}", at="position")
        return self


class Gains(FileModel):
    kp: Kp = 100.0
    kd: Kd = 10.0


def _sign(v):
    if v not in (1, -1):
        raise fail(f"must be 1 or -1, got {v}")
    return v


class Calibration(FileModel):
    """raw = sign * q + offset"""
    offset: Offset = Field(0.0, description="rad or m")
    sign: Annotated[StrictInt, AfterValidator(_sign), Field(json_schema_extra={"enum": [1, -1]})] = 1


class Joint(FileModel):
    name: Name
    limits: Limits
    gains: Gains = Gains()
    calibration: Calibration = Calibration()
    id: JointId | None = Field(None, description="servo or bus id, for drivers that address joints")


class Intrinsics(FileModel):
    """Either `fov_deg` (vertical field of view; square pixels, centred) or fx, fy, cx, cy (pixels)."""
    fov_deg: Annotated[Real, Field(json_schema_extra={"exclusiveMinimum": 0, "exclusiveMaximum": 180})] | None = None
    fx: Focal | None = None
    fy: Focal | None = None
    cx: Real | None = None
    cy: Real | None = None

    @model_validator(mode="after")
    def _one_form(self):
        pinhole = ("fx", "fy", "cx", "cy")
        if self.fov_deg is not None:
            if not 0 < self.fov_deg < 180:
                raise fail(f"must be in (0, 180), got {self.fov_deg:g}", at="fov_deg")
            for k in pinhole:
                if getattr(self, k) is not None:
                    raise fail("unknown key: give fov_deg or fx, fy, cx, cy, not both", at=k)
        else:
            for k in pinhole:
                if getattr(self, k) is None:
                    raise fail("missing required key", at=k)
        return self


class Extrinsics(FileModel):
    position: CameraPosition = Field(description="m, in the parent frame")
    rpy: Rpy = Field((0.0, 0.0, 0.0), description="rad")
    parent: Name = "world"


def _device_reason(v) -> str:
    return f"a camera with source 'device' needs a device index or path, got {excerpt(v)}"


def _device(v):
    if isinstance(v, int) and not 0 <= v <= 255:
        raise fail(f"a device index must be in [0, 255], got {v}")
    if isinstance(v, str) and (not v or len(v) > MAX_TEXT or not v.isprintable()):
        raise fail(f"expected a device path, got {excerpt(v)}")
    return v


class Camera(FileModel):
    name: Name
    source: Literal[CAMERA_SOURCES] = "sim"
    device: Annotated[Union[StrictInt, StrictStr], with_message(_device_reason), AfterValidator(_device),
                      Field(description="index or path; source 'device' only")] | None = None
    width: ImageSize
    height: ImageSize
    rate_hz: CameraRate = 30.0
    intrinsics: Intrinsics
    extrinsics: Extrinsics
    near: Clip = Field(0.01, description="m")
    far: Clip = Field(5.0, description="m, beyond near")

    @model_validator(mode="after")
    def _consistent(self):
        if self.source == "device" and self.device is None:
            raise fail(_device_reason(None), at="device")
        if self.source != "device" and self.device is not None:
            raise fail("unknown key: only a camera with source 'device' has a device", at="device")
        i = self.intrinsics
        if i.fov_deg is not None:
            fy = 0.5 * self.height / math.tan(math.radians(i.fov_deg) / 2)
            lo, hi = BOUNDS["focal"]
            if not lo <= fy <= hi:
                raise fail(f"gives a focal length of {fy:g} px, outside [{lo:g}, {hi:g}]", at="intrinsics.fov_deg")
        else:
            for k, size in (("cx", self.width), ("cy", self.height)):
                v = getattr(i, k)
                if not 0 <= v <= size:
                    raise fail(f"must lie in the image [0, {size}], got {v:g}", at=f"intrinsics.{k}")
        if self.source == "sim" and self.extrinsics.parent != "world":
            raise fail(f"a simulated camera is mounted in the world frame, got {excerpt(self.extrinsics.parent)}",
                       at="extrinsics.parent")
        if not self.near < self.far:
            raise fail(f"must be in (near ({self.near:g}), {BOUNDS['clip'][1]:g}], got {self.far:g}", at="far")
        return self


class Safety(FileModel):
    max_position_step: Step = Field(0.05, description="rad or m per control period; at most the widest "
                                                      "joint range, which is the default if smaller than this")
    watchdog_periods: WatchdogPeriods = Field(2.0, description="control periods without a command before "
                                                               f"holding; at most {WATCHDOG_MAX_S:g} s")
    limit_margin: Margin = Field(0.02, description="commands keep this far inside the position limits (rad or "
                                                   "m); a joint's margin is at most a quarter of its range")
    velocity_scale: Fraction = Field(1.0, description="fraction of each velocity limit commands may use")
    effort_scale: Fraction = Field(1.0, description="fraction of each effort limit commands may use")


class Sim(FileModel):
    physics_hz: PhysicsRate = Field(1000.0, description="Hz, at least control_rate_hz")
    realtime: Flag = True
    gravity_compensation: Flag = True


class Hil(FileModel):
    tracking_tolerance: Tolerance = Field(0.05, description="rad")
    sweep_amplitude: Amplitude = Field(0.2, description="rad")
    min_state_rate_ratio: Fraction = 0.8


def _some_joints(v):
    if not v:
        raise fail("at least one joint is required")
    return v


class HardwareFile(FileModel):
    """One robot setup. The `driver` field's type is the union of the registered driver sections
    (`hardware_model()` builds the model with it)."""
    name: Name
    description: Text = ""
    hardware: Literal[HARDWARE_MODES] = "auto"
    robot: Name | None = Field(None, validate_default=True,
                               description="robot description (robots/*.yaml): a name or a path relative to this "
                                           "file; the sim driver's and the 'auto' fallback's model. Required "
                                           "unless hardware is 'real' or 'mock'")
    control_rate_hz: ControlRate = Field(description="Hz")
    driver: _drivers.DriverSection
    joints: Annotated[list[Joint], AfterValidator(_some_joints)]
    cameras: list[Camera] = []
    safety: Safety = Safety()
    sim: Sim = Sim()
    hil: Hil = Hil()

    @field_validator("robot")
    @classmethod
    def _robot_unless_real(cls, v, info: ValidationInfo):
        if v is None and info.data.get("hardware", "real") not in ("real", "mock"):
            raise fail("missing required key")
        return v

    @model_validator(mode="after")
    def _across_sections(self):
        rate = self.control_rate_hz
        if self.hardware == "real" and self.driver.type == "sim":
            raise fail("'real' needs a real driver, but driver.type is 'sim'", at="hardware")
        if self.sim.physics_hz < rate:
            raise fail(f"must be >= control_rate_hz ({rate:g}), got {self.sim.physics_hz:g}", at="sim.physics_hz")
        seen: dict[str, int] = {}
        for i, j in enumerate(self.joints):
            if j.name in seen:
                raise fail(f"duplicate joint name {excerpt(j.name)} (also joints[{seen[j.name]}])",
                           at=f"joints[{i}].name")
            seen[j.name] = i
        cams: set[str] = set()
        for i, c in enumerate(self.cameras):
            if c.name in cams:
                raise fail(f"duplicate camera name {excerpt(c.name)}", at=f"cameras[{i}].name")
            cams.add(c.name)
        lo, hi = BOUNDS["max_position_step"]
        hi = min(hi, max(j.limits.position[1] - j.limits.position[0] for j in self.joints))
        step = self.safety.max_position_step
        if "max_position_step" in self.safety.model_fields_set and not lo <= step <= hi:
            raise fail(f"must be in [{lo:g}, {hi:g}] (at most 1 and at most the widest joint range), got {step:g}",
                       at="safety.max_position_step")
        lo, hi = BOUNDS["watchdog_periods"]
        hi = min(hi, WATCHDOG_MAX_S * rate)
        if not lo <= self.safety.watchdog_periods <= hi:
            raise fail(f"must be in [{lo:g}, {hi:g}] (at most 100 periods and {WATCHDOG_MAX_S:g} s), "
                       f"got {self.safety.watchdog_periods:g}", at="safety.watchdog_periods")
        return self

    @property
    def max_position_step(self) -> float:
        """The configured step, or its default capped by the widest joint range."""
        if "max_position_step" in self.safety.model_fields_set:
            return self.safety.max_position_step
        return min(self.safety.max_position_step, max(j.limits.position[1] - j.limits.position[0] for j in self.joints))


@functools.lru_cache(maxsize=8)
def _model_for(sections: tuple[type, ...]) -> type[HardwareFile]:
    return create_model("HardwareConfig", __base__=HardwareFile, __doc__=HardwareFile.__doc__,
                        driver=(_drivers.driver_section_union(sections), ...))


def hardware_model() -> type[HardwareFile]:
    """The hardware config model with every registered driver section in `driver` (built once per
    set of registered sections)."""
    return _model_for(_drivers.driver_sections())
