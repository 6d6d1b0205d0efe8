"""camera_node (simulated, and an OpenCV device replaying a video file) and policy_node (small
randomly initialized policies, TorchScript and torch.export) as processes on a private domain."""
import math
import warnings

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image, JointState

from ros_harness import dump_logs, ros, wait_until  # noqa: F401
from s2r.core.config import load_config

pytestmark = pytest.mark.slow
CFG = load_config("panda_sim")


def image_array(msg: Image) -> np.ndarray:
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)


def test_camera_node_sim_and_device_sources(ros, tmp_path):
    import cv2

    domain, probe = ros
    # a recording to replay: pure red frames (BGR on disk)
    video = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (80, 60))
    for _ in range(20):
        w.write(np.dstack([np.zeros((60, 80)), np.zeros((60, 80)), np.full((60, 80), 255)]).astype(np.uint8))
    w.release()
    for topic, t in (("/camera/image_raw", Image), ("/camera/camera_info", CameraInfo),
                     ("/usb/image_raw", Image), ("/usb/camera_info", CameraInfo)):
        probe.subscribe(topic, t)
    probe.subscribe("/diagnostics", DiagnosticArray)
    domain.start("camera_node", "camera", config="panda_sim", width=64, height=48, rate_hz=10.0)
    domain.start("camera_node", "usb", config="panda_sim", device=str(video), topic_prefix="/usb", rate_hz=20.0)
    try:
        img = probe.wait_msg("/camera/image_raw")
        info = probe.wait_msg("/camera/camera_info")
        cam = CFG.cameras[0]
        assert (img.width, img.height, img.encoding, img.step) == (64, 48, "rgb8", 64 * 3)
        assert img.header.frame_id == f"{cam.name}_optical_frame"
        a = image_array(img)
        assert a.std() > 5                                    # a rendered scene, not a blank frame
        fx = cam.fx * 64 / cam.width
        np.testing.assert_allclose(info.k, [fx, 0, 32, 0, cam.fy * 48 / cam.height, 24, 0, 0, 1], rtol=1e-6)

        usb = probe.wait_msg("/usb/image_raw")
        uinfo = probe.wait_msg("/usb/camera_info")
        assert (usb.width, usb.height) == (cam.width, cam.height)   # resized to the configured size
        px = image_array(usb).reshape(-1, 3).mean(axis=0)
        assert px[0] > 200 and px[1] < 40 and px[2] < 40              # red, in RGB order
        np.testing.assert_allclose(uinfo.k[0], cam.fx)
        # the 20-frame file loops: more frames arrive than it holds
        wait_until(lambda: probe.counts["/usb/image_raw"] > 30, 30, what="the video to loop")
        d = probe.wait_diag("usb: camera", lambda d: int(d["frames"]) > 0, timeout=10)
        assert d["source"] == "device" and int(d["failures"]) == 0
    except AssertionError:
        print(dump_logs(domain))
        raise


