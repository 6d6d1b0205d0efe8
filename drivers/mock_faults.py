"""The mock driver's fault knobs (`MockFaults`) and the knobs in action: `_Faults`, shared by
`drivers.mock_driver.MockDriver` (the in-memory robot, every knob) and `FaultyDriver` (any other
driver, e.g. the simulator in a drill, behind every knob but stuck joints).

Injected errors are the driver's `DriverError` (or `error_type`, as third-party drivers raise
anything), one line starting "injected fault:".
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from s2r.core.types import Command, DriverSpec, RobotState

from .base import Driver, DriverError

CALLS = ("read", "write", "hold", "reset_fault")      # the calls the knobs count



@dataclass(frozen=True)
class MockFaults:
    """Fault knobs. Calls are reads, writes, holds and fault resets, counted from when the knobs are set.

    disconnect_after   after this many calls the robot stops answering: every call raises until
                       `reset_fault()` (once per setting; a lost bus / dead physics server)
    recoverable        False: `reset_fault()` fails too (the robot stays gone)
    stuck_joints       joints (names or indices) that do not move, whatever is commanded (MockDriver only)
    latency            commands take effect this many control periods after they arrive
    noise              std (rad) of Gaussian noise on every reported position, seeded
    nan_after          after this many reads, the positions of `nan_joints` (default all) read NaN
    bus_error_every    every k-th call in `bus_error_on` raises (transient: the next may succeed)
    bus_error_rate     each call in `bus_error_on` raises with this probability, seeded
    bus_error_on       which calls bus errors hit (default: read, write, hold)
    fail_hold          every hold raises without holding (a servo that does not answer)
    connect_error      connect() raises DriverError with this message (an unplugged device)
    error              the message injected errors carry
    error_type         the exception injected errors raise (default DriverError)
    seed               seeds the noise and the bus-error draws
    """

    disconnect_after: int | None = None
    recoverable: bool = True
    stuck_joints: tuple = ()
    latency: int = 0
    noise: float = 0.0
    nan_after: int | None = None
    nan_joints: tuple = ()
    bus_error_every: int = 0
    bus_error_rate: float = 0.0
    bus_error_on: tuple[str, ...] = CALLS[:3]
    fail_hold: bool = False
    connect_error: str | None = None
    error: str = "no response from the robot"
    error_type: type = DriverError
    seed: int = 0

    def __post_init__(self):
        def bad(key, why, value):
            raise ValueError(f"MockFaults.{key}: {why}, got {value!r}")

        for key in ("disconnect_after", "nan_after"):
            v = getattr(self, key)
            if v is not None and (not _is_int(v) or v < 0):
                bad(key, "must be None or a non-negative integer", v)
        for key in ("latency", "bus_error_every", "seed"):
            v = getattr(self, key)
            if not _is_int(v) or v < 0:
                bad(key, "must be a non-negative integer", v)
        if not _is_real(self.noise) or not 0.0 <= self.noise < math.inf:
            bad("noise", "must be a finite std >= 0", self.noise)
        if not _is_real(self.bus_error_rate) or not 0.0 <= self.bus_error_rate <= 1.0:
            bad("bus_error_rate", "must be a probability in [0, 1]", self.bus_error_rate)
        for key in ("stuck_joints", "nan_joints", "bus_error_on"):
            v = getattr(self, key)
            if isinstance(v, (str, bytes)) or not isinstance(v, (tuple, list)):
                bad(key, "must be a tuple", v)
            object.__setattr__(self, key, tuple(v))
        wrong = [c for c in self.bus_error_on if c not in CALLS]
        if wrong:
            bad("bus_error_on", f"calls are {', '.join(CALLS)}", wrong[0])
        if not (isinstance(self.error_type, type) and issubclass(self.error_type, Exception)):
            bad("error_type", "must be an Exception class", self.error_type)
        for key in ("recoverable", "fail_hold"):
            if not isinstance(getattr(self, key), bool):
                bad(key, "must be True or False", getattr(self, key))


class _Faults:
    """The knobs in action, shared by MockDriver and FaultyDriver: counts calls, raises the
    injected errors, delays commands and corrupts states."""

    def __init__(self, knobs: MockFaults, spec: DriverSpec, stats: dict, mock: bool):
        self.knobs = knobs
        self.stats = stats
        self.calls = self.reads = 0
        self.gone: str | None = None        # why the robot stopped answering (until reset_fault)
        self.spent = False                  # disconnect_after fired already
        self.pending: deque = deque()       # delayed commands: (due time, command)
        bus_seq, noise_seq = np.random.SeedSequence(knobs.seed).spawn(2)
        self.bus_rng, self.noise_rng = np.random.default_rng(bus_seq), np.random.default_rng(noise_seq)
        self.stuck = _joint_index(spec, knobs.stuck_joints, "stuck_joints")
        if self.stuck.size and not mock:
            raise ValueError("MockFaults.stuck_joints: only the mock driver can hold a joint stuck")
        self.nan = _joint_index(spec, knobs.nan_joints, "nan_joints") if knobs.nan_joints \
            else np.arange(spec.n_joints)

    def fail(self, what: str):
        self.stats["injected_faults"] += 1
        return self.knobs.error_type(f"injected fault: {what}")

    def call(self, name: str) -> None:
        """Before a read, write or hold: raise what is due."""
        k = self.knobs
        if self.gone is not None:
            raise self.fail(self.gone)
        self.calls += 1
        if k.disconnect_after is not None and not self.spent and self.calls > k.disconnect_after:
            self.spent = True
            self.gone = f"{k.error} (disconnected after {k.disconnect_after} calls)"
            raise self.fail(self.gone)
        self._bus_error(name)
        if name == "hold" and k.fail_hold:
            raise self.fail(f"{k.error} (hold not acknowledged)")

    def _bus_error(self, name: str) -> None:
        k = self.knobs
        if name in k.bus_error_on and (
                (k.bus_error_every and self.calls % k.bus_error_every == 0)
                or (k.bus_error_rate and self.bus_rng.random() < k.bus_error_rate)):
            raise self.fail(f"{k.error} (bus error on {name}, call {self.calls})")

    def unplug(self, reason: str) -> None:
        """From any thread: the next call raises (nothing else is touched here)."""
        self.gone = reason

    def reset(self) -> bool:
        """reset_fault: raise what is due; else whether the robot was gone (it answers again)."""
        if self.gone is not None and not self.knobs.recoverable:
            raise self.fail(f"{self.gone}; reset found it still gone")
        self.calls += 1
        self._bus_error("reset_fault")
        if self.gone is None:
            return False
        self.gone = None
        self.pending.clear()                 # what was in flight when it went never arrives
        return True

    def delay(self, command: Command, now: float, period: float) -> bool:
        """Queue the command if latency applies (True); else it goes through now."""
        if not self.knobs.latency:
            return False
        self.pending.append((now + (self.knobs.latency - 0.5) * period, command))
        self.stats["delayed_commands"] += 1
        return True

    def due(self, now: float):
        """The delayed commands due by `now`, oldest first."""
        while self.pending and self.pending[0][0] <= now:
            yield self.pending.popleft()[1]

    def corrupt(self, st: RobotState) -> RobotState:
        k = self.knobs
        self.reads += 1
        if not k.noise and k.nan_after is None:
            return st
        q = st.q.copy()
        if k.noise:
            q += self.noise_rng.normal(0.0, k.noise, q.shape)
        if k.nan_after is not None and self.reads > k.nan_after:
            q[self.nan] = np.nan
        return RobotState(st.stamp, q, st.qd, st.effort, st.sensors)


class FaultyDriver(Driver):
    """Another driver (the simulator, a real one in a drill) behind the same fault knobs, all but
    stuck joints. `unplug()` makes it stop answering now, as `~/inject_fault` does."""

    def __init__(self, inner: Driver, faults: MockFaults | None = None):
        self.inner = inner
        self.name = inner.name
        self.stats = {**dict(inner.stats), "injected_faults": 0, "delayed_commands": 0}
        self._faults = _Faults(faults or MockFaults(), inner.spec, self.stats, mock=False)

    @property
    def faults(self) -> MockFaults:
        return self._faults.knobs

    @property
    def spec(self) -> DriverSpec:
        return self.inner.spec

    @property
    def connected(self) -> bool:
        return self.inner.connected

    @property
    def realtime(self) -> bool:
        return getattr(self.inner, "realtime", True)

    def unplug(self, reason: str = "no response from the robot (unplugged)") -> None:
        self._faults.unplug(reason)

    def connect(self) -> None:
        self.inner.connect()

    def disconnect(self) -> None:
        self.inner.disconnect()

    def clock(self) -> float:
        return self.inner.clock()

    def reset_fault(self) -> None:
        self._faults.reset()
        self.inner.reset_fault()

    def read(self) -> RobotState:
        self._faults.call("read")
        if self.realtime:
            self._forward(self._faults.due(self.inner.clock()))
        self.stats.update(self.inner.stats)
        return self._faults.corrupt(self.inner.read())

    def write(self, command: Command) -> None:
        self._faults.call("write")
        now = self.inner.clock()
        if not self._faults.delay(command, now, self.inner.spec.period):
            self._forward(self._faults.due(now))
            self.inner.write(command)
            return
        # in lockstep the robot advances on every write: the due command takes this write's
        # place, or the robot advances without one
        if not self._forward(self._faults.due(now)) and not self.realtime and hasattr(self.inner, "step"):
            self.inner.step(1)

    def hold(self) -> None:
        self._faults.call("hold")
        self._faults.pending.clear()
        self.inner.hold()

    def __getattr__(self, item):           # randomize, true_state, sim, ... of the wrapped driver
        if item == "inner":
            raise AttributeError(item)
        return getattr(self.inner, item)

    def _forward(self, commands) -> bool:
        sent = False
        for cmd in commands:
            self.inner.write(cmd)
            sent = True
        return sent


def _joint_index(spec: DriverSpec, joints, key: str) -> np.ndarray:
    names = list(spec.joint_names)
    out = []
    for j in joints:
        if _is_int(j) and 0 <= j < len(names):
            out.append(int(j))
        elif isinstance(j, str) and j in names:
            out.append(names.index(j))
        else:
            raise ValueError(f"MockFaults.{key}: {j!r} is not one of the robot's joints {names}")
    return np.array(sorted(set(out)), int)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
