"""The ROS-free pieces of the ROS layer: trajectory interpolation, domain claiming, command labels."""
import os
import subprocess
import sys

import numpy as np
import pytest

from s2r.core.ros_env import claim_domain_id, isolation_vars, release_domain_id
from s2r_ros.trajectory import JointTrajectoryPlan, TrajectoryError

ORDER = ["a", "b", "c"]
Q0 = np.array([0.0, 1.0, 2.0])


def test_linear_trajectory_from_the_measured_position_holding_unnamed_joints():
    plan = JointTrajectoryPlan.build(ORDER, ["c", "a"], [1.0, 2.0], [[3.0, 1.0], [4.0, 2.0]], [[], []], Q0, start=10.0)
    np.testing.assert_allclose(plan.sample(9.0), Q0)                     # before the start: where it was
    np.testing.assert_allclose(plan.sample(10.5), [0.5, 1.0, 2.5])       # from q0 toward the first point
    np.testing.assert_allclose(plan.sample(11.5), [1.5, 1.0, 3.5])
    np.testing.assert_allclose(plan.sample(99.0), [2.0, 1.0, 4.0])       # after the end: the last point
    assert plan.duration == 2.0 and plan.done(12.0) and not plan.done(11.9)


def test_cubic_hermite_segments_with_velocities():
    plan = JointTrajectoryPlan.build(ORDER, ["a"], [0.0, 1.0], [[0.0], [1.0]], [[0.0], [0.0]], Q0, start=0.0)
    # zero end velocities: the smoothstep 3 s^2 - 2 s^3
    for s in (0.25, 0.5, 0.75):
        assert plan.sample(s)[0] == pytest.approx(3 * s**2 - 2 * s**3)
    assert plan.sample(0.5)[1:].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("names, times, pos, vel, why", [
    (["a"], [1.0, 1.0], [[0], [1]], None, "increase strictly"),
    (["a"], [2.0, 1.0], [[0], [1]], None, "increase strictly"),
    (["a"], [-1.0], [[0]], None, ">= 0"),
    (["z"], [1.0], [[0]], None, "unknown joint"),
    (["a", "a"], [1.0], [[0, 0]], None, "duplicate"),
    (["a", "b"], [1.0], [[0]], None, "2 positions"),
    (["a"], [1.0], [[float("nan")]], None, "NaN"),
    (["a"], [], [], None, "no points"),
    ([], [1.0], [[]], None, "no joint names"),
    (["a"], [1.0, 2.0], [[0], [1]], [[0], [1, 2]], "velocities"),
])
def test_bad_trajectories_are_refused_with_a_reason(names, times, pos, vel, why):
    with pytest.raises(TrajectoryError, match=why):
        JointTrajectoryPlan.build(ORDER, names, times, pos, vel, Q0, start=0.0)


def test_domain_ids_are_claimed_exclusively_across_processes():
    a, b = claim_domain_id(), claim_domain_id()
    try:
        assert a != b and 1 <= a <= 100 and 1 <= b <= 100
        code = ("from s2r.core.ros_env import claim_domain_id; import sys; "
                f"sys.exit(0 if claim_domain_id({a}) != {a} else 1)")
        assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
    finally:
        release_domain_id(a)
        release_domain_id(b)
    env = isolation_vars(a)
    assert env["ROS_DOMAIN_ID"] == str(a) and env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"


def test_commands_name_the_state_they_answer():
    from std_msgs.msg import Float64MultiArray

    from s2r_ros.common import command_msg, command_source_stamp

    m = command_msg([1.0, 2.0, 3.0], 1_700_000_000_123_456_789)
    assert list(m.data) == [1.0, 2.0, 3.0] and m.layout.dim[0].size == 3 and m.layout.dim[0].stride == 3
    assert command_source_stamp(m) == 1_700_000_000_123_456_789
    assert command_source_stamp(command_msg([1.0])) is None
    assert command_source_stamp(Float64MultiArray(data=[1.0])) is None


