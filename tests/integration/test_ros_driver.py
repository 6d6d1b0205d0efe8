"""driver_node as its own process, driven from a probe node over DDS: lifecycle transitions,
/joint_states, commands, trajectories, services, bad input, driver faults and recovery."""
import math
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ros_harness import dump_logs, ros, wait_until  # noqa: F401
from s2r.core.config import load_config
from s2r_ros.common import command_msg, stamp_ns

pytestmark = pytest.mark.slow
CFG = load_config("panda_sim")
NAMES = list(CFG.joint_names)
DIAG = "driver: driver"


def lifecycle_state(probe) -> str:
    return probe.call(GetState, "/driver/get_state").current_state.label


def change(probe, transition_id) -> bool:
    req = ChangeState.Request()
    req.transition.id = transition_id
    return probe.call(ChangeState, "/driver/change_state", req, idempotent=False).success


def q_now(probe) -> np.ndarray:
    m = probe.latest("/joint_states")
    return np.array([m.position[list(m.name).index(n)] for n in NAMES])


def states_in(probe, seconds: float) -> int:
    n0 = probe.counts["/joint_states"]
    time.sleep(seconds)
    return probe.counts["/joint_states"] - n0


def traj(names, times, positions) -> JointTrajectory:
    msg = JointTrajectory()
    msg.joint_names = names
    for t, p in zip(times, positions):
        pt = JointTrajectoryPoint()
        pt.positions = [float(v) for v in p]
        pt.time_from_start.sec, pt.time_from_start.nanosec = int(t), int(round((t % 1) * 1e9))
        msg.points.append(pt)
    return msg


def test_lifecycle_transitions_topics_and_services(ros):
    domain, probe = ros
    probe.subscribe("/joint_states", JointState)
    probe.subscribe("/diagnostics", DiagnosticArray)
    domain.start("driver_node", "driver", config="panda_sim", hardware="sim")
    try:
        assert lifecycle_state(probe) == "unconfigured"
        assert change(probe, Transition.TRANSITION_CONFIGURE)
        assert lifecycle_state(probe) == "inactive"
        assert states_in(probe, 0.5) == 0                     # inactive: nothing published
        assert change(probe, Transition.TRANSITION_ACTIVATE)
        assert lifecycle_state(probe) == "active"
        probe.wait_msg("/joint_states", timeout=10)
        msg = probe.latest("/joint_states")
        assert list(msg.name) == NAMES and len(msg.position) == len(msg.velocity) == len(NAMES)
        assert states_in(probe, 2.0) >= 2.0 * 100 * 0.4        # ~100 Hz (loose: a busy machine)
        d = probe.wait_diag(DIAG, lambda d: d["lifecycle"] == "active" and float(d["rate_hz"]) > 0, timeout=10)
        assert float(d["target_rate_hz"]) == 100.0 and d["safety_state"] in ("enabled", "holding")
        assert int(d["driver_missed_periods"]) >= 0                # the driver's own counters

        r = probe.call(Trigger, "/driver/estop")
        assert r.success
        probe.wait_diag(DIAG, lambda d: d["safety_state"] == "estop" and d["_level"] == 1, timeout=10)
        r = probe.call(SetBool, "/driver/enable", SetBool.Request(data=True))
        assert r.success and "holding" in r.message
        probe.wait_diag(DIAG, lambda d: d["safety_state"] in ("enabled", "holding") and d["_level"] == 0, timeout=10)
        r = probe.call(SetBool, "/driver/enable", SetBool.Request(data=False))
        assert r.success
        probe.wait_diag(DIAG, lambda d: d["safety_state"] == "disabled", timeout=10)
        assert probe.call(Trigger, "/driver/reset", idempotent=False).success

        assert change(probe, Transition.TRANSITION_DEACTIVATE)
        assert lifecycle_state(probe) == "inactive"
        time.sleep(0.3)
        assert states_in(probe, 0.5) == 0
        assert change(probe, Transition.TRANSITION_CLEANUP)
        assert lifecycle_state(probe) == "unconfigured"
        r = probe.call(Trigger, "/driver/reset", idempotent=False)               # nothing to reset without a driver
        assert not r.success and "not configured" in r.message
    except AssertionError:
        print(dump_logs(domain))
        raise
    assert domain.procs[0].stop() == 0                         # Ctrl-C: clean exit


