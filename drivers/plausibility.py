"""Readings that cannot be right are flagged and not trusted (used by the real drivers).

A joint reading is implausible when it is not finite, lies outside the joint's limits by more
than `margin`, or moved from the last trusted reading faster than the joint can (3x its velocity
limit, plus the margin). An implausible reading is replaced by the last trusted value and its
velocity by zero, and the joint is named in `untrusted`; `budget` consecutive implausible readings
of one joint turn into a fault message (the driver latches it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s2r.core.types import DriverSpec


@dataclass
class Checked:
    q: np.ndarray
    qd: np.ndarray
    untrusted: tuple[str, ...]
    raw_q: np.ndarray | None       # the readings as received, when some were replaced
    fault: str | None              # set when a joint stayed implausible for `budget` readings


class ReadingGuard:
    def __init__(self, spec: DriverSpec, margin: float, budget: int, labels: list[str] | None = None):
        self.spec = spec
        self.margin = margin
        self.budget = budget
        self.labels = labels or list(spec.joint_names)
        self.reset()

    def reset(self, q: np.ndarray | None = None, now: float = 0.0) -> None:
        self.count = np.zeros(self.spec.n_joints, dtype=int)
        self.trusted = None if q is None else np.array(q, float)
        self.trusted_t = now

    def out_of_range(self, q: np.ndarray) -> np.ndarray:
        return ~np.isfinite(q) | (q < self.spec.lower - self.margin) | (q > self.spec.upper + self.margin)

    def describe_out_of_range(self, q: np.ndarray) -> str:
        lo, hi = self.spec.lower, self.spec.upper
        return "; ".join(f"{self.labels[k]} reads {q[k]:+.3f} rad, outside [{lo[k]:+.3f}, {hi[k]:+.3f}] "
                         f"by more than {self.margin:g}" for k in np.flatnonzero(self.out_of_range(q)))

    def check(self, q: np.ndarray, qd: np.ndarray, now: float) -> Checked:
        q = np.asarray(q, float)
        qd = np.asarray(qd, float)
        bad = self.out_of_range(q)
        if self.trusted is not None:
            dt = max(now - self.trusted_t, 0.0)
            with np.errstate(invalid="ignore"):
                bad |= np.abs(q - self.trusted) > 3.0 * self.spec.max_velocity * dt + self.margin
        bad |= ~np.isfinite(qd)
        self.count = np.where(bad, self.count + 1, 0)
        raw = None
        fault = None
        if bad.any():
            raw = q.copy()
            fill = self.trusted if self.trusted is not None else np.clip(np.nan_to_num(q), self.spec.lower, self.spec.upper)
            q = np.where(bad, fill, q)
            qd = np.where(bad, 0.0, qd)
            over = np.flatnonzero(self.count >= self.budget)
            if over.size:
                k = int(over[0])
                fault = (f"{self.labels[k]} readings not trusted for {self.count[k]} cycles (raw {raw[k]:+.3f} rad, "
                         f"limits [{self.spec.lower[k]:+.3f}, {self.spec.upper[k]:+.3f}], last trusted {q[k]:+.3f}): "
                         "mis-calibrated, slipped or a failing sensor")
        if self.trusted is None:
            self.trusted = q.copy()
        else:
            self.trusted = np.where(bad, self.trusted, q)
        if not bad.any():
            self.trusted_t = now
        names = tuple(self.spec.joint_names[k] for k in np.flatnonzero(bad))
        return Checked(q, qd, names, raw, fault)
