"""A fake ROS 2 robot that behaves like ros2_control's mock hardware behind the usual controllers.

What a bridge driver sees of a real ros2_control robot (Franka, UR, Kinova):
- `joint_state_broadcaster`: sensor_msgs/JointState on /joint_states, in the robot's own joint
  order (here: reversed, plus an extra joint the config does not use, so name mapping matters);
- forward command controllers: std_msgs/Float64MultiArray on
  /forward_{position,velocity,effort}_controller/commands, one value per joint in the
  controller's joint order (the config's order, with the robot's names);
- `joint_trajectory_controller`: trajectory_msgs/JointTrajectory on
  /joint_trajectory_controller/joint_trajectory, joints named, points interpolated in time.
The hardware mirrors commands into states through first-order dynamics (time constant `tau`),
like mock_components/GenericSystem with dynamics, and stops at hard stops just outside the limits.

Steering (faults), through `FakeRobotService.inject` (the test harness) or ROS services (the node
is `fake_robot` in the namespace of the joint-states topic, e.g. /fake_robot or /arm1/fake_robot):
  ~/set_publishing (std_srvs/SetBool): false stops /joint_states (like a crashed driver), true resumes;
  ~/set_connected (std_srvs/SetBool): false makes the robot silent and deaf ("unplug").
"""
from __future__ import annotations

import math
import os
import threading
import time

import numpy as np

FAULTS = ("unplug", "stop_publishing", "drop_commands", "position_offset")
TIME_CONSTANT_S = 0.02
PUBLISH_RATE_FACTOR = 2.5     # joint states go out this many times per control period


