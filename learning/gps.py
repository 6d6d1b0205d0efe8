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
Initial controllers: given, or the agent's `initial_controllers(variance)` (ArmReachAgent: a PD law
on the TCP's error through the Jacobian at the start), or zero gains that explore around holding still.
Everything the next iteration needs, random number generator states included, is in
`state_dict()`, so a run resumed from a checkpoint continues exactly as if it had not stopped.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .dynamics import GMMPrior, fit_linear_gaussian_dynamics, linearize_policy
from .linear_gaussian import LinearGaussianController, LinearGaussianDynamics, expected_cost
from .lqr_flm import NotPositiveDefinite, adjust_step, lqr_flm_update
from .policies import MLPPolicy, VisuomotorCNN, make_policy

__all__ = ["GPSConfig", "VISUOMOTOR_IMAGE_SIZE", "MDGPS", "TrainingError", "PolicyRunner", "AuxPose", "train_policy_weighted"]
log = logging.getLogger(__name__)


# The image size of the visuomotor recipe: at 64 px the 7 cm target marker is ~4 px wide and the
# pretrained feature points place it to ~2.9 cm (MLP read-out, held-out renders); at 128 px, 1.6 cm
# (bench_gps held-out image-GPS success after 10 iterations: 75 % -> 85 %, at 4x the convolution cost),
# 1.3 cm with the visuomotor recipe's longer pretraining.
VISUOMOTOR_IMAGE_SIZE = 128


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. every sample of a condition was non-finite)."""


@dataclass
class GPSConfig:
    iterations: int = 10
    samples_per_condition: int = 5
    kl_step: float = 0.5              # epsilon = kl_step * T * step_mult (KL summed over steps)
    min_step_mult: float = 0.01
    max_step_mult: float = 10.0
    init_variance: float | None = None  # exploration variance of the initial PD controllers (None: the agent's)
    on_policy: bool = True
    prior_strength: float = 1.0
    max_clusters: int = 20
    min_points_per_cluster: int = 40
    prior_iterations: int = 3         # iterations of a condition's transitions its dynamics GMM is fitted on
    dynamics_prior: str = "condition"  # "condition": one GMM prior per condition, on its own samples
                                       # (Levine et al. 2016); "pooled": one over all conditions' samples
    policy_steps: int = 400           # S-step Adam updates per iteration
    batch_size: int = 256
    learning_rate: float = 1e-3
    hidden: tuple = (64, 64)
    eval_episodes: int = 20           # held-out starts evaluated after every iteration
    pretrain_images: int = 300        # vision pretraining (image policies): rendered images, not rollouts
    pretrain_steps: int = 300         # Adam steps (batch 32, cosine learning-rate decay)
    pretrain_reach_fraction: float = 0.0  # of those images, the arm placed on the way to the target (`pose_dataset`)
    pretrain_head_hidden: int = 0     # 0: regress the pose linearly from the feature points (the policy's
                                      # pose_head); > 0: through a hidden ReLU layer of this width
    pretrain_bf16: bool = False       # the pretraining's convolutions in bfloat16 (VisuomotorCNN.feature_points)
    aux_pose_weight: float = 0.0      # image policies, frozen vision: S-step auxiliary loss (see `AuxPose`)
    aux_pretrain_steps: int = 0       # first iteration: Adam steps on the auxiliary loss alone before the S-step
    policy_replay: int = 0            # the S-step also regresses on this many earlier iterations' samples
                                      # (their observations and their iteration's local controllers' actions)
    finetune_vision: bool = False     # S-step through the conv layers too (slow on a CPU)
    resample_conditions: bool = False  # new training conditions every iteration (agents with `resample`)
    seed: int = 0

    @classmethod
    def visuomotor(cls, **kw) -> "GPSConfig":
        """The image-policy recipe (what benchmarks/bench_gps.py measures, on VISUOMOTOR_IMAGE_SIZE
        images): 8000 rendered pose images (half with the arm on the way to the target) and 6000
        pretraining steps with bf16 convolutions (on 500 held-out renders, an MLP read-out of the
        feature points places the target to 1.28 cm and tcp - target to 1.61 cm, against 1.58 / 2.02 cm
        after 4000 images and 3000 steps; bf16 makes a step ~1.5x faster on 2 threads at the same
        accuracy), the auxiliary pose loss (pre-fitted for 2000 steps), 800 S-step updates over this
        and the 9 earlier iterations' samples, and twice the default KL step (kl_step 1.0: on 40
        validation starts, held-out seeds never used by the benchmark, 97.5 % success after 10
        iterations against 92.5 % with 0.5; 2.0 and 1600 S-step updates were no better). `kw`
        overrides any field."""
        recipe = dict(pretrain_images=8000, pretrain_steps=6000, pretrain_bf16=True, pretrain_reach_fraction=0.5,
                      aux_pose_weight=1.0, aux_pretrain_steps=2000, policy_replay=9, policy_steps=800, kl_step=1.0)
        return cls(**(recipe | kw))

    def validate(self) -> "GPSConfig":
        for name in ("iterations", "samples_per_condition", "policy_steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.samples_per_condition < 2:
            raise ValueError("samples_per_condition must be >= 2 (dynamics are fitted from them)")
        for name in ("kl_step", "learning_rate", "prior_strength"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.aux_pose_weight < 0:
            raise ValueError(f"aux_pose_weight must be >= 0, got {self.aux_pose_weight}")
        if self.policy_replay < 0:
            raise ValueError(f"policy_replay must be >= 0, got {self.policy_replay}")
        if self.policy_replay > 0 and self.finetune_vision:
            raise ValueError("policy_replay keeps feature points: it needs frozen vision (finetune_vision False)")
        if self.aux_pose_weight > 0 and self.finetune_vision:
            raise ValueError("aux_pose_weight needs frozen vision (finetune_vision False)")
        if self.dynamics_prior not in ("condition", "pooled"):
            raise ValueError(f"dynamics_prior must be 'condition' or 'pooled', got {self.dynamics_prior!r}")
        if self.init_variance is not None and not self.init_variance > 0:
            raise ValueError(f"init_variance must be positive, got {self.init_variance}")
        return self


def _to_torch(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


class PolicyRunner:
    """Calls a torch policy on an agent's observation dict {'state': (obs_dim,), 'image': HxWx3}."""

    def __init__(self, policy, cov=None, rng: np.random.Generator | None = None):
        self.policy, self.rng = policy, rng
        self.chol = None if cov is None else np.linalg.cholesky(cov)

    @torch.inference_mode()
    def mean(self, obs) -> np.ndarray:
        s = _to_torch(obs["state"])[None]
        if isinstance(self.policy, VisuomotorCNN):
            img = torch.from_numpy(np.ascontiguousarray(obs["image"]))[None].permute(0, 3, 1, 2)
            return self.policy(img, s)[0].double().numpy()
        return self.policy(s)[0].double().numpy()

    def __call__(self, t, x, obs, noise=None):
        u = self.mean(obs)
        return u if noise is None or self.chol is None else u + self.chol @ noise


