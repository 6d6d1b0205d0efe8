"""The training loop shared by `s2r train gps|plato`: progress line, atomic checkpoint every
iteration, plots, and `--resume` that continues exactly where a killed run was.

Run folder (runs/<stamp>-train-<algo>-<task>/):
    checkpoint.pt    everything the next iteration needs (policy, optimizer, controllers, RNG states),
                     the run parameters it was made with (`meta`) and the run's events (resumes)
    history.json     per-iteration statistics, and an entry {"event": "resume", "after_iteration": k,
                     "changed": {name: {"from": old, "to": new}}} where a run was resumed
    training.png     cost and success per iteration
    policy.pt2, policy.onnx   the exported policy (learning/export.py; written by `s2r train` at the end)

Checkpoint file (format 2), one file written atomically (temp file + rename):
    bytes 0-7     magic b"S2R-CKPT"
    bytes 8-9     format version, big-endian (2)
    bytes 10-17   payload length, big-endian
    bytes 18-49   SHA-256 of bytes 0-17 followed by the payload
    bytes 50-     payload: torch.save({"format", "meta", "events", "state"})
Loading reads the file once and checks the digest over every byte torch.load will read before
unpickling anything: one flipped bit, a truncated or an extended file is refused in one line. The
payload is then loaded with torch.load(weights_only=True) (tensors, containers, numpy arrays and
dtypes only), so a file with a valid digest still cannot run code. Checkpoints written before the
digest (a bare torch.save zip file) are refused rather than loaded with a warning: they can be
neither verified nor checked for changed run parameters (they recorded only some), which are the
two ways a resume could silently continue a different run than the one that was killed.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import re
import struct
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from s2r.core.rundir import atomic_write_bytes
from s2r.core.yamlio import excerpt


__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "check_parameters", "plot_history",
           "plot_run", "history_figure", "run_training", "history_record", "resume_event", "Checkpoint", "CHECKPOINT", "CheckpointError"]

CHECKPOINT = "checkpoint.pt"
FORMAT = "s2r-train/2"
MAGIC = b"S2R-CKPT"
VERSION = 2
_HEAD = struct.Struct(">8sHQ")                 # magic, version, payload length
HEADER_SIZE = _HEAD.size + 32                  # + SHA-256
_MAX_LISTED = 8                                # changed parameters named in one refusal
_LEGACY_PREFIXES = (b"PK\x03\x04", b"\x80\x02", b"\x80\x04")   # torch.save zip / legacy pickle


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here (other task, algorithm, architecture or run parameters;
    damaged; older format)."""


class Checkpoint(NamedTuple):
    path: Path
    meta: dict          # the run parameters it was made with
    events: list        # the run's resume events so far
    state: dict         # the algorithm's state_dict()


def _safe_globals() -> list:
    """What a checkpoint's pickle may name besides tensors and containers: numpy arrays, scalars
    and dtypes (the algorithms keep controllers, RNG states and datasets as numpy). Taken from the
    objects' own reducers, so the list follows numpy's module layout."""
    dtypes = [c for c in vars(np.dtypes).values() if isinstance(c, type) and issubclass(c, np.dtype)]
    return [np.zeros(1).__reduce__()[0], np.float64(0).__reduce__()[0], np.ndarray, np.dtype, *dtypes]


def _digest(head: bytes, payload) -> bytes:
    h = hashlib.sha256(head)
    h.update(payload)
    return h.digest()


