"""`s2r launch BRINGUP.yaml`: start a set of ROS 2 nodes as processes, for pip-installed ROS 2.

PyPI has rclpy but no `ros2 launch`, so this is the launcher for that path. The same bringup YAML
feeds the `launch/*.launch.py` files of ros_ws/src/s2r_ros on a full ROS 2 install:

    name: sim_panda                    # optional
    env: {KEY: value}                  # optional, for every node
    nodes:
      - name: driver                   # node name (unique)
        executable: driver_node        # a console script of the package (s2r_ros)
        package: s2r_ros               # optional, default s2r_ros
        namespace: ""                  # optional
        parameters: {config: panda_sim, autostart: true}
        required: true                 # its death ends the launch with a non-zero exit
        exit_when_done: false          # its exit ends the launch with its exit code (a test, a demo)
        output: prefix                 # prefix (each line as "[name] ...") | screen (as is) | quiet
        log_level: info                # optional: debug | info | warn | error | fatal
        remappings: {/joint_states: /robot/joint_states}   # optional topic remappings
        env: {KEY: value}              # optional
        args: []                       # optional, extra command-line arguments

Each node runs as `python -m s2r_ros.<executable> --ros-args -r __node:=<name> --params-file ...`
in its own process group. Ctrl-C (SIGINT) or SIGTERM is forwarded to every node as SIGINT; nodes
that have not exited after `--grace` seconds get SIGTERM, then SIGKILL.

Before the first node starts, every node is checked (`check_bringup`): its package is s2r_ros, its
executable is a runnable module `s2r_ros.<executable>` (found with importlib, not imported: node
modules pull in rclpy), and a `config` parameter names a hardware config that loads. A node that
would fail there is refused in one line and nothing starts.

The nodes' own exit codes: 0 clean exit, 1 failure, 2 bad configuration (a node refuses to start
on bad parameters, e.g. a config that does not load), negative: killed by that signal.

Exit status of the launch:
  0  every node ended with status 0: after Ctrl-C / SIGTERM, or all of them by themselves, or an
     `exit_when_done` node ended with 0 and every other node stopped cleanly
  N  an `exit_when_done` node ended with N != 0 (1 when a signal ended it)
  1  a node failed: a required node ended (a required node is never expected to end), any node
     exited non-zero or by a signal at any time, a node had to be killed at shutdown, or a node
     could not be started
  2  the bringup was refused before any node started: a bad file, an unknown executable or
     package, a node's `config` that does not load
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import pkgutil
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .core import yamlio
from .core.yamlio import ConfigError, excerpt, keyname

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DIR = REPO / "ros_ws" / "src" / "s2r_ros"
NODE_KEYS = {"name", "executable", "package", "namespace", "parameters", "required", "exit_when_done",
             "output", "log_level", "env", "args", "remappings"}
OUTPUTS = ("prefix", "screen", "quiet")
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_ID = r"[A-Za-z_][A-Za-z0-9_]*"
_NAMESPACE = re.compile(rf"^/?{_ID}(/{_ID})*$")
_TOPIC = re.compile(rf"^(~/|/)?{_ID}(/{_ID})*$")
_PARAM = re.compile(rf"^{_ID}(\.{_ID})*$")
_ENV = re.compile(rf"^{_ID}$")


@dataclass
class NodeSpec:
    name: str
    executable: str
    package: str = "s2r_ros"
    namespace: str = ""
    parameters: dict = field(default_factory=dict)
    required: bool = False
    exit_when_done: bool = False
    output: str = "prefix"
    log_level: str = ""
    env: dict = field(default_factory=dict)
    args: list = field(default_factory=list)
    remappings: dict = field(default_factory=dict)


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


# ----------------------------------------------------------------------------- the YAML
def bringup_dirs() -> list[Path]:
    dirs = [PACKAGE_DIR / "bringup"]
    try:                                     # a colcon / ROS install of s2r_ros
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            dirs.append(Path(get_package_share_directory("s2r_ros")) / "bringup")
        except (PackageNotFoundError, OSError):     # OSError: no AMENT_PREFIX_PATH (pip-only)
            pass
    except ImportError:
        pass
    return dirs


def resolve_bringup(name: str | os.PathLike) -> Path:
    """A path, or a bare name in the package's bringup/ folder (`sim_panda` -> .../sim_panda.yaml)."""
    p = Path(name)
    if p.exists():
        return p
    for d in bringup_dirs():
        for cand in (d / p.name, d / f"{p.name}.yaml"):
            if cand.exists():
                return cand
    return p


