"""s2r.core.bag: rosbag2 recordings (MCAP) written through the bounded queue, read back by the
libraries' own readers (rosbags, and mcap as Foxglove reads it), salvaged when truncated or
corrupt, and refused in one line when they lack a topic or come from another robot."""
import subprocess
import sys

import numpy as np
import pytest
import yaml

from s2r.core.bag import BagWriter, RecordingError

from s2r.core.bag_reader import check_recording, read_bag, repair_bag
from s2r.core.config import load_config

PANDA = list(load_config("panda_sim").joint_names)


def joint_state(bag, i: int, names=PANDA):
    T = bag.msg_types
    n = len(names)
    return T["sensor_msgs/msg/JointState"](
        header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=i // 100, nanosec=i % 100 * 10_000_000),
                                        frame_id=""),
        name=list(names), position=np.full(n, float(i)), velocity=np.full(n, -float(i)), effort=np.zeros(0))


def command(bag, values):
    T = bag.msg_types
    return T["std_msgs/msg/Float64MultiArray"](layout=T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
                                               data=np.asarray(values, float))


T0 = 1_700_000_000_000_000_000


def write_run(path, chunks: int = 4, per_chunk: int = 50, names=PANDA) -> int:
    """`chunks` flushed chunks of `per_chunk` joint states (+ a command every other state)."""
    with BagWriter(path) as bag:
        bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        bag.add_topic("/driver/commands", "std_msgs/msg/Float64MultiArray")
        for c in range(chunks):
            for k in range(per_chunk):
                i = c * per_chunk + k
                assert bag.write_message("/joint_states", T0 + i * 10_000_000, joint_state(bag, i, names))
                if i % 2 == 0:
                    assert bag.write_message("/driver/commands", T0 + i * 10_000_000 + 1, command(bag, [i, 2 * i]))
            bag.flush()
    return chunks * per_chunk


def chunk_spans(mcap_file):
    """(start, end) byte offsets of the file's chunks, from its summary (the mcap library)."""
    from mcap.reader import make_reader
    with open(mcap_file, "rb") as f:
        s = make_reader(f).get_summary()
    return sorted((c.chunk_start_offset, c.chunk_start_offset + c.chunk_length) for c in s.chunk_indexes)


