"""The shared machinery of the s2r tasks: a Gymnasium env over `sim.robots.Simulation` + `SimRobot`.

Each reset rebuilds the world from scratch (`Simulation.reset_world`): nothing simulated before can
leak into an episode, so an episode depends only on its seed (and on the actions), whatever ran in
the same process before. That is what makes parallel rollouts equal serial ones.

Actions are normalized to [-1, 1] per dimension:
- `control="position"` (default): joint position-target increments of at most `action_scale` rad
  (the hardware config's `safety.max_position_step`) per control step. The targets become
  set-points exactly as on the robot (`self.setpoints`, s2r.core.joint_limiter.ActionSetpoints):
  integrated and kept near the measured position as policy_node does, then paced by the safety
  layer's joint limiter (speed, acceleration, braking before the limits), and streamed to the
  robot's joint interpolator like the sim driver does;
- `control="effort"`: joint torques as a fraction of the configured effort limits (gravity
  compensation on top, as on a torque-controlled arm).
Out-of-range values are clipped; a wrong shape or a NaN/inf raises ValueError naming it.

Randomization (`sim.randomization.Randomizer`) is applied here, by the `RandomizedWorld` half
(sim/tasks/randomized.py); its sampled values are in `info["randomization"]` after every reset and
step (per-step values are drawn in blocks of `STEP_BLOCK` steps, one row per step). `reset(seed, options={"noise_seed": n})` keeps the episode of
`seed` (start, target, per-episode randomization draw) and draws its per-step values (noises, jitter)
and pixel noise from `n` instead: several samples of one training condition, each with its own noise.
An action latency delays what the robot is sent (set-points in position control), not the
policy's own targets: `q_cmd` and the limiter's set-point move when the action is taken, as
policy_node's do, and the robot's joints get them `action_latency` steps later, as the sim
driver and a real robot apply a command that was late on the wire. Action noise and bias are
the actuation's error, hidden from the policy: added to the targets the robot applies (after the
latency, not accumulated into `q_cmd`), or to the torques in effort control.
The `unmodeled` group's actuator effects go to
`SimRobot.set_unmodeled`; encoder offsets and sensor delay act on the returned observation only
(rewards and `info` use the current true state); camera miscalibration changes the camera images
are rendered with (`render_camera`), not the calibrated one `camera_info()` reports (`camera`).
"""
from __future__ import annotations

import abc
import math
from collections import deque

import gymnasium as gym
import numpy as np
import pybullet as p

from s2r.core.config import load_config
from s2r.sim.cameras import SimCamera
from s2r.sim.randomization import Randomizer
from s2r.core.joint_limiter import ActionSetpoints, JointLimiter, PositionTargets
from s2r.sim.robots import RobotNominal, Simulation, model_joint_damping, robot_model
from s2r.sim.tasks.randomized import CAMERA_ERRORS, PackedArrays, RandomizedWorld   # noqa: F401 (re-exported)


def _as_slice(idx):
    """idx as a slice if it is a contiguous ascending run, else idx."""
    idx = np.asarray(idx)
    if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return slice(int(idx[0]), int(idx[0]) + len(idx))
    return idx


