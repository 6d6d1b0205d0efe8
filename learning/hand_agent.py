"""HandReachAgent: guided policy search samples for s2r/HandReach-v0 (the four fingertips of the
16-DoF hand to four targets), state-based. Local-model GPS on a dexterous hand follows Kumar et al.
2016 ("Optimal Control with Learned Local Models: Application to Dexterous Manipulation").

The agent abstraction is that of learning/agents.py (`ArmReachAgent`, whose episode loop, held-out
starts and condition resampling it reuses); what differs is the task error, one 3-D error per
fingertip (k tips: the robot description's `tip_links`) instead of the TCP's:

    x   = [q, qd, q_cmd - q, <state_features>, tips - targets (3k)]   what the local controllers see
    obs = [joint_pos, joint_vel, target_minus_tips (3k), <obs_features>]   what the MLP policy sees
          (learning.features; the recipe adds cmd_offset, setpoint_offset, setpoint_step);
          the tips by forward kinematics of the joint angles (the task's `tip_pos`), so the policy
          reads the same input on the robot
    cost  l_t = 1/2 (w_p |e|^2 + w_v |qd|^2 + w_u |u|^2) + w_log(t) sum_i log(|e_i|^2 + alpha),
          e = tips - targets (3k), e_i tip i's error; the final step weighs e and qd more
          (final_position_weight, final_velocity_weight). The log terms (`LogDistanceCost`, one per
          fingertip) keep pulling at millimetres where the quadratic has gone flat: success needs
          every tip within 1.5 cm, so no tip may be traded for the others
    success  the task's own `info["success"]` after the last step (every fingertip within 1.5 cm
          of its target); final_distance: the largest fingertip error (m)

Initial controllers (GPS's first local controllers, `initial_controllers`): damped least squares on
the fingertip errors, u = -(init_gain J_t^+ e + (q_cmd - q)) / action_scale, with the fingertip
Jacobian J_t taken along the law's own rollout of the condition (time-varying, linear in x). The
same law at the current state is a function of the policy's input (joint_pos, target_minus_tips,
cmd_offset), so the policy can follow it; the alternative "ik" (the scripted expert's inverse
kinematics, u = init_gain (q* - q_cmd) / action_scale) would need the policy to learn the inverse
kinematics, and trains worse (learning/experiments/RESULTS.md, "hand_reach").

PLATO's teacher (`teacher_action`, learning.plato.ExpertTeacher): the same damped least-squares
law at the visited state (the fingertip Jacobian at the simulator's posture).

Conditions are episode seeds (start posture, targets); held-out starts are seeds 10000 + i, and
training seeds never fall in [10000, 20000) (`ArmReachAgent.resample`).
"""
from __future__ import annotations

import numpy as np

from .agents import ArmReachAgent, _extra_doc, check_cost_weights
from .linear_gaussian import LinearGaussianController, LocalQuadraticCost, LogDistanceCost, QuadraticCost

__all__ = ["HandReachAgent", "TipLogDistanceCost"]


class TipLogDistanceCost:
    """A quadratic cost plus one log-distance term per fingertip (`LogDistanceCost`'s term, Levine
    et al. 2016, over each group of coordinates in `tips`):

        l_t = q_t(x, u) + w_t sum_i log(|x[tips_i] - x*[tips_i]|^2 + alpha)

    Per tip rather than over all tips' coordinates together: the log's pull on a tip is then not
    weakened by another tip's larger error. `expand` sums the terms' expansions (`LogDistanceCost.expand`)."""

    def __init__(self, quadratic: QuadraticCost, tips, weights, alpha: float = 1e-5):
        self.quad = quadratic
        self.T, self.dX, self.dU = quadratic.T, quadratic.dX, quadratic.dU
        self.terms = [LogDistanceCost(quadratic, idx, weights, alpha) for idx in tips]

    def evaluate(self, X, U) -> np.ndarray:
        q = self.quad.evaluate(X, U)
        return q + sum(t.evaluate(X, U) - q for t in self.terms)

    def expand(self, X_bar) -> LocalQuadraticCost:
        C, c, CT, cT = (a.copy() for a in self.quad.quadratic())
        base = (C.copy(), c.copy(), CT.copy(), cT.copy())
        const = const0 = self.quad.constant()
        for t in self.terms:
            L = t.expand(X_bar)
            for acc, new, old in zip((C, c, CT, cT), L.quadratic(), base):
                acc += new - old
            const += L.const - const0
        return LocalQuadraticCost(C, c, CT, cT, const)