class AuxPose(torch.nn.Module):
    """Auxiliary pose loss of the visuomotor CNN's S-step (image policies with frozen vision).

    A linear read-out from the first hidden layer of the policy's FC head (feature points + joint
    state -> FC 40 -> ReLU) regresses the TCP's position relative to the target (tcp - target, m),
    on the rendered vision-pretraining images (their [target, tcp] poses and joint states) and on the
    samples of this and the earlier iterations (whose full state holds tcp - target). The first hidden layer thus keeps an
    explicit, target-relative code of where the gripper is with respect to the target -- what the
    state MLP gets as an input -- learned from thousands of rendered target positions rather than
    from the few training conditions of an iteration. The read-out is not part of the policy (its
    inputs stay the image and the joint state; exports are unchanged)."""

    SCALE = 0.1          # m: the regressed values are (tcp - target) / SCALE

    def __init__(self, policy: VisuomotorCNN):
        super().__init__()
        self.readout = torch.nn.Linear(policy.hidden, 3)
        self.points = torch.zeros(0, 2 * policy.n_points)
        self.joints = torch.zeros(0, policy.joint_dim)
        self.rel = torch.zeros(0, 3)

    def set_data(self, points: torch.Tensor, joints, rel) -> None:
        """The rendered pose set: feature points (n, 2 n_points), joint states (n, joint_dim), tcp - target (n, 3)."""
        self.points, self.joints, self.rel = points.float(), _to_torch(joints), _to_torch(rel) / self.SCALE

    def extend(self, points: torch.Tensor, joints, rel) -> None:
        """Add labelled data (e.g. an iteration's samples, whose full state holds tcp - target)."""
        self.points = torch.cat([self.points, points.float()])
        self.joints = torch.cat([self.joints, _to_torch(joints)])
        self.rel = torch.cat([self.rel, _to_torch(rel) / self.SCALE])

    def fit(self, policy, optimizer, steps: int, batch_size: int, generator: torch.Generator) -> float:
        """Adam on the auxiliary loss alone (its data set); returns the last loss."""
        policy.train()
        loss = torch.tensor(float("nan"))
        for _ in range(steps):
            j = torch.randint(0, len(self.rel), (min(batch_size, len(self.rel)),), generator=generator)
            loss = self.loss(policy, self.points[j], self.joints[j], self.rel[j])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        policy.eval()
        return float(loss.detach())

    def hidden(self, policy: VisuomotorCNN, points: torch.Tensor, joint_state: torch.Tensor) -> torch.Tensor:
        return policy.fc[:2](torch.cat([points, policy.joint_normalizer(joint_state)], dim=-1))

    def loss(self, policy, points, joint_state, rel_scaled) -> torch.Tensor:
        return ((self.readout(self.hidden(policy, points, joint_state)) - rel_scaled) ** 2).sum(-1).mean()

    @torch.inference_mode()
    def error(self, policy, points, joint_state, rel) -> float:
        """Mean distance (m) between the predicted and the true tcp - target."""
        pred = self.readout(self.hidden(policy, points, _to_torch(joint_state))) * self.SCALE
        return float(torch.linalg.norm(pred - _to_torch(rel), dim=-1).mean())


