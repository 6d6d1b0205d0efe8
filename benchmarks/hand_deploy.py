"""Emulated hand deployment: a fingertip-reach policy (`s2r train gps --task HandReach`) run by
policy_node against driver_node on a real hand setup's protocol-level emulator (default leap_hand:
the unmodified Dynamixel driver on an emulated servo bus, driver_node `emulate:=true`), separate
processes on a private DDS domain at the hand_policy bringup's `realtime_priority` (SCHED_FIFO where
the machine allows it; `--no-realtime`: normal priority), scored on the same held-out starts as
`s2r eval` (the task's reset with seeds from 50000), beside the lockstep evaluation of the same
policy on the same seeds.

For each seed: the task's reset gives the start posture and the fingertip targets; the policy is
disabled (policy_node ~/enable) while the driver takes the hand to the start through the safety
layer (a rest-to-rest ~/joint_trajectory); then it is enabled and the targets are published on
/goal_tips; after the policy's episode length (`episode_steps` commands at its rate) the hand's
measured joint positions (the emulated servos' Present Position) give the fingertips by the task's
own forward kinematics. Success: every fingertip within the task's threshold (1.5 cm).
The run lasts at least `--min-duration` s (the policy holds the last goal until then), over which
the policy's achieved rate (its commands per second while enabled) and the driver's missed cycles
(loop overruns + states not answered before the next, driver_node's /diagnostics) are measured,
from the moment both nodes are spinning; `answers` in the JSON has the state-to-command latencies
from driver_node's `latency_log` and when the late ones came.

The emulator models position-controlled servos (first-order response, current bound, bus timing),
not the hand's links, contacts or gravity: the fingertips here are where the servo readings put
them kinematically, a check of the deployment path (rates, timing, safety layer, FK, goal
handling), not of the hand's physics.

    python benchmarks/hand_deploy.py POLICY [--task HandReach] [--config leap_hand] [--goals 20] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ros import read_latency_log   # noqa: E402  driver_node's latency log, as bench_ros reads it
from deploy_eval import STARTUP_S, NodeGraph, _Probe, _wait   # noqa: E402  the arm evaluation's harness pieces

SETTLE_RAD = 0.03          # the emulated servos track their set-points closely
MIN_DURATION_S = 60.0


class _HandProbe(_Probe):
    """The arm harness's probe plus fingertip goals on /goal_tips, /diagnostics and command times."""

    def __init__(self, domain_id: int, driver: str, policy: str):
        super().__init__(domain_id, driver, policy, "/joint_states")
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseArray

        from s2r_ros.common import GOAL_QOS
        self.PoseArray = PoseArray
        self.pub_tips = self.node.create_publisher(PoseArray, "/goal_tips", GOAL_QOS)
        self.diag: dict[str, dict] = {}
        self.last_command = None
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)

    def _on_command(self, m):
        with self._lock:
            self.commands += 1
            self.last_command = time.monotonic()
            if self.first_command is None:
                self.first_command = self.last_command

    def _on_diag(self, arr):
        with self._lock:
            for st in arr.status:
                self.diag[st.name] = {kv.key: kv.value for kv in st.values}

    def diagnostics(self, name: str) -> dict:
        with self._lock:
            return dict(self.diag.get(name, {}))

    def send_tips(self, targets) -> None:
        from s2r_ros.common import tips_goal_msg
        self.pub_tips.publish(tips_goal_msg(targets))


def lockstep(policy, task: str, seeds) -> dict:
    """`s2r eval` of the policy on the same seeds (the simulator, in lockstep)."""
    from s2r.learning.cli import eval_main
    out = Path(tempfile.mkdtemp(prefix="hand_lockstep_")) / "eval.json"
    seeds = list(seeds)
    rc = eval_main([str(policy), "--task", task, "--episodes", str(len(seeds)), "--first-seed", str(seeds[0]),
                    "--json", str(out)])
    if rc != 0:
        raise RuntimeError(f"s2r eval of {policy} failed (exit {rc})")
    return json.loads(out.read_text())


