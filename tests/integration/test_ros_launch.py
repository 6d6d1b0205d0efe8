"""`s2r launch` (s2r/launch/) with real nodes: the closed-loop reach through the ROS graph,
prefixed output, Ctrl-C forwarding and clean shutdown, non-zero exit when a required node dies or
nodes refuse to start on bad parameters, and one-line errors for bad bringup files."""
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from s2r import launch

pytestmark = pytest.mark.slow
DRIVER = {"name": "driver", "executable": "driver_node", "required": True,
          "parameters": {"config": "panda_sim", "hardware": "sim", "autostart": True}}
CAMERA = {"name": "camera", "executable": "camera_node",
          "parameters": {"config": "panda_sim", "width": 64, "height": 64, "rate_hz": 10.0}}


class LaunchProc:
    """`python -m s2r.launch FILE --isolated` with its output collected line by line."""

    def __init__(self, tmp_path, nodes, *extra):
        f = tmp_path / "bringup.yaml"
        f.write_text(yaml.safe_dump({"name": "test", "nodes": nodes}))
        self.p = subprocess.Popen([sys.executable, "-m", "s2r.launch", str(f), "--isolated", "--grace", "15", *extra],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                  env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for raw in iter(self.p.stdout.readline, b""):
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, pattern: str, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ln in list(self.lines):
                m = re.search(pattern, ln)
                if m:
                    return m
            if self.p.poll() is not None and not self._t.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; output:\n{self.text}")

    def pids(self) -> dict[str, int]:
        return {m.group(1): int(m.group(2)) for ln in self.lines
                for m in [re.search(r"\[launch\] started (\w+) \(\w+, pid (\d+)\)", ln)] if m}

    def wait(self, timeout: float) -> int:
        try:
            code = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            raise AssertionError(f"launcher still running after {timeout} s; output:\n{self.text}")
        self._t.join(5)
        return code


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone too (its parent, the launcher, may not have reaped it yet)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except OSError:
        return True


def test_closed_loop_reach_through_the_ros_graph(tmp_path):
    out = tmp_path / "run"
    goals = [0.45, 0.25, 0.45, 0.45, -0.25, 0.30]
    nodes = [dict(DRIVER, log_level="warn"), dict(CAMERA, log_level="warn"),
             {"name": "mpc", "executable": "mpc_node", "required": True, "log_level": "warn",
              "parameters": {"config": "panda_sim", "driver": "driver"}},
             {"name": "sequencer", "executable": "reach_sequencer", "exit_when_done": True,
              "parameters": {"config": "panda_sim", "goals": goals, "out_dir": str(out), "tolerance_m": 0.01,
                             "dwell_s": 0.5, "goal_timeout_s": 20.0, "video_fps": 10.0}}]
    lp = LaunchProc(tmp_path, nodes)
    code = lp.wait(240)
    assert code == 0, lp.text
    assert "[launch] sequencer finished (exit code 0)" in lp.text
    assert any(ln.startswith("[sequencer] goal 2/2") for ln in lp.lines)      # prefixed progress lines
    s = json.loads((out / "summary.json").read_text())
    assert s["goals_reached"] == 2, s
    for r in s["per_goal"]:
        assert r["reached"] and r["final_error_mm"] < 10.0
    # the judge's own kinematics saw it: the last rows of each goal are within tolerance
    rows = list(csv.DictReader(open(out / "tracking.csv")))
    assert len(rows) > 100
    last = {int(r["goal"]): float(r["error_m"]) for r in rows}
    assert all(e < 0.01 for e in last.values()) and set(last) == {0, 1}
    assert float(s["driver"]["rate_hz"]) > 30 and float(s["driver"]["latency_samples"]) > 50
    import cv2
    cap = cv2.VideoCapture(str(out / "camera.mp4"))
    ok, frame = cap.read()
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    assert ok and frame.shape == (64, 64, 3) and n == s["video"]["frames"] >= 10
    assert all(gone(pid) for pid in lp.pids().values())


def test_ctrl_c_shuts_every_node_down_cleanly(tmp_path):
    lp = LaunchProc(tmp_path, [DRIVER, CAMERA])
    lp.wait_line(r"^\[driver\] .*active: publishing /joint_states")
    lp.wait_line(r"^\[camera\] .*camera 'scene' \(sim\)")
    pids = lp.pids()
    assert set(pids) == {"driver", "camera"}
    lp.p.send_signal(signal.SIGINT)                              # Ctrl-C
    assert lp.wait(60) == 0, lp.text
    assert "[launch] shutting down (signal)" in lp.text
    assert "Traceback" not in lp.text and "during shutdown" not in lp.text
    assert all(gone(pid) for pid in pids.values())


def test_nonzero_exit_when_a_required_node_dies(tmp_path):
    lp = LaunchProc(tmp_path, [DRIVER, CAMERA])
    lp.wait_line(r"^\[driver\] .*active: publishing /joint_states")
    lp.wait_line(r"^\[camera\] .*camera 'scene'")
    pids = lp.pids()
    os.kill(pids["camera"], signal.SIGKILL)                      # not required: the launch goes on
    lp.wait_line(r"\[launch\] camera died \(exit code signal SIGKILL\); the others keep running")
    time.sleep(0.5)
    assert lp.p.poll() is None
    os.kill(pids["driver"], signal.SIGKILL)                      # required: the launch ends, non-zero
    assert lp.wait(60) == 1, lp.text
    assert "required node driver died (exit code signal SIGKILL)" in lp.text
    assert all(gone(pid) for pid in pids.values())


def test_a_required_driver_with_bad_parameters_ends_the_launch(tmp_path):
    """The driver refuses to start (exit code 2) instead of sitting unconfigured; the launch ends
    at once, non-zero, and the other node is shut down."""
    t0 = time.monotonic()
    lp = LaunchProc(tmp_path, [dict(DRIVER, parameters=dict(DRIVER["parameters"], command_mode="sideways")),
                               CAMERA])
    assert lp.wait(60) == 1, lp.text
    assert time.monotonic() - t0 < 30, lp.text
    assert "[launch] required node driver exited (exit code 2: bad configuration); shutting down" in lp.text
    errors = [ln for ln in lp.lines if ln.startswith("[driver]")]
    assert len(errors) == 1 and "driver: parameter command_mode: must be one of position, velocity, effort; " \
        "got 'sideways'" in errors[0], lp.text
    assert "Traceback" not in lp.text and "did not stop" not in lp.text
    assert all(gone(pid) for pid in lp.pids().values())


def test_a_driver_whose_config_is_missing(tmp_path, capsys):
    """`s2r launch` refuses it before anything starts; a launcher that starts it anyway (the
    Launcher class, as the demo uses it) sees the node exit 2 within seconds, not a launch that
    stays up."""
    nodes = [dict(DRIVER, parameters=dict(DRIVER["parameters"], config=str(tmp_path / "gone.yaml")))]
    f = tmp_path / "b.yaml"
    f.write_text(yaml.safe_dump({"nodes": nodes}))
    assert launch.main([str(f), "--isolated"]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert cap.out == "" and "\n" not in err and err.startswith(
        f"bringup error: {f}: nodes[0].parameters.config: {tmp_path / 'gone.yaml'}: file not found "
        "(hardware config; looked in: ")
    out = io.StringIO()
    t0 = time.monotonic()
    assert launch.run_bringup(launch.load_bringup(f), isolated=True, out=out, grace_s=5.0) == 1
    assert time.monotonic() - t0 < 30
    text = out.getvalue()
    assert "[launch] required node driver exited (exit code 2: bad configuration)" in text, text
    assert re.search(r"^\[driver\] \[ERROR\] .*config error: .*gone\.yaml: file not found \(.*looked in: .*\)$",
                     text, re.M), text
    assert "Traceback" not in text


def test_every_node_exits_on_its_own_with_a_bad_configuration(tmp_path):
    """No node ever ran: the launch ends non-zero (it used to end 0 when every node had exited)."""
    lp = LaunchProc(tmp_path, [dict(CAMERA, parameters=dict(CAMERA["parameters"], camera="nosuch")),
                               {"name": "driver", "executable": "driver_node", "parameters": {"hardware": "moon"}}])
    assert lp.wait(60) == 1, lp.text
    assert "; no node left, shutting down" in lp.text
    assert lp.text.count("(exit code 2: bad configuration)") == 2, lp.text
    assert "Traceback" not in lp.text


@pytest.mark.parametrize("data, key, reason", [
    ({"nodes": []}, "nodes", "non-empty list"),
    ({"nodes": [{"name": "a"}]}, "nodes[0].executable", "missing"),
    ({"nodes": [{"name": "a", "executable": "driver_node", "colour": 1}]}, "nodes[0].colour", "unknown key"),
    ({"nodes": [{"name": "a", "executable": "x"}, {"name": "a", "executable": "y"}]}, "nodes[1].name", "duplicate"),
    ({"nodes": [{"name": "9lives", "executable": "x"}]}, "nodes[0].name", "not a valid ROS node name"),
    ({"nodes": [{"name": "a", "executable": "x", "output": "loud"}]}, "nodes[0].output", "prefix, screen, quiet"),
    ({"nodes": [{"name": "a", "executable": "x", "parameters": {"p": {"nested": 1}}}]},
     "nodes[0].parameters.p", "unsupported value"),
    ({"nodes": [{"name": "a", "executable": "x", "required": "yes"}]}, "nodes[0].required", "true/false"),
    ({"launch": 1, "nodes": [{"name": "a", "executable": "x"}]}, "launch", "unknown key"),
])
def test_bad_bringup_is_refused_in_one_line(tmp_path, capsys, data, key, reason):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    assert launch.main([str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{f}: {key}: " in err and reason in err


def test_bringups_and_overrides_parse(capsys):
    for name in ("sim_panda", "robot_panda"):
        b = launch.load_bringup(name)
        assert {n.name for n in b.nodes} >= {"driver", "mpc"} and b.node("driver").required
    assert launch.main(["sim_panda", "--set", "mpc.rate_hz=10", "--set", "camera.width=64", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "'rate_hz': 10" in out and "'width': 64" in out and "-m s2r_ros.driver_node" in out
    assert launch.main(["sim_panda", "--set", "nobody.x=1"]) == 2
    assert launch.main(["no_such_bringup"]) == 2
    assert "sim_panda" in capsys.readouterr().err            # the error lists the known bringups
    b = launch.load_bringup("hand_policy")                   # the hand: driver + policy, checked like the rest
    assert launch.main(["hand_policy", "--set", "policy.policy=/tmp/p.onnx", "--dry-run"]) == 0
    assert b.node("policy").parameters["config"] == b.node("driver").parameters["config"] == "hand_sim"
    # scheduled as robot_panda's control path: the driver's loop above the policy that answers it
    assert b.node("driver").parameters["realtime_priority"] > b.node("policy").parameters["realtime_priority"] > 0
    assert "'policy': '/tmp/p.onnx'" in capsys.readouterr().out


@pytest.mark.parametrize("executable", ["driver_node", "camera_node", "mpc_node", "policy_node", "reach_sequencer"])
def test_every_node_refuses_a_wrongly_typed_parameter_in_one_line(executable):
    """Each node validates its parameters with its model (s2r.core.schema.nodes): a wrong type is
    one line naming the parameter and exit 2, for every node, not a traceback and exit 1."""
    from s2r.core.ros_env import isolated_env

    p = subprocess.run([sys.executable, "-m", f"s2r_ros.{executable}", "--ros-args", "-p", "config:=5"],
                       capture_output=True, text=True, timeout=120, env=isolated_env(dict(os.environ)))
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(err) == 1, p.stderr
    assert "parameter config: expected a non-empty string, got int 5" in err[0], err
