"""PD gains for a simulated robot's joints, from its URDF (`propose_gains`), and their check in
the simulator through the safety layer (`verify_gains`), as `s2r tune` runs them.

Each joint is treated as a second-order system I s^2 + (kd + c) s + kp with the inertia I it
reflects at the home posture (the diagonal of the joint-space mass matrix, every other joint
held) and the joint's viscous damping c (the robot description's joint_damping, else the URDF's),
which pybullet applies on top of the PD torque:
kp = I w^2 and kd = 2 zeta I w - c give the closed-loop bandwidth w and damping ratio zeta. Where
c alone damps more than that (kd would be negative), kd = 0 and kp = c w - I w^2 puts the slower
of the two real poles at w. c also makes a joint moving at speed v lag its set-point by c v / kp
(the PD's kd (qd_ref - qd) feeds no speed forward against it), so kp is raised to at least
2 c v_max / hil.tracking_tolerance: at its velocity limit a joint lags by at most half the
tolerance. Two bounds then lower w where needed:
- the physics step: the torque loop and pybullet's joint damping act explicitly once per
  physics step dt, so damping changes a joint's speed by (kd + c) dt / I of itself per step; at 1
  or more it reverses the speed in one step and the joint chatters or diverges. I here is the
  smallest inertia the joint can see (every other joint free: 1 / (M^-1)_ii), and proposals keep
  (kd + c) dt / I <= 0.5. A joint whose damping alone breaks this needs a higher sim.physics_hz;
- the effort limit: the safety layer lets a position set-point lead the measured position by up
  to `lead` (three of its per-period steps), and kp * lead must stay within the joint's effort
  limit, or the PD saturates exactly when it must catch up.

`verify_gains` takes any connected robot behind the safety layer (lockstep sim in `s2r tune`) and
measures, per joint: chatter while held, the overshoot of a step (which the safety layer ramps, as
it does every command), the largest error of the HIL suite's slow joint sweep
(s2r/hil/test_hil.py), and, for the joint nearest a limit, the HIL limit test's drive into it (the
safety layer's speed stop must not trip, the joint must end within the tolerance of the limit);
all against the config's `hil.tracking_tolerance`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pybullet as p

from s2r.core.joint_limiter import JointLimiter
from s2r.core.types import Command

from .robot_draw import model_joint_damping
from .simulation import Simulation

DEFAULT_BANDWIDTH_HZ = 5.0      # closed-loop bandwidth the proposals aim at (s2r tune --bandwidth)
DEFAULT_DAMPING = 1.0           # damping ratio zeta (critically damped)
MAX_DAMPING_STEP = 0.5          # proposals keep (kd + c) dt / I at most this
UNSTABLE_DAMPING_STEP = 1.0     # (kd + c) dt / I at or above this: unstable at the physics step
SWEEP_FREQUENCY = 0.25          # Hz, the HIL suite's test_tracking_of_a_joint_sweep
SETTLE_S = 0.75                 # how long a step is watched after its ramp ends
HOLD_S = 0.5                    # how long the robot holds home first (its second half shows chatter)


@dataclass(frozen=True)
class JointGains:
    """One joint's gains and where they come from."""
    index: int                  # position in the config's joints
    name: str
    inertia: float              # reflected inertia at home, others held (M_ii), kg m^2 or kg
    inertia_free: float         # ... every other joint free (1 / (M^-1)_ii): the stability bound's
    passive_damping: float      # the joint's damping c, which pybullet applies (N m s/rad or N s/m)
    kp: float
    kd: float
    bound: str = ""             # the bound that moved kp/kd from the bandwidth's: "physics step",
                                # "damping lag" (kp raised), "effort limit" (kp lowered)

    def damping_step(self, dt: float) -> float:
        """(kd + c) dt / I: the fraction of its speed one physics step's damping takes from the joint."""
        return (self.kd + self.passive_damping) * dt / self.inertia_free

    @property
    def bandwidth_hz(self) -> float:
        """The slower closed-loop pole of I s^2 + (kd + c) s + kp (its natural frequency when the
        poles are complex), in Hz."""
        I, D, kp = self.inertia, self.kd + self.passive_damping, self.kp
        disc = D * D - 4 * I * kp
        w = math.sqrt(kp / I) if disc < 0 else (D - math.sqrt(disc)) / (2 * I)
        return w / (2 * math.pi)


