"""Compile-once machinery: C code generation of CasADi Functions and allocation-free evaluation.

Two things make CasADi fast from Python:

* `jit(f)`: generate C for an SX Function, build it with the system C compiler once per machine
  (cached on disk under the hash of the code), and load it back with `casadi.external`. A compiled
  Panda forward-dynamics Jacobian runs ~20x faster than CasADi's SX virtual machine. Without a C
  compiler (or with S2R_JIT=0) the SX Function is used as is: same numbers, slower.
* `FastFunction`: evaluate through `Function.buffer()` into preallocated numpy arrays. A plain
  `f(x, u)` call from Python costs ~30 us of argument conversion; a buffer call ~0.2 us.

Functions composed of several compiled pieces (a rollout calling the compiled dynamics step and
the compiled cost) are MX Functions over these externals, so each piece is compiled exactly once
whatever the horizon; `map` / `mapaccum` over the horizon are built per horizon length and kept.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import casadi as ca
import numpy as np

__all__ = ["jit", "jit_many", "jit_available", "compile_nlp", "FastFunction"]

# -O1: as fast as -O2 on this straight-line generated code (measured), and 2-5x quicker to compile
_CFLAGS = ("-O1", "-fPIC", "-shared", "-Wno-int-conversion")
_lock = threading.Lock()
_loaded: dict[str, ca.Function] = {}
_compiler_id: str | None = None


def _cache_dir() -> Path:
    root = os.environ.get("S2R_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "s2r")
    return Path(root) / "casadi_jit"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")


def jit_available() -> bool:
    """True when C code generation is enabled (S2R_JIT != 0) and a C compiler is on PATH."""
    return os.environ.get("S2R_JIT", "1") not in ("0", "false", "no", "off") and _compiler() is not None


def _compiler_version(cc: str) -> str:
    global _compiler_id
    if _compiler_id is None:
        try:
            out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        _compiler_id = f"{cc}|{out.splitlines()[0] if out else '?'}|{platform.machine()}|{platform.system()}"
    return _compiler_id


def jit(f: ca.Function, enabled: bool | None = None) -> ca.Function:
    """Return a compiled-C version of the SX Function `f` (or `f` itself when JIT is off).

    The shared library is cached by the hash of the generated code, the compiler and the flags, so
    the same function is compiled once per machine; concurrent processes race safely (atomic rename).
    """
    return jit_many([f], enabled)[0]


def jit_many(functions: list[ca.Function], enabled: bool | None = None) -> list[ca.Function]:
    """`jit` for several Functions, the C compilations running two at a time."""
    if enabled is None:
        enabled = jit_available()
    cc = _compiler() if enabled else None
    if cc is None:
        return list(functions)
    jobs = []
    for f in functions:
        gen = ca.CodeGenerator(f.name(), {"with_header": False})
        gen.add(f)
        code = gen.dump()
        key = _key(code, cc)
        jobs.append((f, code, key, _cache_dir() / f"{f.name()}_{key}.so"))
    todo = [j for j in jobs if j[2] not in _loaded and not j[3].exists()]
    if todo:
        with ThreadPoolExecutor(max_workers=2) as pool:       # gcc runs outside the GIL
            errors = list(pool.map(lambda j: _compile(cc, j[1], j[3], j[0].name()), todo))
        for (f, *_), err in zip(todo, errors):
            if err:
                warnings.warn(f"s2r: C compilation of {f.name()} failed, using the CasADi VM: {err}",
                              RuntimeWarning, stacklevel=3)
    out = []
    with _lock:
        for f, _, key, target in jobs:
            if key not in _loaded:
                if not target.exists():
                    out.append(f)
                    continue
                _loaded[key] = ca.external(f.name(), str(target))
            out.append(_loaded[key])
    return out


def _key(code: str, cc: str) -> str:
    return hashlib.sha256("\n".join([code, ca.__version__, _compiler_version(cc), " ".join(_CFLAGS)])
                          .encode()).hexdigest()[:20]


def compile_nlp(solver: ca.Function) -> str | None:
    """Compile the callback functions of an `nlpsol` (objective, constraints and their derivatives)
    to a cached shared library; returns its path for `casadi.nlpsol(name, plugin, path, opts)`, or
    None when there is no compiler or the build failed."""
    cc = _compiler() if jit_available() else None
    if cc is None:
        return None
    name = solver.name()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        try:
            os.chdir(tmp)                                   # generate_dependencies writes to the cwd
            solver.generate_dependencies(f"{name}.c")
            code = Path(tmp, f"{name}.c").read_text()
        finally:
            os.chdir(cwd)
    target = _cache_dir() / f"{name}_{_key(code, cc)}.so"
    if not target.exists():
        err = _compile(cc, code, target, name)
        if err:
            warnings.warn(f"s2r: C compilation of {name} failed, using the CasADi VM: {err}",
                          RuntimeWarning, stacklevel=2)
            return None
    return str(target)


def _compile(cc: str, code: str, target: Path, name: str) -> str | None:
    """Build one shared library into the cache; returns an error text or None."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            src = Path(tmp) / f"{name}.c"
            src.write_text(code)
            lib = Path(tmp) / "lib.so"
            proc = subprocess.run([cc, *_CFLAGS, "-o", str(lib), str(src), "-lm"], capture_output=True, text=True)
            if proc.returncode != 0:
                return proc.stderr[-500:]
            os.replace(lib, target)
    except OSError as exc:                                  # unwritable cache, missing compiler, ...
        return str(exc)
    return None


class FastFunction:
    """Call a CasADi Function through preallocated dense numpy buffers.

    `inputs[i]` / `outputs[i]` are flat float64 arrays holding CasADi's column-major data. Write
    inputs in place (or pass arrays to `__call__`), call, read outputs. Outputs are overwritten by
    the next call: copy what you keep. One instance is not thread-safe; make one per thread.
    """

    def __init__(self, f: ca.Function):
        for i in range(f.n_in()):
            if not f.sparsity_in(i).is_dense():
                raise ValueError(f"{f.name()}: input {i} must be dense")
        for i in range(f.n_out()):
            if not f.sparsity_out(i).is_dense():
                raise ValueError(f"{f.name()}: output {i} must be dense (use casadi.densify)")
        self.function = f
        self.inputs = [np.zeros(f.nnz_in(i)) for i in range(f.n_in())]
        self.outputs = [np.zeros(f.nnz_out(i)) for i in range(f.n_out())]
        self._buf, self._eval = f.buffer()
        for i, a in enumerate(self.inputs):
            self._buf.set_arg(i, memoryview(a))
        for i, a in enumerate(self.outputs):
            self._buf.set_res(i, memoryview(a))

    def __call__(self, *args) -> list[np.ndarray]:
        """Copy `args` (any shapes with the right number of elements, C order) in, evaluate, and
        return the output buffers (views that the next call overwrites)."""
        for dst, a in zip(self.inputs, args):
            if a is not None:
                dst[:] = np.ravel(a)
        self._eval()
        return self.outputs

    def evaluate(self) -> list[np.ndarray]:
        """Evaluate on whatever is already in `inputs`."""
        self._eval()
        return self.outputs
