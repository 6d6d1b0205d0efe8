"""Run folders: every command that produces results writes them under runs/<timestamp>-<name>/."""
from __future__ import annotations

import os
import time
from pathlib import Path


def new_run_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    root = Path(root or os.environ.get("S2R_RUNS", "runs"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        d = root / (f"{stamp}-{name}" if i == 0 else f"{stamp}-{name}-{i}")
        try:
            d.mkdir(parents=True)
            return d
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run folder under {root}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temp file + rename, so a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
