"""ArmInsertAgent: guided policy search samples for s2r/ArmInsert-v0 (the peg-in-shape-sorter task of
Levine et al. 2016, "End-to-End Training of Deep Visuomotor Policies"), state-based.

The agent abstraction is that of learning/agents.py (`ArmReachAgent`, whose episode loop, held-out
starts and condition resampling it reuses); what differs is the point that must reach the target:
the bottom face of the held peg instead of the TCP.

    x   (24) = [q, qd, q_cmd - q, peg_bottom - target]     what the local controllers see;
               peg_bottom from the task's observed peg pose (`ArmInsert.peg_bottom`)
    obs (18) = [joint_pos, joint_vel, target - peg_bottom_fk, phase]  what the MLP policy sees; the
               peg bottom by forward kinematics (the peg is held rigidly: GRIP_DEPTH + PEG_HALF_LENGTH
               along the hand's z axis below the TCP), so a robot needs no peg tracking; phase =
               min(t / T, 1), the episode's progress (`phase`). The local controllers are time-varying
               (line the peg up over the hole, then lower it), and a policy without the phase cannot
               tell which half it is in at the same state
    cost     l_t = 1/2 (w_p |e - h_t z|^2 + w_v |qd|^2 + w_u |u|^2) + w_log(t) log(|e - h_t z|^2 + alpha),
             e = peg_bottom - target; h_t = `approach_height` over the first `descend_fraction` of
             the episode, then 0: the peg is lined up over the hole, then lowered (the straight line
             from the start crosses the plate around the hole). The initial controllers follow the
             same plan, so the C-steps refine it rather than replace it. The final step weighs e
             and qd more (final_position_weight, final_velocity_weight). The log term
             (`LogDistanceCost`, Levine et al. 2016) keeps pulling at millimetres, where the
             quadratic has gone flat and the hole's clearance is: w_log(t) = log_weight at every
             step, measured from the step's target (the hover point, then the hole),
             final_log_weight at the last step. The weights are constructor keywords; the recipe
             `s2r train` runs sets them in learning/experiments/insert_state.yaml, and how they
             were chosen (what each change measured) is in learning/experiments/RESULTS.md
    success  the task's own `info["success"]` after the last step (peg bottom inside the matching
             hole, more than 1.5 cm below the top surface)

Conditions are episode seeds (box position, start posture); held-out starts are seeds 10000 + i,
and training seeds never fall in [10000, 20000) (`ArmReachAgent.resample`).
"""
from __future__ import annotations

import numpy as np

from .agents import ArmReachAgent, Sample, _extra_doc, check_cost_weights
from .features import peg_bottom, phase, sim_context
from .linear_gaussian import LinearGaussianController, LogDistanceCost, QuadraticCost

__all__ = ["ArmInsertAgent", "peg_bottom_fk", "peg_bottom_offset", "phase"]


def peg_bottom_offset() -> float:
    """m from the TCP to the held peg's bottom along the hand's z axis (the metadata's peg_bottom_offset)."""
    from s2r.sim.tasks.arm import ArmInsert
    return ArmInsert.GRIP_DEPTH + ArmInsert.PEG_HALF_LENGTH


def peg_bottom_fk(obs) -> np.ndarray:
    """The held peg's bottom-face centre from the TCP pose alone (forward kinematics): the peg is
    rigidly gripped, its bottom GRIP_DEPTH + PEG_HALF_LENGTH along the hand's z axis below the TCP
    (learning.features.peg_bottom, which the target_minus_peg_bottom feature uses)."""
    return peg_bottom(sim_context(obs), {"peg_bottom_offset": peg_bottom_offset()})


