"""The foundation demo: the simulated Panda visits joint-space goals along minimum-jerk
trajectories, tracked by the joint PD controllers, every command through the safety layer.

Headless; prints a progress line and a summary; writes a tracking plot and CSV under runs/.
"""
from __future__ import annotations

import argparse
import csv
import time

import numpy as np

from s2r.drivers import Command, open_driver

from .core.config import load_config
from .core.logs import Progress
from .core.rundir import new_run_dir

# Joint-space goals for the 7 arm joints (fingers follow the first goal column's gripper value).
PANDA_GOALS = [
    [0.6, -0.4, 0.3, -2.0, 0.2, 1.8, 0.9],
    [-0.7, 0.2, -0.4, -1.6, -0.3, 2.1, 0.2],
    [0.3, 0.5, 0.5, -1.2, 0.5, 1.4, 1.4],
    [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785],
]


def min_jerk(q0: np.ndarray, q1: np.ndarray, duration: float, t: float) -> np.ndarray:
    """Position on the minimum-jerk (quintic) path from q0 to q1 at time t (Flash & Hogan 1985)."""
    s = np.clip(t / duration, 0.0, 1.0)
    return q0 + (q1 - q0) * (10 * s**3 - 15 * s**4 + 6 * s**5)


def run(config_name: str = "panda_sim", move_s: float = 2.0, settle_s: float = 0.5,
        tolerance: float = 0.01, out_root=None, quiet: bool = False) -> dict:
    cfg = load_config(config_name)
    drv = open_driver(cfg, "sim", realtime=False)
    n = cfg.spec().n_joints
    dt = 1.0 / cfg.control_rate_hz
    goals = [np.concatenate([g, np.full(n - 7, 0.03)])[:n] for g in PANDA_GOALS]
    steps_per_goal = int((move_s + settle_s) / dt)
    total = steps_per_goal * len(goals)
    prog = Progress(total, "demo", every_s=2.0)
    log_t, log_ref, log_q = [], [], []
    reached, final_err = [], []
    t0 = time.perf_counter()
    try:
        q_start = drv.read().q
        k = 0
        for gi, goal in enumerate(goals):
            for s in range(steps_per_goal):
                ref = min_jerk(q_start, goal, move_s, s * dt)
                drv.write(Command.position(ref))
                st = drv.read()
                log_t.append(k * dt)
                log_ref.append(ref)
                log_q.append(st.q)
                k += 1
                if not quiet:
                    err = np.abs(st.q - ref).max()
                    prog.update(k, f"goal {gi + 1}/{len(goals)}  |q-ref|max {err:.4f} rad")
            err = float(np.abs(drv.read().q - goal).max())
            final_err.append(err)
            reached.append(err < tolerance)
            q_start = goal
        status = drv.status
    finally:
        drv.disconnect()
    if not quiet:
        prog.update(total, "done", force=True)
        prog.close()
    wall = time.perf_counter() - t0
    t, ref, q = np.array(log_t), np.array(log_ref), np.array(log_q)
    err = q - ref
    out = new_run_dir("demo", out_root)
    with open(out / "tracking.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t"] + [f"ref_{j}" for j in cfg.joint_names] + [f"q_{j}" for j in cfg.joint_names])
        for row in zip(t, ref, q):
            w.writerow([f"{row[0]:.3f}", *(f"{v:.6f}" for v in row[1]), *(f"{v:.6f}" for v in row[2])])
    _plot(out / "tracking.png", t, ref, q, cfg.joint_names, len(goals), steps_per_goal * dt)
    summary = {
        "goals": len(goals), "goals_reached": int(sum(reached)), "final_errors_rad": final_err,
        "rms_tracking_error_rad": float(np.sqrt(np.mean(err**2))), "max_tracking_error_rad": float(np.abs(err).max()),
        "sim_seconds": float(t[-1] + dt), "wall_seconds": wall, "safety": status, "run_dir": str(out),
    }
    return summary


def _plot(path, t, ref, q, names, n_goals, seg):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = q.shape[1]
    fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    colors = plt.cm.tab10(np.arange(n) % 10)
    for j in range(min(n, 7)):
        axes[0].plot(t, ref[:, j], "--", color=colors[j], lw=1)
        axes[0].plot(t, q[:, j], color=colors[j], lw=1.5, label=names[j])
        axes[1].plot(t, 1e3 * (q[:, j] - ref[:, j]), color=colors[j], lw=1)
    for g in range(1, n_goals):
        for ax in axes:
            ax.axvline(g * seg, color="0.8", lw=0.8, zorder=0)
    axes[0].set_ylabel("joint position [rad]\n(dashed: reference)")
    axes[0].legend(ncol=4, fontsize=8, loc="upper right")
    axes[0].set_title("Simulated Panda: minimum-jerk joint goals through the safety layer")
    axes[1].set_ylabel("tracking error [mrad]")
    axes[1].set_xlabel("time [s]")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="s2r demo", description=__doc__)
    ap.add_argument("--config", default="panda_sim")
    ap.add_argument("--move-s", type=float, default=2.0, help="seconds per move")
    a = ap.parse_args(argv)
    print(f"s2r demo: simulated {a.config}, {len(PANDA_GOALS)} joint goals, PD tracking through the safety layer")
    s = run(a.config, a.move_s)
    print(f"\nSummary\n  goals reached     {s['goals_reached']}/{s['goals']} (final error < 0.01 rad)")
    print("  final errors      " + ", ".join(f"{1e3 * e:.2f}" for e in s["final_errors_rad"]) + " mrad")
    print(f"  tracking error    rms {1e3 * s['rms_tracking_error_rad']:.2f} mrad, max {1e3 * s['max_tracking_error_rad']:.2f} mrad")
    print(f"  time              {s['sim_seconds']:.1f} s simulated in {s['wall_seconds']:.1f} s wall")
    sf = s["safety"]
    print(f"  safety            {sf['accepted']}/{sf['commands']} commands accepted, {sf['rejected_shape'] + sf['rejected_nonfinite']} rejected, "
          f"{sf['clamped_step'] + sf['clamped_position']} clamped, watchdog trips {sf['watchdog_trips']}")
    print(f"  plot              {s['run_dir']}/tracking.png")
    print(f"  data              {s['run_dir']}/tracking.csv")
    return 0 if s["goals_reached"] == s["goals"] else 1
