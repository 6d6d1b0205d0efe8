"""Exported policies, loaded and run: `load_policy(path)` for every format learning/export.py writes.

    .onnx   ONNX Runtime (CPU, `threads` intra-op threads): numpy and onnxruntime only, no torch,
            so a robot computer can run a policy without installing torch. The file must carry
            its s2r metadata (model metadata_props `s2r_policy.json`): an ONNX file from elsewhere
            says nothing about its inputs, joints or action units, and is refused.
    .pt2    torch.export (metadata in the archive's extra file `s2r_policy.json`)
    .pt     TorchScript (the same extra file), frozen and optimized for inference; torch.jit is
            deprecated in the torch we pin: kept so that existing exports still run

All three give the same callable: `policy(*inputs) -> actions`, inputs in the order of the
metadata's `inputs` (["image", "joint_state"] for a visuomotor policy, else one state vector) as
numpy arrays (or anything `np.asarray` takes), actions a float32 numpy array (B, act_dim) in the
metadata's units. An image is RGB, uint8 or float in [0, 1], (B, 3, H, W) or (B, H, W, 3), or one
image without the batch axis; it reaches the network as float32 (B, 3, H, W) in [0, 1].
A .pt or .pt2 file without metadata (a hand-made module) runs as it is. Whatever the format, a
network with two inputs gets the image first (module(image, state), as policy_node calls it).

This module imports torch only to load a .pt or .pt2 file.
"""
from __future__ import annotations

import abc
import json
import logging
import zipfile
from pathlib import Path

import numpy as np

log = logging.getLogger("s2r.deploy")

__all__ = ["load_policy", "ExportedPolicy", "PolicyLoadError", "PolicyCallError", "METADATA_FILE",
           "METADATA_FORMAT", "FORMATS"]

METADATA_FILE = "s2r_policy.json"      # the metadata's name in every format
METADATA_FORMAT = "s2r-policy/1"       # its "format" entry
FORMATS = {".onnx": "onnx", ".pt2": "pt2", ".pt": "torchscript"}


class PolicyLoadError(ValueError):
    """A file that is not a policy this project can run (one line: the file and why)."""


class PolicyCallError(RuntimeError):
    """The network refused its inputs (wrong shape or type) or failed while running (one line)."""


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def as_image(x) -> np.ndarray:
    """An RGB image or batch -- uint8 or float in [0, 1], (B, 3, H, W), (B, H, W, 3), or either
    without B -- as contiguous float32 (B, 3, H, W) in [0, 1] (learning.policies.image_to_float)."""
    a = np.asarray(x)
    if a.ndim == 3:
        a = a[None]
    if a.ndim == 4 and a.shape[1] != 3 and a.shape[-1] == 3:
        a = a.transpose(0, 3, 1, 2)
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a, dtype=np.float32) / np.float32(255.0)
    return np.ascontiguousarray(a, dtype=np.float32)


class ExportedPolicy(abc.ABC):
    """A loaded export: `__call__(*inputs) -> actions` (see the module docstring); `format` (onnx,
    pt2, torchscript), `path`, `meta` (the metadata, {} where a .pt/.pt2 file has none) and
    `input_names`."""
    format = ""

    def __init__(self, path: Path, meta: dict, input_names: list[str]):
        self.path, self.meta, self.input_names = path, meta, list(input_names)
        self._image_at = 0 if len(self.input_names) == 2 else None     # module(image, state), as the node calls it

    def _inputs(self, inputs) -> list[np.ndarray]:
        if len(inputs) != len(self.input_names):
            raise PolicyCallError(f"{self.path.name} takes {len(self.input_names)} inputs "
                                  f"({', '.join(self.input_names)}), got {len(inputs)}")
        return [as_image(x) if i == self._image_at else np.ascontiguousarray(x, dtype=np.float32)
                for i, x in enumerate(inputs)]

    @abc.abstractmethod
    def __call__(self, *inputs) -> np.ndarray:
        """The actions for these inputs (one format's runtime)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, inputs={self.input_names})"


class OnnxPolicy(ExportedPolicy):
    """An .onnx export run by ONNX Runtime's CPU provider."""
    format = "onnx"

    def __init__(self, path: Path, threads: int = 2):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:        # onnxruntime's errors derive from Exception only
            raise PolicyLoadError(f"{path}: not an ONNX model ONNX Runtime can run ({_first_line(e)})") from None
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_FILE)
        if not text:
            raise PolicyLoadError(f"{path}: an ONNX model without s2r policy metadata (metadata_props "
                                  f"{METADATA_FILE!r}); export it with learning.export.export_policy")
        meta = _parse_metadata(path, text)
        names = [i.name for i in self.session.get_inputs()]
        want = 2 if "image" in (meta.get("inputs") or []) else 1
        if len(names) != want:
            raise PolicyLoadError(f"{path}: the metadata's inputs {meta.get('inputs', ['state'])} need {want} "
                                  f"network input(s), the model has {names}")
        self.output = self.session.get_outputs()[0].name
        super().__init__(path, meta, names)

    def __call__(self, *inputs) -> np.ndarray:
        feed = dict(zip(self.input_names, self._inputs(inputs)))
        try:
            return self.session.run([self.output], feed)[0]
        except Exception as e:        # InvalidArgument, Fail, ...: Exception subclasses
            raise PolicyCallError(f"{self.path.name}: {_first_line(e)}") from None