@dataclass
class JointCheck:
    """What `verify_gains` measured on one joint (rad or m)."""
    gains: JointGains
    step: float = 0.0               # the step commanded
    overshoot: float = 0.0          # furthest past the step's target, in the step's direction
    settle_error: float = 0.0       # |q - target| at the end of the step
    ripple: float = 0.0             # peak-to-peak of q while held: at home, and at the end of its step
    rest_speed: float = 0.0         # the largest |qd| measured meanwhile (a chattering joint's q can look still)
    sweep_error: float = 0.0        # max |q - set-point one period earlier| over the sweep
    limit_stops: int = 0            # commands the speed stop refused while it drove into its nearer limit
    limit_error: float | None = None  # |q - limit| at the end of that drive (None: not this joint)
    unstable: str = ""              # why the joint is unstable, if it is
    failure: str = ""               # what failed and what to change ("" = passed)
    kind: str = ""                  # ... in a word or two: unstable, speed stop, overshoot, sweep error, ...

    @property
    def passed(self) -> bool:
        return not self.failure


def joint_dynamics_at_home(cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M_ii, 1 / (M^-1)_ii, the joint damping) per configured joint, at the robot
    description's home posture within the configured limits (where the sim driver starts), from
    pybullet's mass matrix of the URDF."""
    sim = Simulation(cfg.sim.physics_hz)
    try:
        robot = sim.add_robot(cfg.robot_description(), cfg.joint_names, [j.kp for j in cfg.joints],
                              [j.kd for j in cfg.joints], [j.limits.effort for j in cfg.joints],
                              cfg.sim.gravity_compensation)
        spec = cfg.spec()
        robot.reset(np.clip(robot.q_home, spec.lower, spec.upper))
        q_all, _ = robot.joint_state()
        M = np.array(p.calculateMassMatrix(robot.body, [float(x) for x in q_all], physicsClientId=sim.client))
        c = model_joint_damping(robot)          # the description's, else the URDF's
    finally:
        sim.close()
    sel = [robot.all_idx.index(i) for i in robot.idx]
    return np.diag(M)[sel].copy(), 1.0 / np.diag(np.linalg.inv(M))[sel], c


def setpoint_lead(cfg) -> np.ndarray:
    """Per joint, how far the safety layer lets a position set-point lead the measured position."""
    return JointLimiter.for_robot(cfg.spec(), cfg.safety).lead


def joint_indices(cfg, joints=None) -> list[int]:
    """Indices of `joints` (names; None: all) in the config's joint order. An unknown name is a
    ValueError listing the config's joints."""
    if not joints:
        return list(range(len(cfg.joints)))
    names = list(cfg.joint_names)
    unknown = [j for j in joints if j not in names]
    if unknown:
        raise ValueError(f"--joints: {', '.join(unknown)} not in {cfg.name}'s joints ({', '.join(names)})")
    return [names.index(j) for j in dict.fromkeys(joints)]


def propose_gains(cfg, bandwidth_hz: float = DEFAULT_BANDWIDTH_HZ, damping: float = DEFAULT_DAMPING,
                  joints=None) -> list[JointGains]:
    """Gains for `joints` (names; None: all) of the config's robot, rounded to three significant
    digits as they are written to YAML. See the module docstring for the rule and its bounds."""
    if not (math.isfinite(bandwidth_hz) and bandwidth_hz > 0):
        raise ValueError(f"--bandwidth: must be a positive number of Hz, got {bandwidth_hz}")
    if not (math.isfinite(damping) and damping > 0):
        raise ValueError(f"--damping: must be a positive damping ratio, got {damping}")
    idx = joint_indices(cfg, joints)
    inertia, free, passive = joint_dynamics_at_home(cfg)
    dt = 1.0 / cfg.sim.physics_hz
    lead = setpoint_lead(cfg)
    v_max = cfg.spec().max_velocity * cfg.safety.velocity_scale
    out = []
    for i in idx:
        I, If, c = float(inertia[i]), float(free[i]), float(passive[i])
        w, bound = 2 * math.pi * bandwidth_hz, ""
        if c * dt / If >= MAX_DAMPING_STEP:
            bound = "physics step"          # the joint's damping alone: kd = 0 below, sim.physics_hz decides
        else:
            w_step = MAX_DAMPING_STEP * If / (2 * damping * I * dt)      # (kd + c) dt / If <= MAX_DAMPING_STEP
            if w_step < w:
                w, bound = w_step, "physics step"
        kp, kd = _pd(I, c, w, damping)
        kp_lag = 2 * c * v_max[i] / cfg.hil.tracking_tolerance                # c v / kp <= tolerance / 2
        if kp < kp_lag:
            kp, kd, bound = kp_lag, max(0.0, 2 * damping * math.sqrt(kp_lag * I) - c), "damping lag"
        kp_max = cfg.joints[i].limits.effort / lead[i]                   # kp lead <= effort
        if kp > kp_max:
            kp, bound = kp_max, "effort limit"
            kd = max(0.0, 2 * damping * math.sqrt(kp * I) - c)
        kd_max = max(0.0, MAX_DAMPING_STEP * If / dt - c)                 # kp raised above: kd follows it
        if kd > kd_max:
            kd, bound = kd_max, "physics step"
        kp_shown = round_sig(kp, down=kp >= kp_max)                      # rounding keeps the effort bound
        out.append(JointGains(i, cfg.joints[i].name, I, If, c, kp_shown, round_sig(kd, down=kd >= kd_max), bound))
    return out


