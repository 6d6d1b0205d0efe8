"""Identifying the simulator from a recorded robot run: replay the recorded position commands in
pybullet from the recorded states over short segments (multiple shooting, so a long replay cannot
diverge) and fit the robot parameters that matter for transfer with nonlinear least squares
(scipy.optimize.least_squares); each value's uncertainty from the Jacobian at the optimum.

Parameters (names as the randomization parameters that apply them, `sim.robots.apply_robot_draw`):
- `link_mass_scale`: one scale of every link's mass and inertia;
- `joint_damping_scale`, `gain_scale` (kp and kd together): one value for all joints, or one per
  joint (`per_joint`);
- `encoder_offset`: per joint, added to the positions the robot reports;
- `action_latency`: commands take effect this many control periods late; an integer, so each
  candidate is fitted in turn (the others' fit) and the best one kept.

The model of one control period is the sim driver's (drivers/sim_driver.py): a position set-point
is reached by linear interpolation over the period from the previous one (over longer where the
step exceeds the velocity limit), tracked by the joint PD on top of gravity compensation. A segment
starts at a recorded state (less the offsets) with the reference resting at the previous
set-point, as it does between streamed set-points. Residuals: the predicted minus the recorded
positions (plus the offsets), and velocities weighted by `velocity_weight` (s).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .robots import MODE_POSITION, RobotNominal, apply_robot_draw

FIT_PARAMETERS = ("link_mass_scale", "joint_damping_scale", "gain_scale", "encoder_offset", "action_latency")
SCALE_BOUNDS = (0.05, 20.0)
OFFSET_BOUND = 0.5           # rad


class IdentificationError(ValueError):
    """A recording or a request identification cannot work with; one line naming what is wrong."""


@dataclass
class ReplayData:
    """A recorded run as one row per control period k: the state read at the period's start
    (`q`, `qd`; n_periods + 1 rows) and the position set-point sent after it (`u`, NaN where
    none was), in the robot's joint order `names`; `period` in seconds, and the time that
    actually passed between the reads (`elapsed`: a real-time loop's periods vary), which the
    replay simulates."""
    names: tuple
    q: np.ndarray
    qd: np.ndarray
    u: np.ndarray
    period: float
    elapsed: np.ndarray | None = None     # s between consecutive states (None: `period` each)

    @property
    def n_periods(self) -> int:
        return len(self.u)

    @property
    def duration_s(self) -> float:
        return self.n_periods * self.period

    def moving(self, threshold: float = 1e-3) -> np.ndarray:
        """Per joint: whether its set-points moved (range above `threshold`): the joints whose
        per-joint parameters the recording tells about."""
        u = self.u[~np.isnan(self.u).any(axis=1)]
        return (u.max(axis=0) - u.min(axis=0) > threshold) if len(u) else np.zeros(len(self.names), bool)

    @classmethod
    def from_recording(cls, rec, joint_names, period: float, state_topic: str = "/joint_states",
                       command_topic: str = "/driver/commands") -> "ReplayData":
        """Pair each command with the state read just before it (the last one stamped earlier):
        a period is one state followed by one command. States and commands are put in
        `joint_names` order (the recording's /joint_states names; commands are in the config's
        joint order, as `s2r excite` and `s2r hil --record` write them). Periods whose command
        is of another mode than position (or leaves a joint out: NaN) are not replayed; a
        recording without position commands is an IdentificationError."""
        js = rec.joint_states(state_topic)
        names = list(joint_names)
        missing = [n for n in names if n not in js["names"]]
        if missing:
            raise IdentificationError(f"{rec.path}: {state_topic} has no joint(s) {missing}")
        order = [js["names"].index(n) for n in names]
        stamps = np.array([s for _, s, _ in rec.raw_messages([state_topic])], np.int64)
        q, qd = js["q"][:, order], js["qd"][:, order]
        cmd_t, cmds, modes = [], [], set()
        for _, stamp, m in rec.messages([command_topic]):
            mode = m.layout.dim[0].label if m.layout.dim else "position"
            modes.add(mode)
            v = np.asarray(m.data, float)
            if mode != "position":              # a period of another mode: not replayed
                v = np.full(len(names), np.nan)
            if v.shape != (len(names),):
                raise IdentificationError(f"{rec.path}: {command_topic} has {v.size} values, the robot "
                                          f"{len(names)} joints")
            cmd_t.append(stamp)
            cmds.append(v)
        if not cmds:
            raise IdentificationError(f"{rec.path}: no messages on {command_topic}")
        if "position" not in modes:
            raise IdentificationError(f"{rec.path}: {command_topic} carries {', '.join(sorted(modes))} commands only; "
                                      "identification replays position set-points (record a position-mode run, "
                                      "e.g. `s2r excite --record`)")
        i = np.searchsorted(stamps, np.array(cmd_t, np.int64), side="right") - 1
        u = np.full((len(stamps), len(names)), np.nan)
        seen = np.zeros(len(stamps), int)
        for k, v in zip(i, cmds):
            if k >= 0:
                u[k] = v
                seen[k] += 1
        u[seen > 1] = np.nan          # two commands in one period: not a period of this model
        if np.isnan(qd).any():          # velocities not reported: differenced positions
            qd = np.where(np.isnan(qd), np.gradient(q, period, axis=0), qd)
        elapsed = np.diff(stamps) * 1e-9
        # a state read twice in one period, or a period with no read: the period's own length
        elapsed = np.where((elapsed > 0.25 * period) & (elapsed < 4.0 * period), elapsed, period)
        return cls(tuple(names), q, qd, u[:-1], float(period), elapsed)


@dataclass
class FitResult:
    """Identified values (`values`: name -> float or per-joint array), their standard deviations
    (`std`, same shapes), the latency, and the fit's figures."""
    values: dict
    std: dict
    latency: int
    rms: float                   # rad, positions, calibrated
    rms_nominal: float           # rad, positions, nominal parameters
    latency_rms: dict = field(default_factory=dict)    # candidate -> rms of its fit
    evaluations: int = 0
    seconds: float = 0.0         # wall clock
    segments: list = field(default_factory=list)
    cpu_seconds: float = 0.0     # this process's CPU time (what a loaded machine does not inflate)


class ReplayModel:
    """Replays ReplayData on one SimRobot in a Simulation (the robot loaded as the sim driver
    loads it) under candidate parameters."""

    def __init__(self, simulation, robot, period: float, max_velocity, physics_hz: float | None = None):
        self.simulation, self.robot = simulation, robot
        self.period = float(period)
        hz = physics_hz or 1.0 / simulation.dt
        self.substeps = max(1, int(round(hz * self.period)))
        self.vmax = np.asarray(max_velocity, float)
        self.nominal = RobotNominal.of(robot)
        self.n_links = len(self.nominal.links)
        self.evaluations = 0

    def apply(self, values: dict) -> None:
        """The robot with these physics parameters (others nominal), via apply_robot_draw."""
        n = self.robot.n
        draw = {"link_mass_scale": np.full(self.n_links, float(values.get("link_mass_scale", 1.0))),
                "joint_damping_scale": np.broadcast_to(values.get("joint_damping_scale", 1.0), (n,)).astype(float),
                "gain_scale": np.broadcast_to(values.get("gain_scale", 1.0), (n,)).astype(float)}
        apply_robot_draw(self.simulation, self.robot, self.nominal, draw)

    def simulate(self, data: ReplayData, segments, values: dict, latency: int, offsets) -> tuple:
        """Predicted observed positions and velocities (stacked segment by segment: rows of
        periods k0+1 .. k0+len) for segments [(k0, len), ...]."""
        self.apply(values)
        self.evaluations += 1
        robot, sim, T = self.robot, self.simulation, self.period
        if data.elapsed is None:
            steps = np.full(data.n_periods, self.substeps)
        else:
            steps = np.maximum(1, np.round(data.elapsed / self.simulation.dt)).astype(int)
        offsets = np.asarray(offsets, float)
        qs, qds = [], []
        for k0, length in segments:
            robot.reset(data.q[k0] - offsets, data.qd[k0])
            prev = data.u[k0 - 1 - latency]
            robot.set_target(MODE_POSITION, prev)
            for k in range(k0, k0 + length):
                goal = data.u[k - latency]
                ramp = max(T, float(np.max(np.abs(goal - prev) / self.vmax)))
                robot.set_target(MODE_POSITION, goal, ramp)
                sim.step(int(steps[k]))
                q, qd, _ = robot.state()
                qs.append(q + offsets)
                qds.append(qd)
                prev = goal
        return np.array(qs), np.array(qds)


def segments_of(data: ReplayData, length: int, max_latency: int) -> list:
    """Consecutive segments (k0, length) where every state and the commands the segment needs
    (latency up to `max_latency` included) were recorded."""
    valid = ~np.isnan(data.u).any(axis=1) & ~np.isnan(data.q[:-1]).any(axis=1) & ~np.isnan(data.q[1:]).any(axis=1)
    out, k0 = [], max_latency + 1
    while k0 + length <= data.n_periods:
        need = valid[k0 - 1 - max_latency:k0 + length]
        if need.all():
            out.append((k0, length))
            k0 += length
        else:
            k0 += int(np.argmin(need)) + 1
    return out


class _Layout:
    """The parameter vector: which entries are which parameter."""

    def __init__(self, fit: tuple, n_joints: int, per_joint: tuple):
        self.entries = []            # (name, joint or None)
        for name in ("link_mass_scale", "joint_damping_scale", "gain_scale"):
            if name in fit:
                if name in per_joint:
                    self.entries += [(name, j) for j in range(n_joints)]
                else:
                    self.entries.append((name, None))
        self.n_physical = len(self.entries)
        if "encoder_offset" in fit:
            self.entries += [("encoder_offset", j) for j in range(n_joints)]
        self.n_joints = n_joints

    def x0(self):
        return np.array([0.0 if name == "encoder_offset" else 1.0 for name, _ in self.entries])

    def bounds(self):
        lo = [-OFFSET_BOUND if n == "encoder_offset" else SCALE_BOUNDS[0] for n, _ in self.entries]
        hi = [OFFSET_BOUND if n == "encoder_offset" else SCALE_BOUNDS[1] for n, _ in self.entries]
        return np.array(lo), np.array(hi)

    def unpack(self, x) -> tuple[dict, np.ndarray]:
        values, offsets = {}, np.zeros(self.n_joints)
        for (name, j), v in zip(self.entries, x):
            if name == "encoder_offset":
                offsets[j] = v
            elif j is None:
                values[name] = float(v)
            else:
                values.setdefault(name, np.ones(self.n_joints))[j] = v
        return values, offsets

    def named(self, x) -> dict:
        values, offsets = self.unpack(x)
        if any(n == "encoder_offset" for n, _ in self.entries):
            values["encoder_offset"] = offsets
        return values


class _Problem:
    """The least-squares problem over one set of segments: residuals, and their Jacobian by
    forward differences. The offsets' columns (their effect through each segment's start state
    decays under the joint PD, over a large part of a segment for soft joints) barely change with
    the other parameters: they are differenced at the first Jacobian and kept."""

    def __init__(self, model, data, segments, layout, velocity_weight):
        self.model, self.data, self.segments, self.layout = model, data, segments, layout
        rows = np.concatenate([np.arange(k0 + 1, k0 + n + 1) for k0, n in segments])
        self.q_meas, self.qd_meas = data.q[rows], data.qd[rows]
        self.nq = self.q_meas.size
        self.w_v = float(velocity_weight)
        self._offset_cols = None

    def residual(self, x, latency):
        values, offsets = self.layout.unpack(x)
        q, qd = self.model.simulate(self.data, self.segments, values, latency, offsets)
        r = [(q - self.q_meas).ravel()]
        if self.w_v:
            r.append(self.w_v * np.nan_to_num(qd - self.qd_meas).ravel())
        return np.concatenate(r)

    def jacobian(self, x, latency, r0):
        L = self.layout
        J = np.empty((r0.size, x.size))
        reuse = self._offset_cols is not None
        for i in range(L.n_physical if reuse else x.size):
            h = 1e-4 if L.entries[i][0] == "encoder_offset" else 1e-3 * max(1.0, abs(x[i]))
            xh = x.copy()
            xh[i] += h
            J[:, i] = (self.residual(xh, latency) - r0) / h
        if reuse:
            J[:, L.n_physical:] = self._offset_cols
        else:
            self._offset_cols = J[:, L.n_physical:].copy()
        return J

    def rms(self, r) -> float:
        return float(np.sqrt(np.mean(r[:self.nq] ** 2)))

    def solve(self, x0, latency, iterations):
        from scipy.optimize import least_squares
        cache = {}

        def fun(x):
            key = x.tobytes()
            if key not in cache:
                cache.clear()
                cache[key] = self.residual(x, latency)
            return cache[key]

        lo, hi = self.layout.bounds()
        return least_squares(fun, np.clip(x0, lo, hi), jac=lambda x: self.jacobian(x, latency, fun(x)),
                             bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=iterations,
                             xtol=1e-6, ftol=1e-8, gtol=1e-8)


def identify(model: ReplayModel, data: ReplayData, *, fit=FIT_PARAMETERS, per_joint=(), max_latency: int = 3,
             segment_s: float = 0.5, velocity_weight: float = 0.02, max_iterations: int = 20,
             screen_segments: int = 8, progress=None) -> FitResult:
    """Fit `fit` (names of FIT_PARAMETERS) to `data` by multiple shooting over segments of
    `segment_s`. Latency: each of 0..max_latency is fitted (3 iterations, on up to
    `screen_segments` segments spread over the recording), the best then on all segments to
    convergence (without `action_latency` in `fit`: 0). Standard deviations from the Jacobian
    at the optimum: s^2 (J^T J)^-1, s^2 the residuals' variance."""
    unknown = [f for f in fit if f not in FIT_PARAMETERS]
    if unknown:
        raise IdentificationError(f"cannot identify {unknown[0]!r}; known: {', '.join(FIT_PARAMETERS)}")
    bad = [p for p in per_joint if p not in ("joint_damping_scale", "gain_scale")]
    if bad:
        raise IdentificationError(f"per_joint: {bad[0]!r} is fitted as one value (per joint: joint_damping_scale, "
                                  "gain_scale)")
    if not (segment_s > 0 and max_latency >= 0):
        raise IdentificationError(f"segment_s must be > 0 and max_latency >= 0, got {segment_s}, {max_latency}")
    t_start, cpu_start = time.perf_counter(), time.process_time()
    evals0 = model.evaluations
    length = max(2, int(round(segment_s / data.period)))
    lat_max = max_latency if "action_latency" in fit else 0
    segments = segments_of(data, length, lat_max)
    if len(segments) < 2:
        raise IdentificationError(f"the recording holds {data.duration_s:.2f} s of consecutive states and commands: "
                                  f"too short for identification (needs at least 2 segments of {length * data.period:g} s "
                                  f"after the first {(lat_max + 1) * data.period:g} s)")
    layout = _Layout(tuple(fit), len(data.names), tuple(per_joint))
    full = _Problem(model, data, segments, layout, velocity_weight)
    x0 = layout.x0()
    rms_nominal = full.rms(full.residual(x0, 0))
    x, best, tried = x0, 0, {}
    if lat_max:
        pick = np.unique(np.linspace(0, len(segments) - 1, min(len(segments), screen_segments)).round().astype(int))
        screen = _Problem(model, data, [segments[i] for i in pick], layout, velocity_weight)
        fits = {}
        for L in range(lat_max + 1):
            fits[L] = screen.solve(x0, L, 3)
            tried[L] = screen.rms(fits[L].fun)
            if progress is not None:
                progress(f"latency {L} periods: rms {tried[L] * 1e3:.3f} mrad")
        best = min(fits, key=lambda L: fits[L].cost)
        x = fits[best].x
    res = full.solve(x, best, max_iterations)
    J = full.jacobian(res.x, best, res.fun)
    dof = max(1, res.fun.size - res.x.size)
    cov = (2.0 * res.cost / dof) * np.linalg.pinv(J.T @ J)
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    values, std = layout.named(res.x), layout.named(sd)
    std = {k: (np.asarray(v) if np.ndim(v) else float(v)) for k, v in std.items()}
    if "action_latency" in fit:
        values["action_latency"], std["action_latency"] = best, 0.0
    if progress is not None:
        progress(f"fitted: rms {full.rms(res.fun) * 1e3:.4f} mrad (nominal {rms_nominal * 1e3:.3f} mrad), "
                 f"{res.nfev} iterations")
    return FitResult(values, std, best, full.rms(res.fun), rms_nominal, tried, model.evaluations - evals0,
                     time.perf_counter() - t_start, segments, time.process_time() - cpu_start)


def replay_curves(model: ReplayModel, data: ReplayData, segments, values: dict, latency: int = 0):
    """Predicted observed positions over `segments` (stacked) under `values` (a FitResult's, or {}
    for the nominal model), and the rows of `data` they predict."""
    v = {k: x for k, x in values.items() if k in ("link_mass_scale", "joint_damping_scale", "gain_scale")}
    offsets = values.get("encoder_offset", np.zeros(len(data.names)))
    q, _ = model.simulate(data, segments, v, latency, offsets)
    rows = np.concatenate([np.arange(k0 + 1, k0 + n + 1) for k0, n in segments])
    return q, rows
