"""The configuration of mirror-descent GPS (`GPSConfig`) and the error that stops training
(`TrainingError`). Training recipes (the image-policy recipe, a task's settings) are experiment
files, learning/experiments/*.yaml, whose `gps:` section sets these fields."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .best_policy import check_export_choice


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
    step_rejection: float = 0.25      # resampled conditions: an iteration whose held-out success falls more
                                      # than this below the best kept iteration's is undone, step halved
                                      # (learning.gps, "step rejection"); 0: off
    export_policy: Literal["best", "last"] = "best"   # what `s2r train` exports: the last kept iteration's
                                      # policy, or an earlier one significantly better on the held-out
                                      # starts ("best"); "last": always the last (learning.best_policy)
    adr: tuple[str, ...] = ()         # automatic domain randomization over these parameters of the preset
                                      # ("all": its per-episode dynamics and timing ranges; learning.gps)
    adr_step: float = 0.1             # ADR moves a range's end by this fraction of its initial width (integers: 1)
    adr_buffer: int = 10              # results of one end's pinned samples per ADR decision
    adr_boundary_prob: float = 0.5    # fraction of the conditions with one parameter pinned to an end
    seed: int = 0

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
        if self.adr:
            if not (self.adr_step > 0 and self.adr_buffer >= 1 and 0 < self.adr_boundary_prob <= 1):
                raise ValueError(f"adr_step must be > 0, adr_buffer >= 1 and adr_boundary_prob in (0, 1], got "
                                 f"{self.adr_step}, {self.adr_buffer}, {self.adr_boundary_prob}")
            if not self.on_policy:
                raise ValueError("adr scores the global policy's samples: it needs on_policy true")
        if not 0 <= self.step_rejection <= 1:
            raise ValueError(f"step_rejection must be in [0, 1] (a drop in held-out success), got {self.step_rejection}")
        check_export_choice(self.export_policy)
        if self.init_variance is not None and not self.init_variance > 0:
            raise ValueError(f"init_variance must be positive, got {self.init_variance}")
        return self
