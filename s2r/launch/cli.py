"""`s2r launch BRINGUP [--config CONFIG] [--set NODE.PARAM=VALUE] [--isolated] [--grace S] [--dry-run]`."""
from __future__ import annotations

import argparse
import sys

from ..core.yamlio import ConfigError, excerpt
from .bringup import apply_config, apply_overrides, check_bringup, load_bringup, node_command
from .supervisor import run_bringup


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0.0 <= v <= 3600.0:
        raise argparse.ArgumentTypeError(f"expected seconds in [0, 3600], got {excerpt(text, 40)}")
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="s2r launch", description="start the ROS 2 nodes of a bringup YAML "
                                 "(pip-installed ROS 2; on a full install use ros2 launch s2r_ros ...)")
    ap.add_argument("bringup", help="path, or a bringup name (e.g. sim_panda): ./bringup, $S2R_PATH, the packaged ones")
    ap.add_argument("--config", default=None, metavar="CONFIG",
                    help="hardware config for every node that takes one (e.g. iiwa_sim: the bringup on another robot)")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                    help="override a node parameter (repeatable)")
    ap.add_argument("--isolated", action="store_true",
                    help="use a private ROS_DOMAIN_ID and localhost-only discovery (tests, demos)")
    ap.add_argument("--grace", type=_seconds, default=10.0, help="seconds nodes get to stop after Ctrl-C")
    ap.add_argument("--dry-run", action="store_true", help="print the node commands and exit")
    a = ap.parse_args(argv)
    try:
        b = load_bringup(a.bringup)
        if a.config:
            apply_config(b, a.config)
        apply_overrides(b, a.set)
        check_bringup(b)
    except ConfigError as e:
        print(f"bringup error: {e}", file=sys.stderr)
        return 2
    if a.dry_run:
        for n in b.nodes:
            print(f"{n.name}: {' '.join(node_command(n, '<params>'))}  parameters={n.parameters}")
        return 0
    return run_bringup(b, isolated=a.isolated, grace_s=a.grace)