class TorchPolicy(ExportedPolicy):
    """A .pt2 (torch.export) or .pt (TorchScript) export run by torch on the CPU."""

    def __init__(self, path: Path, threads: int | None = 2):
        import torch
        self.torch = torch
        if threads is not None:
            torch.set_num_threads(int(threads))        # process-wide: torch has one intra-op pool
        extra = {METADATA_FILE: ""}
        self.format = FORMATS[path.suffix]
        what = "a torch.export" if self.format == "pt2" else "a TorchScript"
        if not zipfile.is_zipfile(path):      # both are zip archives; torch would log a traceback first
            raise PolicyLoadError(f"{path}: not {what} policy (not a zip archive)")
        try:
            if self.format == "pt2":
                program = torch.export.load(str(path), extra_files=extra)
                names = [s.arg.name for s in program.graph_signature.input_specs
                         if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
                self.module = program.module()
            else:
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
                names = [a.name for a in module.forward.schema.arguments[1:]]
                try:    # constants folded, convolutions prepacked
                    module = torch.jit.optimize_for_inference(torch.jit.freeze(module))
                except RuntimeError as e:    # e.g. a module without forward's attributes: it runs unfrozen
                    log.debug("%s: running the TorchScript module unoptimized (%s)", path, _first_line(e))
                self.module = module
        except (RuntimeError, ValueError, OSError, KeyError, AttributeError, zipfile.BadZipFile) as e:
            raise PolicyLoadError(f"{path}: not {what} policy ({_first_line(e)})") from None
        meta = _parse_metadata(path, extra[METADATA_FILE]) if extra[METADATA_FILE] else {}
        super().__init__(path, meta, names)

    def __call__(self, *inputs) -> np.ndarray:
        torch = self.torch
        args = [torch.from_numpy(x) for x in self._inputs(inputs)]
        try:
            with torch.inference_mode():
                out = self.module(*args)
        except (RuntimeError, ValueError, TypeError, AssertionError, IndexError) as e:
            raise PolicyCallError(f"{self.path.name}: {_first_line(e)}") from None
        return out.detach().float().numpy()


def _parse_metadata(path, text: str) -> dict:
    try:
        meta = json.loads(text)
    except ValueError as e:
        raise PolicyLoadError(f"{path}: its {METADATA_FILE} is not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise PolicyLoadError(f"{path}: its {METADATA_FILE} is not a JSON object")
    return meta


def load_policy(path, threads: int | None = 2) -> tuple[ExportedPolicy, dict]:
    """The runnable policy in `path` (.onnx, .pt2 or .pt, by its suffix) and its metadata.
    threads: intra-op threads (ONNX Runtime: this session's; torch: the process's, None leaves
    them). PolicyLoadError (one line) for a missing file, an unknown suffix, a file its format
    cannot read, or an .onnx without s2r metadata."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise PolicyLoadError(f"{path}: unknown policy format {path.suffix!r} (known: {', '.join(FORMATS)})")
    if not path.is_file():
        raise PolicyLoadError(f"{path}: no such file")
    if threads is not None and int(threads) < 1:
        raise PolicyLoadError(f"threads must be at least 1, got {threads}")
    if path.suffix == ".onnx":
        policy = OnnxPolicy(path, 2 if threads is None else threads)
    else:
        policy = TorchPolicy(path, threads)
    return policy, policy.meta