class HandReachAgent(ArmReachAgent):
    """s2r/HandReach-v0 in position control (normalized joint increments), state-based MLP policy.

    Condition c is the episode of seed `condition_seeds[c]` (start posture near home, fingertip
    targets of a random posture and, under `randomization`, the randomization draw); held-out
    starts are seeds 10000 + i."""
    task = "s2r/HandReach-v0"
    init_variance = 0.01           # exploration of the initial controllers (normalized actions)
    INIT_GAIN = 1.0                # initial controllers: the fraction of the step to the goal moved per step
    DLS_DAMPING = 0.05             # the "jacobian" initial controllers' damping (m)
    INIT_CONTROLLERS = ("jacobian", "ik")
    STATE_OBS_KEYS = ("joint_pos", "joint_vel", "target_minus_tips")     # the MLP's input

    def __init__(self, images: bool = False, image_size: int = 64, randomization=None, n_conditions: int = 4,
                 T: int | None = None, condition_seeds=None,
                 position_weight: float = 2.0, final_position_weight: float = 500.0,
                 velocity_weight: float = 0.01, final_velocity_weight: float = 1.0, action_weight: float = 0.01,
                 log_weight: float = 0.0, final_log_weight: float = 1.0, log_alpha: float = 1e-5,
                 init_gain: float = INIT_GAIN, init_controller: str = "jacobian", obs_features=(), state_features=(),
                 config: str | None = None):
        if images:
            raise ValueError(f"{self.task}: only the state-based agent exists (no image observations)")
        if T is not None and int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        weights = dict(position_weight=position_weight, final_position_weight=final_position_weight,
                       velocity_weight=velocity_weight, final_velocity_weight=final_velocity_weight,
                       action_weight=action_weight, log_weight=log_weight, final_log_weight=final_log_weight)
        check_cost_weights(weights, log_alpha)
        if not (np.isfinite(init_gain) and 0 < init_gain <= 1):
            raise ValueError(f"init_gain must be in (0, 1] (a fraction of the way per step), got {init_gain}")
        if init_controller not in self.INIT_CONTROLLERS:
            raise ValueError(f"init_controller must be one of {', '.join(self.INIT_CONTROLLERS)}, "
                             f"got {init_controller!r}")
        self.init_controller = init_controller
        self.weights = weights | {"log_alpha": log_alpha}
        self.init_gain = float(init_gain)
        super().__init__(images=False, randomization=randomization, n_conditions=n_conditions, T=T,
                         condition_seeds=condition_seeds, target_marker_radius=0.0, target_stand=False,
                         obs_features=obs_features, state_features=state_features, config=config)
        self.n_tips = len(self.env.tip_links)
        self.dX = 3 * self.n + self.state_inputs.size + 3 * self.n_tips
        self.success_distance = float(self.env.success_threshold)   # the task's own (see _run)
        self.cost = self._make_cost()

    def _make_cost(self):
        w, n, T, e = self.weights, self.n, self.T, 3 * self.n_tips
        Q = np.zeros((T + 1, self.dX))
        Q[:, n:2 * n] = w["velocity_weight"]
        Q[:, -e:] = w["position_weight"]
        Q[-1, n:2 * n] = w["final_velocity_weight"]
        Q[-1, -e:] = w["final_position_weight"]
        Qm = np.zeros((T + 1, self.dX, self.dX))
        Qm[:, np.arange(self.dX), np.arange(self.dX)] = Q
        quad = QuadraticCost(T, self.dX, self.dU, Q=Qm, R=w["action_weight"] * np.ones(self.dU))
        w_log = np.full(T + 1, w["log_weight"])
        w_log[-1] = w["final_log_weight"]
        if not w_log.any():
            return quad
        tips = [slice(self.dX - e + 3 * i, self.dX - e + 3 * i + 3) for i in range(self.n_tips)]
        return TipLogDistanceCost(quad, tips, w_log, alpha=w["log_alpha"])

    # ------------------------------------------------------------------ state and observations
    def _feature_params(self) -> dict:
        return {"episode_steps": self.T, "tip_count": len(self.env.tip_links)}

    def state(self, obs) -> np.ndarray:
        """x without the opt-in `state_features`: [q, qd, q_cmd - q, tips - targets]."""
        idx = self.env.act_idx
        q = obs["joint_pos"][idx]
        return np.concatenate([q, obs["joint_vel"][idx], self.env.q_cmd[idx] - q,
                               (obs["tip_pos"] - obs["target"]).ravel()])

    def full_state(self, obs, extra: np.ndarray) -> np.ndarray:
        """x: `state(obs)` with the state features' values `extra` before the fingertip errors."""
        base = self.state(obs)
        e = 3 * len(self.env.tip_links)
        return np.concatenate([base[:-e], extra, base[-e:]]) if extra.size else base

    def _run(self, seed: int, act, noise_seed: int | None = None, pin: dict | None = None):
        s = super()._run(seed, act, noise_seed, pin)        # the episode loop of ArmReachAgent (our state and obs keys)
        finite = bool(np.all(np.isfinite(s.U)))
        # the task's own success and distance at the last step (its true observation)
        _, success, extra = self.env.reward_success(self.env._true_obs)
        s.success = bool(success) and finite
        s.final_distance = float(extra["distance"]) if finite else float("nan")
        s.info = {"seed": int(seed)}
        return s

    # ------------------------------------------------------------------ GPS's first controllers
    def goal_posture(self) -> np.ndarray:
        """q* of the episode just reset: the scripted expert's fingertip inverse kinematics for
        its targets (all joints; the robot is put back where it was)."""
        from s2r.sim.scripted import HandReachController
        return HandReachController(self.env).solve(self.env.target)

    def tip_jacobian(self) -> np.ndarray:
        """d tips / d q (3k, dU) of the action joints at the current posture (pybullet's Jacobians of
        the tip links, stacked tip by tip as in x)."""
        import pybullet as p
        env, robot = self.env, self.env.robot
        q_all, _ = robot.joint_state()
        zeros = [0.0] * len(q_all)
        rows = [np.asarray(p.calculateJacobian(robot.body, robot._links[tip], [0, 0, 0], list(map(float, q_all)), zeros,
                                               zeros, physicsClientId=env.client)[0])[:, robot._pos_in_all]
                for tip in env.tip_links]
        return np.vstack(rows)[:, env.act_idx]

    def _ik_controller(self, variance: float) -> LinearGaussianController:
        """u = init_gain (q* - q_cmd) / action_scale for the episode just reset (see initial_controllers)."""
        n, gain = self.n, self.init_gain / self.action_scale
        q_star = self.goal_posture()[self.env.act_idx]
        K = np.zeros((self.dU, self.dX))
        K[:, :n] = K[:, 2 * n:3 * n] = -np.diag(gain)
        return LinearGaussianController(np.repeat(K[None], self.T, 0), np.repeat((gain * q_star)[None], self.T, 0),
                                        np.repeat(variance * np.eye(self.dU)[None], self.T, 0))

    def _jacobian_controller(self, seed: int, variance: float) -> LinearGaussianController:
        """The damped least-squares law u = -(init_gain J_t^+ e + (q_cmd - q)) / action_scale,
        J_t^+ = J_t' (J_t J_t' + damping^2 I)^-1 with J_t the fingertip Jacobian along the law's own
        noiseless rollout of the condition (`seed`): time-varying gains, linear in x."""
        env, n, e = self.env, self.n, 3 * self.n_tips
        inv_scale = 1.0 / self.action_scale
        obs, _ = env.reset(seed=int(seed))
        inputs = self.state_inputs
        inputs.reset()
        from .features import sim_context
        K = np.zeros((self.T, self.dU, self.dX))
        for t in range(self.T):
            x = self.full_state(obs, inputs.observe(sim_context(obs, env))) if inputs.keys else self.state(obs)
            J = self.tip_jacobian()
            J_pinv = J.T @ np.linalg.inv(J @ J.T + self.DLS_DAMPING ** 2 * np.eye(e))
            K[t][:, -e:] = -self.init_gain * J_pinv * inv_scale[:, None]
            K[t][:, 2 * n:3 * n] = -np.diag(inv_scale)
            u = np.clip(K[t] @ x, -1.0, 1.0)
            inputs.record_action(u * self.action_scale)
            obs, *_ = env.step(u)
        return LinearGaussianController(K, np.zeros((self.T, self.dU)),
                                        np.repeat(variance * np.eye(self.dU)[None], self.T, 0))

    def initial_controllers(self, variance: float) -> list[LinearGaussianController]:
        """One per condition (+ exploration noise of `variance`), linear in x:
        - "jacobian" (default): damped least squares on the fingertip errors, u = -(init_gain J_t^+ e
          + (q_cmd - q)) / action_scale, J_t along the law's own rollout (`_jacobian_controller`).
          The same law of the current state is a function of the policy's own input (joint_pos,
          target_minus_tips, cmd_offset), so the policy can follow it;
        - "ik": the scripted expert's inverse kinematics, q* for the condition's targets (found once),
          u = init_gain (q* - q_cmd) / action_scale; the policy would have to learn the inverse
          kinematics to follow it."""
        out = []
        for seed in self.condition_seeds:
            if self.init_controller == "ik":
                self.env.reset(seed=int(seed))
                out.append(self._ik_controller(variance))
            else:
                out.append(self._jacobian_controller(seed, variance))
        return out

    # ------------------------------------------------------------------ PLATO's teacher
    def teacher_params(self):
        """PLATO's teacher reads the episode from the simulator (`teacher_action`): no parameters."""
        return None

    def teacher_reset(self) -> None:
        """Start of an episode for the teacher: the damped least-squares law keeps no memory."""

    def teacher_action(self, x: np.ndarray) -> np.ndarray:
        """PLATO's label at the visited state x (learning.plato.ExpertTeacher): the "jacobian" initial
        controllers' law, u = -(init_gain J^+ e + (q_cmd - q)) / action_scale, with the fingertip
        Jacobian at the simulator's current posture."""
        n, e = self.n, 3 * self.n_tips
        J = self.tip_jacobian()
        J_pinv = J.T @ np.linalg.inv(J @ J.T + self.DLS_DAMPING ** 2 * np.eye(e))
        return -(self.init_gain * J_pinv @ x[-e:] + x[2 * n:3 * n]) / self.action_scale

    # ------------------------------------------------------------------ export
    def robot_metadata(self) -> dict:
        """Which robot the policy drives: its description, the hardware config it was trained with,
        the fingertip links its target errors are of."""
        from s2r.core import resources
        env = self.env
        return {"robot": env.description.name,
                "hardware_config": resources.portable("hardware_config", self.config or env.cfg.path),
                "tip_links": list(env.tip_links), "tip_count": len(env.tip_links)}

    def metadata(self) -> dict:
        return {"task": self.task, "joint_names": self.joint_names, "action": "position_delta",
                "action_units": "rad per control step (added to the joint position targets)",
                "control_rate_hz": float(1.0 / self.env.control_dt), "episode_steps": self.T,
                "inputs": ["state"], "obs_keys": list(self.obs_keys),
                "state": "[joint_pos; joint_vel; target - tip_pos" + _extra_doc(self.obs_features) +
                         "] (world frame, m; tip_pos by forward kinematics of tip_links, tip by tip)",
                **self.robot_metadata(), "cost_weights": dict(self.weights)} | self._observed_joints()