def test_commands_trajectories_and_bad_input(ros):
    domain, probe = ros
    probe.subscribe("/joint_states", JointState)
    probe.subscribe("/diagnostics", DiagnosticArray)
    probe.subscribe("/driver/setpoints", JointState)
    drv = domain.start("driver_node", "driver", config="panda_sim", hardware="sim", autostart=True)
    try:
        probe.wait_msg("/joint_states")
        probe.wait_subscribers("/driver/commands")
        q0 = q_now(probe)
        # a stream of position commands (config joint order) at the control rate moves joint 1 (a
        # slower stream is held by the watchdog between commands and restarts from the measured speed)
        target = q0.copy()
        target[0] += 0.2
        for _ in range(150):
            probe.publish("/driver/commands", Float64MultiArray(data=target.tolist()))
            time.sleep(0.01)
        wait_until(lambda: abs(q_now(probe)[0] - target[0]) < 0.02, 10, what="joint 1 at its target")

        # each position command's set-point, as the safety layer's limiter sent it, on ~/setpoints,
        # stamped with the /joint_states stamp the command answered (its label)
        label = 1_700_000_000_123_456_789
        step = q_now(probe)
        step[1] += 0.3                    # far: the limiter paces toward it, one step a period
        probe.publish("/driver/commands", command_msg(step, label))
        m = probe.wait_msg("/driver/setpoints", lambda m: stamp_ns(m.header.stamp) == label, timeout=10)
        assert list(m.name) == NAMES
        sent, speed = np.array(m.position), np.array(m.velocity)
        assert 0 < sent[1] - step[1] + 0.3 < 0.05          # a paced step toward it, from where the joint is
        assert 0 < speed[1] * CFG.spec().period < 0.05 and np.all(np.isfinite(speed))

        # bad commands: refused, counted, the node lives on
        # (one at a time: the command topic keeps only the newest message)
        probe.publish("/driver/commands", Float64MultiArray(data=[0.1, 0.2, 0.3]))
        probe.wait_diag(DIAG, lambda d: int(d["rejected_shape"]) >= 1, timeout=10)
        probe.publish("/driver/commands", Float64MultiArray(data=[math.nan] * len(NAMES)))
        d = probe.wait_diag(DIAG, lambda d: int(d["rejected_shape"]) >= 1 and int(d["rejected_nonfinite"]) >= 1,
                            timeout=10, what="the refusals in the diagnostics")
        assert int(d["refused_command"]) >= 2

        # a trajectory naming two joints, in another order; the others hold
        q1 = q_now(probe)
        goal1, goal2 = q1[0] - 0.3, q1[1] + 0.15
        probe.publish("/driver/joint_trajectory",
                      traj(["panda_joint2", "panda_joint1"], [0.5, 1.0], [[q1[1] + 0.05, q1[0] - 0.1], [goal2, goal1]]))
        wait_until(lambda: abs(q_now(probe)[0] - goal1) < 0.02 and abs(q_now(probe)[1] - goal2) < 0.02, 15,
                   what="the trajectory's end point")
        assert np.allclose(q_now(probe)[2:7], q1[2:7], atol=0.02)
        probe.wait_diag(DIAG, lambda d: int(d["trajectories_accepted"]) == 1, timeout=10)

        # refused trajectories: times not increasing, an unknown joint, too few positions
        q2 = q_now(probe)
        probe.publish("/driver/joint_trajectory", traj(["panda_joint1"], [1.0, 0.5], [[q2[0] + 0.3], [q2[0] + 0.4]]))
        probe.publish("/driver/joint_trajectory", traj(["elbow"], [1.0], [[0.3]]))
        probe.publish("/driver/joint_trajectory", traj(["panda_joint1", "panda_joint2"], [1.0], [[0.3]]))   # too few
        d = probe.wait_diag(DIAG, lambda d: int(d.get("refused_trajectory", 0)) >= 3, timeout=10,
                            what="three refused trajectories")
        assert int(d["trajectories_accepted"]) == 1
        time.sleep(0.5)
        assert np.allclose(q_now(probe)[:7], q2[:7], atol=0.02)   # nothing moved
        assert drv.alive
        log = drv.log()
        assert "time_from_start must increase strictly" in log and "unknown joint" in log
    except AssertionError:
        print(dump_logs(domain))
        raise