class TaskEnv(RandomizedWorld, gym.Env, abc.ABC):
    # render_fps is per instance (set in __init__): the control rate of the env's hardware config
    metadata = {"render_modes": ["rgb_array"]}

    config_name = "panda_sim"            # hardware config: joints, gains, limits, rate, camera
    robot_name: str | None = None        # robot description, default: the config's robot
    controlled_joints: tuple | None = None   # None: all of the config's joints
    action_joints: tuple | None = None       # None: all controlled joints
    ee_link = ""
    success_threshold = 0.02

    def __init__(self, randomization=None, image_obs: bool = False, image_size: int = 64,
                 render_size: int | None = None, meshes: str = "decimated", control: str = "position",
                 render_mode: str | None = "rgb_array", config=None):
        if control not in ("position", "effort"):
            raise ValueError(f"control must be 'position' or 'effort', got {control!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.cfg = load_config(config or self.config_name)
        # the robot description: the task's own sim model if it names one, else the config's robot
        self.description = robot_model(self.robot_name) if self.robot_name else self.cfg.robot_description()
        self.randomizer = Randomizer.load(randomization)
        self.control, self.render_mode, self.image_obs = control, render_mode, image_obs
        self.meshes = meshes
        cfg = self.cfg
        self.control_dt = 1.0 / cfg.control_rate_hz
        rate = cfg.control_rate_hz
        self.metadata = {**type(self).metadata, "render_fps": int(rate) if float(rate).is_integer() else float(rate)}
        self.substeps = max(1, round(cfg.sim.physics_hz / cfg.control_rate_hz))
        self.sim = Simulation(cfg.sim.physics_hz)
        self.client = self.sim.client
        joints = {j.name: j for j in cfg.joints}
        names = self.controlled_joints or cfg.joint_names
        unknown = [n for n in names if n not in joints and n not in self.extra_joints()]
        if unknown:
            raise ValueError(f"{cfg.path}: task {type(self).__name__} needs joints {unknown}")
        self.joint_names = tuple(names)
        spec = {**{n: (j.kp, j.kd, j.limits.effort, j.limits.lower, j.limits.upper) for n, j in joints.items()},
                **self.extra_joints()}
        self.kp = np.array([spec[n][0] for n in names])
        self.kd = np.array([spec[n][1] for n in names])
        self.effort = np.array([spec[n][2] for n in names])
        self.lower = np.array([spec[n][3] for n in names])
        self.upper = np.array([spec[n][4] for n in names])
        act = self.action_joints or self.joint_names
        self.act_idx = np.array([self.joint_names.index(n) for n in act])
        self.action_scale = self.action_scales()[self.act_idx]
        # position actions become targets and set-points exactly as on the robot: policy_node
        # integrates them (PositionTargets) and the safety layer paces them (JointLimiter)
        self.setpoints = ActionSetpoints(PositionTargets(self.lower, self.upper, self.act_idx), self._joint_limiter())
        self._fixed_mask = np.ones(len(self.joint_names), bool)      # the joints outside the action
        self._fixed_mask[self.act_idx] = False
        # the common layouts as slices (views, cheaper than index arrays every step)
        self._act_sel = _as_slice(self.act_idx)
        self._fixed_sel = _as_slice(np.flatnonzero(self._fixed_mask))
        if meshes not in ("decimated", "stock"):
            raise ValueError(f"meshes must be 'decimated' or 'stock', got {meshes!r}")
        model = self.description
        # robots without a decimated variant (the box-geometry hand) are cheap to render as they are
        self.model = model.with_visuals(meshes) if meshes in dict(model.visual_variants) else model
        if not cfg.cameras:
            raise ValueError(f"{cfg.path}: tasks need a camera entry for render() and image observations")
        base_cam = self.task_camera(SimCamera.from_config(cfg.cameras[0]))
        self.base_camera = base_cam
        self.render_size = render_size or base_cam.intrinsics.width
        self.image_size = image_size
        self._textures: list[int] = []
        # one nominal build to size the spaces and the randomizer's per-link/per-object vectors
        self.dr = {}
        self._build_world({}, np.random.default_rng(0))
        self.dims = {"joints": len(self.joint_names), "links": self.n_links, "objects": len(self.objects),
                     "action": len(self.act_idx), "surfaces": len(self.surfaces)}
        n_act = len(self.act_idx)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n_act,), np.float64)
        self._action_shape = self.action_space.shape
        spaces = {"joint_pos": gym.spaces.Box(-np.inf, np.inf, (len(self.joint_names),), np.float64),
                  "joint_vel": gym.spaces.Box(-np.inf, np.inf, (len(self.joint_names),), np.float64),
                  **self.task_spaces()}
        if image_obs:
            spaces["image"] = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self._reset_done = False

    # ============================================================== hooks for the tasks
    def _joint_limiter(self) -> JointLimiter:
        """The safety layer's limiter for this task's joints; a joint the task adds to the config's
        (a sim-only stage) may move one action step a period, with no acceleration limit."""
        cfg = self.cfg
        spec = cfg.spec()
        if all(n in spec.joint_names for n in self.joint_names):
            return JointLimiter.for_robot(spec, cfg.safety, self.joint_names)
        sel = [spec.joint_names.index(n) if n in spec.joint_names else -1 for n in self.joint_names]
        own = np.array([i >= 0 for i in sel])
        step = self.action_scales() / self.control_dt
        vmax = np.where(own, spec.max_velocity[sel] * cfg.safety.velocity_scale, step)
        accel = np.where(own, spec.max_acceleration[sel] * cfg.safety.velocity_scale, step / self.control_dt)
        return JointLimiter(self.lower, self.upper, vmax, accel, self.control_dt,
                            max_step=cfg.safety.max_position_step if own.all() else
                            np.where(own, cfg.safety.max_position_step, np.inf),
                            margin=cfg.safety.limit_margin)

    def hold_posture(self, q) -> None:
        """Put the robot at q (kinematically) and hold it there: the targets and the joint limiter
        start again from q, as the robot's would after a reset."""
        self.robot.reset(q)
        self.q_cmd = self.setpoints.start(q)
        self._reset_latency()

    def extra_joints(self) -> dict:
        """Joints the task adds to the config's: name -> (kp, kd, effort, lower, upper)."""
        return {}

    @abc.abstractmethod
    def build_task(self, dr: dict) -> None:
        """Create the task's fixed bodies (table, ...); `dr` has the episode's randomization values."""

    @abc.abstractmethod
    def sample_task(self, rng: np.random.Generator) -> None:
        """The episode's start: robot posture, objects (add them to self.objects), target."""

    @abc.abstractmethod
    def task_spaces(self) -> dict:
        """The task's entries of the observation space: name -> gym.Space."""

    @abc.abstractmethod
    def task_obs(self, obs: dict) -> None:
        """Add the task's entries (objects, target) to the observation dict."""

    @abc.abstractmethod
    def reward_success(self, obs: dict) -> tuple[float, bool, dict]:
        """(reward, success, extra info) for this step's observation."""

    def action_scales(self) -> np.ndarray:
        """Per controlled joint: the position-target increment of a full action (rad or m per step)."""
        return np.full(len(self.joint_names), self.cfg.safety.max_position_step)

    def task_camera(self, cam: SimCamera) -> SimCamera:
        """The task's camera, given the config's (a task whose scene it does not frame moves it)."""
        return cam

    def fixed_joint_targets(self) -> np.ndarray | None:
        """Targets of the controlled joints that the action does not move (e.g. a gripper)."""
        return None

    # ============================================================== building
    def _build_world(self, dr: dict, rng: np.random.Generator) -> None:
        """A fresh world: robot, the task's bodies (`build_task`), the episode's start (`sample_task`)."""
        self.sim.reset_world()
        self._textures = []
        self.robot = self.sim.add_robot(self.model, self.joint_names, self.kp, self.kd, self.effort,
                                        self.cfg.sim.gravity_compensation, self.robot_base_position())
        body = self.robot.body
        self.n_links = p.getNumJoints(body, physicsClientId=self.client)
        if not hasattr(self, "robot_nominal"):     # the robot's physics before randomization
            self.robot_nominal = RobotNominal.of(self.robot, self.nominal_joint_damping())
        self.robot_nominal.restore_damping(self.robot)
        self.objects: list[int] = []
        self.object_nominal: list[dict] = []      # per object: mass, lateral, spinning, rolling friction
        self.surfaces: list[tuple] = []           # (name, [(body, link), ...]) for colours and textures
        self.build_task(dr)
        self.sample_task(rng)
        self.surfaces = [("floor", [(self.sim.plane, -1)])] + self.surfaces + \
            [("robot", [(body, i) for i in range(-1, self.n_links)])]

    def robot_base_position(self):
        return None

    def nominal_joint_damping(self) -> np.ndarray:
        """Viscous joint damping (N m s/rad) before randomization: the robot model's identified
        values (`RobotDescription.joint_damping`), else the URDF's."""
        return model_joint_damping(self.robot)

    # ============================================================== gym API
    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"randomization_pin", "noise_seed"}
        if unknown:
            raise ValueError(f"unknown reset option {sorted(unknown)[0]!r} (known: noise_seed, randomization_pin)")
        noise_seed = options.get("noise_seed")
        if noise_seed is not None and (isinstance(noise_seed, bool) or not isinstance(noise_seed, (int, np.integer))
                                       or noise_seed < 0):
            raise ValueError(f"reset option noise_seed must be a non-negative integer, got {noise_seed!r}")
        seeds = self.np_random.integers(0, 2**63 - 1, 3)
        self.task_rng = np.random.default_rng(seeds[0])
        self.dr_rng = np.random.default_rng(seeds[1])
        self.pixel_rng = np.random.default_rng(seeds[2])
        self.dr = self.randomizer.sample_episode(self.dr_rng, self.dims, options.get("randomization_pin"))
        self._build_world(self.dr, self.task_rng)
        self._apply_dynamics(self.dr)
        self._apply_visuals(self.dr, self.dr_rng)
        if noise_seed is not None:      # the episode's draw stays; its per-step noise is the sample's own
            self.dr_rng, self.pixel_rng = (np.random.default_rng(s) for s in
                                           np.random.SeedSequence(int(noise_seed)).spawn(2))
        self.q_cmd = self.setpoints.start(self.robot.state()[0])
        self._reset_latency()
        self._per_step = self.randomizer.per_step_names()
        self._per_step_dynamics = [n for n in self._per_step if n in
                                   ("link_mass_scale", "object_mass_scale", "joint_damping_scale", "gain_scale",
                                    "friction_scale", "spin_roll_friction_scale", "gravity_offset")]
        self._step_block, self._step_public, self._step_k, self._step_len = {}, [], 0, 0
        self._action_noise = "action_noise" in self.dr or "action_bias" in self.dr
        self._jitter = "control_period_jitter" in self.dr
        self._obs_noise = any(k in self.dr for k in ("joint_noise", "encoder_offset", "object_position_bias",
                                                     "object_position_noise"))
        # info["randomization"]: the episode's values, with each step's per-step values on top
        per_step = set(self._per_step)
        episode_arrays = {k: v for k, v in self.dr.items() if type(v) is np.ndarray and k not in per_step}
        self._info_episode_arrays = PackedArrays(episode_arrays)
        # the rest: the episode's scalars (immutable, shared by every info) and the per-step values
        self._info_static = {k: v for k, v in self.dr.items() if k not in episode_arrays and k not in per_step}
        self._info_step = {k: (v.copy() if type(v) is np.ndarray else v) for k, v in self.dr.items() if k in per_step}
        self._reset_done = True
        self.steps = 0
        obs = self._observe()
        delay = int(self.dr.get("sensor_delay", 0))   # the first `delay` steps repeat the reset observation
        self._obs_queue = deque([{k: np.copy(x) for k, x in obs.items()} for _ in range(delay)],
                                maxlen=delay + 1) if delay else None
        _, success, extra = self.reward_success(self._true_obs)
        return obs, self._info(success, extra)

    def step(self, action):
        if not self._reset_done:
            raise RuntimeError("call reset() before step()")
        a = self._check_action(action)
        dr = self.dr
        if self._per_step:
            if self._step_k == self._step_len:
                self._refill_step_block()
            k = self._step_k
            self._step_k += 1
            # rows of a block drawn once and never written: fresh objects for every step's info
            values = {name: block[k] for name, block in self._step_public}
            dr.update(values)
            self._info_step = values
            if self._per_step_dynamics:
                self._apply_dynamics({name: dr[name] for name in self._per_step_dynamics})
        noise = None
        if self._action_noise:
            noise = self._step_block["_action_offset"][self._step_k - 1] if "_action_offset" in self._step_block \
                else dr.get("action_noise", 0.0) + dr.get("action_bias", 0.0)
        self._apply_action(a, noise)
        n = self.substeps
        if self._jitter:
            n = int(self._step_block["_substeps"][self._step_k - 1]) if "_substeps" in self._step_block \
                else max(1, int(round(n * (1.0 + float(dr["control_period_jitter"])))))
        self.sim.step(n)
        self.steps += 1
        obs = self._observe()
        if self._obs_queue is not None:         # sensor delay
            self._obs_queue.append(obs)
            obs = self._obs_queue.popleft()
        reward, success, extra = self.reward_success(self._true_obs)
        return obs, float(reward), False, False, self._info(success, extra)

    def _reset_latency(self) -> None:
        """The action latency's queue, holding what the robot is sent until it applies it: in position
        control the set-points (the robot holds its start set-point meanwhile), else the actions
        (none: zero torque on top of gravity compensation)."""
        latency = int(self.dr.get("action_latency", 0))
        if not latency:
            self._queue = None
            return
        held = np.array(self.setpoints.setpoint, float) if self.control == "position" else np.zeros(len(self.act_idx))
        self._queue = deque([held.copy() for _ in range(latency)], maxlen=latency + 1)

    def _delayed(self, sent: np.ndarray) -> np.ndarray:
        """What the robot applies this step: `sent` after the action latency."""
        if self._queue is None:
            return sent
        self._queue.append(sent)
        return self._queue.popleft()

    def actions_in_flight(self) -> list:
        """What was sent but not yet applied (action latency), oldest first: set-points in position
        control, actions in effort control."""
        return list(self._queue) if self._queue is not None else []

    def _check_action(self, action) -> np.ndarray:
        """A fresh float64 copy of the action, clipped to [-1, 1]; a clear error for a wrong shape or
        a non-finite value."""
        a = np.array(action, dtype=np.float64)
        if a.shape != self._action_shape:
            raise ValueError(f"action has shape {a.shape}, expected {self.action_space.shape} "
                             f"({type(self).__name__}: {', '.join(self.joint_names[i] for i in self.act_idx)})")
        # finite exactly when the sum of squares is, unless that overflows: then look closer
        if not math.isfinite(a.dot(a)) and not np.isfinite(a).all():
            bad = int(np.flatnonzero(~np.isfinite(a))[0])
            raise ValueError(f"action[{bad}] is {a[bad]} ({self.joint_names[self.act_idx[bad]]}): "
                             f"actions must be finite")
        np.maximum(a, -1.0, out=a)
        np.minimum(a, 1.0, out=a)
        return a

    def _apply_action(self, a: np.ndarray, noise=None) -> None:
        """Send action `a`; `noise` (action_noise + action_bias, normalized action units) is the
        actuation's error, added where the robot applies what it was sent, after the latency: to
        the position targets (times `action_scale`, not accumulated) or to the torques. The policy
        never sees it in its own targets, as the sim driver's robot (drivers.sim_reality) and a real
        one hide it."""
        fixed = self.fixed_joint_targets()
        act = self._act_sel
        if self.control == "position":
            # the set-point is made when the action is taken, as policy_node and the robot's safety
            # layer make it; the latency delays the set-point on its way to the robot's joints. So
            # the targets a policy observes (q_cmd, setpoint) include what is still in flight, as
            # on the robot.
            sent = self.setpoints.step(self.robot.state()[0], a * self.action_scale, True, self._fixed_sel, fixed)
            self.q_cmd = self.setpoints.q_cmd.copy()
            applied = self._delayed(sent)
            if noise is not None:
                applied = applied.copy()
                applied[act] += noise * self.action_scale
                np.clip(applied, self.lower, self.upper, out=applied)
            self.robot.set_target("position", applied, self.control_dt)
        else:
            a = self._delayed(a)
            if noise is not None:
                a = np.clip(a + noise, -1.0, 1.0)
            tau = np.zeros(len(self.joint_names))
            tau[act] = a * self.effort[act]
            if fixed is not None:   # joints outside the action keep a PD hold around their fixed targets
                q, qd, _ = self.robot.state()
                mask = self._fixed_mask
                tau[mask] = self.kp[mask] * (fixed[mask] - q[mask]) - self.kd[mask] * qd[mask]
            self.robot.set_target("effort", tau)

    def _observe(self) -> dict:
        q, qd, _ = self.robot.state()
        obs = {"joint_pos": q, "joint_vel": qd}
        self.task_obs(obs)
        self._true_obs = obs
        noisy = obs
        if self._obs_noise:
            dr = self.dr
            noisy = dict(obs)
            if "joint_noise" in dr:
                noisy["joint_pos"] = q + dr["joint_noise"]
            if "encoder_offset" in dr:
                noisy["joint_pos"] = noisy["joint_pos"] + dr["encoder_offset"]
            if "object_pos" in obs and ("object_position_bias" in dr or "object_position_noise" in dr):
                if "_object_offset" in self._step_block and self._step_k:
                    offset = self._step_block["_object_offset"][self._step_k - 1]
                else:
                    offset = dr.get("object_position_bias", 0.0) + dr.get("object_position_noise", 0.0)
                noisy["object_pos"] = obs["object_pos"] + offset
        if self.image_obs:
            noisy = dict(noisy)
            noisy["image"] = self.render_image(self.image_size).data
        return noisy

    def _info(self, success: bool, extra: dict) -> dict:
        success = bool(success)
        # per-episode arrays are copied (users keep infos; Gymnasium asks for fresh data every call);
        # per-step values are rows of a block drawn once and never written, fresh for every step
        dr = self._info_episode_arrays.fresh()
        dr.update(self._info_static)
        dr.update(self._info_step)
        return {"success": success, "is_success": success, "sim_time": self.sim.time, "randomization": dr,
                **extra}

    # ============================================================== rendering
    def render_image(self, size: int | None = None, depth: bool = False, segmentation: bool = False):
        """A `sim.cameras.CameraImage` from the config's camera (randomized if visuals are, and
        miscalibrated if the unmodeled camera errors are)."""
        if not self._reset_done:
            raise RuntimeError("call reset() before rendering")
        cam = self._camera_at(size or self.render_size, self.render_camera)
        return cam.render(self.client, self.sim.time, self.light, float(self.dr.get("brightness", 1.0)),
                          float(self.dr.get("pixel_noise_std", 0.0)), self.pixel_rng, depth, segmentation)

    def render(self):
        if self.render_mode is None:
            return None
        return self.render_image(self.render_size).data

    def _camera_at(self, size: int, cam: SimCamera | None = None) -> SimCamera:
        """`cam` (default: the calibrated camera) at `size` px wide, same field of view."""
        cam = self.camera if cam is None else cam
        if size == cam.intrinsics.width:
            return cam
        h = round(size * cam.intrinsics.height / cam.intrinsics.width)
        return SimCamera(cam.name, cam.intrinsics.resized(size, h), cam.pose)

    def camera_info(self, size: int | None = None) -> dict:
        """sensor_msgs/CameraInfo fields of the (possibly randomized) camera at `size` px wide: the
        calibrated camera, which differs from the one rendering under unmodeled camera errors."""
        if not self._reset_done:
            raise RuntimeError("call reset() first")
        return self._camera_at(size or self.render_size).camera_info(self.sim.time)

    def close(self):
        if getattr(self, "sim", None) is not None:
            self.sim.close()
            self.sim = None
