"""The safety layer's vocabulary, shared by its parts (`drivers.safety`): its states and which
action leaves each latched one, the event counters it reports, and one-line message helpers."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .base import DriverError

ENABLED, HOLDING, DISABLED, ESTOP, FAULT, DISCONNECTED = (
    "enabled", "holding", "disabled", "estop", "fault", "disconnected")

# which action may leave each latched state (`SafetyLayer._set_state`)
LEAVE = {FAULT: ("reset",), ESTOP: ("enable", "reset"), DISABLED: ("enable", "reset"),
         DISCONNECTED: ("connect",)}


@dataclass
class SafetyCounters:
    """Every command and event of the safety layer, counted (reported in `SafetyLayer.status`)."""

    commands: int = 0
    accepted: int = 0
    rejected_mode: int = 0
    rejected_malformed: int = 0      # a field of the wrong type: values not real numbers, a bad stamp
    rejected_speed: int = 0          # a joint outside its speed envelope (held)
    rejected_names: int = 0
    rejected_shape: int = 0
    rejected_nonfinite: int = 0
    rejected_stale: int = 0
    rejected_estop: int = 0
    rejected_disabled: int = 0
    rejected_fault: int = 0
    clamped_position: int = 0
    clamped_step: int = 0
    clamped_velocity: int = 0
    clamped_effort: int = 0
    braked: int = 0                  # velocity/effort commands cut by the braking-distance rule
    watchdog_trips: int = 0
    estops: int = 0
    driver_faults: int = 0
    bad_states: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def rejected(self) -> int:
        return sum(v for k, v in asdict(self).items() if k.startswith("rejected_"))


def one_line(e: BaseException) -> str:
    """An exception as one bounded line; the type is named unless it is the drivers' own error."""
    try:
        text = " ".join(str(e).split())
    except Exception:
        text = ""
    if not isinstance(e, DriverError):
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    text = text or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def excerpt(x, limit: int = 40) -> str:
    """A bounded repr of a value from a command, for messages."""
    try:
        r = repr(x)
    except Exception:
        r = f"<{type(x).__name__}>"
    return r if len(r) <= limit else r[:limit - 3] + "..."


def all_finite(*arrays: np.ndarray) -> bool:
    """No NaN or inf in any of the (float) arrays. The sum of squares is finite exactly when every
    element is; scaled by 1e-160 first, so that no finite double overflows it (which warned) and
    tiny values merely underflow to zero. One BLAS call per array instead of two reductions: this
    runs on every state and command."""
    total = 0.0
    for a in arrays:
        s = a * 1e-160
        total += s.dot(s)
    if math.isfinite(total):
        return True
    return all(np.isfinite(a).all() for a in arrays)
