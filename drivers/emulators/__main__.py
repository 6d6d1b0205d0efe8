"""`python -m s2r.drivers.emulators KIND CONFIG` runs an emulator in the foreground (what
`s2r emulate KIND CONFIG` does); `python -m s2r.drivers.emulators serve` is the child process that
`emulated()` starts (control requests on stdin, see drivers/emulators/server.py)."""
from __future__ import annotations

import argparse
import sys

from s2r.core.config import ConfigError, load_config


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        from .server import serve
        return serve()
    ap = argparse.ArgumentParser(prog="python -m s2r.drivers.emulators",
                                 description="Run a protocol-level robot emulator until Ctrl-C.")
    ap.add_argument("kind", choices=("dynamixel", "ros2"))
    ap.add_argument("config", help="hardware config (path or name in hardware_configs/)")
    ap.add_argument("--no-realtime", action="store_true", help="answer at once instead of at the bus's speed")
    a = ap.parse_args(argv)
    try:
        cfg = load_config(a.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.driver_type != a.kind:
        print(f"error: {cfg.path}: driver.type is {cfg.driver_type!r}, not {a.kind!r}", file=sys.stderr)
        return 2
    from . import run_emulator
    return run_emulator(cfg, realtime=not a.no_realtime)


if __name__ == "__main__":
    sys.exit(main())
