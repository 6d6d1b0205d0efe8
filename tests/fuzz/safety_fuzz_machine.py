"""Hypothesis state machines over `SafetyLayer`, wrapping a real driver (the lockstep PyBullet
simulator, or the Dynamixel driver talking to its byte-level bus emulator over a pty).

Between the safety layer and the real driver sits `FuzzDriver`: it checks every command that
reaches the real driver (type, shape, finiteness, limits per mode, the per-period position step)
and injects failures into read/write/hold/reset_fault on request (a `DriverError`, or another
exception as a serial port or a buggy third-party driver raises). The machine sends commands in
every mode -- in, at and beyond the limits, non-finite, wrongly shaped or named, stale, mutated
after construction -- switches modes, e-stops, enables, resets and lets time pass, and after every
step checks that nothing raised out of the layer, that the fault and e-stop latches hold, and that
the robot's true position never left its limits by more than `OVERSHOOT_TOL`.

Injected failures keep the robot safe the way a real driver does: a failed read, write or
reset_fault does not reach the robot (the previous command stays in force until the layer holds),
a failed hold does hold and then reports the failure (a lost acknowledgement). The position
checks therefore measure the safety layer, not the injection.
"""
from __future__ import annotations

import dataclasses
import math
import re
import termios
import time

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from s2r.drivers import Command, CommandMode, Driver, DriverError, DriverFault, RobotState, SafetyLayer
from s2r.drivers.safety import DISABLED, ENABLED, ESTOP, FAULT, HOLDING

OVERSHOOT_TOL = 0.005          # rad a measured joint may lie outside its configured limits
LIMIT_EPS = 1e-9               # rounding allowance on forwarded set-points

POSITION, VELOCITY, EFFORT = CommandMode.POSITION, CommandMode.VELOCITY, CommandMode.EFFORT
MODES = (POSITION, VELOCITY, EFFORT)

# figures per backend, printed by tests/fuzz/conftest.py at the end of the session
FIGURES: dict[str, dict] = {}


def figures(backend: str) -> dict:
    return FIGURES.setdefault(backend, dict(
        cases=0, steps=0, writes=0, forwarded=0, failures_injected=0, faults=0,
        max_overshoot=0.0, max_overshoot_mode="-", max_step=0.0, max_step_excess=0.0,
        max_speed_ratio_effort=0.0, violations=0, seconds=0.0, first_failure=""))


# ------------------------------------------------------------------------------ backends
class SimBackend:
    """The PyBullet driver in lockstep: every write or hold advances one control period."""

    lockstep = True

    def __init__(self, config_name: str):
        from s2r.drivers.sim_driver import SimDriver
        from s2r.core.config import load_config
        self.cfg = load_config(config_name)
        self.name = config_name
        self.driver = SimDriver(self.cfg, realtime=False)
        self.driver.connect()
        self.spec = self.driver.spec
        # The floor is taken out of collisions: an arm driven into it is pushed outside its joint
        # limits by the contact, whatever the safety layer commands (joint limits are the promise
        # checked here, not a workspace).
        import pybullet as p
        sim, robot = self.driver.simulation, self.driver.sim
        for link in range(-1, p.getNumJoints(robot.body, physicsClientId=sim.client)):
            p.setCollisionFilterPair(sim.plane, robot.body, -1, link, 0, physicsClientId=sim.client)

    def place(self, q: np.ndarray) -> None:
        """Put the robot at q, at rest, holding (between cases)."""
        self.driver.sim.reset(q)

    def truth(self) -> tuple[np.ndarray, np.ndarray]:
        q, qd, _ = self.driver.sim.state()
        return np.array(q, float), np.array(qd, float)

    def wait(self, layer: SafetyLayer, periods: int, sample) -> None:
        """Let time pass without commands, checking the watchdog each period as its thread would."""
        for _ in range(periods):
            self.driver.step(1)
            with layer._lock:
                layer._check_watchdog()     # what SafetyLayer._watchdog_loop runs
            sample()

    def step_tolerance(self, elapsed: float) -> float:
        return 1e-9          # lockstep: the robot does not move while the layer decides

    def close(self) -> None:
        self.driver.disconnect()


