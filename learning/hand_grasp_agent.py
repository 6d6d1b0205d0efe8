"""HandGraspLiftAgent: guided policy search samples for s2r/HandGraspLift-v0 (the 16-DoF hand on a
vertical slide grasps a 4 cm cube from the floor and lifts it 10 cm), state-based.

The agent abstraction is that of learning/agents.py (`ArmReachAgent`: the episode loop, held-out
starts, condition resampling); what differs is the task error (the cube's, not a link's) and the
local controllers' view of the object:

    x   = [q, qd, q_cmd - q, <state_features>, cube - palm (3), cube velocity (3), cube - target (3)]
          what the local controllers see (17 action joints: 16 hand joints and wrist_lift); the
          cube's pose relative to the palm and its velocity make the grasp's contact dynamics
          (closer to) Markov for the fitted linear-Gaussian models
    obs = [joint_pos, joint_vel, target, phase, <obs_features>]   what the MLP policy sees: the
          goal (the cube's start raised by the lift height, so it also says where the cube was) and
          the episode's progress (the grasp is a sequence: pre-shape, lower, close, lift; at the
          same posture the phase tells which comes next). No object tracking on the robot
    cost  l_t = 1/2 (w_p(t) |e|^2 + w_v |qd|^2 + w_u |u|^2), e = cube - target; w_p(t) =
          position_weight over the last `hold_fraction` of the episode (the cube must be up and
          stay there), 0 before (the cube cannot move before the grasp: a pull there only adds
          noise to the C-step); the final step weighs e and qd more (final_position_weight,
          final_velocity_weight)
    success  the task's own `info["success"]` after the last step (the cube more than 8 cm above
          its start and within 3 cm of the target); final_distance: |cube - target| (m)

Initial controllers (`initial_controllers`): the scripted expert (sim.scripted.GraspLiftController)
replayed along its own noiseless rollout of the condition, as time-varying linear feedback around
that trajectory: u_t = u*_t - init_gain (q_cmd - q_cmd*_t) / action_scale, where q_cmd = q +
(q_cmd - q) is linear in x. Contact switching (fingers touching, the cube leaving the floor) is left
to the dynamics fit: one GMM prior over every condition's transitions, with a cluster per contact
mode (the recipe: 4 clusters; learning/experiments/hand_grasp_lift.yaml).

PLATO's teacher (`teacher_action`, learning.plato.ExpertTeacher): the scripted expert itself on the
simulator's true observation.

Conditions are episode seeds (start posture, cube position in the grasp region); held-out starts
are seeds 10000 + i, and training seeds never fall in [10000, 20000) (`ArmReachAgent.resample`).
"""
from __future__ import annotations

import numpy as np

from .agents import ArmReachAgent, _extra_doc, check_cost_weights
from .linear_gaussian import LinearGaussianController, QuadraticCost

__all__ = ["HandGraspLiftAgent"]


