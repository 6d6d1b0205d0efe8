"""Excitation trajectories for identification: a finite Fourier series per joint (Swevers et al.
1997, "Optimal robot excitation and identification"), within position, velocity and acceleration
limits, checked before anything moves.

Per joint j, with base pulsation w = 2 pi / period and N harmonics::

    q_j(t) = q0_j + sum_l a_jl sin(l w t) + b_jl (cos(l w t) - 1)

The coefficients are random (seeded), then projected so that q(0) = q0 and qd(0) = qdd(0) = 0
(sum_l l a_jl = 0, sum_l l^2 b_jl = 0): the trajectory starts at rest where the robot is and, the
duration being a whole number of periods, ends there at rest too. Each joint's series is then
scaled as far as its amplitude cap and its limits allow (a fraction `fill` of the position room,
the speed and the acceleration), so the excitation uses the robot's range without leaving it.

`check_excitation` checks a plan's set-points (what the robot is sent, one per control period)
and their finite differences against the limits and refuses the first violation in one line
(`ExcitationError`); a plan never runs without passing it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_MOTION = 1e-9      # rad (m): a joint's excitation must move it at least this far


class ExcitationError(ValueError):
    """An excitation that cannot be built or would exceed a limit; one line naming the joint."""


@dataclass(frozen=True)
class ExcitationLimits:
    """What an excitation must stay within, per joint: positions [lower, upper] (the soft limits
    commands aim at), speed and acceleration (the ones commands are planned with), and the most a
    set-point may move per control period."""
    names: tuple
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    period: float
    max_step: float = np.inf

    def __post_init__(self):
        n = len(self.names)
        for key in ("lower", "upper", "velocity", "acceleration"):
            v = np.asarray(getattr(self, key), float)
            if v.shape != (n,) or not np.isfinite(v).all():
                raise ExcitationError(f"limits.{key}: expected {n} finite values (one per joint), got {v.tolist()}")
            object.__setattr__(self, key, v)
        if (self.upper <= self.lower).any():
            j = int(np.argmax(self.upper <= self.lower))
            raise ExcitationError(f"limits: {self.names[j]}: lower {self.lower[j]:g} >= upper {self.upper[j]:g}")
        if (self.velocity <= 0).any() or (self.acceleration <= 0).any():
            raise ExcitationError("limits: velocity and acceleration limits must be > 0")
        if not (self.period > 0 and np.isfinite(self.period)):
            raise ExcitationError(f"limits.period: must be a positive number of seconds, got {self.period}")
        if not self.max_step > 0:
            raise ExcitationError(f"limits.max_step: must be > 0, got {self.max_step}")

    @classmethod
    def of_robot(cls, spec, safety, joints=None) -> "ExcitationLimits":
        """The limits the safety layer enforces on `spec` (a DriverSpec) under `safety` (a config's
        safety section): soft position limits, velocity and acceleration times `velocity_scale`,
        `max_position_step`; `joints` a subset of names (default all)."""
        from s2r.core.joint_limiter import JointLimiter
        names = list(spec.joint_names) if joints is None else list(joints)
        bad = [j for j in names if j not in spec.joint_names]
        if bad:
            raise ExcitationError(f"joint {bad[0]!r} is not one of the robot's joints {list(spec.joint_names)}")
        lim = JointLimiter.for_robot(spec, safety, names)
        lo, hi = lim.soft_limits
        idx = [spec.joint_names.index(j) for j in names]
        s = safety.velocity_scale
        return cls(tuple(names), lo, hi, spec.max_velocity[idx] * s, spec.max_acceleration[idx] * s,
                   spec.period, float(safety.max_position_step))


@dataclass(frozen=True)
class Excitation:
    """A finite Fourier series per joint around `q0`: coefficients a, b (joints x harmonics),
    base pulsation `omega` (rad/s), `duration` (s)."""
    names: tuple
    q0: np.ndarray
    a: np.ndarray
    b: np.ndarray
    omega: float
    duration: float

    def evaluate(self, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions, velocities, accelerations at times t (len(t) x joints), analytically."""
        t = np.asarray(t, float)[:, None, None]
        lw = self.omega * np.arange(1, self.a.shape[1] + 1)          # (harmonics,)
        s, c = np.sin(lw * t), np.cos(lw * t)                       # (T, 1, H)
        q = self.q0 + np.sum(self.a * s + self.b * (c - 1.0), axis=2)
        qd = np.sum(lw * (self.a * c - self.b * s), axis=2)
        qdd = np.sum(-lw ** 2 * (self.a * s + self.b * c), axis=2)
        return q, qd, qdd

    def setpoints(self, period: float) -> tuple[np.ndarray, np.ndarray]:
        """(t, q): one set-point per control period from t = period to the end (the robot is at
        q0 at t = 0), ending with q0."""
        n = int(round(self.duration / period))
        t = np.arange(1, n + 1) * period
        return t, self.evaluate(t)[0]

    def describe(self, period: float) -> str:
        """The plan, per joint: the range it covers and its peak speed and acceleration."""
        t = np.arange(0, int(round(self.duration / period)) + 1) * period
        q, qd, qdd = self.evaluate(t)
        w = max(len(n) for n in self.names)
        lines = [f"excitation: {len(self.names)} joints, {self.duration:g} s, {self.a.shape[1]} harmonics of "
                 f"{self.omega / (2 * np.pi):.3g} Hz"]
        for j, name in enumerate(self.names):
            lines.append(f"  {name:<{w}}  range [{q[:, j].min():+.3f}, {q[:, j].max():+.3f}] rad  "
                         f"peak |qd| {np.abs(qd[:, j]).max():.3f} rad/s  peak |qdd| {np.abs(qdd[:, j]).max():.3f} rad/s^2")
        return "\n".join(lines)


