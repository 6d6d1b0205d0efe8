"""The sim driver's controlled stop (`StopPlan`): the position reference a stop follows, from
the motion to rest at the planned deceleration, then back inside the limits if it is outside."""
from __future__ import annotations

import numpy as np


class StopPlan:
    """A controlled stop from (q0, v0): each joint's reference decelerates at `a` to rest, then
    holds. `a` is the deceleration the safety layer plans with (the spec's planned acceleration), or
    more where that would carry the joint past its position limit: it stops at the limit (a
    joint the safety layer kept within its envelope never needs more). A joint at rest outside
    its limits is brought back to the limit, accelerating and braking at the planned rate."""

    def __init__(self, q0, v0, lower, upper, accel):
        room = np.where(v0 > 0, upper - q0, q0 - lower)
        with np.errstate(divide="ignore", invalid="ignore"):
            need = np.where(room > 0, v0 * v0 / (2.0 * room), np.inf)
        plan = accel
        a = np.maximum(plan, need)
        stopped = np.isfinite(a)
        self.q0, self.v0 = q0, v0
        self.a = np.where(stopped, a, 0.0)
        self.t_stop = np.where(stopped, np.abs(v0) / np.where(stopped, a, 1.0), 0.0)
        # then back inside the limits, rest to rest: half the way accelerating, half braking
        rest = q0 + 0.5 * v0 * self.t_stop
        self.back = np.minimum(np.maximum(rest, lower), upper) - rest
        self.t_back = 2.0 * np.sqrt(np.abs(self.back) / plan)
        self.duration = float((self.t_stop + self.t_back).max(initial=0.0))
        self.t = 0.0
        self.goal = None             # the reference set for the end of the current period

    def at(self, t: float) -> np.ndarray:
        """The reference t seconds into the stop."""
        tt = np.minimum(t, self.t_stop)
        q = self.q0 + self.v0 * tt - 0.5 * np.sign(self.v0) * self.a * tt * tt
        tb = np.minimum(np.maximum(t - self.t_stop, 0.0), self.t_back)
        with np.errstate(divide="ignore", invalid="ignore"):
            half = np.where(self.t_back > 0, tb / self.t_back, 1.0)
        share = np.where(half <= 0.5, 2.0 * half * half, 1.0 - 2.0 * (1.0 - half) ** 2)
        return q + self.back * share