def load_bringup(path: str | os.PathLike) -> Bringup:
    p = resolve_bringup(path)
    file = str(path)
    if not p.exists():
        raise ConfigError(file, "", "file not found (bringups: " + ", ".join(
            sorted(x.stem for d in bringup_dirs() if d.is_dir() for x in d.glob("*.yaml"))) + ")")
    return parse_bringup(yamlio.load_file(p, str(p)), str(p))


def parse_bringup(data, file: str = "<bringup>") -> Bringup:
    """Check a parsed bringup YAML and build the Bringup. Everything a node process would trip
    over at start (a name rcl refuses, a NUL byte in its environment, a list rcl cannot type) is
    refused here, with its key path; values are quoted only as bounded excerpts."""
    if not isinstance(data, dict):
        raise ConfigError(file, "", "expected a mapping with a `nodes:` list")
    unknown = set(data) - {"name", "env", "nodes", "description"}
    if unknown:
        raise ConfigError(file, keyname(sorted(unknown, key=str)[0]), "unknown key (name, description, env, nodes)")
    for k in ("name", "description"):
        if k in data and not isinstance(data[k], str):
            raise ConfigError(file, k, f"expected a string, got {excerpt(data[k])}")
    env = _env_map(data.get("env") or {}, file, "env")
    raw = data.get("nodes")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(file, "nodes", "expected a non-empty list of nodes")
    nodes, seen = [], set()
    for i, d in enumerate(raw):
        key = f"nodes[{i}]"
        if not isinstance(d, dict):
            raise ConfigError(file, key, "expected a mapping")
        bad = set(d) - NODE_KEYS
        if bad:
            raise ConfigError(file, f"{key}.{keyname(sorted(bad, key=str)[0])}",
                              f"unknown key ({', '.join(sorted(NODE_KEYS))})")
        for req in ("name", "executable"):
            if not isinstance(d.get(req), str) or not d[req]:
                raise ConfigError(file, f"{key}.{req}", "missing required string")
        name = d["name"]
        if not _NAME.match(name):
            raise ConfigError(file, f"{key}.name", f"{excerpt(name)} is not a valid ROS node name")
        if name in seen:
            raise ConfigError(file, f"{key}.name", f"duplicate node name {name!r}")
        seen.add(name)
        if not _NAME.match(d["executable"]):
            raise ConfigError(file, f"{key}.executable",
                              f"{excerpt(d['executable'])} is not an executable name (a module of the package)")
        package = d.get("package", "s2r_ros")
        if not isinstance(package, str) or not _NAME.match(package):
            raise ConfigError(file, f"{key}.package", f"{excerpt(package)} is not a package name")
        namespace = d.get("namespace", "") or ""
        if not isinstance(namespace, str) or (namespace and not _NAMESPACE.match(namespace)):
            raise ConfigError(file, f"{key}.namespace", f"{excerpt(namespace)} is not a valid ROS namespace")
        params = d.get("parameters") or {}
        if not isinstance(params, dict):
            raise ConfigError(file, f"{key}.parameters", "expected a mapping of parameter: value")
        clean = {}
        for pk, pv in params.items():
            pkey = f"{key}.parameters.{keyname(pk)}"
            if not isinstance(pk, str) or not _PARAM.match(pk):
                raise ConfigError(file, pkey, "not a valid parameter name")
            clean[pk] = _param_value(pv, file, pkey)
        output = d.get("output", "prefix")
        if output not in OUTPUTS:
            raise ConfigError(file, f"{key}.output", f"must be one of {', '.join(OUTPUTS)}; got {excerpt(output)}")
        level = d.get("log_level", "") or ""
        if level and level not in LOG_LEVELS:
            raise ConfigError(file, f"{key}.log_level",
                              f"must be one of {', '.join(LOG_LEVELS)}; got {excerpt(level)}")
        for b in ("required", "exit_when_done"):
            if not isinstance(d.get(b, False), bool):
                raise ConfigError(file, f"{key}.{b}", "expected true/false")
        args = d.get("args") or []
        if not isinstance(args, list):
            raise ConfigError(file, f"{key}.args", "expected a list")
        for j, a in enumerate(args):
            if not isinstance(a, (str, int, float)) or "\0" in str(a) or str(a) == "--ros-args":
                raise ConfigError(file, f"{key}.args[{j}]", f"{excerpt(a)} is not a plain argument "
                                  "(ROS arguments have their own keys: parameters, remappings, log_level)")
        remap = _str_map(d.get("remappings") or {}, file, f"{key}.remappings")
        for src, dst in remap.items():
            for part in (src, dst):
                if not _TOPIC.match(part):
                    raise ConfigError(file, f"{key}.remappings.{keyname(src)}",
                                      f"{excerpt(part)} is not a valid ROS name")
        nodes.append(NodeSpec(name, d["executable"], package, namespace, clean,
                              d.get("required", False), d.get("exit_when_done", False), output, level,
                              _env_map(d.get("env") or {}, file, f"{key}.env"), [str(a) for a in args], remap))
    return Bringup(str(data.get("name") or Path(file).stem), file, nodes, env)


