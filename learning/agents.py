"""Agents: where GPS and PLATO get their samples (the agent abstraction of cbfinn/gps).

An agent runs one episode of a training condition (or of a held-out start) under a controller
`act(t, x, obs) -> u`, and returns the full state x (what the local controllers see) next to the
policy's observations (what the global policy sees: input remapping).

    PointMassAgent   controllers' point mass (a double integrator) to the origin: fast, for tests
    ArmReachAgent    s2r/ArmReach-v0 in simulation; x = [q, qd, q_cmd - q, tcp - target] (24),
                     policy observations: state = [joint_pos, joint_vel, target - tcp_pos] (17) for
                     the MLP, or image + [joint_pos, joint_vel, tcp_pos] (17) for the CNN (which
                     must find the target in the image; tcp_pos is the forward kinematics of the
                     joint angles, the robot's own configuration, as in Levine et al. 2016)
    ArmInsertAgent   s2r/ArmInsert-v0, state-based (learning/insert_agent.py)

The policy's observations are built by learning.features (the same ObservationBuilder `s2r eval`
and policy_node use) from the agent's `obs_keys`. Opt-in extras (`obs_features`, `state_features`)
append named features to the policy's input and to x (between q_cmd - q and the task error, which
stays last): with action latency the actions in flight are in neither (x is then not Markov), so
e.g. state_features=("prev_action@hist2",) puts the last two actions into x (latency up to 2), and
obs_features=("prev_action", "cmd_offset") gives the policy the previous action and q_cmd - q.

Training conditions and held-out starts come from the same distribution (the task's start
postures and targets); held-out starts use seeds no training condition uses. With
`resample_conditions` (GPSConfig) the conditions are drawn anew every iteration (`resample`).
The tasks by name: learning/registry.py.

Samples, held-out episodes and pose images run on an executor (s2r.core.executor: in this process,
a process pool or Ray) through `collect_samples`, `evaluate_held_out` and `pose_dataset`: every
job is one episode seeded by its identity, run by a worker's own copy of the agent (`Agent`: built
once from the constructor's arguments, following this agent's training conditions), so the
results are the same on every backend and come back in job order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .features import ObservationBuilder, compute_features, parse_key, sim_context, sim_sources
from .linear_gaussian import LinearGaussianController, LogDistanceCost, QuadraticCost

__all__ = ["Sample", "Agent", "PointMassAgent", "ArmReachAgent", "collect_samples", "evaluate_held_out",
           "agent_executor_context"]


@dataclass
class Sample:
    X: np.ndarray                  # (T+1, dX) full state
    U: np.ndarray                  # (T, dU) applied actions
    state_obs: np.ndarray          # (T+1, obs_dim) the MLP's input / the CNN's joint state
    images: np.ndarray | None      # (T+1, H, W, 3) uint8 or None
    success: bool
    final_distance: float
    info: dict = field(default_factory=dict)


class Agent:
    """What every agent shares for parallel sampling: it remembers its constructor's arguments, so a
    worker (s2r.core.executor) can build an equal agent once (`worker_spec`) and follow this one's
    changing state (`worker_state` / `set_worker_state`: the training conditions, which `resample`
    redraws). A subclass with other state that rollouts depend on extends the two state methods."""

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        self._init_args = (args, kwargs)
        return self

    def worker_spec(self) -> tuple:
        """(factory, args) that builds an equal agent in a worker process (picklable)."""
        args, kwargs = self._init_args
        return _build_agent, (type(self), args, kwargs)

    def worker_state(self) -> dict:
        """The state a worker's agent must copy before a rollout (sent once per batch)."""
        return {"condition_seeds": list(self.condition_seeds)} if hasattr(self, "condition_seeds") else {}

    def set_worker_state(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, list(v) if isinstance(v, list) else v)


def _build_agent(cls, args, kwargs):
    return cls(*args, **kwargs)


