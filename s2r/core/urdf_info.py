"""What a URDF names, read without a simulator: its links, its joints (type, parent, child, limits)
and the mesh files it references -- enough for a robot description and a hardware config to be
checked against the model before anything loads it.

The kinematics and dynamics of a URDF are controllers.models.RigidBodyModel's; this module only
reads names, so the config layer can check them (it imports nothing of this project's but the
error type).
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["MOVABLE", "UrdfInfo", "UrdfJoint", "UrdfReadError", "read_urdf"]

MOVABLE = ("revolute", "continuous", "prismatic")
MAX_URDF_BYTES = 32 << 20


class UrdfReadError(ValueError):
    """The URDF cannot be read or does not describe one tree of links (one line, no path)."""


@dataclass(frozen=True)
class UrdfJoint:
    name: str
    type: str
    parent: str
    child: str
    lower: float
    upper: float
    velocity: float
    effort: float

    @property
    def movable(self) -> bool:
        return self.type in MOVABLE


@dataclass(frozen=True)
class UrdfInfo:
    path: Path
    name: str
    links: tuple[str, ...]
    joints: tuple[UrdfJoint, ...]      # in file order
    root_link: str
    meshes: tuple[str, ...]            # mesh filenames as written (visual and collision)
    # (link, mass, (ixx, ixy, ixz, iyy, iyz, izz)) of every link with an <inertial>
    inertials: tuple[tuple[str, float, tuple[float, ...]], ...] = ()

    @property
    def movable_joints(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints if j.movable)

    def joint(self, name: str) -> UrdfJoint:
        return next(j for j in self.joints if j.name == name)

    def nonphysical_inertias(self) -> list[str]:
        """Links whose inertia tensor is not one a rigid body can have: a negative principal moment,
        or one larger than the other two together (pybullet then zeroes the link's inertia)."""
        out = []
        for link, _mass, (ixx, ixy, ixz, iyy, iyz, izz) in self.inertials:
            lam = np.linalg.eigvalsh(np.array([[ixx, ixy, ixz], [ixy, iyy, iyz], [ixz, iyz, izz]]))
            tol = 1e-9 * max(float(np.abs(lam).max()), 1e-12)
            if lam[0] < -tol or lam[0] + lam[1] < lam[2] - tol:
                out.append(link)
        return out

    def missing_meshes(self) -> list[str]:
        """Mesh files that do not exist where pybullet looks: relative to the URDF's folder, after
        dropping `package://` (as pybullet does)."""
        out = []
        for m in self.meshes:
            rel = m[len("package://"):] if m.startswith("package://") else m
            rel = rel[len("file://"):] if rel.startswith("file://") else rel
            p = Path(rel) if Path(rel).is_absolute() else self.path.parent / rel
            if not p.is_file() and rel not in out:
                out.append(m)
        return out


def _float(node, key: str, default: float) -> float:
    if node is None or node.get(key) is None:
        return default
    try:
        v = float(node.get(key))
    except ValueError:
        raise UrdfReadError(f"<{node.tag} {key}={node.get(key)!r}> is not a number") from None
    return v if math.isfinite(v) else default


def read_urdf(path: str | Path) -> UrdfInfo:
    """The names in the URDF at `path` (cached per file and modification time)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise UrdfReadError(f"cannot read the URDF: {e.strerror or e}") from None
    return _read(p.resolve(), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _read(path: Path, mtime_ns: int, size: int) -> UrdfInfo:
    if size > MAX_URDF_BYTES:
        raise UrdfReadError(f"the URDF is {size} bytes, more than {MAX_URDF_BYTES >> 20} MiB")
    try:
        root = ET.parse(path).getroot()
    except OSError as e:
        raise UrdfReadError(f"cannot read the URDF: {e.strerror or e}") from None
    except ET.ParseError as e:
        raise UrdfReadError(f"the URDF is not well-formed XML: {e}") from None
    if root.tag != "robot":
        raise UrdfReadError(f"the URDF's root element is <{root.tag}>, not <robot>")
    links = tuple(ln.get("name", "") for ln in root.findall("link"))
    if not links or "" in links:
        raise UrdfReadError("the URDF has no links" if not links else "a <link> has no name")
    joints = []
    for j in root.findall("joint"):
        parent, child, lim = j.find("parent"), j.find("child"), j.find("limit")
        name, kind = j.get("name", ""), j.get("type", "")
        if not name or parent is None or child is None:
            raise UrdfReadError(f"joint {name!r} lacks a name, a <parent> or a <child>")
        cont = kind == "continuous"
        joints.append(UrdfJoint(name, kind, parent.get("link", ""), child.get("link", ""),
                                -math.inf if cont else _float(lim, "lower", -math.inf),
                                math.inf if cont else _float(lim, "upper", math.inf),
                                _float(lim, "velocity", math.inf), _float(lim, "effort", math.inf)))
    known = set(links)
    for j in joints:
        for end in (j.parent, j.child):
            if end not in known:
                raise UrdfReadError(f"joint {j.name!r} names a link {end!r} the URDF lacks")
    children = {j.child for j in joints}
    roots = [ln for ln in links if ln not in children]
    if len(roots) != 1:
        raise UrdfReadError(f"expected one root link, found {len(roots)} ({', '.join(roots[:5])})")
    meshes = tuple(dict.fromkeys(m.get("filename", "") for m in root.iter("mesh") if m.get("filename")))
    inertials = []
    for ln in root.findall("link"):
        node = ln.find("inertial")
        if node is None:
            continue
        mass, tensor = node.find("mass"), node.find("inertia")
        values = tuple(_float(tensor, k, 0.0) for k in ("ixx", "ixy", "ixz", "iyy", "iyz", "izz"))
        inertials.append((ln.get("name"), _float(mass, "value", 0.0), values))
    return UrdfInfo(path, root.get("name", path.stem), links, tuple(joints), roots[0], meshes, tuple(inertials))
