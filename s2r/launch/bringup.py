"""Bringup files: the schema (pydantic), loading, `--set` overrides, and the checks done before
any node starts. The format is in s2r/launch/__init__.py; `s2r schema bringup` prints it.

Everything a node process would trip over at start (a name rcl refuses, a NUL byte in its
environment, a list rcl cannot type) is refused here, with its key path, as one ConfigError;
values are quoted only as bounded excerpts."""
from __future__ import annotations

import importlib.util
import os
import pkgutil
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr, \
    TypeAdapter, ValidationError
from pydantic import dataclasses as pdc

from ..core import resources, yamlio
from ..core.schema.errors import fail, key_path, reason, with_message
from ..core.yamlio import ConfigError, excerpt

PACKAGE = "s2r_ros"
OUTPUTS = ("prefix", "screen", "quiet")
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_ID = r"[A-Za-z_][A-Za-z0-9_]*"
_NAMESPACE = re.compile(rf"^/?{_ID}(/{_ID})*$")
_TOPIC = re.compile(rf"^(~/|/)?{_ID}(/{_ID})*$")
_PARAM = re.compile(rf"^{_ID}(\.{_ID})*$")
_ENV = re.compile(rf"^{_ID}$")


# ----------------------------------------------------------------------------- field types
def _matching(pattern: re.Pattern, what: str, empty_ok: bool = False):
    def check(v):
        if not (empty_ok and v == "") and not pattern.match(v):
            raise fail(f"{excerpt(v)} {what}")
        return v
    return AfterValidator(check)


def param_value(v):
    """A value ROS parameters can hold: bool, int, float, string, or a non-empty list of one of
    them. A list of ints and floats becomes a list of floats (rcl refuses mixed lists)."""
    scalar = (bool, int, float, str)
    if isinstance(v, str) and "\0" in v:
        raise fail("a string with a NUL character")
    if isinstance(v, scalar):
        return v
    if isinstance(v, list) and v and all(isinstance(x, scalar) for x in v):
        kinds = {bool if isinstance(x, bool) else (float if isinstance(x, (int, float)) else str) for x in v}
        if len(kinds) == 1:
            if kinds == {float} and any(isinstance(x, float) for x in v):
                return [float(x) for x in v]
            if kinds == {str} and any("\0" in x for x in v):
                raise fail("a string with a NUL character")
            return list(v)
    raise fail(f"unsupported value {excerpt(v)} (ROS parameters are bool, int, float, string, or lists of one of them)")


def _plain(v):
    if not isinstance(v, (str, int, float, bool)) or "\0" in str(v):
        raise fail(f"expected a string, got {excerpt(v)}")
    return str(v)


def _plain_arg(a):
    if not isinstance(a, (str, int, float)) or "\0" in str(a) or str(a) == "--ros-args":
        raise fail(f"{excerpt(a)} is not a plain argument (ROS arguments have their own keys: parameters, "
                   "remappings, log_level)")
    return str(a)


def _container(kind: type, message: str):
    """A mapping or list field: null counts as empty (`args:` with nothing after it), another type is
    refused with `message`; the items are validated (and refused with their own key) after this."""
    def check(v):
        if v is None:
            return kind()
        if not isinstance(v, kind):
            raise fail(message)
        return v
    return BeforeValidator(check)


ParamName = Annotated[StrictStr, _matching(_PARAM, "is not a valid parameter name"),
                      with_message(lambda v: "not a valid parameter name")]
ParamValue = Annotated[Any, AfterValidator(param_value),
                       Field(json_schema_extra={"description": "bool, int, float, string, or a list of one kind"})]
def _env_name(k):
    if not _ENV.match(k):
        raise fail("not a valid environment variable name")
    return k


EnvName = Annotated[StrictStr, with_message(lambda v: f"expected a string, got {excerpt(v)}"),
                    AfterValidator(_env_name)]
EnvMap = Annotated[dict[EnvName, Annotated[Any, AfterValidator(_plain), Field(json_schema_extra={"type": "string"})]],
                   _container(dict, "expected a mapping of NAME: value")]
RosName = Annotated[StrictStr, with_message(lambda v: f"{excerpt(v)} is not a valid ROS name"),
                    _matching(_TOPIC, "is not a valid ROS name")]


# ----------------------------------------------------------------------------- the schema
_NODE_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


def _missing_string(v) -> str:
    return "missing required string"


