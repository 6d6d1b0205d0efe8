"""Robot descriptions: one YAML per robot (robots/*.yaml), the single registry every layer reads
(sim models, controllers' URDF dynamics, ROS nodes, tasks, training). A hardware config names its
robot by description name or by path (`robot: panda`, `robot: ./my_arm.yaml`).

`load_robot(ref)` validates the file (s2r.core.schema.robot), resolves the URDF and checks the
description against it: every joint and link it names exists, the home posture is within the
URDF's limits, the meshes exist. Problems are one `ConfigError` line, `file: key: reason`.
Descriptions are found like every other file (s2r.core.resources: ./robots, $S2R_PATH/robots,
the packaged ones) and cached per file and modification time.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from . import resources, yamlio
from .schema.errors import to_config_error
from .schema.robot import GROUPS, RobotFile
from .urdf_info import UrdfInfo, UrdfReadError, read_urdf
from .yamlio import ConfigError, excerpt

__all__ = ["RobotDescription", "load_robot", "resolve_urdf", "robot_names"]

# the extra pybullet loadURDF flag of a visual variant (pybullet.URDF_USE_MATERIAL_COLORS_FROM_MTL;
# pybullet is not imported at this layer)
URDF_USE_MATERIAL_COLORS_FROM_MTL = 32768


@dataclass(frozen=True)
class RobotDescription:
    """One robot, validated against its URDF. Field names are what the simulator and the
    controllers read (`urdf` is an absolute path)."""

    name: str
    urdf: str
    ee_link: str
    home: dict = field(default_factory=dict)
    base_position: tuple = (0.0, 0.0, 0.0)
    base_orientation: tuple = (0.0, 0.0, 0.0, 1.0)   # xyzw
    tip_links: tuple = ()
    # (name, (URDF path, extra loadURDF flags)) pairs; "stock" is always `urdf`
    visual_variants: tuple = ()
    urdf_flags: int = 0
    joint_damping: dict = field(default_factory=dict)
    tcp_offset: tuple = (0.0, 0.0, 0.0)
    groups: dict = field(default_factory=dict)        # group -> tuple of joint names
    gains: dict = field(default_factory=dict)         # joint -> (kp, kd)
    description: str = ""
    file: str = ""
    inertia_from_file: bool = True                    # else pybullet computes them from the collisions

    @property
    def arm_joints(self) -> tuple[str, ...]:
        return self.groups.get("arm", ())

    @property
    def gripper_joints(self) -> tuple[str, ...]:
        return self.groups.get("gripper", ())

    @property
    def finger_joints(self) -> tuple[str, ...]:
        return self.groups.get("fingers", ())

    @property
    def urdf_info(self) -> UrdfInfo:
        return read_urdf(self.urdf)

    def home_posture(self, joints) -> np.ndarray:
        """The home positions of `joints` (0 where the description gives none)."""
        return np.array([float(self.home.get(j, 0.0)) for j in joints])

    def with_visuals(self, variant: str) -> "RobotDescription":
        """This robot with another set of visual meshes (dynamics unchanged)."""
        if variant == "stock":
            return self
        variants = dict(self.visual_variants)
        if variant not in variants:
            raise ValueError(f"robot {self.name!r} has no visual variant {variant!r} "
                             f"(known: stock{''.join(', ' + v for v in variants)})")
        path, flags = variants[variant]
        return replace(self, urdf=path, urdf_flags=flags, visual_variants=())


def resolve_urdf(ref: str, relative_to: Path) -> Path:
    """Where a description's URDF reference points: `pybullet_data:REL`, `asset:REL` (the asset
    lookup order of s2r.core.resources), or a path relative to the description's folder."""
    if ref.startswith("pybullet_data:"):
        import pybullet_data           # a data folder only; the simulator is not started
        return Path(pybullet_data.getDataPath()) / ref[len("pybullet_data:"):]
    if ref.startswith("asset:"):
        return resources.resolve("asset", ref[len("asset:"):])
    p = Path(ref).expanduser()
    return p if p.is_absolute() else relative_to / p


def robot_names() -> dict[str, Path]:
    """Every robot description a bare name finds (name -> file)."""
    return resources.names("robot")


