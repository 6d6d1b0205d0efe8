"""Global policies (torch): an MLP on state features and the visuomotor CNN of Levine, Finn,
Darrell & Abbeel, "End-to-End Training of Deep Visuomotor Policies", JMLR 2016 (Fig. 2):

    image (3 x H x W) -> conv 64@7x7 stride 2 -> ReLU -> conv 32@5x5 -> ReLU -> conv 32@5x5 -> ReLU
        -> spatial softmax -> 32 expected feature points (x, y) = 64 numbers
        -> concat joint state -> FC 40 -> ReLU -> FC 40 -> ReLU -> FC action

About 92k parameters for any input size (the spatial softmax removes the image size). Input
remapping: the local controllers of GPS see the full simulator state; these networks see only what
a robot has (`obs_keys`: joint state, and for the CNN the camera image). Actions are the task's
normalized actions in [-1, 1]; `exported_module` is what every export format (learning/export.py:
torch.export `.pt2`, ONNX `.onnx`; TorchScript `.pt` on request) writes for the ROS policy node.
"""
from __future__ import annotations

import copy
import io
import json

import numpy as np
import torch
from torch import nn

from .deploy import METADATA_FILE, METADATA_FORMAT

__all__ = ["SpatialSoftmax", "MLPPolicy", "VisuomotorCNN", "make_policy", "exported_module", "export_metadata",
           "export_torchscript", "METADATA_FILE", "PRECISIONS"]


