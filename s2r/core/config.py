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
from .robot_description import RobotDescription, load_robot
from .schema.hardware import BOUNDS, WATCHDOG_MAX_S, HardwareFile, hardware_model
from .yamlio import ConfigError, excerpt

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
    robot: str | None          # robot description's name; None only for hardware 'real' or 'mock'
                               # (no sim model)
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
    robot_file: str | None = None   # the robot description's file (absolute)

    def robot_description(self) -> RobotDescription:
        """The robot description this config names (ConfigError without one)."""
        if self.robot_file is None:
            raise ConfigError(self.path, "robot", f"hardware {self.hardware!r} setup names no robot description")
        return load_robot(self.robot_file)

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
    found = resolve_config_path(path)
    data = yamlio.load_file(found, file)
    if data is None:
        raise ConfigError(file, "", "file is empty")
    return parse_config(data, file, found.parent)


def _unknown_key(path: str, err: dict) -> str | None:
    loc = err.get("loc", ())
    if len(loc) > 2 and loc[0] == "driver" and isinstance(loc[1], str):
        return unknown_driver_key(loc[1])
    return None


def parse_config(data: Any, file: str = "<config>", base_dir: str | Path | None = None) -> HardwareConfig:
    """Validate a parsed config (a dict, e.g. from YAML or built in code) into a HardwareConfig.
    `base_dir`: where a robot description given as a relative path is (default: the current
    directory)."""
    yamlio.check_values(data, file)     # non-finite numbers anywhere, driver parameters included
    try:
        m = hardware_model().model_validate(data)
    except ValidationError as e:
        raise to_config_error(e, file, tagged={"driver"}, unknown_key=_unknown_key) from None
    robot = _robot(m, file, base_dir)
    cfg = _build(m, data, file, robot)
    m.driver.check_config(cfg)          # what the driver would refuse, so `s2r check --no-connect` does
    return cfg


def _robot(m: HardwareFile, file: str, base_dir) -> RobotDescription | None:
    """The config's robot description, checked against the config: every configured joint is a
    movable joint of its URDF, every camera mounted on the robot names one of its links."""
    if m.robot is None:
        return None
    try:
        robot = load_robot(m.robot, Path.cwd() if base_dir is None else base_dir)
    except ConfigError as e:
        raise ConfigError(file, "robot", str(e)) from None
    info = robot.urdf_info
    movable = info.movable_joints
    for i, j in enumerate(m.joints):
        if j.name not in movable:
            raise ConfigError(file, f"joints[{i}].name",
                              f"robot {robot.name!r} ({Path(robot.urdf).name}) has no movable joint "
                              f"{excerpt(j.name)} (its movable joints: {_cut(', '.join(movable))})")
    for i, c in enumerate(m.cameras):
        if c.extrinsics.parent != "world" and c.extrinsics.parent not in info.links:
            raise ConfigError(file, f"cameras[{i}].extrinsics.parent",
                              f"robot {robot.name!r} ({Path(robot.urdf).name}) has no link {excerpt(c.extrinsics.parent)}")
    return robot


def _cut(s: str, n: int = 300) -> str:
    return s if len(s) <= n else s[:n] + " ..."


def _build(m: HardwareFile, data: dict, file: str, robot: RobotDescription | None) -> HardwareConfig:
    """The dataclasses callers use, from a validated file. A joint without `gains` takes its robot
    description's default gains, if it has any."""
    defaults = robot.gains if robot is not None else {}

    def gains(j):
        if "gains" not in j.model_fields_set and j.name in defaults:
            return defaults[j.name]
        return j.gains.kp, j.gains.kd

    joints = tuple(
        JointConfig(j.name, JointLimits(*j.limits.position, j.limits.velocity, j.limits.effort, j.limits.acceleration),
                    *gains(j), j.calibration.offset, j.calibration.sign, j.id)
        for j in m.joints)
    cameras = tuple(_camera(c) for c in m.cameras)
    s = m.safety
    safety = SafetyConfig(m.max_position_step, s.watchdog_periods, s.limit_margin, s.velocity_scale, s.effort_scale)
    sim = SimConfig(m.sim.physics_hz, m.sim.realtime, m.sim.gravity_compensation)
    hil = HilConfig(m.hil.tracking_tolerance, m.hil.sweep_amplitude, m.hil.min_state_rate_ratio)
    raw_driver = {k: v for k, v in data["driver"].items() if k not in ("type", "modes") and v is not None}
    return HardwareConfig(file, m.name, robot and robot.name, m.hardware, m.control_rate_hz, m.driver.type, raw_driver,
                          frozenset(CommandMode(x) for x in m.driver.modes), joints, cameras, safety, sim, hil,
                          m.description, robot and robot.file)


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
