"""`s2r launch` before and around its nodes, without ROS: hostile bringup files refused in one
line (the corpus in tests/data/hostile/bringups/, each file's first line saying what is expected),
every node checked before the first one starts, and the launch's exit status when nodes end
(supervision of real child processes)."""
import io
import re
import resource
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from s2r import launch
from s2r.core.yamlio import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((ROOT / "tests" / "data" / "hostile" / "bringups").glob("*.yaml"))
EXPECT = re.compile(rb"expect:\s*(.*?)\s*\|\s*(.*?)\s*$")


def expected(path: Path) -> tuple[str, str]:
    m = EXPECT.search(path.read_bytes().split(b"\n", 1)[0])
    assert m, f"{path.name}: the first line must say `expect: KEY | REASON`"
    return m.group(1).decode(), m.group(2).decode()


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def test_the_corpus_covers_the_cases():
    assert len(CORPUS) >= 12
    names = {p.stem for p in CORPUS}
    for case in ("billion_laughs_name", "duplicate_key_required", "invalid_utf8", "deep_nesting",
                 "unknown_node_key", "nodes_not_a_list", "duplicate_node_names", "node_name_path",
                 "unknown_executable", "foreign_package", "parameter_nested_map", "parameter_inf",
                 "missing_config"):
        assert case in names


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_hostile_bringup_is_one_line_within_budget(path):
    key, reason = expected(path)
    rss0 = _rss_kb()
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(ConfigError) as ei:
            b = launch.load_bringup(path)
            launch.check_bringup(b)
        elapsed = time.monotonic() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    e = ei.value
    msg = str(e)
    assert "\n" not in msg and len(msg) < 600, msg
    assert e.file == str(path) and e.key == key and reason in e.reason, msg
    assert elapsed < 2.0, f"{elapsed:.2f} s"
    assert peak < 200 * 2**20
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200 * 1024      # kB