def test_freeze_heap_takes_the_startup_heap_out_of_full_collections():
    """Nodes freeze their start-up heap so that a full collection does not stall a callback."""
    import gc

    from s2r_ros.common import freeze_heap
    keep = [[i] for i in range(20_000)]       # long-lived start-up objects (tracked containers)
    gc.unfreeze()
    try:
        freeze_heap()
        assert gc.get_freeze_count() >= len(keep)
        assert not any(obj is keep for obj in gc.get_objects(generation=2))
    finally:
        gc.unfreeze()


def test_position_delta_actions_move_the_commanded_targets_as_in_training():
    """position_delta integrates into the commanded targets (sim/tasks/base.py), not into the
    measured position that lags them; targets stay within the limits and near the robot."""
    from s2r.core.joint_limiter import PositionTargets
    lower, upper = np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 0.5])
    idx = np.array([0, 2])                               # joint 1 is not the policy's
    t = PositionTargets(lower, upper, idx, max_lead=0.2)
    q = np.array([0.1, 0.3, 0.4])
    cmd = None
    for _ in range(5):                                   # the robot lags: measured q never moves
        cmd = t.apply(q, np.array([0.01, 0.02]), delta=True)
    assert np.allclose(cmd, [0.15, 0.3, 0.5])            # 5 steps of 0.01; joint 2 at its upper limit
    for _ in range(50):
        cmd = t.apply(q, np.array([0.01, 0.0]), delta=True)
    assert np.isclose(cmd[0], q[0] + 0.2)                # never more than max_lead ahead of the robot
    assert np.allclose(t.hold(q), q)                     # a hold re-anchors at the measured position
    assert np.allclose(t.apply(q, np.array([0.01, 0.0]), delta=True), q + [0.01, 0.0, 0.0])
    t.reset()
    q2 = np.array([-0.5, 0.0, 0.0])
    assert np.allclose(t.apply(q2, np.array([0.3, -0.1]), delta=False), [-0.3, 0.0, -0.1])  # absolute, lead-bounded


def test_planned_velocities_integrate_into_targets_within_per_joint_leads():
    """mpc_node's position mode: the plan restarts from the targets pulled within each joint's own
    lead of the measured position (`lead`), and its velocity steps integrate there, within the
    joint limits."""
    from s2r.core.joint_limiter import PositionTargets
    lower, upper = np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 0.3])
    idx = np.array([0, 2])
    t = PositionTargets(lower, upper, idx, max_lead=np.array([0.05, 0.5]))
    q = np.array([0.0, 0.7, 0.0])
    assert np.allclose(t.lead(q), [0.0, 0.0])            # no targets yet: start at the robot
    for _ in range(20):                                  # the robot never moves
        x = t.lead(q)
        cmd = t.apply(q, np.array([0.02, 0.02]))
    assert np.allclose(t.lead(q), [0.05, 0.3])           # joint 0 by its lead, joint 2 by its limit
    assert np.allclose(cmd, [0.05, 0.7, 0.3]) and np.allclose(x, [0.05, 0.3])
    q_moved = np.array([0.5, 0.7, 0.0])
    assert np.allclose(t.lead(q_moved), [0.45, 0.3])     # a robot pushed ahead drags the targets along
    with pytest.raises(ValueError):
        PositionTargets(lower, upper, idx, max_lead=np.array([0.1, 0.2, 0.3]))


