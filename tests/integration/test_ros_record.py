"""`s2r record` as its own process, recording real rclpy traffic from the probe node on a private
domain: the bag is read back by the libraries' readers (rosbags, and mcap as Foxglove reads it)
with the right types and counts; killed with SIGKILL it leaves a file readable to its last flush."""
import os
import signal
import subprocess
import sys
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, String

from ros_harness import ros, wait_until  # noqa: F401
from s2r.core.bag_reader import read_bag, repair_bag

pytestmark = pytest.mark.slow
NAMES = ["j1", "j2", "j3"]


def start_recorder(domain, out, *args):
    log = open(domain.tmp / "record.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", "s2r", "record", str(out), *args], env=domain.env,
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return p, domain.tmp / "record.log"


def stop(p, sig=signal.SIGINT, timeout=20.0) -> int:
    p.send_signal(sig)
    try:
        return p.wait(timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def joint_state(i: int) -> JointState:
    m = JointState(name=NAMES, position=[float(i)] * 3, velocity=[0.0] * 3)
    m.header.stamp.sec, m.header.stamp.nanosec = i // 1000, (i % 1000) * 1_000_000
    return m


def wait_recorded(probe, topics, log):
    for t in topics:
        wait_until(lambda t=t: probe.node.count_subscribers(t) >= 1, 60,
                   what=f"the recorder on {t}; log:\n{log.read_text(errors='replace')[-2000:]}")


def test_record_reads_back_with_library_reader_types_and_counts(ros, tmp_path):
    domain, probe = ros
    node = probe.node
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    deep = 1000                               # publisher history: a busy machine loses nothing
    pubs = {"/joint_states": node.create_publisher(JointState, "/joint_states", deep),
            "/arm/commands": node.create_publisher(Float64MultiArray, "/arm/commands", deep),
            "/camera/image_raw": node.create_publisher(Image, "/camera/image_raw", deep),
            "/camera/camera_info": node.create_publisher(CameraInfo, "/camera/camera_info", deep),
            "/diagnostics": node.create_publisher(DiagnosticArray, "/diagnostics", deep),
            "/chatter": node.create_publisher(String, "/chatter", deep)}          # not a recorded topic
    goal = node.create_publisher(PoseStamped, "/goal_pose", latched)
    g = PoseStamped()
    g.header.frame_id, g.pose.position.x, g.pose.orientation.w = "base", 0.5, 1.0
    goal.publish(g)                         # before the recorder starts: it gets it as a late joiner

    out = tmp_path / "bag"
    p, log = start_recorder(domain, out, "--flush-period", "0.2")
    try:
        wait_recorded(probe, list(pubs)[:-1] + ["/goal_pose"], log)
        n, n_img = 300, 30
        for i in range(n):
            pubs["/joint_states"].publish(joint_state(i))
            pubs["/arm/commands"].publish(Float64MultiArray(data=[float(i), -float(i)]))
            pubs["/chatter"].publish(String(data="x"))
            if i % 10 == 0:
                img = Image(height=32, width=32, encoding="rgb8", step=96, data=bytes([i % 256]) * (32 * 96))
                pubs["/camera/image_raw"].publish(img)
                pubs["/camera/camera_info"].publish(CameraInfo(height=32, width=32, distortion_model="plumb_bob"))
                pubs["/diagnostics"].publish(DiagnosticArray(status=[DiagnosticStatus(name="test: probe",
                                                                                        message=str(i))]))
            time.sleep(0.004)
        time.sleep(1.0)                      # reliable delivery of the last ones
        assert stop(p) == 0, log.read_text()
    finally:
        if p.poll() is None:
            stop(p, signal.SIGKILL)
    text = log.read_text()
    assert "dropped 0" in text, text[-2000:]

    from rosbags.highlevel import AnyReader      # the library's reader, not ours
    with AnyReader([out]) as r:
        types = {c.topic: c.msgtype for c in r.connections}
        msgs = {}
        for c, _, raw in r.messages():
            msgs.setdefault(c.topic, []).append(r.deserialize(raw, c.msgtype))
    assert types == {"/joint_states": "sensor_msgs/msg/JointState", "/arm/commands": "std_msgs/msg/Float64MultiArray",
                     "/camera/image_raw": "sensor_msgs/msg/Image", "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
                     "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray", "/goal_pose": "geometry_msgs/msg/PoseStamped"}
    assert [m.position[0] for m in msgs["/joint_states"]] == list(range(n))
    assert list(msgs["/joint_states"][5].name) == NAMES
    assert [m.data[1] for m in msgs["/arm/commands"]] == [-float(i) for i in range(n)]
    assert len(msgs["/camera/image_raw"]) == len(msgs["/camera/camera_info"]) == n_img
    assert msgs["/camera/image_raw"][3].data[0] == 30 and msgs["/camera/image_raw"][3].width == 32
    ours = [m for m in msgs["/diagnostics"] if m.status[0].name == "test: probe"]
    assert [m.status[0].message for m in ours] == [str(i) for i in range(0, n, 10)]
    recorder = [m for m in msgs["/diagnostics"] if m.status[0].name.endswith("recorder")]
    assert recorder and {kv.key for kv in recorder[-1].status[0].values} >= {"written", "dropped", "queued"}
    assert len(msgs["/goal_pose"]) == 1 and msgs["/goal_pose"][0].pose.position.x == 0.5

    from mcap.reader import make_reader          # as Foxglove reads the file
    with open(out / "bag.mcap", "rb") as f:
        s = make_reader(f).get_summary()
    counts = {s.channels[c].topic: k for c, k in s.statistics.channel_message_counts.items()}
    assert counts["/joint_states"] == n and counts["/camera/image_raw"] == n_img
    goal_channel = next(ch for ch in s.channels.values() if ch.topic == "/goal_pose")
    assert b"transient_local" in goal_channel.metadata["offered_qos_profiles"].encode()


def test_sigkill_leaves_a_bag_readable_to_the_last_flush(ros, tmp_path):
    domain, probe = ros
    pub = probe.node.create_publisher(JointState, "/joint_states", 1000)
    out = tmp_path / "bag"
    p, log = start_recorder(domain, out, "--flush-period", "0.2", "--topics", "/joint_states")
    try:
        wait_recorded(probe, ["/joint_states"], log)
        n = 400
        for i in range(n):                    # 200 Hz: within what the subscription's depth (100) absorbs
            pub.publish(joint_state(i))       # of an executor stalled on a loaded host
            time.sleep(0.005)
        time.sleep(1.5)                       # several flush periods: every message is on disk
        os.killpg(p.pid, signal.SIGKILL)
        assert p.wait(10) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            stop(p, signal.SIGKILL)
    assert not (out / "metadata.yaml").exists()        # it never got to finish the file
    rec = read_bag(out)
    assert not rec.complete and "unfinished" in rec.stopped, rec.stopped
    js = rec.joint_states()
    assert list(js["q"][:, 0]) == list(range(n)) and js["names"] == NAMES

    fixed = repair_bag(out, tmp_path / "fixed")          # and made whole for ros2 bag
    from rosbags.rosbag2 import Reader
    with Reader(tmp_path / "fixed") as r:
        assert {c.topic: c.msgcount for c in r.connections} == {"/joint_states": n}
    assert fixed.complete
