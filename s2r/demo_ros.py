"""`make demo` / `s2r demo`: the simulated bringup over ROS 2 -- a sim arm (the Panda by default,
`--config` another described arm), camera and iLQR-MPC.

It runs the `sim_panda` bringup (ros_ws/src/s2r_ros/bringup/sim_panda.yaml: driver_node with the
PyBullet Panda behind the safety layer, camera_node, mpc_node) plus a reach_sequencer node that
sends 4 end-effector goals on /goal_pose and judges the reach, each node its own process on a
private ROS domain with localhost-only discovery. Headless, about 30 s, with a live progress line.

At the end: a summary (goals reached, final errors in mm, achieved control rate, command latency
p50/p99) and, under runs/<timestamp>-ros-demo/: report.png, tracking.csv, camera.mp4 and
summary.json. Exit status 0 when every goal was reached.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .launch import NodeSpec, load_bringup
from .core.rundir import new_run_dir

# End-effector goals (m, world = robot base frame): left-high, right-low, far right-high, front-low.
DEMO_GOALS = [(0.45, 0.25, 0.45), (0.45, -0.25, 0.30), (0.30, -0.35, 0.60), (0.55, 0.05, 0.25)]
# A camera closer than the config's, looking at the workspace from the front left.
DEMO_CAMERA = {"position": [1.05, 0.65, 0.85], "rpy": [0.0, 0.45, -2.44]}


def demo_bringup(out_dir: Path, config: str = "panda_sim", goals=DEMO_GOALS, dwell_s: float = 4.0,
                 goal_timeout_s: float = 15.0, camera_size: int = 192, camera_hz: float = 12.0,
                 progress: bool = True, record=None):
    """The sim_panda bringup with the demo's camera view, quiet nodes, and the sequencer; with
    `record` (a folder to create) also a recorder node writing the run as a rosbag2 recording."""
    b = load_bringup("sim_panda")
    for n in b.nodes:
        n.parameters["config"] = config
        n.log_level = n.log_level or "warn"          # warnings and errors still show
    cam = b.node("camera")
    cam.parameters.update({"width": camera_size, "height": camera_size, "rate_hz": camera_hz, **DEMO_CAMERA})
    b.nodes.append(NodeSpec(
        "sequencer", "reach_sequencer", exit_when_done=True, output="screen", log_level="warn",
        parameters={"config": config, "goals": [float(v) for g in goals for v in g], "dwell_s": dwell_s,
                    "goal_timeout_s": goal_timeout_s, "out_dir": str(out_dir), "video_fps": camera_hz,
                    "progress": progress, "driver": "driver", "mpc": "mpc"}))
    if record is not None:
        b.nodes.append(NodeSpec("recorder", "recorder_node", output="prefix", log_level="warn",
                                parameters={"out": str(record)}))
    return b


def arm_goals(config: str, goals=DEMO_GOALS) -> list[tuple]:
    """The demo's goals (laid out for the Panda) for the arm of `config`: scaled with its reach
    about its base (sim.workspace), unchanged for the Panda."""
    from .core.config import load_config
    from s2r.sim.workspace import workspace_scale

    robot = load_config(config).robot_description()
    s = workspace_scale(robot)
    base = np.asarray(robot.base_position, float)
    return [tuple(base + s * np.asarray(g, float)) for g in goals] if s != 1.0 else list(goals)


def run(config: str = "panda_sim", goals=None, dwell_s: float = 4.0, out_root=None,
        quiet: bool = False, record=None) -> dict:
    from .launch import Launcher
    from .core.ros_env import claim_domain_id, isolated_env, release_domain_id

    out = new_run_dir("ros-demo", out_root)
    if record is not None:
        from .core.bag import bag_path
        record = bag_path(record, out.name)
    did = claim_domain_id()
    env = isolated_env(domain_id=did)
    say = (lambda *a: None) if quiet else print
    goals = arm_goals(config) if goals is None else goals
    say(f"== s2r demo: simulated {config} + camera + iLQR-MPC over ROS 2 "
        f"(ROS_DOMAIN_ID={did}, localhost only); results in {out}/")
    b = demo_bringup(out, config, goals, dwell_s, progress=not quiet, record=record)
    t0 = time.monotonic()
    try:
        with open(os.devnull, "w") as devnull:
            code = Launcher(b, env, grace_s=10.0, out=devnull if quiet else sys.stdout).run()
    finally:
        release_domain_id(did)
    summary_path = out / "summary.json"
    if not summary_path.exists():
        raise RuntimeError(f"the demo did not finish (launcher exit {code}); no {summary_path}")
    s = json.loads(summary_path.read_text())
    s["launcher_exit"] = code
    s["wall_s"] = round(time.monotonic() - t0, 1)
    s["run_dir"] = str(out)
    s["config"] = str(config)
    s["report"] = str(out / "report.png")
    if record is not None:
        s["recording"] = str(record)
    write_report(out, s)
    summary_path.write_text(json.dumps(s, indent=2, default=str))
    if not quiet:
        print_summary(s)
    return s


def print_summary(s: dict) -> None:
    d = s.get("driver", {})
    per = s["per_goal"]
    f = lambda v, spec=".2f": format(v, spec) if isinstance(v, (int, float)) else str(v)   # noqa: E731
    print(f"goals reached     {s['goals_reached']}/{s['goals']}  (within {s['tolerance_mm']:g} mm)")
    print("final errors      " + "  ".join(f"{r['final_error_mm']:.1f}" for r in per) + " mm")
    print("time to reach     " + "  ".join(f"{r['time_s']:.2f}" for r in per) + " s")
    print(f"control rate      {f(d.get('rate_hz'), '.1f')} Hz achieved (target {f(d.get('target_rate_hz'), 'g')} Hz), "
          f"missed cycles {f(d.get('missed_cycles'), '.0f')} of {f(d.get('states_published'), '.0f')}")
    print(f"command latency   p50 {f(d.get('latency_p50_ms'))} ms, p99 {f(d.get('latency_p99_ms'))} ms "
          "(/joint_states published -> command back at the driver, through the MPC node)")
    print(f"results           {s['report']}  tracking.csv  camera.mp4 ({s['video']['frames']} frames)")
    if s.get("recording"):
        print(f"recording         {s['recording']}  (s2r record --info {s['recording']})")


def _video_frames(path: Path, times_s, fps: float):
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    for t in times_s:
        cap.set(cv2.CAP_PROP_POS_FRAMES, max(0, int(t * fps) - 1))
        ok, f = cap.read()
        frames.append(f[:, :, ::-1] if ok else None)
    cap.release()
    return frames


def write_report(out: Path, s: dict) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(out / "tracking.csv")))
    t = np.array([float(r["t"]) for r in rows])
    err = np.array([float(r["error_m"]) for r in rows]) * 1e3
    ee = np.array([[float(r[f"ee_{a}"]) for a in "xyz"] for r in rows])
    gl = np.array([[float(r[f"goal_{a}"]) for a in "xyz"] for r in rows])
    gi = np.array([int(r["goal"]) for r in rows])
    per = s["per_goal"]
    n = len(per)
    fig = plt.figure(figsize=(13, 8.5))
    grid = fig.add_gridspec(3, max(n, 1), height_ratios=[1.1, 1.1, 1.0], hspace=0.35, wspace=0.15)
    t_off = t[0] if len(t) else 0.0
    ax = fig.add_subplot(grid[0, :])
    for k in range(n):
        m = gi == k
        if m.any():
            ax.semilogy(t[m] - t_off, np.maximum(err[m], 1e-2), lw=1.2, label=f"goal {k + 1}")
    ax.axhline(s["tolerance_mm"], color="k", ls="--", lw=0.8, label=f"tolerance {s['tolerance_mm']:g} mm")
    ax.set_ylabel("end-effector error (mm)")
    ax.legend(loc="upper right", fontsize=8, ncol=n + 1)
    ax.grid(True, which="both", alpha=0.3)
    ax2 = fig.add_subplot(grid[1, :], sharex=ax)
    for j, (a, c) in enumerate(zip("xyz", ("tab:red", "tab:green", "tab:blue"))):
        ax2.plot(t - t_off, ee[:, j], color=c, lw=1.2, label=f"end effector {a}")
        ax2.plot(t - t_off, gl[:, j], color=c, lw=0.8, ls="--")
    ax2.set_xlabel("time (s)")
    ax2.set_ylabel("position (m)  [dashed: goal]")
    ax2.legend(loc="upper right", fontsize=8, ncol=3)
    ax2.grid(True, alpha=0.3)
    d = s.get("driver", {})
    num = lambda k, spec: format(d[k], spec) if isinstance(d.get(k), (int, float)) else "?"   # noqa: E731
    ax.set_title(f"s2r demo: iLQR-MPC over ROS 2, simulated {s.get('config', 'arm')} -- "
                 f"{s['goals_reached']}/{s['goals']} goals reached\n"
                 "final errors " + ", ".join(f"{r['final_error_mm']:.1f}" for r in per) + " mm  |  "
                 f"control {num('rate_hz', '.1f')} Hz, missed cycles {num('missed_cycles', '.0f')}  |  "
                 f"command latency p50 {num('latency_p50_ms', '.2f')} ms, p99 {num('latency_p99_ms', '.2f')} ms",
                 fontsize=10)
    video = s.get("video", {})
    if video.get("frames") and video.get("t0_stamp_s") is not None:
        times = [r["end_stamp_s"] - video["t0_stamp_s"] for r in per]
        for k, fr in enumerate(_video_frames(out / "camera.mp4", times, video["fps"])):
            axk = fig.add_subplot(grid[2, k])
            axk.axis("off")
            if fr is not None:
                axk.imshow(fr)
            r = per[k]
            axk.set_title(f"goal {k + 1}: {'reached' if r['reached'] else 'MISSED'}, "
                          f"{r['final_error_mm']:.1f} mm", fontsize=9)
    path = out / "report.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="s2r demo", description=__doc__.split("\n\n")[0],
                                 epilog="s2r demo --joint-space [--help]: the ROS-free joint-space demo "
                                        "(s2r/demo_joint.py), which takes its own options")
    ap.add_argument("--config", default="panda_sim", help="hardware config of a simulated arm")
    ap.add_argument("--dwell", type=float, default=4.0, help="seconds to stay at each reached goal")
    ap.add_argument("--out", default=None, help="runs folder (default: runs/ or $S2R_RUNS)")
    ap.add_argument("--record", metavar="DIR", default=None,
                    help="also record the run as a rosbag2 folder (MCAP): DIR, or DIR/<run> if DIR is a folder")
    a = ap.parse_args(argv)
    try:
        s = run(a.config, dwell_s=a.dwell, out_root=a.out, record=a.record)
    except ValueError as e:                    # a config that does not load: one line
        print(f"demo: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"demo failed: {e}", file=sys.stderr)
        return 1
    return 0 if s["goals_reached"] == s["goals"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