def fourier_excitation(limits: ExcitationLimits, q0, duration: float, *, harmonics: int = 5,
                       base_hz: float = 0.1, amplitude: float = 0.5, fill: float = 0.8,
                       seed: int = 0) -> Excitation:
    """A finite Fourier series excitation starting and ending at rest at `q0`, each joint scaled to
    at most `amplitude` (rad) from q0 and `fill` of its position room, speed, acceleration and
    per-period step (`limits`). The duration is rounded to a whole number of periods of the base
    frequency (at least one; `base_hz` lowered so one fits when the duration is shorter)."""
    q0 = np.asarray(q0, float)
    n = len(limits.names)
    if q0.shape != (n,) or not np.isfinite(q0).all():
        raise ExcitationError(f"start position: expected {n} finite values, got {q0.tolist()}")
    if not (np.isfinite(duration) and duration > 0):
        raise ExcitationError(f"duration: must be a positive number of seconds, got {duration}")
    if int(harmonics) != harmonics or harmonics < 2:
        raise ExcitationError(f"harmonics: needs an integer >= 2 (the start conditions take two degrees "
                              f"of freedom), got {harmonics}")
    if not (np.isfinite(base_hz) and base_hz > 0):
        raise ExcitationError(f"base_hz: must be > 0, got {base_hz}")
    if not (np.isfinite(amplitude) and amplitude > 0):
        raise ExcitationError(f"amplitude: must be > 0 rad, got {amplitude}")
    if not 0 < fill <= 1:
        raise ExcitationError(f"fill: must be in (0, 1], got {fill}")
    outside = (q0 < limits.lower) | (q0 > limits.upper)
    if outside.any():
        j = int(np.argmax(outside))
        raise ExcitationError(f"{limits.names[j]} is at {q0[j]:+.4f}, outside its limits [{limits.lower[j]:+.4f}, "
                              f"{limits.upper[j]:+.4f}]: move it inside first")
    harmonics = int(harmonics)
    cycles = max(1, int(round(duration * base_hz)))
    duration = float(duration)
    omega = 2 * np.pi * cycles / duration
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((n, harmonics)), rng.standard_normal((n, harmonics))
    lw = np.arange(1, harmonics + 1, dtype=float)
    a -= np.outer(a @ lw, lw) / (lw @ lw)                 # qd(0) = 0
    b -= np.outer(b @ lw ** 2, lw ** 2) / (lw ** 2 @ lw ** 2)  # qdd(0) = 0
    unit = Excitation(tuple(limits.names), q0, a, b, omega, duration)
    # the peaks of the unit series on a grid of spacing dt, raised to bounds of the continuous
    # series: a trigonometric polynomial of degree W (rad/s) exceeds its largest sample by at
    # most that times W dt / 2 / (1 - W dt / 2) (Bernstein's inequality, |f'| <= W max |f|); each
    # joint then scaled to the tightest of its limits. The set-points' differences are bounded by
    # the derivatives' peaks (mean value theorem), so they stay within the limits too.
    top = omega * harmonics
    dt = min(limits.period, 2 * np.pi / top / 400)
    t = np.linspace(0.0, duration, int(np.ceil(duration / dt)) + 1)
    dt = t[1] - t[0]
    q, qd, qdd = unit.evaluate(t)
    dq = q - q0
    grow = 1.0 / (1.0 - top * dt / 2)
    slack = (grow - 1.0) * np.abs(dq).max(0)          # how far the series may pass its samples
    dq_hi, dq_lo = dq.max(0) + slack, dq.min(0) - slack
    qd, qdd = qd * grow, qdd * grow
    with np.errstate(divide="ignore"):
        room_hi = np.where(dq_hi > 0, (limits.upper - q0) / dq_hi, np.inf)
        room_lo = np.where(dq_lo < 0, (limits.lower - q0) / dq_lo, np.inf)
        scale = np.min(np.stack([
            fill * room_hi, fill * room_lo,
            amplitude / np.maximum(dq_hi, -dq_lo),
            fill * limits.velocity / np.abs(qd).max(0),
            fill * limits.acceleration / np.abs(qdd).max(0),
            fill * limits.max_step / (np.abs(qd).max(0) * limits.period)]), axis=0)
    # a joint whose excitation would move it less than MIN_MOTION (at a limit, give or take a
    # rounding) has no room: the plan would excite nothing there
    moves = np.isfinite(scale) & (scale * np.maximum(dq_hi, -dq_lo) >= MIN_MOTION)
    if not moves.all():
        j = int(np.argmax(~moves))
        raise ExcitationError(f"{limits.names[j]}: no room to move (at {q0[j]:+.4f}, limits "
                              f"[{limits.lower[j]:+.4f}, {limits.upper[j]:+.4f}])")
    exc = Excitation(unit.names, q0, a * scale[:, None], b * scale[:, None], omega, duration)
    check_excitation(exc, limits)
    return exc


