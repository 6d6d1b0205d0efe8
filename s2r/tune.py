"""`s2r tune CONFIG`: PD gains for a simulated robot's joints, proposed from its URDF and verified
in the simulator through the sim driver and the safety layer, as the HIL suite drives them.

Prints a per-joint table and the YAML to paste (the config's `joints:` lines, or a `gains:`
block for the robot description); exit 0 when every joint passes. A joint that fails is one line
on stderr, `FILE: joints[i].gains: <joint> <what failed>: <what to change>`, and exit 2.
`--check` verifies the config's current gains instead of proposing new ones. The computation
and the measurements are `sim.gain_tuning`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def add_tune_parser(sub) -> None:
    """Register `s2r tune` on the CLI's subparsers (imports nothing heavy until it runs)."""
    # defaults are sim.gain_tuning's (DEFAULT_BANDWIDTH_HZ, DEFAULT_DAMPING), filled in when it runs
    # so that building the CLI does not import pybullet; the help names them
    p = sub.add_parser("tune", help="propose PD gains for a simulated robot from its URDF and verify them in sim")
    p.add_argument("config", help="hardware config with the sim driver (path or name, e.g. iiwa_sim)")
    p.add_argument("--bandwidth", type=float, metavar="HZ",
                   help="closed-loop bandwidth the gains aim at (default 5 Hz; per joint, lowered where the "
                        "physics step or the effort limit bounds it, raised where the URDF's damping would lag)")
    p.add_argument("--damping", type=float, metavar="ZETA", help="damping ratio (default 1: critically damped)")
    p.add_argument("--joints", nargs="+", metavar="NAME", help="only these joints (default: all)")
    p.add_argument("--check", action="store_true", help="verify the config's current gains, propose nothing")
    p.set_defaults(fn=run_tune)


def run_tune(a) -> int:
    from s2r.drivers import open_driver
    from s2r.sim import gain_tuning as gt

    from .core.config import ConfigError, load_config, resolve_config_path

    bandwidth = gt.DEFAULT_BANDWIDTH_HZ if a.bandwidth is None else a.bandwidth
    damping = gt.DEFAULT_DAMPING if a.damping is None else a.damping
    cfg = load_config(a.config)
    file = _shown_path(a.config, resolve_config_path(a.config))
    if cfg.driver_type != "sim" or cfg.robot is None:
        raise ConfigError(file, "driver.type", f"`s2r tune` tunes the simulator's joint gains; this setup's driver "
                                               f"is {cfg.driver_type!r} (tune a *_sim config of the same robot)")
    try:
        gains = gt.current_gains(cfg, a.joints) if a.check else \
            gt.propose_gains(cfg, bandwidth, damping, a.joints)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tuned = gt.with_gains(cfg, gains)
    # the refusals of unstable gains are counted in the table, not logged line by line
    safety_log = logging.getLogger("s2r.safety")
    level = safety_log.level
    safety_log.setLevel(logging.ERROR)
    robot = open_driver(tuned, "sim", realtime=False)
    try:
        checks = gt.verify_gains(robot, tuned, gains, cfg.name)
    finally:
        robot.disconnect()
        safety_log.setLevel(level)

    what = "checking the config's gains" if a.check else \
        f"proposed for {bandwidth:g} Hz bandwidth, damping ratio {damping:g}"
    print(f"{file}: {cfg.name}, robot {cfg.robot}, {len(gains)} joint(s) {what}; physics {cfg.sim.physics_hz:g} Hz, "
          f"hil.tracking_tolerance {cfg.hil.tracking_tolerance:g} rad")
    print(format_table(checks, 1.0 / cfg.sim.physics_hz))
    failed = [c for c in checks if not c.passed]
    if failed:
        c = gt.first_failure(checks)
        more = f" ({len(failed) - 1} more joint(s) fail: see the table)" if len(failed) > 1 else ""
        print(f"{file}: joints[{c.gains.index}].gains: {c.failure}{more}", file=sys.stderr)
        return 2
    if a.check:
        print(f"OK  the gains of {len(checks)} joint(s) are stable and track within "
              f"{cfg.hil.tracking_tolerance:g} rad")
        return 0
    print(f"\nverified. Paste into {file} (joints:):")
    print("\n".join(joint_yaml(cfg.joints[g.index], g) for g in gains))
    print(f"\nor into the robot description {_relative(Path(cfg.robot_file))} "
          "(joints without gains in a config take these):")
    print(gains_block(gains))
    return 0


def format_table(checks, dt: float) -> str:
    rows = [f"{'joint':<20} {'I kg m^2':>9} {'c':>6} {'kp':>8} {'kd':>8} {'bw Hz':>6} {'(kd+c)dt/I':>10} "
            f"{'step':>6} {'overshoot':>9} {'sweep err':>9} {'at limit':>8}  result"]
    for c in checks:
        g = c.gains
        bound = f" ({g.bound} bound)" if g.bound else ""
        rows.append(f"{g.name:<20} {g.inertia:>9.3g} {g.passive_damping:>6.3g} {g.kp:>8g} {g.kd:>8g} "
                    f"{g.bandwidth_hz:>6.2f} {g.damping_step(dt):>10.3f} {c.step:>6.3g} {c.overshoot:>9.4f} {c.sweep_error:>9.4f} {'-' if c.limit_error is None else f'{c.limit_error:.4f}':>8}  "
                    + ("pass" + bound if c.passed else f"FAIL: {c.kind}"))
    return "\n".join(rows)


def joint_yaml(j, g) -> str:
    """A `joints:` line of a hardware config: the joint as configured, with gains g."""
    lim = j.limits
    limits = f"position: [{lim.lower:g}, {lim.upper:g}], velocity: {lim.velocity:g}"
    if lim.acceleration is not None:
        limits += f", acceleration: {lim.acceleration:g}"
    limits += f", effort: {lim.effort:g}"
    extra = f"id: {j.id}, " if j.id is not None else ""
    cal = f", calibration: {{offset: {j.offset:g}, sign: {j.sign}}}" if (j.offset, j.sign) != (0.0, 1) else ""
    return f"  - {{name: {j.name}, {extra}limits: {{{limits}}}{cal}, gains: {{kp: {g.kp:g}, kd: {g.kd:g}}}}}"


def gains_block(gains) -> str:
    return "gains:\n" + "\n".join(f"  {g.name}: {{kp: {g.kp:g}, kd: {g.kd:g}}}" for g in gains)


def _shown_path(given, found: Path) -> str:
    """The file as the user named it when it is a path; else relative to here when it is below."""
    if Path(str(given)).suffix in (".yaml", ".yml"):
        return str(given)
    return _relative(found)


def _relative(found: Path) -> str:
    try:
        return str(found.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(found)


def main(argv=None) -> int:
    """`python -m s2r.tune CONFIG ...` (the same as `s2r tune`)."""
    ap = argparse.ArgumentParser(prog="s2r")
    add_tune_parser(ap.add_subparsers(dest="cmd", required=True))
    return run_tune(ap.parse_args(["tune", *(sys.argv[1:] if argv is None else argv)]))
