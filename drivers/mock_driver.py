"""The mock driver: an in-memory robot with fault knobs, for tests and drills (ros2_control's
mock_components).

`MockDriver` implements `Driver` exactly, with no physics engine: the state follows the commands
deterministically, once per control period T:
- position: q moves to the set-point (with `position_lag` a in [0, 1): q += (1 - a) (set-point - q),
  a first-order lag; a = 0 reaches it every period), qd = the period's displacement / T;
- velocity: qd = the command, q += qd T;
- effort: a unit-inertia joint with viscous `damping` d (semi-implicit Euler):
  qd += T (tau - d qd) / `inertia`, q += qd T; the reported effort is tau (zero in the other modes);
- hold: the joints stop where they are (qd = 0) and stay.
Nothing limits the joints: keeping them inside their limits is the safety layer's job, and a test
sees exactly what it let through. Lockstep (default): every `write` or `hold` advances one
period, `step(n)` advances n, and the clock is the mock's time. Real time (`realtime=True`, for
the ROS graph): the state advances by the whole periods of `time.monotonic()` since connect.

Every command that reached the robot is recorded in `sent` as (mode, values, q at arrival).

`MockFaults` are the knobs; `FaultyDriver` applies the same knobs (all but stuck joints) to any
other driver, e.g. the simulator in a drill. Both are in drivers/mock_faults.py (imported from
here too). Injected errors are the driver's `DriverError` (or `error_type`, as third-party
drivers raise anything), one line starting "injected fault:".
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from s2r.core.types import Command, CommandMode, DriverSpec, RobotState

from .base import Driver, DriverError, register_driver
from .mock_faults import CALLS, FaultyDriver, MockFaults, _Faults, _is_int   # noqa: F401 (re-exported)

class Sent(NamedTuple):
    """A command that reached the robot: its mode, values and the true position when it arrived."""
    mode: CommandMode
    values: np.ndarray
    q: np.ndarray


class MockDriver(Driver):
    """An in-memory robot with the joint spec of a hardware config (or a DriverSpec), exact and
    deterministic, with fault knobs (`faults`, settable at any time; setting restarts their counts).

    q0: the start posture (default: the middle of each joint's range). inertia, damping: the
    effort model's. record: how many commands `sent` keeps (the oldest are dropped; 0: none)."""

    name = "mock"

    def __init__(self, spec_or_config, *, faults: MockFaults | None = None, realtime: bool = False,
                 q0=None, position_lag: float = 0.0, inertia: float = 1.0, damping: float = 1.0,
                 record: int = 10_000):
        spec = spec_or_config if isinstance(spec_or_config, DriverSpec) else spec_or_config.spec()
        self._spec = spec
        n = spec.n_joints
        if q0 is None:
            q0 = 0.5 * (spec.lower + spec.upper)
        self._q0 = np.array(q0, float)
        if self._q0.shape != (n,) or not np.isfinite(self._q0).all():
            raise ValueError(f"MockDriver q0: expected {n} finite positions, got {q0!r}")
        for key, v, ok in (("position_lag", position_lag, 0.0 <= position_lag < 1.0),
                           ("inertia", inertia, 0.0 < inertia < math.inf),
                           ("damping", damping, 0.0 <= damping < math.inf)):
            if not ok:
                raise ValueError(f"MockDriver {key}: out of range, got {v!r}")
        if not _is_int(record) or record < 0:
            raise ValueError(f"MockDriver record: must be a non-negative integer, got {record!r}")
        self.realtime = bool(realtime)
        self.position_lag, self.inertia, self.damping, self.record = position_lag, inertia, damping, record
        self.stats = dict(commands=0, holds=0, injected_faults=0, delayed_commands=0)
        self.sent: list[Sent] = []
        self._lock = threading.RLock()
        self._connected = self._started = False
        self._faults = _Faults(faults or MockFaults(), spec, self.stats, mock=True)
        self._reset_state()

    # ------------------------------------------------------------------ knobs
    @property
    def faults(self) -> MockFaults:
        return self._faults.knobs

    @faults.setter
    def faults(self, knobs: MockFaults) -> None:
        if not isinstance(knobs, MockFaults):
            raise ValueError(f"MockDriver faults: expected MockFaults, got {type(knobs).__name__}")
        with self._lock:
            f = _Faults(knobs, self._spec, self.stats, mock=True)
            f.gone = self._faults.gone             # a robot that is gone stays gone until reset_fault
            self._faults = f

    def inject(self, **knobs) -> MockFaults:
        """Change some knobs (the others kept): `drv.inject(fail_hold=True)`. Returns the new knobs."""
        self.faults = replace(self.faults, **knobs)
        return self.faults

    def unplug(self, reason: str = "no response from the robot (unplugged)") -> None:
        """The robot stops answering now: reads, writes and holds raise until reset_fault()."""
        with self._lock:
            self._faults.unplug(reason)

    # ------------------------------------------------------------------ Driver
    @property
    def spec(self) -> DriverSpec:
        return self._spec

    def clock(self) -> float:
        return time.monotonic() if self.realtime else self._t

    def connect(self) -> None:
        with self._lock:
            if self._connected:
                return
            if self.faults.connect_error:
                raise DriverError(self.faults.connect_error)
            if not self._started:                 # a reconnect finds the robot where it was
                self._reset_state()
                self._started = True
            self._faults.pending.clear()
            self._connected = True

    def disconnect(self) -> None:
        """The robot stops where it is (as a driver that holds on disconnect)."""
        with self._lock:
            if self._connected:
                self._sync()
                self._mode, self._qd[:] = None, 0.0
            self._connected = False

    def reset_fault(self) -> None:
        """A robot that was gone answers again (unless the knobs say it stays gone), where it was,
        at rest: like a robot whose controller restarted."""
        with self._lock:
            self._sync()
            if self._faults.reset():
                self._mode, self._qd[:] = None, 0.0

    def read(self) -> RobotState:
        with self._lock:
            self._require("read")
            self._sync()
            return self._faults.corrupt(self._state())

    def true_state(self) -> RobotState:
        """The state as it is: no noise, no NaN, no fault."""
        with self._lock:
            self._sync()
            return self._state()

    def write(self, command: Command) -> None:
        with self._lock:
            self._require("write")
            self._sync()
            if self.record:
                if len(self.sent) >= self.record:
                    del self.sent[:max(1, self.record // 2)]
                self.sent.append(Sent(command.mode, np.array(command.values, float), self._q.copy()))
            self.stats["commands"] += 1
            if not self._faults.delay(command, self.clock(), self._spec.period):
                self._command(command)
            if not self.realtime:
                self._advance(1)

    def hold(self) -> None:
        with self._lock:
            self._require("hold")
            self._sync()
            self.stats["holds"] += 1
            self._faults.pending.clear()          # commands in flight never arrive after a stop
            self._mode, self._qd[:] = None, 0.0
            if not self.realtime:
                self._advance(1)

    def step(self, n_periods: int = 1) -> None:
        """Lockstep: advance n control periods without a new command."""
        with self._lock:
            if self.realtime:
                raise DriverError("mock driver: step() is for lockstep; in real time the clock advances it")
            self._advance(int(n_periods))

    # ------------------------------------------------------------------ the model
    def _reset_state(self) -> None:
        n = self._spec.n_joints
        self._q, self._qd, self._effort = self._q0.copy(), np.zeros(n), np.zeros(n)
        self._mode: CommandMode | None = None       # None: holding
        self._target = np.zeros(n)
        self._t = 0.0                               # lockstep time
        self._t0, self._periods = time.monotonic(), 0
        self._faults.pending.clear()

    def _require(self, call: str) -> None:
        if not self._connected:
            raise DriverError("mock driver is not connected (call connect() first)")
        self._faults.call(call)

    def _state(self) -> RobotState:
        stamp = time.monotonic() if self.realtime else self._t
        return RobotState(stamp, self._q.copy(), self._qd.copy(), self._effort.copy(), {"mock_time": self._t})

    def _command(self, command: Command) -> None:
        self._mode = CommandMode(command.mode)
        self._target = np.array(command.values, float)
        if self._mode is not CommandMode.EFFORT:
            self._effort[:] = 0.0

    def _sync(self) -> None:
        """Real time: advance by the whole periods elapsed since the last call."""
        if not self.realtime:
            return
        n = int((time.monotonic() - self._t0) / self._spec.period) - self._periods
        if n <= 0:
            return
        if self._at_rest():                      # nothing would change: skip ahead
            self._periods += n
            self._t += n * self._spec.period
            return
        self._advance(n)

    def _at_rest(self) -> bool:
        if self._faults.pending or not (self._qd == 0.0).all():
            return False
        return self._mode is None or (self._mode is CommandMode.POSITION and np.array_equal(self._q, self._target))

    def _advance(self, n: int) -> None:
        T = self._spec.period
        stuck = self._faults.stuck
        for _ in range(n):
            for cmd in self._faults.due(self._t0 + self._periods * T if self.realtime else self._t):
                self._command(cmd)                  # delayed commands due by this period's start
            q_before = self._q[stuck].copy()
            mode, u = self._mode, self._target
            if mode is None:
                self._qd[:] = 0.0
            elif mode is CommandMode.POSITION:
                q_new = self._q + (1.0 - self.position_lag) * (u - self._q)
                self._qd, self._q = (q_new - self._q) / T, q_new
            elif mode is CommandMode.VELOCITY:
                self._qd = u.copy()
                self._q = self._q + u * T
            else:
                self._qd = self._qd + T * (u - self.damping * self._qd) / self.inertia
                self._q = self._q + self._qd * T
                self._effort = u.copy()
            if stuck.size:
                self._q[stuck], self._qd[stuck] = q_before, 0.0
            self._t += T
            self._periods += 1


@register_driver("mock")
def make_mock_driver(config, **kw) -> MockDriver:
    return MockDriver(config, **kw)