def _pd(I: float, c: float, w: float, zeta: float) -> tuple[float, float]:
    """(kp, kd) for bandwidth w and damping ratio zeta of I s^2 + (kd + c) s + kp; when c alone
    damps more than zeta asks, kd = 0 and the slower real pole is put at w."""
    kd = 2 * zeta * I * w - c
    if kd > 0:
        return I * w * w, kd
    return max(I * w * w, c * w - I * w * w), 0.0


def current_gains(cfg, joints=None) -> list[JointGains]:
    """The config's own gains of `joints` (None: all), with the inertias they act on."""
    inertia, free, passive = joint_dynamics_at_home(cfg)
    return [JointGains(i, cfg.joints[i].name, float(inertia[i]), float(free[i]), float(passive[i]),
                       cfg.joints[i].kp, cfg.joints[i].kd)
            for i in joint_indices(cfg, joints)]


def with_gains(cfg, gains) -> object:
    """The config with `gains` (JointGains) in place of its joints' kp/kd."""
    by_index = {g.index: g for g in gains}
    joints = tuple(replace(j, kp=by_index[i].kp, kd=by_index[i].kd) if i in by_index else j
                   for i, j in enumerate(cfg.joints))
    return replace(cfg, joints=joints)


def round_sig(x: float, digits: int = 3, down: bool = False) -> float:
    """x >= 0 to `digits` significant digits (what the YAML shows is what is verified); `down`:
    never above x, for a value at a bound."""
    if not x:
        return 0.0
    unit = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    return float(f"{(math.floor(x / unit) if down else round(x / unit)) * unit:.{digits}g}")


