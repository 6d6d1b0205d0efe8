"""policy_node: runs a policy exported by learning/ and streams its commands.

The policy (`learning.deploy.load_policy`: an `.onnx` file on ONNX Runtime, no torch needed; a
`.pt2` from torch.export; a TorchScript `.pt`; one intra-op thread) is called on the newest
camera image and joint state once per `/joint_states` (`trigger: state`, the default), at most at
`rate_hz` (default: the policy's control rate, else the config's): each step answers the state it
read within milliseconds, as in training, where a step acts on the observation just made. A timer
of its own (`trigger: timer`) beats against the driver's clock: steps then read a state up to a
period old, some states twice and some never.

    action = module(image, state)         use_image: true  (visuomotor policies)
    action = module(state)                use_image: false (state-only policies)

    image:  float32 (1, 3, H, W), RGB in [0, 1], H x W = `image_size` (0: as received)
    state:  float32 (1, d): what the policy's metadata (`s2r_policy.json`, in every format
            learning/ exports; an .onnx without it is refused at start) lists as `obs_keys`
            (other than "image"), built by learning.features exactly as in training and `s2r
            eval` (`PolicyInputs`); without metadata, [q; qd] of the commanded joints, in
            `joints` order (default: the metadata's `joint_names`, else all of the config's
            joints, in config order).
            The node supplies the features' sources: the joint state (of the metadata's
            `obs_joint_names`, default the commanded joints); the TCP pose by URDF forward
            kinematics of the metadata's `ee_link` plus `tcp_offset` in its frame; the target,
            the newest geometry_msgs/PoseStamped on /goal_pose (position, in the world / robot base
            frame: until a goal arrives a policy that needs it waits, nothing is sent); for a hand
            policy (metadata `tip_count` k, `tip_links`), the fingertips by forward kinematics and
            their targets, the newest geometry_msgs/PoseArray on /goal_tips (k positions in
            tip_links order, world frame; a goal with another count, a non-finite value or a
            target outside the fingertip's reach is refused and counted, and the hand holds); its
            position targets (q_cmd, for position and position_delta actions) and the set-points
            they make (setpoint, setpoint_step: the safety layer's joint limiter, run here as in
            training); and its episode:
            step = the policy's calls since the episode began (since the first goal, and again
            from 0 whenever the goal moves by more than 1 mm, else since the first call; waiting
            for a state, an image or a goal does not advance it), its past actions (the module's
            outputs; a refused action counts as a hold: zeros, or the held position for
            `position`) and the history of history keys. A policy whose obs_keys this node cannot
            build (an unknown feature, a metadata parameter it lacks, a source the node does not
            have, a size that differs from the network's input) is refused at start in one line.
    action: (1, n) or (n,) -- one value per commanded joint, interpreted by `action`:
            position (absolute targets), position_delta (added to the commanded targets, as the
            sim tasks apply it in training), velocity, effort. Position targets are sent; the
            driver's safety layer paces the set-point toward them with its joint limiter, as the
            sim tasks do in training (s2r.core.joint_limiter.ActionSetpoints). The node runs the
            same limiter on the same targets to know that set-point (its `setpoint` inputs), and
            corrects it with what the driver reports it sent (/<driver>/setpoints, per command:
            the safety layer paces from its own reading of the robot and starts again from the
            measured state after a gap in the stream, which a model here cannot foresee).
            Sending the paced set-point instead would be paced again by the safety layer, which
            brakes toward every set-point as if it were the last: the robot would lag the policy.

~/enable (std_srvs/SetBool) starts and stops the policy (parameter `enabled`, default true): a
disabled node sends nothing (the driver's watchdog holds, and the robot can be moved by others,
e.g. to an episode's start) and forgets its goal and episode, so that after enable the next goal
on /goal_pose begins a new episode from step 0 with no past actions.

Commands go to /<driver>/commands in the config's joint order; joints the policy does not command
hold where they were (position) or get zero (velocity / effort), so the driver's `command_mode`
must be `position` for position and position_delta, else the same as `action`. Nothing is sent
while the image or the state is missing or older than its limit (the driver's watchdog then
holds), and a non-finite action is refused and replaced by a hold.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool

from s2r.learning.features import ObsContext, ObservationBuilder    # the policy's inputs, as in training
from s2r.core.joint_limiter import ActionSetpoints, JointLimiter, PositionTargets   # as in training
from s2r.core.schema.nodes import PolicyNodeParams

from .common import (COMMAND_QOS, ERROR, GOAL_QOS, IMAGE_QOS, OK, STATE_QOS, WARN, LatencyStats, RateMeter, Throttle,
                     bridge_python_logging, command_msg, diag_status, spin_node, stamp_ns)
from .node_params import declare_parameters, refuse

SENT_KEPT = 16                     # commands kept to match the driver's set-point reports with
NEW_GOAL_M = 1e-3                  # a goal this far from the last one begins a new episode (phase 0)


def _kinematics(robot, joints):
    """(RigidBodyModel over `joints`, the others at the robot's home posture; base rotation; base
    position) of a RobotDescription."""
    import pybullet as pb

    from s2r.controllers.models import RigidBodyModel

    movable = RigidBodyModel(robot.urdf).joint_names
    rb = RigidBodyModel(robot.urdf, joints=list(joints),
                        locked={j: float(robot.home.get(j, 0.0)) for j in movable if j not in joints})
    base_R = np.array(pb.getMatrixFromQuaternion(robot.base_orientation)).reshape(3, 3)
    return rb, base_R, np.asarray(robot.base_position, float)


def tcp_pose_function(robot, joints, meta: dict):
    """q (of `joints`) -> (TCP position (3), hand rotation matrix (3, 3)), world frame: the URDF
    forward kinematics of the metadata's ee_link (default: the robot description's), plus its
    tcp_offset (3 numbers in the link's frame; one number: along the link's z axis, as older exports
    wrote it; default: the description's), from the robot's base pose; the robot's other movable
    joints at its home posture. `robot`: a RobotDescription."""
    rb, base_R, base_p = _kinematics(robot, joints)
    fn = rb.link_pose_function(meta.get("ee_link", robot.ee_link))
    given = meta.get("tcp_offset", robot.tcp_offset)
    offset = np.array([0.0, 0.0, float(given)]) if np.ndim(given) == 0 else np.asarray(given, float).reshape(3)

    def pose(q):
        R, p = fn(np.asarray(q, float))
        R = base_R @ np.asarray(R, float)
        return base_R @ np.asarray(p, float).reshape(3) + base_p + R @ offset, R
    return pose


def tip_positions_function(robot, joints, meta: dict):
    """q (of `joints`) -> fingertip positions (k, 3), world frame, by the URDF forward kinematics of
    the metadata's `tip_links` (default: the robot description's), which must number its
    `tip_count`. ValueError (one line) for links the robot lacks or a count that differs."""
    links = list(meta.get("tip_links") or robot.tip_links)
    k = int(meta.get("tip_count") or 0)
    if len(links) != k:
        raise ValueError(f"the policy has {k} fingertip targets (tip_count) but the robot {robot.name!r} "
                         f"has {len(links)} tip_links {links}")
    rb, base_R, base_p = _kinematics(robot, joints)
    fns = [rb.link_pose_function(link) for link in links]

    def tips(q):
        q = np.asarray(q, float)
        return np.array([base_R @ np.asarray(fn(q)[1], float).reshape(3) + base_p for fn in fns])
    return tips


def reach_boxes(tips, lower, upper, samples: int = 2000, margin: float = 0.01, seed: int = 0) -> np.ndarray:
    """(k, 2, 3): per fingertip, the box its positions span over `samples` postures drawn within the
    joint limits (and the limits' corners of each joint alone), widened by `margin` (m): a target
    outside its box is out of the fingertip's reach."""
    rng = np.random.default_rng(seed)
    lower, upper = np.asarray(lower, float), np.asarray(upper, float)
    qs = rng.uniform(lower, upper, (samples, len(lower)))
    pts = np.array([tips(q) for q in qs])                     # (samples, k, 3)
    return np.stack([pts.min(axis=0) - margin, pts.max(axis=0) + margin], axis=1)


def _listed(meta: dict, key: str) -> list:
    """A list entry of the metadata ([] where absent); ValueError (one line) for anything else."""
    v = meta.get(key)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        from s2r.core.yamlio import excerpt
        raise ValueError(f"the policy's metadata {key} must be a list of names, got {excerpt(v)}")
    return list(v)


class PolicyInputs:
    """The policy's state input on a robot (ROS-free): the metadata's obs_keys built by
    learning.features from what the node sees -- the joint state, /goal_pose, forward kinematics
    made from the metadata, its position targets, and the episode (step, past actions, history)
    that `ObservationBuilder` keeps. Construction raises ValueError (one line) for obs_keys the
    node cannot build.

    robot: the config's RobotDescription; names: the config's joints (the order of q, qd and q_cmd);
    joints: the commanded joints."""

    def __init__(self, meta: dict, robot, names, joints, action: str):
        keys = [k for k in _listed(meta, "obs_keys") if k != "image"]
        self.from_metadata = bool(keys)
        names, joints = list(names), list(joints)
        observed = _listed(meta, "obs_joint_names") or joints
        missing = [j for j in observed + joints if j not in names]
        if missing:
            raise ValueError(f"the policy's joints {missing} are not in the config's joints {names}")
        self.idx = np.array([names.index(j) for j in joints])
        self.obs_idx = np.array([names.index(j) for j in observed])
        self.builder = ObservationBuilder(keys or ("joint_pos", "joint_vel"), meta, n_joints=len(observed),
                                          n_actions=len(joints), where="the policy's metadata")
        self.action = action
        available = {"joint_pos", "joint_vel", "action_joint_pos", "target"}
        if action in ("position", "position_delta"):
            available |= {"q_cmd", "setpoint", "setpoint_step"}
        self.tcp = None
        if self.builder.needs("tcp_pos") or self.builder.needs("tcp_rot"):
            try:
                self.tcp = tcp_pose_function(robot, joints, meta)
            except (ValueError, KeyError, TypeError, OSError) as e:
                why = (str(e).splitlines() or [type(e).__name__])[0]
                raise ValueError(f"cannot build the TCP's forward kinematics (robot {robot.name!r}, ee_link "
                                 f"{meta.get('ee_link')!r}): {why}") from None
            available |= {"tcp_pos", "tcp_rot"}
        self.tips = None
        self.tip_count = 0
        if self.builder.needs("tip_pos"):
            try:
                self.tips = tip_positions_function(robot, joints, meta)
            except (ValueError, KeyError, TypeError, OSError) as e:
                why = (str(e).splitlines() or [type(e).__name__])[0]
                raise ValueError(f"cannot build the fingertips' forward kinematics: {why}") from None
            self.tip_count = int(meta["tip_count"])
            available |= {"tip_pos"}
        self.builder.require(available, f"policy_node with {action} actions")
        if self.from_metadata:
            self.builder.check_policy(meta, "here")
        self.needs_goal = self.builder.needs("target")
        self.size = self.builder.size

    @property
    def step(self) -> int:
        return self.builder.step

    def reset(self) -> None:
        """A new episode (a new goal): step 0, no past actions."""
        self.builder.reset()

    def __call__(self, q, qd, goal=None, q_cmd=None, setpoint=None, setpoint_step=None) -> np.ndarray:
        """The input at this control step (advances the step). q, qd, q_cmd, setpoint,
        setpoint_step: config order (q_cmd or setpoint None: none yet, i.e. the measured position,
        at rest); goal: position (3), or fingertip targets (k, 3) for a hand policy, or None."""
        v = {"joint_pos": q[self.obs_idx], "joint_vel": qd[self.obs_idx], "action_joint_pos": q[self.idx]}
        if goal is not None:
            v["target"] = goal
        if self.action in ("position", "position_delta"):
            i = self.idx
            v["q_cmd"] = (q if q_cmd is None else q_cmd)[i]
            v["setpoint"] = (q if setpoint is None else setpoint)[i]
            v["setpoint_step"] = np.zeros(len(i)) if setpoint is None or setpoint_step is None else setpoint_step[i]
        if self.tcp is not None:
            pose = []
            qa = q[self.idx]

            def tcp(i):
                if not pose:
                    pose.extend(self.tcp(qa))
                return pose[i]
            v["tcp_pos"], v["tcp_rot"] = (lambda: tcp(0)), (lambda: tcp(1))
        if self.tips is not None:
            v["tip_pos"] = self.tips(q[self.idx])
        return self.builder.observe(ObsContext(v, "the node's inputs"))

    def record_action(self, a, q) -> None:
        """The action taken after the latest input: the module's output `a`, or, where it was
        refused (None), a hold (zeros; the measured position `q` for absolute position actions)."""
        if a is None:
            a = q[self.idx] if self.action == "position" else np.zeros(len(self.idx))
        self.builder.record_action(a)


class PolicyNode(Node):
    def __init__(self, name: str = "policy", **kw):
        super().__init__(name, **kw)
        declare_parameters(self, PolicyNodeParams)     # self.params: the validated parameters
        self._log_handler = bridge_python_logging(self)
        g = lambda k: getattr(self.params, k)   # noqa: E731
        from s2r.learning.deploy import PolicyLoadError, load_policy     # torch only for .pt / .pt2 files
        from s2r.core.config import ConfigError, load_config

        try:
            self.cfg = load_config(str(g("config")))
        except ConfigError as e:
            self.get_logger().error(f"config error: {e}")
            raise SystemExit(2)
        self.action = g("action")
        self.names = list(self.cfg.joint_names)
        path = str(g("policy"))
        try:    # 1 thread: a control loop, not a batch job: leave cores to others
            self.module, self.meta = load_policy(path, threads=1)
        except PolicyLoadError as e:
            refuse(self, "policy", str(e))
        joints = [j for j in g("joints") if j] or list(self.meta.get("joint_names") or self.names)
        unknown = [j for j in joints if j not in self.names]
        if unknown:
            refuse(self, "joints", f"{unknown} are not in {self.cfg.name}'s joints {self.names}")
        self.idx = np.array([self.names.index(j) for j in joints])
        self.use_image = bool(g("use_image"))
        if "inputs" in self.meta and ("image" in self.meta["inputs"]) != self.use_image:
            refuse(self, "use_image", f"{str(self.use_image).lower()}, but the policy's inputs are {self.meta['inputs']}")
        try:
            self.inputs = PolicyInputs(self.meta, self.cfg.robot_description(), self.names, joints, self.action)
        except ValueError as e:
            self.get_logger().error(f"cannot build the policy's inputs: {e}")
            raise SystemExit(2)
        self.goal = None
        self.needs_goal = self.inputs.needs_goal
        self.image_size = int(g("image_size"))
        self.rate_hz = float(g("rate_hz")) or float(self.meta.get("control_rate_hz") or 0) or self.cfg.control_rate_hz
        self.trigger = str(g("trigger"))
        # state trigger: a step on every state of a driver at about the policy's rate; on one
        # clearly faster (k times), on the first state stamped at (or within half a state interval
        # before) the next step's time on the driver's clock: every k-th
        self._period_ns = int(1e9 / self.rate_hz)
        self._next_step_ns = None
        self._last_stamp = None
        self._state_dt_ns = None
        self.spec = self.cfg.spec()

        self.state = None          # (stamp_ns, q, qd, rx monotonic)
        self.image = None          # (float32 (1, 3, H, W) array, rx monotonic)
        self._index = None
        lead = g("max_lead_rad")
        # the targets and the set-points the driver's safety layer makes of them, as in training
        self.setpoints = ActionSetpoints(PositionTargets(self.spec.lower, self.spec.upper, self.idx, lead),
                                         JointLimiter.for_robot(self.spec, self.cfg.safety))
        # ... corrected by what the driver's safety layer reports it sent (/<driver>/setpoints) for
        # each of our commands: the model continues from there (ActionSetpoints.correct)
        self._sent = deque(maxlen=SENT_KEPT)   # our recent commands: (label, q, targets, model set-point)
        self._reported = None                  # the newest report: (label, set-point, step), config order
        self._sp_index = None
        self.setpoint_corrections = 0
        self.setpoint_model_error = 0.0        # rad: the most a model set-point was off its report
        self.throttle = Throttle()
        self.infer_ms = LatencyStats(10_000)
        self.rate = RateMeter()
        self.waiting = 0
        self.refused = 0
        self.enabled = bool(g("enabled"))
        self.last_problem = ""

        self.pub_cmd = self.create_publisher(Float64MultiArray, f"/{g('driver')}/commands", COMMAND_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointState, "/joint_states", self._on_state, STATE_QOS)
        if self.action in ("position", "position_delta"):
            self.create_subscription(JointState, f"/{g('driver')}/setpoints", self._on_setpoints, STATE_QOS)
        if self.use_image:
            self.create_subscription(Image, str(g("image_topic")), self._on_image, IMAGE_QOS)
        self.goals_refused = 0
        self.goal_refusal = ""                  # why the last refused goal was refused
        self.reach = None
        if self.needs_goal and self.inputs.tip_count:     # a hand: fingertip targets, checked against their reach
            sel = self.idx
            self.reach = reach_boxes(self.inputs.tips, self.spec.lower[sel], self.spec.upper[sel])
            self.goal_topic = "/goal_tips"
            self.create_subscription(PoseArray, self.goal_topic, self._on_tip_goal, GOAL_QOS)
        elif self.needs_goal:
            self.goal_topic = "/goal_pose"
            self.create_subscription(PoseStamped, self.goal_topic, self._on_goal, GOAL_QOS)
        self.create_service(SetBool, "~/enable", self._srv_enable)
        self.create_timer(1.0 / self.rate_hz, self._on_timer)
        self.create_timer(float(g("diagnostics_period_s")), self._publish_diagnostics)
        self.get_logger().info(f"policy {path} on {len(self.idx)} joints, {self.action} actions at {self.rate_hz:g} Hz"
                               + (f", images from {g('image_topic')}" if self.use_image else ", no images"))

    def _srv_enable(self, req, resp):
        self.set_enabled(bool(req.data))
        resp.success, resp.message = True, "policy enabled" if self.enabled else "policy disabled: nothing sent"
        self.get_logger().info(resp.message)
        return resp

    def set_enabled(self, on: bool) -> None:
        """Start or stop the policy; stopping forgets the goal and the episode (step, past
        actions, history) and the position targets, so the next episode starts afresh."""
        if not on:
            self.goal = None
            self.inputs.reset()
            self._reset_setpoints()
        self.enabled = on

    def _on_goal(self, msg: PoseStamped):
        p = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
        if not np.all(np.isfinite(p)):
            self._problem("goal_nonfinite", f"goal {p} is not finite; ignored")
            return
        self._set_goal(p)

    def _on_tip_goal(self, msg: PoseArray):
        k = self.inputs.tip_count
        p = np.array([[m.position.x, m.position.y, m.position.z] for m in msg.poses], float).reshape(-1, 3)
        why = None
        if len(p) != k:
            why = f"has {len(p)} fingertip targets, the policy takes {k}"
        elif not np.all(np.isfinite(p)):
            why = "is not finite"
        else:
            out = [i for i in range(k) if np.any(p[i] < self.reach[i, 0]) or np.any(p[i] > self.reach[i, 1])]
            if out:
                i = out[0]
                why = (f"puts fingertip {i} at {np.round(p[i], 3).tolist()}, outside its reach "
                       f"{np.round(self.reach[i, 0], 3).tolist()}..{np.round(self.reach[i, 1], 3).tolist()} m")
        if why is not None:                     # refused: no goal, nothing sent, the driver holds
            self.goals_refused += 1
            self.goal = None
            self._reset_setpoints()
            self.goal_refusal = f"goal on {self.goal_topic} {why}; refused, holding"
            self._problem("goal_refused", self.goal_refusal)
            return
        self._set_goal(p)

    def _set_goal(self, p: np.ndarray):
        if not self.enabled:
            return                              # a goal while disabled is not an episode
        if self.goal is None or np.max(np.linalg.norm(np.reshape(p - self.goal, (-1, 3)), axis=1)) > NEW_GOAL_M:
            self.inputs.reset()                 # a new episode: step 0, no past actions
        self.goal = p

    def _problem(self, key: str, msg: str):
        self.last_problem = msg
        n = self.throttle(key)
        if n is not None:
            self.get_logger().warning(msg + (f" ({n} times)" if n > 1 else ""))

    def _config_order(self, cache: str, names: tuple):
        """Where the config's joints are in a message naming `names` (kept in attribute `cache`
        while the names stay the same); None if some are missing."""
        known = getattr(self, cache)
        if known is None or known[0] != names:
            try:
                known = (names, np.array([names.index(j) for j in self.names]))
            except ValueError:
                return None
            setattr(self, cache, known)
        return known[1]

    def _on_state(self, msg: JointState):
        names = tuple(msg.name)
        i = self._config_order("_index", names)
        if i is None:
            self._problem("state_names", f"/joint_states lacks some of {self.names}")
            return
        q = np.asarray(msg.position, float)[i]
        qd = np.asarray(msg.velocity, float)[i] if len(msg.velocity) == len(names) else np.zeros(len(i))
        self.state = (stamp_ns(msg.header.stamp), q, qd, time.monotonic())
        if self.trigger == "state":
            self._on_state_step(self.state[0])

    def _on_setpoints(self, msg: JointState):
        """driver_node's report of the set-point its safety layer sent for a command (header
        stamp: the command's label), kept for the next step."""
        names = tuple(msg.name)
        i = self._config_order("_sp_index", names)
        if i is None:
            self._problem("setpoint_names", f"set-points reported for other joints than {self.names}")
            return
        if len(msg.position) != len(names) or len(msg.velocity) != len(names):
            self._problem("setpoint_shape", "a set-point report without a position and a speed per joint")
            return
        ref = np.asarray(msg.position, float)[i]
        step = np.asarray(msg.velocity, float)[i] * self.spec.period
        if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(step))):
            self._problem("setpoint_nonfinite", "a set-point report with NaN or inf; the model goes on without it")
            return
        self._reported = (stamp_ns(msg.header.stamp), ref, step)

    def _apply_reported(self) -> None:
        """The model of the safety layer's limiter continues from its newest report, if that
        answers one of our recent commands."""
        rep, self._reported = self._reported, None
        if rep is None:
            return
        label, ref, step = rep
        for n, (lab, _, _, model) in enumerate(self._sent):
            if lab == label:
                sent = list(self._sent)
                self.setpoint_model_error = max(self.setpoint_model_error, float(np.max(np.abs(model - ref))))
                self.setpoints.correct(ref, step, [(q, c) for _, q, c, _ in sent[n + 1:]])
                self.setpoint_corrections += 1
                for _ in range(n + 1):
                    self._sent.popleft()
                return

    def _reset_setpoints(self) -> None:
        self.setpoints.reset()
        self._sent.clear()
        self._reported = None

    def _on_state_step(self, key: int):
        """trigger state: a step when the state stamped `key` is due (see __init__)."""
        last, self._last_stamp = self._last_stamp, key
        if last is not None and key > last:        # the driver's state interval, smoothed
            dt = self._state_dt_ns
            self._state_dt_ns = key - last if dt is None else dt + 0.1 * (key - last - dt)
        due = self._next_step_ns
        faster = self._state_dt_ns is not None and self._state_dt_ns < 0.75 * self._period_ns   # else: every state
        if faster and due is not None and last is not None and key >= last and \
                key < due - 0.5 * self._state_dt_ns:
            return
        # on schedule: the next step a period after this one's due time; late by more than a
        # period, or a clock that went back (a restarted driver): a period from this state
        self._next_step_ns = (due if due is not None and abs(key - due) < self._period_ns else key) + self._period_ns
        self._tick()

    def _on_timer(self):
        """trigger timer: a step. trigger state: a step only while no recent state comes (the step
        then holds and counts the wait), as the states drive the steps otherwise."""
        if self.trigger == "timer" or self.state is None or \
                time.monotonic() - self.state[3] > self.params.max_state_age_s:
            self._tick()

    def _on_image(self, msg: Image):
        if msg.encoding not in ("rgb8", "bgr8") or msg.step != 3 * msg.width:
            self._problem("image_encoding", f"image encoding {msg.encoding!r} (step {msg.step}) not supported; need rgb8")
            return
        a = np.frombuffer(msg.data, np.uint8)
        if a.size != msg.height * msg.width * 3:
            self._problem("image_size", f"image data has {a.size} bytes, expected {msg.height * msg.width * 3}")
            return
        a = a.reshape(msg.height, msg.width, 3)
        if msg.encoding == "bgr8":
            a = a[:, :, ::-1]
        if self.image_size and (msg.height, msg.width) != (self.image_size, self.image_size):
            import cv2
            a = cv2.resize(a, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        t = np.ascontiguousarray(a.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)
        self.image = (t, time.monotonic())

    def _tick(self):
        now = time.monotonic()
        if not self.enabled:
            return
        if self.state is None or now - self.state[3] > self.params.max_state_age_s:
            self._reset_setpoints()                # not sending: the driver holds; start again from there
            self.waiting += 1
            self._problem("no_state", "waiting for a recent /joint_states")
            return
        if self.use_image and (self.image is None or
                               now - self.image[1] > self.params.max_image_age_s):
            self._reset_setpoints()
            self.waiting += 1
            self._problem("no_image", "waiting for a recent image")
            return
        if self.needs_goal and self.goal is None:
            self._reset_setpoints()
            self.waiting += 1
            self._problem("no_goal", f"waiting for a goal on {self.goal_topic}")
            return
        key, q, qd, _ = self.state
        sp = self.setpoints
        self._apply_reported()
        x = self.inputs(q, qd, self.goal, sp.q_cmd, sp.setpoint, sp.setpoint_step)
        s = x.astype(np.float32)[None]
        t0 = time.perf_counter()
        try:    # learning.deploy: numpy in, numpy out, whatever the format
            out = self.module(self.image[0], s) if self.use_image else self.module(s)
            a = np.asarray(out, dtype=float).reshape(-1)
        except (RuntimeError, ValueError, TypeError, AttributeError) as e:
            a = None
            self._problem("policy_error", f"policy call failed: {e}")
        self.infer_ms.add(time.perf_counter() - t0)
        if a is not None and a.shape != (len(self.idx),):
            self._problem("action_shape", f"policy returned {a.size} values, expected {len(self.idx)}")
            a = None
        if a is not None and not np.all(np.isfinite(a)):
            self._problem("action_nonfinite", "policy returned NaN or inf; holding")
            a = None
        if self.action in ("position", "position_delta"):
            sp.step(q, a, self.action == "position_delta")
            cmd = sp.q_cmd.copy()       # the targets: the driver's safety layer makes sp.setpoint of them
        else:
            cmd = np.zeros(len(self.names))
            if a is not None:
                cmd[self.idx] = a
        if a is None:
            self.refused += 1
        self.inputs.record_action(a, q)
        if self.action in ("position", "position_delta"):
            self._sent.append((key, q, cmd, sp.setpoint.copy()))
        self.pub_cmd.publish(command_msg(cmd, key))
        self.rate.tick(now)

    def _publish_diagnostics(self):
        p50, p99 = self.infer_ms.percentiles_ms(50, 99)
        v = {"rate_hz": self.rate.rate(), "target_rate_hz": self.rate_hz, "commands": self.rate.total,
             "waiting": self.waiting, "refused_actions": self.refused, "inference_p50_ms": p50,
             "inference_p99_ms": p99, "episode_step": self.inputs.step, "goals_refused": self.goals_refused,
             "last_goal_refusal": self.goal_refusal, "setpoint_corrections": self.setpoint_corrections,
             "setpoint_model_error_mrad": 1e3 * self.setpoint_model_error,
             "last_problem": self.last_problem}
        if self.rate.total == 0:
            level, msg = WARN, "no commands yet: " + (self.last_problem or "starting")
        elif self.refused and self.last_problem.startswith("policy"):
            level, msg = ERROR, self.last_problem
        else:
            level, msg = OK, f"{self.rate.rate():.1f} Hz"
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [diag_status(f"{self.get_name()}: policy", level, msg, self.cfg.name, v)]
        self.pub_diag.publish(arr)


def main(args=None) -> int:
    return spin_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
