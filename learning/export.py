"""Policy export for the ROS policy node and `s2r eval`: torch.export (`.pt2`) and ONNX (`.onnx`),
and TorchScript (`.pt`) where asked for by name (torch.jit is deprecated in the torch we pin).

Every format holds the same network, `policies.exported_module` (actions clipped to [-1, 1] and
scaled into the metadata's units), and the same metadata, `policies.export_metadata` (JSON):
    .pt2    torch.export archive, metadata in its extra file `s2r_policy.json`
    .onnx   ONNX (torch.onnx's dynamo exporter, from the same torch.export program), metadata in
            the model's metadata_props under `s2r_policy.json`; runs on onnxruntime alone
            (learning.deploy), so a robot needs no torch
Inputs: a state policy takes `state` float32 (B, obs_dim); a visuomotor CNN takes `image` float32
(B, 3, H, W) RGB in [0, 1] and `joint_state` float32 (B, joint_dim) (learning.deploy converts
uint8 and channels-last images before the call). B is free; H = W = the policy's image_size.
Precision "bf16" (a CNN's convolutions in bfloat16, where the CPU has bf16 instructions) exports
to .pt2 and .pt; ONNX Runtime's CPU provider has no bfloat16 convolutions, so .onnx is fp32 only.

    export_policy(policy, "runs/x/policy.onnx", metadata, action_scale)      # the format by suffix
    export_policies(policy, "runs/x/policy", metadata, action_scale)         # policy.pt2 + policy.onnx
"""
from __future__ import annotations

import io
import json
import logging
import re
import warnings
from pathlib import Path

import torch

from .deploy import FORMATS, METADATA_FILE
from .policies import VisuomotorCNN, export_metadata, export_torchscript, exported_module

__all__ = ["export_policy", "export_policies", "ExportError", "DEFAULT_FORMATS", "FORMATS"]

DEFAULT_FORMATS = ("pt2", "onnx")      # what `s2r train` writes next to its checkpoint
SUFFIX = {fmt: suffix for suffix, fmt in FORMATS.items()}
QUIET_LOGGERS = ("torch.onnx", "onnx_ir", "onnxscript")     # the exporter's, see _onnx_bytes


class ExportError(ValueError):
    """A policy this format cannot hold (one line: the format and why)."""


def _first_line(e: BaseException) -> str:
    """The first line of the innermost cause of `e` (the exporters wrap the reason, e.g. "No ONNX
    function found for <OpOverload(op='prims.zeta' ...)>", in several layers of advice)."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    return (text.splitlines() or [type(e).__name__])[0]


def _example(policy) -> tuple[tuple, tuple, list[str]]:
    """Example inputs (batch 2: a batch of 1 would be specialized), their dynamic dimensions and
    names. The image size is fixed at the policy's `image_size` (the spatial softmax's grid is
    built for it; the metadata's `image_size` tells the caller)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    if isinstance(policy, VisuomotorCNN):
        side = policy.image_size
        g = torch.Generator().manual_seed(0)
        args = (torch.rand(2, 3, side, side, generator=g), torch.zeros(2, policy.joint_dim))
        return args, ({0: batch}, {0: batch}), ["image", "joint_state"]
    return (torch.zeros(2, policy.obs_dim),), ({0: batch},), ["state"]


def _program(policy, action_scale, precision: str) -> torch.export.ExportedProgram:
    """torch.export of `exported_module(...)` with a free batch size (and image size)."""
    module = exported_module(policy, action_scale, precision)
    args, dynamic, _ = _example(policy)      # forward's parameters name the inputs (state | image, joint_state)
    try:
        return torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)
    except Exception as e:     # torch.export raises many types (UserError, Unsupported, ...): one line
        raise ExportError(f"torch.export cannot trace this {type(policy).__name__}: {_first_line(e)}") from None


def _pt2_bytes(program, meta: dict) -> bytes:
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files={METADATA_FILE: json.dumps(meta, indent=1)})
    return buf.getvalue()