def test_the_node_sends_and_observes_the_set_points_the_task_trained_with():
    """policy_node's pipeline (its targets, its copy of the safety layer's joint limiter, its inputs)
    reproduces the sim task's step by step for the same actions: the targets it sends become, in
    the driver's safety layer, the set-points the task sent in training, and its set-point inputs
    are those the policy saw in training."""
    import gymnasium as gym

    import s2r.sim.tasks  # noqa: F401  (registers the tasks)
    from s2r.learning.features import compute_features, sim_context
    from s2r.core.joint_limiter import MAX_LEAD, ActionSetpoints, JointLimiter, PositionTargets
    from s2r_ros.policy_node import PolicyInputs

    env = gym.make("s2r/ArmReach-v0").unwrapped
    try:
        cfg, spec = env.cfg, env.cfg.spec()
        joints = [env.joint_names[i] for i in env.act_idx]       # the arm; the config has the fingers too
        idx = np.array([spec.joint_names.index(j) for j in joints])
        rest = np.setdiff1d(np.arange(spec.n_joints), idx)
        keys = ["setpoint_offset", "setpoint_step", "cmd_offset"]
        node = ActionSetpoints(PositionTargets(spec.lower, spec.upper, idx, MAX_LEAD),
                               JointLimiter.for_robot(spec, cfg.safety))
        driver = JointLimiter.for_robot(spec, cfg.safety)         # the driver's safety layer's
        inputs = PolicyInputs({"obs_keys": keys, "joint_names": joints}, cfg.robot_description(), spec.joint_names, joints,
                              "position_delta")
        obs, _ = env.reset(seed=3)
        rng = np.random.default_rng(0)
        limited = 0
        for t in range(40):
            q, qd = np.zeros(spec.n_joints), np.zeros(spec.n_joints)     # /joint_states, config order
            q[idx], qd[idx], q[rest] = obs["joint_pos"][env.act_idx], obs["joint_vel"][env.act_idx], 0.02
            x = inputs(q, qd, obs["target"], node.q_cmd, node.setpoint, node.setpoint_step)
            np.testing.assert_allclose(x, compute_features(keys, sim_context(obs, env), {}), atol=1e-12)
            a = rng.uniform(-1, 1, len(joints))
            node.step(q, a * env.action_scale)
            sent = driver.enforce(q, node.q_cmd)                          # what the robot is sent
            inputs.record_action(a, q)
            obs, *_ = env.step(a)
            np.testing.assert_allclose(sent[idx], env.setpoints.setpoint[env.act_idx], atol=1e-12)
            np.testing.assert_allclose(sent, node.setpoint, atol=1e-12)
            assert np.allclose(sent[rest], 0.02)                          # the fingers hold
            limited += not np.allclose(sent[idx], node.q_cmd[idx])
        assert limited > 10           # the limiter shaped most of these set-points, the same way
    finally:
        env.close()


def test_latency_stats_percentiles_over_a_sliding_window():
    """Histogram percentiles agree with exact ones to the bin (1 %), over the last maxlen samples."""
    from s2r_ros.common import LatencyStats
    rng = np.random.default_rng(0)
    x = rng.lognormal(np.log(1e-3), 0.6, 5000)          # ~1 ms latencies
    s = LatencyStats(maxlen=5000)
    for v in x:
        s.add(float(v))
    p50, p99 = s.percentiles_ms(50, 99)
    exact = np.percentile(x, [50, 99], method="inverted_cdf") * 1e3
    assert np.allclose([p50, p99], exact, rtol=0.01) and len(s) == 5000
    for _ in range(5000):                                # the window slides: only 7 ms samples remain
        s.add(7e-3)
    assert len(s) == 5000 and np.allclose(s.percentiles_ms(1, 50, 100), 7.0, rtol=0.01)
    s.add(float("nan"))
    s.add(-1.0)                                          # clock weirdness lands in the lowest bin
    assert s.percentiles_ms(0.01)[0] < 0.01
    s.clear()
    assert len(s) == 0 and np.isnan(s.percentiles_ms(50)[0])


def test_late_commands_are_answers_after_the_next_state_not_states_left_unanswered():
    """driver_node's late_commands: a state's first answer that came after a newer state was out.
    A controller that stops (disabled between goals) or answers only some states on time is not
    late; a repeated answer is not counted twice; an unknown stamp has no latency."""
    from s2r_ros.driver_diagnostics import StateAnswers
    a = StateAnswers()
    a.published(1, 0.00)
    assert a.answered(1, 0.004) == pytest.approx(0.004)          # in its period
    a.published(2, 0.01)
    a.published(3, 0.02)                                         # state 2 never answered: not late
    assert a.answered(2, 0.021) == pytest.approx(0.011) and a.late == 1   # answered after state 3 was out
    assert a.answered(2, 0.022) is not None and a.late == 1      # its second answer
    assert a.answered(3, 0.023) is not None and a.late == 1
    for k in range(4, 40):                                       # the controller stopped
        a.published(k, k * 0.01)
    assert a.late == 1 and a.answered(10_000, 0.5) is None
    for k in range(40, 40 + 2 * StateAnswers.KEEP):              # memory stays bounded
        a.published(k, k * 0.01)
        a.answered(k, k * 0.01 + 0.001)
    assert a.late == 1 and len(a.pub_times) <= StateAnswers.KEEP and len(a._answered) <= StateAnswers.KEEP


