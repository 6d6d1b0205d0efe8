"""reach_sequencer: sends a sequence of end-effector goals and records how the robot gets there.

It is the demo's (and the closed-loop test's) conductor and judge, and only talks ROS: it waits
for /joint_states and a ready mpc_node, publishes each goal on /goal_pose, measures the
end-effector error from /joint_states with its own forward kinematics (a pybullet model of the
robot, independent of the controller's CasADi kinematics), moves on when the error has stayed
below `tolerance_m` for `settle_s` (or after `goal_timeout_s`), and ends the process -- exit code
0 when every goal was reached, 1 otherwise.

With `out_dir` it writes tracking.csv (every state: time, goal, end-effector position, error,
joints), summary.json (per goal: reached, time, final error; the driver's achieved rate, command
latency and missed cycles from /diagnostics) and camera.mp4 (H.264 through s2r.core.video; frames from
/camera/image_raw, re-timed by their stamps to a constant frame rate). A live progress line goes to
stdout.
"""
from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from s2r.core.schema.nodes import ReachSequencerParams

from .common import GOAL_QOS, IMAGE_QOS, STATE_QOS, diag_values, spin_node, stamp_s
from .node_params import declare_parameters


def _num(v: str):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


class ReachSequencer(Node):
    def __init__(self, name: str = "sequencer", **kw):
        super().__init__(name, **kw)
        declare_parameters(self, ReachSequencerParams)   # self.params: the validated parameters
        g = lambda k: getattr(self.params, k)   # noqa: E731
        from s2r.core.config import load_config
        from s2r.sim.robots import Simulation

        self.cfg = load_config(str(g("config")))
        self.goals = np.asarray(g("goals"), float).reshape(-1, 3)
        self.tol, self.settle_s = float(g("tolerance_m")), float(g("settle_s"))
        self.dwell_s = float(g("dwell_s"))
        self.reached_at: float | None = None
        self.goal_timeout_s = float(g("goal_timeout_s"))
        self.out_dir = Path(str(g("out_dir"))) if g("out_dir") else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        # forward kinematics: the robot model in a pybullet world of our own
        model = self.cfg.robot_description()
        self.ee_link = model.ee_link
        self.sim = Simulation(self.cfg.sim.physics_hz)
        j = self.cfg.joints
        self.robot = self.sim.add_robot(model, self.cfg.joint_names, [x.kp for x in j], [x.kd for x in j],
                                        [x.limits.effort for x in j])
        self.names = list(self.cfg.joint_names)
        self._index = None

        self.t0 = time.monotonic()
        self.phase = "waiting"          # waiting -> running -> done
        self.mpc_ready = False
        self.last_state = None
        self.k = -1                     # current goal index
        self.goal_started = 0.0
        self.below_since: float | None = None
        self.err = float("nan")
        self.results: list[dict] = []
        self.rows: list[list] = []
        self.driver_diag: dict = {}
        self.mpc_diag: dict = {}
        self.writer = None
        self.video_frames = 0
        self.video_t0: float | None = None
        self.last_frame = None
        self.exit_code = 0

        self.pub_goal = self.create_publisher(PoseStamped, "/goal_pose", GOAL_QOS)
        self.create_subscription(JointState, "/joint_states", self._on_state, STATE_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        if self.out_dir is not None:
            self.create_subscription(Image, "/camera/image_raw", self._on_image, IMAGE_QOS)
        self.create_timer(0.05, self._step)
        self.create_timer(1.0, self._republish_goal)
        self.tty = sys.stdout.isatty()
        self._last_print = 0.0

    # ------------------------------------------------------------------ inputs
    def _on_state(self, msg: JointState):
        names = tuple(msg.name)
        if self._index is None or self._index[0] != names:
            try:
                self._index = (names, [names.index(j) for j in self.names])
            except ValueError:
                return
        q = np.asarray(msg.position, float)[self._index[1]]
        if not np.all(np.isfinite(q)):
            return
        self.robot.reset(q)
        ee, _ = self.robot.link_pose(self.ee_link)
        t = time.monotonic() - self.t0
        self.last_state = (t, q, ee)
        if self.phase == "running":
            goal = self.goals[self.k]
            self.err = float(np.linalg.norm(ee - goal))
            self.rows.append([f"{t:.4f}", self.k, *(f"{v:.5f}" for v in goal), *(f"{v:.5f}" for v in ee),
                              f"{self.err:.6f}", *(f"{v:.5f}" for v in q)])

    def _on_diag(self, msg: DiagnosticArray):
        drv, mpc = self.params.driver, self.params.mpc
        for st in msg.status:
            if st.name == f"{drv}: driver":
                self.driver_diag = {k: _num(v) for k, v in diag_values(st).items()}
            elif st.name == f"{mpc}: mpc":
                self.mpc_diag = {k: _num(v) for k, v in diag_values(st).items()}
                self.mpc_ready = self.mpc_diag.get("planner_ready") == "True"

    def _on_image(self, msg: Image):
        if self.phase == "done" or msg.encoding != "rgb8":
            return
        from s2r.core.video import VideoError, VideoWriter

        if self.writer is False:
            return
        frame = np.frombuffer(msg.data, np.uint8)
        if frame.size != msg.height * msg.width * 3:
            return
        rgb = frame.reshape(msg.height, msg.width, 3)
        fps = self.params.video_fps
        try:
            if self.writer is None:
                self.writer = VideoWriter(self.out_dir / "camera.mp4", fps)
                self.video_t0 = stamp_s(msg.header.stamp)
            # re-time by stamps: the video plays in real time whatever rate the frames came at
            due = int((stamp_s(msg.header.stamp) - self.video_t0) * fps) + 1
            while self.writer.frames < due:
                self.writer.write(rgb)
        except VideoError as e:           # a bad path or a camera that changed size: stop recording
            self.get_logger().error(f"camera.mp4: {e}; recording stopped")
            if self.writer:
                self.writer.close()
                self.video_frames = self.writer.frames
            self.writer = False
            return
        self.video_frames = self.writer.frames

    # ------------------------------------------------------------------ the sequence
    def _publish_goal(self):
        g = self.goals[self.k]
        msg = PoseStamped()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.params.frame_id
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in g)
        msg.pose.orientation.w = 1.0
        self.pub_goal.publish(msg)

    def _republish_goal(self):
        if self.phase == "running":
            self._publish_goal()

    def _next_goal(self):
        self.k += 1
        if self.k >= len(self.goals):
            self._finish()
            return
        self.goal_started = time.monotonic()
        self.below_since = None
        self.reached_at = None
        self.err = float("nan")
        self._publish_goal()

    def _step(self):
        now = time.monotonic()
        if self.phase == "waiting":
            if self.last_state is not None and self.mpc_ready:
                self.phase = "running"
                self.run_t0 = now
                self._next_goal()
            elif now - self.t0 > self.params.start_timeout_s:
                self.get_logger().error("gave up: no /joint_states or no ready mpc_node "
                                        f"(states: {self.last_state is not None}, mpc ready: {self.mpc_ready})")
                self.exit_code = 1
                self._finish()
            self._progress(now)
            return
        if self.phase != "running":
            return
        elapsed = now - self.goal_started
        if self.reached_at is None:
            if np.isfinite(self.err) and self.err <= self.tol:
                self.below_since = self.below_since or now
            else:
                self.below_since = None
            if self.below_since is not None and now - self.below_since >= self.settle_s:
                self.reached_at = self.below_since          # reached: within tolerance since then
        done_dwelling = self.reached_at is not None and now - self.reached_at >= max(self.dwell_s, self.settle_s)
        if done_dwelling or (self.reached_at is None and elapsed > self.goal_timeout_s):
            reached = self.reached_at is not None
            self.results.append({"goal": self.goals[self.k].tolist(), "reached": reached,
                                 "time_s": round((self.reached_at if reached else now) - self.goal_started, 3),
                                 "final_error_mm": round(self.err * 1e3, 3),
                                 "end_t": round(now - self.t0, 3),       # tracking.csv time
                                 "end_stamp_s": self.get_clock().now().nanoseconds * 1e-9})
            if not reached:
                self.get_logger().warning(f"goal {self.k + 1} not reached in {self.goal_timeout_s:g} s "
                                          f"(error {self.err * 1e3:.1f} mm)")
            self._next_goal()
        self._progress(now)

    def _progress(self, now: float, final: bool = False):
        if not self.params.progress:
            return
        if not final and now - self._last_print < (0.2 if self.tty else 2.0):
            return
        self._last_print = now
        d = self.driver_diag
        if self.phase == "waiting":
            line = f"waiting for the robot and the planner ... {now - self.t0:4.1f} s"
        else:
            k = min(self.k + 1, len(self.goals))
            line = (f"goal {k}/{len(self.goals)}  error {self.err * 1e3:7.1f} mm  "
                    f"reached {sum(r['reached'] for r in self.results)}  t {now - self.run_t0:5.1f} s  "
                    f"control {d.get('rate_hz', float('nan')):5.1f} Hz  "
                    f"latency p50 {d.get('latency_p50_ms', float('nan')):.2f} ms")
        if self.tty:
            sys.stdout.write("\r" + line.ljust(110) + ("\n" if final else ""))
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def _finish(self):
        self.phase = "done"
        self._progress(time.monotonic(), final=True)
        if self.writer:
            self.writer.close()
        n_ok = sum(r["reached"] for r in self.results)
        if self.exit_code == 0 and n_ok < len(self.goals):
            self.exit_code = 1
        if self.out_dir is not None:
            self._write_outputs()
        raise SystemExit(self.exit_code)

    def _write_outputs(self):
        with open(self.out_dir / "tracking.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t", "goal", "goal_x", "goal_y", "goal_z", "ee_x", "ee_y", "ee_z", "error_m",
                        *self.names])
            w.writerows(self.rows)
        summary = {"config": self.cfg.name, "goals": len(self.goals),
                   "goals_reached": sum(r["reached"] for r in self.results), "per_goal": self.results,
                   "tolerance_mm": self.tol * 1e3,
                   "duration_s": round(time.monotonic() - getattr(self, "run_t0", self.t0), 3),
                   "video": {"path": "camera.mp4" if self.video_frames else "",
                             "frames": self.video_frames,
                             "fps": self.params.video_fps,
                             "t0_stamp_s": self.video_t0},
                   "driver": self.driver_diag, "mpc": self.mpc_diag}
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))

    def close(self):
        self.sim.close()


def main(args=None) -> int:
    return spin_node(ReachSequencer, args)


if __name__ == "__main__":
    raise SystemExit(main())
