"""Hardware configs: one YAML per robot setup, validated into typed objects.

Every problem is reported as one `ConfigError` naming the file, the key path and the reason,
e.g. ``hardware_configs/x.yaml: joints[2].limits.position: lower 1.2 >= upper 0.5``.
The schema is documented in hardware_configs/README.md.

Every number has finite bounds (`BOUNDS`): a value that would switch a safety mechanism off in
effect (a rate of 1e-300 Hz, a watchdog of 1e9 periods, a position limit of 1e300) is refused like
a malformed one. Values are quoted in messages only through `excerpt`, so a huge or aliased value
never prints in full.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s2r.core.types import CommandMode, DriverSpec, JointLimits

from . import yamlio
from .yamlio import ConfigError, excerpt, keyname

__all__ = ["ConfigError", "HardwareConfig", "load_config", "parse_config", "resolve_config_path"]

HARDWARE_MODES = ("auto", "sim", "real")
SIM_ROBOTS = ("panda", "hand16")
KNOWN_DRIVERS = ("sim", "dynamixel", "ros2")
CAMERA_SOURCES = ("sim", "device")

# Inclusive bounds of every number in the schema (hardware_configs/README.md lists them).
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
WATCHDOG_MAX_S = 2.0          # the watchdog holds the robot at most this long after the last command
MAX_NAME = 128                # characters of a name (setup, joint, camera, frame)
MAX_TEXT = 4096               # characters of free text (description) and device paths


@dataclass(frozen=True)
class JointConfig:
    name: str
    limits: JointLimits
    kp: float
    kd: float
    offset: float = 0.0
    sign: int = 1
    id: int | None = None


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
    parent: str = "world"
    device: str | int | None = None
    near: float = 0.01
    far: float = 5.0


@dataclass(frozen=True)
class SafetyConfig:
    max_position_step: float = 0.05
    watchdog_periods: float = 2.0
    limit_margin: float = 0.02       # commands keep this far inside the position limits (rad or m);
                                     # a joint's margin is at most a quarter of its range
    velocity_scale: float = 1.0
    effort_scale: float = 1.0


@dataclass(frozen=True)
class SimConfig:
    physics_hz: float = 1000.0
    realtime: bool = True
    gravity_compensation: bool = True


@dataclass(frozen=True)
class HilConfig:
    tracking_tolerance: float = 0.05
    sweep_amplitude: float = 0.2
    min_state_rate_ratio: float = 0.8


@dataclass(frozen=True)
class HardwareConfig:
    path: str
    name: str
    robot: str | None          # sim model; None only for hardware 'real' (no fallback)
    hardware: str
    control_rate_hz: float
    driver_type: str
    driver_params: dict
    modes: frozenset[CommandMode]
    joints: tuple[JointConfig, ...]
    cameras: tuple[CameraConfig, ...] = ()
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    hil: HilConfig = field(default_factory=HilConfig)
    description: str = ""

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
class _Reader:
    """Typed access to a YAML mapping that remembers the key path for error messages."""

    def __init__(self, file: str, data: Any, path: str = ""):
        self.file, self.path = file, path
        if not isinstance(data, dict):
            raise ConfigError(file, path, f"expected a mapping, got {_tname(data)}")
        self.data = data
        self.used: set[str] = set()

    def key(self, k) -> str:
        k = keyname(k)
        return f"{self.path}.{k}" if self.path else k

    def fail(self, k: str, reason: str) -> ConfigError:
        return ConfigError(self.file, self.key(k) if k else self.path, reason)

    def get(self, k: str, kind, default=..., check=None, max_len: int = MAX_NAME):
        self.used.add(k)
        if k not in self.data or self.data[k] is None:
            if default is ...:
                raise self.fail(k, "missing required key")
            return default
        v = self.data[k]
        if kind is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise self.fail(k, f"expected a number, got {_tname(v)} {excerpt(v)}")
            v = float(v)
            if not math.isfinite(v):
                raise self.fail(k, f"must be finite, got {v}")
        elif kind is int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise self.fail(k, f"expected an integer, got {_tname(v)} {excerpt(v)}")
        elif kind is bool:
            if not isinstance(v, bool):
                raise self.fail(k, f"expected true/false, got {_tname(v)} {excerpt(v)}")
        elif kind is str:
            if not isinstance(v, str) or not v:
                raise self.fail(k, f"expected a non-empty string, got {_tname(v)} {excerpt(v)}")
            if len(v) > max_len:
                raise self.fail(k, f"longer than {max_len} characters: {excerpt(v)}")
            if max_len <= MAX_NAME and not v.isprintable():
                raise self.fail(k, f"must be one line of printable characters, got {excerpt(v)}")
        elif kind is list:
            if not isinstance(v, list):
                raise self.fail(k, f"expected a list, got {_tname(v)}")
        elif kind is dict:
            return _Reader(self.file, v, self.key(k))
        if check is not None:
            reason = check(v)
            if reason:
                raise self.fail(k, reason)
        return v

    def sub(self, k: str, required: bool = False) -> "_Reader":
        if required:
            return self.get(k, dict)
        return self.get(k, dict, default=None) or _Reader(self.file, {}, self.key(k))

    def vec(self, k: str, n: int, default=..., bounds: str | None = None):
        v = self.get(k, list, default=default)
        if v is default and default is not ...:
            return default
        if len(v) != n or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise self.fail(k, f"expected a list of {n} numbers, got {excerpt(v)}")
        out = tuple(float(x) for x in v)
        if bounds is not None:
            lo, hi = BOUNDS[bounds]
            for x in out:
                if not (math.isfinite(x) and lo <= x <= hi):
                    raise self.fail(k, f"every value must be in [{lo:g}, {hi:g}], got {excerpt(x)}")
        return out

    def done(self, allowed_extra: bool = False) -> None:
        if allowed_extra:
            return
        unknown = sorted((keyname(k) for k in self.data if k not in self.used))
        if unknown:
            raise self.fail(unknown[0], "unknown key (check the spelling; the schema is in "
                                        "hardware_configs/README.md)")


def _tname(v) -> str:
    return {dict: "mapping", list: "list", str: "string", type(None): "nothing"}.get(type(v), type(v).__name__)


def _within(name: str):
    """Check: the value lies in BOUNDS[name]."""
    lo, hi = BOUNDS[name]
    return lambda v: None if lo <= v <= hi else f"must be in [{lo:g}, {hi:g}], got {v:g}"


def _one_of(options):
    return lambda v: None if v in options else f"must be one of {', '.join(options)}; got {excerpt(v)}"


# --------------------------------------------------------------------------------------------
def resolve_config_path(name: str | Path) -> Path:
    """A path, or a bare name looked up in hardware_configs/ (`panda_sim` -> .../panda_sim.yaml)."""
    p = Path(name)
    try:
        if p.exists():
            return p
        root = Path(__file__).resolve().parents[2] / "hardware_configs"
        for cand in (root / p.name, root / f"{p.name}.yaml"):
            if cand.exists():
                return cand
    except (OSError, ValueError):     # a name too long for the file system, or with a NUL byte
        pass
    return p


def load_config(path: str | Path) -> HardwareConfig:
    file = str(path)
    data = yamlio.load_file(resolve_config_path(path), file)
    if data is None:
        raise ConfigError(file, "", "file is empty")
    return parse_config(data, file)


def parse_config(data: Any, file: str = "<config>") -> HardwareConfig:
    """Validate a parsed config (a dict, e.g. from YAML or built in code) into a HardwareConfig."""
    yamlio.check_values(data, file)     # non-finite numbers anywhere, driver parameters included
    r = _Reader(file, data)
    name = r.get("name", str)
    description = r.get("description", str, default="", max_len=MAX_TEXT)
    hardware = r.get("hardware", str, default="auto", check=_one_of(HARDWARE_MODES))
    # the sim model serves the sim driver and the 'auto' fallback; a 'real'-only setup needs none
    robot = r.get("robot", str, check=_one_of(SIM_ROBOTS), default=None if hardware == "real" else ...)
    rate = r.get("control_rate_hz", float, check=_within("control_rate_hz"))

    d = r.sub("driver", required=True)
    driver_type = d.get("type", str, check=_one_of(KNOWN_DRIVERS))
    modes_raw = d.get("modes", list, default=["position", "velocity", "effort"])
    known_modes = [c.value for c in CommandMode]
    modes = set()
    for m in modes_raw:
        if not isinstance(m, str) or m not in known_modes:
            raise d.fail("modes", f"unknown command mode {excerpt(m)} (position, velocity, effort)")
        modes.add(CommandMode(m))
    if not modes:
        raise d.fail("modes", "at least one command mode is required")
    driver_params = {k: v for k, v in d.data.items() if k not in ("type", "modes")}
    if hardware == "real" and driver_type == "sim":
        raise r.fail("hardware", "'real' needs a real driver, but driver.type is 'sim'")

    s = r.sub("sim")
    sim = SimConfig(
        physics_hz=s.get("physics_hz", float, default=1000.0, check=_within("physics_hz")),
        realtime=s.get("realtime", bool, default=True),
        gravity_compensation=s.get("gravity_compensation", bool, default=True),
    )
    s.done()
    if sim.physics_hz < rate:
        raise s.fail("physics_hz", f"must be >= control_rate_hz ({rate:g}), got {sim.physics_hz:g}")

    joints = []
    raw_joints = r.get("joints", list)
    if not raw_joints:
        raise r.fail("joints", "at least one joint is required")
    seen: dict[str, int] = {}
    for i, jd in enumerate(raw_joints):
        j = _Reader(file, jd, f"joints[{i}]")
        jname = j.get("name", str)
        if jname in seen:
            raise j.fail("name", f"duplicate joint name {excerpt(jname)} (also joints[{seen[jname]}])")
        seen[jname] = i
        lim = j.sub("limits", required=True)
        lo, hi = lim.vec("position", 2, bounds="position")
        if not lo < hi:
            raise lim.fail("position", f"lower {lo:g} >= upper {hi:g}")
        limits = JointLimits(lo, hi, lim.get("velocity", float, check=_within("velocity")),
                             lim.get("effort", float, check=_within("effort")),
                             lim.get("acceleration", float, default=None, check=_within("acceleration")))
        lim.done()
        g = j.sub("gains")
        kp = g.get("kp", float, default=100.0, check=_within("kp"))
        kd = g.get("kd", float, default=10.0, check=_within("kd"))
        g.done()
        c = j.sub("calibration")
        offset = c.get("offset", float, default=0.0, check=_within("offset"))
        sign = c.get("sign", int, default=1, check=lambda v: None if v in (1, -1) else f"must be 1 or -1, got {v}")
        c.done()
        jid = j.get("id", int, default=None, check=_within("id"))
        j.done()
        joints.append(JointConfig(jname, limits, kp, kd, offset, sign, jid))

    cams = []
    cam_names: set = set()
    for i, cd in enumerate(r.get("cameras", list, default=[])):
        cams.append(_parse_camera(_Reader(file, cd, f"cameras[{i}]"), cam_names))

    sf = r.sub("safety")
    widest = max(j.limits.upper - j.limits.lower for j in joints)
    step_lo, step_hi = BOUNDS["max_position_step"]
    step_hi = min(step_hi, widest)

    def step_check(v):
        if step_lo <= v <= step_hi:
            return None
        return f"must be in [{step_lo:g}, {step_hi:g}] (at most 1 and at most the widest joint range), got {v:g}"

    def watchdog_check(v):
        lo, hi = BOUNDS["watchdog_periods"]
        hi = min(hi, WATCHDOG_MAX_S * rate)
        if lo <= v <= hi:
            return None
        return f"must be in [{lo:g}, {hi:g}] (at most 100 periods and {WATCHDOG_MAX_S:g} s), got {v:g}"

    safety = SafetyConfig(
        max_position_step=sf.get("max_position_step", float, default=min(0.05, step_hi), check=step_check),
        watchdog_periods=sf.get("watchdog_periods", float, default=2.0, check=watchdog_check),
        limit_margin=sf.get("limit_margin", float, default=SafetyConfig.limit_margin, check=_within("limit_margin")),
        velocity_scale=sf.get("velocity_scale", float, default=1.0,
                              check=lambda v: None if 0 < v <= 1 else f"must be in (0, 1], got {v:g}"),
        effort_scale=sf.get("effort_scale", float, default=1.0,
                            check=lambda v: None if 0 < v <= 1 else f"must be in (0, 1], got {v:g}"),
    )
    sf.done()

    h = r.sub("hil")
    hil = HilConfig(
        tracking_tolerance=h.get("tracking_tolerance", float, default=0.05, check=_within("tracking_tolerance")),
        sweep_amplitude=h.get("sweep_amplitude", float, default=0.2, check=_within("sweep_amplitude")),
        min_state_rate_ratio=h.get("min_state_rate_ratio", float, default=0.8,
                                   check=lambda v: None if 0 < v <= 1 else f"must be in (0, 1], got {v:g}"),
    )
    h.done()
    r.done()
    cfg = HardwareConfig(file, name, robot, hardware, rate, driver_type, driver_params,
                         frozenset(modes), tuple(joints), tuple(cams), safety, sim, hil, description)
    _check_driver_params(cfg)
    return cfg


def _check_driver_params(cfg: HardwareConfig) -> None:
    """The driver's own parameters (`driver.*`), checked by that driver's parse_params at load,
    so `s2r check --no-connect` refuses what the driver would. The serial port may be left out
    here (an emulated bus supplies one); the driver requires it when it connects."""
    if cfg.driver_type == "dynamixel":
        from drivers.dynamixel_driver import parse_params
        parse_params(cfg, require_port=False)
    elif cfg.driver_type == "ros2":
        from drivers.ros2_bridge import parse_params
        parse_params(cfg)
    elif cfg.driver_params:
        key = sorted(map(keyname, cfg.driver_params))[0]
        raise cfg.error(f"driver.{key}", "unknown key: the sim driver takes no parameters besides type and modes")


def _parse_camera(c: _Reader, names: set) -> CameraConfig:
    name = c.get("name", str)
    if name in names:
        raise c.fail("name", f"duplicate camera name {excerpt(name)}")
    names.add(name)
    source = c.get("source", str, default="sim", check=_one_of(CAMERA_SOURCES))
    device = None
    if source == "device":
        c.used.add("device")
        device = c.data.get("device")
        if not isinstance(device, (int, str)) or isinstance(device, bool) or device == "":
            raise c.fail("device", f"a camera with source 'device' needs a device index or path, "
                                   f"got {excerpt(device)}")
        if isinstance(device, int) and not 0 <= device <= 255:
            raise c.fail("device", f"a device index must be in [0, 255], got {device}")
        if isinstance(device, str) and (len(device) > MAX_TEXT or not device.isprintable()):
            raise c.fail("device", f"expected a device path, got {excerpt(device)}")
    width = c.get("width", int, check=_within("image_size"))
    height = c.get("height", int, check=_within("image_size"))
    rate = c.get("rate_hz", float, default=30.0, check=_within("camera_rate_hz"))
    intr = c.sub("intrinsics", required=True)
    if "fov_deg" in intr.data:
        fov = intr.get("fov_deg", float, check=lambda v: None if 0 < v < 180 else f"must be in (0, 180), got {v:g}")
        fy = 0.5 * height / math.tan(math.radians(fov) / 2)
        if not BOUNDS["focal"][0] <= fy <= BOUNDS["focal"][1]:
            raise intr.fail("fov_deg", f"gives a focal length of {fy:g} px, outside "
                                       f"[{BOUNDS['focal'][0]:g}, {BOUNDS['focal'][1]:g}]")
        fx, cx, cy = fy, width / 2, height / 2
    else:
        fx = intr.get("fx", float, check=_within("focal"))
        fy = intr.get("fy", float, check=_within("focal"))
        cx = intr.get("cx", float, check=lambda v: None if 0 <= v <= width else f"must lie in the image [0, {width}], got {v:g}")
        cy = intr.get("cy", float, check=lambda v: None if 0 <= v <= height else f"must lie in the image [0, {height}], got {v:g}")
    intr.done()
    ext = c.sub("extrinsics", required=True)
    position = ext.vec("position", 3, bounds="camera_position")
    rpy = ext.vec("rpy", 3, default=(0.0, 0.0, 0.0), bounds="rpy")
    parent = ext.get("parent", str, default="world")
    if source == "sim" and parent != "world":
        raise ext.fail("parent", f"a simulated camera is mounted in the world frame, got {excerpt(parent)}")
    ext.done()
    near = c.get("near", float, default=0.01, check=_within("clip"))
    far = c.get("far", float, default=5.0,
                check=lambda v: None if near < v <= BOUNDS["clip"][1]
                else f"must be in (near ({near:g}), {BOUNDS['clip'][1]:g}], got {v:g}")
    c.done()
    return CameraConfig(name, source, width, height, rate, fx, fy, cx, cy, position, rpy, parent,
                        device, near, far)