def save_checkpoint(path, algo, meta: dict, events: list | None = None) -> None:
    """`algo.state_dict()` with the run parameters `meta` and the run's `events`, in the checksummed
    container described in the module docstring, written atomically."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "meta": meta, "events": list(events or []), "state": algo.state_dict()}, buf)
    payload = buf.getvalue()
    head = _HEAD.pack(MAGIC, VERSION, len(payload))
    atomic_write_bytes(path, head + _digest(head, payload) + payload)


def _bit_distance(a: bytes, b: bytes) -> int:
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b)) + 8 * abs(len(a) - len(b))


def read_checkpoint(path) -> Checkpoint:
    """The checkpoint at `path` (a file, or a run folder holding checkpoint.pt), after verifying its
    SHA-256; CheckpointError (one line) if it is missing, damaged, foreign or of an older format."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_SIZE)
            magic = head[:len(MAGIC)]
            if _bit_distance(magic, MAGIC[:len(magic)]) > 3:   # up to 3 flipped bits: damage, told below
                if head.startswith(_LEGACY_PREFIXES):
                    raise CheckpointError(f"{path}: an older checkpoint format without a checksum; it cannot be "
                                          f"verified or checked for changed run parameters: start a new run")
                raise CheckpointError(f"{path}: not an s2r training checkpoint")
            if len(head) < HEADER_SIZE:
                raise CheckpointError(f"{path}: checksum mismatch: the file is damaged (truncated: {len(head)} "
                                      f"bytes, shorter than the {HEADER_SIZE}-byte header)")
            payload = f.read()          # bounded by the file, whatever the length field says
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    _, version, length = _HEAD.unpack(head[:_HEAD.size])
    stored = head[_HEAD.size:]
    if length != len(payload):        # a truncated or extended file, or a damaged length field
        if _digest(_HEAD.pack(magic, version, len(payload)), payload) == stored:
            why = (f"the header's length field is damaged: it records {length} bytes, the intact payload "
                   f"has {len(payload)}")
        else:
            why = (f"{'truncated' if len(payload) < length else 'extended'}: the header records {length} payload "
                   f"bytes, the file holds {len(payload)}")
        raise CheckpointError(f"{path}: checksum mismatch: the file is damaged ({why})")
    actual = _digest(head[:_HEAD.size], payload)
    if actual != stored:
        raise CheckpointError(f"{path}: checksum mismatch: the file is damaged (its SHA-256 is {actual.hex()}, "
                              f"the header records {stored.hex()})")
    if version != VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version}, this s2r reads format {VERSION}")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            ck = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:             # a verified file that still is not a checkpoint this code wrote
        m = re.search(r"GLOBAL [\w.]+|got <class '[^']+'>", str(e))
        detail = (f"it names {m.group(0)}, which a weights-only load refuses" if m
                  else f"{type(e).__name__}: {excerpt((str(e).strip().splitlines() or [''])[0])}")
        raise CheckpointError(f"{path}: not a loadable checkpoint ({detail})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT or not isinstance(ck.get("meta"), dict):
        raise CheckpointError(f"{path}: not an s2r training checkpoint")
    return Checkpoint(path, ck["meta"], list(ck.get("events") or []), ck["state"])


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_parameters(ck: Checkpoint, meta: dict, may_change=()) -> dict:
    """Compare this run's parameters `meta` with the checkpoint's (nested dicts per key, e.g.
    "config.kl_step"). Raises CheckpointError naming every changed parameter not in `may_change`,
    with its old and new value (only the algorithm or task where those differ: the rest follows from
    them); returns {name: {"from": old, "to": new}} for the accepted changes."""
    old, new = _flat(ck.meta), _flat(meta)
    changed = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
    refused = {k: v for k, v in changed.items() if k not in set(may_change)}
    if refused:
        names = [k for k in ("algorithm", "task") if k in refused] or list(refused)
        diff = ", ".join(f"{k} {excerpt(refused[k][0])} -> {excerpt(refused[k][1])}" for k in names[:_MAX_LISTED])
        more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
        raise CheckpointError(f"{ck.path}: this run's parameters differ from the checkpoint's: {diff}{more} "
                              f"(a resume continues the same run: use the checkpoint's values or start a new run)")
    return {k: {"from": a, "to": b} for k, (a, b) in changed.items()}


def load_checkpoint(path, meta: dict, may_change=()) -> dict:
    """The checkpoint's algorithm state, after verifying its checksum and that it was made with the
    same run parameters `meta` (task, algorithm, policy architecture, ...; see check_parameters)."""
    ck = read_checkpoint(path)
    check_parameters(ck, meta, may_change)
    return ck.state


def history_record(history: list[dict], events: list[dict]) -> list[dict]:
    """history.json: the iterations' statistics with each event placed after the iteration it
    followed."""
    out = [e for e in events if e.get("after_iteration", 0) <= 0]
    for h in history:
        out.append(h)
        out += [e for e in events if e.get("after_iteration") == h["iteration"]]
    done = history[-1]["iteration"] if history else 0
    return out + [e for e in events if e.get("after_iteration", 0) > done]


def resume_event(iteration: int, changes: dict) -> dict:
    """The history entry of a resume after `iteration` iterations, with the accepted parameter changes."""
    ev = {"event": "resume", "after_iteration": int(iteration), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    if changes:
        ev["changed"] = changes
    return ev


def plot_history(history: list[dict], path, title: str, exported: int | None = None) -> None:
    """training.png: cost and success per iteration; `exported` (an iteration): the policy
    `s2r train` exported, starred (learning.best_policy)."""
    import matplotlib.pyplot as plt
    fig = history_figure(history, title, exported)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_run(run_dir: Path, history: list[dict], meta: dict, exported: int | None = None) -> None:
    """A run folder's training.png (`plot_history`), titled by the run's algorithm and task."""
    plot_history(history, Path(run_dir) / "training.png", f"{meta['algorithm']} on {meta['task']}", exported)


def history_figure(history: list[dict], title: str, exported: int | None = None):
    """The matplotlib figure of `plot_history`."""
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
    undone = [h for h in history if h.get("rejected")]
    if undone:                       # GPS step rejection: the policy went back to the previous iteration's
        ax2.plot([h["iteration"] for h in undone], [100 * h["success"] for h in undone], "x", color="black",
                 markersize=10, mew=2, label="undone (step rejected)")
    chosen = [h for h in history if exported is not None and h["iteration"] == exported]
    if chosen:
        ax2.plot([exported], [100 * chosen[0]["success"]], "*", color="tab:orange", markersize=16, zorder=5,
                 label=f"exported (iteration {exported})")
    ax2.set_ylim(-5, 105)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("success (%)")
    ax2.grid(alpha=0.3)
    ax2.legend(loc="best")
    ax2.set_title("success")
    for ax in (ax1, ax2):
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def run_training(algo, run_dir: Path, iterations: int, meta: dict, progress=None, stop_after: int | None = None,
                 events: list[dict] | None = None) -> list[dict]:
    """Iterate `algo` until `iterations`, checkpointing after each; `stop_after` stops early (a test
    helper for simulating a kill after that many iterations in this call; 0: right after the vision
    pretraining). An image policy's vision pretraining (`algo.pretrain`, tens of minutes on a CPU)
    runs first, with a progress line per stage on `progress`'s stream, and is checkpointed when done,
    so --resume after a later kill does not repeat it. `events` (earlier resumes, and this one's:
    see resume_event) are kept in every checkpoint and listed in history.json."""
    run_dir = Path(run_dir)
    events = list(events or [])
    done = 0
    if events:                       # a resume is on record even before its first iteration completes
        _write_history(run_dir, algo.history, events)
    if not getattr(algo, "pretrained", True):
        algo.pretrain(None if progress is None else stage_progress(progress.stream))
        save_checkpoint(run_dir / CHECKPOINT, algo, meta, events)
        if stop_after is not None and stop_after <= 0:
            return algo.history
    if progress is not None:
        progress.start(algo.iteration)      # the iterations' ETA: neither pretraining nor earlier runs count
    while algo.iteration < iterations:
        stats = algo.iterate()
        if not all(math.isfinite(stats[k]) for k in ("cost",)):
            raise FloatingPointError(f"iteration {stats['iteration']}: the cost is {stats['cost']}")
        save_checkpoint(run_dir / CHECKPOINT, algo, meta, events)
        _write_history(run_dir, algo.history, events)
        plot_run(run_dir, algo.history, meta)
        if progress is not None:
            reruns = f", {stats['reruns']} episodes run again after a worker died" if stats.get("reruns") else ""
            reruns += ", undone: step rejected" if stats.get("rejected") else ""
            progress.update(algo.iteration, f"it {algo.iteration}/{iterations} cost {stats['cost']:.3g} "
                            f"success {100 * stats['success']:.0f}% ({stats['seconds']:.1f} s{reruns})", force=True)
        done += 1
        if stop_after is not None and done >= stop_after:
            return algo.history
    return algo.history


def _write_history(run_dir: Path, history: list[dict], events: list[dict]) -> None:
    atomic_write_bytes(run_dir / "history.json", json.dumps(history_record(history, events), indent=1).encode())


def stage_progress(stream):
    """progress(stage, done, total, info) -> one Progress line per stage, closed when the stage ends."""
    from s2r.core.logs import Progress
    bars = {}

    def report(stage: str, done: int, total: int, info: str = "") -> None:
        if stage not in bars:
            bars[stage] = Progress(total, stage, stream=stream, every_s=10.0)
        bars[stage].update(done, f"{done}/{total} {info}".rstrip(), force=done >= total)
        if done >= total:
            bars[stage].close()
    return report


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (scipy's `binomtest(...).proportion_ci`);
    (0, 1) for no trials."""
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)