def _param_value(v, file: str, key: str):
    """A value ROS parameters can hold: bool, int, float, string, or a non-empty list of one of
    them. A list of ints and floats becomes a list of floats (rcl refuses mixed lists)."""
    scalar = (bool, int, float, str)
    if isinstance(v, str) and "\0" in v:
        raise ConfigError(file, key, "a string with a NUL character")
    if isinstance(v, scalar):
        return v
    if isinstance(v, list) and v and all(isinstance(x, scalar) for x in v):
        kinds = {bool if isinstance(x, bool) else (float if isinstance(x, (int, float)) else str) for x in v}
        if len(kinds) == 1:
            if kinds == {float} and any(isinstance(x, float) for x in v):
                return [float(x) for x in v]
            if kinds == {str} and any("\0" in x for x in v):
                raise ConfigError(file, key, "a string with a NUL character")
            return list(v)
    raise ConfigError(file, key, f"unsupported value {excerpt(v)} "
                      "(ROS parameters are bool, int, float, string, or lists of one of them)")


def _str_map(m, file, key) -> dict:
    if not isinstance(m, dict):
        raise ConfigError(file, key, "expected a mapping of NAME: value")
    for k, v in m.items():
        if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)) or "\0" in f"{k}{v}":
            raise ConfigError(file, f"{key}.{keyname(k)}", f"expected a string, got {excerpt(v)}")
    return {k: str(v) for k, v in m.items()}


def _env_map(m, file, key) -> dict:
    out = _str_map(m, file, key)
    for k in out:
        if not _ENV.match(k):
            raise ConfigError(file, f"{key}.{keyname(k)}", "not a valid environment variable name")
    return out


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
        node.parameters[m.group(2)] = _param_value(value, b.path, label)


# ----------------------------------------------------------------------------- processes
PACKAGE = "s2r_ros"


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
            from .core.config import load_config       # numpy and the config schema: only when needed
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