def test_driver_fault_error_state_and_reset(ros):
    domain, probe = ros
    probe.subscribe("/joint_states", JointState)
    probe.subscribe("/diagnostics", DiagnosticArray)
    drv = domain.start("driver_node", "driver", config="panda_sim", hardware="sim", autostart=True,
                       fault_injection=True)
    try:
        probe.wait_msg("/joint_states")
        q_before = q_now(probe)
        assert probe.call(Trigger, "/driver/inject_fault", idempotent=False).success
        wait_until(lambda: lifecycle_state(probe) == "unconfigured", 15, what="the error state")
        d = probe.wait_diag(DIAG, lambda d: d["fault_latched"] == "True", timeout=10)
        assert d["_level"] == 2 and int(d["driver_faults"]) >= 1 and "injected fault" in d["_message"]
        time.sleep(0.2)
        assert states_in(probe, 0.5) == 0                        # no state from a faulted driver
        probe.publish("/driver/commands", Float64MultiArray(data=q_before.tolist()))
        probe.wait_diag(DIAG, lambda d: int(d.get("refused_command_inactive", 0)) >= 1, timeout=10)
        assert not change(probe, Transition.TRANSITION_CONFIGURE)   # not without an explicit reset
        assert "call ~/reset first" in drv.log()

        r = probe.call(Trigger, "/driver/reset", idempotent=False)
        assert r.success and "holding the measured position" in r.message
        assert lifecycle_state(probe) == "active"
        t = time.monotonic()
        probe.wait_msg("/joint_states", after=t, timeout=10)
        time.sleep(0.3)
        assert np.allclose(q_now(probe), q_before, atol=0.01)     # held where it was: no jump
        probe.wait_diag(DIAG, lambda d: d["fault_latched"] == "False" and d["_level"] == 0, timeout=10)
        assert drv.alive
    except AssertionError:
        print(dump_logs(domain))
        raise


def test_the_graph_against_the_mock_robot_with_fault_knobs(ros):
    """hardware:=mock: an exact in-memory robot with a stuck joint; ~/inject_fault unplugs it,
    ~/reset brings it back where it was."""
    domain, probe = ros
    probe.subscribe("/joint_states", JointState)
    probe.subscribe("/diagnostics", DiagnosticArray)
    drv = domain.start("driver_node", "driver", config="panda_sim", hardware="mock", autostart=True,
                       fault_injection=True, fault_stuck_joints=["panda_joint2"])
    try:
        probe.wait_msg("/joint_states")
        probe.wait_subscribers("/driver/commands")
        q0 = q_now(probe)
        target = q0.copy()
        target[:2] += 0.1
        for _ in range(100):
            probe.publish("/driver/commands", Float64MultiArray(data=target.tolist()))
            time.sleep(0.01)
        wait_until(lambda: q_now(probe)[0] == target[0], 10, what="joint 1 exactly at its target")
        assert q_now(probe)[1] == q0[1]                                  # stuck
        d = probe.wait_diag(DIAG, lambda d: int(d.get("driver_commands", 0)) > 0, timeout=10)
        assert d["backend"] == "mock" and d["fallback"] == "False"

        q_before = q_now(probe)
        assert probe.call(Trigger, "/driver/inject_fault", idempotent=False).success
        wait_until(lambda: lifecycle_state(probe) == "unconfigured", 15, what="the error state")
        d = probe.wait_diag(DIAG, lambda d: d["fault_latched"] == "True", timeout=10)
        assert "injected fault: no response from the robot" in d["_message"] and int(d["driver_injected_faults"]) >= 1
        r = probe.call(Trigger, "/driver/reset", idempotent=False)
        assert r.success and lifecycle_state(probe) == "active"
        t = time.monotonic()
        probe.wait_msg("/joint_states", after=t, timeout=10)
        assert np.array_equal(q_now(probe), q_before)                   # held exactly where it was
        assert drv.alive
    except AssertionError:
        print(dump_logs(domain))
        raise


@pytest.mark.parametrize("params,line", [
    (dict(hardware="mock", fault_latency=-2), "parameter fault_latency: must be a non-negative integer, got -2"),
    (dict(hardware="sim", fault_stuck_joints=["panda_joint1"]),
     "parameter fault_stuck_joints: only the mock robot (hardware:=mock) has this fault"),
    (dict(hardware="mock", fault_nan_joints=["elbow"]), "parameter fault_nan_joints: 'elbow' is not one of"),
])
def test_bad_fault_knobs_end_the_node_with_one_line(ros, params, line):
    domain, probe = ros
    drv = domain.start("driver_node", "driver", config="panda_sim", autostart=True, **params)
    wait_until(lambda: not drv.alive, 60, what="the node to exit")
    assert drv.proc.returncode == 2 and line in drv.log(), drv.log()
