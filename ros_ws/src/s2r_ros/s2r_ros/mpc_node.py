"""mpc_node: iLQR model-predictive control of an arm's end effector (or joints) over ROS 2.

Subscribes /joint_states and a goal -- geometry_msgs/PoseStamped on /goal_pose (end-effector
position, in the world / robot base frame; the orientation is not tracked: a 7-DoF arm keeps its
posture near the model's home pose instead) or sensor_msgs/JointState on /goal_joint_state -- and
publishes std_msgs/Float64MultiArray commands on /<driver>/commands, one per /joint_states sample.

Two rates: every state is answered at once from the plan in force (the time-varying linear
controller u = u_hat + K (q - q_hat) that iLQR returns; microseconds), while a worker process
replans with controllers.MPC at `rate_hz` (warm start, deadline; controllers/planner_process.py). The
plan is at the joint-velocity level (controllers/joint_reach.py); in `command_mode` position the node streams
position set-points q_cmd = q_anchor + u / control_rate, in velocity mode it sends u.

Holds on failure: with no plan, a plan older than `plan_timeout_s`, a dead planner or a stale
state it commands the measured position. Goals that are stale, in an unknown frame, non-finite
or out of reach are refused with a logged reason and counted in /diagnostics, where the solve
time, planner status, end-effector error and goal state are reported too.
"""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from s2r.core.joint_limiter import PositionTargets
from s2r.core.schema.nodes import MPCNodeParams

from .common import (ERROR, GOAL_QOS, OK, STATE_QOS, WARN, COMMAND_QOS, FastSubscription, LatencyStats, Throttle,
                     bridge_python_logging, command_msg, diag_status, spin_node, stamp_ns)
from .node_params import declare_parameters