def agent_executor_context(agent) -> tuple:
    """The executor context of `agent`: an equal agent, built once per worker."""
    if not isinstance(agent, Agent):
        raise ValueError(f"{type(agent).__name__} is not a learning.agents.Agent: it cannot be rebuilt in a worker")
    return agent.worker_spec()


def _controller_act(controller, noise):
    from .linear_gaussian import LinearGaussianController
    if isinstance(controller, LinearGaussianController):
        return lambda t, x, obs: controller.act(t, x, noise[t])
    return lambda t, x, obs: controller(t, x, obs, noise[t])


def _follow(agent, state: dict) -> None:
    """A worker's agent takes this process's agent's state (nothing to take: an agent used in place)."""
    if state:
        agent.set_worker_state(state)


def _state_of(agent) -> dict:
    return agent.worker_state() if isinstance(agent, Agent) else {}


def _rollout_job(agent, shared, payload) -> Sample:
    state, controllers = shared
    _follow(agent, state)
    condition, noise, seed = payload
    controller = controllers[condition] if isinstance(controllers, (list, tuple)) else controllers
    return agent.rollout(condition, _controller_act(controller, noise), seed)


def _held_out_job(agent, shared, index) -> Sample:
    state, runner = shared
    _follow(agent, state)
    return agent.held_out(index, lambda t, x, obs: runner(t, x, obs))


def _pose_image_job(agent, shared, seed):
    state, reach_fraction = shared
    _follow(agent, state)
    return agent.pose_image(seed, reach_fraction)


def collect_samples(agent, executor, jobs, controllers, label: str = "sampling"):
    """Rollouts of `jobs` [(condition, noise (T, dU), seed)] under `controllers` (one per condition,
    or one controller for all, e.g. a PolicyRunner: `c(t, x, obs, noise_t)` or a
    LinearGaussianController) on `executor` (s2r.core.executor; None: in this process). Each job
    depends only on its condition, noise and seed, so every backend returns the same samples, in
    the order of `jobs`. Returns the executor's Batch (results None where a rollout raised)."""
    from s2r.core.executor import InlineExecutor
    executor = executor or InlineExecutor()
    controllers = list(controllers) if isinstance(controllers, (list, tuple)) else controllers
    return executor.run(_rollout_job, list(jobs), keys=[int(j[2]) for j in jobs],
                        context=_context_for(agent, executor), shared=(_state_of(agent), controllers),
                        label=label, local=agent)


def evaluate_held_out(agent, executor, runner, indices, label: str = "evaluation", reruns: list | None = None
                      ) -> list[Sample]:
    """`agent.held_out(i, runner)` for each index, on `executor` (None: in this process), in the
    order of `indices`; ExecutorError naming the first held-out seed whose episode raised.
    `reruns`: a list that gets the episodes run again after their worker died."""
    from s2r.core.executor import InlineExecutor
    executor = executor or InlineExecutor()
    indices = [int(i) for i in indices]
    base = getattr(agent, "HELD_OUT_BASE", 0)
    batch = executor.run(_held_out_job, indices, keys=[base + i for i in indices],
                         context=_context_for(agent, executor), shared=(_state_of(agent), runner),
                         label=label, local=agent)
    batch.raise_failures("held-out episode")
    if reruns is not None:
        reruns.extend(batch.reruns)
    return batch.results


def _context_for(agent, executor):
    from s2r.core.executor import InlineExecutor
    return None if isinstance(executor, InlineExecutor) else agent_executor_context(agent)