def answer_timing(path: Path, period: float) -> dict:
    """From driver_node's `latency_log` (bench_ros.read_latency_log): how long the policy's commands
    took to answer the states (ms; answered states only -- between goals the policy is disabled),
    when (s from the first state) each answer came a period or more after its state, to see what
    the late ones coincide with, and the gaps between states."""
    rows, _ = read_latency_log(path)
    lat = [(t_pub, t_rx - t_pub) for _, t_pub, t_rx in rows if math.isfinite(t_rx)]
    if not lat:
        return {"answered": 0, "states": len(rows)}
    t0 = rows[0][1]
    ms = 1e3 * np.array([d for _, d in lat])
    gaps = np.diff([t for _, t, _ in rows])
    return {"answered": len(lat), "states": len(rows), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
            "over_period_at_s": [round(t - t0, 3) for t, d in lat if d >= period],
            "state_gap_max_ms": float(1e3 * gaps.max()) if len(gaps) else float("nan"),
            "state_gaps_over_1_5_periods": int(np.sum(gaps > 1.5 * period))}


def bringup_priorities(realtime: bool = True) -> dict:
    """The driver's and the policy's `realtime_priority` in the hand_policy bringup (0: off), so
    that the nodes are scheduled here as `s2r launch hand_policy` schedules them."""
    from s2r.launch.bringup import load_bringup, resolve_bringup
    b = load_bringup(resolve_bringup("hand_policy"))
    return {n: int(b.node(n).parameters.get("realtime_priority", 0)) if realtime else 0 for n in ("driver", "policy")}


