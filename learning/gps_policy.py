"""The global policy's side of GPS: running a torch policy on an agent's observations
(`PolicyRunner`) and the S-step, the precision-weighted regression of the policy on the local
controllers' actions (`train_policy_weighted`), optionally with the auxiliary pose loss."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .gps_config import TrainingError
from .policies import VisuomotorCNN

if TYPE_CHECKING:
    from .gps_vision import AuxPose


def to_torch(a) -> torch.Tensor:
    """An array-like as a float32 tensor."""
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


class PolicyRunner:
    """Calls a torch policy on an agent's observation dict {'state': (obs_dim,), 'image': HxWx3}."""

    def __init__(self, policy, cov=None, rng: np.random.Generator | None = None):
        self.policy, self.rng = policy, rng
        self.chol = None if cov is None else np.linalg.cholesky(cov)

    @torch.inference_mode()
    def mean(self, obs) -> np.ndarray:
        s = to_torch(obs["state"])[None]
        if isinstance(self.policy, VisuomotorCNN):
            img = torch.from_numpy(np.ascontiguousarray(obs["image"]))[None].permute(0, 3, 1, 2)
            return self.policy(img, s)[0].double().numpy()
        return self.policy(s)[0].double().numpy()

    def __call__(self, t, x, obs, noise=None):
        u = self.mean(obs)
        return u if noise is None or self.chol is None else u + self.chol @ noise


def train_policy_weighted(policy, optimizer, inputs: dict, targets: np.ndarray, precisions: np.ndarray | None,
                          steps: int, batch_size: int, generator: torch.Generator, head_only: bool = False,
                          aux: AuxPose | None = None, aux_weight: float = 0.0) -> float:
    """Adam on the precision-weighted squared error (pi(o) - mu)' W (pi(o) - mu), W normalized to an
    average trace of dU (precisions None: W = I). inputs: 'state' (n, d) and, for the CNN, either
    'image' (n, H, W, 3) or, with head_only, the precomputed 'points' (n, 64).
    With `aux` (head_only), plus aux_weight times its pose loss on a batch drawn from its rendered
    set and, where inputs has 'rel' (n, 3: tcp - target), from the samples. Returns the last policy loss."""
    n = len(targets)
    Y = to_torch(targets)
    dU = Y.shape[1]
    if precisions is None:
        W = torch.eye(dU).expand(n, dU, dU)
    else:
        W = to_torch(precisions)
        W = W * (dU / W.diagonal(dim1=1, dim2=2).sum(-1).mean())
    S = to_torch(inputs["state"])
    use_aux = aux is not None and aux_weight > 0
    if use_aux:
        if not head_only:
            raise ValueError("the auxiliary pose loss needs precomputed feature points (head_only)")
        A_pts, A_js, A_rel = aux.points, aux.joints, aux.rel
        if "rel" in inputs:                 # labels of the last len(rel) rows of the inputs
            m = len(inputs["rel"])
            A_pts = torch.cat([A_pts, inputs["points"][-m:]])
            A_js = torch.cat([A_js, S[-m:]])
            A_rel = torch.cat([A_rel, to_torch(inputs["rel"]) / aux.SCALE])
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