class PointMassAgent(Agent):
    """A 2-D point mass (controllers.models.point_mass, semi-implicit Euler) pushed to the origin.
    Conditions: start positions on a circle of radius 1; held-out starts: uniform in the same disc."""
    task = "PointMass"
    images = False
    init_variance = 1.0            # exploration of the initial controllers (force units)

    def __init__(self, n_conditions: int = 4, T: int = 40, dt: float = 0.05, noise: float = 1e-3,
                 success_distance: float = 0.1):
        from s2r.controllers.models import point_mass
        self.model = point_mass(2).discretize(dt, "semi_implicit_euler", jit=False)
        self.T, self.dX, self.dU, self.dt = T, 4, 2, dt
        self.obs_dim, self.joint_dim, self.image_size = 4, 4, None
        self.noise, self.success_distance = noise, success_distance
        ang = 2 * np.pi * np.arange(n_conditions) / n_conditions + np.pi / 4
        self.x0 = [np.array([np.cos(a), np.sin(a), 0.0, 0.0]) for a in ang]
        self.n_conditions = n_conditions
        self.cost = QuadraticCost(T, 4, 2, Q=np.array([1.0, 1.0, 0.1, 0.1]), R=0.01 * np.ones(2),
                                  Q_final=np.array([100.0, 100.0, 10.0, 10.0]))
        self.action_scale = np.ones(2)
        self.joint_names = ["p_x", "p_y"]

    def metadata(self) -> dict:
        return {"task": self.task, "obs_keys": ["p", "v"], "action": "force", "joint_names": self.joint_names}

    def _run(self, x0, act, seed) -> Sample:
        rng = np.random.default_rng(seed)
        X, U = [np.asarray(x0, float)], []
        for t in range(self.T):
            u = np.asarray(act(t, X[-1], {"state": X[-1]}), float)
            U.append(u)
            X.append(self.model.step(X[-1], u) + self.noise * rng.standard_normal(4) if np.all(np.isfinite(u))
                     else np.full(4, np.nan))
        X, U = np.array(X), np.array(U)
        d = float(np.linalg.norm(X[-1, :2]))
        return Sample(X, U, X.copy(), None, bool(d < self.success_distance), d)

    def rollout(self, condition: int, act, seed: int) -> Sample:
        return self._run(self.x0[condition], act, seed)

    def held_out(self, index: int, act) -> Sample:
        rng = np.random.default_rng(10_000 + index)
        r, a = np.sqrt(rng.uniform(0.25, 1.0)), rng.uniform(0, 2 * np.pi)
        return self._run(np.array([r * np.cos(a), r * np.sin(a), 0, 0]), act, 20_000 + index)

    def close(self):
        pass


