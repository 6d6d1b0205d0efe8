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

The model of the command stream is the sim driver's (drivers/sim_driver.py): a position set-point
is reached by linear interpolation from where the reference is when it takes over, over a period
plus what is left of the previous ramp (over longer where the step exceeds the velocity limit),
tracked by the joint PD on top of gravity compensation by the robot's model as loaded (a link
mass scale other than 1 shows as sag under the PD, as on the robot). Timing comes from the
recording's stamps, not the order messages arrived in: each command takes over at the physics step
it was accepted at (plus the latency), each state is predicted at the step it was sampled at, so a real-time run
(commands landing part-way through a period, periods of varying length) replays as it ran. A
segment starts at a recorded state (less the offsets) with the reference where the command
stream had it. Residuals: the predicted minus the recorded positions (plus the offsets), and
velocities weighted by `velocity_weight` (s). Segments the fit explains OUTLIER_RATIO times worse
than the median one (something unmodeled happened there) are left out and the fit repeated.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .robots import MODE_POSITION, RobotNominal, apply_robot_draw

FIT_PARAMETERS = ("link_mass_scale", "joint_damping_scale", "gain_scale", "encoder_offset", "action_latency")
SCALE_BOUNDS = (0.05, 20.0)
OFFSET_BOUND = 0.5           # rad
OUTLIER_RATIO = 4.0          # a segment's rms over the median one's: left out of the fit
STREAM_STARTS_TOPIC = "/driver/stream_starts"   # `s2r excite` on the simulator: where position streams started


class IdentificationError(ValueError):
    """A recording or a request identification cannot work with; one line naming what is wrong."""