def test_fast_subscription_has_its_own_executor_and_follows_the_owners_remapping():
    """The control path's subscription: resolved (namespace, ~, remapping) by the owning node,
    served by a hidden node without parameter services, in its own thread; messages arrive."""
    import threading

    import rclpy
    from std_msgs.msg import Float64MultiArray

    from s2r_ros.common import FastSubscription
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    got, arrived = [], threading.Event()
    try:
        owner = rclpy.create_node("drv", namespace="/arm", context=ctx,
                                  cli_args=["--ros-args", "-r", "~/commands:=/arm/safe_commands"])
        fast = FastSubscription(owner, "~/commands", Float64MultiArray,
                                lambda m: (got.append((list(m.data), threading.current_thread().name)), arrived.set()),
                                10, "commands")
        assert fast.topic == "/arm/safe_commands" and fast.node.get_name() == "_drv_commands"
        own = [sv.srv_name for sv in owner.services]
        assert any(n.endswith("/get_parameters") for n in own)          # the owner keeps its services,
        assert not any("parameter" in sv.srv_name for sv in fast.node.services)  # the fast path has none
        pub = owner.create_publisher(Float64MultiArray, "/arm/safe_commands", 10)
        for _ in range(100):                         # until discovery connects them
            pub.publish(Float64MultiArray(data=[1.0, 2.0]))
            if arrived.wait(0.05):
                break
        assert got and got[0] == ([1.0, 2.0], "fast-commands")
        fast.close()
        owner.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


def test_a_failing_fast_path_callback_ends_the_node_instead_of_leaving_it_deaf():
    import time

    import rclpy
    from std_msgs.msg import Float64MultiArray

    from s2r_ros.common import FastSubscription
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        owner = rclpy.create_node("drv2", context=ctx)
        FastSubscription(owner, "~/commands", Float64MultiArray, lambda m: 1 / 0, 10, "commands")
        pub = owner.create_publisher(Float64MultiArray, "/drv2/commands", 10)
        deadline = time.monotonic() + 10
        while ctx.ok() and time.monotonic() < deadline:
            pub.publish(Float64MultiArray(data=[1.0]))
            time.sleep(0.05)
        assert not ctx.ok() and owner.exit_code == 1      # spin_node then exits with 1
    finally:
        rclpy.try_shutdown(context=ctx)