@pdc.dataclass(config=_NODE_CONFIG)
class NodeSpec:
    """One node of a bringup: what runs, under which name, with which parameters."""

    name: Annotated[StrictStr, with_message(_missing_string), _matching(_NAME, "is not a valid ROS node name")]
    executable: Annotated[StrictStr, with_message(_missing_string),
                          _matching(_NAME, "is not an executable name (a module of the package)")]
    package: Annotated[StrictStr, with_message(lambda v: f"{excerpt(v)} is not a package name"),
                       _matching(_NAME, "is not a package name")] = PACKAGE
    namespace: Annotated[StrictStr, BeforeValidator(lambda v: "" if v is None else v),
                         with_message(lambda v: f"{excerpt(v)} is not a valid ROS namespace"),
                         _matching(_NAMESPACE, "is not a valid ROS namespace", empty_ok=True)] = ""
    parameters: Annotated[dict[ParamName, ParamValue],
                          _container(dict, "expected a mapping of parameter: value")] = field(default_factory=dict)
    required: Annotated[StrictBool, with_message(lambda v: "expected true/false")] = False
    exit_when_done: Annotated[StrictBool, with_message(lambda v: "expected true/false")] = False
    output: Literal[OUTPUTS] = "prefix"
    log_level: Annotated[Literal[("",) + LOG_LEVELS], BeforeValidator(lambda v: "" if v is None else v),
                         with_message(lambda v: f"must be one of {', '.join(LOG_LEVELS)}; got {excerpt(v)}")] = ""
    env: EnvMap = field(default_factory=dict)
    args: Annotated[list[Annotated[Any, AfterValidator(_plain_arg)]],
                    _container(list, "expected a list")] = field(default_factory=list)
    remappings: Annotated[dict[RosName, RosName],
                          _container(dict, "expected a mapping of NAME: value")] = field(default_factory=dict)


NODE_KEYS = tuple(NodeSpec.__pydantic_fields__)


def _some_nodes(v):
    if not v:
        raise fail("expected a non-empty list of nodes")
    return v


class BringupFile(BaseModel):
    """A bringup YAML: the nodes `s2r launch` (or `ros2 launch` on a full install) starts."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Annotated[StrictStr, with_message(lambda v: f"expected a string, got {excerpt(v)}")] | None = None
    description: Annotated[StrictStr, with_message(lambda v: f"expected a string, got {excerpt(v)}")] | None = None
    env: EnvMap = Field(default_factory=dict)
    nodes: Annotated[list[NodeSpec], _container(list, "expected a non-empty list of nodes"),
                     AfterValidator(_some_nodes)] = Field(default_factory=list, validate_default=True)


@dataclass
class Bringup:
    name: str
    path: str
    nodes: list[NodeSpec]
    env: dict = field(default_factory=dict)

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


# ----------------------------------------------------------------------------- loading
def bringup_dirs() -> list[Path]:
    """Where a bringup name is looked up, in order: ./bringup, each $S2R_PATH entry's bringup/,
    the bringups packaged with s2r (in a checkout: ros_ws/src/s2r_ros/bringup)."""
    return [d for _, d in resources.search_dirs("bringup")]


def resolve_bringup(name: str | os.PathLike) -> Path:
    """A path, or a bare name in the bringup lookup order (`sim_panda` -> .../sim_panda.yaml); a
    ConfigError listing where it looked if found nowhere."""
    return resources.resolve("bringup", name)


def load_bringup(path: str | os.PathLike) -> Bringup:
    p = resolve_bringup(path)
    return parse_bringup(yamlio.load_file(p, str(p)), str(p))


def _unknown(err: dict) -> str:
    if len(err["loc"]) == 1:
        return "unknown key (name, description, env, nodes)"
    return f"unknown key ({', '.join(sorted(NODE_KEYS))})"


def parse_bringup(data, file: str = "<bringup>") -> Bringup:
    """Check a parsed bringup YAML and build the Bringup; the first problem is one ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(file, "", "expected a mapping with a `nodes:` list")
    try:
        m = BringupFile.model_validate(data)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        unknown = err["type"] in ("extra_forbidden", "unexpected_keyword_argument", "invalid_key")
        why = _unknown(err) if unknown else {"dataclass_type": "expected a mapping",
                                             "missing": "missing required string"}.get(err["type"]) or reason(err)
        raise ConfigError(file, key_path(err), why) from None
    seen: set[str] = set()
    for i, n in enumerate(m.nodes):
        if n.name in seen:
            raise ConfigError(file, f"nodes[{i}].name", f"duplicate node name {n.name!r}")
        seen.add(n.name)
    return Bringup(str(m.name or Path(file).stem), file, list(m.nodes), m.env)


_PARAM_VALUE = TypeAdapter(ParamValue)


def apply_config(b: Bringup, config: str) -> None:
    """Every node of `b` that takes a hardware config (a `config` parameter) gets `config`: one
    bringup file runs any robot with a config (a path is made absolute, as nodes may start
    elsewhere: s2r.core.resources.portable)."""
    value = resources.portable("hardware_config", config)
    nodes = [n for n in b.nodes if "config" in n.parameters]
    if not nodes:
        raise ConfigError(b.path, "--config", "no node of this bringup takes a hardware config")
    for n in nodes:
        n.parameters["config"] = value