def _onnx_bytes(program, policy, meta: dict) -> bytes:
    import onnx
    names = _example(policy)[2]
    # The exporter's libraries report each optimization pass at INFO (and torch.onnx lists the
    # optional torchvision ops it skipped): progress of theirs, not ours, kept out of the run's log.
    quiet = [logging.getLogger(n) for n in QUIET_LOGGERS]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # torch's own pytree code, inside the exporter, uses its deprecated LeafSpec check
            warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec", category=FutureWarning)
            onnx_program = torch.onnx.export(program, (), dynamo=True, verbose=False, input_names=names,
                                             output_names=["action"], optimize=True)
    except Exception as e:     # the exporter wraps op and graph errors in several types: one line
        raise ExportError(f"ONNX cannot hold this {type(policy).__name__}: {_first_line(e)}") from None
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    model = onnx_program.model_proto
    onnx.helper.set_model_props(model, {METADATA_FILE: json.dumps(meta, indent=1)})
    model.producer_name = "s2r learning.export"
    return model.SerializeToString()


def _check(fmt: str, precision: str) -> None:
    if fmt not in SUFFIX:
        raise ExportError(f"unknown export format {fmt!r} (known: {', '.join(SUFFIX)})")
    if fmt == "onnx" and precision != "fp32":
        raise ExportError(f"ONNX export is fp32 only: ONNX Runtime's CPU provider has no bfloat16 convolutions "
                          f"(precision {precision!r}: export .pt2 instead)")


def _write(path, data: bytes) -> None:
    from s2r.core.rundir import atomic_write_bytes
    atomic_write_bytes(path, data)


def export_policy(policy, path, metadata: dict, action_scale, precision: str = "fp32", format: str | None = None
                  ) -> bytes:
    """Export `policy` (MLPPolicy or VisuomotorCNN) with `metadata` in one format: `format` (pt2,
    onnx, torchscript) or, if None, the one `path`'s suffix names (.pt2, .onnx, .pt). Returns the
    bytes written (atomically) to `path` (None: `format` required, nothing written).
    ExportError / ValueError (one line) for a policy or precision the format cannot hold."""
    if path is None and format is None:
        raise ExportError("export_policy: give a path or a format")
    if path is not None:
        suffix = Path(path).suffix
        if suffix not in FORMATS:
            raise ExportError(f"{path}: unknown policy format {suffix!r} (known: {', '.join(FORMATS)})")
        if format is not None and FORMATS[suffix] != format:
            raise ExportError(f"{path}: a {suffix} file holds the {FORMATS[suffix]} format, not {format!r}")
        format = FORMATS[suffix]
    _check(format, precision)
    if format == "torchscript":
        return export_torchscript(policy, path, metadata, action_scale, precision)
    program = _program(policy, action_scale, precision)
    meta = export_metadata(policy, metadata, precision)
    data = _pt2_bytes(program, meta) if format == "pt2" else _onnx_bytes(program, policy, meta)
    if path is not None:
        _write(path, data)
    return data


def export_policies(policy, stem, metadata: dict, action_scale, formats=DEFAULT_FORMATS,
                    precision: str = "fp32") -> list[Path]:
    """Export `policy` in each of `formats` to `stem` + its suffix (one torch.export trace serves
    .pt2 and .onnx). Every format is checked before anything is written. Returns the paths written."""
    formats = list(formats)
    for fmt in formats:
        _check(fmt, precision)
    stem = Path(stem)
    meta = export_metadata(policy, metadata, precision)
    program = _program(policy, action_scale, precision) if set(formats) - {"torchscript"} else None
    blobs = {}
    for fmt in formats:
        if fmt == "torchscript":
            blobs[fmt] = export_torchscript(policy, None, metadata, action_scale, precision)
        else:
            blobs[fmt] = _pt2_bytes(program, meta) if fmt == "pt2" else _onnx_bytes(program, policy, meta)
    paths = []
    for fmt, data in blobs.items():
        path = stem.with_name(stem.name + SUFFIX[fmt])
        _write(path, data)
        paths.append(path)
    return paths

