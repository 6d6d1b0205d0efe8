"""driver_node: a robot (real or simulated) behind the safety layer, as a ROS 2 lifecycle node.

Start-up: parameters configure needs (the config, command_mode, hardware) are checked when the
node is built; a bad one ends the process at once with one error line and exit code 2 (bad
configuration), so that a launch sees it. With `autostart:=true`, a configure or activate that
fails (e.g. the robot does not answer) ends the process with exit code 1.

Lifecycle (ros2 lifecycle / `autostart:=true` does configure + activate by itself):
  configure   load the hardware config, open its driver behind the safety layer (robot holds)
  activate    start the control loop: /joint_states at the config rate, accept commands
  deactivate  stop the loop; the robot holds its measured position
  cleanup     disconnect the driver
A driver fault while active (a bus error, a non-finite state) stops the loop, leaves the robot
holding, and takes the node through ErrorProcessing to Unconfigured with the fault latched;
configure is refused until `~/reset`, which clears the fault, holds the measured position and
configures + activates the node again.

Topics: publishes sensor_msgs/JointState on /joint_states and diagnostic_msgs/DiagnosticArray on
/diagnostics; subscribes std_msgs/Float64MultiArray on ~/commands (one value per joint in config
order, in `command_mode`) and trajectory_msgs/JointTrajectory on ~/joint_trajectory.
After each position command it accepts, it publishes on ~/setpoints (sensor_msgs/JointState) the
set-point the safety layer's limiter sent (`position`) and the limiter's speed (`velocity`, rad/s),
stamped with the /joint_states stamp the command answered (its label; else now): the limiter paces
from its own reading of the robot and starts again from the measured state after a gap in the
stream, so a node that models it (policy_node, whose policy may observe its set-points) corrects its
model with these, as a ros2_control controller's state reports its reference.
With `randomize` (sim driver only: a randomization preset name or YAML path) the simulated robot
runs under one draw (`randomize_seed`) of it: its physics as the sim tasks apply the same draw,
and its per-step effects (latency, jitter, action and sensor noise, sensor delay) in the driver's
control loop (`drivers.sim_driver.SimDriver.randomize`); the true state, without sensor delay,
noise or offsets, is then also published on ~/true_joint_states, for evaluation. A preset with a
parameter the driver does not simulate (objects, visuals, cameras) is refused at start (exit 2).
Services (std_srvs): ~/enable (SetBool), ~/estop and ~/reset (Trigger); with
`fault_injection:=true` also ~/inject_fault (Trigger), for drills and tests.
`emulate:=true` drives the config's protocol-level emulator instead of its hardware (a real setup
whose driver has one: dynamixel, e.g. leap_hand, or ros2; `drivers.emulators.start_emulated`, as
the HIL suite's --emulate): the node starts it when it opens the driver (configure), points the
driver at it, and stops it when it disconnects (cleanup, shutdown, exit); a ros2 emulator gets a
ROS domain of its own. A config without an emulator, or hardware sim / mock, is refused at start.
`hardware:=mock` runs the graph against the in-memory robot (`drivers.mock_driver`); the
`fault_<knob>` parameters set its fault knobs (`driver_faults`), and on another backend wrap the
driver so that it fails the same way (all knobs but stuck joints and a connect error).

Every bad input is refused with a logged reason and counted in the diagnostics; nothing raises out
of a callback. The command watchdog (hold within `watchdog_periods` control periods of the last
command) is the safety layer's, run from its own thread.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from s2r.drivers import Command, CommandMode, DriverError, DriverFault
from s2r.core.schema.nodes import DriverNodeParams

from .common import (COMMAND_QOS, STATE_QOS, Throttle, FastSubscription, bridge_python_logging,
                     command_source_stamp, freeze_heap, spin_node, stamp_ns)
from .driver_diagnostics import DriverDiagnostics
from .driver_faults import fault_knobs
from .node_params import declare_parameters, refuse
from .trajectory import JointTrajectoryPlan, TrajectoryError


class DriverNode(DriverDiagnostics, LifecycleNode):
    def __init__(self, name: str = "driver", **kw):
        super().__init__(name, **kw)
        declare_parameters(self, DriverNodeParams)     # self.params: the validated parameters
        self._check_parameters()
        self._log_handler = bridge_python_logging(self)

        self.cfg = None
        self.safety = None
        self._emulator = None            # `emulate`: the emulator this node started
        self.lifecycle = "unconfigured"
        self.fault_latched = False
        self.mode = CommandMode.POSITION
        self._loop_thread: threading.Thread | None = None
        self._loop_stop = threading.Event()
        self._traj: JointTrajectoryPlan | None = None
        self._lock = threading.Lock()
        self._throttle = Throttle()
        self._reset_stats()

        self.pub_joint_states = self.create_publisher(JointState, "/joint_states", STATE_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.pub_setpoints = self.create_publisher(JointState, "~/setpoints", STATE_QOS)
        self.pub_true_states = (self.create_publisher(JointState, "~/true_joint_states", STATE_QOS)
                                if self.params.randomize else None)
        # the control path: served by its own executor thread (FastSubscription), not behind the
        # node's services and timers
        self._commands_sub = FastSubscription(self, "~/commands", Float64MultiArray, self._on_commands,
                                              COMMAND_QOS, "commands")
        self.create_subscription(JointTrajectory, "~/joint_trajectory", self._on_trajectory, 10)
        self.create_service(SetBool, "~/enable", self._srv_enable)
        self.create_service(Trigger, "~/estop", self._srv_estop)
        self.create_service(Trigger, "~/reset", self._srv_reset)
        if self.params.fault_injection:
            self.create_service(Trigger, "~/inject_fault", self._srv_inject_fault)
        self._fault_signal = self.create_guard_condition(self._on_driver_fault)
        self.context.on_shutdown(self._loop_stop.set)      # Ctrl-C: the loop stops publishing first
        self._diag_timer = self.create_timer(self.params.diagnostics_period_s,
                                             self._publish_diagnostics)
        if self.params.autostart:
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    # ------------------------------------------------------------------ start-up
    def _refuse_to_start(self, reason: str):
        """One error line and exit code 2 (bad configuration), before anything is opened: a node
        that cannot be configured must end, not sit unconfigured while a launch waits on it."""
        self.get_logger().error(reason)
        raise SystemExit(2)

    def _check_parameters(self):
        """What the parameters need of the config, checked at start-up (their types and bounds
        are the model's): the config loads and has the command mode, the fault knobs and a
        randomization preset fit the robot. configure checks them again (they may be set between
        start-up and configure)."""
        from s2r.core.config import ConfigError, load_config

        p = self.params
        try:
            cfg = load_config(p.config)
        except ConfigError as e:
            self._refuse_to_start(f"config error: {e}")
        if CommandMode(p.command_mode) not in cfg.modes:
            refuse(self, "command_mode", f"{p.command_mode!r} is not among the driver's modes "
                                         f"{sorted(m.value for m in cfg.modes)}")
        hardware = p.hardware or cfg.hardware
        if p.emulate:
            from s2r.drivers.emulators import check_emulated
            try:
                check_emulated(cfg)
            except ValueError as e:
                refuse(self, "emulate", str(e))
            if p.hardware in ("sim", "mock"):
                refuse(self, "emulate", f"drives the real driver against its emulator; hardware {p.hardware!r} "
                                        "has none (leave hardware unset)")
            hardware = "real"
        try:
            fault_knobs(p, cfg.joint_names, hardware)
        except ValueError as e:
            self._refuse_to_start(f"{self.get_name()}: {e}")
        if p.randomize:
            from s2r.drivers.sim_driver import DRIVER_RANDOMIZATION
            from s2r.sim.randomization import PARAMETERS, RandomizationError, Randomizer
            if hardware == "mock" or (hardware != "sim" and cfg.driver_type != "sim"):
                refuse(self, "randomize", f"only the simulated robot can be randomized (hardware is {hardware!r})")
            try:
                rz = Randomizer.load(p.randomize)
            except RandomizationError as e:
                refuse(self, "randomize", str(e))
            bad = [n for n in rz.params if n not in DRIVER_RANDOMIZATION]
            if bad:
                refuse(self, "randomize", f"{p.randomize}: {bad[0]} ({PARAMETERS[bad[0]].group}) acts on "
                                          f"something the sim driver does not simulate")
            unknown = [j for j in p.randomize_joints if j not in cfg.joint_names]
            if unknown:
                refuse(self, "randomize_joints", f"{unknown[0]!r} is not one of {cfg.name}'s joints")

    # ------------------------------------------------------------------ lifecycle
    def _autostart(self):
        """configure + activate; if either fails (its reason is logged), the node exits with
        code 1: nothing would ever configure it, and a launch must see that it is not running."""
        self._autostart_timer.cancel()
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            if self.trigger_activate() == TransitionCallbackReturn.SUCCESS:
                return
            step = "activate"
        else:
            step = "configure"
        self.get_logger().error(f"autostart: {step} failed; exiting")
        self.exit_code = 1
        rclpy.try_shutdown(context=self.context)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from s2r.drivers import open_driver
        from s2r.core.config import ConfigError, load_config

        if self.fault_latched:
            self.get_logger().error(f"configure refused: driver fault latched ({self.safety.fault_reason}); "
                                    "call ~/reset first")
            return TransitionCallbackReturn.FAILURE
        p = self.params
        mode = p.command_mode
        self.mode = CommandMode(mode)
        if self.safety is None or not self.safety.connected:
            try:
                self.cfg = load_config(p.config)
            except ConfigError as e:
                self.get_logger().error(f"config error: {e}")
                return TransitionCallbackReturn.FAILURE
            if self.mode not in self.cfg.modes:
                self.get_logger().error(f"command_mode {mode!r} is not among the driver's modes "
                                        f"{sorted(m.value for m in self.cfg.modes)}")
                return TransitionCallbackReturn.FAILURE
            hardware = p.hardware or None
            try:
                if p.emulate:
                    self._start_emulator()
                    self.cfg, hardware = self._emulator.config, "real"
                faults = fault_knobs(p, self.cfg.joint_names, hardware or self.cfg.hardware)
                self.safety = open_driver(self.cfg, hardware, realtime=True, faults=faults, record=0)
            except (DriverError, ValueError, OSError, RuntimeError) as e:
                self.get_logger().error(f"could not open the driver of {self.cfg.name}: {e}")
                self.safety = None
                self._stop_emulator()
                return TransitionCallbackReturn.FAILURE
            preset = p.randomize
            if preset:
                try:
                    draw = self.safety.driver.randomize(preset, p.randomize_seed, list(p.randomize_joints))
                except (ValueError, AttributeError) as e:
                    self.get_logger().error(f"parameter randomize: {e}")
                    self.safety.disconnect()
                    self.safety = None
                    return TransitionCallbackReturn.FAILURE
                self.get_logger().info(f"robot randomized by {preset} (seed {p.randomize_seed}): "
                                       + ", ".join(sorted(draw)))
            self.safety.start_watchdog()
        self.spec = self.safety.spec
        self.period = self.spec.period
        self.get_logger().info(
            f"configured: {self.cfg.name} via {self.safety.backend}"
            + (" (SIMULATOR FALLBACK)" if self.safety.fallback else "")
            + f", {self.spec.n_joints} joints at {self.spec.rate_hz:g} Hz, commands in {self.mode.value} mode")
        self.lifecycle = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ok, msg = self.safety.enable(True)
        if not ok:
            self.get_logger().error(f"activate refused: {msg}")
            return TransitionCallbackReturn.FAILURE
        self._traj = None
        self._loop_stop.clear()
        freeze_heap()                          # the driver and its libraries, loaded at configure
        self._loop_thread = threading.Thread(target=self._control_loop, name="control-loop", daemon=True)
        self.lifecycle = "active"
        self._loop_thread.start()
        self.get_logger().info("active: publishing /joint_states, accepting commands")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_loop()
        self.lifecycle = "inactive"
        if self.fault_latched:
            return TransitionCallbackReturn.ERROR          # -> ErrorProcessing -> on_error
        self.safety.hold()
        self.get_logger().info("inactive: robot holding")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_loop()
        reason = self.safety.fault_reason if self.safety is not None else "unknown"
        self.get_logger().error(f"driver fault: {reason}. Robot holding; commands refused. "
                                "Call ~/reset to clear the fault and resume.")
        self.lifecycle = "unconfigured"
        return TransitionCallbackReturn.SUCCESS          # -> Unconfigured, fault latched

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_loop()
        self._disconnect()
        self.lifecycle = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_loop()
        self._disconnect()
        self.lifecycle = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _disconnect(self):
        try:
            if self.safety is not None:
                try:
                    self.safety.hold()
                finally:
                    self.safety.disconnect()
        finally:
            self.safety = None
            self.fault_latched = False
            self._stop_emulator()

    def _start_emulator(self):
        """`emulate`: the config's emulator in its own process, owned by this node."""
        from s2r.drivers.emulators import start_emulated
        self._stop_emulator()
        self._emulator = start_emulated(self.cfg, private_domain=True)
        emu = self._emulator
        where = f"port {emu.port}" if emu.port else f"ROS_DOMAIN_ID={emu.config.driver_params.get('domain_id')}"
        self.get_logger().info(f"emulate: {emu.kind} emulator of {self.cfg.name} started ({where}, "
                               f"pid {emu.process.proc.pid})")

    def _stop_emulator(self):
        emu, self._emulator = getattr(self, "_emulator", None), None
        if emu is not None:
            emu.close()
            self.get_logger().info(f"emulate: {emu.kind} emulator stopped")

    def _stop_loop(self):
        self._loop_stop.set()
        t = self._loop_thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=2.0)
        self._loop_thread = None
        self._write_latency_log()

    def close(self):
        """Process exit: stop taking commands and the loop, hold and disconnect."""
        self._commands_sub.close()
        self._stop_loop()
        self._disconnect()

    # ------------------------------------------------------------------ the control loop
    def _control_loop(self):
        period = self.period
        names = list(self.spec.joint_names)
        next_t = time.monotonic()
        while not self._loop_stop.is_set():
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                if self._loop_stop.wait(delay):
                    break
            now = time.monotonic()
            if now - next_t > period:                 # fell behind by more than a period: resync
                self.loop_overruns += int((now - next_t) / period)
                next_t = now
            try:
                st = self.safety.read()
                traj = self._traj
                if traj is not None:
                    res = self.safety.write(Command(CommandMode.POSITION, traj.sample(now)))
                    if res.refused:
                        self._traj = None
                        self._refuse("trajectory_command", res)
            except DriverFault:
                self.fault_latched = True
                self._fault_signal.trigger()
                return
            msg = JointState()
            stamp = self.get_clock().now().to_msg()
            msg.header.stamp = stamp
            msg.name = names
            msg.position = st.q.tolist()
            msg.velocity = st.qd.tolist()
            msg.effort = st.effort.tolist()
            key = stamp_ns(stamp)
            with self._lock:
                t_pub = time.monotonic()
                self.answers.published(key, t_pub)
                if self._logging:
                    self._log_pub[key] = t_pub
            try:
                self.pub_joint_states.publish(msg)
            except Exception:                 # the context is shutting down (Ctrl-C): end the loop
                if not self.context.ok():
                    return
                raise
            if self.pub_true_states is not None:
                try:
                    true = self.safety.driver.true_state()
                except (DriverError, AttributeError):
                    true = None
                if true is not None:
                    msg.position, msg.velocity, msg.effort = true.q.tolist(), true.qd.tolist(), true.effort.tolist()
                    try:
                        self.pub_true_states.publish(msg)
                    except Exception:         # the context is shutting down (Ctrl-C): end the loop
                        if not self.context.ok():
                            return
                        raise
            self.rate.tick(now)

    def _on_driver_fault(self):
        if self.lifecycle == "active":
            self.get_logger().error(f"driver fault while active: {self.safety.fault_reason}")
            self.trigger_deactivate()      # returns ERROR -> ErrorProcessing -> Unconfigured

    # ------------------------------------------------------------------ inputs
    def _on_commands(self, msg: Float64MultiArray):
        t_rx = time.monotonic()
        self.commands_received += 1
        src = command_source_stamp(msg)
        if src is not None:
            with self._lock:
                latency = self.answers.answered(src, t_rx)
                if latency is not None:
                    self.latency.add(latency)
                    if self._logging and src not in self._log_rx:
                        self._log_rx[src] = t_rx
        if self.lifecycle != "active":
            self._refuse("command_inactive", f"node is {self.lifecycle}, not active")
            return
        try:
            values = np.asarray(msg.data, dtype=float)
        except (TypeError, ValueError):
            self._refuse("command_malformed", "data is not numeric")
            return
        self._traj = None
        res = self.safety.write(Command(self.mode, values))
        if res.refused:
            self._refuse("command", res.reason)
        elif self.mode is CommandMode.POSITION:
            self._publish_setpoint(src)

    def _publish_setpoint(self, src: int | None):
        """~/setpoints: what the limiter made of the command answering the state stamped `src`."""
        sp = self.safety.position_setpoint
        if sp is None:
            return
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg() if src is None else \
            TimeMsg(sec=src // 1_000_000_000, nanosec=src % 1_000_000_000)
        msg.name = list(self.spec.joint_names)
        msg.position = sp[0].tolist()
        msg.velocity = (sp[1] / self.period).tolist()
        try:
            self.pub_setpoints.publish(msg)
        except Exception:                 # the context is shutting down
            if self.context.ok():
                raise

    def _on_trajectory(self, msg: JointTrajectory):
        if self.lifecycle != "active":
            self._refuse("trajectory_inactive", f"node is {self.lifecycle}, not active")
            return
        if self.safety.state not in ("enabled", "holding"):
            self._refuse("trajectory_state", f"robot is {self.safety.state}")
            return
        now_mono = time.monotonic()
        start = now_mono
        if msg.header.stamp.sec or msg.header.stamp.nanosec:
            ahead = (stamp_ns(msg.header.stamp) - self.get_clock().now().nanoseconds) * 1e-9
            start = now_mono + max(ahead, 0.0)
        try:
            q_now = self.safety.read().q
            plan = JointTrajectoryPlan.build(
                self.spec.joint_names, list(msg.joint_names),
                [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points],
                [list(p.positions) for p in msg.points],
                [list(p.velocities) for p in msg.points], q_now, start)
        except TrajectoryError as e:
            self._refuse("trajectory", str(e))
            return
        except DriverFault as e:
            self._refuse("trajectory_fault", str(e))
            return
        if np.any(plan.positions < self.spec.lower) or np.any(plan.positions > self.spec.upper):
            self.get_logger().warning("trajectory leaves the joint limits; it will be clamped to them")
        self._traj = plan
        self.trajectories_accepted += 1
        self.get_logger().info(f"trajectory accepted: {len(msg.points)} points over {plan.duration:.2f} s")

    # ------------------------------------------------------------------ services
    def _srv_enable(self, req, resp):
        if self.safety is None:
            resp.success, resp.message = False, f"not configured (node is {self.lifecycle})"
            return resp
        self._traj = None
        resp.success, resp.message = self.safety.enable(bool(req.data))
        self.get_logger().info(f"enable({req.data}): {resp.message}")
        return resp

    def _srv_estop(self, req, resp):
        self._traj = None
        if self.safety is None:
            resp.success, resp.message = False, f"no driver (node is {self.lifecycle})"
            return resp
        self.safety.estop()
        resp.success, resp.message = True, "e-stop latched: robot holding, commands refused until ~/enable or ~/reset"
        self.get_logger().error(resp.message)
        return resp

    def _srv_reset(self, req, resp):
        self._traj = None
        if self.safety is None:
            resp.success, resp.message = False, f"not configured (node is {self.lifecycle}): configure it first"
            return resp
        ok, msg = self.safety.reset()
        if not ok:
            resp.success, resp.message = False, msg
            self.get_logger().error(f"reset failed: {msg}")
            return resp
        if self.fault_latched:
            self.fault_latched = False
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS or \
                    self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                resp.success, resp.message = False, f"{msg}, but the node did not come back up (see its log)"
                return resp
            msg += "; node active again"
        resp.success, resp.message = True, msg
        self.get_logger().info(f"reset: {msg}")
        return resp

    def _srv_inject_fault(self, req, resp):
        if self.safety is None:
            resp.success, resp.message = False, "no driver to fault"
            return resp
        self.safety.driver.unplug("no response from the robot (~/inject_fault)")   # a MockDriver or FaultyDriver
        resp.success, resp.message = True, "fault injected: the driver now fails like a lost bus until ~/reset"
        self.get_logger().warning(resp.message)
        return resp


def main(args=None) -> int:
    return spin_node(DriverNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