class DynamixelBackend:
    """The unmodified Dynamixel driver on a pty, the byte-level bus emulator on the other end.
    Runs on the wall clock, with the safety layer's watchdog thread, as on hardware."""

    lockstep = False

    def __init__(self, config_name: str):
        from s2r.drivers import dynamixel_protocol as P
        from s2r.drivers.dynamixel_driver import DynamixelDriver
        from s2r.drivers.emulators import bus_spec_from_config
        from s2r.drivers.emulators.dynamixel_bus import PtyBusEmulator
        from s2r.core.config import load_config
        self.P = P
        cfg = load_config(config_name)
        self.name = config_name
        self.emu = PtyBusEmulator(bus_spec_from_config(cfg), realtime=False).start()
        self.cfg = dataclasses.replace(cfg, driver_params={**cfg.driver_params, "port": self.emu.port})
        self.driver = DynamixelDriver(self.cfg)
        self.driver.connect()
        self.spec = self.driver.spec
        self.joints = self.cfg.joints
        model = P.MODELS[self.driver.params.model]
        self.servo_vmax = model.velocity_limit * P.RAD_S_PER_VELOCITY_UNIT    # rad/s, the servo's own

    def _servos(self):
        return [self.emu.bus.servos[j.id] for j in self.joints]

    def place(self, q: np.ndarray) -> None:
        """Put the robot at q, at rest, holding (between cases): the emulated motors are moved
        there, the driver then holds the measured position."""
        d = self.driver
        for attempt in range(3):
            # the emulator answers on the wall clock: on a loaded host it can miss the reset's
            # deadline, which is the harness's setup failing, not the safety layer under test
            try:
                if d.fault is not None:
                    d.reset_fault()
                break
            except DriverFault:
                if attempt == 2:
                    raise
                time.sleep(0.05)
        d.hold()
        with self.emu.lock:
            now = time.monotonic()
            for s, j, qj in zip(self._servos(), self.joints, q):
                s.step(now)
                s.pos = float(self.P.joint_to_ticks(qj, j.offset, j.sign))
                s.vel = 0.0
                s.set("goal_position", int(round(s.pos)))
                s._publish(now)
        d.guard.reset()        # the jump above is the test's, not an implausible reading
        d.hold()

    def truth(self) -> tuple[np.ndarray, np.ndarray]:
        """The emulated motors' true (continuous) positions and velocities, in joint units."""
        P = self.P
        with self.emu.lock:
            now = time.monotonic()
            q, qd = [], []
            for s, j in zip(self._servos(), self.joints):
                s.step(now)
                q.append(P.ticks_to_joint(s.pos, j.offset, j.sign))
                qd.append(j.sign * s.vel * P.RAD_PER_TICK)
        return np.array(q), np.array(qd)

    def wait(self, layer: SafetyLayer, periods: int, sample) -> None:
        end = time.monotonic() + periods * self.spec.period
        while time.monotonic() < end:
            time.sleep(0.002)
            sample()

    def step_tolerance(self, elapsed: float) -> float:
        # tick quantization of the layer's reading, plus how far the servo can move while the
        # layer's call runs
        return 1.5 * self.P.RAD_PER_TICK + self.servo_vmax * elapsed

    def close(self) -> None:
        try:
            self.driver.disconnect()
        finally:
            self.emu.stop()


# ------------------------------------------------------------------------------ the wrapper
def _make_failure(kind: str, method: str) -> BaseException:
    return {
        "DriverError": lambda: DriverError(f"injected {method} failure"),
        "DriverFault": lambda: DriverFault(f"injected {method} fault"),
        "termios.error": lambda: termios.error(5, "Input/output error"),
        "OSError": lambda: OSError(5, f"injected {method} I/O error"),
        "ValueError": lambda: ValueError(f"injected {method} bug"),
    }[kind]()


FAILURE_KINDS = ("DriverError", "DriverFault", "termios.error", "OSError", "ValueError", "bad_state")


@dataclasses.dataclass
class _Plan:
    countdown: int
    kind: str
    persistent: bool


