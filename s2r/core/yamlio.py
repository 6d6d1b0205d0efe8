"""One way to read the YAML the project is given: hardware configs, bringups, presets, overrides.

Hostile or broken files end in one `ConfigError` line (`file: key.path: reason`), quickly and in
bounded memory, never a traceback or a hang:
- not a regular file, over `MAX_BYTES`, or not UTF-8: refused before parsing;
- nesting deeper than `MAX_DEPTH`: refused by a scan of the parser's events, before anything is
  built (the composer recurses);
- aliases are allowed, but the document's size counted *with every alias expanded* is capped at
  `MAX_NODES` (a billion-laughs file is a small graph that expands to 10^9 nodes in anything that
  walks or prints it); an alias to a node that contains it is refused;
- a key given twice in one mapping is refused (YAML would silently keep the last one);
- `.inf` / `.nan` and integers beyond 64 bits are refused with their key path: no setting the
  project reads needs them, and an infinite limit would switch a clamp off.
Messages quote values through `excerpt`, which never prints more than `MAX_EXCERPT` characters.

Imports nothing of ours: everything may use it.
"""
from __future__ import annotations

import math
import reprlib
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20          # the largest YAML file read (hardware configs are a few kB)
MAX_DEPTH = 64               # mappings/sequences nested deeper than this are refused
MAX_NODES = 50_000           # document size with aliases expanded
MAX_EXCERPT = 80             # characters of a value quoted in an error message
_INT_LIMIT = 1 << 63


class ConfigError(ValueError):
    """A file the project reads is unusable: `file: key.path: reason`, one line."""

    def __init__(self, file: str, key: str, reason: str):
        self.file, self.key, self.reason = file, key, reason
        super().__init__(f"{file}: {key}: {reason}" if key else f"{file}: {reason}")


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxdict, _repr.maxlist, _repr.maxtuple = 2, 4, 6, 6
_repr.maxstring, _repr.maxother, _repr.maxlong = MAX_EXCERPT, MAX_EXCERPT, 40


def excerpt(value: Any, limit: int = MAX_EXCERPT) -> str:
    """repr(value), bounded in time and length whatever the value's size or sharing."""
    s = _repr.repr(value)
    return s if len(s) <= limit else s[:limit - 3] + "..."


def keyname(k: Any) -> str:
    """A mapping key as it appears in a key path: short printable strings as they are, anything
    else (a number, a 1 MB string, a control character) as a bounded excerpt."""
    if isinstance(k, str) and len(k) <= 40 and k.isprintable():
        return k
    return excerpt(k, 40)


_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)     # libyaml's C parser when present
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


class _Loader(_Base):
    """SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:      # explicit keys only: `<<` merges may be overridden
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {excerpt(key, 40)} (first given on line {seen[key]})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _scan(text: str) -> None:
    """One pass over the parser's events, before anything is built: depth, and the document's
    size with every alias expanded. Raises yaml.YAMLError with the mark where a limit is passed."""
    depth = count = 0
    sizes: dict[str, int] = {}           # anchor -> size of the value it names
    open_: list[tuple[str | None, int]] = []
    for ev in yaml.parse(text, Loader=_Base):
        if isinstance(ev, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  ev.start_mark)
            open_.append((ev.anchor, count))
            count += 1
        elif isinstance(ev, _CLOSE):
            depth -= 1
            anchor, start = open_.pop()
            if anchor is not None:
                sizes[anchor] = count - start
        elif isinstance(ev, yaml.ScalarEvent):
            count += 1
            if ev.anchor is not None:
                sizes[ev.anchor] = 1
        elif isinstance(ev, yaml.AliasEvent):
            if ev.anchor in sizes:
                count += sizes[ev.anchor]
            elif any(a == ev.anchor for a, _ in open_):
                raise yaml.composer.ComposerError(
                    None, None, f"alias *{excerpt(ev.anchor, 40)} refers to a value that contains it",
                    ev.start_mark)
        else:
            continue
        if count > MAX_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_NODES} values, counting each alias expanded",
                ev.start_mark)


def loads(text: str, file: str = "<yaml>") -> Any:
    """Parse YAML text under the limits above; every problem is one ConfigError."""
    if len(text) > MAX_BYTES:
        raise ConfigError(file, "", f"larger than {MAX_BYTES // 1024} KiB; not a file s2r reads")
    loader = None
    try:
        _scan(text)
        loader = _Loader(text)
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and cmark is not None:
            context += f" on line {cmark.line + 1}"
        problem = "; ".join(x for x in (context, getattr(e, "problem", None)) if x) or str(e)
        raise ConfigError(file, where, f"invalid YAML: {_one_line(problem)}") from None
    except RecursionError:            # a construct the scan did not see; never a traceback
        raise ConfigError(file, "", f"nested too deeply (limit {MAX_DEPTH} levels)") from None
    finally:
        if loader is not None:
            loader.dispose()
    check_values(data, file)
    return data


def load_file(path: str | Path, file: str | None = None) -> Any:
    """Read and parse one YAML file. `file` is the name errors use (default: the path given)."""
    p = Path(path)
    file = str(path) if file is None else file
    try:
        if p.is_dir():
            raise ConfigError(file, "", "is a directory, not a YAML file")
        if p.exists() and not p.is_file():
            raise ConfigError(file, "", "not a regular file")
        with open(p, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(file, "", "file not found") from None
    except OSError as e:
        raise ConfigError(file, "", f"cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(file, "", f"larger than {MAX_BYTES // 1024} KiB; not a file s2r reads")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(file, "", f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                                    "is this a YAML file?") from None
    return loads(text, file)


def check_values(data: Any, file: str, path: str = "") -> None:
    """Refuse non-finite floats and integers beyond 64 bits anywhere in a parsed document."""
    stack = [(data, path)]
    while stack:
        v, key = stack.pop()
        if isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        if isinstance(v, float):
            if not math.isfinite(v):
                raise ConfigError(file, key or "(top level)", f"must be a finite number, got {v}")
        elif isinstance(v, int):
            if not -_INT_LIMIT <= v < _INT_LIMIT:
                raise ConfigError(file, key or "(top level)", "integer out of range (beyond 64 bits)")
        elif isinstance(v, dict):
            for k, x in v.items():
                ks = keyname(k)
                stack.append((x, f"{key}.{ks}" if key else ks))
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                stack.append((x, f"{key}[{i}]"))


def _one_line(s: str) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= 2 * MAX_EXCERPT else s[:2 * MAX_EXCERPT - 3] + "..."