class TinyVisuomotor(torch.nn.Module):
    """Conv features of the image + the joint state -> one bounded value per joint."""

    def __init__(self, n: int):
        super().__init__()
        self.conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.ReLU(),
                                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(4 + 2 * n, n)

    def forward(self, image: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return 0.01 * torch.tanh(self.head(torch.cat([self.conv(image), state], dim=1)))


class NaNPolicy(torch.nn.Module):
    def forward(self, image: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return state[:, : state.shape[1] // 2] * float("nan")


def test_policy_node_streams_commands_from_a_torchscript_policy(ros, tmp_path):
    domain, probe = ros
    n = len(CFG.joint_names)
    torch.manual_seed(0)
    good, bad = tmp_path / "policy.pt", tmp_path / "nan_policy.pt2"
    with warnings.catch_warnings():               # torch 2.13 deprecates torch.jit.script, but loads it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(TinyVisuomotor(n)).save(str(good))            # TorchScript
    example = (torch.zeros(1, 3, 64, 64), torch.zeros(1, 2 * n))
    torch.export.save(torch.export.export(NaNPolicy(), example), str(bad))   # and torch.export
    probe.subscribe("/joint_states", JointState)
    probe.subscribe("/diagnostics", DiagnosticArray, qos=50)
    domain.start("driver_node", "driver", config="panda_sim", hardware="sim", autostart=True)
    domain.start("camera_node", "camera", config="panda_sim", width=64, height=64, rate_hz=15.0)
    pol = domain.start("policy_node", "policy", config="panda_sim", policy=str(good), action="position_delta",
                       rate_hz=50.0, image_size=64)
    try:
        q0 = np.array(probe.wait_msg("/joint_states").position)
        d = probe.wait_diag("policy: policy", lambda d: int(d["commands"]) >= 20, what="policy commands")
        assert int(d["refused_actions"]) == 0
        dd = probe.wait_diag("driver: driver", lambda d: int(d["accepted"]) >= 20 and int(d["latency_samples"]) >= 20,
                             what="the driver accepting the policy's commands")
        assert int(dd["rejected_shape"]) == 0 and int(dd["rejected_nonfinite"]) == 0
        wait_until(lambda: np.max(np.abs(np.array(probe.latest("/joint_states").position) - q0)) > 1e-3, 20,
                   what="the policy to move the arm")
        assert pol.stop() == 0

        nanpol = domain.start("policy_node", "nanpolicy", config="panda_sim", policy=str(bad), rate_hz=50.0)
        d = probe.wait_diag("nanpolicy: policy", lambda d: int(d["refused_actions"]) >= 5, what="refused actions")
        assert d["_level"] == 2 and "NaN" in d["last_problem"]
        assert "policy returned NaN or inf; holding" in nanpol.log()
        dd = probe.wait_diag("driver: driver", lambda d: int(d["accepted"]) > int(dd["accepted"]) + 5,
                             what="hold commands accepted by the driver")
        assert int(dd["rejected_nonfinite"]) == 0                   # nothing non-finite ever reached it
    except AssertionError:
        print(dump_logs(domain))
        raise


def test_policy_node_builds_the_inputs_an_exported_state_policy_lists(ros, tmp_path):
    """A learning/ export whose metadata asks for [joint_pos, joint_vel, target - tcp]: the node
    waits for a goal on /goal_pose, then feeds the forward-kinematics TCP and the goal. A
    visuomotor export whose robot configuration is [joint_pos, joint_vel, tcp_pos] gets those 17
    values next to the image (a 14-value input would fail the call and be refused). An ArmInsert
    export gets [joint_pos, joint_vel, target - peg_bottom, phase]; its phase counts from the goal
    and starts again at a goal elsewhere. An export with the opt-in inputs (previous action,
    q_cmd - q, a two-step joint history: learning/features.py) runs; one whose inputs the node
    cannot build (q_cmd - q under velocity actions, which have no position targets) is refused at
    start in one line."""
    from geometry_msgs.msg import PoseStamped

    from s2r.learning.policies import MLPPolicy, VisuomotorCNN, export_torchscript
    from s2r_ros.common import GOAL_QOS

    domain, probe = ros
    arm = [j for j in CFG.joint_names if "finger" not in j]
    n = len(arm)
    torch.manual_seed(0)
    path = tmp_path / "reach.pt"
    meta = {"task": "s2r/ArmReach-v0", "joint_names": arm, "action": "position_delta", "inputs": ["state"],
            "obs_keys": ["joint_pos", "joint_vel", "target_minus_tcp"], "ee_link": "panda_hand", "tcp_offset": 0.1034}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        export_torchscript(MLPPolicy(2 * n + 3, n), path, meta, np.full(n, 0.005))
        insert = tmp_path / "insert.pt"
        export_torchscript(MLPPolicy(2 * n + 4, n), insert,
                           meta | {"task": "s2r/ArmInsert-v0", "episode_steps": 200, "peg_bottom_offset": 0.065,
                                   "obs_keys": ["joint_pos", "joint_vel", "target_minus_peg_bottom", "phase"]},
                           np.full(n, 0.005))
        unsized = tmp_path / "unsized.pt"        # the phase without episode_steps: refused
        export_torchscript(MLPPolicy(2 * n + 4, n), unsized,
                           meta | {"obs_keys": ["joint_pos", "joint_vel", "target_minus_tcp", "phase"]}, np.full(n, 0.005))
        memory = tmp_path / "memory.pt"
        export_torchscript(MLPPolicy(2 * n + 3 + 4 * n, n), memory,
                           meta | {"obs_keys": ["joint_pos", "joint_vel", "target_minus_tcp", "prev_action", "cmd_offset",
                                                "joint_pos@hist2"]}, np.full(n, 0.005))
        velocity = tmp_path / "velocity.pt"
        export_torchscript(MLPPolicy(3 * n, n), velocity, meta | {"obs_keys": ["joint_pos", "joint_vel", "cmd_offset"]},
                           np.full(n, 0.005))
        visuo = tmp_path / "visuo.pt"
        export_torchscript(VisuomotorCNN(2 * n + 3, n, 64), visuo,
                           meta | {"inputs": ["image", "joint_state"], "image_size": [64, 64],
                                   "obs_keys": ["image", "joint_pos", "joint_vel", "tcp_pos"]}, np.full(n, 0.005))
    probe.subscribe("/joint_states", JointState)
    probe.subscribe("/diagnostics", DiagnosticArray, qos=50)
    domain.start("driver_node", "driver", config="panda_sim", hardware="sim", autostart=True)
    domain.start("camera_node", "camera", config="panda_sim", width=64, height=64, rate_hz=15.0)
    domain.start("policy_node", "visuo", config="panda_sim", policy=str(visuo), action="position_delta",
                 rate_hz=20.0, image_size=64)
    domain.start("policy_node", "reach", config="panda_sim", policy=str(path), action="position_delta",
                 use_image=False, rate_hz=50.0)
    domain.start("policy_node", "insert", config="panda_sim", policy=str(insert), action="position_delta",
                 use_image=False, rate_hz=50.0)
    domain.start("policy_node", "memory", config="panda_sim", policy=str(memory), action="position_delta",
                 use_image=False, rate_hz=50.0)
    bad = domain.start("policy_node", "unsized", config="panda_sim", policy=str(unsized), use_image=False)
    unbuildable = domain.start("policy_node", "velocity", config="panda_sim", policy=str(velocity), action="velocity",
                               use_image=False)
    try:
        assert bad.proc.wait(60) == 2 and "metadata has no episode_steps" in bad.log()
        assert unbuildable.proc.wait(60) == 2
        refusal = [line for line in unbuildable.log().splitlines() if "cannot build the policy's inputs" in line]
        assert len(refusal) == 1 and "obs key 'cmd_offset' needs q_cmd" in refusal[0], unbuildable.log()
        assert "with velocity actions does not provide" in refusal[0]
        d = probe.wait_diag("reach: policy", lambda d: int(d["waiting"]) >= 5, what="the node waiting for a goal")
        assert int(d["commands"]) == 0 and "goal" in d["last_problem"]
        goal = PoseStamped()
        goal.header.frame_id = "world"
        goal.pose.position.x, goal.pose.position.y, goal.pose.position.z = 0.5, 0.1, 0.35
        goal.pose.orientation.w = 1.0
        probe.publish("/goal_pose", goal, GOAL_QOS)
        d = probe.wait_diag("reach: policy", lambda d: int(d["commands"]) >= 20, what="policy commands after the goal")
        assert int(d["refused_actions"]) == 0
        # its model of the driver's set-points follows the driver's reports of them (/driver/setpoints)
        d = probe.wait_diag("reach: policy", lambda d: int(d["setpoint_corrections"]) >= 10,
                            what="set-point reports matched to the node's commands")
        assert math.isfinite(float(d["setpoint_model_error_mrad"]))
        d = probe.wait_diag("memory: policy", lambda d: int(d["commands"]) >= 20, what="the opt-in inputs' commands")
        assert int(d["refused_actions"]) == 0
        d = probe.wait_diag("visuo: policy", lambda d: int(d["commands"]) >= 10, what="visuomotor policy commands")
        assert int(d["refused_actions"]) == 0
        d = probe.wait_diag("insert: policy", lambda d: int(d["episode_step"]) >= 60, what="insert policy commands")
        assert int(d["refused_actions"]) == 0 and int(d["episode_step"]) == int(d["commands"])
        goal.pose.position.y = 0.0                                       # elsewhere: a new episode
        probe.publish("/goal_pose", goal, GOAL_QOS)
        d2 = probe.wait_diag("insert: policy", lambda e: int(e["commands"]) > int(d["commands"])
                             and int(e["episode_step"]) < int(e["commands"]) - 30, what="the phase to start again")
        assert int(d2["refused_actions"]) == 0
    except AssertionError:
        print(dump_logs(domain))
        raise
