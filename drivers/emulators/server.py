"""Emulators in their own process, steered over a JSON-lines pipe.

The parent (`EmulatorProcess`) starts `python -m s2r.drivers.emulators serve`, sends one line with
`{"kind": "dynamixel" | "ros2", "spec": {...}, "realtime": bool}` and reads back
`{"ok": true, "result": {"port": ...}}` once the emulator runs. Then each request line
`{"op": "inject" | "clear" | "snapshot" | "stats" | "stop", ...}` gets one reply line. The child
exits when its stdin closes, so an emulator never outlives the test that started it.

A separate process keeps the emulator off the GIL of the process under test: a Python driver
polling a serial port and an emulator answering it in the same interpreter slow each other down.
"""
from __future__ import annotations

import gc
import json
import os
import queue
import subprocess
import sys
import threading
import time

from s2r.core.realtime import freeze_heap


class EmulatorError(RuntimeError):
    pass


class EmulatorProcess:
    """Parent side: a running emulator child and its control pipe."""

    def __init__(self, kind: str, spec: dict, *, realtime: bool = True, env: dict | None = None,
                 startup_timeout: float = 60.0):
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "s2r.drivers.emulators", "serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=env,
            text=True, bufsize=1)
        self._lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read_lines, daemon=True, name=f"{kind}-emulator-pipe")
        self._reader.start()
        self._lock = threading.Lock()
        try:
            self.info = self._request({"kind": kind, "spec": spec, "realtime": realtime}, startup_timeout)
        except BaseException:
            self.close()
            raise

    def _read_lines(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _request(self, msg: dict, timeout: float = 30.0):
        with self._lock:
            if self.proc.poll() is not None:
                raise EmulatorError(f"{self.kind} emulator exited with code {self.proc.returncode}")
            try:
                self.proc.stdin.write(json.dumps(msg) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError) as e:
                raise EmulatorError(f"{self.kind} emulator is gone: {e}") from None
            deadline = time.monotonic() + timeout
            while True:
                try:
                    line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise EmulatorError(f"{self.kind} emulator did not answer {msg.get('op', 'start')!r} "
                                        f"within {timeout:g} s") from None
                if line is None:
                    raise EmulatorError(f"{self.kind} emulator exited (code {self.proc.wait()}) "
                                        "-- its stderr says why")
                try:
                    reply = json.loads(line)
                except json.JSONDecodeError:
                    continue        # not ours (a library printing to stdout)
                if reply.get("ok"):
                    return reply.get("result")
                raise EmulatorError(reply.get("error", "unknown emulator error"))

    def call(self, op: str, **kw):
        return self._request({"op": op, **kw})

    def close(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()     # the child stops when its stdin closes
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._reader.join(timeout=2)


# ---------------------------------------------------------------------------------- child side
def serve(stdin=None, stdout=None) -> int:
    """Child entry point: run one emulator, answer control requests until stdin closes."""
    # keep the protocol channel clean: anything else printed to stdout goes to stderr
    proto = stdout or os.fdopen(os.dup(1), "w", buffering=1)
    if stdout is None:
        os.dup2(2, 1)
    stdin = stdin or sys.stdin

    def reply(ok: bool, result=None, error: str = "") -> None:
        proto.write(json.dumps({"ok": ok, "result": result} if ok else {"ok": False, "error": error}) + "\n")
        proto.flush()

    first = stdin.readline()
    if not first:
        return 0
    try:
        hello = json.loads(first)
        emu = start_emulator(hello["kind"], hello["spec"], realtime=hello.get("realtime", True))
    except Exception as e:  # report any start failure to the parent as one line
        reply(False, error=f"{type(e).__name__}: {e}")
        return 1
    freeze_heap()       # no full collection of the start-up heap while it answers the bus
    try:
        reply(True, {**emu.info(), "frozen_objects": gc.get_freeze_count()})
        for line in stdin:
            try:
                req = json.loads(line)
                op = req.pop("op")
                if op == "stop":
                    reply(True)
                    break
                if op not in ("inject", "clear", "snapshot", "stats"):
                    raise ValueError(f"unknown op {op!r}")
                reply(True, getattr(emu, op)(**req))
            except Exception as e:  # a bad request is answered, not fatal
                reply(False, error=f"{type(e).__name__}: {e}")
    finally:
        emu.stop()
    return 0


def start_emulator(kind: str, spec: dict, realtime: bool = True):
    """An emulator object with info() / inject() / clear() / snapshot() / stats() / stop()."""
    if kind == "dynamixel":
        return _DynamixelService(spec, realtime)
    if kind == "ros2":
        from .fake_ros2_robot import FakeRobotService
        return FakeRobotService(spec)
    raise ValueError(f"no emulator for driver type {kind!r} (dynamixel, ros2)")


class _DynamixelService:
    def __init__(self, spec: dict, realtime: bool):
        from .dynamixel_bus import BusSpec, PtyBusEmulator
        self.emu = PtyBusEmulator(BusSpec.from_dict(spec), realtime=realtime).start()

    def info(self) -> dict:
        return {"port": self.emu.port, "pid": os.getpid()}

    def inject(self, fault: str, **kw):
        self.emu.inject(fault, **kw)

    def clear(self, fault: str | None = None):
        self.emu.clear(fault)

    def snapshot(self):
        return {str(k): v for k, v in self.emu.snapshot().items()}

    def stats(self):
        return self.emu.stats()

    def stop(self):
        self.emu.stop()
