"""ROS 2 bridge driver: drive an arm that already has a ROS 2 driver (Franka, UR, Kinova under
ros2_control) through its standard topics.

State comes from sensor_msgs/JointState on `joint_states_topic`; joints are matched by name (the
robot's names may differ from the config's: `joint_map`), in whatever order the robot publishes
them, ignoring joints the config does not list. Commands go out as std_msgs/Float64MultiArray to a
forward command controller per mode (`command_topics`, values in config order: configure the
controller's joints in that order) or, with `command_interface: trajectory`, as one-point
trajectory_msgs/JointTrajectory messages reaching the point `trajectory_lookahead_s` ahead.

The driver runs its own rclpy context, node and executor thread, so it coexists with other nodes
in the process. `read()` returns the newest joint state, waiting up to `read_wait_s` for one newer
than the last it returned (so a loop at the control rate sees every new sample). Stale state -- no
complete JointState for `stale_after_s` -- latches a fault; so do readings that stay implausible
(see drivers/plausibility.py). While latched, read/write/hold raise DriverFault; `reset_fault()`
needs fresh state again.

Calibration applies as for every driver: q = sign * (raw - offset).

Parameters (`driver:` in the hardware config) are `s2r.core.schema.drivers.Ros2BridgeParams`,
checked when the config loads.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from s2r.core.schema.drivers import Ros2BridgeParams, driver_params
from s2r.core.types import Command, CommandMode, DriverSpec, RobotState

from .base import Driver, DriverError, DriverFault, register_driver
from .plausibility import ReadingGuard

log = logging.getLogger("s2r.ros2_bridge")


def parse_params(cfg) -> Ros2BridgeParams:
    """`cfg.driver_params` validated, checked against the config (modes, joint names) and with the
    defaults that depend on it filled (command topics per mode, periods); errors name `driver.<key>`."""
    if cfg.driver_type != "ros2":
        raise cfg.error("driver.type", f"the ros2 bridge cannot run a {cfg.driver_type!r} config")
    return driver_params(cfg)


@dataclass
class _Sample:
    seq: int
    received: float          # time.monotonic() at arrival
    header_stamp: float      # the robot's stamp (ROS time, s)
    position: np.ndarray     # raw, config order, robot units
    velocity: np.ndarray
    effort: np.ndarray
    has_velocity: bool
    has_effort: bool


class Ros2BridgeDriver(Driver):
    name = "ros2"

    def __init__(self, config):
        self.config = config
        self.params = parse_params(config)
        self._spec: DriverSpec = config.spec()
        self.ros_names = [self.params.joint_map.get(n, n) for n in config.joint_names]
        self.offset, self.sign = config.calibration
        self.guard = ReadingGuard(self._spec, self.params.reading_margin, self.params.untrusted_budget)
        self._cond = threading.Condition()
        self._sample: _Sample | None = None
        self._returned_seq = -1
        self._index_cache: dict[tuple, list[int] | None] = {}
        self._missing: list[str] = []
        self._fault: str | None = None
        self._connected = False
        self._ctx = self._node = self._executor = self._spin = None
        self.stats = dict(messages=0, incomplete_messages=0, commands=0, faults=0, untrusted_readings=0)

    @property
    def spec(self) -> DriverSpec:
        return self._spec

    @property
    def fault(self) -> str | None:
        return self._fault

    @property
    def domain_id(self) -> int | None:
        return None if self._ctx is None else self._ctx.get_domain_id()

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        if self._connected:
            return
        try:
            import rclpy
            from rclpy.context import Context
            from rclpy.executors import SingleThreadedExecutor
            from rclpy.qos import QoSProfile
            from sensor_msgs.msg import JointState
            from std_msgs.msg import Float64MultiArray
            from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
        except ImportError as e:
            raise DriverError(f"rclpy or ROS message packages missing ({e}); install the project") from None
        from builtin_interfaces.msg import Duration
        self._Float64MultiArray, self._JointTrajectory = Float64MultiArray, JointTrajectory
        self._JointTrajectoryPoint, self._Duration = JointTrajectoryPoint, Duration
        p = self.params
        self._ctx = Context()
        kw = {} if p.domain_id is None else {"domain_id": p.domain_id}
        rclpy.init(context=self._ctx, args=[], **kw)
        try:
            self._node = rclpy.create_node(p.node_name, context=self._ctx)
            qos = QoSProfile(depth=10)
            self._node.create_subscription(JointState, p.joint_states_topic, self._on_joint_state, qos)
            self._pubs = {}
            if p.command_interface == "forward":
                for mode, topic in p.command_topics.items():
                    self._pubs[mode] = self._node.create_publisher(Float64MultiArray, topic, qos)
            else:
                self._traj_pub = self._node.create_publisher(JointTrajectory, p.trajectory_topic, qos)
            self._executor = SingleThreadedExecutor(context=self._ctx)
            self._executor.add_node(self._node)
            self._spin = threading.Thread(target=self._executor.spin, daemon=True, name="ros2-bridge-spin")
            self._spin.start()
            self._wait_for_robot()
        except BaseException:
            self._shutdown()
            raise
        self._connected = True
        self.guard.reset(self._sample_q(self._sample), self._sample.received)
        log.info("ros2 bridge: %d joints from %s on ROS_DOMAIN_ID=%s", len(self.ros_names),
                 p.joint_states_topic, self.domain_id)

    def _wait_for_robot(self) -> None:
        p = self.params
        deadline = time.monotonic() + p.connect_timeout_s
        with self._cond:
            self._cond.wait_for(lambda: self._sample is not None, timeout=p.connect_timeout_s)
        if self._sample is None:
            why = f"; messages lacked joints {self._missing}" if self._missing else ""
            raise DriverError(f"no {p.joint_states_topic} with joints {self.ros_names} within "
                              f"{p.connect_timeout_s:g} s on ROS_DOMAIN_ID={self.domain_id} "
                              f"(is the robot's driver running?{why})")
        q = self._sample_q(self._sample)
        if self.guard.out_of_range(q).any():
            raise DriverError("readings not trusted: " + self.guard.describe_out_of_range(q)
                              + " (check calibration offset/sign and joint_map)")
        # commands sent before the controller's subscription is matched are lost
        hold_pub = self._hold_publisher()
        while hold_pub.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                raise DriverError(f"nobody subscribes to {hold_pub.topic_name} on ROS_DOMAIN_ID="
                                  f"{self.domain_id}: is the controller loaded and active?")
            time.sleep(0.01)
        for mode, pub in getattr(self, "_pubs", {}).items():
            if pub is not hold_pub and pub.get_subscription_count() == 0:
                log.warning("ros2 bridge: no subscriber yet on %s (%s commands will be lost until its "
                            "controller is active)", pub.topic_name, mode)

    def disconnect(self) -> None:
        self._shutdown()
        self._connected = False

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=2.0)
        if self._spin is not None:
            self._spin.join(timeout=2.0)
        if self._node is not None:
            self._node.destroy_node()
        if self._ctx is not None:
            import rclpy
            try:
                rclpy.shutdown(context=self._ctx)
            except Exception as e:  # already shut down
                log.debug("rclpy shutdown: %s", e)
        self._executor = self._spin = self._node = self._ctx = None

    # ------------------------------------------------------------------ state in
    def _on_joint_state(self, msg) -> None:
        now = time.monotonic()
        key = tuple(msg.name)
        idx = self._index_cache.get(key, False)
        if idx is False:
            where = {n: i for i, n in enumerate(msg.name)}
            missing = [n for n in self.ros_names if n not in where]
            idx = None if missing else [where[n] for n in self.ros_names]
            if missing:
                self._missing = missing
            if len(self._index_cache) < 64:
                self._index_cache[key] = idx
        if idx is None or len(msg.position) != len(msg.name):
            self.stats["incomplete_messages"] += 1
            return
        pos = np.asarray(msg.position, float)[idx]
        has_v = len(msg.velocity) == len(msg.name)
        has_e = len(msg.effort) == len(msg.name)
        vel = np.asarray(msg.velocity, float)[idx] if has_v else np.zeros(len(idx))
        eff = np.asarray(msg.effort, float)[idx] if has_e else np.zeros(len(idx))
        with self._cond:
            seq = 0 if self._sample is None else self._sample.seq + 1
            self._sample = _Sample(seq, now, msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
                                   pos, vel, eff, has_v, has_e)
            self.stats["messages"] += 1
            self._cond.notify_all()

    def _sample_q(self, s: _Sample) -> np.ndarray:
        return self.sign * (s.position - self.offset)

    def read(self) -> RobotState:
        self._require()
        self._raise_if_faulted()
        with self._cond:
            if self._sample.seq == self._returned_seq and self.params.read_wait_s:
                self._cond.wait_for(lambda: self._sample.seq != self._returned_seq, timeout=self.params.read_wait_s)
            s = self._sample
        now = time.monotonic()
        self._check_stale(s, now)
        self._returned_seq = s.seq
        checked = self.guard.check(self._sample_q(s), self.sign * s.velocity, s.received)
        sensors = {"age_s": now - s.received, "header_stamp": s.header_stamp, "seq": s.seq,
                   "has_velocity": s.has_velocity, "has_effort": s.has_effort, "untrusted": checked.untrusted}
        if checked.untrusted:
            self.stats["untrusted_readings"] += 1
            sensors["q_raw"] = checked.raw_q
        if checked.fault:
            self._latch(checked.fault)
            raise DriverFault(self._fault)
        return RobotState(s.received, checked.q, checked.qd, self.sign * s.effort, sensors)

    def wait_for_state(self, timeout: float) -> bool:
        """Block until a joint state newer than the last one `read()` returned arrives."""
        with self._cond:
            return self._cond.wait_for(lambda: self._sample is not None and self._sample.seq != self._returned_seq,
                                       timeout=timeout)

    def _check_stale(self, s: _Sample, now: float) -> None:
        age = now - s.received
        if age > self.params.stale_after_s:
            self._latch(f"state stale: no {self.params.joint_states_topic} with joints {self.ros_names} for "
                        f"{age:.3f} s (limit {self.params.stale_after_s:g} s) on ROS_DOMAIN_ID={self.domain_id}")
            raise DriverFault(self._fault)

    # ------------------------------------------------------------------ commands out
    def write(self, command: Command) -> None:
        self._require()
        self._raise_if_faulted()
        mode = CommandMode(command.mode)
        if mode not in self._spec.modes:
            raise DriverError(f"mode {mode.value!r} not enabled for this robot")
        values = np.asarray(command.values, float)
        if values.shape != (len(self.ros_names),) or not np.all(np.isfinite(values)):
            raise DriverError(f"expected {len(self.ros_names)} finite values, got {values!r}")
        with self._cond:
            s = self._sample
        self._check_stale(s, time.monotonic())
        self._publish(mode, values)

    def hold(self) -> None:
        """Command the measured position (or zero velocity on a robot without position mode)."""
        self._require()
        self._raise_if_faulted()
        with self._cond:
            s = self._sample
        self._check_stale(s, time.monotonic())
        q = self.guard.trusted if self.guard.trusted is not None else self._sample_q(s)
        if CommandMode.POSITION in self._spec.modes:
            self._publish(CommandMode.POSITION, q)
        elif CommandMode.VELOCITY in self._spec.modes:
            self._publish(CommandMode.VELOCITY, np.zeros_like(q))
        else:
            self._publish(CommandMode.EFFORT, np.zeros_like(q))

    def _hold_publisher(self):
        if self.params.command_interface == "trajectory":
            return self._traj_pub
        for mode in ("position", "velocity", "effort"):
            if mode in self._pubs:
                return self._pubs[mode]
        raise DriverError("no command topic configured")

    def _publish(self, mode: CommandMode, values: np.ndarray) -> None:
        if mode == CommandMode.POSITION:
            raw = self.sign * values + self.offset
        else:
            raw = self.sign * values
        if self.params.command_interface == "forward":
            msg = self._Float64MultiArray()
            msg.data = raw.tolist()
            self._pubs[mode.value].publish(msg)
        else:
            msg = self._JointTrajectory()
            msg.joint_names = list(self.ros_names)
            pt = self._JointTrajectoryPoint()
            if mode == CommandMode.POSITION:
                pt.positions = raw.tolist()
            else:   # velocity: integrate over the lookahead from the measured position
                with self._cond:
                    pos = self._sample.position
                pt.positions = (pos + raw * self.params.trajectory_lookahead_s).tolist()
                pt.velocities = raw.tolist()
            la = self.params.trajectory_lookahead_s
            pt.time_from_start = self._Duration(sec=int(la), nanosec=int(round((la % 1) * 1e9)))
            msg.points = [pt]
            self._traj_pub.publish(msg)
        self.stats["commands"] += 1

    # ------------------------------------------------------------------ faults
    def reset_fault(self) -> None:
        """Clear a latched fault once fresh, plausible state flows again (waits up to connect_timeout_s)."""
        self._require()
        if self._fault is None:
            return
        p = self.params
        asked = time.monotonic()
        with self._cond:    # recovery starts from state measured after it was asked for
            fresh = self._cond.wait_for(lambda: self._sample.received > asked, timeout=p.connect_timeout_s)
            s = self._sample
        if not fresh:
            raise DriverFault(f"reset failed, still no fresh {p.joint_states_topic} "
                              f"(last {time.monotonic() - s.received:.2f} s ago): {self._fault}")
        q = self._sample_q(s)
        if self.guard.out_of_range(q).any():
            raise DriverFault("reset failed, readings still not trusted: " + self.guard.describe_out_of_range(q))
        log.warning("ros2 bridge: fault cleared (%s)", self._fault)
        self._fault = None
        self.guard.reset(q, s.received)
        self._returned_seq = -1

    def _latch(self, reason: str) -> None:
        if self._fault is None:
            self.stats["faults"] += 1
            log.error("ros2 bridge: FAULT: %s -- commands refused until reset_fault()", reason)
            self._safe_stop()
        self._fault = reason

    def _safe_stop(self) -> None:
        """Best effort, once: ask the robot to stay where it was last trusted to be (position), or
        to stop (velocity) or go to zero effort. If the robot's driver is gone this reaches nobody,
        and its own safety (ros2_control's command timeouts, the arm's brakes) has to act."""
        try:
            q = self.guard.trusted
            if CommandMode.POSITION in self._spec.modes and q is not None:
                self._publish(CommandMode.POSITION, q)
            elif CommandMode.VELOCITY in self._spec.modes:
                self._publish(CommandMode.VELOCITY, np.zeros(len(self.ros_names)))
            elif CommandMode.EFFORT in self._spec.modes:
                self._publish(CommandMode.EFFORT, np.zeros(len(self.ros_names)))
        except Exception as e:  # a dying context must not hide the fault itself
            log.warning("ros2 bridge: could not command a stop after the fault: %s", e)

    def _raise_if_faulted(self) -> None:
        if self._fault is not None:
            raise DriverFault(self._fault)

    def _require(self) -> None:
        if not self._connected:
            raise DriverError("ros2 bridge driver is not connected (call connect() first)")


@register_driver("ros2")
def make_ros2_bridge(config, **_kw) -> Ros2BridgeDriver:
    return Ros2BridgeDriver(config)