def load_robot(ref: str | Path, relative_to: str | Path | None = None) -> RobotDescription:
    """The description `ref` names: a bare name in the lookup order, or a path (relative to
    `relative_to`, e.g. the folder of the hardware config naming it, else the current directory)."""
    s = str(ref)
    looks_like_path = "/" in s or s.endswith((".yaml", ".yml")) or s.startswith((".", "~"))
    if looks_like_path and relative_to is not None and not Path(s).expanduser().is_absolute():
        cand = Path(relative_to) / Path(s).expanduser()
        path = cand if cand.exists() else resources.resolve("robot", s)
    else:
        path = resources.resolve("robot", Path(s).expanduser() if s.startswith("~") else s)
    try:
        st = path.stat()
    except OSError as e:
        raise ConfigError(str(path), "", f"cannot read: {e.strerror or e}") from None
    return _load(path.resolve(), st.st_mtime_ns)


@lru_cache(maxsize=32)
def _load(path: Path, mtime_ns: int) -> RobotDescription:
    file = str(path)
    data = yamlio.load_file(path, file)
    if data is None:
        raise ConfigError(file, "", "file is empty")
    yamlio.check_values(data, file)
    try:
        m = RobotFile.model_validate(data)
    except ValidationError as e:
        raise to_config_error(e, file) from None
    return _check(m, path)


def _urdf(ref: str, key: str, folder: Path, file: str) -> tuple[Path, UrdfInfo]:
    try:
        p = resolve_urdf(ref, folder)
    except ConfigError as e:                     # an asset name found nowhere
        raise ConfigError(file, key, f"{excerpt(ref)}: {e.reason}") from None
    try:
        info = read_urdf(p)
    except UrdfReadError as e:
        raise ConfigError(file, key, f"{e} ({excerpt(str(p))})") from None
    missing = info.missing_meshes()
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ConfigError(file, key, f"mesh {excerpt(missing[0])} of {p.name} not found{more}")
    return p, info


def _check(m: RobotFile, path: Path) -> RobotDescription:
    """The description, checked against its URDF."""
    file, folder = str(path), path.parent
    urdf, info = _urdf(m.urdf, "urdf", folder, file)
    links, movable = set(info.links), info.movable_joints
    if m.inertia == "file":
        bad = info.nonphysical_inertias()
        if bad:
            raise ConfigError(file, "urdf", f"{info.path.name}: link {excerpt(bad[0])}'s inertia tensor is not "
                                            "physical (a principal moment exceeds the other two together); the "
                                            "simulator would zero it: set `inertia: collision`")

    def joint(name: str, key: str) -> None:
        if name not in movable:
            raise ConfigError(file, key, f"{info.path.name} has no movable joint {excerpt(name)} "
                                         f"(its movable joints: {', '.join(movable) or 'none'})")

    def link(name: str, key: str) -> None:
        if name not in links:
            shown = ", ".join(info.links[:30]) + (" ..." if len(info.links) > 30 else "")
            raise ConfigError(file, key, f"{info.path.name} has no link {excerpt(name)} (its links: {shown})")

    link(m.ee_link, "ee_link")
    for i, t in enumerate(m.tip_links):
        link(t, f"tip_links[{i}]")
    for g in GROUPS:
        for i, j in enumerate(getattr(m.groups, g)):
            joint(j, f"groups.{g}[{i}]")
    for key, names in (("home", m.home), ("gains", m.gains), ("joint_damping", m.joint_damping)):
        for j in names:
            joint(j, f"{key}.{j}")
    for j, v in m.home.items():
        uj = info.joint(j)
        if not uj.lower - 1e-9 <= v <= uj.upper + 1e-9:
            raise ConfigError(file, f"home.{j}", f"{v:g} is outside the URDF's limits [{uj.lower:g}, {uj.upper:g}]")
    variants = []
    for name, v in m.visual_variants.items():
        if name == "stock":
            raise ConfigError(file, "visual_variants.stock", "'stock' is the description's own urdf")
        vp, vinfo = _urdf(v.urdf, f"visual_variants.{name}.urdf", folder, file)
        if vinfo.movable_joints != movable:
            raise ConfigError(file, f"visual_variants.{name}.urdf",
                              f"{vp.name} has other movable joints than {info.path.name}")
        variants.append((name, (str(vp), URDF_USE_MATERIAL_COLORS_FROM_MTL if v.material_colors_from_mtl else 0)))
    return RobotDescription(
        m.name, str(urdf), m.ee_link, dict(m.home), m.base.position, m.base.orientation, tuple(m.tip_links),
        tuple(variants), 0, dict(m.joint_damping), m.tcp_offset,
        {g: tuple(getattr(m.groups, g)) for g in GROUPS}, {j: (g.kp, g.kd) for j, g in m.gains.items()},
        m.description, file, m.inertia == "file")