def test_written_bag_reads_back_with_the_libraries_readers(tmp_path):
    n = write_run(tmp_path / "run")
    # rosbags' reader (not our code): types from the embedded definitions, counts, values
    from rosbags.highlevel import AnyReader
    with AnyReader([tmp_path / "run"]) as r:
        types = {c.topic: c.msgtype for c in r.connections}
        assert types == {"/joint_states": "sensor_msgs/msg/JointState",
                         "/driver/commands": "std_msgs/msg/Float64MultiArray"}
        got = [(c.topic, t, r.deserialize(raw, c.msgtype)) for c, t, raw in r.messages()]
    js = [m for topic, _, m in got if topic == "/joint_states"]
    cmds = [m for topic, _, m in got if topic == "/driver/commands"]
    assert len(js) == n and len(cmds) == n // 2
    assert [m.position[0] for m in js] == list(range(n)) and list(js[7].name) == PANDA
    assert list(cmds[3].data) == [6.0, 12.0]
    # the MCAP as Foxglove's reference library sees it: ros2 profile, ros2msg schemas, cdr messages
    from mcap.reader import make_reader
    with open(tmp_path / "run" / "run.mcap", "rb") as f:
        reader = make_reader(f)
        assert reader.get_header().profile == "ros2"
        s = reader.get_summary()
        assert {sc.encoding for sc in s.schemas.values()} == {"ros2msg"}
        assert {ch.message_encoding for ch in s.channels.values()} == {"cdr"}
        assert s.statistics.message_count == n + n // 2 and len(s.chunk_indexes) == 4
        assert b"float64[] position" in next(sc.data for sc in s.schemas.values() if sc.name.endswith("JointState"))
    # metadata.yaml as ros2 bag reads it: MCAP storage, per-topic counts, the types' RIHS01 hashes
    meta = yaml.safe_load((tmp_path / "run" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "mcap" and meta["message_count"] == n + n // 2
    topics = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    assert topics["/joint_states"]["message_count"] == n
    installed = sys.prefix + "/share/sensor_msgs/msg/JointState.json"      # the ROS wheels' own hash
    want = next(h["hash_string"] for h in yaml.safe_load(open(installed))["type_hashes"]
                if h["type_name"] == "sensor_msgs/msg/JointState")
    assert topics["/joint_states"]["topic_metadata"]["type_description_hash"] == want


def test_our_reader_and_joint_state_arrays(tmp_path):
    n = write_run(tmp_path / "run", chunks=2, per_chunk=30)
    rec = read_bag(tmp_path / "run")
    assert rec.complete and rec.topics["/joint_states"].count == n
    js = rec.joint_states()
    assert js["names"] == PANDA and js["q"].shape == (n, len(PANDA))
    np.testing.assert_allclose(js["q"][:, 2], np.arange(n))
    np.testing.assert_allclose(js["qd"][-1], -(n - 1))
    assert np.isnan(js["effort"]).all()                       # left empty in every message
    np.testing.assert_allclose(js["t"][-1], (n - 1) * 0.01)


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    bag = BagWriter(tmp_path / "run", max_queue=4)
    bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    raw = bytes(bag._types.serialize_cdr(joint_state(bag, 1), "sensor_msgs/msg/JointState"))
    with bag._write_lock:                      # the disk "stalls": the writer thread cannot write
        accepted = [bag.put("/joint_states", T0 + i, raw) for i in range(100)]
    bag.close()
    # the queue holds 4; the writer thread may have taken one batch before it blocked on the disk
    assert 4 <= sum(accepted) <= 8 and bag.stats["/joint_states"].dropped == accepted.count(False) >= 92
    assert read_bag(tmp_path / "run").topics["/joint_states"].count == sum(accepted) == bag.written


def test_byte_budget_bounds_the_queue(tmp_path):
    bag = BagWriter(tmp_path / "run", max_queue_bytes=1000)
    bag.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
    with bag._write_lock:
        assert not bag.put("/camera/image_raw", T0, b"\0" * 4000)      # bigger than the whole budget
    bag.close()
    assert bag.dropped == 1 and bag.written == 0


def test_truncated_bag_reads_the_whole_chunks_and_says_where_it_stopped(tmp_path):
    write_run(tmp_path / "run", chunks=4, per_chunk=50)
    data = (tmp_path / "run" / "run.mcap").read_bytes()
    spans = chunk_spans(tmp_path / "run" / "run.mcap")
    cut = (spans[2][0] + spans[2][1]) // 2                    # in the middle of the third chunk
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "cut.mcap").write_bytes(data[:cut])
    rec = read_bag(tmp_path / "cut")
    assert not rec.complete
    js = rec.joint_states()
    np.testing.assert_allclose(js["q"][:, 0], np.arange(100))          # chunks 1 and 2, whole
    assert rec.topics["/driver/commands"].count == 50
    assert "truncated" in rec.stopped and f"of {cut}" in rec.stopped
    # the two chunks' message indexes follow them: the valid part ends at or after chunk 2
    stop = int(rec.stopped.split("valid up to byte ")[1].split()[0])
    assert spans[1][1] <= stop < spans[2][0] + 1


def test_finished_bag_truncated_later_falls_back_to_salvage(tmp_path):
    write_run(tmp_path / "run", chunks=3, per_chunk=20)
    f = tmp_path / "run" / "run.mcap"
    spans = chunk_spans(f)
    f.write_bytes(f.read_bytes()[:spans[1][1] + 3])   # metadata.yaml stays; the file loses its end
    rec = read_bag(tmp_path / "run")
    assert not rec.complete and rec.topics["/joint_states"].count == 40
    assert "truncated" in rec.stopped and "valid up to byte" in rec.stopped


def test_bag_cut_between_records_is_unfinished_not_corrupt(tmp_path):
    write_run(tmp_path / "run", chunks=3, per_chunk=20)
    data = (tmp_path / "run" / "run.mcap").read_bytes()
    spans = chunk_spans(tmp_path / "run" / "run.mcap")
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "cut.mcap").write_bytes(data[:spans[2][0]])   # a kill right before chunk 3
    rec = read_bag(tmp_path / "cut")
    assert "unfinished" in rec.stopped and rec.topics["/joint_states"].count == 40


def test_corrupt_record_length_stops_there(tmp_path):
    write_run(tmp_path / "run", chunks=4, per_chunk=25)
    data = bytearray((tmp_path / "run" / "run.mcap").read_bytes())
    spans = chunk_spans(tmp_path / "run" / "run.mcap")
    data[spans[1][0] + 1:spans[1][0] + 9] = (2**62).to_bytes(8, "little")   # chunk 2's length
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bad.mcap").write_bytes(bytes(data))
    rec = read_bag(tmp_path / "bad")          # metadata-less folder, chunk 1 only
    assert rec.topics["/joint_states"].count == 25
    assert f"valid up to byte {spans[1][0]} " in rec.stopped


def test_repair_writes_a_finished_bag_the_library_reads(tmp_path):
    write_run(tmp_path / "run", chunks=3, per_chunk=20)
    data = (tmp_path / "run" / "run.mcap").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "cut.mcap").write_bytes(data[:len(data) - 200])     # summary and footer gone
    fixed = repair_bag(tmp_path / "cut", tmp_path / "fixed")
    assert fixed.complete
    from rosbags.rosbag2 import Reader
    with Reader(tmp_path / "fixed") as r:
        assert r.message_count == 60 + 30


def test_not_a_recording_is_one_line(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "junk.mcap").write_bytes(b"hello, not mcap")
    with pytest.raises(RecordingError, match="not an MCAP file"):
        read_bag(tmp_path / "junk")
    with pytest.raises(RecordingError, match="no such recording"):
        read_bag(tmp_path / "nothing")
    with pytest.raises(RecordingError, match="exists already"):
        BagWriter(tmp_path / "junk")


