"""The training loop shared by `s2r train gps|plato`: progress line, atomic checkpoint every
iteration, plots, TorchScript export, and `--resume` that continues exactly where a killed run was.

Run folder (runs/<stamp>-train-<algo>-<task>/):
    checkpoint.pt    everything the next iteration needs (policy, optimizer, controllers, RNG states)
    history.json     per-iteration statistics
    training.png     cost and success per iteration
    policy.pt        the TorchScript policy (written at the end, and at every iteration for safety)
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import torch

from s2r.rundir import atomic_write_bytes

from .policies import export_torchscript

__all__ = ["save_checkpoint", "load_checkpoint", "plot_history", "run_training", "CHECKPOINT", "CheckpointError"]

CHECKPOINT = "checkpoint.pt"
FORMAT = "s2r-train/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here (other task, algorithm or architecture; damaged)."""


def save_checkpoint(path, algo, meta: dict) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "meta": meta, "state": algo.state_dict()}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path, meta: dict) -> dict:
    """The checkpoint's algorithm state, after checking it was made for the same `meta` (task,
    algorithm, policy architecture, observation/action sizes)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:                                   # a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an s2r training checkpoint")
    for key, want in meta.items():
        have = ck["meta"].get(key)
        if have != want:
            raise CheckpointError(f"{path}: checkpoint was made for {key}={have!r}, this run has {key}={want!r}")
    return ck["state"]


def plot_history(history: list[dict], path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    it = [h["iteration"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(it, [h["cost"] for h in history], "o-", color="tab:red", label="training samples")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("mean episode cost")
    ax1.set_yscale("log" if min(h["cost"] for h in history) > 0 else "linear")
    ax1.grid(alpha=0.3)
    ax1.legend()
    ax1.set_title("cost")
    ax2.plot(it, [100 * h["success"] for h in history], "o-", color="tab:green", label="policy, held-out starts")
    if "train_success" in history[0]:
        ax2.plot(it, [100 * h["train_success"] for h in history], "s--", color="tab:gray", alpha=0.7,
                 label="training samples")
    ax2.set_ylim(-5, 105)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("success (%)")
    ax2.grid(alpha=0.3)
    ax2.legend(loc="lower right")
    ax2.set_title("success")
    for ax in (ax1, ax2):
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def run_training(algo, run_dir: Path, iterations: int, meta: dict, progress=None, export_meta: dict | None = None,
                 action_scale=None, stop_after: int | None = None) -> list[dict]:
    """Iterate `algo` until `iterations`, checkpointing after each; `stop_after` stops early (a test
    helper for simulating a kill after that many iterations in this call; 0: right after the vision
    pretraining). An image policy's vision pretraining (`algo.pretrain`, tens of minutes on a CPU)
    runs first, with a progress line per stage on `progress`'s stream, and is checkpointed when done,
    so --resume after a later kill does not repeat it."""
    run_dir = Path(run_dir)
    done = 0
    if not getattr(algo, "pretrained", True):
        algo.pretrain(None if progress is None else stage_progress(progress.stream))
        save_checkpoint(run_dir / CHECKPOINT, algo, meta)
        if stop_after is not None and stop_after <= 0:
            return algo.history
    if progress is not None:
        progress.start(algo.iteration)      # the iterations' ETA: neither pretraining nor earlier runs count
    while algo.iteration < iterations:
        stats = algo.iterate()
        if not all(math.isfinite(stats[k]) for k in ("cost",)):
            raise FloatingPointError(f"iteration {stats['iteration']}: the cost is {stats['cost']}")
        save_checkpoint(run_dir / CHECKPOINT, algo, meta)
        atomic_write_bytes(run_dir / "history.json", json.dumps(algo.history, indent=1).encode())
        plot_history(algo.history, run_dir / "training.png", f"{meta['algorithm']} on {meta['task']}")
        if progress is not None:
            progress.update(algo.iteration, f"it {algo.iteration}/{iterations} cost {stats['cost']:.3g} "
                            f"success {100 * stats['success']:.0f}% ({stats['seconds']:.1f} s)", force=True)
        done += 1
        if stop_after is not None and done >= stop_after:
            return algo.history
    if export_meta is not None:
        export_torchscript(algo.policy, run_dir / "policy.pt", export_meta, action_scale)
    return algo.history


def stage_progress(stream):
    """progress(stage, done, total, info) -> one Progress line per stage, closed when the stage ends."""
    from s2r.logs import Progress
    bars = {}

    def report(stage: str, done: int, total: int, info: str = "") -> None:
        if stage not in bars:
            bars[stage] = Progress(total, stage, stream=stream, every_s=10.0)
        bars[stage].update(done, f"{done}/{total} {info}".rstrip(), force=done >= total)
        if done >= total:
            bars[stage].close()
    return report


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % for z = 1.96)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