def train_policy_weighted(policy, optimizer, inputs: dict, targets: np.ndarray, precisions: np.ndarray | None,
                          steps: int, batch_size: int, generator: torch.Generator, head_only: bool = False,
                          aux: AuxPose | None = None, aux_weight: float = 0.0) -> float:
    """Adam on the precision-weighted squared error (pi(o) - mu)' W (pi(o) - mu), W normalized to an
    average trace of dU (precisions None: W = I). inputs: 'state' (n, d) and, for the CNN, either
    'image' (n, H, W, 3) or, with head_only, the precomputed 'points' (n, 64).
    With `aux` (head_only), plus aux_weight times its pose loss on a batch drawn from its rendered
    set and, where inputs has 'rel' (n, 3: tcp - target), from the samples. Returns the last policy loss."""
    n = len(targets)
    Y = _to_torch(targets)
    dU = Y.shape[1]
    if precisions is None:
        W = torch.eye(dU).expand(n, dU, dU)
    else:
        W = _to_torch(precisions)
        W = W * (dU / W.diagonal(dim1=1, dim2=2).sum(-1).mean())
    S = _to_torch(inputs["state"])
    use_aux = aux is not None and aux_weight > 0
    if use_aux:
        if not head_only:
            raise ValueError("the auxiliary pose loss needs precomputed feature points (head_only)")
        A_pts, A_js, A_rel = aux.points, aux.joints, aux.rel
        if "rel" in inputs:                 # labels of the last len(rel) rows of the inputs
            m = len(inputs["rel"])
            A_pts = torch.cat([A_pts, inputs["points"][-m:]])
            A_js = torch.cat([A_js, S[-m:]])
            A_rel = torch.cat([A_rel, _to_torch(inputs["rel"]) / aux.SCALE])
    policy.train()
    loss_value = float("nan")
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=generator)
        if isinstance(policy, VisuomotorCNN):
            if head_only:
                out = policy.head(inputs["points"][idx], S[idx])
            else:
                img = torch.from_numpy(inputs["image"][idx.numpy()]).permute(0, 3, 1, 2)
                out = policy(img, S[idx])
        else:
            out = policy(S[idx])
        r = out - Y[idx]
        loss = torch.einsum("bi,bij,bj->b", r, W[idx], r).mean()
        total = loss
        if use_aux:
            j = torch.randint(0, len(A_rel), (min(batch_size, len(A_rel)),), generator=generator)
            total = loss + aux_weight * aux.loss(policy, A_pts[j], A_js[j], A_rel[j])
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        loss_value = float(loss.detach())
    policy.eval()
    if not np.isfinite(loss_value):
        raise TrainingError("policy training diverged (loss is NaN)")
    return loss_value