def check_excitation(exc: Excitation, limits: ExcitationLimits, start=None) -> None:
    """Refuse (ExcitationError, one line) a plan whose set-points leave the position limits, or
    whose speed, acceleration (analytic, and the set-points' finite differences, as the robot
    sees them) or per-period step exceeds the limits; or that does not start at `start` (the
    measured position), within one step."""
    if tuple(exc.names) != tuple(limits.names):
        raise ExcitationError(f"the plan's joints {list(exc.names)} are not the limits' {list(limits.names)}")
    T = limits.period
    t, q = exc.setpoints(T)
    t_all = np.concatenate([[0.0], t])
    q_all = np.vstack([exc.q0, q])
    _, qd, qdd = exc.evaluate(t_all)
    tol = 1e-9
    if start is not None:
        dev = np.abs(np.asarray(start, float) - exc.q0)
        if (dev > limits.max_step + tol).any():
            j = int(np.argmax(dev))
            raise ExcitationError(f"{exc.names[j]}: the plan starts at {exc.q0[j]:+.4f}, the robot is at "
                                  f"{start[j]:+.4f}")
    step = np.diff(q_all, axis=0)
    vel_fd = step / T
    acc_fd = np.diff(q_all, 2, axis=0) / T ** 2
    checks = (
        ("position", q_all, limits.lower, limits.upper, "rad"),
        ("velocity", qd, -limits.velocity, limits.velocity, "rad/s"),
        ("velocity (set-point steps)", vel_fd, -limits.velocity, limits.velocity, "rad/s"),
        ("acceleration", qdd, -limits.acceleration, limits.acceleration, "rad/s^2"),
        ("acceleration (set-point steps)", acc_fd, -limits.acceleration, limits.acceleration, "rad/s^2"),
        ("step per period", step, -limits.max_step, limits.max_step, "rad"),
    )
    for what, v, lo, hi, unit in checks:
        bad = (v < lo - tol) | (v > hi + tol)
        if bad.any():
            k, j = np.argwhere(bad)[0]
            lim = hi[j] if v[k, j] > hi[j] else lo[j]
            raise ExcitationError(f"{exc.names[j]}: {what} {v[k, j]:+.4g} {unit} at t={k * T:.2f} s exceeds "
                                  f"its limit {lim:+.4g} {unit}: refused before any motion")