def hand_deploy(policy, task: str, seeds, config: str = "leap_hand", min_duration: float = MIN_DURATION_S,
                log=print, realtime: bool = True) -> dict:
    """Run `policy` through policy_node and driver_node (`config`'s emulator) on the episodes `seeds`
    of `task`, scheduled as the hand_policy bringup schedules them (`realtime`; else at normal
    priority). Returns per-episode distances, success, the policy's rate and the driver's missed
    cycles over the run."""
    import s2r.sim.tasks
    from s2r.core.config import load_config
    from s2r.drivers.emulators import check_emulated
    from s2r.learning.deploy import load_policy
    from s2r.learning.registry import scene_kwargs, task_id

    policy = Path(policy)
    _, meta = load_policy(policy)
    tid = task_id(task)
    if meta.get("task") != tid:
        raise ValueError(f"{policy} was trained for {meta.get('task')!r}, not {tid!r}")
    if not meta.get("tip_count"):
        raise ValueError(f"{policy}: not a fingertip policy (its metadata has no tip_count); "
                         "arm policies: benchmarks/deploy_eval.py")
    hw = load_config(config)
    emulate = hw.driver_type != "sim"
    if emulate:
        check_emulated(hw)                               # ValueError: a real setup without an emulator
    env = s2r.sim.tasks.make(tid, **scene_kwargs(meta)).unwrapped
    missing = [j for j in env.joint_names if j not in hw.joint_names]
    if missing:
        raise ValueError(f"{config}'s joints lack the task's {missing}")
    rate = float(meta.get("control_rate_hz") or hw.control_rate_hz)
    T = int(meta.get("episode_steps") or 100)
    threshold = env.success_threshold
    task_joints = list(env.joint_names)
    priorities = bringup_priorities(realtime)
    tmp = Path(tempfile.mkdtemp(prefix="hand_deploy_"))
    nodes = NodeGraph(tmp)
    start, logs = nodes.start, nodes.logs

    probe = None
    distances, tip_errors, rates, start_errors, final_q = [], [], [], [], []
    try:
        driver = start("driver_node", "driver", {"config": config, "autostart": True, "command_mode": "position",
                                                 "latency_log": str(tmp / "latency.csv"),
                                                 "realtime_priority": priorities["driver"],
                                                 **({"emulate": True} if emulate else {"hardware": "sim"})})
        start("policy_node", "policy", {"policy": str(policy), "config": config, "driver": "driver",
                                        "action": meta.get("action", "position_delta"), "use_image": False,
                                        "rate_hz": rate, "enabled": False,
                                        "realtime_priority": priorities["policy"]})
        probe = _HandProbe(nodes.domain, "driver", "policy")
        try:
            _wait(lambda: probe.state is not None and probe.pub_traj.get_subscription_count() > 0
                  and probe.pub_tips.get_subscription_count() > 0, STARTUP_S, "the driver's joint states and the policy")
            probe.set_policy(False)
            # both nodes spinning (the policy's diagnostics come from its timer): their start-up
            # (discovery, the heap frozen, the switch to SCHED_FIFO) is over before the count starts
            _wait(lambda: probe.diagnostics("policy: policy"), STARTUP_S, "the policy's diagnostics")
            time.sleep(1.0)
            before = _wait(lambda: probe.diagnostics("driver: driver").get("lifecycle") == "active"
                           and probe.diagnostics("driver: driver"), STARTUP_S, "the driver's diagnostics")
        except TimeoutError as e:
            raise RuntimeError(f"{e}\n{logs()}") from None
        t_start = time.monotonic()
        names = list(probe.state[1])
        home = probe.q(names)
        targets = None
        for i, seed in enumerate(seeds):
            obs, _ = env.reset(seed=int(seed))
            q0, targets = env.robot.state()[0].copy(), obs["target"].copy()
            goal_q = home.copy()
            for j, n in enumerate(task_joints):
                goal_q[names.index(n)] = q0[j]
            start_err = float("inf")
            for _ in range(3):                 # a trajectory the safety layer refused half-way is sent again
                d = float(np.abs(goal_q - probe.q(names)).max())
                duration = max(0.5, math.sqrt(6.0 * d / 4.0))       # cubic rest-to-rest: peak 4 rad/s^2
                probe.move_to(names, goal_q, duration)
                t0 = time.monotonic()
                time.sleep(duration)
                _wait(lambda: np.abs(probe.q(task_joints) - q0).max() < SETTLE_RAD or time.monotonic() - t0 > duration + 1.0,
                      duration + 3.0, "the start posture")
                start_err = float(np.abs(probe.q(task_joints) - q0).max())
                if start_err < SETTLE_RAD:
                    break
            probe.end_trajectory()
            time.sleep(0.05)
            if driver.poll() is not None:
                raise RuntimeError(f"driver_node exited ({driver.returncode})\n{logs()}")
            probe.set_policy(True)
            probe.send_tips(targets)
            _wait(lambda: probe.first_command is not None, 5.0, "the policy's first command")
            end = probe.first_command + (T + 0.5) / rate
            time.sleep(max(0.0, end - time.monotonic()))
            with probe._lock:
                n_cmd, t0, t1 = probe.commands, probe.first_command, probe.last_command
            q = probe.q(task_joints)
            last = i == len(seeds) - 1
            if not last:
                probe.set_policy(False)
            rates.append((n_cmd - 1) / (t1 - t0) if n_cmd > 1 and t1 > t0 else float("nan"))
            env.robot.reset(q)
            tips = env.tips()
            per_tip = np.linalg.norm(tips - targets, axis=1)
            dist = float(per_tip.max())
            distances.append(dist)
            tip_errors.append(per_tip.tolist())
            final_q.append(q.tolist())
            start_errors.append(start_err)
            log(f"  deploy goal {i + 1}/{len(seeds)} (seed {seed}): max fingertip error {100 * dist:.2f} cm "
                f"{'ok' if dist < threshold else 'MISS'} (start off by {1e3 * start_err:.1f} mrad, "
                f"{n_cmd} commands, {rates[-1]:.1f} Hz)")
        hold = max(0.0, min_duration - (time.monotonic() - t_start))
        if hold:                              # the policy keeps the last goal: the rate over the whole run
            log(f"  deploy: policy holding the last goal {hold:.1f} s more (run of >= {min_duration:g} s)")
            time.sleep(hold)
            with probe._lock:
                n_cmd, t0, t1 = probe.commands, probe.first_command, probe.last_command
            rates[-1] = (n_cmd - 1) / (t1 - t0)
        time.sleep(1.5)                       # one more diagnostics period
        wall = time.monotonic() - t_start
        after = probe.diagnostics("driver: driver")
        pol = probe.diagnostics("policy: policy")
        if driver.poll() is not None or after.get("lifecycle") != "active":
            raise RuntimeError(f"driver_node is not active at the end ({after.get('lifecycle')})\n{logs()}")
    finally:
        if probe is not None:
            probe.close()
        nodes.close(15)
        env.close()
    driver_log = (tmp / "driver.log").read_text(errors="replace")
    answers = answer_timing(tmp / "latency.csv", 1.0 / rate)

    def delta(k):
        return int(after[k]) - int(before[k])
    ok = int(sum(d < threshold for d in distances))
    return {"policy": str(policy), "task": tid, "config": config, "emulated": emulate, "episodes": len(distances),
            "successes": ok,
            "success_rate": ok / len(distances) if distances else float("nan"), "success_distance": threshold,
            "final_distances": distances, "final_tip_errors": tip_errors,
            "final_joint_positions": final_q, "start_errors_rad": start_errors, "duration_s": wall,
            "target_rate_hz": rate, "episode_rates_hz": rates, "rate_hz": float(np.nanmedian(rates)),
            "policy_diag_rate_hz": float(pol.get("rate_hz", "nan")),
            "policy_refused_actions": int(pol.get("refused_actions", 0)),
            "missed_cycles": delta("missed_cycles"), "loop_overruns": delta("loop_overruns"),
            "late_commands": delta("late_commands"), "commands_refused": delta("commands_refused"),
            "driver_rate_hz": float(after["rate_hz"]),
            "bus_transaction_failures": driver_log.count("bus transaction failed"),
            "driver_stats": {k: after[k] for k in after if k.startswith("driver_")},    # the driver's own counters
            "watchdog_holds_logged": driver_log.count("s2r.safety: no command for"), "answers": answers,
            "realtime_priority": priorities,
            "logs": str(tmp)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policy")
    ap.add_argument("--task", default="HandReach")
    ap.add_argument("--config", default="leap_hand",
                    help="a hand setup whose driver has an emulator (or a *_sim config: the simulated hand in real time)")
    ap.add_argument("--goals", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=50_000)
    ap.add_argument("--min-duration", type=float, default=MIN_DURATION_S)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-realtime", action="store_true",
                    help="run the nodes at normal priority, not the bringup's SCHED_FIFO priorities")
    args = ap.parse_args(argv)
    if args.goals < 1:
        print("error: --goals must be >= 1", file=sys.stderr)
        return 2
    seeds = range(args.first_seed, args.first_seed + args.goals)
    try:
        r = hand_deploy(args.policy, args.task, seeds, args.config, args.min_duration, realtime=not args.no_realtime)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ls = lockstep(args.policy, args.task, seeds)
    kind = "emulated" if r["emulated"] else "sim"
    key = f"leap_{kind}" if r["config"] == "leap_hand" else f"{Path(r['config']).stem}_{kind}"
    out = {f"{key}_deploy_success": r["success_rate"], f"{key}_lockstep_success": ls["success_rate"],
           f"{key}_rate_hz": r["rate_hz"], f"{key}_missed_cycles": r["missed_cycles"], "deploy": r, "lockstep": ls}
    print(f"{kind} {r['config']}: success {r['successes']}/{r['episodes']} (lockstep {ls['successes']}/"
          f"{ls['episodes']}), policy {r['rate_hz']:.1f} Hz of {r['target_rate_hz']:g}, driver missed cycles "
          f"{r['missed_cycles']} over {r['duration_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
