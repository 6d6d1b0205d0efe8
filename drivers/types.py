"""Value types shared by every driver: the joint spec, a state sample and a command."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class CommandMode(str, enum.Enum):
    POSITION = "position"
    VELOCITY = "velocity"
    EFFORT = "effort"


@dataclass(frozen=True)
class JointLimits:
    lower: float
    upper: float
    velocity: float
    effort: float


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
    def period(self) -> float:
        return 1.0 / self.rate_hz

    def describe(self) -> str:
        lines = [f"{self.n_joints} joints at {self.rate_hz:g} Hz, modes: "
                 + ", ".join(sorted(m.value for m in self.modes))]
        w = max(len(n) for n in self.joint_names)
        for name, lim in zip(self.joint_names, self.limits):
            lines.append(f"  {name:<{w}}  [{lim.lower:+.3f}, {lim.upper:+.3f}]  "
                         f"|qd|<={lim.velocity:g}  |tau|<={lim.effort:g}")
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
        try:
            self.values = np.asarray(self.values, dtype=float)
        except (TypeError, ValueError):
            self.values = np.full(1, np.nan)   # unparseable: the safety layer rejects it as non-finite
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