class HandGraspLiftAgent(ArmReachAgent):
    """s2r/HandGraspLift-v0 in position control (normalized joint increments), state-based MLP policy.

    Condition c is the episode of seed `condition_seeds[c]`; held-out starts are seeds 10000 + i."""
    task = "s2r/HandGraspLift-v0"
    init_variance = 0.01           # exploration of the initial controllers (normalized actions)
    STATE_OBS_KEYS = ("joint_pos", "joint_vel", "target", "phase")      # the MLP's input
    OBJECT_DIM = 9                 # x's object part: cube - palm, cube velocity, cube - target

    def __init__(self, images: bool = False, image_size: int = 64, randomization=None, n_conditions: int = 4,
                 T: int | None = None, condition_seeds=None,
                 position_weight: float = 10.0, final_position_weight: float = 500.0, hold_fraction: float = 0.4,
                 velocity_weight: float = 0.001, final_velocity_weight: float = 0.1, action_weight: float = 0.01,
                 init_gain: float = 1.0, obs_features=(), state_features=(), config: str | None = None):
        if images:
            raise ValueError(f"{self.task}: only the state-based agent exists (no image observations)")
        if T is not None and int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        weights = dict(position_weight=position_weight, final_position_weight=final_position_weight,
                       velocity_weight=velocity_weight, final_velocity_weight=final_velocity_weight,
                       action_weight=action_weight)
        check_cost_weights(weights)
        if not (np.isfinite(hold_fraction) and 0.0 <= hold_fraction <= 1.0):
            raise ValueError(f"hold_fraction must be in [0, 1] (a fraction of the episode), got {hold_fraction}")
        if not (np.isfinite(init_gain) and 0 < init_gain <= 1):
            raise ValueError(f"init_gain must be in (0, 1] (a fraction of the way per step), got {init_gain}")
        self.weights = weights | {"hold_fraction": float(hold_fraction)}
        self.init_gain = float(init_gain)
        super().__init__(images=False, randomization=randomization, n_conditions=n_conditions, T=T,
                         condition_seeds=condition_seeds, target_marker_radius=0.0, target_stand=False,
                         obs_features=obs_features, state_features=state_features, config=config)
        self.dX = 3 * self.n + self.state_inputs.size + self.OBJECT_DIM
        self.success_distance = float("nan")      # unused: success is the task's own (see _run)
        self.cost = self._make_cost()

    def _make_cost(self) -> QuadraticCost:
        w, n, T = self.weights, self.n, self.T
        Q = np.zeros((T + 1, self.dX))
        Q[:, n:2 * n] = w["velocity_weight"]
        hold = np.arange(T + 1) >= (1.0 - w["hold_fraction"]) * T
        Q[hold, -3:] = w["position_weight"]
        Q[-1, n:2 * n] = w["final_velocity_weight"]
        Q[-1, -3:] = w["final_position_weight"]
        Qm = np.zeros((T + 1, self.dX, self.dX))
        Qm[:, np.arange(self.dX), np.arange(self.dX)] = Q
        return QuadraticCost(T, self.dX, self.dU, Q=Qm, R=w["action_weight"] * np.ones(self.dU))

    # ------------------------------------------------------------------ state and observations
    def cube_velocity(self) -> np.ndarray:
        import pybullet as p
        return np.asarray(p.getBaseVelocity(self.env.objects[0], physicsClientId=self.env.client)[0], float)

    def state(self, obs) -> np.ndarray:
        """x without the opt-in `state_features`: [q, qd, q_cmd - q, cube - palm, cube velocity, cube - target]."""
        idx = self.env.act_idx
        q = obs["joint_pos"][idx]
        cube = obs["object_pos"][0]
        return np.concatenate([q, obs["joint_vel"][idx], self.env.q_cmd[idx] - q,
                               cube - obs["palm_pos"], self.cube_velocity(), cube - obs["target"]])

    def full_state(self, obs, extra: np.ndarray) -> np.ndarray:
        """x: `state(obs)` with the state features' values `extra` before the object part."""
        base = self.state(obs)
        k = self.OBJECT_DIM
        return np.concatenate([base[:-k], extra, base[-k:]]) if extra.size else base

    def _run(self, seed: int, act, noise_seed: int | None = None, pin: dict | None = None):
        s = super()._run(seed, act, noise_seed, pin)
        finite = bool(np.all(np.isfinite(s.U)))
        _, success, extra = self.env.reward_success(self.env._true_obs)
        s.success = bool(success) and finite
        s.final_distance = float(extra["distance"]) if finite else float("nan")
        s.info = {"seed": int(seed), "lift": float(extra["lift"]) if finite else float("nan")}
        return s

    # ------------------------------------------------------------------ GPS's first controllers
    def expert_trajectory(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The scripted expert's noiseless rollout of episode `seed`: states x (T+1, dX) and its
        applied (clipped) actions u (T, dU)."""
        from s2r.sim.scripted import GraspLiftController

        from .features import sim_context
        env, inputs = self.env, self.state_inputs
        obs, _ = env.reset(seed=int(seed))
        expert = GraspLiftController(env)
        inputs.reset()
        X, U = [], []
        for t in range(self.T + 1):
            X.append(self.full_state(obs, inputs.observe(sim_context(obs, env))) if inputs.keys else self.state(obs))
            if t == self.T:
                break
            u = np.clip(np.asarray(expert(obs), float), -1.0, 1.0)
            inputs.record_action(u * self.action_scale)
            obs, *_ = env.step(u)
            U.append(u)
        return np.array(X), np.array(U)

    def _replay_controller(self, seed: int, variance: float) -> LinearGaussianController:
        """u_t = u*_t - init_gain (q_cmd - q_cmd*_t) / action_scale around the expert's rollout
        (`expert_trajectory`): q_cmd = q + (q_cmd - q), the first and third blocks of x."""
        X, U = self.expert_trajectory(seed)
        n = self.n
        K = np.zeros((self.dU, self.dX))
        K[:, :n] = K[:, 2 * n:3 * n] = -np.diag(self.init_gain / self.action_scale)
        k = U - X[:-1] @ K.T
        return LinearGaussianController(np.repeat(K[None], self.T, 0), k,
                                        np.repeat(variance * np.eye(self.dU)[None], self.T, 0))

    def initial_controllers(self, variance: float) -> list[LinearGaussianController]:
        """One per condition (+ exploration noise of `variance`): the scripted expert replayed along
        its own rollout of the condition with feedback on the commanded joint targets
        (`_replay_controller`). Every term is a function of the policy's input (joint_pos,
        cmd_offset, target, phase), so the policy can follow it."""
        return [self._replay_controller(seed, variance) for seed in self.condition_seeds]

    # ------------------------------------------------------------------ PLATO's teacher
    def teacher_params(self):
        """PLATO's teacher reads the episode from the simulator (`teacher_action`): no parameters."""
        return None

    def teacher_reset(self) -> None:
        """Start of an episode for the teacher: a fresh scripted expert (its phases start over)."""
        from s2r.sim.scripted import GraspLiftController
        self._expert = GraspLiftController(self.env)

    def teacher_action(self, x: np.ndarray) -> np.ndarray:
        """PLATO's label at the visited state (learning.plato.ExpertTeacher): the scripted expert's
        action on the simulator's true observation, its phases advanced by the states the
        executed (mixed) actions reached. Call once per control step, after `teacher_reset`."""
        if getattr(self, "_expert", None) is None:
            raise ValueError(f"{self.task}: teacher_action before teacher_reset")
        return np.asarray(self._expert(self.env._true_obs), float)

    # ------------------------------------------------------------------ export
    def robot_metadata(self) -> dict:
        """Which robot the policy drives: its description, the hardware config it was trained with,
        the palm link (the hand's ee_link) and the lift joint."""
        from s2r.core import resources
        env = self.env
        return {"robot": env.description.name,
                "hardware_config": resources.portable("hardware_config", self.config or env.cfg.path),
                "ee_link": env.ee_link, "tip_links": list(env.tip_links)}

    def metadata(self) -> dict:
        return {"task": self.task, "joint_names": self.joint_names, "action": "position_delta",
                "action_units": "rad per control step (added to the joint position targets; wrist_lift: m)",
                "control_rate_hz": float(1.0 / self.env.control_dt), "episode_steps": self.T,
                "inputs": ["state"], "obs_keys": list(self.obs_keys),
                "state": "[joint_pos; joint_vel; target (the cube's goal, world frame, m); phase"
                         + _extra_doc(self.obs_features) + "]",
                **self.robot_metadata(), "cost_weights": dict(self.weights)} | self._observed_joints()
