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


# What each clamp counter means in a `WriteResult.reason` (`clamp_reason`).
CLAMP_CAUSES = {"clamped_position": "position limit", "clamped_step": "position step",
                "clamped_velocity": "velocity or acceleration limit", "clamped_effort": "effort limit",
                "braked": "braking distance"}
_clamp_reasons: dict[tuple[str, ...], str] = {}


def clamp_reason(keys: tuple[str, ...]) -> str:
    """The one-line reason of a clamp that bumped the counters `keys` (built once per combination)."""
    r = _clamp_reasons.get(keys)
    if r is None:
        r = _clamp_reasons[keys] = ", ".join(CLAMP_CAUSES[k] for k in keys)
    return r


OK, CLAMPED, REJECTED = "ok", "clamped", "rejected"


class WriteResult(str):
    """What `SafetyLayer.write` did with one command.

    status   "ok" (sent unchanged), "clamped" (sent, changed by the limits) or "rejected" (refused)
    key      the counter (`SafetyCounters`) the outcome bumped: "rejected_stale", "driver_faults"
             (a driver fault), "clamped_step", ...; where a clamp bumped several, the first in
             `CLAMP_CAUSES`' order. None for ok
    reason   one line: why it was refused, or what clamped it (`CLAMP_CAUSES`); "" for ok
    sent     the values the driver was sent, in the robot's joint order, read-only; None when refused
    clamped  read-only bool mask per joint: where the limits changed the command (in the robot's
             joint order); None when refused

    It is also a `str` whose value is the string `write` returned before this class existed
    ("ok", "clamped", "rejected: <reason>"): a migration path, so that every caller comparing
    strings (`== "ok"`, `.startswith("rejected")`), f-strings and logs works unchanged while
    new code reads the fields. Equality, hashing and repr are the string's. Frozen, with one
    slot holding the fields: one is built on every command, up to 1 kHz, so building it costs
    the object and a tuple (the arrays are the layer's own, viewed read-only when read).
    """

    __slots__ = ("_f",)      # (status, key, reason, sent, clamped)

    def __new__(cls, status: str, reason: str = "", key: str | None = None, sent=None, clamped=None):
        if status not in (OK, CLAMPED, REJECTED):
            raise ValueError(f"WriteResult.status: must be 'ok', 'clamped' or 'rejected', got {excerpt(status)}")
        if not isinstance(reason, str):
            raise ValueError(f"WriteResult.reason: must be a str, got {excerpt(reason)}")
        if status == REJECTED:
            sent = clamped = None
        else:
            if sent is None:
                raise ValueError(f"WriteResult.sent: a {status} command needs the values sent")
            sent = np.array(sent, dtype=float)
            clamped = np.zeros(sent.shape, bool) if clamped is None else np.array(clamped, dtype=bool)
            if clamped.shape != sent.shape:
                raise ValueError(f"WriteResult.clamped: shape {clamped.shape} does not match sent {sent.shape}")
        return _make(cls, f"rejected: {reason}" if status == REJECTED else status, status, key, reason,
                     sent, clamped)

    @property
    def status(self) -> str:
        return self._f[0]

    @property
    def key(self) -> str | None:
        return self._f[1]

    @property
    def reason(self) -> str:
        return self._f[2]

    @property
    def sent(self) -> np.ndarray | None:
        return _read_only(self._f[3])

    @property
    def clamped(self) -> np.ndarray | None:
        return _read_only(self._f[4])

    @property
    def ok(self) -> bool:
        """Sent unchanged."""
        return self._f[0] == OK

    @property
    def accepted(self) -> bool:
        """Sent to the driver, clamped or not."""
        return self._f[0] != REJECTED

    @property
    def refused(self) -> bool:
        """Not sent: the robot holds (or is stopped already)."""
        return self._f[0] == REJECTED

    def __setattr__(self, name, value):
        raise AttributeError(f"WriteResult is read-only: cannot set {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"WriteResult is read-only: cannot delete {name!r}")

    def __reduce__(self):
        return _make, (type(self), str(self), *self._f)


def _read_only(a: np.ndarray | None) -> np.ndarray | None:
    if a is None or not a.flags.writeable:
        return a
    v = a.view()
    v.setflags(write=False)
    return v


_set_fields = WriteResult.__dict__["_f"].__set__
_str_new = str.__new__


def _make(cls, text: str, status: str, key, reason: str, sent, clamped) -> WriteResult:
    """The fast constructor (the write path): no checks, the fields set directly."""
    r = _str_new(cls, text)
    _set_fields(r, (status, key, reason, sent, clamped))
    return r


def refused_result(key: str, reason: str) -> WriteResult:
    """A refusal that bumped counter `key`, as `write` returns it."""
    return _make(WriteResult, "rejected: " + reason, REJECTED, key, reason, None, None)


def sent_result(values: np.ndarray, mask: np.ndarray, keys: tuple[str, ...] = ()) -> WriteResult:
    """A command sent as `values` (an array nobody changes afterwards): "ok" without clamp
    counters `keys`, else "clamped" with the per-joint `mask` of what the limits changed."""
    if not keys:
        return _make(WriteResult, OK, OK, None, "", values, mask)
    return _make(WriteResult, CLAMPED, CLAMPED, keys[0], clamp_reason(keys), values, mask)
