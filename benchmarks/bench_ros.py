"""Round-trip latency of the ROS 2 control loop, against a bare rclpy ping-pong in the same run.

    /joint_states (driver_node) -> mpc_node -> /driver/commands -> driver_node

over loopback DDS (localhost-only discovery, a private domain), each node its own process as
`s2r launch` runs them, with the MPC tracking goals that alternate every 3 s (so it plans and
moves for real). Latency is measured inside the driver node: the time from publishing a state to
receiving the command that answers it (commands name their state, see s2r_ros/common.py). A
missed cycle is a state not answered before the next one went out, or a control period the
driver's loop skipped.

The floor: a `ping` process publishing the same sensor_msgs/JointState at the same rate from the
same kind of loop, and a `pong` process answering each with the same Float64MultiArray, nothing
else -- the cost of rclpy + DDS alone on this machine, now.

Scheduling: with `--rt-priority P` (default 50; 0 = off) the driver and mpc nodes run with their
`realtime_priority` parameter at P (SCHED_FIFO for their threads, as ros2_control runs its control
loop; s2r_ros/common.py enable_realtime) and the floor's ping and pong processes get the same, so
both paths are measured alike. Without the privilege for it (CAP_SYS_NICE or an rtprio limit) the
nodes warn and run at normal priority, and the JSON says so (`realtime`).

    python benchmarks/bench_ros.py --json OUT [--duration 60] [--rates 100 500] [--rt-priority 50]

Targets (issue 5): p99 <= 2 ms and zero missed cycles at 100 Hz.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

N_JOINTS = 9
GOALS = [(0.45, 0.25, 0.45), (0.45, -0.25, 0.30)]


# ------------------------------------------------------------------------------ the floor
def role_ping(rate: float, duration: float, out: str, rt_priority: int = 0) -> int:
    """Publish JointState at `rate` for `duration` s; log publish and answer times."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from s2r_ros.common import COMMAND_QOS, STATE_QOS, command_source_stamp, stamp_ns

    rclpy.init()
    node = rclpy.create_node("ping")
    if rt_priority:
        from s2r_ros.common import enable_realtime
        enable_realtime(rt_priority)
    pub = node.create_publisher(JointState, "/floor/joint_states", STATE_QOS)
    sent: dict[int, float] = {}
    got: dict[int, float] = {}

    def on_cmd(m):
        t = time.monotonic()
        k = command_source_stamp(m)
        if k is not None and k not in got:
            got[k] = t
    node.create_subscription(Float64MultiArray, "/floor/commands", on_cmd, COMMAND_QOS)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    t0 = time.monotonic()
    while node.count_subscribers("/floor/joint_states") == 0 or node.count_publishers("/floor/commands") == 0:
        if time.monotonic() - t0 > 60:
            print("ping: no pong", file=sys.stderr)
            return 1
        time.sleep(0.05)
    time.sleep(1.0)
    names = [f"j{i}" for i in range(N_JOINTS)]
    period, overruns = 1.0 / rate, 0
    next_t = time.monotonic()
    end = next_t + duration
    while next_t < end:                           # the driver node's loop, without the robot
        next_t += period
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.monotonic()
        if now - next_t > period:
            overruns += int((now - next_t) / period)
            next_t = now
        m = JointState()
        stamp = node.get_clock().now().to_msg()
        m.header.stamp, m.name = stamp, names
        m.position = m.velocity = m.effort = [0.0] * N_JOINTS
        sent[stamp_ns(stamp)] = time.monotonic()
        pub.publish(m)
    time.sleep(0.2)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["state_stamp_ns", "published_s", "answered_s"])
        w.writerows((k, t, got.get(k, float("nan"))) for k, t in sent.items())
        w.writerow(["# loop_overruns", overruns, ""])
    ex.shutdown(timeout_sec=1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def role_pong(rt_priority: int = 0) -> int:
    """Answer every JointState with a Float64MultiArray naming it."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from s2r_ros.common import COMMAND_QOS, STATE_QOS, command_msg, stamp_ns

    rclpy.init()
    node = rclpy.create_node("pong")
    if rt_priority:
        from s2r_ros.common import enable_realtime
        enable_realtime(rt_priority)
    pub = node.create_publisher(Float64MultiArray, "/floor/commands", COMMAND_QOS)
    node.create_subscription(JointState, "/floor/joint_states",
                             lambda m: pub.publish(command_msg(m.position, stamp_ns(m.header.stamp))), STATE_QOS)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    rclpy.try_shutdown()
    return 0


# ------------------------------------------------------------------------------ analysis
def read_latency_log(path) -> tuple[list, int]:
    """A publish/answer log (driver_node's `latency_log`, or the floor's): rows (state stamp ns,
    published s, answered s or NaN) in stamp order, and the loop overruns its last line counts."""
    rows, overruns = [], 0
    with open(path) as f:
        for r in csv.reader(f):
            if not r or r[0] == "state_stamp_ns":
                continue
            if r[0].startswith("#"):
                overruns = int(r[1])
                continue
            rows.append((int(r[0]), float(r[1]), float(r[2])))
    rows.sort()
    return rows, overruns


def analyse(path: str, skip_s: float = 2.0) -> dict:
    """Latency percentiles (ms) and missed cycles from a publish/answer log.

    Counted from the first answered state + `skip_s` (start-up: the first plan) to the end,
    minus the last state (its answer may still be in flight when the log was written)."""
    rows, overruns = read_latency_log(path)
    answered = [i for i, r in enumerate(rows) if not math.isnan(r[2])]
    if not answered:
        return {"samples": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan"),
                "missed": len(rows), "states": len(rows)}
    t_start = rows[answered[0]][1] + skip_s
    sel = [r for r in rows[:-1] if r[1] >= t_start]
    lat = np.array([r[2] - r[1] for r in sel if not math.isnan(r[2])]) * 1e3
    nxt = {sel[i][0]: sel[i + 1][1] for i in range(len(sel) - 1)}
    late = sum(1 for r in sel[:-1] if math.isnan(r[2]) or r[2] > nxt[r[0]])
    return {"samples": int(lat.size), "states": len(sel),
            "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            "max_ms": float(lat.max()) if lat.size else float("nan"),
            "late": late, "loop_overruns": overruns, "missed": late + overruns}


# ------------------------------------------------------------------------------ runs
class Procs:
    def __init__(self, env):
        self.env, self.procs = env, []

    def start(self, cmd, log):
        p = subprocess.Popen(cmd, env=self.env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.procs = []


def rate_config(rate: float, tmp: Path) -> str:
    """panda_sim at another control rate (a temporary copy of the YAML)."""
    from s2r.core.config import resolve_config_path
    data = yaml.safe_load(resolve_config_path("panda_sim").read_text())
    data["control_rate_hz"] = rate
    data["name"] = f"panda_sim_{rate:g}hz"
    data["sim"]["physics_hz"] = max(float(data["sim"]["physics_hz"]), rate)
    path = tmp / f"panda_sim_{rate:g}hz.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def run_floor(rate: float, duration: float, env, tmp: Path, say, rt_priority: int = 0) -> dict:
    procs = Procs(env)
    log = tmp / f"floor_{rate:g}.csv"
    rt = ["--rt-priority", str(rt_priority)]
    try:
        procs.start([sys.executable, __file__, "--role", "pong", *rt], tmp / "pong.log")
        ping = procs.start([sys.executable, __file__, "--role", "ping", "--rate", str(rate), "--duration",
                            str(duration), "--log", str(log), *rt], tmp / "ping.log")
        _wait_with_progress(ping, duration + 90, f"floor (ping-pong) at {rate:g} Hz", duration, say)
    finally:
        procs.stop()
    if not log.exists():
        raise RuntimeError(f"the ping-pong at {rate:g} Hz wrote no log: {(tmp / 'ping.log').read_text()[-2000:]}")
    return analyse(str(log))


def run_mpc_loop(rate: float, duration: float, env, tmp: Path, say, rt_priority: int = 0) -> dict:
    from geometry_msgs.msg import PoseStamped
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from diagnostic_msgs.msg import DiagnosticArray

    from s2r.launch import NodeSpec, node_command
    from s2r_ros.common import GOAL_QOS

    cfg = rate_config(rate, tmp)
    log = tmp / f"driver_{rate:g}.csv"
    nodes = [NodeSpec("driver", "driver_node", parameters={"config": cfg, "hardware": "sim", "autostart": True,
                                                             "latency_log": str(log), "realtime_priority": rt_priority},
                      log_level="warn"),
             NodeSpec("mpc", "mpc_node", parameters={"config": cfg, "driver": "driver", "realtime_priority": rt_priority},
                      log_level="warn")]
    procs = Procs(env)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("bench", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ready = threading.Event()

    def on_diag(arr):
        for st in arr.status:
            if st.name == "mpc: mpc" and any(kv.key == "planner_ready" and kv.value == "True" for kv in st.values):
                ready.set()
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 20)
    goal_pub = node.create_publisher(PoseStamped, "/goal_pose", GOAL_QOS)
    spin = threading.Thread(target=lambda: _spin(ex, ctx), daemon=True)
    spin.start()
    try:
        for n in nodes:
            pf = tmp / f"{n.name}_{rate:g}.params.yaml"
            pf.write_text(yaml.safe_dump({"/**": {"ros__parameters": n.parameters}}))
            procs.start(node_command(n, str(pf)), tmp / f"{n.name}_{rate:g}.log")
        if not ready.wait(120):
            raise RuntimeError("the mpc_node did not get ready: " + (tmp / f"mpc_{rate:g}.log").read_text()[-2000:])
        from s2r.core.logs import Progress
        prog = Progress(duration + 2.0, f"  driver_node <-> mpc_node at {rate:g} Hz", every_s=10.0)
        t0 = time.monotonic()
        k = 0
        while time.monotonic() - t0 < duration + 2.0:      # + the start-up skipped in the analysis
            m = PoseStamped()
            m.header.frame_id = "world"
            m.header.stamp = node.get_clock().now().to_msg()
            m.pose.position.x, m.pose.position.y, m.pose.position.z = GOALS[k % len(GOALS)]
            goal_pub.publish(m)
            k += 1
            end = min(time.monotonic() + 3.0, t0 + duration + 2.0)
            while time.monotonic() < end:
                el = time.monotonic() - t0
                prog.update(el, f"{el:5.1f} s")
                time.sleep(0.5)
        prog.close()
    finally:
        procs.stop()
        ctx.try_shutdown()
        spin.join(2.0)
    if not log.exists():
        raise RuntimeError("the driver node wrote no latency log: " + (tmp / f"driver_{rate:g}.log").read_text()[-2000:])
    return analyse(str(log))


def _spin(ex, ctx):
    try:
        while ctx.ok():
            ex.spin_once(timeout_sec=0.05)
    except Exception:
        pass


def _wait_with_progress(p, timeout, label, duration, say):
    from s2r.core.logs import Progress
    prog = Progress(duration, f"  {label}", every_s=10.0)
    t0 = time.monotonic()
    while p.poll() is None:
        el = time.monotonic() - t0
        if el > timeout:
            p.kill()
            raise RuntimeError(f"{label}: timed out")
        prog.update(el, f"{min(el, duration):5.1f} s")
        time.sleep(0.5)
    prog.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds measured per rate and per path")
    ap.add_argument("--rates", type=float, nargs="+", default=[100.0, 500.0])
    ap.add_argument("--rt-priority", type=int, default=50,
                    help="SCHED_FIFO priority for the nodes and the floor's processes (0: normal scheduling)")
    ap.add_argument("--role", choices=["ping", "pong"], help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=100.0, help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.role == "ping":
        return role_ping(a.rate, a.duration, a.log, a.rt_priority)
    if a.role == "pong":
        return role_pong(a.rt_priority)

    from s2r.core.ros_env import claim_domain_id, isolated_env
    did = claim_domain_id()
    env = isolated_env(domain_id=did)
    env["PYTHONUNBUFFERED"] = "1"
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    say = lambda *x, **kw: print(*x, **kw, flush=True)   # noqa: E731
    say(f"bench_ros: {a.duration:g} s per rate and path, rates {a.rates}, ROS_DOMAIN_ID={did}, localhost only")
    res: dict = {"duration_s": a.duration, "machine_cpus": os.cpu_count(), "rt_priority": a.rt_priority}
    if a.rt_priority:
        probe = subprocess.run([sys.executable, "-c", "import sys; from s2r_ros.common import enable_realtime as e; "
                                f"sys.exit(1 if e({a.rt_priority}) else 0)"], env=env)
        res["realtime"] = probe.returncode == 0
        say("SCHED_FIFO " + (f"priority {a.rt_priority} for both paths" if res["realtime"] else
                             "not permitted here (no CAP_SYS_NICE / rtprio limit): normal scheduling for both paths"))
    else:
        res["realtime"] = False
    with tempfile.TemporaryDirectory(prefix="bench-ros-") as tmp:
        tmp = Path(tmp)
        for rate in a.rates:
            tag = f"{rate:g}hz"
            floor = run_floor(rate, a.duration, env, tmp, say, a.rt_priority)
            loop = run_mpc_loop(rate, a.duration, env, tmp, say, a.rt_priority)
            res[f"p50_ms_{tag}"], res[f"p99_ms_{tag}"] = loop["p50_ms"], loop["p99_ms"]
            res[f"max_ms_{tag}"], res[f"missed_{tag}"] = loop["max_ms"], loop["missed"]
            res[f"states_{tag}"], res[f"late_{tag}"] = loop["states"], loop["late"]
            res[f"loop_overruns_{tag}"] = loop["loop_overruns"]
            res[f"floor_p50_ms_{tag}"], res[f"floor_p99_ms_{tag}"] = floor["p50_ms"], floor["p99_ms"]
            res[f"floor_max_ms_{tag}"], res[f"floor_missed_{tag}"] = floor["max_ms"], floor["missed"]
            res[f"p99_over_floor_{tag}"] = loop["p99_ms"] / floor["p99_ms"] if floor["p99_ms"] > 0 else float("nan")
    if "p99_ms_100hz" in res:
        res["target_p99_le_2ms_100hz"] = bool(res["p99_ms_100hz"] <= 2.0)
        res["target_zero_missed_100hz"] = bool(res["missed_100hz"] == 0)
    say(f"{'':14}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'missed':>8}{'states':>8}")
    for rate in a.rates:
        tag = f"{rate:g}hz"
        say(f"{'mpc ' + tag:14}{res[f'p50_ms_{tag}']:9.3f}{res[f'p99_ms_{tag}']:9.3f}{res[f'max_ms_{tag}']:9.2f}"
            f"{res[f'missed_{tag}']:8d}{res[f'states_{tag}']:8d}")
        say(f"{'floor ' + tag:14}{res[f'floor_p50_ms_{tag}']:9.3f}{res[f'floor_p99_ms_{tag}']:9.3f}"
            f"{res[f'floor_max_ms_{tag}']:9.2f}{res[f'floor_missed_{tag}']:8d}")
    if "p99_ms_100hz" in res:
        say(f"targets at 100 Hz: p99 <= 2 ms: {'met' if res['target_p99_le_2ms_100hz'] else 'NOT met'}; "
            f"zero missed cycles: {'met' if res['target_zero_missed_100hz'] else 'NOT met'}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
        say(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
