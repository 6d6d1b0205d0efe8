"""Value types shared by every driver: the joint spec, a state sample and a command."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class CommandMode(str, enum.Enum):
    POSITION = "position"
    VELOCITY = "velocity"
    EFFORT = "effort"


# Where a config runs (`hardware:`): auto = real with a loud fall-back to sim; mock = in memory
# (drivers.mock_driver).
HARDWARE_MODES = ("auto", "sim", "real", "mock")

# Without a configured acceleration, a joint plans to go from rest to its velocity limit (and back)
# in BRAKE_TIME seconds: a = velocity / BRAKE_TIME. Gentler than most arms can do on purpose: a
# proximal joint accelerating harder throws the distal links, whose effort-limited controllers
# then lag their set-points by more than the safety margin.
BRAKE_TIME = 0.5


@dataclass(frozen=True)
class JointLimits:
    lower: float
    upper: float
    velocity: float
    effort: float
    acceleration: float | None = None   # what commands and stops plan with; None: velocity / BRAKE_TIME

    @property
    def planned_acceleration(self) -> float:
        return self.velocity / BRAKE_TIME if self.acceleration is None else self.acceleration


@dataclass(frozen=True)
class DriverSpec:
    """What a connected robot offers: joint names in config order, their limits, modes and rate."""

    joint_names: tuple[str, ...]
    limits: tuple[JointLimits, ...]
    modes: frozenset[CommandMode]
    rate_hz: float

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def lower(self) -> np.ndarray:
        return np.array([lim.lower for lim in self.limits])

    @property
    def upper(self) -> np.ndarray:
        return np.array([lim.upper for lim in self.limits])

    @property
    def max_velocity(self) -> np.ndarray:
        return np.array([lim.velocity for lim in self.limits])

    @property
    def max_effort(self) -> np.ndarray:
        return np.array([lim.effort for lim in self.limits])

    @property
    def max_acceleration(self) -> np.ndarray:
        """The acceleration every command and stop plans with, speeding up and braking."""
        return np.array([lim.planned_acceleration for lim in self.limits])

    @property
    def period(self) -> float:
        return 1.0 / self.rate_hz

    def describe(self) -> str:
        lines = [f"{self.n_joints} joints at {self.rate_hz:g} Hz, modes: "
                 + ", ".join(sorted(m.value for m in self.modes))]
        w = max(len(n) for n in self.joint_names)
        for name, lim in zip(self.joint_names, self.limits):
            lines.append(f"  {name:<{w}}  [{lim.lower:+.3f}, {lim.upper:+.3f}]  "
                         f"|qd|<={lim.velocity:g}  |qdd|<={lim.planned_acceleration:g}  |tau|<={lim.effort:g}")
        return "\n".join(lines)


@dataclass
class RobotState:
    """One sample of the robot. `stamp` is time.monotonic() (or sim time) in seconds."""

    stamp: float
    q: np.ndarray
    qd: np.ndarray
    effort: np.ndarray
    sensors: dict = field(default_factory=dict)


@dataclass
class Command:
    """One value per joint, in the driver's joint order (or in the order of `names`, if given).

    `stamp` (same clock as the driver's) lets the safety layer refuse commands that are stale.
    """

    mode: CommandMode
    values: np.ndarray
    names: tuple[str, ...] | None = None
    stamp: float | None = None

    def __post_init__(self):
        self.mode = CommandMode(self.mode)
        # What does not convert exactly to real floats (text, complex, numbers beyond float range,
        # ragged nests) becomes NaN, one per given value where they can be counted: the safety
        # layer refuses it as non-finite. Constructing a command never raises on its values.
        self.values, _ = real_values(self.values)
        if self.names is not None:
            self.names = tuple(self.names)

    @classmethod
    def trusted(cls, mode: CommandMode, values: np.ndarray) -> "Command":
        """A command from already-validated parts (the safety layer's output): no conversion."""
        c = object.__new__(cls)
        c.mode, c.values, c.names, c.stamp = mode, values, None, None
        return c

    @classmethod
    def position(cls, values, **kw) -> "Command":
        return cls(CommandMode.POSITION, values, **kw)

    @classmethod
    def velocity(cls, values, **kw) -> "Command":
        return cls(CommandMode.VELOCITY, values, **kw)

    @classmethod
    def effort(cls, values, **kw) -> "Command":
        return cls(CommandMode.EFFORT, values, **kw)


_REAL_KINDS = frozenset("iuf")       # numpy kinds that are real numbers (bool, complex, text, objects are not)


def real_values(values) -> tuple[np.ndarray, str]:
    """`values` as a float64 array, and "" -- or, when they are not all real numbers that a float
    holds (complex, text, bool, None, a Python int beyond float range, a ragged nest), NaNs of the
    same length where it can be taken (else one NaN) and a one-line reason. Never raises."""
    try:
        a = values if isinstance(values, np.ndarray) else np.asarray(values)
        if a.dtype.kind in _REAL_KINDS:
            out = a.astype(float, copy=False)
            if out.dtype.kind == "f" and (a.dtype.kind == "f" or np.isfinite(out).all()):
                return out, ""
            reason = "values out of float range"
        elif a.dtype.kind == "O":
            # Python objects: ints too large for int64, Decimals, mixed... exact reals only
            if all(isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
                   for x in a.flat):
                with np.errstate(over="ignore"):
                    out = np.array([float(x) for x in a.flat]).reshape(a.shape)
                return out, ""
            reason = "values are not all real numbers"
        else:
            reason = f"values are {a.dtype.name}, not real numbers"
    except (OverflowError, ValueError, TypeError, MemoryError) as e:
        reason = f"values are not real numbers ({type(e).__name__})"
    except Exception as e:                 # a hostile __array__ / __len__ / __iter__
        reason = f"values are not real numbers ({type(e).__name__})"
    try:
        n = len(values)
        n = n if isinstance(n, int) and 0 < n <= 1 << 16 else 1
    except Exception:
        n = 1
    return np.full(n, np.nan), reason
