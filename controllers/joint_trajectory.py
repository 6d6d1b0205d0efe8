"""Joint trajectories as the driver node executes them: validated once, then sampled every period.

A trajectory_msgs/JointTrajectory names some or all of the robot's joints; joints it does not name
hold the position measured when it was accepted. Between points the position is interpolated in
time: linearly, or with cubic Hermite segments when every point carries velocities (as
ros2_control's joint_trajectory_controller does). Before the first point the trajectory starts from
the measured position (at rest); after the last it holds the last point.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["JointTrajectoryPlan", "TrajectoryError"]


class TrajectoryError(ValueError):
    """A trajectory that cannot be executed; the message says why."""


@dataclass
class JointTrajectoryPlan:
    """A validated joint trajectory (`build`), sampled at clock times (`sample`)."""

    times: np.ndarray            # (m,) seconds from start, strictly increasing, times[0] == 0
    positions: np.ndarray        # (m, n) in the robot's joint order
    velocities: np.ndarray | None  # (m, n) or None (linear interpolation)
    start: float                 # the clock value (time.monotonic) at which times[0] happens

    @classmethod
    def build(cls, joint_order, names, times, positions, velocities, q_start, start: float,
              max_points: int = 10_000) -> "JointTrajectoryPlan":
        joint_order = list(joint_order)
        names = list(names)
        if not names:
            raise TrajectoryError("no joint names")
        if len(set(names)) != len(names):
            raise TrajectoryError(f"duplicate joint names in {names}")
        unknown = [nm for nm in names if nm not in joint_order]
        if unknown:
            raise TrajectoryError(f"unknown joint(s) {unknown}; the robot's joints are {joint_order}")
        m = len(times)
        if m == 0:
            raise TrajectoryError("no points")
        if m > max_points:
            raise TrajectoryError(f"{m} points is more than the {max_points} accepted")
        t = np.asarray(times, dtype=float)
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            raise TrajectoryError("time_from_start must be finite and >= 0")
        if np.any(np.diff(t) <= 0):
            k = int(np.argmax(np.diff(t) <= 0))
            raise TrajectoryError(f"time_from_start must increase strictly: point {k + 1} at {t[k + 1]:.4f} s "
                                  f"is not after point {k} at {t[k]:.4f} s")
        if len(positions) != m or any(len(p) != len(names) for p in positions):
            raise TrajectoryError(f"every point needs {len(names)} positions (one per joint name)")
        P = np.asarray(positions, dtype=float).reshape(m, len(names))
        if not np.all(np.isfinite(P)):
            raise TrajectoryError("positions contain NaN or inf")
        has_v = velocities is not None and all(len(v) > 0 for v in velocities)
        if has_v:
            if len(velocities) != m or any(len(v) != len(names) for v in velocities):
                raise TrajectoryError(f"velocities, when given, need {len(names)} values in every point")
            V = np.asarray(velocities, dtype=float).reshape(m, len(names))
            if not np.all(np.isfinite(V)):
                raise TrajectoryError("velocities contain NaN or inf")
        q_start = np.asarray(q_start, dtype=float)
        n = len(joint_order)
        cols = [joint_order.index(nm) for nm in names]
        full_P = np.repeat(q_start[None, :], m, axis=0)
        full_P[:, cols] = P
        full_V = None
        if has_v:
            full_V = np.zeros((m, n))
            full_V[:, cols] = V
        # the trajectory starts from where the robot is, at rest, unless its first point is at t=0
        if t[0] > 0:
            t = np.concatenate([[0.0], t])
            full_P = np.vstack([q_start[None, :], full_P])
            if full_V is not None:
                full_V = np.vstack([np.zeros((1, n)), full_V])
        return cls(t, full_P, full_V, start)

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    def done(self, now: float) -> bool:
        return now - self.start >= self.duration

    def sample(self, now: float) -> np.ndarray:
        """Position at clock time `now`."""
        tau = now - self.start
        t, P = self.times, self.positions
        if tau <= t[0]:
            return P[0].copy()
        if tau >= t[-1]:
            return P[-1].copy()
        k = int(np.searchsorted(t, tau, side="right")) - 1
        h = t[k + 1] - t[k]
        s = (tau - t[k]) / h
        if self.velocities is None:
            return P[k] + s * (P[k + 1] - P[k])
        V = self.velocities
        # cubic Hermite basis
        h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
        h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
        return h00 * P[k] + h10 * h * V[k] + h01 * P[k + 1] + h11 * h * V[k + 1]