# ------------------------------------------------------------------------------- verification
def verify_gains(robot, cfg, gains, name: str = "") -> list[JointCheck]:
    """Check `gains` (those `robot` runs: a connected SafetyLayer over the sim driver with
    `with_gains(cfg, gains)`, in lockstep) joint by joint: stability at the physics step, chatter
    while held at home, a step from home, the drive into a limit of the checked joint nearest one,
    then the HIL sweep of every checked joint at once. `name`: the config's name, for the hints.
    Returns one JointCheck per gain, `failure` and `kind` set on those that fail."""
    tol = cfg.hil.tracking_tolerance
    dt = 1.0 / cfg.sim.physics_hz
    checks = [JointCheck(g) for g in gains]
    for c in checks:
        b = c.gains.damping_step(dt)
        if b >= UNSTABLE_DAMPING_STEP:
            g = c.gains
            c.unstable = (f"unstable at the physics step: (kd + c)*dt/I = {b:.2g} >= {UNSTABLE_DAMPING_STEP:g} "
                          f"(kd {g.kd:g}, damping c {g.passive_damping:g}, I {g.inertia_free:.3g}, "
                          f"dt {dt * 1e3:g} ms)")
    q0 = robot.read().q
    amp = _amplitudes(robot, cfg, q0)
    held = [st for st, _ in _stream(robot, int(HOLD_S * cfg.control_rate_hz), lambda k: q0)]
    held = held[len(held) // 2:]
    for c in checks:
        j = c.gains.index
        c.ripple = float(np.ptp([st.q[j] for st in held]))
        c.rest_speed = float(max(abs(st.qd[j]) for st in held))
    for c in checks:
        _step(robot, cfg, q0, amp, c)
    # the HIL limit test's joint: the one nearest a limit (driving every joint into its limits would
    # run some arms into the floor)
    spec = robot.spec
    room = np.minimum(q0 - spec.lower, spec.upper - q0)
    _limit_approach(robot, cfg, q0, min(checks, key=lambda c: room[c.gains.index]))
    _sweep(robot, cfg, q0, amp, checks)
    for c in checks:
        v_max = robot.spec.max_velocity[c.gains.index]
        c.kind, c.failure = _failure(c, tol, dt, v_max, name or cfg.name)
    return checks


def first_failure(checks) -> JointCheck | None:
    """The failing check to report first: an unstable joint (it disturbs every other one), then
    the others in joint order."""
    failed = [c for c in checks if not c.passed]
    unstable = [c for c in failed if c.kind == "unstable"]
    return (unstable or failed or [None])[0]


def _amplitudes(robot, cfg, q0) -> np.ndarray:
    """The HIL suite's sweep amplitude per joint (`sweep_amplitudes` in s2r/hil/test_hil.py):
    hil.sweep_amplitude, or 40 % of the room to the nearer limit."""
    spec = robot.spec
    room = np.minimum(q0 - spec.lower, spec.upper - q0)
    return np.minimum(cfg.hil.sweep_amplitude, 0.4 * np.maximum(room, 0.0))


def _stream(robot, periods: int, target_fn) -> list:
    """Command target_fn(k) for `periods` control periods (lockstep: each write is one period);
    returns [(state, command)] with the state read before each command."""
    log = []
    for k in range(periods):
        st = robot.read()
        cmd = target_fn(k)
        robot.write(Command.position(cmd))
        log.append((st, cmd))
    return log


def _step(robot, cfg, q0, amp, c: JointCheck) -> None:
    """Joint j alone to q0 + a step (toward the side with more room), held, then back."""
    spec, j = robot.spec, c.gains.index
    d = amp[j] if spec.upper[j] - q0[j] >= q0[j] - spec.lower[j] else -amp[j]
    c.step = float(abs(d))
    if d == 0:
        return
    a = spec.max_acceleration[j] * cfg.safety.velocity_scale
    v = spec.max_velocity[j] * cfg.safety.velocity_scale
    ramp = 2 * math.sqrt(abs(d) / a) + abs(d) / v          # accelerate, (cruise), brake
    periods = int(math.ceil((ramp + SETTLE_S) * cfg.control_rate_hz))
    target = q0.copy()
    target[j] += d
    log = _stream(robot, periods, lambda k: target)
    q = np.array([st.q[j] for st, _ in log] + [robot.read().q[j]])
    qd = np.array([st.qd[j] for st, _ in log])
    s = math.copysign(1.0, d)
    c.overshoot = float(max(0.0, np.max(s * (q - target[j]))))
    c.settle_error = float(abs(q[-1] - target[j]))
    n_tail = max(2, int(0.2 * cfg.control_rate_hz))
    c.ripple = max(c.ripple, float(np.ptp(q[-n_tail:])))
    c.rest_speed = max(c.rest_speed, float(np.max(np.abs(qd[-n_tail:]))))
    _stream(robot, periods, lambda k: q0)
    if not np.all(np.isfinite(q)):
        c.unstable = c.unstable or "diverged (non-finite position)"


def _limit_approach(robot, cfg, q0, c: JointCheck) -> None:
    """As the HIL suite's limit test: the joint alone commanded 0.3 past its nearer limit for as long
    as the step limit's speed takes there plus 1 s, then back. A joint whose speed lags its
    braking set-point trips the speed stop, whose envelope reaches only limit_margin further."""
    spec, j = robot.spec, c.gains.index
    up = spec.upper[j] - q0[j] <= q0[j] - spec.lower[j]
    limit = spec.upper[j] if up else spec.lower[j]
    beyond = q0.copy()
    beyond[j] = limit + (0.3 if up else -0.3)
    step = min(cfg.safety.max_position_step, spec.max_velocity[j] * cfg.safety.velocity_scale * spec.period)
    periods = int(math.ceil((abs(limit - q0[j]) / step * spec.period + 1.0) * cfg.control_rate_hz))
    stops = robot.counters.rejected_speed
    _stream(robot, periods, lambda k: beyond)
    c.limit_error = float(abs(robot.read().q[j] - limit))
    c.limit_stops = robot.counters.rejected_speed - stops
    _stream(robot, periods, lambda k: q0)


def _sweep(robot, cfg, q0, amp, checks) -> None:
    """The HIL sweep q0 + amp sin^2(pi f t) of the checked joints (the others hold), each
    measurement compared with the set-point sent one period earlier."""
    mask = np.zeros(len(q0))
    for c in checks:
        mask[c.gains.index] = 1.0
    a = amp * mask
    rate = cfg.control_rate_hz
    periods = int(round(rate / SWEEP_FREQUENCY))
    log = _stream(robot, periods, lambda k: q0 + a * np.sin(np.pi * SWEEP_FREQUENCY * k / rate) ** 2)
    err = np.max([np.abs(log[k][0].q - log[k - 1][1]) for k in range(1, len(log))], axis=0)
    for c in checks:
        c.sweep_error = float(err[c.gains.index])
    _stream(robot, int(rate), lambda k: q0)


def _failure(c: JointCheck, tol: float, dt: float, v_max: float, name: str) -> tuple[str, str]:
    """(kind, what failed on this joint and what to change), or ("", "")."""
    g = c.gains
    tune = f"`s2r tune {name}`"
    if c.unstable:
        own = g.passive_damping * dt / g.inertia_free          # what the joint's damping alone takes per step
        if own >= UNSTABLE_DAMPING_STEP:
            hz = g.passive_damping / (MAX_DAMPING_STEP * g.inertia_free)
            up = 10.0 ** (math.floor(math.log10(hz)) - 1)               # 2 significant digits, up
            return "unstable", (f"{g.name} {c.unstable}: raise sim.physics_hz to >= {math.ceil(hz / up) * up:g} "
                                "or lower the robot description's joint_damping (the joint's damping alone is "
                                "unstable; kd cannot help)")
        kd_max = MAX_DAMPING_STEP * g.inertia_free / dt - g.passive_damping
        if kd_max <= 0:
            return "unstable", (f"{g.name} {c.unstable}: lower kd to 0 (the joint's damping alone already takes "
                                f"{own:.2g} of the speed per step; {tune}) or raise sim.physics_hz")
        return "unstable", f"{g.name} {c.unstable}: lower kd to <= {round_sig(kd_max, down=True):g} ({tune}) " \
                           "or raise sim.physics_hz"
    if c.ripple > tol:
        return "unstable", (f"{g.name} unstable: oscillates {c.ripple:.3g} rad peak-to-peak while held (kp {g.kp:g}, "
                            f"kd {g.kd:g}): lower kp and kd ({tune})")
    if c.rest_speed > v_max:
        return "unstable", (f"{g.name} unstable: chatters at {c.rest_speed:.3g} rad/s while held, above its velocity "
                            f"limit {v_max:g} (kp {g.kp:g}, kd {g.kd:g}): lower kd ({tune})")
    if c.limit_stops:
        return "speed stop", (f"{g.name} trips the safety layer's speed stop {c.limit_stops} times driving into its "
                              f"limit (its speed lags the set-point braking there): raise kd or the bandwidth "
                              f"({tune} --damping/--bandwidth), lower limits.acceleration or raise safety.limit_margin")
    if c.overshoot > tol:
        return "overshoot", (f"{g.name} overshoots a {c.step:.3g} rad step by {c.overshoot:.3g} rad > "
                             f"hil.tracking_tolerance {tol:g} rad: raise kd or lower kp ({tune})")
    if c.sweep_error > tol:
        return "sweep error", (f"{g.name} max sweep tracking error {c.sweep_error:.3g} rad > hil.tracking_tolerance "
                               f"{tol:g} rad: raise its kp/kd ({tune}) or the tolerance")
    if c.limit_error is not None and c.limit_error > tol:
        return "short of limit", (f"{g.name} stops {c.limit_error:.3g} rad from its limit > hil.tracking_tolerance "
                                  f"{tol:g} rad: set-points stop safety.limit_margin inside, keep it below the "
                                  f"tolerance; a lagging joint needs more kp ({tune})")
    if c.settle_error > tol:
        return "short of target", (f"{g.name} stops {c.settle_error:.3g} rad short of a step's target > "
                                   f"hil.tracking_tolerance {tol:g} rad: raise kp ({tune})")
    return "", ""
