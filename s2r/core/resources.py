"""Where a file given by name is found: hardware configs, robot descriptions, randomization presets,
bringups, robot assets, training experiments.

One lookup order for every kind, so a command behaves the same from a checkout, from any directory,
and from an installed wheel:

1. an explicit path (``./my_robot.yaml``, ``/abs/robot.yaml``) -- used as it is;
2. ``./<kind dir>/`` under the current directory (``./hardware_configs/panda_sim.yaml``);
3. each directory of ``$S2R_PATH`` (``os.pathsep``-separated), as ``<dir>/<kind dir>/``;
4. the copy packaged with s2r (in a checkout: the repository's own folders).

A bare name may leave out the suffix (``panda_sim`` -> ``panda_sim.yaml``). A name found nowhere
raises `ResourceNotFound`, one line listing every place looked in. The packaged folders are located
without importing the packages that hold them (this module sits at the bottom of the layers).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .yamlio import ConfigError, excerpt

__all__ = ["ENV_VAR", "KINDS", "Kind", "ResourceNotFound", "find", "names", "packaged_dir", "portable", "resolve",
           "search_dirs"]

ENV_VAR = "S2R_PATH"


@dataclass(frozen=True)
class Kind:
    """One kind of file: its folder name (in the cwd and in each $S2R_PATH entry), the suffix a
    bare name may leave out, and where the packaged copies live (package, folder inside it)."""

    label: str
    dirname: str
    suffix: str
    package: str
    packaged: str


KINDS: dict[str, Kind] = {
    "hardware_config": Kind("hardware config", "hardware_configs", ".yaml", "s2r", "data/hardware_configs"),
    "preset": Kind("randomization preset", "presets", ".yaml", "s2r.sim", "presets"),
    "bringup": Kind("bringup", "bringup", ".yaml", "s2r", "data/bringup"),
    "asset": Kind("robot asset", "assets", ".urdf", "s2r.sim", "assets"),
    "robot": Kind("robot description", "robots", ".yaml", "s2r", "data/robots"),
    "experiment": Kind("experiment", "experiments", ".yaml", "s2r.learning", "experiments"),
}


class ResourceNotFound(ConfigError):
    """A name found nowhere: `NAME: file not found (<kind>; looked in: ...; known: ...)`."""

    def __init__(self, kind: str, name: str, looked_in: list[str], known: list[str]):
        self.kind, self.name, self.looked_in, self.known = kind, name, looked_in, known
        k = KINDS[kind]
        reason = f"file not found ({k.label}; looked in: {', '.join(looked_in)}"
        if known:
            shown = known if len(known) <= 20 else known[:20] + [f"... {len(known) - 20} more"]
            reason += f"; known: {', '.join(shown)}"
        super().__init__(_show(name), "", reason + ")")


def _show(name) -> str:
    s = str(name)
    return s if len(s) <= 120 and s.isprintable() else excerpt(s)


def _kind(kind: str) -> Kind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown resource kind {kind!r} (known: {', '.join(KINDS)})") from None


def packaged_dir(kind: str) -> Path:
    """The folder of the copies packaged with s2r (the package is located, not imported)."""
    k = _kind(kind)
    spec = importlib.util.find_spec(k.package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"package {k.package!r} holding the packaged {k.label}s is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / k.packaged


def search_dirs(kind: str) -> list[tuple[str, Path]]:
    """(label, folder) in lookup order after an explicit path: ./<dir>, each $S2R_PATH entry,
    the packaged copies. Folders that do not exist are listed too (the error names them)."""
    k = _kind(kind)
    dirs = [(f"./{k.dirname}", Path.cwd() / k.dirname)]
    for entry in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if entry.strip():
            d = Path(entry).expanduser() / k.dirname
            dirs.append((f"${ENV_VAR}:{d}", d))
    try:
        dirs.append((f"packaged:{packaged_dir(kind)}", packaged_dir(kind)))
    except ValueError:
        pass
    return dirs


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except (OSError, ValueError):        # a name too long for the file system, or with a NUL byte
        return False


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except (OSError, ValueError):
        return False


def _lookup_name(name: str) -> bool:
    """A name is looked up in the folders unless it is absolute or climbs out of them."""
    p = Path(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\0" not in name


def find(kind: str, name: str | os.PathLike) -> Path | None:
    """The file `name` stands for, in the lookup order, or None."""
    k = _kind(kind)
    p = Path(name)
    s = os.fspath(name)
    # a bare name (`panda_sim`) is a path only if such a file is here: a folder of that name in the
    # current directory (a run folder, say) does not hide the lookup; a path-like name is a path
    bare = p.name == s and p.suffix != k.suffix
    if _is_file(p) or (not bare and _exists(p)):
        return p
    if not _lookup_name(s):
        return None
    rel = [p] if p.suffix == k.suffix or not k.suffix else [p, p.with_name(p.name + k.suffix)]
    for _, d in search_dirs(kind):
        for r in rel:
            if _is_file(d / r):
                return d / r
    return None


def portable(kind: str, name: str | os.PathLike) -> str:
    """How another process, perhaps in another directory, finds the same file: a packaged copy by
    its bare name (found the same way anywhere), anything else (a path, a name found in ./<kind
    dir> or $S2R_PATH) by its absolute path. A name found nowhere stays as it is."""
    found = find(kind, name)
    if found is None:
        return os.fspath(name)
    try:
        packaged = packaged_dir(kind).resolve()
    except ValueError:
        packaged = None
    found = found.resolve()
    if packaged is not None and found.parent == packaged and Path(os.fspath(name)).name == os.fspath(name):
        return os.fspath(name)
    return str(found)


def names(kind: str) -> dict[str, Path]:
    """Every bare name a lookup would find (name without suffix -> file), the first in lookup
    order winning -- what `known:` lists and what a suite iterates over."""
    k = _kind(kind)
    out: dict[str, Path] = {}
    for _, d in search_dirs(kind):
        try:
            files = sorted(d.glob(f"*{k.suffix}")) if d.is_dir() else []
        except OSError:
            files = []
        for f in files:
            out.setdefault(f.name.removesuffix(k.suffix) if k.suffix else f.name, f)
    return dict(sorted(out.items()))


def resolve(kind: str, name: str | os.PathLike) -> Path:
    """`find`, or `ResourceNotFound` (a ConfigError, one line) listing where it looked."""
    p = find(kind, name)
    if p is not None:
        return p
    looked = [f"path {_show(name)}"]
    if _lookup_name(os.fspath(name)):
        looked += [label for label, _ in search_dirs(kind)]
    raise ResourceNotFound(kind, os.fspath(name), looked, list(names(kind)))