def render_and_pretrain(policy: VisuomotorCNN, agent, n_images: int, steps: int, rng: np.random.Generator,
                        generator: torch.Generator, reach_fraction: float = 0.0, head_hidden: int = 0,
                        progress=None, bf16: bool = False):
    """Render `agent.pose_dataset` and `pretrain_vision` on it, reporting `progress(stage, done, total,
    info)` for the stages "rendering pose images" and "vision pretraining". Returns (dataset, last loss)."""
    data = agent.pose_dataset(n_images, rng, reach_fraction=reach_fraction,
                              progress=None if progress is None else
                              lambda i, n: progress("rendering pose images", i, n, ""))
    loss = pretrain_vision(policy, agent, n_images, steps, rng, generator, dataset=data, head_hidden=head_hidden,
                           bf16=bf16, progress=None if progress is None else
                           lambda i, n, value: progress("vision pretraining", i, n, f"pose loss {value:.3f}"))
    return data, loss


@torch.inference_mode()
def feature_points(policy: VisuomotorCNN, images: np.ndarray, chunk: int = 256) -> torch.Tensor:
    out = [policy.feature_points(torch.from_numpy(np.ascontiguousarray(images[i:i + chunk])).permute(0, 3, 1, 2))
           for i in range(0, len(images), chunk)]
    return torch.cat(out)