class FakeRobotService:
    def __init__(self, spec: dict):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        from std_srvs.srv import SetBool
        from trajectory_msgs.msg import JointTrajectory

        self.spec = spec
        self.names = list(spec["joints"])
        n = len(self.names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.q = np.array(spec["initial"], float)
        self.qd = np.zeros(n)
        self.effort = np.zeros(n)
        self.lower = np.array(spec["lower"], float)
        self.upper = np.array(spec["upper"], float)
        self.vmax = np.array(spec.get("velocity_limits", [2.0] * n), float)
        self.emax = np.array(spec.get("effort_limits", [10.0] * n), float)
        self.mode = "position"
        self.target = self.q.copy()
        self.trajectory: list[tuple[float, np.ndarray]] | None = None   # (t_abs, positions)
        self.extra = list(spec.get("extra_joints", []))
        self.order = list(reversed(range(n)))       # publish order: not the config's
        self.rate_hz = float(spec.get("rate_hz", 100)) * PUBLISH_RATE_FACTOR
        self.lock = threading.Lock()
        self.publishing = True
        self.connected = True
        self.drop_commands = False
        self.offset = np.zeros(n)
        self.counters = dict(published=0, commands=0, trajectories=0, rejected_commands=0, ignored=0)
        self.latencies: list[float] = []
        self._last_pub = 0.0

        self.ctx = Context()
        rclpy.init(context=self.ctx, args=[])
        # a robot publishing /arm1/joint_states lives in namespace /arm1, like a namespaced bringup
        ns = spec["joint_states_topic"].rsplit("/", 1)[0] or "/"
        self.node = rclpy.create_node(spec.get("node_name", "fake_robot"), namespace=ns, context=self.ctx)
        self._JointState = JointState
        qos = QoSProfile(depth=10)
        self.pub = self.node.create_publisher(JointState, spec["joint_states_topic"], qos)
        for mode, topic in spec["command_topics"].items():
            self.node.create_subscription(Float64MultiArray, topic,
                                          lambda msg, m=mode: self._on_command(m, msg), qos)
        self.node.create_subscription(JointTrajectory, spec["trajectory_topic"], self._on_trajectory, qos)
        self.node.create_service(SetBool, "~/set_publishing", self._srv_publishing)
        self.node.create_service(SetBool, "~/set_connected", self._srv_connected)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True, name="fake-robot-spin")
        self._spin.start()
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._run, daemon=True, name="fake-robot-loop")
        self._loop.start()

    def info(self) -> dict:
        return {"node": self.node.get_fully_qualified_name(), "pid": os.getpid(),
                "domain_id": self.ctx.get_domain_id(), "joints": self.names}

    # ------------------------------------------------------------------ commands in
    def _on_command(self, mode: str, msg) -> None:
        now = time.monotonic()
        with self.lock:
            if not self.connected or self.drop_commands:
                self.counters["ignored"] += 1
                return
            data = np.array(msg.data, float)
            if data.shape != self.q.shape or not np.all(np.isfinite(data)):
                # forward_command_controller refuses a command of the wrong size
                self.counters["rejected_commands"] += 1
                return
            self.counters["commands"] += 1
            if self._last_pub:
                self.latencies.append(now - self._last_pub)
                if len(self.latencies) > 100_000:
                    del self.latencies[:50_000]
            self.mode, self.target, self.trajectory = mode, data, None

    def _on_trajectory(self, msg) -> None:
        now = time.monotonic()
        with self.lock:
            if not self.connected or self.drop_commands:
                self.counters["ignored"] += 1
                return
            try:
                cols = [self.index[name] for name in msg.joint_names]
            except KeyError:
                self.counters["rejected_commands"] += 1
                return
            if sorted(cols) != list(range(len(self.names))) or not msg.points:
                self.counters["rejected_commands"] += 1
                return
            points = [(now, self.q.copy())]
            for pt in msg.points:
                pos = np.empty(len(self.names))
                if len(pt.positions) != len(cols):
                    self.counters["rejected_commands"] += 1
                    return
                pos[cols] = pt.positions
                t = now + pt.time_from_start.sec + pt.time_from_start.nanosec * 1e-9
                points.append((max(t, points[-1][0]), pos))
            self.counters["trajectories"] += 1
            if self._last_pub:
                self.latencies.append(now - self._last_pub)
            self.mode, self.trajectory = "position", points
            self.target = points[-1][1]

    # ------------------------------------------------------------------ the hardware loop
    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        last = time.monotonic()
        next_t = last
        while not self._stop.is_set():
            now = time.monotonic()
            with self.lock:
                self._integrate(now - last, now)
                last = now
                if self.publishing and self.connected:
                    self._publish(now)
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_t = time.monotonic()

    def _integrate(self, dt: float, now: float) -> None:
        if dt <= 0:
            return
        a = 1.0 - math.exp(-dt / TIME_CONSTANT_S)
        if self.mode == "position":
            target = self.target
            if self.trajectory is not None:
                target = _interpolate(self.trajectory, now)
            q_new = self.q + (target - self.q) * a
            self.qd = (q_new - self.q) / dt
            self.q = q_new
            self.effort = np.zeros_like(self.q)
        elif self.mode == "velocity":
            self.qd = self.qd + (self.target - self.qd) * a
            self.q = self.q + self.qd * dt
            self.effort = np.zeros_like(self.q)
        else:   # effort: mirrored into the state; an unloaded joint speeds up with it
            self.effort = self.target.copy()
            v = self.vmax * np.clip(self.target / self.emax, -1, 1)
            self.qd = self.qd + (v - self.qd) * a
            self.q = self.q + self.qd * dt
        hit = (self.q < self.lower) | (self.q > self.upper)
        self.q = np.clip(self.q, self.lower, self.upper)
        self.qd = np.where(hit, 0.0, self.qd)

    def _publish(self, now: float) -> None:
        msg = self._JointState()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        q = self.q + self.offset
        msg.name = [self.names[i] for i in self.order] + self.extra
        msg.position = [float(q[i]) for i in self.order] + [0.0] * len(self.extra)
        msg.velocity = [float(self.qd[i]) for i in self.order] + [0.0] * len(self.extra)
        msg.effort = [float(self.effort[i]) for i in self.order] + [0.0] * len(self.extra)
        self.pub.publish(msg)
        self._last_pub = now
        self.counters["published"] += 1

    # ------------------------------------------------------------------ steering
    def _srv_publishing(self, req, res):
        with self.lock:
            self.publishing = bool(req.data)
        res.success, res.message = True, f"publishing {'on' if req.data else 'off'}"
        return res

    def _srv_connected(self, req, res):
        with self.lock:
            self.connected = bool(req.data)
        res.success, res.message = True, f"{'connected' if req.data else 'unplugged'}"
        return res

    def inject(self, fault: str, joints=None, radians: float = 0.5, **kw) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})")
        if kw:
            raise ValueError(f"unexpected arguments for {fault}: {', '.join(kw)}")
        with self.lock:
            if fault == "unplug":
                self.connected = False
            elif fault == "stop_publishing":
                self.publishing = False
            elif fault == "drop_commands":
                self.drop_commands = True
            else:
                idx = range(len(self.names)) if joints is None else \
                    [j if isinstance(j, int) else self.index[j] for j in joints]
                for i in idx:
                    self.offset[i] = float(radians)

    def clear(self, fault: str | None = None) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})")
        with self.lock:
            if fault in (None, "unplug"):
                self.connected = True
            if fault in (None, "stop_publishing"):
                self.publishing = True
            if fault in (None, "drop_commands"):
                self.drop_commands = False
            if fault in (None, "position_offset"):
                self.offset[:] = 0.0

    def snapshot(self) -> dict:
        with self.lock:
            return {"joints": self.names, "position": self.q.tolist(), "velocity": self.qd.tolist(),
                    "effort": self.effort.tolist(), "mode": self.mode, "target": self.target.tolist(),
                    "publishing": self.publishing, "connected": self.connected, **self.counters}

    def stats(self, reset: bool = False) -> dict:
        """Counters, and the command latencies (ms): time from the latest joint state published to a
        command arriving -- the state-to-command latency when a client answers every state."""
        with self.lock:
            lat = np.array(self.latencies) * 1e3
            if reset:
                self.latencies = []
            out = dict(self.counters, n_latencies=int(lat.size))
            if lat.size:
                out.update(latency_ms_p50=float(np.percentile(lat, 50)), latency_ms_p99=float(np.percentile(lat, 99)),
                           latency_ms_max=float(lat.max()))
            return out

    def stop(self) -> None:
        self._stop.set()
        self._loop.join(timeout=2)
        self.executor.shutdown(timeout_sec=2)
        self._spin.join(timeout=2)
        self.node.destroy_node()
        try:
            import rclpy
            rclpy.shutdown(context=self.ctx)
        except Exception:   # already shut down
            pass


def _interpolate(points, t: float) -> np.ndarray:
    if t <= points[0][0]:
        return points[0][1]
    for (t0, p0), (t1, p1) in zip(points, points[1:]):
        if t <= t1:
            s = 1.0 if t1 <= t0 else (t - t0) / (t1 - t0)
            return p0 + (p1 - p0) * s
    return points[-1][1]
