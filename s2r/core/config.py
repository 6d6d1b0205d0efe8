"""Hardware configs: one YAML per robot setup, validated into typed objects.

The file's schema is the pydantic model `s2r.core.schema.hardware` (`s2r schema hardware` prints
it as JSON Schema; hardware_configs/README.md explains it). Every problem is reported as one
`ConfigError` naming the file, the key path and the reason, e.g.
``hardware_configs/x.yaml: joints[2].limits.position: lower 1.2 >= upper 0.5``. A validated file
becomes the frozen dataclasses below, which is what sim, drivers, nodes and learning use.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from s2r.core.types import CommandMode, DriverSpec, JointLimits

from . import resources, yamlio
from .schema.drivers import unknown_driver_key
from .schema.errors import to_config_error
from .schema.hardware import BOUNDS, WATCHDOG_MAX_S, HardwareFile, hardware_model
from .yamlio import ConfigError

__all__ = ["BOUNDS", "WATCHDOG_MAX_S", "CameraConfig", "ConfigError", "HardwareConfig", "HilConfig", "JointConfig",
           "SafetyConfig", "SimConfig", "load_config", "parse_config", "resolve_config_path"]


@dataclass(frozen=True)
class JointConfig:
    name: str
    limits: JointLimits
    kp: float
    kd: float
    offset: float
    sign: int
    id: int | None


@dataclass(frozen=True)
class CameraConfig:
    name: str
    source: str
    width: int
    height: int
    rate_hz: float
    fx: float
    fy: float
    cx: float
    cy: float
    position: tuple[float, float, float]
    rpy: tuple[float, float, float]
    parent: str
    device: str | int | None
    near: float
    far: float


@dataclass(frozen=True)
class SafetyConfig:
    max_position_step: float
    watchdog_periods: float
    limit_margin: float              # commands keep this far inside the position limits (rad or m)
    velocity_scale: float
    effort_scale: float


@dataclass(frozen=True)
class SimConfig:
    physics_hz: float
    realtime: bool
    gravity_compensation: bool


@dataclass(frozen=True)
class HilConfig:
    tracking_tolerance: float
    sweep_amplitude: float
    min_state_rate_ratio: float


@dataclass(frozen=True)
class HardwareConfig:
    path: str
    name: str
    robot: str | None          # sim model; None only for hardware 'real' (no fallback)
    hardware: str
    control_rate_hz: float
    driver_type: str
    driver_params: dict        # `driver:` as written, less type and modes (the driver validates it)
    modes: frozenset[CommandMode]
    joints: tuple[JointConfig, ...]
    cameras: tuple[CameraConfig, ...]
    safety: SafetyConfig
    sim: SimConfig
    hil: HilConfig
    description: str

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def calibration(self) -> tuple:
        """(offset, sign) vectors in joint order: raw = sign * q + offset."""
        return (np.array([j.offset for j in self.joints]), np.array([float(j.sign) for j in self.joints]))

    def spec(self) -> DriverSpec:
        return DriverSpec(self.joint_names, tuple(j.limits for j in self.joints), self.modes,
                          self.control_rate_hz)

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.path, key, reason)


# --------------------------------------------------------------------------------------------
def resolve_config_path(name: str | Path) -> Path:
    """A path, or a name looked up in the resource order (s2r.core.resources: ./hardware_configs,
    $S2R_PATH, the packaged configs; `panda_sim` -> .../panda_sim.yaml). A name found nowhere is a
    ConfigError listing where it looked."""
    return resources.resolve("hardware_config", name)


def load_config(path: str | Path) -> HardwareConfig:
    file = str(path)
    data = yamlio.load_file(resolve_config_path(path), file)
    if data is None:
        raise ConfigError(file, "", "file is empty")
    return parse_config(data, file)


def _unknown_key(path: str, err: dict) -> str | None:
    loc = err.get("loc", ())
    if len(loc) > 2 and loc[0] == "driver" and isinstance(loc[1], str):
        return unknown_driver_key(loc[1])
    return None


def parse_config(data: Any, file: str = "<config>") -> HardwareConfig:
    """Validate a parsed config (a dict, e.g. from YAML or built in code) into a HardwareConfig."""
    yamlio.check_values(data, file)     # non-finite numbers anywhere, driver parameters included
    try:
        m = hardware_model().model_validate(data)
    except ValidationError as e:
        raise to_config_error(e, file, tagged={"driver"}, unknown_key=_unknown_key) from None
    cfg = _build(m, data, file)
    m.driver.check_config(cfg)          # what the driver would refuse, so `s2r check --no-connect` does
    return cfg


def _build(m: HardwareFile, data: dict, file: str) -> HardwareConfig:
    """The dataclasses callers use, from a validated file."""
    joints = tuple(
        JointConfig(j.name, JointLimits(*j.limits.position, j.limits.velocity, j.limits.effort, j.limits.acceleration),
                    j.gains.kp, j.gains.kd, j.calibration.offset, j.calibration.sign, j.id)
        for j in m.joints)
    cameras = tuple(_camera(c) for c in m.cameras)
    s = m.safety
    safety = SafetyConfig(m.max_position_step, s.watchdog_periods, s.limit_margin, s.velocity_scale, s.effort_scale)
    sim = SimConfig(m.sim.physics_hz, m.sim.realtime, m.sim.gravity_compensation)
    hil = HilConfig(m.hil.tracking_tolerance, m.hil.sweep_amplitude, m.hil.min_state_rate_ratio)
    raw_driver = {k: v for k, v in data["driver"].items() if k not in ("type", "modes") and v is not None}
    return HardwareConfig(file, m.name, m.robot, m.hardware, m.control_rate_hz, m.driver.type, raw_driver,
                          frozenset(CommandMode(x) for x in m.driver.modes), joints, cameras, safety, sim, hil,
                          m.description)


def _camera(c) -> CameraConfig:
    i = c.intrinsics
    if i.fov_deg is not None:
        fy = 0.5 * c.height / np.tan(np.radians(i.fov_deg) / 2)
        fx, fy, cx, cy = float(fy), float(fy), c.width / 2, c.height / 2
    else:
        fx, fy, cx, cy = i.fx, i.fy, i.cx, i.cy
    e = c.extrinsics
    return CameraConfig(c.name, c.source, c.width, c.height, c.rate_hz, fx, fy, cx, cy, e.position, e.rpy, e.parent,
                        c.device, c.near, c.far)
