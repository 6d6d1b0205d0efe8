"""A randomization draw on the sim driver's robot (`Reality`, `SimDriver.randomize`): its robot
physics, applied by the same function as the sim tasks' (`sim.robots.apply_robot_draw`), and the
per-control-period effects the driver applies in its control loop."""
from __future__ import annotations

from collections import deque

import numpy as np

from s2r.sim.robots import ACTUATOR_EFFECTS, ROBOT_DYNAMICS, RobotNominal, apply_robot_draw

# the randomization parameters (sim.randomization) the sim driver applies, `SimDriver.randomize`
DRIVER_RANDOMIZATION = ROBOT_DYNAMICS + ACTUATOR_EFFECTS + (
    "action_latency", "control_period_jitter", "action_noise", "action_bias", "joint_noise", "encoder_offset",
    "sensor_delay")


class Reality:
    """One randomization draw on the driver's robot (`SimDriver.randomize`), and the per-step
    effects the sim tasks apply in their step loop, per control period of the driver:
    - `action_latency` N: commands take effect N control periods after they arrive;
    - `control_period_jitter`: a period simulates round(substeps * (1 + jitter)) physics substeps
      (the wall-clock period stays), as the tasks do per step;
    - `action_noise` + `action_bias` (normalized action units, times the config's
      `max_position_step`): the actuation's error, added to every position set-point as it takes
      effect (not accumulated), as the sim tasks add it to the targets their robot applies;
    - `joint_noise` (per period), `encoder_offset`: added to the positions `read()` reports;
    - `sensor_delay` N: `read()` reports the state of N control periods ago.
    Per-step dynamics values are applied at each period's start. Per-joint values are drawn for
    the joints `joint_idx` (of the driver's n) and are neutral (scale 1, effect 0) on the others."""

    BLOCK = 64

    def __init__(self, randomizer, seed: int, dims: dict, step_scale: float, joint_idx, n_joints: int):
        from s2r.sim.randomization import PARAMETERS
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
        self.pending: deque = deque()               # delayed commands: (due, command)
        self.states: deque = deque(maxlen=self.sensor_delay + 1)
        self.period = 0
        self._block, self._k = {}, self.BLOCK
        self.nominal: RobotNominal | None = None    # the robot before the draw (`apply`)

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

    def noisy_target(self, values: np.ndarray) -> np.ndarray:
        """A position set-point as the robot applies it: with this period's action noise and bias."""
        c = self.current
        return np.asarray(values, float) + (c.get("action_noise", 0.0) + c.get("action_bias", 0.0)) * self.step_scale

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

    # ---------------------------------------------------------------- on the robot
    def apply(self, simulation, robot, nominal: RobotNominal | None = None) -> None:
        """The draw's robot physics on `robot` (again after a physics restart), on top of `nominal`:
        the robot as loaded, before any draw (default: measured from `robot` now, which must then
        be unrandomized), with the model's identified joint damping as the tasks' nominal; commands
        in flight and delayed states are dropped."""
        self.nominal = nominal if nominal is not None else RobotNominal.of(robot)
        self.nominal.restore_damping(robot)
        apply_robot_draw(simulation, robot, self.nominal, self.draw)
        self.states.clear()
        self.pending.clear()
        st = robot.state()
        for _ in range(self.sensor_delay):
            self.states.append(st)

    def begin_period(self, simulation, robot, substeps: int) -> int:
        """A control period starts under the draw: its per-step values (dynamics applied to
        `robot`); returns the period's physics substeps (`substeps`, changed by the jitter)."""
        values = self.next_period()
        if self.per_step_dynamics:
            apply_robot_draw(simulation, robot, self.nominal, {k: values[k] for k in self.per_step_dynamics})
        if "control_period_jitter" in self.current:
            return max(1, int(round(substeps * (1.0 + float(self.current["control_period_jitter"])))))
        return substeps

    def end_period(self, robot) -> None:
        """A control period ends: counted, and the state it ends in kept for `sensor_delay`."""
        self.period += 1
        if self.sensor_delay:
            self.states.append(robot.state())
