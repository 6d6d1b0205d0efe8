"""`s2r identify RECORDING --config CONFIG`: fit the simulator to a recorded robot run.

    s2r identify RECORDING --config CONFIG [--out DIR] [--fit NAME ...] [--per-joint NAME ...]

Replays the recorded position set-points (/driver/commands, as `s2r excite --record` and `s2r hil
--record` write them) in the simulator from the recorded states (/joint_states) over short segments
(multiple shooting) and fits link mass scale, joint damping scale, controller gain scale, action
latency and encoder offsets (s2r.sim.identification). Prints each value with its uncertainty and
writes into DIR (default: RECORDING-identified):
  identified.yaml   the values, their standard deviations, the fit's figures
  overlay.yaml      the hardware config's changes: per joint gains (kp, kd times the gain scale)
                    and calibration offsets corrected by the encoder offsets
  calibrated.yaml   the whole config with the overlay applied (s2r check opens it)
  preset.yaml       a randomization preset centred on the identified values (ranges: +-3 standard
                    deviations, at least +-2 % / 0.5 mrad), relative to the nominal simulator:
                    `s2r train ... --randomize DIR/preset.yaml`
  replay.png        recorded vs nominal-sim vs calibrated-sim positions per joint
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

MIN_DURATION_S = 1.5
REL_FLOOR, OFFSET_FLOOR = 0.02, 5e-4       # the preset's narrowest half-ranges: 2 %, 0.5 mrad

# What a robot lets one identify as simulator parameters, by the backend that recorded it (the
# recording's custom_data, as `s2r excite` writes it): not listed, all of them; else those, and why
# not the others. Where the robot's joints are not the simulator's rigid bodies under a joint PD,
# its motion still has to be explained for the offsets to come out right: the PD's gain and
# damping (they shape the response as a position loop's bandwidth does) and the latency (a lag of
# 20 ms looks like a period or two of delay) are fitted along (`FitResult.nuisance`), not reported.
BACKEND_LIMITS = {
    "dynamixel": (("encoder_offset",),
                  "a Dynamixel servo closes its own position loop (the emulator: a first-order lag of 20 ms, "
                  "velocity-limited, 1-tick resolution), which the simulator's rigid-body joint PD does not "
                  "represent, and whose lag a latency cannot be told from"),
    "ros2-emulated": (("encoder_offset",),
                      "the emulated ros2_control robot mirrors commands through a first-order lag (20 ms), not "
                      "rigid-body dynamics, and its lag a latency cannot be told from"),
}
NUISANCE = ("joint_damping_scale", "gain_scale", "action_latency")


def backend_of(rec) -> str | None:
    """The recording's robot backend (`s2r excite`'s custom_data): sim, dynamixel, ros2, or
    ros2-emulated (the fake robot); None where the recording does not say."""
    backend = rec.custom.get("backend")
    if backend == "ros2" and str(rec.custom.get("emulated")) == "True":
        return "ros2-emulated"
    return backend


def identifiable(rec) -> tuple:
    """(what `rec`'s robot lets one identify, why not the rest: None where it is everything)."""
    from s2r.sim.identification import FIT_PARAMETERS
    limits = BACKEND_LIMITS.get(backend_of(rec))
    return (FIT_PARAMETERS, None) if limits is None else limits


def fit_recording(rec, cfg, *, fit=None, per_joint=(), max_latency: int = 3, segment_s: float = 0.5,
                  progress=None):
    """Identify `cfg`'s simulated robot from `rec` (a Recording): (FitResult, ReplayData, model).
    `fit` (default: what the recording's backend lets one identify, `identifiable`). A recording
    without the needed topics, too short or of another robot: RecordingError; a parameter its
    backend does not let one identify: IdentificationError."""
    from s2r.core.bag_reader import check_recording
    from s2r.drivers.sim_loading import load_configured_robot
    from s2r.sim.identification import IdentificationError, ReplayData, ReplayModel, identify
    from s2r.sim.robots import Simulation

    allowed, why = identifiable(rec)
    fit = tuple(fit or allowed)
    bad = [f for f in fit if f not in allowed]
    if bad:
        raise IdentificationError(f"{bad[0]} cannot be identified from a {backend_of(rec)} recording: {why}; "
                                  f"identifiable: {', '.join(allowed)}")
    nuisance = tuple(n for n in NUISANCE if n not in fit) if why is not None else ()
    check_recording(rec, ("/joint_states", "/driver/commands"), cfg.joint_names, min_duration_s=MIN_DURATION_S)
    data = ReplayData.from_recording(rec, cfg.joint_names, 1.0 / cfg.control_rate_hz)
    simulation = Simulation(cfg.sim.physics_hz)
    robot = load_configured_robot(simulation, cfg)
    model = ReplayModel(simulation, robot, data.period, cfg.spec().max_velocity)
    result = identify(model, data, fit=fit + nuisance, per_joint=tuple(per_joint),
                      max_latency=max_latency, segment_s=segment_s, progress=progress)
    for n in nuisance:            # fitted along, not a value of this robot
        result.nuisance[n] = result.values.pop(n)
        result.std.pop(n, None)
    return result, data, model


def _fmt(v, s, unit="", k=1.0) -> str:
    if np.ndim(v):
        return ", ".join(f"{a * k:+.4g}±{b * k:.2g}" for a, b in zip(v, s)) + unit
    return f"{v * k:.4g} ± {s * k:.2g}{unit}"


def describe(result, names) -> str:
    lines = []
    for name, v in result.values.items():
        s = result.std[name]
        if name == "encoder_offset":
            lines.append("  encoder_offset (mrad):  " + _fmt(v, s, k=1e3))
        elif name == "action_latency":
            tried = ", ".join(f"{L}: {r * 1e3:.3f}" for L, r in result.latency_rms.items())
            lines.append(f"  action_latency:         {v} control periods (rms mrad by latency: {tried})")
        else:
            lines.append(f"  {name + ':':<23} " + _fmt(v, s))
    lines.append(f"  tracking rms:           {result.rms * 1e3:.4f} mrad calibrated, {result.rms_nominal * 1e3:.4f} "
                 f"mrad nominal ({len(result.segments)} segments, {result.evaluations} replays, "
                 f"{result.seconds:.1f} s)")
    return "\n".join(lines)


def _plain(v):
    if isinstance(v, np.ndarray):
        return [float(x) for x in v]
    if isinstance(v, (np.integer, int)):
        return int(v)
    return float(v)


def overlay(result, cfg, moving=None) -> dict:
    """The hardware config's changes: gains times the identified gain scale on the joints that
    moved (`moving`, a mask; default all), calibration offsets corrected by the identified encoder
    offsets (raw = sign q + offset; a position reported e too high is corrected by offset += sign e)."""
    n = len(cfg.joints)
    moving = np.ones(n, bool) if moving is None else np.asarray(moving, bool)
    g = np.broadcast_to(result.values.get("gain_scale", 1.0), (n,))
    e = np.asarray(result.values.get("encoder_offset", np.zeros(n)))
    joints = []
    for j, joint in enumerate(cfg.joints):
        entry = {"name": joint.name}
        if "gain_scale" in result.values and moving[j]:
            entry["gains"] = {"kp": round(float(joint.kp * g[j]), 6), "kd": round(float(joint.kd * g[j]), 6)}
        if "encoder_offset" in result.values:
            entry["calibration"] = {"offset": round(float(joint.offset + joint.sign * e[j]), 9),
                                    "sign": int(joint.sign)}
        joints.append(entry)
    return {"joints": joints}


def apply_overlay(config_path, ov: dict) -> dict:
    """The config file's data with the overlay's per-joint entries merged in (by joint name)."""
    from s2r.core import yamlio
    data = yamlio.load_file(config_path)
    by_name = {j["name"]: j for j in ov["joints"]}
    for joint in data["joints"]:
        for key, value in by_name.get(joint["name"], {}).items():
            if key != "name":
                joint[key] = {**joint.get(key, {}), **value}
    return data


def preset(result, source: str) -> dict:
    """A randomization preset centred on the identified values, relative to the nominal simulator:
    scales uniform over +-3 std (at least +-REL_FLOOR of the value; per-joint values span all
    joints'), the latency constant, encoder offsets normal around 0 (the calibrated config
    corrects them) with the offsets' largest uncertainty (at least OFFSET_FLOOR)."""
    groups: dict = {}
    for name in ("link_mass_scale", "joint_damping_scale", "gain_scale"):
        if name not in result.values:
            continue
        v, s = np.atleast_1d(result.values[name]), np.atleast_1d(result.std[name])
        half = np.maximum(3 * s, REL_FLOOR * v)
        lo, hi = float(np.min(v - half)), float(np.max(v + half))
        groups.setdefault("dynamics", {})[name] = {"dist": "uniform", "low": round(max(lo, 1e-3), 6),
                                                   "high": round(hi, 6)}
    if "action_latency" in result.values:
        groups["timing"] = {"action_latency": {"dist": "constant", "value": int(result.values["action_latency"])}}
    if "encoder_offset" in result.values:
        std = max(float(np.max(3 * np.asarray(result.std["encoder_offset"]))), OFFSET_FLOOR)
        groups["unmodeled"] = {"encoder_offset": {"dist": "normal", "mean": 0.0, "std": round(std, 9)}}
    return {"description": f"identified from {source} (s2r identify): centred on the identified values", "groups": groups}


def plot(path, model, data, result, names) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from s2r.sim.identification import replay_curves

    segs = result.segments
    q_nom, rows = replay_curves(model, data, segs, {}, 0)
    q_cal, _ = replay_curves(model, data, segs, {**result.values, **result.nuisance}, result.latency)
    t = rows * data.period
    n = len(names)
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.8 * n), sharex=True, squeeze=False)
    for j, ax in enumerate(axes[:, 0]):
        ax.plot(t, data.q[rows, j], "k.", ms=1.5, label="recorded")
        ax.plot(t, q_nom[:, j], "-", color="tab:red", lw=0.8, label="nominal sim")
        ax.plot(t, q_cal[:, j], "-", color="tab:blue", lw=0.8, label="calibrated sim")
        ax.set_ylabel(f"{names[j]}\n(rad)", fontsize=7)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=3)
    axes[0, 0].set_title(f"replay over {len(segs)} segments: rms {result.rms_nominal * 1e3:.3f} mrad nominal, "
                         f"{result.rms * 1e3:.3f} mrad calibrated")
    axes[-1, 0].set_xlabel("t (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    from s2r.sim.identification import FIT_PARAMETERS

    ap = argparse.ArgumentParser(prog="s2r identify", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("recording", help="a rosbag2 recording (s2r excite --record)")
    ap.add_argument("--config", required=True, help="the hardware config it was recorded with")
    ap.add_argument("--out", help="output folder (default: RECORDING-identified)")
    ap.add_argument("--fit", nargs="+", choices=FIT_PARAMETERS, default=None,
                    help="what to identify (default: all the recording's robot lets one identify: "
                         "on a Dynamixel or an emulated ros2_control robot, encoder offsets and latency)")
    ap.add_argument("--per-joint", nargs="+", choices=("joint_damping_scale", "gain_scale"), default=[],
                    help="fit these as one value per joint (default: one for all joints)")
    ap.add_argument("--max-latency", type=int, default=3, help="latency candidates 0..N control periods (default 3)")
    ap.add_argument("--segment", type=float, default=0.5, help="multiple-shooting segment length, s (default 0.5)")
    ap.add_argument("--no-plot", action="store_true")
    a = ap.parse_args(argv)
    if a.max_latency < 0 or not a.segment > 0:
        ap.error("--max-latency must be >= 0 and --segment > 0")

    import yaml

    from s2r.core.bag import RecordingError

    from s2r.core.bag_reader import read_bag
    from s2r.core.config import load_config, resolve_config_path
    from s2r.sim.identification import IdentificationError
    from s2r.sim.randomization import Randomizer

    cfg = load_config(a.config)
    try:
        rec = read_bag(a.recording)
        if rec.stopped:
            print(f"warning: {rec.stopped}", file=sys.stderr)
        print(f"identifying {cfg.name} from {rec.path} ({rec.duration_s:.1f} s)")
        allowed, why = identifiable(rec)
        if why is not None:
            print(f"  this robot ({rec.custom.get('backend')}) lets one identify {', '.join(allowed)} only: {why}")
        result, data, model = fit_recording(rec, cfg, fit=a.fit, per_joint=a.per_joint, max_latency=a.max_latency,
                                            segment_s=a.segment, progress=lambda m: print("  " + m, flush=True))
    except (RecordingError, IdentificationError) as e:
        print(f"identification error: {e}", file=sys.stderr)
        return 2
    names = list(data.names)
    print("identified:")
    print(describe(result, names))
    out = Path(a.out) if a.out else Path(str(Path(a.recording).resolve()) + "-identified")
    out.mkdir(parents=True, exist_ok=True)
    ident = {"config": cfg.name, "recording": str(rec.path), "joints": names,
             "values": {k: _plain(v) for k, v in result.values.items()},
             "std": {k: _plain(v) for k, v in result.std.items()},
             "rms_rad": result.rms, "rms_nominal_rad": result.rms_nominal,
             "latency_rms_rad": {int(k): v for k, v in result.latency_rms.items()},
             "segments": len(result.segments), "replays": result.evaluations, "seconds": round(result.seconds, 2)}
    (out / "identified.yaml").write_text(yaml.safe_dump(ident, sort_keys=False))
    ov = overlay(result, cfg, data.moving())
    header = f"# s2r identify {rec.path} --config {cfg.name}: the hardware config's identified changes\n"
    (out / "overlay.yaml").write_text(header + yaml.safe_dump(ov, sort_keys=False))
    calibrated = apply_overlay(resolve_config_path(a.config), ov)
    calibrated["name"] = f"{cfg.name}_calibrated"
    (out / "calibrated.yaml").write_text(f"# {cfg.name} with {out / 'overlay.yaml'} applied (s2r identify)\n"
                                         + yaml.safe_dump(calibrated, sort_keys=False))
    load_config(out / "calibrated.yaml")              # what was written opens
    pre = preset(result, str(rec.path))
    (out / "preset.yaml").write_text(yaml.safe_dump(pre, sort_keys=False))
    Randomizer.load(out / "preset.yaml")              # and is a valid preset
    written = ["identified.yaml", "overlay.yaml", "calibrated.yaml", "preset.yaml"]
    if not a.no_plot:
        plot(out / "replay.png", model, data, result, names)
        written.append("replay.png")
    print(f"wrote {out}/: {', '.join(written)}")
    print(f"train around this robot: s2r train ... --randomize {out / 'preset.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