def apply_overrides(b: Bringup, sets: list[str]) -> None:
    """`NODE.PARAM=VALUE` (VALUE parsed as YAML) for each item of `sets`."""
    for s in sets:
        m = re.match(r"^([A-Za-z][\w]*)\.([\w.]+)=(.*)$", s, re.S)
        if not m:
            raise ConfigError(b.path, excerpt(s, 40), "expected --set NODE.PARAM=VALUE")
        try:
            node = b.node(m.group(1))
        except KeyError:
            raise ConfigError(b.path, excerpt(s, 40), f"no node named {m.group(1)!r}") from None
        label = f"--set {m.group(1)}.{m.group(2)}"
        if not _PARAM.match(m.group(2)):
            raise ConfigError(b.path, label, "not a valid parameter name")
        value = yamlio.loads(m.group(3), label) if m.group(3) else ""
        try:
            node.parameters[m.group(2)] = _PARAM_VALUE.validate_python(value)
        except ValidationError as e:
            raise ConfigError(b.path, label, reason(e.errors(include_url=False)[0])) from None


# ----------------------------------------------------------------------------- before a node starts
def node_module(package: str, executable: str) -> Path:
    """The source file of node `executable` of `package`, found without importing it (a node
    module imports rclpy). A ConfigError (key `package` or `executable`) when the pip-only
    launcher cannot run it: another package, no such module, or a module that is not a program
    (no `if __name__ == "__main__":`, so `python -m` would do nothing and exit 0)."""
    if package != PACKAGE:
        raise ConfigError("", "package", f"the pip-only launcher runs {PACKAGE} nodes only, not {excerpt(package)}")
    if not isinstance(executable, str) or not _NAME.match(executable):
        raise ConfigError("", "executable", f"{excerpt(executable)} is not an executable name")
    try:
        spec = importlib.util.find_spec(f"{PACKAGE}.{executable}")
    except ImportError:                      # the package itself is not importable
        raise ConfigError("", "package", f"{PACKAGE} is not installed in {sys.executable} "
                          "(pip install -e ros_ws/src/s2r_ros)") from None
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    if origin is None or origin.suffix != ".py" or not _is_program(origin):
        raise ConfigError("", "executable", f"{PACKAGE} has no node {executable!r} "
                          f"(nodes: {', '.join(node_executables()) or 'none found'})")
    return origin


def _is_program(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return re.search(r"^if __name__ == [\"']__main__[\"']\s*:", text, re.M) is not None


def node_executables() -> list[str]:
    """The runnable node modules of the package, for error messages."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except ImportError:
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)
                  if not m.ispkg and _NAME.match(m.name) and
                  _is_program(Path(m.module_finder.path) / f"{m.name}.py"))


def check_bringup(b: Bringup, configs: bool = True) -> None:
    """Everything that can be known before a node starts, for every node, in order: its package and
    executable (`node_module`), and with `configs`, that a `config` parameter names a hardware
    config that loads. The first problem is a ConfigError keyed `nodes[i]....`."""
    for i, n in enumerate(b.nodes):
        key = f"nodes[{i}]"
        try:
            node_module(n.package, n.executable)
        except ConfigError as e:
            raise ConfigError(b.path, f"{key}.{e.key}", e.reason) from None
        if configs and "config" in n.parameters:
            value = n.parameters["config"]
            if not isinstance(value, str) or not value:
                raise ConfigError(b.path, f"{key}.parameters.config",
                                  f"expected a hardware config name or path, got {excerpt(value)}")
            from ..core.config import load_config       # numpy and the config schema: only when needed
            try:
                load_config(value)
            except ConfigError as e:
                raise ConfigError(b.path, f"{key}.parameters.config", str(e)) from None


def node_command(node: NodeSpec, params_file: str) -> list[str]:
    """The command line of one node; a ConfigError (`NODE: package|executable: reason`) when the
    launcher cannot run it."""
    try:
        node_module(node.package, node.executable)
    except ConfigError as e:
        raise ConfigError(node.name, e.key, e.reason) from None
    cmd = [sys.executable, "-u", "-m", f"{PACKAGE}.{node.executable}", *node.args, "--ros-args",
           "-r", f"__node:={node.name}", "--params-file", params_file]
    if node.namespace:
        cmd += ["-r", f"__ns:={node.namespace if node.namespace.startswith('/') else '/' + node.namespace}"]
    for src, dst in node.remappings.items():
        cmd += ["-r", f"{src}:={dst}"]
    if node.log_level:
        cmd += ["--log-level", node.log_level]
    return cmd
