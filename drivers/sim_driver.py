"""The PyBullet driver: the simulated robot behind the same interface as the real ones.

Two clocks:
- real time (`realtime=True`, like a robot, for ROS): a thread steps physics one control period
  at a time on a steady clock (substep by substep, so other threads never wait long for it);
  read/write just exchange data with it.
- lockstep (`realtime=False`, for training and tests): every `write()` or `hold()` advances the
  simulation by exactly one control period, so the same commands give bit-identical states.

`hold()` is a controlled stop, as a robot's controller brakes on a stop command: each joint's
position reference decelerates from its motion to rest at the safety layer's planned rate
(`drivers.sim_stop.StopPlan`), then holds there; so does the reference when position set-points
stop coming. A reference that jumps to rest instead brakes every moving joint as hard as its
effort limit allows, and that deceleration, far above what any command plans with, throws the
joints coupled to it past their limits. A stop brakes from the reference's speed, but never from
more than the joint's own (`_braking_speed`): a reference catching up with a set-point can be far
faster than the joint, and braking it from there would carry the joint on, faster and further
than it was going, after the stop.

Streamed position set-points are interpolated one period apart, as a robot's joint interpolator
does: each is reached a period after the one before it (or a period from its arrival), so
set-points that reach the driver together are not crossed faster than the stream moves; a
backlog of more than a period is crossed faster rather than kept as latency, but never faster
than the joints' velocity limits. In real time that happens on a loaded host: the stepping
thread is held off and then catches up several periods at once, a client catches up with its
schedule in a burst, and simulated time lags and sprints against the clock the commands come
by. So a stream counts as stopped by that clock (`clock()`, as the safety layer counts gaps in
it), not by simulated time, where a stream that goes on can look stopped.

Timing for recordings (identification replays a run at the physics steps it happened at, not in
the order messages arrived): each read carries the physics time its state was sampled at
(`sensors["sim_time"]`), and `command_time` is the physics time the last write was accepted at
(a delayed draw's `action_latency` applies it that many control periods later). In real time a
write lands part-way through the stepping thread's period, at a substep boundary. `stream_starts`
holds the physics times at which a position set-point started a stream (ramped from the measured
position: after a gap, a stop or another mode), where a replay that continues the reference
would go wrong.

A randomization draw (`randomize`) and its per-period effects are `drivers.sim_reality.Reality`;
loading the config's robot into the simulation, `drivers.sim_loading`.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

# first: `sim` imports pybullet without its banner
from s2r.sim.robots import MODE_EFFORT, MODE_POSITION, RobotNominal, Simulation  # noqa: I001

import pybullet as p  # noqa: E402

from .base import Driver, DriverError, register_driver
from .sim_loading import load_configured_robot
from .sim_reality import DRIVER_RANDOMIZATION, Reality
from .sim_stop import StopPlan
from s2r.core.types import Command, CommandMode, DriverSpec, RobotState


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
        self._stopping: StopPlan | None = None   # a controlled stop in progress (`hold`)
        self._stream: tuple | None = None          # the last position set-point: (goal, its speed, when overdue)
        self._reality: Reality | None = None      # a randomization draw (`randomize`)
        self._inv_vmax = 1.0 / self._spec.max_velocity   # position set-points: the interpolation's rate limit
        self._ramp_end = 0.0                       # simulated time the last set-point is reached at
        self.command_time: float | None = None     # physics time (s) the last write was accepted at
        self.stream_starts: deque = deque(maxlen=4096)   # physics times (s) position streams started at

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
        # the robot as loaded: every draw applies on top of this, so a second `randomize` replaces
        # the first instead of scaling the masses it left
        self._nominal = RobotNominal.of(self.sim)
        self.sim.reset(np.clip(self.sim.q_home if q is None else q, self._spec.lower, self._spec.upper), qd)
        if self._reality is not None:          # a restarted physics server keeps the robot's draw
            self._apply_draw()
        self._last_q, self._last_qd = self.sim.q_target.copy(), np.zeros(self._spec.n_joints)
        self._stopping = self._stream = None
        self._ramp_end = 0.0
        if self.realtime:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sim-driver", daemon=True)
            self._thread.start()

    def _load_robot(self):
        return load_configured_robot(self.simulation, self.config)

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
                self.command_time = self.simulation.time
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
                self.stream_starts.append(self.simulation.time)
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
                values = np.clip(r.noisy_target(values), self._spec.lower, self._spec.upper)
            goal = np.array(values, float)
            # reached a period after the set-point before it (a set-point arriving before that one
            # was reached is not crossed faster than the stream moves), but at most two periods
            # from now (a backlog does not grow into latency), and no faster than the joints'
            # velocity limits
            now = self.simulation.time
            backlog = min(max(self._ramp_end - now, 0.0), T) if streaming else 0.0
            fastest = float(np.max(np.abs(goal - start) * self._inv_vmax, initial=0.0))
            ramp = max(T + backlog, fastest if fastest > T * (1.0 + 1e-9) else T)
            self.sim.set_target(MODE_POSITION, goal, ramp)
            self._ramp_end = now + ramp
            # a stream is over once its set-point is half a period overdue, on the clock the
            # commands come by (the stepping thread may lag it, then catch up in a burst)
            due = self.clock() + ramp + (0.5 if self.realtime else 0.0) * T
            self._stream = (goal, (goal - start) / ramp, due - 1e-9)
        else:
            self.sim.set_target(command.mode.value, command.values, self._spec.period)

    def hold(self) -> None:
        """Stop under control and hold where the joints come to rest: the reference decelerates
        from its own motion, no faster than the joints move (`_braking_speed`; from the measured
        motion after effort commands). A hold while a stop is under way continues it: planned
        again from the measured motion, the reference would give up the distance the joints lag
        it by at each call, and a caller holding every period would never stop them."""
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
                        q, qd = self.sim.q_target.copy(), self._braking_speed(self.sim.qd_target)
                    sp = self._spec
                    self._stopping = StopPlan(q, qd, sp.lower, sp.upper, sp.max_acceleration)
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
        if self.clock() >= due and self.sim.mode == MODE_POSITION \
                and np.array_equal(self.sim.q_target, goal):
            sp = self._spec
            self._stream = None
            self._stopping = StopPlan(goal, self._braking_speed(velocity), sp.lower, sp.upper, sp.max_acceleration)

    def _braking_speed(self, v_ref) -> np.ndarray:
        """The speed a stop of the reference starts from: the reference's `v_ref`, per joint no
        faster than the joint moves and zero against its motion. The reference outruns the joint
        when it catches up with a set-point (the first after a gap in the stream, ramped from the
        measured position in one period; a backlog of set-points) while the joint has barely
        started; braked from that speed, the reference would pull the joint on after the stop,
        faster and further than it was going. Nor is it ever more than the reference's own, so a
        stop never pushes a joint harder than the stream did."""
        v_ref = np.asarray(v_ref, float)
        qd = self.sim.state()[1]
        return np.minimum(np.maximum(v_ref, np.minimum(qd, 0.0)), np.maximum(qd, 0.0))

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
        damping, the tasks' nominal) and its per-step effects in the control loop (`Reality`).
        `joints` (names; default all of the config's): the joints per-joint values are drawn for,
        in that order, as a task that controls only those draws them; the others stay nominal.
        Returns the draw. A preset with a parameter the driver does not simulate (objects, table,
        visuals, cameras) or an unknown joint raises ValueError naming it; a bad preset,
        RandomizationError."""
        from s2r.sim.randomization import PARAMETERS, Randomizer

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
            self._reality = Reality(rz, int(seed), dims, float(self.config.safety.max_position_step), idx,
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
        self._reality.apply(self.simulation, self.sim, self._nominal)

    def _apply_due(self, now: int) -> None:
        """Apply the delayed commands due by `now` (simulation steps in real time, else periods)."""
        pending = self._reality.pending
        while pending and pending[0][0] <= now:
            self._command(pending.popleft()[1])

    def _period_begin(self) -> int:
        """A control period starts under the draw: its per-step values, the delayed commands due;
        returns the period's physics substeps."""
        r = self._reality
        n = r.begin_period(self.simulation, self.sim, self._substeps)
        if r.pending and not self.realtime:
            self._apply_due(r.period)
        return n

    def _step_period(self) -> None:
        """Lockstep: one control period of physics."""
        if self._reality is None:
            self.simulation.step(self._substeps)
            return
        self.simulation.step(self._period_begin())
        self._reality.end_period(self.sim)

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
                    self._reality.end_period(self.sim)
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -period:
                # fell more than a period behind: count it and resync rather than sprint to catch up
                self.stats["missed_periods"] += int(-delay / period)
                next_t = time.monotonic()


def _physics_error(e: Exception) -> DriverError:
    """A dead physics server is reported like a lost bus."""
    return DriverError(f"physics server: {e}")


@register_driver("sim")
def make_sim_driver(config, **kw) -> SimDriver:
    return SimDriver(config, **kw)
