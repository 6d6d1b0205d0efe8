"""camera_node: sensor_msgs/Image and CameraInfo on /camera/image_raw and /camera/camera_info.

The camera comes from the hardware config (`cameras:`, the first one unless `camera` names
another), with its intrinsics and extrinsics:

* `source: sim` -- rendered by sim.cameras.SimCamera (TinyRenderer, the renderer the policies are
  trained with) from a mirror of the robot: this node loads the same robot model in its own
  pybullet world and poses it from /joint_states, so it works whichever process simulates the
  physics. The current /goal_pose is drawn as a green sphere (`show_goal`).
* `source: device` -- an OpenCV VideoCapture on the configured device index or path (a video
  file is looped, which is handy for replaying a recording), resized to the configured size.

Frames are published at the camera's rate (or `rate_hz`); CameraInfo carries K and P of the
pinhole and the same stamp as its image.
"""
from __future__ import annotations

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState

from s2r.core.schema.nodes import CameraNodeParams

from .common import (ERROR, GOAL_QOS, IMAGE_QOS, OK, STATE_QOS, WARN, LatencyStats, RateMeter, Throttle,
                     bridge_python_logging, diag_status, spin_node)
from .node_params import declare_parameters, refuse


class CameraNode(Node):
    def __init__(self, name: str = "camera", **kw):
        super().__init__(name, **kw)
        declare_parameters(self, CameraNodeParams)     # self.params: the validated parameters
        self._log_handler = bridge_python_logging(self)
        g = lambda k: getattr(self.params, k)   # noqa: E731
        from s2r.core.config import ConfigError, load_config

        try:
            self.cfg = load_config(str(g("config")))
        except ConfigError as e:
            self.get_logger().error(f"config error: {e}")
            raise SystemExit(2)
        if not self.cfg.cameras:
            self.get_logger().error(f"{self.cfg.path}: cameras: the config has no camera")
            raise SystemExit(2)
        want = str(g("camera"))
        cams = {c.name: c for c in self.cfg.cameras}
        if want and want not in cams:
            refuse(self, "camera", f"{self.cfg.path} has no camera {want!r} (cameras: {', '.join(cams)})")
        self.cam = cams[want] if want else self.cfg.cameras[0]
        self.width = int(g("width")) or self.cam.width
        self.height = int(g("height")) or self.cam.height
        self.rate_hz = float(g("rate_hz")) or self.cam.rate_hz
        self.frame_id = f"{self.cam.name}_optical_frame"
        self.render_ms = LatencyStats(10_000)
        self.rate = RateMeter()
        self.failures = 0
        self.throttle = Throttle()
        self.capture = None
        self.sim = None
        override = str(g("device"))
        self.source, device = ("device", override) if override else (self.cam.source, self.cam.device)
        if self.source == "sim":
            self._open_sim()
        else:
            self._open_device(device)
        prefix = str(g("topic_prefix")).rstrip("/")
        self.pub_image = self.create_publisher(Image, f"{prefix}/image_raw", IMAGE_QOS)
        self.pub_info = self.create_publisher(CameraInfo, f"{prefix}/camera_info", IMAGE_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0 / self.rate_hz, self._tick)
        self.create_timer(float(g("diagnostics_period_s")), self._publish_diagnostics)
        self.get_logger().info(f"camera {self.cam.name!r} ({self.source}) {self.width}x{self.height} at "
                               f"{self.rate_hz:g} Hz on {prefix}/image_raw")

    # ------------------------------------------------------------------ sources
    def _open_sim(self):
        from s2r.sim.cameras import SimCamera
        from s2r.sim.robots import Simulation

        model = self.cfg.robot_description()
        try:
            model = model.with_visuals("decimated")     # same geometry, far fewer triangles
        except ValueError:
            pass
        self.sim = Simulation(self.cfg.sim.physics_hz)
        j = self.cfg.joints
        self.robot = self.sim.add_robot(model, self.cfg.joint_names, [x.kp for x in j], [x.kd for x in j],
                                        [x.limits.effort for x in j], self.cfg.sim.gravity_compensation)
        self.robot.reset(np.clip(self.robot.q_home, self.cfg.spec().lower, self.cfg.spec().upper))
        self.sim_camera = SimCamera.from_config(self.cam, self.width, self.height)
        pos, rpy = self.params.position, self.params.rpy             # None: as configured
        if pos is not None or rpy is not None:
            from s2r.sim.cameras import Pose
            self.sim_camera.pose = Pose(pos or self.sim_camera.pose.position, rpy or self.sim_camera.pose.rpy)
        self.q = None
        self._index = None
        self.goal_marker = None
        self.create_subscription(JointState, "/joint_states", self._on_state, STATE_QOS)
        if self.params.show_goal:
            self.create_subscription(PoseStamped, "/goal_pose", self._on_goal, GOAL_QOS)
        info = self.sim_camera.camera_info()
        self.K, self.P = info["k"], info["p"]

    def _open_device(self, device):
        import cv2

        dev = int(device) if isinstance(device, int) or str(device).isdigit() else str(device)
        self.capture = cv2.VideoCapture(dev)
        if not self.capture.isOpened():
            self.get_logger().error(f"camera {self.cam.name!r}: cannot open device {dev!r}")
            raise SystemExit(1)
        self.is_file = isinstance(dev, str) and not dev.startswith("/dev/")
        sx, sy = self.width / self.cam.width, self.height / self.cam.height
        fx, fy, cx, cy = self.cam.fx * sx, self.cam.fy * sy, self.cam.cx * sx, self.cam.cy * sy
        self.K = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        self.P = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]

    def _on_state(self, msg: JointState):
        names = tuple(msg.name)
        if self._index is None or self._index[0] != names:
            try:
                self._index = (names, [names.index(j) for j in self.cfg.joint_names])
            except ValueError:
                return
        q = np.asarray(msg.position, float)[self._index[1]]
        if np.all(np.isfinite(q)):
            self.q = q

    def _on_goal(self, msg: PoseStamped):
        import pybullet as p
        from s2r.sim.scene import marker

        pos = [msg.pose.position.x, msg.pose.position.y, msg.pose.position.z]
        if not np.all(np.isfinite(pos)):
            return
        if self.goal_marker is None:
            self.goal_marker = marker(self.sim.client, pos, radius=0.025, rgba=(0.1, 0.85, 0.1, 0.9))
        else:
            p.resetBasePositionAndOrientation(self.goal_marker, pos, [0, 0, 0, 1], physicsClientId=self.sim.client)

    # ------------------------------------------------------------------ frames
    def _grab(self) -> np.ndarray | None:
        if self.source == "sim":
            if self.q is not None:
                self.robot.reset(self.q)
            return self.sim_camera.render(self.sim.client).data
        import cv2

        ok, frame = self.capture.read()
        if not ok and self.is_file:                      # a recording: loop it
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.capture.read()
        if not ok:
            return None
        if frame.shape[1] != self.width or frame.shape[0] != self.height:
            frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def _tick(self):
        t0 = time.perf_counter()
        try:
            rgb = self._grab()
        except Exception as e:          # a renderer or device error: report, keep the node up
            rgb = None
            n = self.throttle("grab_error")
            if n is not None:
                self.get_logger().error(f"frame failed: {e}")
        if rgb is None:
            self.failures += 1
            n = self.throttle("no_frame")
            if n is not None:
                self.get_logger().warning(f"no frame from the camera ({self.failures} failures)")
            return
        self.render_ms.add(time.perf_counter() - t0)
        stamp = self.get_clock().now().to_msg()
        img = Image()
        img.header.stamp, img.header.frame_id = stamp, self.frame_id
        img.height, img.width = rgb.shape[0], rgb.shape[1]
        img.encoding, img.is_bigendian, img.step = "rgb8", 0, 3 * rgb.shape[1]
        img.data = np.ascontiguousarray(rgb).tobytes()
        info = CameraInfo()
        info.header = img.header
        info.height, info.width = img.height, img.width
        info.distortion_model, info.d = "plumb_bob", [0.0] * 5
        info.k, info.p = self.K, self.P
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        self.pub_image.publish(img)
        self.pub_info.publish(info)
        self.rate.tick()

    def _publish_diagnostics(self):
        p50, p99 = self.render_ms.percentiles_ms(50, 99)
        v = {"source": self.source, "camera": self.cam.name, "width": self.width, "height": self.height,
             "rate_hz": self.rate.rate(), "target_rate_hz": self.rate_hz, "frames": self.rate.total,
             "failures": self.failures, "frame_time_p50_ms": p50, "frame_time_p99_ms": p99}
        if self.rate.total == 0 and self.failures:
            level, msg = ERROR, "no frames"
        elif self.rate.rate() < 0.5 * self.rate_hz:
            level, msg = WARN, f"{self.rate.rate():.1f} of {self.rate_hz:g} Hz"
        else:
            level, msg = OK, f"{self.rate.rate():.1f} Hz"
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [diag_status(f"{self.get_name()}: camera", level, msg, self.cfg.name, v)]
        self.pub_diag.publish(arr)

    def close(self):
        if self.capture is not None:
            self.capture.release()
        if self.sim is not None:
            self.sim.close()


def main(args=None) -> int:
    return spin_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
