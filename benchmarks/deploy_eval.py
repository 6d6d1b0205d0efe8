"""Deployment-path evaluation: an exported goal-conditioned policy run by policy_node against
driver_node (separate processes, real rclpy, a private DDS domain) with the simulated robot in real
time under a randomization preset, scored on the same held-out starts and goals, and the same
robots, as `s2r eval` (issue #20, part 5).

For each episode seed: the task's reset with that seed gives the start posture, the target and the
draw of the preset; driver_node is started again on the robot of that draw (its per-episode
parameters as constants, `episode_preset`; `--driver-seed N`: every goal on the one driver draw
N instead); the policy is disabled (policy_node ~/enable) while the driver takes the robot to the
start through the safety layer (rest-to-rest ~/joint_trajectory moves, each after the first
corrected by what the robot rests off the start -- a heavy or weak robot sags below its reference --
so that it rests at the start posture as the task puts it there), then it is enabled and the target is published
on /goal_pose; after the policy's episode length (`episode_steps` commands at its control rate) the
robot's true joint state (driver_node ~/true_joint_states: no sensor delay, noise or encoder
offset, as the task scores) gives the TCP by the task's own forward kinematics, and its distance
to the target. Success: the task's threshold.

Preset parameters a state policy cannot see and the driver does not simulate (visuals, camera
errors) are left out of the driver's preset, and reported; any other parameter the driver cannot
apply is an error.

    python benchmarks/deploy_eval.py POLICY --task ArmReach [--randomize PRESET] [--goals 20] [--driver-seed N]
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STARTUP_S = 90.0
RESTART_RAD = 0.3        # a robot this far from the start after the tries is restarted (the same draw)
MOVED_RAD = 0.002        # a robot that moved less than this did not follow the trajectory
START_RAD = 0.002        # at the start posture: the task starts the robot exactly there
MOVE_TRIES = 4           # moves to the start (again, corrected, where it sagged; or not moved, or restarted)
CAMERA_ONLY = ("visuals",)


def driver_preset(preset, images: bool, out_dir: Path, log=print) -> str:
    """The preset as a YAML file for driver_node: `preset` (a name or a path) without what a state
    policy never sees (visuals and camera errors; kept out only when `images` is false); "" for
    none. ValueError names a parameter the driver cannot apply."""
    if not preset:
        return ""
    from s2r.drivers.sim_driver import DRIVER_RANDOMIZATION
    from s2r.core import yamlio
    from s2r.sim.randomization import PARAMETERS, PRESETS_DIR, Randomizer

    rz = Randomizer.load(preset)          # validates; RandomizationError names the key
    path = Path(preset)
    if not path.exists():
        path = PRESETS_DIR / f"{preset}.yaml"
    data = yamlio.load_file(path) or {}
    dropped, groups = [], {}
    for gname, params in (data.get("groups") or {}).items():
        for name, spec in (params or {}).items():
            if name == "enabled" or name not in rz.params:
                continue
            if name in DRIVER_RANDOMIZATION:
                groups.setdefault(gname, {})[name] = spec
            elif not images and (gname in CAMERA_ONLY or name.startswith("camera_")):
                dropped.append(name)
            else:
                raise ValueError(f"{path}: groups.{gname}.{name}: the sim driver cannot apply it "
                                 f"({PARAMETERS[name].doc})")
    if dropped:
        log(f"  deploy: preset {path.stem} without {', '.join(dropped)} (cameras; the policy sees no images)")
    out = out_dir / f"{path.stem}_driver.yaml"
    out.write_text(json.dumps({"description": f"{path.stem} for the sim driver", "groups": groups}))   # JSON is YAML
    return str(out)


def episode_preset(preset_file: str, draw: dict, out: Path) -> str:
    """The driver's preset for one episode: the task's draw for the episode's seed (`draw`, the
    env's `dr`) of every per-episode parameter, as constants, so the driver runs the very robot
    the lockstep evaluation of that seed runs; per-step parameters (noises, jitter) keep their
    distributions (drawn anew in real time either way)."""
    from s2r.sim.randomization import PARAMETERS, PER_STEP

    data = json.loads(Path(preset_file).read_text())
    groups = {}
    for gname, params in data["groups"].items():
        for name, spec in params.items():
            if (spec.get("mode") or PARAMETERS[name].default_mode) != PER_STEP:
                v = np.asarray(draw[name], float)
                spec = {"dist": "constant", "value": v.tolist() if v.ndim else float(v)}
            groups.setdefault(gname, {})[name] = spec
    out.write_text(json.dumps({"description": f"{data.get('description', '')}, one episode's draw",
                               "groups": groups}))
    return str(out)


class _Probe:
    """The harness's rclpy node on the private domain: goals, trajectories, policy enable, states."""

    def __init__(self, domain_id: int, driver: str, policy: str, state_topic: str):
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        from std_srvs.srv import SetBool
        from trajectory_msgs.msg import JointTrajectory

        from s2r_ros.common import COMMAND_QOS, GOAL_QOS, STATE_QOS

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("deploy_eval", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.state = None                    # (monotonic, names, q)
        self.commands = 0
        self.first_command = None
        self._lock = threading.Lock()
        self.node.create_subscription(JointState, state_topic, self._on_state, STATE_QOS)
        self.node.create_subscription(Float64MultiArray, f"/{driver}/commands", self._on_command, COMMAND_QOS)
        self.pub_goal = self.node.create_publisher(PoseStamped, "/goal_pose", GOAL_QOS)
        self.pub_traj = self.node.create_publisher(JointTrajectory, f"/{driver}/joint_trajectory", 10)
        self.enable_client = self.node.create_client(SetBool, f"/{policy}/enable")
        self.driver_enable = self.node.create_client(SetBool, f"/{driver}/enable")
        self.SetBool, self.PoseStamped, self.JointTrajectory = SetBool, PoseStamped, JointTrajectory
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            while self.ctx.ok():
                self.ex.spin_once(timeout_sec=0.05)
        except Exception:
            pass

    def _on_state(self, m):
        with self._lock:
            self.state = (time.monotonic(), tuple(m.name), np.asarray(m.position, float))

    def _on_command(self, m):
        with self._lock:
            self.commands += 1
            if self.first_command is None:
                self.first_command = time.monotonic()

    def q(self, names) -> np.ndarray:
        with self._lock:
            _, have, q = self.state
        return q[[have.index(n) for n in names]]

    def _set(self, client, on: bool, what: str, timeout: float = STARTUP_S, resend_s: float = 3.0) -> None:
        """SetBool `on` on `client`'s service. Sent again when no answer came within `resend_s`:
        Fast DDS drops an answer to a client whose response reader has not matched within 100 ms,
        and setting the same value twice is harmless."""
        deadline = time.monotonic() + timeout
        _wait(client.service_is_ready, timeout, what)
        req = self.SetBool.Request()
        req.data = on
        while True:
            fut = client.call_async(req)
            try:
                _wait(fut.done, min(resend_s, max(deadline - time.monotonic(), 0.0)), f"an answer from {what}")
                return
            except TimeoutError:
                client.remove_pending_request(fut)
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"deploy: timed out after {timeout:g} s waiting for an answer from {what}") \
                        from None

    def set_policy(self, on: bool) -> None:
        self._set(self.enable_client, on, "policy_node's ~/enable")
        with self._lock:
            self.commands, self.first_command = 0, None

    def end_trajectory(self) -> None:
        """The driver drops its trajectory (driver_node ~/enable true): its set-point stream ends and
        the watchdog holds, so the policy's commands start a new stream, as an episode starts afresh."""
        self._set(self.driver_enable, True, "driver_node's ~/enable")

    def move_to(self, names, q, duration: float) -> None:
        from builtin_interfaces.msg import Duration
        from trajectory_msgs.msg import JointTrajectoryPoint
        msg = self.JointTrajectory()
        msg.joint_names = list(names)
        pt = JointTrajectoryPoint()
        pt.positions = [float(x) for x in q]
        pt.velocities = [0.0] * len(q)
        pt.time_from_start = Duration(sec=int(duration), nanosec=int((duration % 1) * 1e9))
        msg.points = [pt]
        self.pub_traj.publish(msg)

    def send_goal(self, target) -> None:
        msg = self.PoseStamped()
        msg.header.frame_id = "world"
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(x) for x in target)
        msg.pose.orientation.w = 1.0
        self.pub_goal.publish(msg)

    def close(self):
        self.ctx.try_shutdown()
        self._thread.join(timeout=2.0)