def _die_with_parent():
    """In the child: get SIGTERM if the launcher dies (Linux), so no node outlives it."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Launcher:
    def __init__(self, bringup: Bringup, env: dict | None = None, grace_s: float = 10.0, out=None,
                 stop_event: threading.Event | None = None):
        self.b = bringup
        self.env = dict(os.environ if env is None else env)
        self.env.update(bringup.env)
        self.grace_s = grace_s
        self.out = out or sys.stdout
        self.stop_event = stop_event or threading.Event()
        self.procs: dict[str, subprocess.Popen] = {}
        self.codes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._readers: list[threading.Thread] = []
        self._signals = 0
        color = hasattr(self.out, "isatty") and self.out.isatty()
        palette = ["36", "33", "35", "32", "34", "31"]
        self._tag = {n.name: (f"\033[{palette[i % len(palette)]}m[{n.name}]\033[0m" if color else f"[{n.name}]")
                     for i, n in enumerate(bringup.nodes)}

    def say(self, msg: str) -> None:
        with self._lock:
            self.out.write(f"[launch] {msg}\n")
            self.out.flush()

    def _pump(self, name: str, stream) -> None:
        tag = self._tag[name]
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self.out.write(f"{tag} {line}\n")
                self.out.flush()
        stream.close()

    def start(self, tmpdir: str) -> None:
        """Write every node's parameters and build every command line, then start the nodes in
        order: a node that cannot be run is known before the first one starts."""
        cmds = []
        for node in self.b.nodes:
            pfile = os.path.join(tmpdir, f"{node.name}.params.yaml")
            with open(pfile, "w") as f:
                yaml.safe_dump({"/**": {"ros__parameters": node.parameters}}, f)
            cmds.append(node_command(node, pfile))
        for node, cmd in zip(self.b.nodes, cmds):
            env = dict(self.env)
            env.update(node.env)
            env.setdefault("PYTHONUNBUFFERED", "1")
            env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
            out = {"prefix": subprocess.PIPE, "screen": None, "quiet": subprocess.DEVNULL}[node.output]
            p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT if node.output != "screen" else None,
                                 start_new_session=True, preexec_fn=_die_with_parent)
            self.procs[node.name] = p
            if node.output == "prefix":
                t = threading.Thread(target=self._pump, args=(node.name, p.stdout), daemon=True)
                t.start()
                self._readers.append(t)
            self.say(f"started {node.name} ({node.executable}, pid {p.pid})")

    def _on_signal(self, signum, frame) -> None:
        self._signals += 1
        self.stop_event.set()

    def run(self) -> int:
        """Start every node, supervise, shut down. The exit status (see the module docstring)."""
        try:
            check_bringup(self.b, configs=False)
        except ConfigError as e:
            print(f"bringup error: {e}", file=sys.stderr)
            return 2
        main_thread = threading.current_thread() is threading.main_thread()
        old = {}
        if main_thread:
            for s in (signal.SIGINT, signal.SIGTERM):
                old[s] = signal.signal(s, self._on_signal)
        try:
            with tempfile.TemporaryDirectory(prefix="s2r-launch-") as tmp:
                try:
                    self.start(tmp)
                except (OSError, ValueError, subprocess.SubprocessError) as e:   # fork failed, no memory
                    self.say(f"could not start every node ({type(e).__name__}: {e}); shutting down")
                    self.shutdown()
                    return 1
                return self._supervise()
        finally:
            if main_thread:
                for s, h in old.items():
                    signal.signal(s, h)

    def _supervise(self) -> int:
        """Watch the nodes until a signal, a required or `exit_when_done` node ending, or every node
        having ended; then shut down. The exit status of the module docstring."""
        specs = {n.name: n for n in self.b.nodes}
        result = 0
        failed = False              # a node ended with a non-zero status or a signal on its own
        while True:
            if self.stop_event.is_set():
                self.say("shutting down (signal)")
                break
            ended = None
            for name, p in self.procs.items():
                if name not in self.codes and p.poll() is not None:
                    self.codes[name] = p.returncode
                    ended = name
                    break
            if ended is not None:
                code, spec = self.codes[ended], specs[ended]
                if spec.exit_when_done:
                    self.say(f"{ended} finished (exit code {_code_str(code)}); shutting down")
                    result = code if code >= 0 else 1
                    break
                failed = failed or code != 0
                verb = "died" if code < 0 else "exited"
                if spec.required:
                    self.say(f"required node {ended} {verb} (exit code {_code_str(code)}); shutting down")
                    result = 1
                    break
                if len(self.codes) == len(self.procs):
                    self.say(f"{ended} {verb} (exit code {_code_str(code)}); no node left, shutting down")
                    break
                self.say(f"{ended} {verb} (exit code {_code_str(code)}); the others keep running")
                continue
            if len(self.codes) == len(self.procs):
                break
            time.sleep(0.05)
        clean = self.shutdown()
        for t in self._readers:
            t.join(timeout=2.0)
        if result == 0 and (failed or not clean):
            result = 1
        return result

    def shutdown(self) -> bool:
        """SIGINT every live node, then SIGTERM, then SIGKILL. True when all exited by themselves
        with status 0 (or had exited before)."""
        live = {n: p for n, p in self.procs.items() if p.poll() is None}
        for p in live.values():
            _signal(p, signal.SIGINT)
        deadline = time.monotonic() + self.grace_s
        signals_seen = self._signals
        while any(p.poll() is None for p in live.values()) and time.monotonic() < deadline:
            if self._signals > signals_seen:          # Ctrl-C again: do not wait any longer
                break
            time.sleep(0.05)
        clean = True
        for name, p in live.items():
            if p.poll() is None:
                self.say(f"{name} did not stop within {self.grace_s:g} s: SIGTERM")
                _signal(p, signal.SIGTERM)
                try:
                    p.wait(3.0)
                except subprocess.TimeoutExpired:
                    self.say(f"{name} ignored SIGTERM: SIGKILL")
                    _signal(p, signal.SIGKILL, group=True)
                    p.wait()
                clean = False
            self.codes[name] = p.returncode
            if p.returncode != 0:
                clean = False
                self.say(f"{name} exited with {_code_str(p.returncode)} during shutdown")
        # anything a node started and left behind in its process group
        for p in self.procs.values():
            _signal(p, signal.SIGKILL, group=True)
        return clean


def _signal(p: subprocess.Popen, sig, group: bool = False) -> None:
    try:
        if group:
            os.killpg(p.pid, sig)
        else:
            p.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def _code_str(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"{code}: bad configuration" if code == 2 else str(code)


def run_bringup(bringup: Bringup, *, isolated: bool = False, env: dict | None = None, grace_s: float = 10.0,
                out=None) -> int:
    from .core.ros_env import isolated_env

    base = dict(os.environ if env is None else env)
    if isolated:
        base = isolated_env(base)
    return Launcher(bringup, base, grace_s, out).run()


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0.0 <= v <= 3600.0:
        raise argparse.ArgumentTypeError(f"expected seconds in [0, 3600], got {excerpt(text, 40)}")
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="s2r launch", description="start the ROS 2 nodes of a bringup YAML "
                                 "(pip-installed ROS 2; on a full install use ros2 launch s2r_ros ...)")
    ap.add_argument("bringup", help="path, or a name in ros_ws/src/s2r_ros/bringup/ (e.g. sim_panda)")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                    help="override a node parameter (repeatable)")
    ap.add_argument("--isolated", action="store_true",
                    help="use a private ROS_DOMAIN_ID and localhost-only discovery (tests, demos)")
    ap.add_argument("--grace", type=_seconds, default=10.0, help="seconds nodes get to stop after Ctrl-C")
    ap.add_argument("--dry-run", action="store_true", help="print the node commands and exit")
    a = ap.parse_args(argv)
    try:
        b = load_bringup(a.bringup)
        apply_overrides(b, a.set)
        check_bringup(b)
    except ConfigError as e:
        print(f"bringup error: {e}", file=sys.stderr)
        return 2
    if a.dry_run:
        for n in b.nodes:
            print(f"{n.name}: {' '.join(node_command(n, '<params>'))}  parameters={n.parameters}")
        return 0
    return run_bringup(b, isolated=a.isolated, grace_s=a.grace)

if __name__ == "__main__":
    raise SystemExit(main())
