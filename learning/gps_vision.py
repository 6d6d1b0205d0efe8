"""Vision for GPS's image policies (Levine et al. 2016, Sec. 4.3): pretraining the visuomotor
CNN's conv layers on rendered pose images (`pretrain_vision`, `render_and_pretrain`), its feature
points as the S-step's inputs (`feature_points`), and the auxiliary pose loss of the S-step
(`AuxPose`)."""
from __future__ import annotations

import numpy as np
import torch

from .gps_policy import to_torch
from .policies import VisuomotorCNN


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
        self.points, self.joints, self.rel = points.float(), to_torch(joints), to_torch(rel) / self.SCALE

    def extend(self, points: torch.Tensor, joints, rel) -> None:
        """Add labelled data (e.g. an iteration's samples, whose full state holds tcp - target)."""
        self.points = torch.cat([self.points, points.float()])
        self.joints = torch.cat([self.joints, to_torch(joints)])
        self.rel = torch.cat([self.rel, to_torch(rel) / self.SCALE])

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
        pred = self.readout(self.hidden(policy, points, to_torch(joint_state))) * self.SCALE
        return float(torch.linalg.norm(pred - to_torch(rel), dim=-1).mean())


def render_and_pretrain(policy: VisuomotorCNN, agent, n_images: int, steps: int, rng: np.random.Generator,
                        generator: torch.Generator, reach_fraction: float = 0.0, head_hidden: int = 0,
                        progress=None, bf16: bool = False, executor=None, device: str = "cpu"):
    """Render `agent.pose_dataset` (on `executor`, s2r.core.executor; None: in this process) and
    `pretrain_vision` on it, reporting `progress(stage, done, total, info)` for the stages "rendering
    pose images" and "vision pretraining", and pretraining on `device`. Returns (dataset, last loss)."""
    data = agent.pose_dataset(n_images, rng, reach_fraction=reach_fraction, executor=executor,
                              progress=None if progress is None else
                              lambda i, n: progress("rendering pose images", i, n, ""))
    loss = pretrain_vision(policy, agent, n_images, steps, rng, generator, dataset=data, head_hidden=head_hidden,
                           bf16=bf16, device=device, progress=None if progress is None else
                           lambda i, n, value: progress("vision pretraining", i, n, f"pose loss {value:.3f}"))
    return data, loss


@torch.inference_mode()
def feature_points(policy: VisuomotorCNN, images: np.ndarray, chunk: int = 256) -> torch.Tensor:
    out = [policy.feature_points(torch.from_numpy(np.ascontiguousarray(images[i:i + chunk])).permute(0, 3, 1, 2))
           for i in range(0, len(images), chunk)]
    return torch.cat(out)


def pretrain_vision(policy: VisuomotorCNN, agent, n_images: int, steps: int, rng: np.random.Generator,
                    generator: torch.Generator, lr: float = 1e-3, dataset=None, head_hidden: int = 0,
                    progress=None, bf16: bool = False, device: str = "cpu") -> float:
    """Levine et al. 2016, Sec. 4.3: pretrain the conv layers by regressing the pose of the task's
    objects (the reach target and the TCP: 6 numbers) from rendered, randomized images
    (`agent.pose_dataset`, or `dataset` = its (images, poses, ...)). Adam, batch 32, the learning
    rate decays to zero on a cosine schedule. The pose is read from the feature points by the
    policy's linear `pose_head` or, with head_hidden > 0, by a pretraining-only head with one hidden
    ReLU layer (which lets the conv layers code what a linear read-out of 2-D points cannot, such
    as the target's depth from its apparent size). bf16: the convolutions under bfloat16 autocast
    (`VisuomotorCNN.feature_points`). `device`: where the steps run ("cuda": on the GPU, the batches
    moved there; the policy is back on the CPU when it returns). `progress(step, steps, loss)` is
    called after every step. Returns the last (normalized) loss."""
    images, poses = (agent.pose_dataset(n_images, rng) if dataset is None else dataset)[:2]
    device = torch.device(device)
    P = to_torch(poses).to(device)
    mean, std = P.mean(0), P.std(0).clamp_min(1e-3)
    policy.to(device)
    head = policy.pose_head
    if head_hidden > 0:
        head = torch.nn.Sequential(torch.nn.Linear(2 * policy.n_points, head_hidden), torch.nn.ReLU(),
                                   torch.nn.Linear(head_hidden, P.shape[1])).to(device)
    params = list(policy.conv.parameters()) + list(policy.softmax.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + np.cos(np.pi * min(i, steps) / steps)))
    policy.train()
    loss_value = float("nan")
    for step in range(steps):
        idx = torch.randint(0, len(images), (min(32, len(images)),), generator=generator)
        img = torch.from_numpy(images[idx.numpy()]).to(device, non_blocking=True).permute(0, 3, 1, 2)
        loss = ((head(policy.feature_points(img, bf16 and device.type == "cpu")) - (P[idx.to(device)] - mean) / std)
                ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        if progress is not None:
            progress(step + 1, steps, loss_value)
    policy.eval()
    policy.to("cpu")
    return loss_value
