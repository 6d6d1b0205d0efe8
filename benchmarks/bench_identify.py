"""Identification of simulated "robots" with hidden parameters (issue #23's targets).

Per config and draw: the sim driver (lockstep; `--realtime`: real time) runs under a fixed draw of link mass scale, joint
damping scale, gain scale (one value each for all joints), action latency and per-joint encoder
offsets, with encoder noise on every read (`SimDriver.randomize` with a constant preset: the
benchmark's "reality"); `s2r excite`'s
excitation runs on it through the safety layer and is recorded (rosbag2); `s2r identify`'s fit
recovers the parameters from the recording. A second excitation (another seed: a held-out
trajectory) is replayed under the nominal and the calibrated simulator (multiple shooting, as the
fit), for the tracking ratio. Errors are the worst over draws; times the median and the largest.

    python benchmarks/bench_identify.py --json OUT [--configs panda_sim hand_sim] [--draws 5] [--duration 20]

The defaults (Panda and the hand, 5 draws, 20 s recordings) take about half an hour on 2 cores;
`--configs panda_sim --draws 1` about 1.5 minutes.

`recorder_added_overruns`: the real-time sim driver's missed control periods while a recording of
100 Hz joint states and 30 Hz 128x128 RGB images is written, minus those without it, in one run:
the recording is on and off in alternating phases (on, off, off, on, on, off, ...: a drift of the
machine's load over the run cancels), `--recorder-s` seconds of each (default 60).
`--only recorder` measures just that.

`--only policy` (not part of the default run): the point of identifying. One hidden "robot" (a
constant draw of mass, damping, gain scale and latency); an excitation recorded on it is
identified (`s2r identify`: preset.yaml centred on what it found); `s2r train gps --task
ArmReach` trains one policy under that preset and one under `default` (same seed, iterations and
8 draws per iteration), and `s2r eval` scores both on the hidden robot (`--policy-episodes`
held-out starts from seed 50000, Wilson 95 % intervals): policy_identified_success,
policy_default_success. Full size (`--policy-iterations 10 --policy-episodes 100`): about an hour
on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from s2r.core.bag import BagWriter

from s2r.core.bag_reader import read_bag
from s2r.core.config import load_config
from s2r.drivers import open_driver
from s2r.excite import run_excitation
from s2r.identify import fit_recording
from s2r.sim.excitation import ExcitationLimits, fourier_excitation
from s2r.sim.identification import replay_curves, segments_of

FINGERS = ("panda_finger_joint1", "panda_finger_joint2")     # not excited: the Panda's arm joints are


def draw_reality(rng, joint_noise: float = 0.0) -> dict:
    """A hidden robot: one constant preset (the offsets drawn per joint by the driver), and
    encoder noise of `joint_noise` rad (std, every read)."""
    noise = {"noise": {"joint_noise": {"dist": "normal", "std": joint_noise, "mode": "per_step"}}} if joint_noise else {}
    return {"groups": {**noise,
        "dynamics": {"link_mass_scale": {"dist": "constant", "value": float(rng.uniform(0.7, 1.4))},
                     "joint_damping_scale": {"dist": "constant", "value": float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))},
                     "gain_scale": {"dist": "constant", "value": float(rng.uniform(0.8, 1.25))}},
        "timing": {"action_latency": {"dist": "constant", "value": int(rng.integers(0, 3))}},
        "unmodeled": {"encoder_offset": {"dist": "uniform", "low": -0.005, "high": 0.005}}}}


def record(cfg, reality, seed, duration, excitation_seed, path, joints, realtime=False):
    robot = open_driver(cfg, "sim", realtime=realtime)
    try:
        draw = robot.driver.randomize(reality, seed=seed, joints=joints)
        names = list(robot.spec.joint_names)
        start = np.asarray(robot.read().q, float)
        lim = ExcitationLimits.of_robot(robot.spec, cfg.safety, joints)
        idx = [names.index(j) for j in lim.names]
        plan = fourier_excitation(lim, start[idx], duration, seed=excitation_seed)
        bag = BagWriter(path)
        bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        bag.add_topic("/driver/commands", "std_msgs/msg/Float64MultiArray")
        try:
            run_excitation(robot, plan, bag=bag, realtime=realtime)
        finally:
            bag.close()
    finally:
        robot.disconnect()
    return draw


def held_out_ratio(cfg, fit, model, path) -> float:
    """rms tracking error calibrated / nominal on another recording of the same robot."""
    from s2r.sim.identification import ReplayData
    data = ReplayData.from_recording(read_bag(path), cfg.joint_names, 1.0 / cfg.control_rate_hz)
    segs = segments_of(data, fit.segments[0][1], 3)
    q_nom, rows = replay_curves(model, data, segs, {}, 0)
    q_cal, _ = replay_curves(model, data, segs, fit.values, fit.latency)
    rms = lambda q: float(np.sqrt(np.mean((q - data.q[rows]) ** 2)))   # noqa: E731
    return rms(q_cal) / rms(q_nom)


def run(config: str, draws: int, duration: float, seed: int, work: Path, joint_noise: float = 0.0,
        realtime: bool = False) -> dict:
    cfg = load_config(config)
    joints = [j for j in cfg.joint_names if j not in FINGERS]
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(draws):
        reality = draw_reality(rng, joint_noise)
        truth = {k: v["value"] for g in reality["groups"].values() for k, v in g.items() if "value" in v}
        fit_path, held_path = work / f"{cfg.name}-{d}-fit", work / f"{cfg.name}-{d}-held"
        draw = record(cfg, reality, seed + d, duration, 2 * d, fit_path, joints, realtime)
        record(cfg, reality, seed + d, duration, 2 * d + 1, held_path, joints, realtime)
        fit, data, model = fit_recording(read_bag(fit_path), cfg)
        idx = [cfg.joint_names.index(j) for j in joints]
        offsets_true = np.asarray(draw["encoder_offset"])[idx]
        row = {
            "truth": truth, "identified": {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                           for k, v in fit.values.items()},
            "mass_scale_rel_err": abs(fit.values["link_mass_scale"] / truth["link_mass_scale"] - 1),
            "damping_scale_rel_err": abs(fit.values["joint_damping_scale"] / truth["joint_damping_scale"] - 1),
            "gain_scale_rel_err": abs(fit.values["gain_scale"] / truth["gain_scale"] - 1),
            "latency_exact": int(fit.latency == truth["action_latency"]),
            "offset_err_mrad": float(np.max(np.abs(fit.values["encoder_offset"][idx] - offsets_true)) * 1e3),
            "identify_s": fit.seconds, "identify_cpu_s": fit.cpu_seconds, "replays": fit.evaluations,
            "calibrated_over_nominal_tracking": held_out_ratio(cfg, fit, model, held_path),
        }
        rows.append(row)
        print(f"{cfg.name} draw {d}: mass {row['mass_scale_rel_err']:.2%} damping {row['damping_scale_rel_err']:.2%} "
              f"gain {row['gain_scale_rel_err']:.2%} latency {'ok' if row['latency_exact'] else 'WRONG'} "
              f"offsets {row['offset_err_mrad']:.3f} mrad, {row['identify_s']:.1f} s ({row['identify_cpu_s']:.1f} s CPU, "
              f"{row['replays']} replays), held-out tracking "
              f"{row['calibrated_over_nominal_tracking']:.3f}x nominal", flush=True)
    worst = {k: max(r[k] for r in rows) for k in ("mass_scale_rel_err", "damping_scale_rel_err",
                                                  "gain_scale_rel_err", "offset_err_mrad",
                                                  "calibrated_over_nominal_tracking", "identify_s",
                                                  "identify_cpu_s")}
    return {"config": cfg.name, "joints": len(joints), "duration_s": duration, "draws": rows,
            **worst, "latency_exact": int(all(r["latency_exact"] for r in rows)),
            "identify_s_median": statistics.median(r["identify_s"] for r in rows)}


def recorder_overruns(config: str, seconds: float, phases: int, work: Path) -> dict:
    """The sim driver in real time, read at its control rate by a loop that, in the recording
    phases, records each state on /joint_states (100 Hz at a 100 Hz control rate) and a 128x128
    RGB image on /camera/image_raw at 30 Hz (the recorder's feed: a BagWriter, serialized and
    written by its own thread). Missed periods (the stepping thread's `missed_periods`, and the
    reading loop's late periods) per phase kind, each over `seconds` in `phases` phases."""
    from s2r.drivers.sim_driver import SimDriver

    cfg = load_config(config)
    drv = SimDriver(cfg, realtime=True)
    drv.connect()
    bag = BagWriter(work / f"{cfg.name}-recorder", custom_data={"recorded_by": "bench_identify"})
    bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    bag.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
    T = bag.msg_types
    JointState, Header, Time, Image = (T["sensor_msgs/msg/JointState"], T["std_msgs/msg/Header"],
                                       T["builtin_interfaces/msg/Time"], T["sensor_msgs/msg/Image"])
    frames = np.random.default_rng(0).integers(0, 256, (8, 128 * 128 * 3), dtype=np.uint8)
    names, period = list(cfg.joint_names), 1.0 / cfg.control_rate_hz
    order = [(i // 2 + i) % 2 == 0 for i in range(2 * phases)]        # on, off, off, on, on, off, ...
    phase_s = seconds / phases
    out = {True: dict(missed=0, late=0, s=0.0), False: dict(missed=0, late=0, s=0.0)}
    n_img = 0
    try:
        for on in order:
            m0, t0 = drv.stats["missed_periods"], time.monotonic()
            next_t, next_img, late = t0, t0, 0
            while time.monotonic() - t0 < phase_s:
                st = drv.read()
                now = time.time_ns()
                if on:
                    stamp = Time(sec=now // 1_000_000_000, nanosec=now % 1_000_000_000)
                    bag.write_message("/joint_states", now, JointState(
                        header=Header(stamp=stamp, frame_id=""), name=names, position=st.q, velocity=st.qd,
                        effort=st.effort))
                    if time.monotonic() >= next_img:
                        next_img += 1.0 / 30.0
                        bag.write_message("/camera/image_raw", now, Image(
                            header=Header(stamp=stamp, frame_id="camera"), height=128, width=128, encoding="rgb8",
                            is_bigendian=0, step=128 * 3, data=frames[n_img % len(frames)]))
                        n_img += 1
                next_t += period
                delay = next_t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -period:
                    late += int(-delay / period)
                    next_t = time.monotonic()
            o = out[on]
            o["missed"] += drv.stats["missed_periods"] - m0
            o["late"] += late
            o["s"] += time.monotonic() - t0
    finally:
        bag.close()
        drv.disconnect()
    return {"config": cfg.name, "seconds_each": seconds, "phases_each": phases,
            "missed_recording": out[True]["missed"], "missed_not_recording": out[False]["missed"],
            "loop_late_recording": out[True]["late"], "loop_late_not_recording": out[False]["late"],
            "recorder_added_overruns": out[True]["missed"] - out[False]["missed"],
            "images": n_img, "written": bag.written, "dropped": bag.dropped,
            "mcap_mb": round(bag.file.stat().st_size / 1e6, 1)}


def policy_section(config: str, iterations: int, episodes: int, seed: int, work: Path, duration: float) -> dict:
    """A policy trained under the identified preset vs one trained under `default`, both scored
    on the hidden robot they were trained for (module docstring)."""
    import contextlib
    import io

    import yaml

    from s2r.identify import main as identify_main
    from s2r.learning.cli import eval_main, train_main

    cfg = load_config(config)
    joints = [j for j in cfg.joint_names if j not in FINGERS]
    reality = draw_reality(np.random.default_rng(seed))
    reality["groups"].pop("unmodeled")          # the robot's offsets: the calibrated config's business
    hidden = work / "hidden.yaml"
    hidden.write_text(yaml.safe_dump(reality))
    record(cfg, reality, seed, duration, 0, work / "excitation", joints)

    def quiet(fn, argv):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = fn(argv)
        if rc != 0:
            raise RuntimeError(f"{fn.__module__} {' '.join(argv)} failed ({rc}): {buf.getvalue().strip()[-300:]}")

    quiet(identify_main, [str(work / "excitation"), "--config", config, "--out", str(work / "identified"), "--no-plot"])
    out = {"truth": {k: v["value"] for g in reality["groups"].values() for k, v in g.items()},
           "identified": yaml.safe_load((work / "identified" / "identified.yaml").read_text())["values"],
           "iterations": iterations, "episodes": episodes}
    for name, preset in (("identified", str(work / "identified" / "preset.yaml")), ("default", "default")):
        run = work / f"train-{name}"
        t0 = time.perf_counter()
        quiet(train_main, ["gps", "--task", "ArmReach", "--config", config, "--randomize", preset, "--conditions", "8",
                           "--iterations", str(iterations), "--seed", str(seed), "--run-dir", str(run)])
        res = work / f"eval-{name}.json"
        quiet(eval_main, [str(run / "policy.pt2"), "--task", "ArmReach", "--randomize", str(hidden),
                          "--episodes", str(episodes), "--first-seed", "50000", "--json", str(res)])
        r = json.loads(res.read_text())
        out[f"policy_{name}_success"] = r["success_rate"]
        out[f"policy_{name}_ci95"] = r["ci95"]
        out[f"policy_{name}_distance_m"] = r["mean_final_distance"]
        out[f"policy_{name}_s"] = round(time.perf_counter() - t0, 1)
        print(f"policy trained under {name}: {100 * r['success_rate']:.0f} % on the hidden robot "
              f"({100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f} %), {r['mean_final_distance'] * 100:.2f} cm, "
              f"{out[f'policy_{name}_s']:.0f} s", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True, help="write the figures here")
    ap.add_argument("--configs", nargs="+", default=["panda_sim", "hand_sim"])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--duration", type=float, default=20.0, help="excitation seconds per recording")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--joint-noise", type=float, default=2e-4,
                    help="encoder noise of the simulated robots, rad std per read (default 0.0002)")
    ap.add_argument("--realtime", action="store_true",
                    help="record the excitations on the real-time driver (as on a robot), not in lockstep")
    ap.add_argument("--recorder-s", type=float, default=60.0,
                    help="recorder_added_overruns: seconds recording, and as many not (default 60)")
    ap.add_argument("--recorder-phases", type=int, default=6, help="phases of each (default 6)")
    ap.add_argument("--only", choices=("identify", "recorder", "policy"), help="run one part only")
    ap.add_argument("--policy-iterations", type=int, default=10, help="--only policy: GPS iterations (default 10)")
    ap.add_argument("--policy-episodes", type=int, default=100, help="--only policy: held-out starts (default 100)")
    a = ap.parse_args(argv)
    keys = ("mass_scale_rel_err", "damping_scale_rel_err", "gain_scale_rel_err", "offset_err_mrad",
            "calibrated_over_nominal_tracking", "identify_s", "identify_cpu_s")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        if a.only == "policy":
            out["policy"] = policy_section(a.configs[0], a.policy_iterations, a.policy_episodes, a.seed, Path(tmp),
                                           a.duration)
            out.update({k: v for k, v in out["policy"].items() if k.startswith("policy_")})
        elif a.only != "recorder":
            per = [run(c, a.draws, a.duration, a.seed, Path(tmp), a.joint_noise, a.realtime) for c in a.configs]
            out = {k: max(p[k] for p in per) for k in keys}
            out["latency_exact"] = int(all(p["latency_exact"] for p in per))
            out.update(configs=per, draws=a.draws, duration_s=a.duration, joint_noise_rad=a.joint_noise,
                       realtime=a.realtime)
        if a.only in (None, "recorder"):
            rec = recorder_overruns(a.configs[0], a.recorder_s, a.recorder_phases, Path(tmp))
            out["recorder_added_overruns"] = rec["recorder_added_overruns"]
            out["recorder"] = rec
    out["machine"] = {"python": sys.version.split()[0]}
    Path(a.json).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in (*keys, "latency_exact", "recorder_added_overruns") if k in out}, indent=2))
    if "policy" in out:
        print(json.dumps({k: v for k, v in out.items() if k.startswith("policy_")}, indent=2))
    if "recorder" in out:
        print(json.dumps(out["recorder"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