@dataclass
class ReplayData:
    """A recorded run as one row per control period k: the state read at the period's start
    (`q`, `qd`; n_periods + 1 rows) and the position set-point sent after it (`u`, NaN where
    none was), in the robot's joint order `names`; `period` in seconds. Timing, on the robot's
    clock (the message stamps): the time that passed between consecutive states (`elapsed`: a
    real-time loop's periods vary) and from each state to its command's taking over (`lead`: in
    real time a command lands part-way through a period), which the replay simulates."""
    names: tuple
    q: np.ndarray
    qd: np.ndarray
    u: np.ndarray
    period: float
    elapsed: np.ndarray | None = None     # s between consecutive states (None: `period` each)
    lead: np.ndarray | None = None        # s from state k to command k (None: 0 each)
    starts: np.ndarray | None = None      # s after state 0: position streams started (ramped from the
                                          # measured position) there, not only at the first command

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
        """Pair each command with the state recorded just before it: a period is one state
        followed by one command. Timing comes from the stamps: a state's header stamp (the time
        it was sampled at, where it is on the recording's clock: within 0.5 s of the message
        times), a command's message time (when it was sent; `s2r excite` stamps both on the
        robot's clock, the simulator's physics time). States and commands are put in
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
        arrived = np.array([s for _, s, _ in rec.raw_messages([state_topic])], np.int64)
        sampled = sample_times(arrived, js["stamp"])
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
        cmd_t = np.array(cmd_t, np.int64)
        i = np.searchsorted(arrived, cmd_t, side="right") - 1
        u = np.full((len(arrived), len(names)), np.nan)
        lead = np.zeros(len(arrived))
        seen = np.zeros(len(arrived), int)
        for k, v, t in zip(i, cmds, cmd_t):
            if k >= 0:
                u[k] = v
                lead[k] = (t - sampled[k]) * 1e-9
                seen[k] += 1
        u[seen > 1] = np.nan          # two commands in one period: not a period of this model
        if np.isnan(qd).any():          # velocities not reported: differenced positions
            qd = np.where(np.isnan(qd), np.gradient(q, period, axis=0), qd)
        elapsed = np.maximum(np.diff(sampled) * 1e-9, 0.0)
        lead = np.clip(lead[:-1], 0.0, elapsed)      # a command takes over before the next state
        starts = None
        if STREAM_STARTS_TOPIC in rec.topics:
            starts = np.array([m.stamp.sec * 1_000_000_000 + m.stamp.nanosec - sampled[0]
                               for _, _, m in rec.messages([STREAM_STARTS_TOPIC])], float) * 1e-9
        return cls(tuple(names), q, qd, u[:-1], float(period), elapsed, lead, starts)


def sample_times(arrived, header_s) -> np.ndarray:
    """When each state was sampled (ns): its header stamp (`header_s`, s) where the header stamps
    run on the recording's clock (each within 0.5 s of its message time `arrived`, ns, and never
    going back), else the message times (a robot whose stamps run on another clock)."""
    header = np.round(np.asarray(header_s, float) * 1e9).astype(np.int64)
    if len(header) and np.all(np.abs(header - arrived) < 500_000_000) and np.all(np.diff(header) >= 0):
        return header
    return np.asarray(arrived, np.int64)


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
    nuisance: dict = field(default_factory=dict)   # fitted along to explain the motion, not this robot's values


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
        self._schedule_key, self._schedule = None, None

    def apply(self, values: dict) -> None:
        """The robot with these physics parameters (others nominal), via apply_robot_draw."""
        n = self.robot.n
        draw = {"link_mass_scale": np.full(self.n_links, float(values.get("link_mass_scale", 1.0))),
                "joint_damping_scale": np.broadcast_to(values.get("joint_damping_scale", 1.0), (n,)).astype(float),
                "gain_scale": np.broadcast_to(values.get("gain_scale", 1.0), (n,)).astype(float)}
        apply_robot_draw(self.simulation, self.robot, self.nominal, draw)

    def simulate(self, data: ReplayData, segments, values: dict, latency: int, offsets) -> tuple:
        """Predicted observed positions and velocities (stacked segment by segment: rows of
        periods k0+1 .. k0+len) for segments [(k0, len), ...]. Commands take over at the physics
        steps they did on the robot (`data.lead`, plus `latency` control periods), states are
        predicted at the steps they were sampled at (`data.elapsed`)."""
        self.apply(values)
        self.evaluations += 1
        robot, sim = self.robot, self.simulation
        S, A, start, ramp, restart = self.schedule(data, latency)
        u, dt = data.u, sim.dt
        offsets = np.asarray(offsets, float)
        qs, qds = [], []
        for k0, length in segments:
            robot.reset(data.q[k0] - offsets, data.qd[k0])
            pos = S[k0]
            j = int(np.searchsorted(A, pos, side="left")) - 1      # the last command before the start
            while j >= 0 and np.isnan(ramp[j]):
                j -= 1
            if j >= 0:                     # the reference where that command's ramp has it now
                el = (pos - A[j]) * dt
                if el >= ramp[j] - 1e-12:
                    robot.set_target(MODE_POSITION, u[j])
                else:
                    robot.set_target(MODE_POSITION, start[j] + (u[j] - start[j]) * (el / ramp[j]))
                    robot.set_target(MODE_POSITION, u[j], ramp[j] - el)
            ramp_end = A[j] * dt + ramp[j] if j >= 0 else -np.inf
            j += 1
            n_cmd = len(A)
            for k in range(k0 + 1, k0 + length + 1):
                while j < n_cmd and A[j] < S[k]:
                    if not np.isnan(ramp[j]):
                        if A[j] > pos:
                            sim.step(int(A[j] - pos))
                            pos = A[j]
                        ramp_end = self._command(u[j], pos * dt, ramp_end, A[j] in restart)
                    j += 1
                if S[k] > pos:
                    sim.step(int(S[k] - pos))
                    pos = S[k]
                q, qd, _ = robot.state()
                qs.append(q + offsets)
                qds.append(qd)
        return np.array(qs), np.array(qds)

    def _command(self, goal, now: float, ramp_end: float, restart: bool) -> float:
        """A position set-point taking over at `now` (s) as the sim driver's `_command` does it:
        ramped to from the reference (from the measured position where a stream starts), over a
        period plus what is left of the previous ramp (at most another period), no faster than
        the velocity limits. Returns when the ramp ends."""
        robot, T = self.robot, self.period
        if restart:
            robot.set_target(MODE_POSITION, robot.state()[0])
        backlog = 0.0 if restart else min(max(ramp_end - now, 0.0), T)
        fastest = float(np.max(np.abs(goal - robot.q_target) / self.vmax, initial=0.0))
        ramp = max(T + backlog, fastest if fastest > T * (1.0 + 1e-9) else T)
        robot.set_target(MODE_POSITION, goal, ramp)
        return now + ramp

    def schedule(self, data: ReplayData, latency: int) -> tuple:
        """The replay's timeline in physics steps: when each state was sampled (S, n_periods + 1)
        and each command took over (A), and the sim driver's interpolation of the command stream
        (drivers/sim_driver.py `_command`, `ReplayModel._command`): where the reference starts
        from (`start`: where the previous ramp has it, the recorded position where a stream
        started) and each ramp's length (`ramp`, s; NaN: no command), for a segment's start; the
        steps streams started at (`restart`)."""
        key = (data, int(latency))
        if self._schedule_key is not None and self._schedule_key[0] is data and self._schedule_key[1] == key[1]:
            return self._schedule
        dt, T = self.simulation.dt, self.period
        n = data.n_periods
        el = np.full(n, T) if data.elapsed is None else data.elapsed
        S = np.concatenate([[0], np.cumsum(np.maximum(0, np.round(el / dt)).astype(np.int64))])
        lead = np.zeros(n, np.int64) if data.lead is None else np.round(data.lead / dt).astype(np.int64)
        A = S[:-1] + lead + int(latency) * self.substeps
        restart = set() if data.starts is None else set(np.round(data.starts / dt).astype(np.int64).tolist())
        start, ramp = np.full(data.u.shape, np.nan), np.full(n, np.nan)
        streaming, ramp_end, prev, goal_p = False, 0.0, -1, None
        inv_vmax = 1.0 / self.vmax
        for k in range(n):
            goal = data.u[k]
            if np.isnan(goal).any():
                streaming = False
                continue
            t = A[k] * dt
            if streaming and A[k] not in restart:
                e = (A[k] - A[prev]) * dt
                s = goal_p if e >= ramp[prev] - 1e-12 else start[prev] + (goal_p - start[prev]) * (e / ramp[prev])
                backlog = min(max(ramp_end - t, 0.0), T)
            else:                            # a stream starts: from the measured position
                s, backlog = data.q[min(k + latency, n)], 0.0
            fastest = float(np.max(np.abs(goal - s) * inv_vmax, initial=0.0))
            ramp[k] = max(T + backlog, fastest if fastest > T * (1.0 + 1e-9) else T)
            start[k], ramp_end, prev, goal_p, streaming = s, t + ramp[k], k, goal, True
        self._schedule_key, self._schedule = key, (S, A, start, ramp, restart)
        return self._schedule


def segments_of(data: ReplayData, length: int, max_latency: int) -> list:
    """Consecutive segments (k0, length) where every state and the commands the segment needs
    (latency up to `max_latency` included) were recorded."""
    valid = ~np.isnan(data.u).any(axis=1) & ~np.isnan(data.q[:-1]).any(axis=1) & ~np.isnan(data.q[1:]).any(axis=1)
    if data.starts is not None and len(data.starts):
        # before a stream start the robot may have been stopping (its set-points overdue), which
        # the replay does not model, and a segment starting soon after it would start from a
        # reference ramped from a position known only up to the encoder offsets: two periods
        # before and ten after are left out
        t = np.concatenate([[0.0], np.cumsum(np.full(data.n_periods, data.period) if data.elapsed is None
                                             else data.elapsed)])
        near = np.zeros(data.n_periods, bool)
        for r in data.starts:
            near |= (t[1:] >= r - 2 * data.period) & (t[:-1] <= r + 10 * data.period)
        near[:np.searchsorted(t, data.starts.min() + 2 * data.period)] = False   # the first: a start
        valid &= ~near
    out, k0 = [], max_latency + 2
    while k0 + length <= data.n_periods:
        need = valid[k0 - 2 - max_latency:k0 + length]
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
    # segments the fitted model explains far worse than the others hold something it does not
    # model (a stop of the robot, a glitch of the recording): fitted again without them
    per_seg = np.sqrt(np.mean(res.fun[:full.nq].reshape(-1, length, len(data.names)) ** 2, axis=(1, 2)))
    keep = per_seg <= OUTLIER_RATIO * np.median(per_seg)
    if 2 <= keep.sum() < len(segments):
        segments = [sg for sg, kp in zip(segments, keep) if kp]
        if progress is not None:
            progress(f"left out {int((~keep).sum())} segment(s) the fit explains {OUTLIER_RATIO:g}x worse than most")
        full = _Problem(model, data, segments, layout, velocity_weight)
        res = full.solve(res.x, best, max_iterations)
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
