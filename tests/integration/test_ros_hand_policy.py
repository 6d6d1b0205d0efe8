"""A hand policy deployed by policy_node against driver_node on the simulated 16-DoF hand (processes on
a private domain): fingertip goals on /goal_tips drive it; goals it cannot take are refused and
counted, and the hand holds; an arm policy given the hand's config is refused at start."""
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState

from ros_harness import dump_logs, ros, wait_until  # noqa: F401
from s2r.core.config import load_config

pytestmark = pytest.mark.slow
CFG = load_config("hand_sim")
KEYS = ["joint_pos", "joint_vel", "target_minus_tips", "cmd_offset", "setpoint_offset", "setpoint_step"]


def export(path, meta, n_in, n_out):
    import torch

    from s2r.learning.export import export_policy
    from s2r.learning.policies import MLPPolicy
    torch.manual_seed(0)
    export_policy(MLPPolicy(n_in, n_out), path, meta, np.full(n_out, 0.02))
    return path


def test_policy_node_drives_the_hand_to_fingertip_goals_and_refuses_what_it_cannot_take(ros, tmp_path):
    import gymnasium as gym

    import s2r.sim.tasks  # noqa: F401
    from s2r_ros.common import GOAL_QOS, tips_goal_msg

    domain, probe = ros
    joints = list(CFG.joint_names)
    desc = CFG.robot_description()
    k = len(desc.tip_links)
    meta = {"task": "s2r/HandReach-v0", "joint_names": joints, "action": "position_delta", "inputs": ["state"],
            "obs_keys": KEYS, "tip_links": list(desc.tip_links), "tip_count": k, "episode_steps": 100}
    hand = export(tmp_path / "hand.pt2", meta, 2 * 16 + 3 * k + 3 * 16, 16)
    arm_joints = [j for j in load_config("panda_sim").joint_names if "finger" not in j]
    arm = export(tmp_path / "arm.pt2", {"task": "s2r/ArmReach-v0", "joint_names": arm_joints, "inputs": ["state"],
                                         "action": "position_delta", "obs_keys": ["joint_pos", "joint_vel"]}, 14, 7)
    env = gym.make("s2r/HandReach-v0").unwrapped
    try:
        obs, _ = env.reset(seed=1)
        targets = obs["target"].copy()                       # fingertips of a reachable posture
    finally:
        env.close()
    probe.subscribe("/joint_states", JointState)
    probe.subscribe("/diagnostics", DiagnosticArray, qos=50)
    domain.start("driver_node", "driver", config="hand_sim", hardware="sim", autostart=True, command_mode="position")
    pol = domain.start("policy_node", "policy", config="hand_sim", policy=str(hand), action="position_delta",
                       use_image=False)
    wrong = domain.start("policy_node", "wrong", config="hand_sim", policy=str(arm), action="position_delta",
                         use_image=False)
    try:
        d = probe.wait_diag("policy: policy", lambda d: "/goal_tips" in d["last_problem"], what="waiting for a goal")
        assert int(d["commands"]) == 0
        probe.wait_subscribers("/goal_tips")
        probe.publish("/goal_tips", tips_goal_msg(targets), qos=GOAL_QOS)
        d = probe.wait_diag("policy: policy", lambda d: int(d["commands"]) >= 100, what="policy commands")
        assert int(d["goals_refused"]) == 0 and int(d["refused_actions"]) == 0
        assert float(d["rate_hz"]) > 30                      # the hand's 100 Hz, less what a loaded host takes
        dd = probe.wait_diag("driver: driver", lambda d: int(d["accepted"]) >= 100, what="the driver accepting them")
        assert int(dd["rejected_shape"]) == 0 and int(dd["rejected_nonfinite"]) == 0
        # refused goals: out of a fingertip's reach, the wrong count, NaN -- counted, and nothing is sent
        far = targets.copy()
        far[1, 2] += 0.5
        for bad, why in ((far, "fingertip 1 at"), (targets[:3], "has 3 fingertip targets, the policy takes 4"),
                         (np.full((4, 3), np.nan), "is not finite")):
            before = int(probe.diagnostics("policy: policy")["goals_refused"])
            probe.publish("/goal_tips", tips_goal_msg(bad), qos=GOAL_QOS)
            d = probe.wait_diag("policy: policy", lambda d: int(d["goals_refused"]) > before, what="a refusal")
            assert why in d["last_goal_refusal"] and "refused, holding" in d["last_goal_refusal"], d
        sent = int(probe.diagnostics("policy: policy")["commands"])
        wait_until(lambda: int(probe.diagnostics("policy: policy")["waiting"]) > 20, 10, what="the node to wait")
        assert int(probe.diagnostics("policy: policy")["commands"]) <= sent + 5   # nothing more sent: the hand holds
        # an arm policy on the hand's config: refused at start, naming the joints
        wait_until(lambda: not wrong.alive, 30, what="the arm policy's node to exit")
        assert wrong.proc.returncode == 2
        assert "panda_joint1" in wrong.log() and "not in hand_sim's joints" in wrong.log(), wrong.log()
        assert pol.stop() == 0
    except AssertionError:
        print(dump_logs(domain))
        raise