def run_cli(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "s2r.cli", "launch", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("name", ["binary_garbage", "billion_laughs_name", "unknown_executable",
                                  "foreign_package", "missing_config"])
def test_cli_dry_run_refuses_in_one_line(name):
    path = ROOT / "tests" / "data" / "hostile" / "bringups" / f"{name}.yaml"
    key, reason = expected(path)
    r = run_cli(path, "--dry-run")
    assert r.returncode == 2, r
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and r.stdout == "", r
    assert err.startswith(f"bringup error: {path}: {key + ': ' if key else ''}") and reason in err, err


def test_cli_on_a_directory_a_device_and_a_missing_file(tmp_path):
    d = tmp_path / "bringup.yaml"
    d.mkdir()
    for target, reason in ((d, "is a directory"), ("/dev/null", "not a regular file"),
                           (tmp_path / "none.yaml", "file not found")):
        r = run_cli(target)
        assert r.returncode == 2, r
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and reason in r.stderr, r.stderr


def test_one_bringup_runs_another_robot_with_config(tmp_path):
    """--config sets the hardware config of every node that takes one; a config path is made
    absolute (nodes may start in another directory); a config that does not load is refused before
    any node starts, in one line."""
    cfg = tmp_path / "arm.yaml"
    cfg.write_text((ROOT / "hardware_configs" / "iiwa_sim.yaml").read_text())
    r = subprocess.run([sys.executable, "-m", "s2r.cli", "launch", "sim_panda", "--config", "arm.yaml", "--dry-run"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all(f"'config': '{cfg}'" in ln for ln in lines), r.stdout
    r = run_cli("sim_panda", "--config", "no_such_config", "--dry-run")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no_such_config: file not found" in r.stderr, r.stderr
    b = launch.parse_bringup({"nodes": [{"name": "x", "executable": "reach_sequencer", "parameters": {"goals": [1.0]}}]},
                             "b.yaml")
    with pytest.raises(ConfigError, match="b.yaml: --config: no node of this bringup takes a hardware config"):
        launch.apply_config(b, "iiwa_sim")


def test_an_unknown_executable_starts_nothing(tmp_path, capsys):
    """The first node is fine, the second cannot run: refused before the first starts."""
    b = launch.parse_bringup({"nodes": [{"name": "driver", "executable": "driver_node"},
                                        {"name": "helper", "executable": "no_such_node"}]}, "b.yaml")
    out = io.StringIO()
    lau = launch.Launcher(b, out=out)
    assert lau.run() == 2
    assert lau.procs == {} and "started" not in out.getvalue()
    err = capsys.readouterr().err.strip()
    assert err == ("bringup error: b.yaml: nodes[1].executable: s2r_ros has no node 'no_such_node' "
                   f"(nodes: {', '.join(launch.node_executables())})")
    # start() itself builds every command before it starts anything
    with pytest.raises(ConfigError, match="helper: executable"):
        lau.start(str(tmp_path))
    assert lau.procs == {}


def test_node_checks_do_not_import_the_nodes():
    code = ("import sys; from s2r import launch; "
            "[launch.node_module('s2r_ros', n) for n in launch.node_executables()]; "
            "print(sorted(launch.node_executables()), 'rclpy' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.stdout.strip() == ("['camera_node', 'driver_node', 'mpc_node', 'policy_node', 'reach_sequencer', "
                                "'recorder_node'] False"), r


def test_parameters_as_rcl_reads_them():
    b = launch.parse_bringup({"nodes": [{"name": "seq", "executable": "reach_sequencer",
                                         "parameters": {"goals": [0, 0.5, 1], "ids": [1, 2], "on": True}}]})
    assert b.node("seq").parameters == {"goals": [0.0, 0.5, 1.0], "ids": [1, 2], "on": True}
    assert all(type(x) is float for x in b.node("seq").parameters["goals"])      # rcl refuses mixed lists
    launch.apply_overrides(b, ["seq.goals=[1, 2.5]", "seq.name=x"])
    assert b.node("seq").parameters["goals"] == [1.0, 2.5]
    for bad, key in (("seq.rate=.inf", "--set seq.rate"), ("seq.x=[1, a]", "--set seq.x"),
                     ("seq.x={a: 1}", "--set seq.x")):
        with pytest.raises(ConfigError) as ei:
            launch.apply_overrides(b, [bad])
        assert key in str(ei.value) and "\n" not in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        launch.apply_overrides(b, ["nobody." + "x" * 10_000 + "=1"])
    assert len(str(ei.value)) < 200


def test_grace_must_be_a_sane_number(capsys):
    for g in ("nan", "inf", "-1"):
        with pytest.raises(SystemExit) as ei:
            launch.main(["sim_panda", "--grace", g, "--dry-run"])
        assert ei.value.code == 2
    assert "expected seconds" in capsys.readouterr().err


# ----------------------------------------------------------------------------- exit status
def supervise(nodes: list[dict], scripts: dict[str, str], stop_after: float | None = None):
    """Supervise real child processes (`python -c SCRIPT` per node) as the launcher supervises its
    nodes; optionally a Ctrl-C after `stop_after` seconds. (exit status, launcher output)."""
    b = launch.parse_bringup({"nodes": [dict(n, executable="driver_node") for n in nodes]})
    out = io.StringIO()
    lau = launch.Launcher(b, out=out, grace_s=5.0)
    for n in b.nodes:
        lau.procs[n.name] = subprocess.Popen([sys.executable, "-c", scripts[n.name]], start_new_session=True)
    if stop_after is not None:
        threading.Timer(stop_after, lau.stop_event.set).start()
    return lau._supervise(), out.getvalue()


SLEEP = "import signal, sys, time; signal.signal(signal.SIGINT, lambda *a: sys.exit(0)); time.sleep(60)"


def test_status_all_nodes_end_on_their_own():
    code, out = supervise([{"name": "a"}, {"name": "b"}], {"a": "pass", "b": "import time; time.sleep(0.3)"})
    assert code == 0, out
    code, out = supervise([{"name": "a"}, {"name": "b"}], {"a": "raise SystemExit(3)", "b": "pass"})
    assert code == 1, out                      # it used to be 0: nothing ran, all exited
    assert "[launch] a exited (exit code 3)" in out


def test_status_a_non_required_node_failed_then_ctrl_c():
    code, out = supervise([{"name": "a"}, {"name": "b"}], {"a": "raise SystemExit(2)", "b": SLEEP}, stop_after=1.0)
    assert code == 1, out
    assert "[launch] a exited (exit code 2: bad configuration); the others keep running" in out
    assert "shutting down (signal)" in out and "during shutdown" not in out


def test_status_a_required_node_with_a_bad_configuration():
    t0 = time.monotonic()
    code, out = supervise([{"name": "driver", "required": True}, {"name": "b"}],
                          {"driver": "raise SystemExit(2)", "b": SLEEP})
    assert code == 1 and time.monotonic() - t0 < 10, out
    assert "[launch] required node driver exited (exit code 2: bad configuration); shutting down" in out


def test_status_exit_when_done_and_a_clean_ctrl_c():
    code, out = supervise([{"name": "t", "exit_when_done": True}, {"name": "b"}],
                          {"t": "raise SystemExit(4)", "b": SLEEP})
    assert code == 4, out
    code, out = supervise([{"name": "t", "exit_when_done": True}, {"name": "b"}], {"t": "pass", "b": SLEEP})
    assert code == 0, out
    code, out = supervise([{"name": "a"}, {"name": "b"}], {"a": SLEEP, "b": SLEEP}, stop_after=0.5)
    assert code == 0, out