class FuzzDriver(Driver):
    """Sits between the safety layer and the real driver: checks what reaches the robot, injects
    failures. Violations are recorded (raising here would be caught by the layer)."""

    name = "fuzz"
    ignore: tuple[str, ...] = ()       # regular expressions of violations to leave out

    def __init__(self, backend, fig: dict):
        self.b = backend
        self.inner = backend.driver
        self.fig = fig
        self.spec_ = backend.spec
        sp = self.spec_
        safety = backend.cfg.safety
        self.lo, self.hi, self.n = sp.lower, sp.upper, sp.n_joints
        self.vmax = sp.max_velocity * safety.velocity_scale
        self.emax = sp.max_effort * safety.effort_scale
        self.max_step = np.minimum(safety.max_position_step, self.vmax * sp.period)
        self.plan: dict[str, _Plan] = {}
        self.fired = 0
        self.forwarded = 0
        self.violations: list[str] = []
        self.last_position: np.ndarray | None = None    # set-point in force, if the last motion was one
        self.last_position_time = -math.inf              # driver clock when it was forwarded
        self.call_t0 = time.monotonic()                  # when the current layer call started

    # plumbing
    @property
    def spec(self):
        return self.spec_

    @property
    def stats(self):
        return self.inner.stats

    @property
    def connected(self) -> bool:
        return self.inner.connected

    def clock(self) -> float:
        return self.inner.clock()

    def connect(self) -> None:
        self.inner.connect()

    def disconnect(self) -> None:
        pass                    # the real driver is shared by every case of a test

    def _maybe_fail(self, method: str) -> str | None:
        p = self.plan.get(method)
        if p is None:
            return None
        if p.countdown > 0:
            p.countdown -= 1
            return None
        if not p.persistent:
            del self.plan[method]
        self.fired += 1
        self.fig["failures_injected"] += 1
        if p.kind == "bad_state":
            if method == "read":
                return "bad_state"
            raise _make_failure("DriverError", method)
        raise _make_failure(p.kind, method)

    # the driver interface
    def read(self) -> RobotState:
        bad = self._maybe_fail("read")
        st = self.inner.read()
        if bad:
            q = st.q.copy()
            q[0] = np.nan
            return RobotState(st.stamp, q, st.qd, st.effort, st.sensors)
        return st

    def hold(self) -> None:
        self.inner.hold()
        self.last_position = None
        self._maybe_fail("hold")            # a lost acknowledgement: the robot does hold

    def reset_fault(self) -> None:
        self._maybe_fail("reset_fault")
        self.inner.reset_fault()
        self.last_position = None

    def write(self, command) -> None:
        self._maybe_fail("write")
        self._check(command)
        t = self.inner.clock()
        self.inner.write(command)
        self.forwarded += 1
        self.fig["forwarded"] += 1
        self.last_position_time = t
        self.last_position = (np.array(command.values, float) if command.mode == POSITION
                              and isinstance(command.values, np.ndarray) else None)

    # what may reach the robot
    def flag(self, category: str, msg: str) -> None:
        """Record a violation (the machine fails the step); `ignore` lists categories left out
        (for surveys that look past a known failure)."""
        text = f"[{category}] {msg}"
        if not any(re.search(sig, text) for sig in self.ignore):
            self.violations.append(text)

    def _bad(self, why: str) -> None:
        self.flag("forward" if "step" not in why else "step", f"forwarded to the driver: {why}")

    def _check(self, c) -> None:
        if not isinstance(c, Command):
            return self._bad(f"not a Command: {type(c).__name__}")
        if not isinstance(c.mode, CommandMode) or c.mode not in self.spec_.modes:
            return self._bad(f"mode {c.mode!r} ({type(c.mode).__name__})")
        v = c.values
        if not isinstance(v, np.ndarray) or v.dtype != np.float64 or v.shape != (self.n,):
            return self._bad(f"values {type(v).__name__} {getattr(v, 'dtype', '')} {getattr(v, 'shape', '')}")
        if not np.isfinite(v).all():
            return self._bad(f"non-finite values {v}")
        if c.names is not None and tuple(c.names) != self.spec_.joint_names:
            return self._bad(f"names {c.names!r}")
        if c.mode == POSITION:
            if (v < self.lo - LIMIT_EPS).any() or (v > self.hi + LIMIT_EPS).any():
                k = int(np.argmax(np.maximum(self.lo - v, v - self.hi)))
                self._bad(f"position set-point {v[k]:+.6f} outside [{self.lo[k]:+.4f}, {self.hi[k]:+.4f}] "
                          f"for {self.spec_.joint_names[k]}")
            # from the previous set-point while the stream runs; after a hold, another mode or a
            # gap in the stream (over 1.5 periods, when the robot has held or stopped meanwhile)
            # from where the robot is, as the layer plans it (either near the gap's threshold:
            # the layer and this check read the clock at different instants)
            measured = self.b.truth()[0]
            tol_measured = self.b.step_tolerance(time.monotonic() - self.call_t0)
            gap = self.inner.clock() - self.last_position_time
            period = self.spec_.period
            candidates = []
            if self.last_position is not None and gap <= 1.6 * period:
                candidates.append((self.last_position, 1e-9, "the previous set-point"))
            if self.last_position is None or gap >= 1.4 * period:
                candidates.append((measured, tol_measured, "the measured position"))
            best = None
            for ref, tol, what in candidates:
                step = np.abs(v - ref)
                excess = step - self.max_step
                if best is None or (excess - tol).max() < (best[1] - best[2]).max():
                    best = (step, excess, tol, what)
            step, excess, tol, what = best
            self.fig["max_step"] = max(self.fig["max_step"], float(step.max()))
            self.fig["max_step_excess"] = max(self.fig["max_step_excess"], float(excess.max()))
            if (excess > tol).any():
                k = int(np.argmax(excess))
                self._bad(f"position step {step[k]:.4f} rad from {what} for {self.spec_.joint_names[k]} "
                          f"(limit {self.max_step[k]:.4f} + tolerance {tol:.1e})")
        elif c.mode == VELOCITY:
            if (np.abs(v) > self.vmax + LIMIT_EPS).any():
                self._bad(f"velocity {v} beyond {self.vmax}")
        else:
            if (np.abs(v) > self.emax + LIMIT_EPS).any():
                self._bad(f"effort {v} beyond {self.emax}")


