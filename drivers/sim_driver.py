"""The PyBullet driver: the simulated robot behind the same interface as the real ones.

Two clocks:
- real time (`realtime=True`, like a robot, for ROS): a thread steps physics one control period
  at a time on a steady clock (substep by substep, so other threads never wait long for it);
  read/write just exchange data with it.
- lockstep (`realtime=False`, for training and tests): every `write()` or `hold()` advances the
  simulation by exactly one control period, so the same commands give bit-identical states.

`hold()` is a controlled stop, as a robot's controller brakes on a stop command: each joint's
position reference decelerates from its motion to rest at the safety layer's planned rate
(`_StopPlan`), then holds there; so does the reference when position set-points stop coming. A
reference that jumps to rest instead brakes every moving joint as hard as its effort limit
allows, and that deceleration, far above what any command plans with, throws the joints coupled
to it past their limits.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

# first: `sim` imports pybullet without its banner
from sim.robots import (ACTUATOR_EFFECTS, MODE_EFFORT, MODE_POSITION, ROBOT_DYNAMICS, RobotNominal,  # noqa: I001
                        Simulation, apply_robot_draw, robot_model)

import pybullet as p  # noqa: E402

from s2r.core.yamlio import ConfigError, excerpt  # noqa: E402

from .base import Driver, DriverError, register_driver
from s2r.core.types import Command, CommandMode, DriverSpec, RobotState

# the randomization parameters (sim.randomization) the sim driver applies, `SimDriver.randomize`
DRIVER_RANDOMIZATION = ROBOT_DYNAMICS + ACTUATOR_EFFECTS + (
    "action_latency", "control_period_jitter", "action_noise", "action_bias", "joint_noise", "encoder_offset",
    "sensor_delay")


class _Reality:
    """One randomization draw on the driver's robot (`SimDriver.randomize`), and the per-step
    effects the sim tasks apply in their step loop, per control period of the driver:
    - `action_latency` N: commands take effect N control periods after they arrive;
    - `control_period_jitter`: a period simulates round(substeps * (1 + jitter)) physics substeps
      (the wall-clock period stays), as the tasks do per step;
    - `action_noise` + `action_bias` (normalized action units, times the config's
      `max_position_step`): added to the increment of every streamed position set-point, so they
      accumulate into the targets as they do into a task's commanded targets; reset when a stream
      starts;
    - `joint_noise` (per period), `encoder_offset`: added to the positions `read()` reports;
    - `sensor_delay` N: `read()` reports the state of N control periods ago.
    Per-step dynamics values are applied at each period's start. Per-joint values are drawn for
    the joints `joint_idx` (of the driver's n) and are neutral (scale 1, effect 0) on the others."""

    BLOCK = 64

    def __init__(self, randomizer, seed: int, dims: dict, step_scale: float, joint_idx, n_joints: int):
        from sim.randomization import PARAMETERS
        self.randomizer, self.dims = randomizer, dims
        self.joint_idx, self.n_joints = np.asarray(joint_idx, int), n_joints
        self._per_joint = {n: (1.0 if n in ("joint_damping_scale", "gain_scale", "torque_limit_scale") else 0.0)
                           for n in randomizer.params if PARAMETERS[n].shape in ("joints", "action")}
        self.rng = np.random.default_rng(seed)
        self.draw = self._expand(randomizer.sample_episode(self.rng, dims))
        self.current = dict(self.draw)
        self.latency = int(self.draw.get("action_latency", 0))
        self.sensor_delay = int(self.draw.get("sensor_delay", 0))
        self.per_step = randomizer.per_step_names()
        self.per_step_dynamics = [n for n in self.per_step if n in ROBOT_DYNAMICS]
        self.action_noise = "action_noise" in self.draw or "action_bias" in self.draw
        self.step_scale = step_scale
        self.offset = np.zeros(n_joints)           # accumulated action noise on the position targets
        self.pending: deque = deque()               # delayed commands: (due, command)
        self.states: deque = deque(maxlen=self.sensor_delay + 1)
        self.period = 0
        self._block, self._k = {}, self.BLOCK

    def next_period(self) -> dict:
        """This period's per-step values (drawn BLOCK periods at a time), now in `current`."""
        if not self.per_step:
            return {}
        if self._k == self.BLOCK:
            self._block, self._k = self.randomizer.sample_steps(self.rng, self.dims, self.BLOCK), 0
        values = self._expand({n: b[self._k] for n, b in self._block.items()})
        self._k += 1
        self.current.update(values)
        return values

    def _expand(self, values: dict) -> dict:
        """Per-joint values of the randomized joints as values of all the driver's joints."""
        for name, neutral in self._per_joint.items():
            if name in values:
                full = np.full(self.n_joints, neutral)
                full[self.joint_idx] = values[name]
                values[name] = full
        return values

    def noisy_target(self, values: np.ndarray, restart: bool) -> np.ndarray:
        """A position set-point with the action noise of this period added to its increment."""
        if restart:
            self.offset[:] = 0.0
        c = self.current
        self.offset += (c.get("action_noise", 0.0) + c.get("action_bias", 0.0)) * self.step_scale
        return np.asarray(values, float) + self.offset

    def observed(self, q, qd, tau):
        """What a read reports: delayed, with joint noise and encoder offsets."""
        if self.sensor_delay and self.states:
            q, qd, tau = self.states[0]
        c = self.current
        if "joint_noise" in c:
            q = q + c["joint_noise"]
        if "encoder_offset" in c:
            q = q + c["encoder_offset"]
        return q, qd, tau


class _StopPlan:
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


class SimDriver(Driver):
    name = "sim"

    def __init__(self, config, realtime: bool | None = None):
        self.config = config
        self.realtime = config.sim.realtime if realtime is None else realtime
        self._spec = config.spec()
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._connected = False
        self.simulation: Simulation | None = None
        self.sim = None     # the SimRobot, once connected
        self.stats = dict(missed_periods=0)   # real time: control periods the stepping thread fell behind
        self._stopping: _StopPlan | None = None   # a controlled stop in progress (`hold`)
        self._stream: tuple | None = None          # the last position set-point: (goal, its speed, when overdue)
        self._reality: _Reality | None = None      # a randomization draw (`randomize`)

    @property
    def spec(self) -> DriverSpec:
        return self._spec

    def clock(self) -> float:
        if self.realtime or self.simulation is None:
            return time.monotonic()
        return self.simulation.time

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Load the config's robot model. A model that lacks a configured joint, or a camera's
        parent link, is a ConfigError naming that key; a model that does not load, a DriverError."""
        if self._connected:
            return
        # Start inside the configured limits even if the model's home posture is not.
        self._start_physics(None)
        self._connected = True

    def _start_physics(self, q, qd=None) -> None:
        cfg = self.config
        self.simulation = Simulation(cfg.sim.physics_hz)
        self._substeps = max(1, round(cfg.sim.physics_hz / cfg.control_rate_hz))
        try:
            self.sim = self._load_robot()
        except BaseException:
            self.simulation.close()
            self.simulation = None
            raise
        self.sim.reset(np.clip(self.sim.q_home if q is None else q, self._spec.lower, self._spec.upper), qd)
        if self._reality is not None:          # a restarted physics server keeps the robot's draw
            self._apply_draw()
        self._last_q, self._last_qd = self.sim.q_target.copy(), np.zeros(self._spec.n_joints)
        self._stopping = self._stream = None
        if self.realtime:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sim-driver", daemon=True)
            self._thread.start()

    def _load_robot(self):
        cfg = self.config
        try:
            model = robot_model(cfg.robot)
        except ValueError as e:
            raise ConfigError(cfg.path, "robot", str(e)) from None
        try:
            sim = self.simulation.add_robot(
                model, cfg.joint_names,
                kp=[j.kp for j in cfg.joints], kd=[j.kd for j in cfg.joints],
                effort_limits=[j.limits.effort for j in cfg.joints],
                gravity_compensation=cfg.sim.gravity_compensation)
        except p.error as e:
            raise DriverError(f"{cfg.path}: robot: cannot load the {cfg.robot!r} model "
                              f"({excerpt(model.urdf, 200)}): {e}") from None
        except ValueError as e:
            # the model lacks a configured joint: name the first one by its config key
            model_joints = _movable_joints(self.simulation.client, model.urdf, model.urdf_flags)
            for i, name in enumerate(cfg.joint_names):
                if name not in model_joints:
                    raise ConfigError(cfg.path, f"joints[{i}].name",
                                      f"the {cfg.robot!r} robot model has no joint {excerpt(name)} (its movable "
                                      f"joints: {_cut(', '.join(model_joints))})") from None
            raise DriverError(f"{cfg.path}: robot: {_cut(str(e))}") from None
        for i, cam in enumerate(cfg.cameras):
            if cam.parent != "world":
                try:
                    sim.link_pose(cam.parent)
                except ValueError:
                    raise ConfigError(cfg.path, f"cameras[{i}].extrinsics.parent",
                                      f"the {cfg.robot!r} robot model has no link {excerpt(cam.parent)}") from None
        return sim

    def reset_fault(self) -> None:
        """After the physics server died: a new one, with the robot where it was last measured
        (like a robot whose controller restarted), at rest."""
        if not self._connected or p.isConnected(self.simulation.client):
            return
        self._stop_stepping()
        with self._lock:
            self._start_physics(self._last_q)

    def kill_physics(self) -> None:
        """Fault injection for tests and the HIL suite: the physics server disappears, as a bus
        does when it is unplugged. Reads and writes then raise DriverError until reset_fault()."""
        with self._lock:
            p.disconnect(self.simulation.client)

    def disconnect(self) -> None:
        if not self._connected:
            return
        self._stop_stepping()
        with self._lock:
            self.simulation.close()
            self._connected = False

    def _stop_stepping(self) -> None:
        """Stop the real-time stepping thread, if any."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    # ------------------------------------------------------------------ io
    def read(self) -> RobotState:
        self._require_connected()
        with self._lock:
            try:
                q, qd, tau = self.sim.state()
            except p.error as e:
                raise _physics_error(e) from None
            self._last_q, self._last_qd = q, qd
            if self._reality is not None:
                q, qd, tau = self._reality.observed(q, qd, tau)
            sim_time = self.simulation.time
            return RobotState(time.monotonic() if self.realtime else sim_time, q, qd, tau, {"sim_time": sim_time})

    def write(self, command: Command) -> None:
        self._require_connected()
        with self._lock:
            try:
                r = self._reality
                if r is not None and r.latency:     # applied `action_latency` periods from now
                    due = r.period + r.latency if not self.realtime else \
                        self.simulation.steps + r.latency * self._substeps
                    r.pending.append((due, command))
                else:
                    self._command(command)
                if not self.realtime:
                    self._step_period()
            except p.error as e:
                raise _physics_error(e) from None

    def _command(self, command: Command) -> None:
        """Apply a command now (the lock held)."""
        streaming = self._stream is not None and self.sim.mode == MODE_POSITION
        self._stopping = self._stream = None
        if command.mode is CommandMode.POSITION:
            T = self._spec.period
            if not streaming:
                # the first set-point after another mode, a hold or a gap in the stream
                # is reached along a ramp from the measured position (where the safety
                # layer plans it from), not as a step that leaves the joints' speed out
                # (braking every moving joint as hard as it can) nor from wherever a
                # stop left the reference
                self.sim.set_target(MODE_POSITION, self.sim.state()[0])
            start = self.sim.q_target
            values = command.values
            r = self._reality
            if r is not None and r.action_noise:
                values = np.clip(r.noisy_target(values, not streaming), self._spec.lower, self._spec.upper)
            self.sim.set_target(MODE_POSITION, values, T)
            goal = np.array(values, float)
            # a stream is over once its set-point is half a period overdue
            due = self.simulation.time + (1.5 if self.realtime else 1.0) * T
            self._stream = (goal, (goal - start) / T, due - 1e-9)
        else:
            self.sim.set_target(command.mode.value, command.values, self._spec.period)

    def hold(self) -> None:
        """Stop under control and hold where the joints come to rest: the reference decelerates
        from its own motion (from the measured motion after effort commands). A hold
        while a stop is under way continues it: planned again from the measured motion, the
        reference would give up the distance the joints lag it by at each call, and a caller
        holding every period would never stop them."""
        self._require_connected()
        with self._lock:
            try:
                self._end_of_stream()
                self._stream = None
                if self._reality is not None:     # commands still in flight never arrive after a stop
                    self._reality.pending.clear()
                if not self._stop_in_progress():
                    if self.sim.mode == MODE_EFFORT:
                        q, qd, _ = self.sim.state()
                    else:   # the reference, not the joints: the controller's error stays as it was
                        q, qd = self.sim.q_target.copy(), np.array(self.sim.qd_target, float)
                    sp = self._spec
                    self._stopping = _StopPlan(q, qd, sp.lower, sp.upper, sp.max_acceleration)
                    self.sim.set_target(MODE_POSITION, q)     # from there, at rest ...
                self._stop_tick()                              # ... the reference follows the plan
                if not self.realtime:
                    self._step_period()
            except p.error as e:
                raise _physics_error(e) from None

    def step(self, n_periods: int = 1) -> None:
        """Lockstep only: advance n control periods without a new command."""
        self._require_connected()
        with self._lock:
            try:
                for _ in range(n_periods):
                    if self._stream is None and self._stopping is None:
                        self._step_period()
                        continue
                    self._end_of_stream()
                    self._stop_tick()
                    self._step_period()
            except p.error as e:
                raise _physics_error(e) from None

    def _end_of_stream(self) -> None:
        """A position set-point reached and no new one: set-points have stopped coming, and the
        robot stops under control from the set-point's motion (a reference that stays at the
        set-point would stop every moving joint dead)."""
        if self._stream is None or self._stopping is not None:
            return
        goal, velocity, due = self._stream
        if self.simulation.time >= due and self.sim.mode == MODE_POSITION \
                and np.array_equal(self.sim.q_target, goal):
            sp = self._spec
            self._stream = None
            self._stopping = _StopPlan(goal, velocity, sp.lower, sp.upper, sp.max_acceleration)

    def _stop_in_progress(self) -> bool:
        """A stop is under way and the reference still follows it."""
        plan = self._stopping
        return plan is not None and self.sim.mode == MODE_POSITION and (
            np.array_equal(self.sim.q_target, plan.q0 if plan.goal is None else plan.goal))

    def _stop_tick(self) -> None:
        """Once the reference has reached the stop's last point (at a control period's start):
        the point for the end of this period, which the robot interpolates to as to a streamed
        set-point. In lockstep a reference elsewhere at a period's start was set by someone else
        (`sim.reset`): the stop is over; so it is once the reference rests."""
        plan = self._stopping
        if plan is None:
            return
        if not self._stop_in_progress():
            if not self.realtime:
                self._stopping = None
            return
        if plan.goal is not None and plan.t >= plan.duration:
            self._stopping = None
            return
        plan.t += self._spec.period
        plan.goal = plan.at(plan.t)
        self.sim.set_target(MODE_POSITION, plan.goal, self._spec.period)

    # ------------------------------------------------------------------ randomization
    def randomize(self, randomization, seed: int = 0, joints=None) -> dict:
        """Run the robot under one draw (from `seed`) of a randomization preset (a name, a path, a
        dict or a `sim.randomization.Randomizer`): its robot physics applied by the same function
        as the sim tasks' (`sim.robots.apply_robot_draw`, on top of the model's identified joint
        damping, the tasks' nominal) and its per-step effects in the control loop (`_Reality`).
        `joints` (names; default all of the config's): the joints per-joint values are drawn for,
        in that order, as a task that controls only those draws them; the others stay nominal.
        Returns the draw. A preset with a parameter the driver does not simulate (objects, table,
        visuals, cameras) or an unknown joint raises ValueError naming it; a bad preset,
        RandomizationError."""
        from sim.randomization import PARAMETERS, Randomizer

        rz = Randomizer.load(randomization)
        unknown = [n for n in rz.params if n not in DRIVER_RANDOMIZATION]
        if unknown:
            n = unknown[0]
            raise ValueError(f"randomization parameter {n} ({PARAMETERS[n].group}) acts on something the sim "
                             f"driver does not simulate (it applies: {', '.join(DRIVER_RANDOMIZATION)})")
        names = list(self._spec.joint_names)
        joints = list(joints or names)
        bad = [j for j in joints if j not in names]
        if bad:
            raise ValueError(f"randomized joint {bad[0]!r} is not one of the config's joints {names}")
        idx = [names.index(j) for j in joints]
        self._require_connected()
        with self._lock:
            dims = {"joints": len(idx), "links": p.getNumJoints(self.sim.body, physicsClientId=self.simulation.client),
                    "action": len(idx), "objects": 0, "surfaces": 0}
            self._reality = _Reality(rz, int(seed), dims, float(self.config.safety.max_position_step), idx,
                                     len(names))
            self._apply_draw()
            return dict(self._reality.draw)

    @property
    def randomization(self) -> dict | None:
        """The draw `randomize` applied (None: none)."""
        return None if self._reality is None else dict(self._reality.draw)

    def true_state(self) -> RobotState:
        """The simulated robot's state as it is (no sensor delay, noise or offsets): ground truth
        for evaluation, which a real robot does not have."""
        self._require_connected()
        with self._lock:
            q, qd, tau = self.sim.state()
            return RobotState(time.monotonic() if self.realtime else self.simulation.time, q, qd, tau,
                              {"sim_time": self.simulation.time})

    def _apply_draw(self) -> None:
        """The draw's robot physics on the robot as loaded (the lock held)."""
        r = self._reality
        self._nominal = RobotNominal.of(self.sim)
        self._nominal.restore_damping(self.sim)
        apply_robot_draw(self.simulation, self.sim, self._nominal, r.draw)
        r.states.clear()
        r.pending.clear()
        st = self.sim.state()
        for _ in range(r.sensor_delay):
            r.states.append(st)

    def _apply_due(self, now: int) -> None:
        """Apply the delayed commands due by `now` (simulation steps in real time, else periods)."""
        pending = self._reality.pending
        while pending and pending[0][0] <= now:
            self._command(pending.popleft()[1])

    def _period_begin(self) -> int:
        """A control period starts under the draw: its per-step values, the delayed commands due;
        returns the period's physics substeps."""
        r = self._reality
        values = r.next_period()
        if r.per_step_dynamics:
            apply_robot_draw(self.simulation, self.sim, self._nominal, {k: values[k] for k in r.per_step_dynamics})
        if r.pending and not self.realtime:
            self._apply_due(r.period)
        if "control_period_jitter" in r.current:
            return max(1, int(round(self._substeps * (1.0 + float(r.current["control_period_jitter"])))))
        return self._substeps

    def _period_end(self) -> None:
        r = self._reality
        r.period += 1
        if r.sensor_delay:
            r.states.append(self.sim.state())

    def _step_period(self) -> None:
        """Lockstep: one control period of physics."""
        if self._reality is None:
            self.simulation.step(self._substeps)
            return
        self.simulation.step(self._period_begin())
        self._period_end()

    # ------------------------------------------------------------------ internals
    def _require_connected(self):
        if not self._connected:
            raise DriverError("sim driver is not connected (call connect() first)")

    def _run(self) -> None:
        period = 1.0 / self.config.control_rate_hz
        next_t = time.monotonic()
        while not self._stop.is_set():
            n = self._substeps
            if self._reality is not None:
                with self._lock:
                    if not p.isConnected(self.simulation.client):
                        return
                    n = self._period_begin()
            # One substep at a time, handing over the lock and the GIL in between: a command or a
            # read from another thread (a ROS callback) waits for one substep, not a whole period.
            for _ in range(n):
                with self._lock:
                    if not p.isConnected(self.simulation.client):
                        return   # physics server gone: reads and writes now report the fault
                    if self._reality is not None and self._reality.pending:
                        self._apply_due(self.simulation.steps)
                    if self._stream is not None or self._stopping is not None:
                        self._end_of_stream()
                        self._stop_tick()
                    self.simulation.step(1)
                time.sleep(0)
            if self._reality is not None:
                with self._lock:
                    if not p.isConnected(self.simulation.client):
                        return
                    self._period_end()
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -period:
                # fell more than a period behind: count it and resync rather than sprint to catch up
                self.stats["missed_periods"] += int(-delay / period)
                next_t = time.monotonic()


def _movable_joints(client: int, urdf: str, flags: int = 0) -> list[str]:
    """The names of a URDF's movable joints, loaded into `client` and removed again (a model
    without a configured joint is refused by name before the robot is built)."""
    body = p.loadURDF(urdf, useFixedBase=True, flags=flags, physicsClientId=client)
    try:
        names = []
        for i in range(p.getNumJoints(body, physicsClientId=client)):
            info = p.getJointInfo(body, i, physicsClientId=client)
            if info[2] != p.JOINT_FIXED:
                names.append(info[1].decode())
        return names
    finally:
        p.removeBody(body, physicsClientId=client)


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _physics_error(e: Exception) -> DriverError:
    """A dead physics server is reported like a lost bus."""
    return DriverError(f"physics server: {e}")


@register_driver("sim")
def make_sim_driver(config, **kw) -> SimDriver:
    return SimDriver(config, **kw)