def test_enable_realtime_switches_every_thread_or_changes_nothing():
    """SCHED_FIFO for the threads that exist and, inherited, for those started later -- or, where
    the process may not (no CAP_SYS_NICE), a reason and normal scheduling everywhere."""
    import subprocess
    import sys
    code = """
import os, threading
from s2r_ros.common import enable_realtime
before = threading.Thread(target=lambda: ev.wait()); ev = threading.Event(); before.start()
why = enable_realtime(20)
pol = []
after = threading.Thread(target=lambda: pol.append(os.sched_getscheduler(0))); after.start(); after.join()
print(repr(why), os.sched_getscheduler(0), os.sched_getscheduler(before.native_id), pol[0], enable_realtime(0) != '')
ev.set()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    why, main, before, after, refuses_zero = out.stdout.split()
    import os
    expected = os.SCHED_FIFO if why == "''" else os.SCHED_OTHER
    assert int(main) == int(before) == int(after) == expected and refuses_zero == "True"


@pytest.mark.parametrize("config", ["panda_sim", "iiwa_sim"])
def test_policy_node_forward_kinematics_of_the_tcp_and_the_held_peg_match_the_simulator(config):
    """The policy node builds target_minus_tcp and target_minus_peg_bottom from the joint angles
    alone (URDF forward kinematics + the metadata's offsets): the same points the ArmInsert policy
    was trained on (learning.insert_agent.peg_bottom_fk of the simulator's TCP pose), on any arm."""
    import s2r.sim.tasks
    from s2r.learning.insert_agent import ArmInsertAgent, peg_bottom_fk
    from s2r.core.config import load_config
    from s2r_ros.policy_node import PolicyInputs, tcp_pose_function
    agent = ArmInsertAgent(n_conditions=1, T=5, config=config)
    meta = agent.metadata()
    agent.close()
    assert meta["hardware_config"] == config
    cfg = load_config(config)
    pose = tcp_pose_function(cfg.robot_description(), meta["joint_names"], meta)
    inputs = PolicyInputs(meta | {"obs_keys": ["target_minus_tcp", "target_minus_peg_bottom"]}, cfg.robot_description(),
                          cfg.joint_names, meta["joint_names"], "position_delta")
    env = s2r.sim.tasks.make("ArmInsert", config=config).unwrapped
    arm = [list(cfg.joint_names).index(j) for j in meta["joint_names"]]
    try:
        for seed in (0, 1, 2):
            obs, _ = env.reset(seed=seed)
            q = obs["joint_pos"][env.act_idx]
            tcp, R = pose(q)
            np.testing.assert_allclose(tcp, obs["tcp_pos"], atol=1e-4)
            # the hand's z axis: from the TCP towards the peg's bottom
            np.testing.assert_allclose(R[:, 2], (peg_bottom_fk(obs) - obs["tcp_pos"]) / meta["peg_bottom_offset"],
                                       atol=1e-3)
            q_cfg = np.full(len(cfg.joint_names), 0.04)       # a gripper's joints anywhere
            q_cfg[arm] = q
            x = inputs(q_cfg, np.zeros(len(q_cfg)), goal=obs["target"])
            np.testing.assert_allclose(x[:3], obs["target"] - obs["tcp_pos"], atol=1e-4)
            np.testing.assert_allclose(x[3:], obs["target"] - peg_bottom_fk(obs), atol=1e-4)
            assert np.linalg.norm(x[3:] - x[:3]) == pytest.approx(meta["peg_bottom_offset"])
    finally:
        env.close()


SIGNAL_NODE = r"""
import os, signal, sys
from rclpy.node import Node
from s2r_ros.common import spin_node

when, sig = sys.argv[1], getattr(signal, sys.argv[2])

class N(Node):
    def __init__(self):
        super().__init__("signal_probe")
        self.pub = self.create_publisher(__import__("std_msgs.msg").msg.String, "chatter", 10)
        if when == "starting":
            os.kill(os.getpid(), sig)             # lands while the node is still being built
        self.ticks = 0
        self.create_timer(0.01, self.tick)

    def tick(self):
        self.pub.publish(__import__("std_msgs.msg").msg.String(data="x"))   # rcl calls in flight
        self.ticks += 1
        if self.ticks == 5:
            os.kill(os.getpid(), sig)             # lands while the node spins
            os.kill(os.getpid(), sig)             # ... twice (Ctrl-C pressed again)

    def close(self):
        os.kill(os.getpid(), sig)                 # a signal while closing does not cut it short
        print("closed", self.ticks, flush=True)

code = spin_node(N, ["x"])
print("exit", code, flush=True)
"""


@pytest.mark.parametrize("when", ["starting", "spinning"])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_at_any_stage_ends_the_node_cleanly_in_the_main_thread(when, sig, tmp_path):
    """spin_node handles SIGINT and SIGTERM itself (not rclpy's thread, which shut the context down
    under a running publish and crashed a node at Ctrl-C): building is interrupted, spinning stops
    within a poll period, and closing always completes."""
    domain = claim_domain_id()
    try:
        r = subprocess.run([sys.executable, "-c", SIGNAL_NODE, when, sig], capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, **isolation_vars(domain)))
    finally:
        release_domain_id(domain)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stdout.split()
    assert lines[-2:] == ["exit", "0"]
    if when == "spinning":
        assert "closed" in r.stdout and int(lines[lines.index("closed") + 1]) >= 5
    else:
        assert "closed" not in r.stdout     # interrupted before it existed: nothing to close


def test_the_node_builds_a_hand_policys_inputs_as_the_hand_task_does():
    """A hand policy's input on the robot (fingertips by the URDF's forward kinematics of the
    description's tip_links, the targets, the joint state) equals the HandReach task's, posture by
    posture; the fingertips' reach boxes hold every target the task draws and refuse one far away;
    a policy whose tip count the robot does not have is refused in one line."""
    import gymnasium as gym

    import s2r.sim.tasks  # noqa: F401  (registers the tasks)
    from s2r.learning.features import compute_features, sim_context
    from s2r_ros.policy_node import PolicyInputs, reach_boxes

    env = gym.make("s2r/HandReach-v0").unwrapped
    try:
        cfg, spec = env.cfg, env.cfg.spec()
        joints = list(spec.joint_names)
        k = len(env.tip_links)
        keys = ["joint_pos", "joint_vel", "target_minus_tips", "cmd_offset"]
        meta = {"obs_keys": keys, "joint_names": joints, "tip_count": k, "tip_links": list(env.tip_links)}
        inputs = PolicyInputs(meta, cfg.robot_description(), spec.joint_names, joints, "position_delta")
        assert inputs.tip_count == k == 4 and inputs.size == 2 * 16 + 3 * k + 16
        boxes = reach_boxes(inputs.tips, spec.lower, spec.upper, samples=500)
        rng = np.random.default_rng(0)
        for seed in range(3):
            obs, _ = env.reset(seed=seed)
            assert np.all((obs["target"] >= boxes[:, 0]) & (obs["target"] <= boxes[:, 1]))
            for _ in range(5):
                q, qd = obs["joint_pos"], obs["joint_vel"]
                x = inputs(q, qd, obs["target"], env.q_cmd, env.setpoints.setpoint, env.setpoints.setpoint_step)
                want = compute_features(keys, sim_context(obs, env), {"tip_count": k})
                np.testing.assert_allclose(x, want, atol=1e-6)        # pybullet vs the URDF FK: 1e-8 m
                inputs.record_action(np.zeros(16), q)
                obs, *_ = env.step(rng.uniform(-1, 1, 16))
        far = obs["target"].copy()
        far[2] += 0.5
        assert np.any(far[2] > boxes[2, 1])                      # half a metre off: out of that tip's reach
        with pytest.raises(ValueError, match=r"tip_count\) but the robot 'hand16' has 4 tip_links"):
            PolicyInputs(meta | {"tip_count": 5, "tip_links": []}, cfg.robot_description(), spec.joint_names,
                         joints, "position_delta")
    finally:
        env.close()


def test_state_trigger_steps_on_the_drivers_states_at_the_policys_rate():
    """policy_node's `trigger: state`: one step per state of a driver at the policy's rate (clock
    jitter included), every k-th state of a driver k times faster, and at once after a driver
    restart whose clock starts again from earlier stamps."""
    from types import SimpleNamespace

    from s2r_ros.policy_node import PolicyNode

    def steps(rate_hz, stamps):
        period = int(1e9 / rate_hz)
        n = SimpleNamespace(_period_ns=period, _next_step_ns=None, _last_stamp=None, _state_dt_ns=None, out=[])
        for k in stamps:
            n._tick = lambda k=k: n.out.append(int(k))
            PolicyNode._on_state_step(n, int(k))
        return n.out

    rng = np.random.default_rng(0)
    stamps = 10**9 + (np.arange(600) * 10e6 + rng.normal(0, 1e6, 600)).astype(np.int64)   # 100 Hz, 1 ms jitter
    assert steps(100.0, stamps) == [int(k) for k in stamps]
    drifting = 10**9 + np.cumsum(rng.normal(9.9e6, 1e6, 600)).astype(np.int64)     # a clock 1 % fast
    assert steps(100.0, drifting) == [int(k) for k in drifting]
    for rate, every in ((50.0, 2), (20.0, 5)):
        got = steps(rate, stamps)
        assert abs(len(got) - len(stamps) / every) <= 2
        gaps = np.diff(got) / 1e6
        assert abs(gaps.mean() - 1e3 / rate) < 0.5 and gaps.min() > 1e3 / rate - 10 - 5
    restarted = np.concatenate([stamps[:100], stamps[:100] - 5 * 10**8])
    got = steps(100.0, restarted)
    assert len(got) == 200