# ------------------------------------------------------------------------------ commands
def _unit(n):
    return st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).map(np.array)


VALUE_KINDS = ("within", "near", "at_limit", "beyond", "far", "zero")
STREAM_KINDS = ("beyond_upper", "beyond_lower", "at_limit", "within", "near", "alternate")
STAMP_KINDS = ("none", "none", "fresh", "stale", "future", "nan", "inf", "-inf")
NAME_KINDS = ("none", "none", "ordered", "permuted", "unknown", "duplicate", "short", "long")
WRONG_SHAPES = ("short", "long", "empty", "column", "scalar")

# (label, expectation) of commands that are broken or built oddly; expectation "reject": the layer
# must refuse it and send nothing; "any": refusing or sending it are both fine.
HOSTILE = (
    ("Command.position(complex values)", "reject"),
    ("Command.position(complex, zero imaginary part)", "any"),
    ("Command.position([10**400, ...])", "reject"),
    ("Command.velocity([-10**400, ...])", "reject"),
    ("Command.position('abc')", "reject"),
    ("Command.position(None)", "reject"),
    ("Command.position(ragged nested list)", "reject"),
    ("Command.position(generator)", "any"),
    ("mode mutated to the str 'position'", "any"),
    ("mode mutated to 'teleport'", "reject"),
    ("mode mutated to None", "reject"),
    ("mode mutated to 3", "reject"),
    ("values mutated to a list", "any"),
    ("values mutated to 'abc'", "reject"),
    ("values mutated to None", "reject"),
    ("values mutated to a complex array", "reject"),
    ("values mutated to an object array", "reject"),
    ("values mutated to a (1, n) array", "any"),
    ("values mutated to an int array", "any"),
    ("values mutated to float32", "any"),
    ("values mutated to a NaN float32 array", "reject"),
    ("names mutated to a str", "reject"),
    ("names mutated to 5", "reject"),
    ("names mutated to a list of the right names", "any"),
    ("names mutated to contain None", "reject"),
    ("stamp mutated to 'now'", "reject"),
    ("stamp mutated to a complex", "reject"),
    ("stamp NaN", "reject"),
    ("write(None)", "reject"),
    ("write({'mode': 'position'})", "reject"),
)


