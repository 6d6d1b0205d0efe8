"""sim: PyBullet robots, tasks (Gymnasium), domain randomization, cameras, parallel rollouts."""
import os
import sys


def _import_pybullet_quietly() -> None:
    """pybullet's C extension prints its build date when imported; keep logs and CLIs clean."""
    if "pybullet" in sys.modules:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = {fd: os.dup(fd) for fd in (1, 2)}
    except (OSError, ValueError):       # no real stdout/stderr (e.g. captured): import as is
        import pybullet  # noqa: F401
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in saved:
            os.dup2(devnull, fd)
        import pybullet  # noqa: F401
        import ctypes
        ctypes.CDLL(None).fflush(None)  # drop the banner from C's stdio buffers while muted
    finally:
        for fd, dup in saved.items():
            os.dup2(dup, fd)
            os.close(dup)
        os.close(devnull)


_import_pybullet_quietly()