class NodeGraph:
    """Node processes on a private ROS domain, each logging to `tmp`/<name>.log: `start` one with
    its parameters, `logs` (their tails, for an error), `close` (Ctrl-C each, a kill for one that
    outlives `timeout` seconds, the domain given back)."""

    def __init__(self, tmp: Path, tail: int = 2000):
        import os

        from s2r.core.ros_env import claim_domain_id, isolation_vars
        self.tmp, self.tail = tmp, tail
        self.domain = claim_domain_id()
        self.env = dict(os.environ, **isolation_vars(self.domain), PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
        self.procs = []                      # (process, log file, log name)

    def start(self, executable: str, name: str, params: dict, log_name: str | None = None) -> subprocess.Popen:
        import yaml

        from s2r.launch import NodeSpec, node_command
        log_name = log_name or name
        pfile = self.tmp / f"{log_name}.params.yaml"
        pfile.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        logf = open(self.tmp / f"{log_name}.log", "wb")
        pr = subprocess.Popen(node_command(NodeSpec(name, executable), str(pfile)), env=self.env,
                              stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((pr, logf, log_name))
        return pr

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{(self.tmp / f'{n}.log').read_text(errors='replace')[-self.tail:]}"
                         for _, _, n in self.procs)

    def close(self, timeout: float) -> None:
        from s2r.core.ros_env import release_domain_id
        try:
            for pr, logf, _ in self.procs:
                if pr.poll() is None:
                    pr.send_signal(signal.SIGINT)
                    try:
                        pr.wait(timeout)
                    except subprocess.TimeoutExpired:
                        pr.kill()
                        pr.wait()
                logf.close()
        finally:
            release_domain_id(self.domain)


def _settle(q, timeout: float, still_rad: float = 5e-4, window_s: float = 0.2) -> None:
    """Until the joints `q()` moved less than `still_rad` over `window_s` (at rest: a heavily damped
    joint creeps toward its reference for seconds), at most `timeout` s."""
    end = time.monotonic() + timeout
    last = q()
    while time.monotonic() < end:
        time.sleep(window_s)
        now = q()
        if np.abs(now - last).max() < still_rad:
            return
        last = now


def _wait(pred, timeout: float, what: str, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"deploy: timed out after {timeout:g} s waiting for {what}")


def deploy_eval(policy, task: str, seeds, randomize=None, randomize_seed: int | None = None,
                success_distance: float | None = None, log=print) -> dict:
    """Run `policy` through policy_node and driver_node on the episodes `seeds` of `task` under the
    preset `randomize`: each episode on the robot of the task's own draw for its seed (driver_node
    started again with that draw, `episode_preset`), so the lockstep evaluation of the same seeds
    is the comparison; with `randomize_seed` set, every episode under that one driver draw
    instead. Returns success_rate, mean_final_distance, final_distances, successes, episodes, and
    the settings."""
    import s2r.sim.tasks
    from s2r.learning.deploy import load_policy
    from s2r.learning.registry import scene_kwargs, task_id

    policy = Path(policy)
    _, meta = load_policy(policy)              # any exported format (.pt, .pt2, .onnx)
    tid = task_id(task)
    if meta.get("task") != tid:
        raise ValueError(f"{policy} was trained for {meta.get('task')!r}, not {tid!r}")
    images = "image" in meta.get("inputs", [])
    if images:
        raise ValueError(f"{policy}: deploy_eval runs state policies (this one needs camera images)")
    env = s2r.sim.tasks.make(tid, randomization=randomize, **scene_kwargs(meta)).unwrapped
    cfg = env.cfg
    rate = float(meta.get("control_rate_hz") or cfg.control_rate_hz)
    T = int(meta.get("episode_steps") or 100)
    threshold = env.success_threshold if success_distance is None else success_distance
    task_joints = list(env.joint_names)
    tmp = Path(tempfile.mkdtemp(prefix="deploy_eval_"))
    nodes = NodeGraph(tmp, tail=1500)
    start, logs = nodes.start, nodes.logs

    probe = None
    distances, idle, start_errors, final_tcp = [], [], [], []
    restarts = started = 0
    try:
        preset_file = driver_preset(randomize, images, tmp, log)
        per_episode = bool(preset_file) and randomize_seed is None
        seeds = [int(x) for x in seeds]

        def episode_robot(seed: int) -> str:
            env.reset(seed=seed)
            return episode_preset(preset_file, env.dr, tmp / f"episode_{seed}.yaml")

        driver_params = {"config": cfg.name, "autostart": True, "command_mode": "position",
                         "randomize": episode_robot(seeds[0]) if per_episode and seeds else preset_file,
                         "randomize_seed": int(randomize_seed or 0), "randomize_joints": task_joints}
        driver = start("driver_node", "driver", driver_params)

        def restart_driver(recovery: bool):
            """driver_node started again: a robot it could not bring back (`recovery`, counted in
            driver_restarts), or the next episode's draw."""
            nonlocal driver, restarts, started
            restarts += int(recovery)
            started += 1
            driver.send_signal(signal.SIGINT)
            driver.wait(15)
            # until discovery has dropped the old node, its trajectory subscription still counts
            _wait(lambda: probe.pub_traj.get_subscription_count() == 0, 10.0, "the stopped driver to leave")
            with probe._lock:
                probe.state = None
            driver = start("driver_node", "driver", driver_params, f"driver{started}")
            _wait(lambda: probe.state is not None and probe.pub_traj.get_subscription_count() > 0, STARTUP_S,
                  "the restarted driver")
        start("policy_node", "policy", {"policy": str(policy), "config": cfg.name, "driver": "driver",
                                        "action": meta.get("action", "position_delta"), "use_image": False,
                                        "rate_hz": rate, "enabled": False})
        probe = _Probe(nodes.domain, "driver", "policy", "/driver/true_joint_states" if preset_file else "/joint_states")
        try:
            _wait(lambda: probe.state is not None and probe.pub_traj.get_subscription_count() > 0, STARTUP_S,
                  "the driver's joint states and trajectory subscription")
            probe.set_policy(False)
        except TimeoutError as e:
            raise RuntimeError(f"{e}\n{logs()}") from None
        names = list(probe.state[1])
        home = probe.q(names)
        for i, seed in enumerate(seeds):
            env.reset(seed=seed)
            if per_episode and i:        # the robot of this episode's draw (the first one's: from the start)
                driver_params["randomize"] = episode_robot(seed)
                restart_driver(recovery=False)
            q0 = env.robot.state()[0].copy()
            target = env.target.copy()
            task_idx = [names.index(n) for n in task_joints]
            goal_q = home.copy()
            goal_q[task_idx] = q0
            start_err = float("inf")
            for attempt in range(MOVE_TRIES):
                if start_err >= RESTART_RAD and attempt:
                    # the robot cannot be brought back (it fell, or the safety layer holds it): a fresh one
                    log(f"  deploy: robot {start_err:.2f} rad from the start; restarting driver_node")
                    restart_driver(recovery=True)
                    goal_q[task_idx] = q0
                before = probe.q(names)
                d = float(np.abs(goal_q - before).max())
                duration = max(1.0, math.sqrt(6.0 * d / 1.0))       # cubic rest-to-rest: peak 1 rad/s^2
                probe.move_to(names, goal_q, duration)
                time.sleep(duration)
                _settle(lambda: probe.q(task_joints), 2.0)     # lagging (latency, weak gains): let it arrive
                q_task = probe.q(task_joints)
                start_err = float(np.abs(q_task - q0).max())
                # a robot that did not move at all never got the trajectory (a driver just started,
                # whose subscription had not yet matched the harness's publisher): sent again
                if d > 2 * MOVED_RAD and float(np.abs(probe.q(names) - before).max()) < MOVED_RAD:
                    continue
                if start_err >= RESTART_RAD:              # fallen, or held by the safety layer: restarted
                    continue
                if start_err < START_RAD:
                    break
                # at rest off the start: a heavy or weak robot sags below its reference (friction and
                # backlash hold it short too). The task puts the robot at its start posture at rest;
                # here the reference is moved by what the robot is off, again on the next try, so
                # the episode starts there too
                goal_q[task_idx] += q0 - q_task
            probe.end_trajectory()
            time.sleep(0.1)
            idle.append(probe.commands)          # the policy's commands while disabled: none
            if not driver.poll() is None:
                raise RuntimeError(f"driver_node exited ({driver.returncode})\n{logs()}")
            probe.set_policy(True)
            probe.send_goal(target)
            _wait(lambda: probe.first_command is not None, 5.0, "the policy's first command")
            end = probe.first_command + (T + 1) / rate
            time.sleep(max(0.0, end - time.monotonic()))
            q = probe.q(task_joints)
            n_cmd = probe.commands
            probe.set_policy(False)
            env.robot.reset(q)
            tcp = env.tcp()[0]
            dist = float(np.linalg.norm(tcp - target))
            distances.append(dist)
            final_tcp.append(tcp.tolist())
            start_errors.append(start_err)
            log(f"  deploy goal {i + 1}/{len(seeds)} (seed {seed}): distance {100 * dist:.2f} cm "
                f"{'ok' if dist < threshold else 'MISS'} (start off by {1e3 * start_err:.1f} mrad, {n_cmd} commands)")
    finally:
        if probe is not None:
            probe.close()
        nodes.close(10)
        env.close()
    ok = int(sum(d < threshold for d in distances))
    return {"policy": str(policy), "task": tid, "randomize": str(randomize) if randomize else None,
            "randomize_seed": None if per_episode else int(randomize_seed or 0), "per_episode_draws": per_episode,
            "episodes": len(distances), "successes": ok,
            "success_rate": ok / len(distances) if distances else float("nan"),
            "mean_final_distance": float(np.mean(distances)) if distances else float("nan"),
            "final_distances": distances, "success_distance": threshold, "start_errors_rad": start_errors,
            "commands_while_disabled": idle, "final_tcp": final_tcp, "driver_restarts": restarts}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policy")
    ap.add_argument("--task", default="ArmReach")
    ap.add_argument("--randomize", default=None, help="preset name or YAML path (default: none)")
    ap.add_argument("--goals", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=50_000)
    ap.add_argument("--driver-seed", type=int, default=None,
                    help="every goal under this one driver draw of the preset (default: each goal under the "
                         "task's own draw for its seed, as the lockstep evaluation)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.goals < 1:
        print("error: --goals must be >= 1", file=sys.stderr)
        return 2
    r = deploy_eval(args.policy, args.task, range(args.first_seed, args.first_seed + args.goals), args.randomize,
                    args.driver_seed)
    print(f"deploy: success {r['successes']}/{r['episodes']}, mean final distance {100 * r['mean_final_distance']:.2f} cm")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
