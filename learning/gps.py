"""Mirror-descent guided policy search (Montgomery & Levine, "Guided Policy Search via Approximate
Mirror Descent", NIPS 2016, Algorithm 2), with LQR-FLM local controllers (Levine & Abbeel 2014).

    for iteration k = 1 .. K
        1. run the global policy pi_theta (on-policy; off-policy: the local controllers p_i) from
           each training condition i: N samples {tau_ij}
        2. fit linear-Gaussian dynamics p_i(x'|x, u) per condition, with the condition's GMM prior
        3. linearize the global policy at the samples: pi_bar_i(u|x) (GMM prior as well)
        4. adjust the step size epsilon from predicted versus actual improvement (one multiplier
           shared by the conditions, from their averages; see `_adjust_step`)
        5. C-step: p_i <- argmin E_p[l(tau)]  s.t.  KL(p_i || pi_bar_i) <= epsilon_i   (LQR-FLM)
        6. S-step: theta <- argmin sum_{i,j,t} (pi_theta(o_t) - mu_p_i(x_t))' Sigma_p_i^-1 (...)
           (precision-weighted regression of the policy on the local controllers' means)

Input remapping: p_i acts on the full state x_t; pi_theta sees the observation o_t (joint state,
or camera image + joint state). In the first iteration p_i is the initial controller (PD law, or
iLQR on a known model: `LinearGaussianController.from_trajectory`) and pi_bar_i = p_i.
With `resample_conditions` the agent draws new training conditions (same number, same start
distribution, never a held-out start) before every iteration after the first: on-policy MDGPS
needs no local controller from the previous iteration (the C-step starts from the linearized
global policy on the new conditions). The step size then stays at `kl_step` (a deviation from the
reference, measured: see `_adjust_step`). A condition's dynamics prior is fitted on
that condition's own samples: with new conditions, on the current iteration's only. Off-policy
sampling starts the local controllers of new conditions from the agent's initial controllers.
With `adr` (automatic domain randomization, Akkaya et al. 2019, Alg. 1: `s2r train gps --adr all`)
a fraction `adr_boundary_prob` of each iteration's new conditions has one randomization parameter
pinned to an end of its current range; the global policy's samples there (on-policy: no extra
rollouts) are ADR's results, judged by the task's own success, and an end whose `adr_buffer`
results reach 80 % moves outward by `adr_step` of the range's initial width (50 % or less: back
toward the preset's). Later conditions and the held-out evaluation draw from the moved ranges.
Step rejection (resampled conditions, where the MDGPS step rule is off; `step_rejection`): the
held-out starts are the same every iteration, so their success compares one global policy with the
next where the training conditions cannot. An iteration whose policy falls more than
`step_rejection` below the best kept iteration's is undone, as a trust-region method rejects a step
that worsened the true objective: the policy, its optimizer, its exploration covariance and the
replayed samples go back to the previous iteration's, and the KL step is halved (down to
`min_step_mult`). The iteration stays in the history, marked `rejected`, with the success it had.
`s2r train` exports the last kept iteration's policy, or an earlier kept one that did significantly
better on the same held-out starts (`export_policy`, learning.best_policy).
Initial controllers: given, or the agent's `initial_controllers(variance)` (ArmReachAgent: a PD law
on the TCP's error through the Jacobian at the start), or zero gains that explore around holding still.
Everything the next iteration needs, random number generator states included, is in
`state_dict()`, so a run resumed from a checkpoint continues exactly as if it had not stopped.

This module is MDGPS itself, the iteration loop of the algorithm box above; the parts it uses:
`learning.gps_config` (GPSConfig, TrainingError), `learning.gps_policy` (PolicyRunner, the S-step's
`train_policy_weighted`), `learning.gps_vision` (vision pretraining, feature points, AuxPose) and
`learning.gps_checkpoint` (state_dict / load_state_dict).
"""
from __future__ import annotations

import copy
import logging
import time

import numpy as np
import torch

from s2r.sim.randomization import AutomaticDomainRandomization, RandomizationError

from .agents import collect_samples, evaluate_held_out
from .best_policy import BestPolicy
from .dynamics import GMMPrior, fit_linear_gaussian_dynamics, linearize_policy
from .gps_checkpoint import gps_state_dict, load_gps_state_dict
from .gps_config import GPSConfig, TrainingError
from .gps_policy import PolicyRunner, to_torch, train_policy_weighted
from .gps_vision import AuxPose, feature_points, pretrain_vision, render_and_pretrain
from .linear_gaussian import LinearGaussianController, LinearGaussianDynamics, expected_cost
from .lqr_flm import NotPositiveDefinite, adjust_step, lqr_flm_update
from .policies import MLPPolicy, VisuomotorCNN, make_policy

