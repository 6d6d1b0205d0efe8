"""The launcher's supervisor: start every node of a Bringup as its own process group, forward
signals, watch for nodes ending, shut down (SIGINT, then SIGTERM, then SIGKILL), and decide the
exit status (s2r/launch/__init__.py lists the rules)."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import yaml

from ..core.yamlio import ConfigError
from .bringup import Bringup, check_bringup, node_command


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
    from ..core.ros_env import isolated_env

    base = dict(os.environ if env is None else env)
    if isolated:
        base = isolated_env(base)
    return Launcher(bringup, base, grace_s, out).run()