def pretrain_vision(policy: VisuomotorCNN, agent, n_images: int, steps: int, rng: np.random.Generator,
                    generator: torch.Generator, lr: float = 1e-3, dataset=None, head_hidden: int = 0,
                    progress=None, bf16: bool = False) -> float:
    """Levine et al. 2016, Sec. 4.3: pretrain the conv layers by regressing the pose of the task's
    objects (the reach target and the TCP: 6 numbers) from rendered, randomized images
    (`agent.pose_dataset`, or `dataset` = its (images, poses, ...)). Adam, batch 32, the learning
    rate decays to zero on a cosine schedule. The pose is read from the feature points by the
    policy's linear `pose_head` or, with head_hidden > 0, by a pretraining-only head with one hidden
    ReLU layer (which lets the conv layers code what a linear read-out of 2-D points cannot, such
    as the target's depth from its apparent size). bf16: the convolutions under bfloat16 autocast
    (`VisuomotorCNN.feature_points`). `progress(step, steps, loss)` is called after every step.
    Returns the last (normalized) loss."""
    images, poses = (agent.pose_dataset(n_images, rng) if dataset is None else dataset)[:2]
    P = _to_torch(poses)
    mean, std = P.mean(0), P.std(0).clamp_min(1e-3)
    head = policy.pose_head
    if head_hidden > 0:
        head = torch.nn.Sequential(torch.nn.Linear(2 * policy.n_points, head_hidden), torch.nn.ReLU(),
                                   torch.nn.Linear(head_hidden, P.shape[1]))
    params = list(policy.conv.parameters()) + list(policy.softmax.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + np.cos(np.pi * min(i, steps) / steps)))
    policy.train()
    loss_value = float("nan")
    for step in range(steps):
        idx = torch.randint(0, len(images), (min(32, len(images)),), generator=generator)
        img = torch.from_numpy(images[idx.numpy()]).permute(0, 3, 1, 2)
        loss = ((head(policy.feature_points(img, bf16)) - (P[idx] - mean) / std) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        if progress is not None:
            progress(step + 1, steps, loss_value)
    policy.eval()
    return loss_value


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
        self.dropped_samples = 0

    # ------------------------------------------------------------------ helpers
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

    def _sample(self, condition: int, controller) -> list:
        """N samples of one condition; non-finite ones are dropped and counted."""
        T, dU, N = self.agent.T, self.agent.dU, self.cfg.samples_per_condition
        out = []
        for j in range(N):
            noise = self.rng.standard_normal((T, dU))
            seed = int(self.rng.integers(2**31))
            if isinstance(controller, LinearGaussianController):
                act = lambda t, x, obs, c=controller, z=noise: c.act(t, x, z[t])   # noqa: E731
            else:
                act = lambda t, x, obs, c=controller, z=noise: c(t, x, obs, z[t])  # noqa: E731
            s = self.agent.rollout(condition, act, seed)
            if np.all(np.isfinite(s.X)) and np.all(np.isfinite(s.U)) and np.all(np.isfinite(s.state_obs)):
                out.append(s)
            else:
                self.dropped_samples += 1
                log.warning("condition %d: dropped a sample with NaN/inf (%d dropped so far)", condition,
                            self.dropped_samples)
        if len(out) < 2:
            raise TrainingError(f"condition {condition}: {N - len(out)} of {N} samples had NaN or inf; "
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
                out.append(self.policy.head(pts, _to_torch(s.state_obs[:-1])).double().numpy())
            return np.array(out)
        S = _to_torch(np.array([s.state_obs[:-1] for s in samples]))
        return runner.policy(S).double().numpy()

    def evaluate(self, episodes: int | None = None, first: int = 0) -> dict:
        """The global policy (its mean) from held-out starts first .. first + episodes - 1 (those of
        every iteration's evaluation: 0 ..): success rate and mean final distance."""
        n = self.cfg.eval_episodes if episodes is None else episodes
        runner = PolicyRunner(self.policy)
        res = [self.agent.held_out(first + i, lambda t, x, obs: runner(t, x, obs)) for i in range(n)]
        return {"success_rate": float(np.mean([r.success for r in res])) if n else float("nan"),
                "final_distance": float(np.mean([r.final_distance for r in res])) if n else float("nan")}

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
                                         cfg.pretrain_bf16)
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
            if not cfg.on_policy:
                self.controllers = self._agent_initial_controllers()
            if cfg.dynamics_prior == "condition":
                self.transitions = [[] for _ in range(M)]      # new conditions: no samples of theirs yet
        # 1. samples: the global policy (on-policy) or the local controllers
        on_policy = cfg.on_policy and k > 0
        runner = PolicyRunner(self.policy, self.policy_cov) if on_policy else None
        samples = [self._sample(c, runner if on_policy else self.controllers[c]) for c in range(M)]
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
        all_costs = np.concatenate(costs)
        stats = {"iteration": k + 1, "cost": float(all_costs.mean()), "train_success": float(np.mean([s.success for s in flat])),
                 "success": ev["success_rate"], "eval_distance": ev["final_distance"],
                 "kl": float(np.mean(kls)), "eta": float(np.mean(etas)), "step_mult": float(np.mean(self.step_mult)),
                 "policy_loss": loss, "rollouts": len(flat), "dropped": self.dropped_samples,
                 "sampled_from": "policy" if on_policy else "local", "seconds": time.perf_counter() - t0}
        if self.aux is not None:   # on this iteration's new conditions, before the S-step (m)
            stats["aux_pose_error"] = aux_error
        self.history.append(stats)
        self.iteration += 1
        return stats

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"algorithm": "gps", "config": asdict(self.cfg), "iteration": self.iteration,
                "policy_config": self.policy.config(), "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "controllers": [(c.K, c.k, c.cov) for c in self.controllers],
                "step_mult": self.step_mult, "eta": self.eta,
                "prev_pibar": [None if p is None else (p.K, p.k, p.cov) for p in self.prev_pibar],
                "prev_dyn": [None if d is None else (d.F, d.f, d.cov, d.x0_mean, d.x0_cov) for d in self.prev_dyn],
                "prev_xbar": self.prev_xbar,
                "prev_traj": [None if p is None else (p.K, p.k, p.cov) for p in self.prev_traj],
                "transitions": self.transitions, "policy_cov": self.policy_cov, "pretrained": self.pretrained,
                "history": self.history, "dropped_samples": self.dropped_samples,
                "condition_seeds": list(getattr(self.agent, "condition_seeds", [])),
                "replay": self.replay,
                "aux": None if self.aux is None else {"readout": self.aux.readout.state_dict(), "points": self.aux.points,
                                                      "joints": self.aux.joints, "rel": self.aux.rel},
                "rng": self.rng.bit_generator.state, "torch_generator": self.gen.get_state(),
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, st: dict) -> None:
        if st.get("algorithm") != "gps":
            raise ValueError(f"checkpoint is from {st.get('algorithm')!r}, not gps")
        if st["policy_config"] != self.policy.config():
            raise ValueError(f"checkpoint policy {st['policy_config']} does not match {self.policy.config()}")
        self.policy.load_state_dict(st["policy"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.controllers = [LinearGaussianController(*c) for c in st["controllers"]]
        if len(self.controllers) != self.agent.n_conditions or self.controllers[0].dX != self.agent.dX:
            raise ValueError("checkpoint controllers do not match the task's conditions or state")
        self.step_mult, self.eta = np.array(st["step_mult"]), np.array(st["eta"])
        self.prev_pibar = [None if p is None else LinearGaussianController(*p) for p in st["prev_pibar"]]
        self.prev_dyn = [None if d is None else LinearGaussianDynamics(*d) for d in st["prev_dyn"]]
        self.prev_xbar = list(st.get("prev_xbar", [None] * len(self.prev_dyn)))  # older runs: quadratic costs only
        # older checkpoints: no previous C-step controllers saved; they are the checkpoint's controllers
        self.prev_traj = [None if p is None else LinearGaussianController(*p)
                          for p in st.get("prev_traj", [c if p is not None else None
                                                        for c, p in zip(st["controllers"], st["prev_pibar"])])]
        tr = list(st["transitions"])
        if tr and not isinstance(tr[0], list):        # older checkpoints: one pooled history
            tr = [tr] + [[] for _ in range(self.agent.n_conditions - 1)]
        self.transitions = tr or [[] for _ in range(self.agent.n_conditions)]
        self.policy_cov, self.pretrained = np.array(st["policy_cov"]), st["pretrained"]
        self.history, self.dropped_samples = list(st["history"]), st["dropped_samples"]
        self.iteration = int(st["iteration"])
        self.replay = list(st.get("replay", []))
        if (st.get("aux") is None) != (self.aux is None):
            raise ValueError("checkpoint and configuration disagree on the auxiliary pose loss (aux_pose_weight)")
        if self.aux is not None:
            self.aux.readout.load_state_dict(st["aux"]["readout"])
            self.aux.points, self.aux.joints, self.aux.rel = st["aux"]["points"], st["aux"]["joints"], st["aux"]["rel"]
        if st.get("condition_seeds") and hasattr(self.agent, "condition_seeds"):
            self.agent.condition_seeds = list(st["condition_seeds"])
        self.rng.bit_generator.state = st["rng"]
        self.gen.set_state(st["torch_generator"])
        torch.set_rng_state(st["torch_rng"])