class ArmInsertAgent(ArmReachAgent):
    """s2r/ArmInsert-v0 in position control (normalized joint increments), state-based MLP policy.

    Condition c is the episode of seed `condition_seeds[c]` (box position on the table, start
    posture above it and, under `randomization`, the randomization draw); held-out starts are
    seeds 10000 + i. `shape` is the task's peg ("square", "slot", or None: random per episode)."""
    task = "s2r/ArmInsert-v0"
    # Exploration of the initial controllers (normalized actions). The noise integrates into the
    # joint targets, and the hole's clearance is 4 mm: the initial controllers insert on 20 of 20
    # held-out starts without noise, 19/20 at variance 0.001, 11/20 at 0.01, 2/20 at 0.1. At 0.001
    # the samples are too alike for the policy, which then flies off on new starts (held-out
    # distance 0.3-0.4 m after 2 iterations).
    init_variance = 0.01
    APPROACH_HEIGHT = 0.03         # default approach_height: the peg bottom this far above the target
    INIT_GAIN = 0.15               # initial controllers: the fraction of the error corrected per step
                                   # (1 cm over the lid) until `descend_fraction` of the episode
    STATE_OBS_KEYS = ("joint_pos", "joint_vel", "target_minus_peg_bottom", "phase")   # the MLP's input

    def __init__(self, images: bool = False, image_size: int = 64, randomization=None, n_conditions: int = 4,
                 T: int = 250, condition_seeds=None, shape: str | None = "square",
                 position_weight: float = 2.0, final_position_weight: float = 500.0,
                 approach_height: float = APPROACH_HEIGHT, descend_fraction: float = 0.5,
                 velocity_weight: float = 0.01, final_velocity_weight: float = 1.0, action_weight: float = 0.01,
                 log_weight: float = 0.01, final_log_weight: float = 1.0, log_alpha: float = 1e-5,
                 obs_features=(), state_features=(), config: str | None = None):
        if images:
            raise ValueError(f"{self.task}: only the state-based agent exists (no image observations)")
        if int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        if not 0.0 <= descend_fraction <= 1.0:
            raise ValueError(f"descend_fraction must be in [0, 1], got {descend_fraction}")
        if not (np.isfinite(approach_height) and 0.0 <= approach_height <= 0.2):
            raise ValueError(f"approach_height must be in [0, 0.2] m, got {approach_height}")
        weights = dict(position_weight=position_weight, final_position_weight=final_position_weight,
                       velocity_weight=velocity_weight, final_velocity_weight=final_velocity_weight,
                       action_weight=action_weight, log_weight=log_weight, final_log_weight=final_log_weight)
        check_cost_weights(weights, log_alpha)
        self.shape = shape
        self.weights = {"position_weight": position_weight, "final_position_weight": final_position_weight,
                        "approach_height": approach_height, "descend_fraction": descend_fraction,
                        "velocity_weight": velocity_weight, "final_velocity_weight": final_velocity_weight,
                        "action_weight": action_weight, "log_weight": log_weight,
                        "final_log_weight": final_log_weight, "log_alpha": log_alpha}
        super().__init__(images=False, randomization=randomization, n_conditions=n_conditions, T=int(T),
                         condition_seeds=condition_seeds, target_marker_radius=0.0, target_stand=False,
                         obs_features=obs_features, state_features=state_features, config=config)
        if shape != "square":                 # ArmReachAgent made the task with its default peg
            import s2r.sim.tasks
            self.env.close()
            self.env = s2r.sim.tasks.make(self.task, randomization=randomization, shape=shape, config=config).unwrapped
        self.success_distance = float("nan")  # unused: success is the task's own criterion (see _run)
        self.cost = self._make_cost()

    def hover_heights(self) -> np.ndarray:
        """h_t (T+1,): the peg bottom's planned height above the target, approach_height until
        descend_fraction of the episode, then 0 (the cost's target and the initial controllers')."""
        w = self.weights
        return np.where(np.arange(self.T + 1) < w["descend_fraction"] * self.T, w["approach_height"], 0.0)

    def _make_cost(self) -> LogDistanceCost:
        w, n, T = self.weights, self.n, self.T
        Q = np.zeros((T + 1, self.dX))
        Q[:, n:2 * n] = w["velocity_weight"]
        Q[:, -3:] = w["position_weight"]
        Q[-1, n:2 * n] = w["final_velocity_weight"]
        Q[-1, -3:] = w["final_position_weight"]
        Qm = np.zeros((T + 1, self.dX, self.dX))
        Qm[:, np.arange(self.dX), np.arange(self.dX)] = Q
        x_target = np.zeros((T + 1, self.dX))
        x_target[:, -1] = self.hover_heights()
        quad = QuadraticCost(T, self.dX, self.dU, Q=Qm, R=w["action_weight"] * np.ones(self.dU), x_target=x_target)
        w_log = np.full(T + 1, w["log_weight"])     # from each step's target: the hover point, then the hole
        w_log[-1] = w["final_log_weight"]
        return LogDistanceCost(quad, slice(-3, None), w_log, alpha=w["log_alpha"])

    def initial_controllers(self, variance: float) -> list[LinearGaussianController]:
        """GPS's first local controllers: a PD law, one per condition, on the peg bottom's position
        and the hand's orientation through the 6-D Jacobian of the condition's start posture,

            u = -(INIT_GAIN J^+ [e - h_t z; r0 + J_r (q - q0)] + INIT_DAMPING (q_cmd - q)) / action_scale

    (+ noise of `variance`),

        e = peg_bottom - target, r the hand's rotation vector from pointing straight down (J_r its
        rows of J: r is linearized at the start, so the law is linear in the state x, whose first
        entries are q). h_t = `hover_heights()` (approach_height until `descend_fraction` of the
        episode, then 0): the peg is lined up 1 cm over the lid, then lowered. Both parts matter: on held-out starts 0-19 the
        noiseless law inserts 20 of 20; straight at the target (h = 0) 7/20 (the peg lands on the
        lid beside the hole); without the orientation rows 15/20 (a tilted peg jams on the hole's
        wall, 12-14 mm deep)."""
        from s2r.sim.tasks.arm import DOWN
        n, g = self.n, self.INIT_GAIN
        hover = self.hover_heights()[:-1]
        out = []
        for seed in self.condition_seeds:
            self.env.reset(seed=int(seed))
            J = self.tcp_jacobian(DOWN)
            r0, q0 = self.hand_pose(DOWN)[3:], self.env.robot.state()[0][self.env.act_idx]
            Jp = J.T @ np.linalg.inv(J @ J.T + 1e-4 * np.eye(6)) * (g / self.action_scale[:, None])
            G = np.zeros((self.dU, self.dX))
            G[:, -3:], G[:, :n] = Jp[:, :3], Jp[:, 3:] @ J[3:]
            G[:, 2 * n:3 * n] = np.diag(self.INIT_DAMPING / self.action_scale)   # no target wind-up
            k = np.outer(hover, Jp[:, 2]) - Jp[:, 3:] @ (r0 - J[3:] @ q0)
            out.append(LinearGaussianController(np.repeat(-G[None], self.T, 0), k,
                                                np.repeat(variance * np.eye(self.dU)[None], self.T, 0)))
        return out

    def metadata(self) -> dict:
        return {"task": self.task, "joint_names": self.joint_names, "action": "position_delta",
                "action_units": "rad per control step (added to the joint position targets)",
                "control_rate_hz": float(1.0 / self.env.control_dt), "episode_steps": self.T,
                "peg_shape": self.shape, "inputs": ["state"], "obs_keys": list(self.obs_keys),
                "state": "[joint_pos; joint_vel; target - peg_bottom; phase" + _extra_doc(self.obs_features) +
                         "] (world frame, m; peg_bottom by "
                         "forward kinematics: tcp + peg_bottom_offset along the hand's z axis, tcp = ee_link + "
                         "tcp_offset in the link's frame; phase = min(step / episode_steps, 1), step = control "
                         "steps since the episode (the goal) began)",
                **self.robot_metadata(),
                "peg_bottom_offset": peg_bottom_offset(),
                "cost_weights": dict(self.weights)} | self._observed_joints()

    def _feature_params(self) -> dict:
        return {"episode_steps": self.T, "peg_bottom_offset": peg_bottom_offset()}

    def state(self, obs) -> np.ndarray:
        """x without the opt-in `state_features`: [q, qd, q_cmd - q, peg_bottom - target]."""
        q = obs["joint_pos"][self.env.act_idx]
        return np.concatenate([q, obs["joint_vel"][self.env.act_idx], self.env.q_cmd[self.env.act_idx] - q,
                               self.env.peg_bottom(obs) - obs["target"]])

    def _run(self, seed: int, act, noise_seed: int | None = None, pin: dict | None = None) -> Sample:
        s = super()._run(seed, act, noise_seed, pin)        # the episode loop of ArmReachAgent (our state and obs keys)
        finite = bool(np.all(np.isfinite(s.U)))
        # the task's own success and distance at the last step: what env.step put in `info`
        # (reward_success of the step's true observation); a broken controller's episode fails
        _, success, extra = self.env.reward_success(self.env._true_obs)
        s.success = bool(success) and finite
        s.final_distance = float(extra["distance"]) if finite else float("nan")
        s.info = {"depth": float(extra["depth"]) if finite else float("nan"), "seed": int(seed)}
        return s