__all__ = ["GPSConfig", "MDGPS", "TrainingError", "PolicyRunner", "AuxPose",
           "train_policy_weighted", "feature_points", "pretrain_vision", "render_and_pretrain"]
log = logging.getLogger(__name__)


class MDGPS:
    """Mirror-descent GPS over an agent's training conditions (see the module docstring)."""

    def __init__(self, agent, config: GPSConfig | None = None, policy=None,
                 initial_controllers: list[LinearGaussianController] | None = None):
        self.agent, self.cfg = agent, (config or GPSConfig()).validate()
        a = agent
        if policy is None:
            policy = (VisuomotorCNN(a.joint_dim, a.dU, a.image_size, pose_dim=6) if a.images
                      else MLPPolicy(a.obs_dim, a.dU, self.cfg.hidden))
        self._check_policy(policy)
        self.policy = policy
        torch.manual_seed(self.cfg.seed)
        self.policy.load_state_dict(make_policy(policy.config()).state_dict())   # seeded init
        self.aux = (AuxPose(policy) if isinstance(policy, VisuomotorCNN) and self.cfg.aux_pose_weight > 0
                    else None)
        self.optimizer = torch.optim.Adam(self._trainable() + ([] if self.aux is None else list(self.aux.parameters())),
                                          lr=self.cfg.learning_rate)
        self.rng = np.random.default_rng(self.cfg.seed)
        self.gen = torch.Generator().manual_seed(self.cfg.seed)
        M = a.n_conditions
        self.init_variance = self.cfg.init_variance or a.init_variance
        if initial_controllers is None:
            initial_controllers = self._agent_initial_controllers()
        if self.cfg.resample_conditions and not hasattr(a, "resample"):
            raise ValueError(f"task {a.task} has fixed conditions: resample_conditions is not supported")
        if len(initial_controllers) != M:
            raise ValueError(f"{len(initial_controllers)} initial controllers for {M} conditions")
        for c in initial_controllers:
            if (c.T, c.dX, c.dU) != (a.T, a.dX, a.dU):
                raise ValueError(f"initial controller (T={c.T}, dX={c.dX}, dU={c.dU}) does not fit the agent "
                                 f"(T={a.T}, dX={a.dX}, dU={a.dU})")
        self.controllers = list(initial_controllers)
        self.step_mult = np.ones(M)        # one value for every condition (`_adjust_step`)
        self.last_step_costs: dict | None = None
        self.eta = np.ones(M)
        self.prev_dyn: list[LinearGaussianDynamics | None] = [None] * M
        self.prev_pibar: list[LinearGaussianController | None] = [None] * M
        self.prev_traj: list[LinearGaussianController | None] = [None] * M   # the previous C-step's controllers
        self.prev_xbar: list[np.ndarray | None] = [None] * M    # where the previous cost expansion was taken
        self.transitions: list[list[np.ndarray]] = [[] for _ in range(M)]   # per condition (pooled: index 0)
        self.policy_cov = self.init_variance * np.eye(a.dU)
        self.iteration = 0
        self.replay: list[dict] = []
        self.pretrained = not a.images
        self.history: list[dict] = []
        self.best = BestPolicy()           # the iteration `s2r train` exports (export_policy)
        self.dropped_samples = 0
        self.reruns = 0              # episodes run again after their worker died (s2r.core.executor)
        self.executor = None         # where rollouts run (s2r.core.executor); None: in this process
        self.device = "cpu"          # torch device of vision pretraining (--device)
        self.adr = self._make_adr() if self.cfg.adr else None
        self.adr_boundaries: list = [None] * M     # each condition's pinned end (ADR), None: an ordinary draw

    # ------------------------------------------------------------------ helpers
    def _make_adr(self) -> AutomaticDomainRandomization:
        """ADR over the agent's randomization (`cfg.adr`: parameter names, or "all" for its
        per-episode dynamics and timing ranges). A range's end moves by `adr_step` of its initial
        width (a loguniform one's in log space; integers by 1); the agent may bound a range
        (`adr_limits`: e.g. no more action latency than its inputs hold actions in flight)."""
        a = self.agent
        if not self.cfg.resample_conditions:
            raise ValueError("adr pins new conditions every iteration: it needs them drawn anew (no fixed_conditions)")
        r = getattr(getattr(a, "env", None), "randomizer", None)
        if not r:
            raise ValueError("adr: the task is not randomized (give a randomization preset)")
        names = list(self.cfg.adr)
        if names == ["all"]:
            names = AutomaticDomainRandomization.eligible(r, getattr(a.env, "dims", None))
            if not names:
                raise ValueError(f"adr all: preset {r.name!r} has no per-episode dynamics or timing range to widen")
        for n in names:
            if n not in r.params:
                raise ValueError(f"adr: {n!r} is not randomized by preset {r.name!r} "
                                 f"(ranged there: {', '.join(AutomaticDomainRandomization.eligible(r)) or 'none'})")
        ranged = AutomaticDomainRandomization.eligible(r)      # the others: the constructor's one-line error
        def width(spec):          # in the space the range is drawn in
            return np.log(spec.high / spec.low) if spec.dist == "loguniform" else spec.high - spec.low
        delta = {n: 1 if r.params[n].dist == "randint" else self.cfg.adr_step * width(r.params[n])
                 for n in names if n in ranged}
        try:
            return AutomaticDomainRandomization(r, names, delta, buffer_size=self.cfg.adr_buffer,
                                                boundary_prob=self.cfg.adr_boundary_prob,
                                                limits=a.adr_limits() if hasattr(a, "adr_limits") else None)
        except RandomizationError as e:
            raise ValueError(f"adr: {e}") from None

    def _adr_pin(self) -> None:
        """New conditions: each, with probability adr_boundary_prob, has one parameter at an end."""
        pins = [self.adr.next_pin(self.rng) for _ in range(self.agent.n_conditions)]
        self.agent.set_pins([p for p, _ in pins])
        self.adr_boundaries = [b for _, b in pins]

    def _adr_report(self, samples) -> None:
        """The pinned conditions' samples (the global policy's) are ADR's results; the ranges it
        moved go to the agent (and its workers, with the next batch)."""
        for boundary, ss in zip(self.adr_boundaries, samples):
            for s in ss:      # the task's own success (ArmReach: 2 cm), not the agent's training threshold
                self.adr.report(boundary, s.info.get("task_success", s.success))
        self.agent.set_randomization_bounds(self.adr.bounds())

    def _agent_initial_controllers(self) -> list[LinearGaussianController]:
        """The agent's initial controllers for its current conditions (`initial_controllers(variance)`,
        e.g. a PD law towards the target), or, for agents without one, zero-gain controllers that
        explore around holding still."""
        a = self.agent
        if hasattr(a, "initial_controllers"):
            return a.initial_controllers(self.init_variance)
        return [LinearGaussianController.pd(a.T, a.dX, a.dU, variance=self.init_variance)
                for _ in range(a.n_conditions)]

    def _check_policy(self, policy) -> None:
        a = self.agent
        if policy.act_dim != a.dU:
            raise ValueError(f"policy has {policy.act_dim} actions, task {a.task} has {a.dU}")
        if isinstance(policy, VisuomotorCNN):
            if not a.images:
                raise ValueError("a CNN policy needs image observations (--images)")
            if policy.joint_dim != a.joint_dim:
                raise ValueError(f"CNN policy takes {policy.joint_dim} joint values, task {a.task} gives {a.joint_dim}")
        elif policy.obs_dim != a.obs_dim:
            raise ValueError(f"policy takes {policy.obs_dim} observations, task {a.task} gives {a.obs_dim}")

    def _trainable(self):
        if isinstance(self.policy, VisuomotorCNN) and not self.cfg.finetune_vision:
            return list(self.policy.fc.parameters())
        return list(self.policy.parameters())

    def _fit_dynamics(self, X, U) -> list[LinearGaussianDynamics]:
        """Per condition: the linear-Gaussian dynamics of its samples, with a GMM prior over the
        transitions [x_t, u_t, x_t+1] of its own last `prior_iterations` iterations (as Levine et al.
        2016's implementation keeps one prior per condition: under domain randomization every
        condition is its own draw of bias, gravity and latency, which one pooled mixture would
        blend). With resampled conditions a condition's history is its current samples only (the
        first-iteration case of the reference). `dynamics_prior="pooled"`: one prior over every
        condition's transitions."""
        cfg, a = self.cfg, self.agent
        pts = [np.concatenate([x[:, :-1], u, x[:, 1:]], axis=2).reshape(-1, 2 * a.dX + a.dU) for x, u in zip(X, U)]
        if cfg.dynamics_prior == "pooled":
            self.transitions[0] = (self.transitions[0] + [np.concatenate(pts)])[-cfg.prior_iterations:]
            prior = GMMPrior(cfg.max_clusters, cfg.min_points_per_cluster, cfg.prior_strength)
            prior.update(np.concatenate(self.transitions[0]), self.rng)
            return [fit_linear_gaussian_dynamics(X[c], U[c], prior) for c in range(len(X))]
        dyn = []
        for c in range(len(X)):
            self.transitions[c] = (self.transitions[c] + [pts[c]])[-cfg.prior_iterations:]
            prior = GMMPrior(cfg.max_clusters, cfg.min_points_per_cluster, cfg.prior_strength)
            prior.update(np.concatenate(self.transitions[c]), self.rng)
            dyn.append(fit_linear_gaussian_dynamics(X[c], U[c], prior))
        return dyn

    def _adjust_step(self, pibar, dyn, cost) -> None:
        """The MDGPS step-size rule (Montgomery & Levine 2016, Sec. 4; `algorithm_mdgps.py` of the
        reference implementation), averaged over conditions with one shared multiplier:

            previous  = E[cost] of the previous pi_bar under the previous dynamics
            predicted = E[cost] of the previous C-step's controller under the previous dynamics
            actual    = E[cost] of the new pi_bar (the policy after the S-step) under the new dynamics

        predicted - actual thus holds both the model's error and the S-step's failure to follow
        the local controllers, and the step shrinks when either is large.

        Only with fixed conditions (deviation from the reference, which applies it to averages over
        whatever conditions were sampled): with `resample_conditions`, "previous" and "actual" are
        costs of different start states, and their difference is dominated by which starts were
        drawn, not by the update. Measured on ArmInsert (learning/RESULTS.md): applied there, the
        multiplier fell 1.0 -> 0.1 -> 0.01 in two iterations and learning stalled (72 % final
        success, 100 starts); kept at 1.0, 96 %."""
        cfg, a, M = self.cfg, self.agent, self.agent.n_conditions
        previous = predicted = actual = 0.0
        for c in range(M):
            prev_cost = a.cost.expand(self.prev_xbar[c])
            previous += expected_cost(self.prev_pibar[c], self.prev_dyn[c], prev_cost) / M
            predicted += expected_cost(self.prev_traj[c], self.prev_dyn[c], prev_cost) / M
            actual += expected_cost(pibar[c], dyn[c], cost[c]) / M
        mult = adjust_step(float(self.step_mult[0]), previous, predicted, actual,
                           min_mult=cfg.min_step_mult, max_mult=cfg.max_step_mult)
        self.step_mult[:] = mult
        self.last_step_costs = {"previous": previous, "predicted": predicted, "actual": actual}

    def _sample(self, controllers) -> list[list]:
        """N samples of every condition under `controllers` (one per condition, or the policy's
        runner for all), on `self.executor` (learning.agents.collect_samples; None: in this process).
        The noise and seed of each sample are drawn here, in condition order, so the samples are the
        same whatever the backend. Non-finite samples, and rollouts that raised (logged with their
        seed), are dropped and counted; a condition left with fewer than 2 stops training."""
        a, N = self.agent, self.cfg.samples_per_condition
        jobs = []
        for c in range(a.n_conditions):
            for _ in range(N):
                noise = self.rng.standard_normal((a.T, a.dU))
                jobs.append((c, noise, int(self.rng.integers(2**31))))
        batch = collect_samples(a, self.executor, jobs, controllers,
                                label=f"GPS iteration {self.iteration + 1}: sampling")
        self.reruns += len(batch.reruns)
        out: list[list] = [[] for _ in range(a.n_conditions)]
        for (c, _, seed), s in zip(jobs, batch.results):
            if s is not None and np.all(np.isfinite(s.X)) and np.all(np.isfinite(s.U)) \
                    and np.all(np.isfinite(s.state_obs)):
                out[c].append(s)
                continue
            self.dropped_samples += 1
            why = "raised (see above)" if s is None else "had NaN/inf"
            log.warning("condition %d: dropped the sample of seed %d, which %s (%d dropped so far)", c, seed, why,
                        self.dropped_samples)
        for c, ss in enumerate(out):
            if len(ss) < 2:
                raise TrainingError(f"condition {c}: {N - len(ss)} of {N} samples had NaN or inf or raised; "
                                    f"cannot fit dynamics from fewer than 2 (stopping)")
        return out

    @torch.inference_mode()
    def _policy_means(self, samples) -> np.ndarray:
        """pi_theta's mean actions at every sample's observations (N, T, dU)."""
        runner = PolicyRunner(self.policy)
        if isinstance(self.policy, VisuomotorCNN):
            out = []
            for s in samples:
                pts = feature_points(self.policy, s.images[:-1])
                out.append(self.policy.head(pts, to_torch(s.state_obs[:-1])).double().numpy())
            return np.array(out)
        S = to_torch(np.array([s.state_obs[:-1] for s in samples]))
        return runner.policy(S).double().numpy()

    def evaluate(self, episodes: int | None = None, first: int = 0) -> dict:
        """The global policy (its mean) from held-out starts first .. first + episodes - 1 (those of
        every iteration's evaluation: 0 ..): success rate, mean final distance and each start's success
        (`successes`, 0/1 in the starts' order). Under ADR the starts are drawn from the preset's
        ranges, so that iterations compare with each other."""
        n = self.cfg.eval_episodes if episodes is None else episodes
        reruns: list = []
        moved = self.adr.bounds() if self.adr is not None else None
        if moved:                     # held out under the preset's own ranges, not ADR's moving ones
            self.agent.set_randomization_bounds(self.adr.initial)
        try:
            res = evaluate_held_out(self.agent, self.executor, PolicyRunner(self.policy), range(first, first + n),
                                    label=f"GPS iteration {self.iteration + 1}: evaluation", reruns=reruns)
        finally:
            if moved:                 # ADR's ranges live in the agent's randomizer: put them back
                self.agent.set_randomization_bounds(moved)
        self.reruns += len(reruns)
        return {"success_rate": float(np.mean([r.success for r in res])) if n else float("nan"),
                "final_distance": float(np.mean([r.final_distance for r in res])) if n else float("nan"),
                "successes": [int(r.success) for r in res]}

    def _snapshot(self) -> dict:
        """What an S-step changes, to undo a rejected iteration (`_reject`)."""
        return {"policy": copy.deepcopy(self.policy.state_dict()), "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "policy_cov": self.policy_cov.copy(), "replay": list(self.replay),
                "aux": None if self.aux is None else copy.deepcopy(self.aux.readout.state_dict())}

    def _reject(self, success: float, before: dict) -> bool:
        """Step rejection (module docstring): undo this iteration's S-step (back to `before`, taken
        only where rejection applies) and halve the KL step when its held-out `success` fell more
        than `step_rejection` below the best kept iteration's."""
        cfg = self.cfg
        best = self.best.success              # the best kept iteration's (NaN: none yet)
        if not (np.isfinite(success) and np.isfinite(best) and success < best - cfg.step_rejection):
            return False
        self.policy.load_state_dict(before["policy"])
        self.optimizer.load_state_dict(before["optimizer"])
        self.policy_cov, self.replay = before["policy_cov"], before["replay"]
        if self.aux is not None:
            self.aux.readout.load_state_dict(before["aux"])
        self.step_mult[:] = max(float(self.step_mult[0]) * 0.5, cfg.min_step_mult)
        log.warning("GPS iteration %d: held-out success %.0f%% is more than %.0f points below the best kept "
                    "iteration's %.0f%%: iteration undone, KL step multiplier halved to %.3g", self.iteration + 1,
                    100 * success, 100 * cfg.step_rejection, 100 * best, self.step_mult[0])
        return True

    # ------------------------------------------------------------------ one iteration
    def pretrain(self, progress=None) -> None:
        """Vision pretraining of an image policy (once, before the first iteration; `iterate` does it
        if it has not been done): render the pose images, regress their poses (`pretrain_vision`),
        and give the auxiliary pose loss its rendered set. `progress(stage, done, total, info)` is
        called as it goes (stages "rendering pose images" and "vision pretraining")."""
        if self.pretrained:
            return
        cfg = self.cfg
        data, loss = render_and_pretrain(self.policy, self.agent, cfg.pretrain_images, cfg.pretrain_steps, self.rng,
                                         self.gen, cfg.pretrain_reach_fraction, cfg.pretrain_head_hidden, progress,
                                         cfg.pretrain_bf16, executor=self.executor, device=self.device)
        log.info("vision pretraining: pose regression loss %.4f", loss)
        if self.aux is not None:
            images, poses, joints = data
            self.aux.set_data(feature_points(self.policy, images), joints, poses[:, 3:] - poses[:, :3])
        self.pretrained = True

    def iterate(self) -> dict:
        t0 = time.perf_counter()
        k, cfg, a = self.iteration, self.cfg, self.agent
        M = a.n_conditions
        if not self.pretrained:
            self.pretrain()
        # 0. new conditions (resample_conditions): drawn from the task's start distribution
        resampled = cfg.resample_conditions and k > 0
        if resampled:
            a.resample(self.rng)
            if self.adr is not None:
                self._adr_pin()
            if not cfg.on_policy:
                self.controllers = self._agent_initial_controllers()
            if cfg.dynamics_prior == "condition":
                self.transitions = [[] for _ in range(M)]      # new conditions: no samples of theirs yet
        # 1. samples: the global policy (on-policy) or the local controllers
        on_policy = cfg.on_policy and k > 0
        runner = PolicyRunner(self.policy, self.policy_cov) if on_policy else None
        reruns0 = self.reruns
        samples = self._sample(runner if on_policy else self.controllers)
        if self.adr is not None and on_policy and resampled:
            self._adr_report(samples)
        X = [np.array([s.X for s in ss]) for ss in samples]
        U = [np.array([s.U for s in ss]) for ss in samples]
        costs = [np.array([a.cost.evaluate(s.X, s.U).sum() for s in ss]) for ss in samples]
        # 2. dynamics with the GMM prior over the recent iterations' transitions
        dyn = self._fit_dynamics(X, U)
        # the cost's second-order expansion at each condition's mean trajectory (a quadratic cost: itself)
        xbar = [x.mean(0) for x in X]
        cost = [a.cost.expand(xbar[c]) for c in range(M)]
        # 3. the global policy's linearization (the first iteration: the initial controllers)
        if k == 0:
            pibar = list(self.controllers)
        else:
            means = [self._policy_means(ss) for ss in samples]
            pol_pts = np.concatenate([np.concatenate([x[:, :-1], m], axis=2).reshape(-1, a.dX + a.dU)
                                      for x, m in zip(X, means)])
            pol_prior = GMMPrior(cfg.max_clusters, cfg.min_points_per_cluster, cfg.prior_strength).update(pol_pts, self.rng)
            pibar = [linearize_policy(X[c], means[c], self.policy_cov, pol_prior) for c in range(M)]
        # 4. step size from the predicted versus actual improvement
        if k > 0 and not resampled:
            self._adjust_step(pibar, dyn, cost)
        # 5. C-step: LQR-FLM against pi_bar under the KL bound
        kls, etas = [], []
        for c in range(M):
            eps = cfg.kl_step * a.T * self.step_mult[c]
            try:
                res = lqr_flm_update(dyn[c], cost[c], pibar[c], eps, self.eta[c])
            except NotPositiveDefinite as e:
                raise TrainingError(f"condition {c}: LQR-FLM failed: {e}") from None
            self.controllers[c], self.eta[c] = res.controller, res.eta
            self.prev_dyn[c], self.prev_pibar[c], self.prev_xbar[c] = dyn[c], pibar[c], xbar[c]
            self.prev_traj[c] = res.controller
            kls.append(res.kl)
            etas.append(res.eta)
        # 6. S-step: precision-weighted regression of pi_theta on the local controllers' means
        # step rejection's undo point (only with resampled conditions: module docstring)
        before = self._snapshot() if k > 0 and cfg.resample_conditions and cfg.step_rejection > 0 else None
        states = np.concatenate([x[:, :-1].reshape(-1, a.dX) for x in X])
        cond_of = np.concatenate([np.full(x.shape[0] * a.T, c) for c, x in enumerate(X)])
        time_of = np.concatenate([np.tile(np.arange(a.T), x.shape[0]) for x in X])
        targets = np.empty((len(states), a.dU))
        prc = np.empty((len(states), a.dU, a.dU))
        for c in range(M):
            m = cond_of == c
            ctrl = self.controllers[c]
            targets[m] = np.einsum("nij,nj->ni", ctrl.K[time_of[m]], states[m]) + ctrl.k[time_of[m]]
            prc[m] = ctrl.inv_cov[time_of[m]]
        flat = [s for ss in samples for s in ss]
        inputs = {"state": np.concatenate([s.state_obs[:-1] for s in flat])}
        if k == 0:
            norm = self.policy.joint_normalizer if isinstance(self.policy, VisuomotorCNN) else self.policy.normalizer
            norm.set(inputs["state"])
        head_only = isinstance(self.policy, VisuomotorCNN) and not cfg.finetune_vision
        if isinstance(self.policy, VisuomotorCNN):
            images = np.concatenate([s.images[:-1] for s in flat])
            if head_only:
                inputs["points"] = feature_points(self.policy, images)
            else:
                inputs["image"] = images
        aux_error = None
        if self.aux is not None:
            inputs["rel"] = np.concatenate([s.X[:-1, -3:] for s in flat])     # tcp - target
            if k == 0 and cfg.aux_pretrain_steps:
                self.aux.fit(self.policy, self.optimizer, cfg.aux_pretrain_steps, cfg.batch_size, self.gen)
            aux_error = self.aux.error(self.policy, inputs["points"], inputs["state"], inputs["rel"]) if k else None
        current = {"inputs": {key: v for key, v in inputs.items() if key != "rel"}, "targets": targets, "prc": prc}
        if cfg.policy_replay:
            batch = self.replay[-cfg.policy_replay:] + [current]
            train_in = {key: (torch.cat if key == "points" else np.concatenate)([b["inputs"][key] for b in batch])
                        for key in current["inputs"]}
            if "rel" in inputs:
                train_in["rel"] = inputs["rel"]          # the current samples (last rows); the aux set has the earlier ones
            train_targets = np.concatenate([b["targets"] for b in batch])
            train_prc = np.concatenate([b["prc"] for b in batch])
        else:
            train_in, train_targets, train_prc = inputs, targets, prc
        loss = train_policy_weighted(self.policy, self.optimizer, train_in, train_targets, train_prc, cfg.policy_steps,
                                     cfg.batch_size, self.gen, head_only, self.aux, cfg.aux_pose_weight)
        if cfg.policy_replay:
            self.replay = (self.replay + [current])[-cfg.policy_replay:]
        if self.aux is not None:
            self.aux.extend(inputs["points"], inputs["state"], inputs["rel"])
        self.policy_cov = np.linalg.inv(np.mean([c.inv_cov for c in self.controllers], axis=(0, 1)))
        # held-out evaluation of the global policy
        ev = self.evaluate()
        step_mult = float(np.mean(self.step_mult))           # the one this iteration's C-step used
        rejected = before is not None and self._reject(ev["success_rate"], before)
        all_costs = np.concatenate(costs)
        stats = {"iteration": k + 1, "cost": float(all_costs.mean()), "train_success": float(np.mean([s.success for s in flat])),
                 "success": ev["success_rate"], "eval_distance": ev["final_distance"], "held_out": ev["successes"],
                 "kl": float(np.mean(kls)), "eta": float(np.mean(etas)), "step_mult": step_mult,
                 "policy_loss": loss, "rollouts": len(flat), "dropped": self.dropped_samples,
                 "reruns": self.reruns - reruns0,
                 "sampled_from": "policy" if on_policy else "local", "rejected": rejected,
                 "seconds": time.perf_counter() - t0}
        if self.aux is not None:   # on this iteration's new conditions, before the S-step (m)
            stats["aux_pose_error"] = aux_error
        if self.adr is not None:   # the ranges after this iteration's results
            stats["adr_bounds"] = {n: [float(v) for v in b] for n, b in self.adr.bounds().items()}
        self.history.append(stats)
        if not rejected:
            self.best.offer(k + 1, ev["successes"], self.policy)
        self.iteration += 1
        return stats

    def exported_policy(self):
        """What `s2r train` exports (`export_policy`): a learning.best_policy.Export."""
        return self.best.exported(self.policy, self.cfg.export_policy, self.history)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything the next iteration needs (`learning.gps_checkpoint.gps_state_dict`)."""
        return gps_state_dict(self)

    def load_state_dict(self, st: dict) -> None:
        """Continue from a checkpoint (`learning.gps_checkpoint.load_gps_state_dict`)."""
        load_gps_state_dict(self, st)