# ------------------------------------------------------------------------------ the machine
class SafetyMachine(RuleBasedStateMachine):
    """Subclassed per backend by `machine_for` (the backend is a class attribute)."""

    backend = None
    ignore: tuple[str, ...] = ()

    def __init__(self):
        super().__init__()
        self.fig = figures(self.backend.name)
        self.fig["cases"] += 1
        self.layer = None

    # -------------------------------------------------------------- set-up
    @initialize(start=st.data())
    def start(self, start):
        b = self.backend
        sp = b.spec
        n = sp.n_joints
        # anywhere within the soft limits (the configured ones less `limit_margin`), often exactly
        # at or near one: the layer never commands a joint into the margin, which is there to
        # absorb tracking error. A robot pushed into the margin or beyond the limits is moved only
        # inward (tests/unit/test_safety.py).
        m = np.minimum(b.cfg.safety.limit_margin, 0.25 * (sp.upper - sp.lower))   # as SafetyLayer.soft_limits
        f = start.draw(st.lists(st.sampled_from((0.0, 0.002, 0.03, 0.5, 0.97, 0.998, 1.0)) | st.floats(0, 1),
                                min_size=n, max_size=n), label="start")
        b.place(sp.lower + m + np.array(f) * (sp.upper - sp.lower - 2 * m))
        self.drv = FuzzDriver(b, self.fig)
        self.drv.ignore = self.ignore
        self.layer = SafetyLayer(self.drv, b.cfg.safety, backend=b.name)
        self.layer.connect()
        if not b.lockstep:
            self.layer.start_watchdog()
        self.fault = False           # the model: a fault entered and not yet reset
        self.stopped = False         # e-stop or disable latched
        self.fired_seen = 0
        self._sample()

    def teardown(self):
        if self.layer is not None:
            self.layer.stop_watchdog()
            self.drv.plan.clear()

    # -------------------------------------------------------------- helpers
    @property
    def n(self):
        return self.backend.spec.n_joints

    def _bounds(self, mode):
        d = self.drv
        if mode == POSITION:
            return d.lo, d.hi
        if mode == VELOCITY:
            return -d.vmax, d.vmax
        return -d.emax, d.emax

    def _values(self, mode, kind, f, mask) -> np.ndarray:
        lo, hi = self._bounds(mode)
        span = hi - lo
        within = lo + f * span
        if kind == "within":
            return within
        if kind == "zero":
            return np.zeros(self.n) if mode != POSITION else np.clip(0.0, lo, hi)
        if kind == "near":
            if mode == POSITION:
                base = self.backend.truth()[0]
                return base + (f - 0.5) * 3 * self.drv.max_step
            return (f - 0.5) * 0.2 * span
        if kind == "at_limit":
            edge = np.where(f < 0.5, lo, hi)
        elif kind == "beyond":
            edge = np.where(f < 0.5, lo - (0.5 - f) * 2 * span, hi + (f - 0.5) * 2 * span)
        elif kind == "beyond_upper":
            edge = hi + f * span
        elif kind == "beyond_lower":
            edge = lo - f * span
        elif kind == "far":
            edge = np.where(f < 0.5, -1.0, 1.0) * np.where(f < 0.1, 1.7e308, 1e6)
        else:
            raise ValueError(kind)
        return np.where(mask, edge, within)

    def _stamp(self, kind):
        now = self.layer.clock()
        wd = self.layer.cfg.watchdog_periods * self.backend.spec.period
        return {"none": None, "fresh": now, "stale": now - 3 * wd - 0.05, "future": now + 5.0,
                "nan": math.nan, "inf": math.inf, "-inf": -math.inf}[kind]

    def _named(self, values, kind, order):
        """(values, names) with names of the given kind; values in the names' order."""
        names = list(self.backend.spec.joint_names)
        if kind == "none":
            return values, None
        if kind == "ordered":
            return values, tuple(names)
        if kind == "permuted":
            perm = list(order)
            return values[perm], tuple(names[i] for i in perm)
        if kind == "unknown":
            return values, tuple(names[:-1] + ["no_such_joint"])
        if kind == "duplicate":
            return values, tuple(names[:-1] + [names[0]])
        if kind == "short":
            return values[:-1], tuple(names[:-1])
        return np.append(values, 0.0), tuple(names + ["extra_joint"])

    def _sample(self) -> None:
        """Where the robot truly is: never outside its limits by more than OVERSHOOT_TOL."""
        q, qd = self.backend.truth()
        d = self.drv
        over = float(np.max(np.maximum(d.lo - q, q - d.hi)))
        mode = self._last_mode
        if over > self.fig["max_overshoot"]:
            self.fig["max_overshoot"] = over
            self.fig["max_overshoot_mode"] = mode
        if self._last_mode == "effort":
            ratio = float(np.max(np.abs(qd) / d.vmax))
            self.fig["max_speed_ratio_effort"] = max(self.fig["max_speed_ratio_effort"], ratio)
        if over > OVERSHOOT_TOL:
            k = int(np.argmax(np.maximum(d.lo - q, q - d.hi)))
            age = getattr(self.layer, "last_watchdog_age", None)
            d.flag("overshoot", f"{self.backend.spec.joint_names[k]} measured at {q[k]:+.4f} rad "
                                f"({qd[k]:+.3f} rad/s), {over:.4f} rad outside [{d.lo[k]:+.4f}, {d.hi[k]:+.4f}] "
                                f"(last command mode: {mode}; last watchdog hold after "
                                f"{'-' if age is None else f'{age * 1e3:.0f} ms'})")

    _last_mode = "hold"

    def _call(self, what: str, fn, *, may_raise=()):
        """Run one layer call, then update the model and check the latches."""
        d, layer = self.drv, self.layer
        fired_before, fwd_before = d.fired, d.forwarded
        was_fault, was_stopped = self.fault, self.stopped
        d.call_t0 = time.monotonic()
        result, exc = None, None
        try:
            result = fn()
        except may_raise as e:
            exc = e
        except Exception as e:      # noqa: BLE001 -- the point: nothing may escape
            exc = e
            d.flag("raise", f"{what} raised {type(e).__name__}: {e}")
        fired_during = d.fired - fired_before
        forwarded = d.forwarded - fwd_before
        if what in ("estop", "reset", "hold") or what.startswith("enable"):
            self._last_mode = "hold"
        if what.startswith("write"):
            self.fig["writes"] += 1
            if (was_fault or was_stopped) and forwarded:
                d.flag("latch", f"{what} reached the driver while the layer was "
                                    f"{'in FAULT' if was_fault else 'stopped'}")
            if exc is None and not isinstance(result, str):
                d.flag("raise", f"{what} returned {result!r}, not a str")
            elif isinstance(result, str):
                if (was_fault or was_stopped) and not result.startswith("rejected"):
                    d.flag("latch", f"{what} returned {result!r} while the layer was "
                                        f"{'in FAULT' if was_fault else 'stopped'}")
                if result.startswith("rejected") and forwarded:
                    d.flag("result", f"{what} returned {result!r} but a command reached the driver")
                if result in ("ok", "clamped") and forwarded != 1:
                    d.flag("result", f"{what} returned {result!r} but {forwarded} commands reached the driver")
        # the latches
        state = layer.state
        if what == "reset" and exc is None:
            ok = bool(result and result[0])
            if ok:
                if fired_during:
                    d.flag("latch", "reset() returned True although the driver failed during it")
                self.fault = self.stopped = False
                self.fired_seen = d.fired
            elif state != FAULT:
                d.flag("latch", f"reset() returned {result!r} but the state is {state!r}, not fault")
        if what.startswith("enable") and exc is None and result and result[0]:
            if was_fault:
                d.flag("latch", f"{what} returned True while in FAULT ({layer.fault_reason!r})")
            if fired_during:
                d.flag("latch", f"{what} returned True although the driver failed during it")
            if layer.fault_reason:
                d.flag("latch", f"{what} returned True with fault_reason {layer.fault_reason!r} set")
            if not self.fault:
                self.stopped = what == "enable(False)"
        if what == "estop" and not self.fault:
            self.stopped = True
        if d.fired > self.fired_seen:
            self.fault = True
            self.fired_seen = d.fired
        if state == FAULT and not self.fault:
            self.fault = True
            self.fig["faults"] += 1
        state = layer.state
        if self.fault:
            if state != FAULT:
                d.flag("latch", f"after {what}: a driver failure was reported but the state is "
                                    f"{state!r}, not fault (the latch left without reset())")
        elif self.stopped and state not in (ESTOP, DISABLED):
            d.flag("latch", f"after {what}: e-stop/disable latched but the state is {state!r}")
        elif not self.stopped and state not in (ENABLED, HOLDING, FAULT):
            d.flag("latch", f"after {what}: state {state!r}")
        try:
            layer.status
        except Exception as e:      # noqa: BLE001
            d.flag("raise", f"status raised {type(e).__name__}: {e}")
        self._sample()
        return result, exc, forwarded

    def _write(self, label, cmd, expect="any", expected_values=None):
        """expect: 'reject', 'accept' (must be taken when the layer is enabled and healthy), 'any'."""
        healthy = not (self.fault or self.stopped) and not self.drv.plan
        result, exc, forwarded = self._call(f"write({label})", lambda: self.layer.write(cmd))
        if not isinstance(result, str):
            return
        if expect == "reject" and not result.startswith("rejected"):
            self.drv.flag("reject", f"write({label}) returned {result!r}: it must be refused")
        # a command while a joint is outside its speed envelope (or would leave it, in effort
        # mode) is refused with a hold (the layer's speed-monitoring stop): a legitimate answer
        # to a well-formed command
        speed_stop = "faster than it can stop" in result
        if expect == "accept" and healthy and self.layer.state != FAULT and result not in ("ok", "clamped") \
                and not speed_stop:
            self.drv.flag("accept", f"write({label}) of a well-formed command returned {result!r}")
        if result == "ok" and expected_values is not None and self.drv.last_position is not None \
                and not np.array_equal(self.drv.last_position, expected_values):
            self.drv.flag("result", f"write({label}) returned 'ok' but the driver got "
                                       f"{self.drv.last_position}, not {expected_values}")
        if result in ("ok", "clamped"):
            mode = getattr(cmd, "mode", None)
            self._last_mode = getattr(mode, "value", str(mode))

    # -------------------------------------------------------------- rules
    @rule(mode=st.sampled_from(MODES), kind=st.sampled_from(VALUE_KINDS), data=st.data(),
          stamp=st.sampled_from(STAMP_KINDS), names=st.sampled_from(NAME_KINDS))
    def command(self, mode, kind, data, stamp, names):
        n = self.n
        f = data.draw(_unit(n), label="f")
        mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n), label="mask"))
        values = self._values(mode, kind, f, mask)
        order = data.draw(st.permutations(range(n)), label="order") if names == "permuted" else None
        sent, nm = self._named(values, names, order)
        cmd = Command(mode, sent, names=nm, stamp=self._stamp(stamp))
        supported = mode in self.backend.spec.modes
        if not supported or stamp in ("stale", "nan", "inf", "-inf") or names in ("unknown", "duplicate", "short", "long"):
            expect = "reject"
        elif stamp == "future" or (stamp == "fresh" and not self.backend.lockstep):
            expect = "any"      # a stamp ahead of the clock may be refused; the wall clock may
                                # make a fresh stamp stale on a loaded machine
        else:
            expect = "accept"
        self._write(f"{mode.value} {kind} stamp={stamp} names={names}", cmd, expect,
                    values if mode == POSITION else None)

    @rule(mode=st.sampled_from(MODES), kind=st.sampled_from(VALUE_KINDS), data=st.data(),
          shape=st.sampled_from(WRONG_SHAPES), bad=st.sampled_from((math.nan, math.inf, -math.inf, None)))
    def malformed(self, mode, kind, data, shape, bad):
        """Non-finite entries or a wrong shape: always refused."""
        n = self.n
        f = data.draw(_unit(n), label="f")
        values = self._values(mode, kind if kind != "far" else "within", f, np.ones(n, bool))
        if bad is None:
            values = {"short": values[:-1], "long": np.append(values, 0.0), "empty": np.zeros(0),
                      "column": values.reshape(n, 1), "scalar": np.array(values[0])}[shape]
            label = f"{mode.value} shape {shape}"
        else:
            values = values.copy()
            values[data.draw(st.integers(0, n - 1), label="joint")] = bad
            label = f"{mode.value} with {bad}"
        self._write(label, Command(mode, values), "reject")

    @rule(mode=st.sampled_from(MODES), kind=st.sampled_from(STREAM_KINDS), data=st.data(),
          count=st.integers(1, 60), read_each=st.booleans())
    def stream(self, mode, kind, data, count, read_each):
        """A client streaming the same intent for `count` periods (reaches the limits)."""
        n = self.n
        f = data.draw(_unit(n), label="f")
        mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n), label="mask"))
        expect = "accept" if mode in self.backend.spec.modes else "reject"
        for i in range(count):
            if read_each:
                self._call("read", self.layer.read, may_raise=(DriverFault,))
            k = kind
            if kind == "alternate":
                k = "beyond_upper" if i % 2 == 0 else "beyond_lower"
            values = self._values(mode, k, f, mask)
            self._write(f"stream {mode.value} {kind} #{i}", Command(mode, values), expect)
            if self.drv.violations:
                return

    @rule(index=st.integers(0, len(HOSTILE) - 1), data=st.data())
    def hostile(self, index, data):
        label, expect = HOSTILE[index]
        n = self.n
        f = data.draw(_unit(n), label="f")
        names = self.backend.spec.joint_names
        v = self._values(POSITION, "within", f, np.zeros(n, bool))
        try:
            cmd = self._hostile(label, v, names)
        except Exception as e:      # noqa: BLE001
            self.drv.flag("construct", f"building {label} raised {type(e).__name__}: {e}")
            return
        self._write(label, cmd, expect)

    def _hostile(self, label, v, names):
        n = len(v)
        if label.startswith("Command.position(complex values"):
            return Command.position(v + 0.25j)
        if label.startswith("Command.position(complex, zero"):
            return Command.position(v.astype(complex))
        if label == "Command.position([10**400, ...])":
            return Command.position([10 ** 400] * n)
        if label == "Command.velocity([-10**400, ...])":
            return Command.velocity([-(10 ** 400)] * n)
        if label == "Command.position('abc')":
            return Command.position("abc")
        if label == "Command.position(None)":
            return Command.position(None)
        if label == "Command.position(ragged nested list)":
            return Command.position([[0.0, 0.0], [0.0]] + [0.0] * (n - 2))
        if label == "Command.position(generator)":
            return Command.position(x for x in v)
        if label == "write(None)":
            return None
        if label.startswith("write({"):
            return {"mode": "position", "values": list(v)}
        c = Command.position(v.copy())
        mutate = {
            "mode mutated to the str 'position'": ("mode", "position"),
            "mode mutated to 'teleport'": ("mode", "teleport"),
            "mode mutated to None": ("mode", None),
            "mode mutated to 3": ("mode", 3),
            "values mutated to a list": ("values", list(v)),
            "values mutated to 'abc'": ("values", "abc"),
            "values mutated to None": ("values", None),
            "values mutated to a complex array": ("values", v + 0.5j),
            "values mutated to an object array": ("values", np.array([object()] * n, dtype=object)),
            "values mutated to a (1, n) array": ("values", v.reshape(1, n)),
            "values mutated to an int array": ("values", np.round(v).astype(int)),
            "values mutated to float32": ("values", v.astype(np.float32)),
            "values mutated to a NaN float32 array": ("values", np.full(n, np.nan, np.float32)),
            "names mutated to a str": ("names", names[0]),
            "names mutated to 5": ("names", 5),
            "names mutated to a list of the right names": ("names", list(names)),
            "names mutated to contain None": ("names", (None,) + tuple(names[1:])),
            "stamp mutated to 'now'": ("stamp", "now"),
            "stamp mutated to a complex": ("stamp", 1 + 2j),
            "stamp NaN": ("stamp", math.nan),
        }[label]
        setattr(c, *mutate)
        return c

    @rule()
    def estop(self):
        self._call("estop", self.layer.estop)

    @rule(on=st.booleans())
    def enable(self, on):
        self._call(f"enable({on})", lambda: self.layer.enable(on))

    @rule()
    def reset(self):
        self._call("reset", self.layer.reset)

    @rule()
    def hold(self):
        self._call("hold", self.layer.hold)

    @rule()
    def read(self):
        result, exc, _ = self._call("read", self.layer.read, may_raise=(DriverFault,))
        if exc is not None and self.layer.state != FAULT:
            self.drv.flag("latch", f"read raised {type(exc).__name__} but the state is {self.layer.state!r}")

    @rule(periods=st.integers(1, 6))
    def wait(self, periods):
        """No commands for a while: the watchdog must hold the robot in time."""
        self._call("wait (watchdog)", lambda: self.backend.wait(self.layer, periods, self._sample))

    @rule(method=st.sampled_from(("read", "write", "hold", "reset_fault")),
          kind=st.sampled_from(FAILURE_KINDS), after=st.integers(0, 3), persistent=st.booleans())
    def inject(self, method, kind, after, persistent):
        self.drv.plan[method] = _Plan(after, kind, persistent)

    @precondition(lambda self: self.layer is not None and bool(self.drv.plan))
    @rule()
    def clear_injections(self):
        self.drv.plan.clear()

    # -------------------------------------------------------------- after every step
    @invariant()
    def nothing_unsafe(self):
        if self.layer is None:
            return
        self.fig["steps"] += 1
        v = self.drv.violations
        if v:
            self.fig["violations"] += 1
            # kept for the summary: on the wall-clock backend hypothesis often cannot replay a case
            self.fig["first_failure"] = self.fig["first_failure"] or " | ".join(dict.fromkeys(v[:5]))
            raise AssertionError(f"{self.backend.name}: " + " | ".join(dict.fromkeys(v[:5])))


def machine_for(backend, ignore: tuple[str, ...] = ()) -> type[SafetyMachine]:
    return type(f"SafetyMachine_{backend.name}", (SafetyMachine,), {"backend": backend, "ignore": ignore})