class SpatialSoftmax(nn.Module):
    """Per channel, a softmax over pixels (with a learned temperature) and the expected image
    coordinates under it: (B, C, H, W) -> (B, 2C) as [x_1, y_1, x_2, y_2, ...], x (column) and y (row)
    in [-1, 1] (-1 = left / top edge pixel centre, +1 = right / bottom)."""

    def __init__(self, temperature: float = 1.0, learnable: bool = True):
        super().__init__()
        t = torch.tensor(float(temperature))
        self.temperature = nn.Parameter(t) if learnable else nn.Parameter(t, requires_grad=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        B, C, H, W = features.shape
        logits = features.reshape(B, C, H * W) / self.temperature
        attention = torch.softmax(logits, dim=-1)
        ys = torch.linspace(-1.0, 1.0, H, dtype=features.dtype, device=features.device)
        xs = torch.linspace(-1.0, 1.0, W, dtype=features.dtype, device=features.device)
        grid_y = ys.view(H, 1).expand(H, W).reshape(H * W)
        grid_x = xs.view(1, W).expand(H, W).reshape(H * W)
        ex = (attention * grid_x).sum(-1)
        ey = (attention * grid_y).sum(-1)
        return torch.stack([ex, ey], dim=-1).reshape(B, 2 * C)


class _Normalizer(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))

    def set(self, data: np.ndarray) -> None:
        data = np.asarray(data, dtype=np.float64).reshape(-1, self.mean.numel())
        self.mean.copy_(torch.as_tensor(data.mean(0), dtype=torch.float32))
        self.std.copy_(torch.as_tensor(np.maximum(data.std(0), 1e-3), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MLPPolicy(nn.Module):
    """A state-feature MLP: obs vector (B, obs_dim) -> normalized action (B, act_dim)."""
    arch = "mlp"

    def __init__(self, obs_dim: int, act_dim: int, hidden=(64, 64)):
        super().__init__()
        if obs_dim < 1 or act_dim < 1:
            raise ValueError(f"obs_dim and act_dim must be positive, got {obs_dim}, {act_dim}")
        self.obs_dim, self.act_dim, self.hidden = int(obs_dim), int(act_dim), tuple(int(h) for h in hidden)
        self.normalizer = _Normalizer(self.obs_dim)
        layers, n = [], self.obs_dim
        for h in self.hidden:
            layers += [nn.Linear(n, h), nn.ReLU()]
            n = h
        layers.append(nn.Linear(n, self.act_dim))
        self.net = nn.Sequential(*layers)

    def config(self) -> dict:
        return {"arch": self.arch, "obs_dim": self.obs_dim, "act_dim": self.act_dim, "hidden": list(self.hidden)}

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalizer(state))


def image_to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 or float, (B, 3, H, W) or (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1]."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.shape[1] != 3 and image.shape[-1] == 3:
        image = image.permute(0, 3, 1, 2)
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    return image.float()


class VisuomotorCNN(nn.Module):
    """The visuomotor network: (image (B, 3, H, W), joint state (B, joint_dim)) -> action (B, act_dim).
    `pose_head` (feature points -> object pose) is used by vision pretraining only."""
    arch = "cnn"

    def __init__(self, joint_dim: int, act_dim: int, image_size: int = 64, pose_dim: int = 3,
                 n_points: int = 32, hidden: int = 40):
        super().__init__()
        if joint_dim < 1 or act_dim < 1:
            raise ValueError(f"joint_dim and act_dim must be positive, got {joint_dim}, {act_dim}")
        if image_size < 24:
            raise ValueError(f"image_size must be at least 24 px for three convolutions, got {image_size}")
        self.joint_dim, self.act_dim, self.image_size = int(joint_dim), int(act_dim), int(image_size)
        self.pose_dim, self.n_points, self.hidden = int(pose_dim), int(n_points), int(hidden)
        self.conv = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2), nn.ReLU(),
            nn.Conv2d(64, 32, 5), nn.ReLU(),
            nn.Conv2d(32, self.n_points, 5), nn.ReLU())
        self.softmax = SpatialSoftmax()
        self.joint_normalizer = _Normalizer(self.joint_dim)
        self.register_buffer("pixel_mean", torch.full((1, 3, 1, 1), 0.5))
        self.fc = nn.Sequential(
            nn.Linear(2 * self.n_points + self.joint_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, self.act_dim))
        self.pose_head = nn.Linear(2 * self.n_points, self.pose_dim)

    def config(self) -> dict:
        return {"arch": self.arch, "joint_dim": self.joint_dim, "act_dim": self.act_dim,
                "image_size": self.image_size, "pose_dim": self.pose_dim, "n_points": self.n_points,
                "hidden": self.hidden}

    def feature_points(self, image: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """(B, 2 n_points) image coordinates of the feature points. bf16: the convolutions run under
        bfloat16 autocast (fp32 weights and gradients; a 128 px training step 1.5-2x faster on CPUs
        with AVX512-BF16) and the spatial softmax gets their maps in fp32 (with the softmax under
        autocast too, pose pretraining did not learn)."""
        x = image_to_float(image) - self.pixel_mean
        return self.softmax(self._conv_bf16(x) if bf16 else self.conv(x))

    @torch.jit.unused      # TorchScript has no autocast; exports run bf16 through _ExportedCNN instead
    def _conv_bf16(self, x):                 # unannotated: TorchScript reads it as Tensor -> Tensor
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.conv(x).float()

    def head(self, points: torch.Tensor, joint_state: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([points, self.joint_normalizer(joint_state)], dim=-1))

    def forward(self, image: torch.Tensor, joint_state: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_points(image), joint_state)

    def pose(self, image: torch.Tensor) -> torch.Tensor:
        return self.pose_head(self.feature_points(image))


def make_policy(config: dict) -> nn.Module:
    """Rebuild a policy from its `config()` (checkpoints store it)."""
    cfg = dict(config)
    arch = cfg.pop("arch", None)
    if arch == "mlp":
        return MLPPolicy(cfg["obs_dim"], cfg["act_dim"], tuple(cfg.get("hidden", (64, 64))))
    if arch == "cnn":
        return VisuomotorCNN(cfg["joint_dim"], cfg["act_dim"], cfg.get("image_size", 64), cfg.get("pose_dim", 3),
                             cfg.get("n_points", 32), cfg.get("hidden", 40))
    raise ValueError(f"unknown policy architecture {arch!r} (known: mlp, cnn)")


class _ExportedMLP(nn.Module):
    def __init__(self, policy: MLPPolicy, action_scale: torch.Tensor):
        super().__init__()
        self.policy = policy
        self.register_buffer("action_scale", action_scale)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """state: float (B, obs_dim) -> action (B, act_dim) in the units of the metadata's `action`."""
        return torch.clamp(self.policy(state.float()), -1.0, 1.0) * self.action_scale


class _ExportedCNN(nn.Module):
    """precision "bf16": the convolutions run in bfloat16 (about 1.6x faster on CPUs with AVX512-BF16
    or AMX, slower on others), the spatial softmax and the FC head in float32."""

    def __init__(self, policy: VisuomotorCNN, action_scale: torch.Tensor, precision: str = "fp32"):
        super().__init__()
        self.policy = policy
        self.bf16 = precision == "bf16"
        self.conv = copy.deepcopy(policy.conv).to(torch.bfloat16) if self.bf16 else policy.conv
        self.register_buffer("action_scale", action_scale)

    def forward(self, image: torch.Tensor, joint_state: torch.Tensor) -> torch.Tensor:
        """image: uint8 or float in [0, 1], (B, 3, H, W) or (B, H, W, 3), RGB; joint_state: float
        (B, joint_dim) -> action (B, act_dim) in the units of the metadata's `action`."""
        x = image_to_float(image) - self.policy.pixel_mean
        features = self.conv(x.to(torch.bfloat16)).float() if self.bf16 else self.conv(x)
        out = self.policy.head(self.policy.softmax(features), joint_state.float())
        return torch.clamp(out, -1.0, 1.0) * self.action_scale


PRECISIONS = ("fp32", "bf16")


def exported_module(policy: nn.Module, action_scale, precision: str = "fp32") -> nn.Module:
    """The module every export format writes (in eval mode): the policy's actions clipped to
    [-1, 1] and scaled by `action_scale` into the metadata's units; `precision` "bf16" runs a CNN's
    convolutions in bfloat16 (see _ExportedCNN). ValueError (one line) for anything else."""
    if not isinstance(policy, (MLPPolicy, VisuomotorCNN)):
        raise ValueError(f"only s2r policies (MLPPolicy, VisuomotorCNN) export, got {type(policy).__name__}")
    policy = policy.eval()
    scale = torch.as_tensor(np.asarray(action_scale, dtype=np.float32).reshape(-1))
    if scale.numel() != policy.act_dim:
        raise ValueError(f"action_scale has {scale.numel()} values, the policy has {policy.act_dim} actions")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "fp32" and not isinstance(policy, VisuomotorCNN):
        raise ValueError(f"precision {precision!r} is for CNN policies; an MLP exports in fp32")
    wrapper = (_ExportedCNN(policy, scale, precision) if isinstance(policy, VisuomotorCNN)
               else _ExportedMLP(policy, scale))
    return wrapper.eval()


def export_metadata(policy: nn.Module, metadata: dict, precision: str = "fp32") -> dict:
    """The `s2r_policy.json` every export format carries: the caller's metadata (obs keys, joint
    names, image size, action semantics) plus the format tag, the network's config and precision."""
    return {"format": METADATA_FORMAT, **metadata, "policy": policy.config(), "precision": precision}


def export_torchscript(policy: nn.Module, path, metadata: dict, action_scale, precision: str = "fp32") -> bytes:
    """TorchScript export, kept for robots that load `.pt` files: torch.jit is deprecated in the
    torch we pin (every call warns), so new exports go through learning.export (`.pt2`, `.onnx`).
    Scripts `exported_module(...)` with `export_metadata(...)` as the extra file `s2r_policy.json`.
    Returns the bytes written (atomically) to `path` (None: not written)."""
    wrapper = exported_module(policy, action_scale, precision)
    scripted = torch.jit.script(wrapper)
    buf = io.BytesIO()
    meta = export_metadata(policy, metadata, precision)
    torch.jit.save(scripted, buf, _extra_files={METADATA_FILE: json.dumps(meta, indent=1)})
    data = buf.getvalue()
    if path is not None:
        from s2r.core.rundir import atomic_write_bytes
        atomic_write_bytes(path, data)
    return data