class ArmReachAgent(Agent):
    """s2r/ArmReach-v0: the TCP to a 3-D target in position control (normalized joint increments).

    Condition c is the episode of seed `condition_seeds[c]` (start posture, target and, under
    `randomization`, the randomization draw); held-out starts are seeds 10000 + i (training seeds
    never fall in [10000, 10000 + HELD_OUT_SEEDS)).

    Cost: l_t = 1/2 (position_weight |e|^2 + velocity_weight |qd|^2 + action_weight |u|^2), e = tcp -
    target, the final_* weights at the last step; with log_weight or final_log_weight > 0 plus
    w_log(t) log(|e|^2 + log_alpha) (`LogDistanceCost`, the distance cost of Levine et al. 2016),
    whose pull keeps growing down to millimetres where the quadratic's has gone flat."""
    HELD_OUT_BASE = 10_000
    HELD_OUT_SEEDS = 10_000
    # The task's target marker (a 1.5 cm sphere) is about one pixel in the 64x64 camera image; image
    # agents show the target as an opaque green sphere of this radius instead, on a stand from the
    # table (`target_stand`, visual only): the stand's foot gives the single camera the target's depth.
    VISIBLE_MARKER_RADIUS = 0.035
    VISIBLE_MARKER_RGBA = (0.0, 1.0, 0.0, 1.0)
    task = "s2r/ArmReach-v0"
    init_variance = 0.1            # exploration of the initial controllers (normalized actions)
    STATE_OBS_KEYS = ("joint_pos", "joint_vel", "target_minus_tcp")     # the state MLP's input
    IMAGE_OBS_KEYS = ("joint_pos", "joint_vel", "tcp_pos")              # the CNN's, next to the image

    def __init__(self, images: bool = False, image_size: int = 64, randomization=None, n_conditions: int = 4,
                 T: int | None = None, condition_seeds=None, success_distance: float | None = None,
                 position_weight: float = 2.0, final_position_weight: float = 500.0,
                 velocity_weight: float = 0.01, final_velocity_weight: float = 1.0, action_weight: float = 0.01,
                 log_weight: float = 0.0, final_log_weight: float = 0.0, log_alpha: float = 1e-5,
                 target_marker_radius: float | None = None, target_stand: bool | None = None,
                 obs_features=(), state_features=(), config: str | None = None):
        import s2r.sim.tasks
        check_cost_weights(dict(position_weight=position_weight, final_position_weight=final_position_weight,
                                velocity_weight=velocity_weight, final_velocity_weight=final_velocity_weight,
                                action_weight=action_weight, log_weight=log_weight,
                                final_log_weight=final_log_weight), log_alpha)
        self.obs_features, self.state_features = _feature_keys(obs_features), _feature_keys(state_features)
        self.target_marker_radius = (self.VISIBLE_MARKER_RADIUS if images else None) \
            if target_marker_radius is None else (float(target_marker_radius) or None)
        self.target_stand = bool(images if target_stand is None else target_stand)
        marker = {"target_marker_radius": self.target_marker_radius,
                  "target_marker_rgba": self.VISIBLE_MARKER_RGBA} if self.target_marker_radius else {}
        if self.target_stand:
            marker["target_stand"] = True
        self.config = config             # hardware config naming the robot (None: the task's default)
        self.env = s2r.sim.tasks.make(self.task, image_obs=images, image_size=image_size,
                                  randomization=randomization, config=config, **marker).unwrapped
        self.images, self.image_size = images, (image_size if images else None)
        self.n = len(self.env.act_idx)
        self.T, self.dU = int(T or s2r.sim.tasks.TASKS[self.task][1]), self.n     # default: the task's episode
        self.obs_keys = [*(self.IMAGE_OBS_KEYS if images else self.STATE_OBS_KEYS), *self.obs_features]
        try:
            self.inputs = self._builder(self.obs_keys)               # the policy's observations
            self.state_inputs = self._builder(self.state_features)   # x's extra entries
        except ValueError:
            self.env.close()
            raise
        self.dX = 3 * self.n + 3 + self.state_inputs.size
        self.obs_dim = self.joint_dim = self.inputs.size              # the MLP's input / the CNN's joint state
        # None: the task's own success (what `s2r eval` scores); a radius: the TCP within it instead
        self.success_distance = None if success_distance is None else float(success_distance)
        self.condition_seeds = list(condition_seeds or range(n_conditions))
        self.n_conditions = len(self.condition_seeds)
        self.condition_pins = [{} for _ in self.condition_seeds]     # ADR's (set_pins)
        self.randomization_bounds: dict = {}                           # ranges ADR has moved
        n = self.n
        Q = np.zeros(self.dX)
        Q[n:2 * n], Q[-3:] = velocity_weight, position_weight
        Qf = np.zeros(self.dX)
        Qf[n:2 * n], Qf[-3:] = final_velocity_weight, final_position_weight
        self.cost = QuadraticCost(self.T, self.dX, self.dU, Q=Q, R=action_weight * np.ones(self.dU), Q_final=Qf)
        if log_weight or final_log_weight:     # Levine et al. 2016's distance term: a pull that holds at mm
            w_log = np.full(self.T + 1, float(log_weight))
            w_log[-1] = final_log_weight
            self.cost = LogDistanceCost(self.cost, slice(-3, None), w_log, alpha=log_alpha)
        self.action_scale = np.asarray(self.env.action_scale, float)
        self.joint_names = [self.env.joint_names[i] for i in self.env.act_idx]

    def robot_metadata(self) -> dict:
        """Which robot the policy drives: its description, the hardware config it was trained with,
        the TCP (ee_link + tcp_offset in the link's frame) its task positions are of."""
        from s2r.core import resources
        env = self.env
        return {"robot": env.description.name,
                "hardware_config": resources.portable("hardware_config", self.config or env.cfg.path),
                "ee_link": env.ee_link, "tcp_offset": list(env.tcp_offset)}

    def metadata(self) -> dict:
        tcp = "tcp_pos: world frame, m, by forward kinematics of the ee_link + tcp_offset (in the link's frame)"
        meta = {"task": self.task, "joint_names": self.joint_names, "action": "position_delta",
                "action_units": "rad per control step (added to the joint position targets)",
                "control_rate_hz": float(1.0 / self.env.control_dt), "episode_steps": self.T} | \
            self.robot_metadata() | self._observed_joints()
        extra = _extra_doc(self.obs_features)
        if self.images:
            meta |= {"target_marker_radius_m": self.target_marker_radius, "target_stand": self.target_stand,
                     "target_marker_rgba": list(self.VISIBLE_MARKER_RGBA)}
            meta |= {"inputs": ["image", "joint_state"], "image_size": [self.image_size, self.image_size],
                     "image_format": "RGB, uint8 or float in [0, 1], (B, 3, H, W) or (B, H, W, 3)",
                     "joint_state": f"[joint_pos; joint_vel; tcp_pos{extra}] of joint_names ({tcp})",
                     "obs_keys": ["image", *self.obs_keys]}
        else:
            meta |= {"inputs": ["state"], "obs_keys": list(self.obs_keys),
                     "state": f"[joint_pos; joint_vel; target - tcp_pos{extra}] ({tcp})"}
        return meta

    def _observed_joints(self) -> dict:
        """`obs_joint_names` where joint_pos / joint_vel cover other joints than the action's."""
        observed = list(self.env.joint_names)
        return {} if observed == list(self.joint_names) else {"obs_joint_names": observed}

    def _builder(self, keys) -> ObservationBuilder:
        """An ObservationBuilder of `keys` on this agent's task, with its metadata's parameters;
        ValueError (one line) for a key the simulated task cannot build."""
        b = ObservationBuilder(keys, self._feature_params(), n_joints=len(self.env.joint_names), n_actions=self.n,
                               where=f"{self.task}'s agent")
        b.require(sim_sources(self.env), f"{self.task}'s simulation")
        return b

    def _feature_params(self) -> dict:
        """The metadata parameters features read (learning.features.PARAMETERS)."""
        return {"episode_steps": self.T}

    def state(self, obs) -> np.ndarray:
        """x without the opt-in `state_features`: [q, qd, q_cmd - q, tcp - target]."""
        q = obs["joint_pos"][self.env.act_idx]
        return np.concatenate([q, obs["joint_vel"][self.env.act_idx], self.env.q_cmd[self.env.act_idx] - q,
                               obs["tcp_pos"] - obs["target"]])

    def full_state(self, obs, extra: np.ndarray) -> np.ndarray:
        """x: `state(obs)` with the state features' values `extra` before the task error (the last 3)."""
        base = self.state(obs)
        return np.concatenate([base[:-3], extra, base[-3:]]) if extra.size else base

    def state_obs(self, obs, t: int = 0) -> np.ndarray:
        """The policy's state input (the MLP's, or the CNN's joint state) at control step t of an
        episode, for obs keys that need no episode memory (learning.features.compute_features; the
        rollouts build it step by step with `inputs`, the same features)."""
        ctx = sim_context(obs, self.env)
        ctx.set("step", int(t))
        return compute_features(self.obs_keys, ctx, self.inputs.params)

    def worker_state(self) -> dict:
        """The conditions, their ADR pins and the ranges ADR has moved (learning.gps)."""
        return super().worker_state() | {"condition_pins": [dict(p) for p in self.condition_pins],
                                         "randomization_bounds": dict(self.randomization_bounds)}

    def set_worker_state(self, state: dict) -> None:
        state = dict(state)
        bounds = state.pop("randomization_bounds", {})
        super().set_worker_state(state)
        r = self.env.randomizer
        for name, (low, high) in bounds.items():
            if r.params[name].bounds() != (low, high):
                r.set_bounds(name, low, high)
        self.randomization_bounds = dict(bounds)

    def set_pins(self, pins) -> None:
        """ADR: condition c's randomization draw has the values `pins[c]` (name -> value, {} for an
        ordinary draw) in place of the drawn ones (`Randomizer.sample_episode(..., pin=)`)."""
        if len(pins) != self.n_conditions:
            raise ValueError(f"{len(pins)} pins for {self.n_conditions} conditions")
        self.condition_pins = [dict(p) for p in pins]

    def set_randomization_bounds(self, bounds: dict) -> None:
        """ADR: the ranges it has moved (name -> (low, high)), here and, with the next batch, on the workers."""
        for name, (low, high) in bounds.items():
            self.env.randomizer.set_bounds(name, low, high)
        self.randomization_bounds = {n: tuple(b) for n, b in bounds.items()}

    def adr_limits(self) -> dict:
        """Ranges ADR may not widen past: no more action latency than the local controllers' state
        holds actions in flight (`prev_action@histK` among the state features; the preset's own
        range without one), else the fitted dynamics stop being Markov."""
        lat = self.env.randomizer.params.get("action_latency")
        if lat is None:
            return {}
        held = [k or 1 for f, k in map(parse_key, self.state_features) if f.name == "prev_action"]
        return {"action_latency": (0, max([*held, int(lat.high) if lat.dist == "randint" else 0]))}

    def _run(self, seed: int, act, noise_seed: int | None = None, pin: dict | None = None) -> Sample:
        options = ({} if noise_seed is None else {"noise_seed": int(noise_seed)}) | \
            ({"randomization_pin": dict(pin)} if pin else {})
        obs, _ = self.env.reset(seed=int(seed), options=options or None)
        inputs, state_inputs = self.inputs, self.state_inputs
        inputs.reset()
        state_inputs.reset()
        X, U, S, I = [], [], [], []
        for t in range(self.T + 1):
            ctx = sim_context(obs, self.env)
            X.append(self.full_state(obs, state_inputs.observe(ctx)) if state_inputs.keys else self.state(obs))
            S.append(inputs.observe(ctx))
            if self.images:
                I.append(obs["image"])
            if t == self.T:
                break
            u = np.asarray(act(t, X[-1], {"state": S[-1], "image": I[-1] if self.images else None}), float)
            if u.shape != (self.dU,) or not np.all(np.isfinite(u)):
                # a broken controller: the sample is marked non-finite and dropped by the caller
                U.append(np.full(self.dU, np.nan))
                X += [np.full(self.dX, np.nan)] * (self.T - t)
                S += [np.full_like(S[-1], np.nan)] * (self.T - t)
                if self.images:
                    I += [I[-1]] * (self.T - t)
                U += [np.full(self.dU, np.nan)] * (self.T - t - 1)
                break
            u = np.clip(u, -1.0, 1.0)
            inputs.record_action(u * self.action_scale)            # in the exported policy's units
            state_inputs.record_action(u * self.action_scale)
            obs, _, _, _, info = self.env.step(u)
            U.append(u)
        X = np.array(X)
        d = float(np.linalg.norm(X[-1, -3:]))
        finite = bool(np.all(np.isfinite(U)))
        own = bool(self.env.reward_success(self.env._true_obs)[1]) and finite   # the task's own success (ADR's)
        success = own if self.success_distance is None else bool(d < self.success_distance)
        return Sample(X, np.array(U), np.array(S), np.array(I) if self.images else None,
                      success, d, {"task_success": own})

    def rollout(self, condition: int, act, seed: int) -> Sample:
        """One sample of a condition: its episode (start, target, randomization draw), with the
        per-step noise of `seed` (each sample its own: the fitted dynamics see the task's noise)."""
        return self._run(self.condition_seeds[condition], act, noise_seed=seed, pin=self.condition_pins[condition])

    def held_out(self, index: int, act) -> Sample:
        if not 0 <= index < self.HELD_OUT_SEEDS:
            raise ValueError(f"held-out index {index} out of range")
        return self._run(self.HELD_OUT_BASE + index, act)

    def resample(self, rng: np.random.Generator) -> list[int]:
        """New training conditions (same number): fresh episode seeds from the task's start
        distribution, never a held-out seed. Returns the seeds."""
        seeds = []
        while len(seeds) < self.n_conditions:
            s = int(rng.integers(0, 2**31 - 1))
            if not self.HELD_OUT_BASE <= s < self.HELD_OUT_BASE + self.HELD_OUT_SEEDS and s not in seeds:
                seeds.append(s)
        self.condition_seeds = seeds
        self.condition_pins = [{} for _ in seeds]
        return seeds

    INIT_GAIN = 0.1     # initial controllers: the fraction of the TCP's error they correct per control step
    INIT_DAMPING = 0.3   # ... and of the targets' lead over the measured joints they take back

    def hand_pose(self, reference_quat=None) -> np.ndarray:
        """The TCP position (3) and, with `reference_quat` (xyzw), the hand's orientation as the
        rotation vector (3, rad) from the reference to it: (3,) or (6,)."""
        pos, orn = self.env.tcp()
        if reference_quat is None:
            return pos
        from scipy.spatial.transform import Rotation
        rot = Rotation.from_quat(reference_quat).inv() * Rotation.from_quat(orn)
        return np.concatenate([pos, rot.as_rotvec()])

    def tcp_jacobian(self, reference_quat=None) -> np.ndarray:
        """d hand_pose / d q (3 or 6, dU) of the action joints at the current posture (central
        differences of the forward kinematics; the robot is put back where it was)."""
        env, robot = self.env, self.env.robot
        q0 = robot.state()[0].copy()
        J, h = np.empty((3 if reference_quat is None else 6, self.dU)), 1e-4
        for col, i in enumerate(env.act_idx):
            pose = []
            for sign in (1.0, -1.0):
                q = q0.copy()
                q[i] += sign * h
                robot.reset(q)
                pose.append(self.hand_pose(reference_quat))
            J[:, col] = (pose[0] - pose[1]) / (2 * h)
        robot.reset(q0)
        return J

    def initial_controllers(self, variance: float) -> list[LinearGaussianController]:
        """The initial local controllers of GPS (a PD law, LQR-FLM's starting point), one per condition:
        joint-position increments along the damped least-squares inverse of the TCP Jacobian at the
        condition's start posture, u = -INIT_GAIN J^+ (tcp - target) / action_scale, plus exploration
        noise of `variance` (normalized actions). Linear in the state x, whose last three entries are
        tcp - target; J is that of the start, so the law is only roughly right far from it."""
        out = []
        for seed in self.condition_seeds:
            self.env.reset(seed=int(seed))
            J = self.tcp_jacobian()
            J_pinv = J.T @ np.linalg.inv(J @ J.T + 1e-4 * np.eye(3))
            G = np.zeros((self.dU, self.dX))
            G[:, -3:] = self.INIT_GAIN * J_pinv / self.action_scale[:, None]
            n = self.dU                          # x = [q, qd, q_cmd - q, ...]: no target wind-up
            G[:, 2 * n:3 * n] = np.diag(self.INIT_DAMPING / self.action_scale)
            out.append(LinearGaussianController.pd(self.T, self.dX, self.dU, gains=G, variance=variance))
        return out

    def teacher_params(self) -> np.ndarray:
        """The MPC teacher's cost parameter for the episode just reset: the target position."""
        return self.env.target.copy()

    def _place_tcp(self, tcp_goal: np.ndarray):
        """Put the arm (kinematically, no simulated motion) where its TCP is near `tcp_goal`, with the
        hand's current orientation (pybullet IK), hold it there and return the observation."""
        import pybullet as p
        env, robot = self.env, self.env.robot
        hand = robot._links[env.ee_link]
        orn = p.getLinkState(robot.body, hand, computeForwardKinematics=True, physicsClientId=env.client)[5]
        q_all = p.calculateInverseKinematics(robot.body, hand, env.hand_target(tcp_goal, orn), orn,
                                             maxNumIterations=50, physicsClientId=env.client)
        q = np.array([q_all[robot.all_idx.index(i)] for i in robot.idx])
        env.hold_posture(np.clip(q, env.lower, env.upper))
        obs, *_ = env.step(np.zeros(self.dU))
        return obs

    def pose_dataset(self, n: int, rng: np.random.Generator, reach_fraction: float = 0.0, progress=None,
                     executor=None):
        """n rendered (and, under randomization, randomized) images with the pose to regress:
        [target xyz, tcp xyz] -- the object and the arm in view (vision pretraining) -- and the joint
        state the CNN sees with each image: (images (n, H, W, 3), poses (n, 6), joint states (n, 2 n_joints)).
        Each image is `pose_image` of its own seed, drawn from `rng` in [50000, 2**31) (never a
        held-out start), so `executor` (s2r.core.executor; None: this process) renders them on any
        backend with the same result. `progress(done, n)` is called after every image."""
        if not self.images:
            raise ValueError("pose_dataset needs an image agent")
        seeds = [int(s) for s in rng.integers(50_000, 2**31, size=n)]
        from s2r.core.executor import InlineExecutor
        executor = executor or InlineExecutor()
        batch = executor.run(_pose_image_job, seeds, keys=seeds, context=_context_for(self, executor),
                             shared=(self.worker_state(), float(reach_fraction)),
                             label="" if progress is not None else "rendering pose images",
                             local=self, on_done=progress)
        batch.raise_failures("pose image")
        images, poses, joints = zip(*batch.results) if n else ((), (), ())
        return np.array(images), np.array(poses), np.array(joints)

    def pose_image(self, seed: int, reach_fraction: float = 0.0):
        """One pose image of episode `seed` (its random choices from the same seed): the arm at its
        start posture after 0-14 random actions or, for a `reach_fraction` of the images, placed
        (inverse kinematics, no rollout) with its TCP somewhere on the way to the target, up to on it
        (where the gripper covers part of the target), +- 3 cm. (image, pose [target, tcp], joint state)."""
        rng = np.random.default_rng(int(seed))
        inputs = self.inputs
        obs, _ = self.env.reset(seed=int(seed))
        inputs.reset()
        if rng.uniform() < reach_fraction:
            a = min(1.0, rng.uniform(0.0, 1.3))
            obs = self._place_tcp(obs["tcp_pos"] + a * (obs["target"] - obs["tcp_pos"]) + rng.normal(0, 0.03, 3))
        else:
            for _ in range(int(rng.integers(0, 15))):
                inputs.observe(sim_context(obs, self.env))   # the episode's memory, as in a rollout
                u = rng.uniform(-1, 1, self.dU)
                inputs.record_action(u * self.action_scale)
                obs, *_ = self.env.step(u)
        return (obs["image"], np.concatenate([obs["target"], obs["tcp_pos"]]),
                inputs.observe(sim_context(obs, self.env)))

    def close(self):
        self.env.close()


def _feature_keys(keys) -> tuple:
    """Opt-in feature keys as a tuple, checked by name before any simulator starts."""
    keys = (keys,) if isinstance(keys, str) else tuple(keys or ())
    for k in keys:
        parse_key(k)
    return keys


def check_cost_weights(weights: dict, log_alpha: float | None = None) -> None:
    """ValueError (one line) for a cost weight that is not finite and >= 0 (a negative weight rewards
    moving away: LQR would diverge rather than fail loudly), or a log term's offset that is not
    positive."""
    bad = {k: v for k, v in weights.items() if not (np.isfinite(v) and v >= 0)}
    if bad:
        raise ValueError(f"cost weights must be finite and >= 0, got {bad}")
    if log_alpha is not None and not (np.isfinite(log_alpha) and log_alpha > 0):
        raise ValueError(f"log_alpha must be positive (the log term's offset), got {log_alpha}")


def _extra_doc(keys) -> str:
    return f"; {'; '.join(keys)} (learning/features.py)" if keys else ""