def test_missing_topic_and_other_robot_are_refused_in_one_line(tmp_path):
    write_run(tmp_path / "run", chunks=1, per_chunk=10)
    rec = read_bag(tmp_path / "run")
    check_recording(rec, ("/joint_states", "/driver/commands"), list(reversed(PANDA)))   # order-free
    with pytest.raises(RecordingError) as e:
        check_recording(rec, ("/joint_states", "/goal_pose"))
    assert str(e.value).count("\n") == 0 and "no messages on /goal_pose" in str(e.value)
    with pytest.raises(RecordingError, match="too short: needs at least 5 s"):
        check_recording(rec, min_duration_s=5.0)                   # 10 states at 100 Hz: 0.09 s
    other = list(load_config("xarm6_sim").joint_names)
    with pytest.raises(RecordingError, match="another robot") as e:
        check_recording(rec, joint_names=other)
    assert other[0] in str(e.value) and PANDA[0] in str(e.value)


def test_cli_info_checks_the_robot(tmp_path):
    write_run(tmp_path / "run", chunks=1, per_chunk=10)

    def s2r(*args):
        return subprocess.run([sys.executable, "-m", "s2r", "record", *args], capture_output=True, text=True,
                              timeout=60)
    ok = s2r("--info", str(tmp_path / "run"), "--config", "panda_sim")
    assert ok.returncode == 0, ok.stderr
    assert "/joint_states" in ok.stdout and "sensor_msgs/msg/JointState" in ok.stdout and "OK" in ok.stdout
    bad = s2r("--info", str(tmp_path / "run"), "--config", "xarm6_sim")
    assert bad.returncode == 2 and "another robot" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    exists = s2r(str(tmp_path / "run"))
    assert exists.returncode == 2 and "exists already" in exists.stderr


def test_hil_record_writes_each_robot_session(tmp_path):
    r = subprocess.run([sys.executable, "-m", "s2r", "hil", "hand_sim", "-k", "connect or bad_commands",
                        "--record", str(tmp_path / "bags")], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    rec = read_bag(tmp_path / "bags" / "hand_sim-1")
    assert rec.complete and f"into {tmp_path / 'bags' / 'hand_sim-1'}" in r.stdout
    names = list(load_config("hand_sim").joint_names)
    check_recording(rec, ("/joint_states", "/driver/commands"), names)
    js = rec.joint_states()
    assert js["q"].shape[1] == len(names) and np.isfinite(js["q"]).all()
    assert {m.layout.dim[0].label for _, _, m in rec.messages(["/driver/commands"])} <= {"position", "velocity", "effort"}


def test_demo_bringup_records_with_a_recorder_node(tmp_path):
    from s2r.demo_ros import demo_bringup
    from s2r.launch import check_bringup
    from s2r.core.bag import bag_path

    b = demo_bringup(tmp_path / "run", record=tmp_path / "bag")
    rec = b.node("recorder")
    assert rec.executable == "recorder_node" and rec.parameters["out"] == str(tmp_path / "bag")
    check_bringup(b, configs=False)                    # the launcher can run it
    assert demo_bringup(tmp_path / "run").nodes[-1].name != "recorder"
    (tmp_path / "bags").mkdir()
    assert bag_path(tmp_path / "bags", "run1") == tmp_path / "bags" / "run1"     # a folder collects runs
    write_run(tmp_path / "done", chunks=1, per_chunk=2)
    with pytest.raises(RecordingError, match="exists already"):
        bag_path(tmp_path / "done", "run1")                                    # a recording is never reused


def test_recorder_node_refuses_bad_parameters_in_one_line(tmp_path):
    (tmp_path / "exists").mkdir()
    for params, what in ((["-p", f"out:={tmp_path / 'exists'}"], "exists already"),
                         ([], "parameter out: needs the folder"),
                         (["-p", f"out:={tmp_path / 'new'}", "-p", "flush_period_s:=-1.0"], "parameter flush_period_s")):
        r = subprocess.run([sys.executable, "-m", "s2r_ros.recorder_node", "--ros-args", *params],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and what in r.stdout + r.stderr, r.stdout + r.stderr
        assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "new").exists()


def test_a_sqlite3_rosbag2_recording_reads_too(tmp_path):
    """`ros2 bag record` without `-s mcap` writes sqlite3 storage: read_bag opens it as well."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    store = get_typestore(Stores.LATEST)
    bag = BagWriter(tmp_path / "scratch")         # only for its message classes
    with Writer(tmp_path / "db", version=9, storage_plugin=StoragePlugin.SQLITE3) as w:
        conn = w.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=store)
        for i in range(5):
            w.write(conn, T0 + i, store.serialize_cdr(joint_state(bag, i), "sensor_msgs/msg/JointState"))
    bag.close()
    rec = read_bag(tmp_path / "db")
    assert rec.complete and list(rec.joint_states()["q"][:, 0]) == [0, 1, 2, 3, 4]