class MPCNode(Node):
    def __init__(self, name: str = "mpc", **kw):
        super().__init__(name, **kw)
        declare_parameters(self, MPCNodeParams)        # self.params: the validated parameters
        self._log_handler = bridge_python_logging(self)
        self.throttle = Throttle()

        from s2r.core.config import ConfigError, load_config

        from s2r.controllers.planner_process import PlannerProcess

        from .reach_problem import reach_spec_for

        g = lambda k: getattr(self.params, k)   # noqa: E731
        try:
            self.cfg = load_config(str(g("config")))
        except ConfigError as e:
            self.get_logger().error(f"config error: {e}")
            raise SystemExit(2)
        self.mode = g("command_mode")
        self.rate_hz = g("rate_hz")
        try:
            self.spec = reach_spec_for(self.cfg, dt=1.0 / self.rate_hz, horizon=int(g("horizon")),
                                       velocity_scale=float(g("velocity_scale")), ee_link=str(g("ee_link")) or None)
        except ValueError as e:
            self.get_logger().error(f"cannot plan for {self.cfg.name}: {e}")
            raise SystemExit(2)
        self.names = list(self.cfg.joint_names)
        self.arm_idx = np.array([self.names.index(j) for j in self.spec.joints])
        self.n = len(self.arm_idx)
        self.control_dt = 1.0 / self.cfg.control_rate_hz
        self.plan_timeout = float(g("plan_timeout_s"))      # read once: the fast path runs at the control rate
        self.state_timeout_ns = int(float(g("state_timeout_s")) * 1e9)
        # position mode: the planned velocities integrate into set-points within the joint limits and
        # within lead_periods x full speed of the measured position (the limiter module's targets)
        full = self.cfg.spec()
        self.targets = PositionTargets(full.lower, full.upper, self.arm_idx,
                                       max_lead=self.spec.max_velocity * float(g("lead_periods")) * self.control_dt)
        self.base_frames = {"", "world", _root_link(self.spec.urdf)}
        self._workspace()

        self.goal_kind = "none"
        self.goal: np.ndarray | None = None
        self.goal_id = 0
        self.goal_set_at = 0.0
        self.goals_received = 0
        self.goals_refused: dict[str, int] = {}
        self.unreachable_since: float | None = None
        self.commands_sent = 0
        self.holds_sent = 0
        self.last_q: np.ndarray | None = None
        self.last_state_rx = 0.0
        self.cmd: np.ndarray | None = None
        self.hold_reason = ""
        self.solve_ms = LatencyStats(10_000)
        self.callback_ms = LatencyStats(10_000)
        self._index_cache: tuple | None = None

        self.pub_cmd = self.create_publisher(Float64MultiArray, f"/{g('driver')}/commands", COMMAND_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # the control path: its own executor thread (FastSubscription); goals, diagnostics and
        # parameters stay on the node's executor
        self._state_sub = FastSubscription(self, "/joint_states", JointState, self._on_state, STATE_QOS, "state")
        self.create_subscription(PoseStamped, "/goal_pose", self._on_goal_pose, GOAL_QOS)
        self.create_subscription(JointState, "/goal_joint_state", self._on_goal_joints, GOAL_QOS)
        self.create_timer(float(g("diagnostics_period_s")), self._publish_diagnostics)

        period = 1.0 / self.rate_hz
        self.planner = PlannerProcess(self.spec, budget=0.8 * period, max_iter=g("max_iter"), period=period,
                                      nice=g("planner_nice"))
        self.get_logger().info(
            f"{self.cfg.name}: planning {self.n} joints to {self.spec.ee_link} at {self.rate_hz:g} Hz over "
            f"{self.spec.horizon} steps, commands in {self.mode} mode to /{g('driver')}/commands")

    def _workspace(self):
        """A sphere every reachable end-effector position lies in: around the first planned joint's
        link, with the largest distance seen over random configurations (plus 2 %)."""
        from s2r.controllers.models import RigidBodyModel

        rb = RigidBodyModel(self.spec.urdf, joints=list(self.spec.joints), locked=dict(self.spec.locked))
        first_child = _child_link(self.spec.urdf, self.spec.joints[0])
        f_c = rb.link_pose_function(first_child)
        f_e = rb.link_pose_function(self.spec.ee_link)
        rng = np.random.default_rng(0)
        Q = rng.uniform(self.spec.lower, self.spec.upper, size=(400, self.n))
        self.ws_center = np.asarray(f_c(np.zeros(self.n))[1]).reshape(3)
        d = max(np.linalg.norm(np.asarray(f_e(q)[1]).reshape(3) - self.ws_center) for q in Q)
        self.ws_radius = 1.02 * d
        self.fk = lambda q: np.asarray(f_e(np.asarray(q, float))[1]).reshape(3)

    # ------------------------------------------------------------------ goals
    def _refuse_goal(self, key: str, reason: str):
        self.goals_refused[key] = self.goals_refused.get(key, 0) + 1
        n = self.throttle(f"goal_{key}")
        if n is not None:
            self.get_logger().warning(f"goal refused ({key}): {reason}" + (f" ({n} times)" if n > 1 else ""))

    def _goal_stamp_ok(self, header) -> bool:
        if header.stamp.sec == 0 and header.stamp.nanosec == 0:
            return True                        # unstamped: "now"
        age = (self.get_clock().now().nanoseconds - stamp_ns(header.stamp)) * 1e-9
        limit = self.params.goal_timeout_s
        if age > limit:
            self._refuse_goal("stale", f"stamped {age:.2f} s ago (> goal_timeout_s {limit:g})")
            return False
        if age < -limit:
            self._refuse_goal("stale", f"stamped {-age:.2f} s in the future")
            return False
        return True

    def _set_goal(self, kind: str, goal: np.ndarray, params: np.ndarray, what: str):
        self.goals_received += 1
        if kind == self.goal_kind and self.goal is not None and np.allclose(goal, self.goal, atol=1e-9):
            return                             # the same goal again (re-published): nothing changes
        self.goal_kind, self.goal = kind, goal
        self.goal_id += 1
        self.goal_set_at = time.monotonic()
        self.unreachable_since = None
        self.planner.send_goal(self.goal_id, params)
        self.get_logger().info(f"new goal {self.goal_id}: {what}")

    def _on_goal_pose(self, msg: PoseStamped):
        from s2r.controllers.joint_reach import ee_goal_params

        if not self._goal_stamp_ok(msg.header):
            return
        if msg.header.frame_id not in self.base_frames:
            self._refuse_goal("frame", f"frame_id {msg.header.frame_id!r} is not one of "
                                       f"{sorted(self.base_frames)} (s2r has no tf: send goals in the base frame)")
            return
        p = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
        if not np.all(np.isfinite(p)):
            self._refuse_goal("nonfinite", f"position {p} is not finite")
            return
        dist = float(np.linalg.norm(p - self.ws_center))
        if dist > self.ws_radius:
            self._refuse_goal("unreachable", f"{_fmt(p)} is {dist:.3f} m from the shoulder, beyond the "
                                             f"arm's reach of {self.ws_radius:.3f} m")
            return
        zmin = self.params.min_goal_height
        if p[2] < zmin:
            self._refuse_goal("unreachable", f"{_fmt(p)} is below the minimum height {zmin:g} m")
            return
        self._set_goal("pose", p, ee_goal_params(p, self.n), f"end effector to {_fmt(p)}")

    def _on_goal_joints(self, msg: JointState):
        from s2r.controllers.joint_reach import joint_goal_params

        if not self._goal_stamp_ok(msg.header):
            return
        names = list(msg.name)
        if len(names) != len(msg.position):
            self._refuse_goal("shape", f"{len(names)} names but {len(msg.position)} positions")
            return
        unknown = [nm for nm in names if nm not in self.names]
        missing = [j for j in self.spec.joints if j not in names]
        if unknown or missing:
            self._refuse_goal("names", f"unknown joints {unknown}, missing planned joints {missing}")
            return
        q = np.array([msg.position[names.index(j)] for j in self.spec.joints], dtype=float)
        if not np.all(np.isfinite(q)):
            self._refuse_goal("nonfinite", "positions are not finite")
            return
        if np.any(q < self.spec.lower) or np.any(q > self.spec.upper):
            bad = [j for j, v, lo, hi in zip(self.spec.joints, q, self.spec.lower, self.spec.upper)
                   if not lo <= v <= hi]
            self._refuse_goal("unreachable", f"joints {bad} outside their limits")
            return
        self._set_goal("joints", q, joint_goal_params(q, self.n), "joints to " + _fmt(q))

    # ------------------------------------------------------------------ the fast path
    def _on_state(self, msg: JointState):
        t0 = time.perf_counter()
        key = stamp_ns(msg.header.stamp)
        names = tuple(msg.name)
        if self._index_cache is None or self._index_cache[0] != names:
            try:
                order = [names.index(j) for j in self.names]
            except ValueError:
                n = self.throttle("state_names")
                if n is not None:
                    self.get_logger().warning(f"/joint_states lacks some of {self.names}; ignored")
                return
            self._index_cache = (names, np.array(order))
        q_full = np.asarray(msg.position, dtype=float)[self._index_cache[1]]
        if not np.all(np.isfinite(q_full)):
            n = self.throttle("state_nonfinite")
            if n is not None:
                self.get_logger().warning("non-finite /joint_states sample ignored")
            return
        self.last_q, self.last_state_rx = q_full, time.monotonic()
        if self.goal is None:
            return                             # idle: the driver holds by itself
        q = x = q_full[self.arm_idx]              # x: the state the plan is evaluated at and restarts from
        plan = self.planner.plan
        hold = ""
        if plan is None:
            hold = "no plan yet" if self.planner.alive else "planner process died"
        elif self.last_state_rx - plan.received > self.plan_timeout:
            hold = f"newest plan is {self.last_state_rx - plan.received:.2f} s old"
        elif self.get_clock().now().nanoseconds - key > self.state_timeout_ns:
            hold = "state is stale"
        if self.cmd is None and self.mode != "position":
            self.cmd = np.zeros(len(self.names))
        if hold:
            if self.mode == "position":
                self.cmd = self.targets.hold(q_full)
            else:
                self.cmd[:] = 0.0
            self._hold(hold)
        else:
            if self.mode == "position":
                # The plan is kinematic (joint velocities); the robot's position controller tracks the
                # set-point with a lag. Planning and feeding back on the set-point (kept within the
                # lead of the measured position) closes the MPC loop around the integrator it
                # models; feeding back the lagging measurement made the approach ring.
                x = self.targets.lead(q_full)
                self.cmd = self.targets.apply(q_full, plan.control(key, x) * self.control_dt)
            else:
                self.cmd[self.arm_idx] = plan.control(key, q)
            self.hold_reason = ""
        self.pub_cmd.publish(command_msg(self.cmd, key))
        self.commands_sent += 1
        self.callback_ms.add(time.perf_counter() - t0)
        self.planner.send_state(x, key)

    def _hold(self, reason: str):
        self.holds_sent += 1
        if reason != self.hold_reason:
            log = self.get_logger()
            (log.info if reason == "no plan yet" else log.warning)(f"holding: {reason}")
            self.hold_reason = reason

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self):
        pl = self.planner.plan
        if pl is not None:
            self.solve_ms.add(pl.solve_time)
        v = {"goal_kind": self.goal_kind, "goal": _fmt(self.goal) if self.goal is not None else "",
             "goal_id": self.goal_id, "goals_received": self.goals_received,
             "goals_refused": sum(self.goals_refused.values()),
             **{f"goals_refused_{k}": n for k, n in sorted(self.goals_refused.items())},
             "planner_alive": self.planner.alive, "planner_ready": self.planner.ready,
             "planner_nice": self.planner.niceness,
             "plans": self.planner.plans, "planner_error": self.planner.error,
             "commands_sent": self.commands_sent, "holds_sent": self.holds_sent, "holding": self.hold_reason}
        if pl is not None:
            p50, p99 = self.solve_ms.percentiles_ms(50, 99)
            v.update({"status": pl.status, "fallback": pl.fallback, "iterations": pl.iterations,
                      "solve_time_ms": pl.solve_time * 1e3, "solve_time_p50_ms": p50, "solve_time_p99_ms": p99,
                      "message": pl.message})
        c50, c99 = self.callback_ms.percentiles_ms(50, 99)
        v.update({"callback_p50_ms": c50, "callback_p99_ms": c99})
        level, message = OK, "idle (no goal)"
        if self.goal is not None and self.last_q is not None:
            tol = self.params.tolerance_m
            if self.goal_kind == "pose":
                err = float(np.linalg.norm(self.fk(self.last_q[self.arm_idx]) - self.goal))
                v["ee_error_m"] = err
                planned = float(np.linalg.norm(pl.terminal_ee - self.goal)) if pl is not None and pl.goal_id == self.goal_id else None
                now = time.monotonic()
                # converged plans that still end far from the goal: the goal is out of reach
                if planned is not None and pl.status == "converged" and planned > 5 * tol and err > 5 * tol:
                    self.unreachable_since = self.unreachable_since or now
                else:
                    self.unreachable_since = None
                unreachable = self.unreachable_since is not None and now - self.unreachable_since > 1.0
                v["unreachable"] = unreachable
                message = f"goal {self.goal_id}: end effector {err * 1e3:.1f} mm from the goal"
                if unreachable:
                    level, message = WARN, f"goal {self.goal_id} looks unreachable: closest plan ends {planned * 1e3:.0f} mm away"
            else:
                err = float(np.max(np.abs(self.last_q[self.arm_idx] - self.goal)))
                v["joint_error_rad"] = err
                message = f"goal {self.goal_id}: max joint error {err:.4f} rad"
            v["reached"] = err <= tol if self.goal_kind == "pose" else err <= 10 * tol
        if not self.planner.alive:
            level, message = ERROR, f"planner process died ({self.planner.error or 'no reason given'}); holding"
        elif self.hold_reason:
            level, message = WARN, f"holding: {self.hold_reason}"
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [diag_status(f"{self.get_name()}: mpc", level, message, self.cfg.name, v)]
        self.pub_diag.publish(arr)

    def close(self):
        self._state_sub.close()
        self.planner.stop()


def _fmt(v) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in np.asarray(v).ravel()) + "]"


def _root_link(urdf: str) -> str:
    root = ET.parse(urdf).getroot()
    children = {j.find("child").get("link") for j in root.findall("joint")}
    return next(ln.get("name") for ln in root.findall("link") if ln.get("name") not in children)


def _child_link(urdf: str, joint: str) -> str:
    root = ET.parse(urdf).getroot()
    for j in root.findall("joint"):
        if j.get("name") == joint:
            return j.find("child").get("link")
    raise ValueError(f"{urdf}: no joint {joint!r}")


def main(args=None) -> int:
    return spin_node(MPCNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
