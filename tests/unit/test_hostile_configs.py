"""Hostile hardware configs and randomization presets (tests/data/hostile/): every file is answered
with one line naming the key path and the reason, within 2 s and 200 MB, never a traceback.

Each corpus file's first line says what it is and what the answer contains:
``# <what>. expect: <key path> | <reason>`` (``expect-at-connect`` for a valid file the robot
model refuses when the driver connects). A few more hostile files are generated here instead of
committed: one over the size limit, one just under it, 100k-deep nesting, a 900 kB name.

All files go through one subprocess (`RUNNER`), which measures each file's time and the growth of
the process's peak resident size, then (in a second pass) its peak of Python allocations
(tracemalloc, which would slow the first pass).
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "hostile"
HEADER = re.compile(r"^# (?P<what>.*)\. (?P<tag>expect|expect-at-connect): (?P<key>.*?) \| (?P<reason>.*)$")
BUDGET_S, BUDGET_MB = 2.0, 200.0

RUNNER = r"""
import json, resource, sys, time, tracemalloc
from s2r.core.config import load_config
from s2r.core.yamlio import ConfigError
from s2r.sim.randomization import Randomizer, RandomizationError
from s2r.drivers import DriverError, open_driver
import s2r.drivers.dynamixel_driver, s2r.drivers.ros2_bridge, s2r.drivers.sim_driver   # imported before measuring

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

def answer(path, kind, connect):
    try:
        if kind == "preset":
            Randomizer.load(path)
        else:
            cfg = load_config(path)
            if connect:
                open_driver(cfg, "sim", realtime=False).disconnect()
    except (ConfigError, RandomizationError, DriverError) as e:
        return type(e).__name__, str(e)
    except BaseException as e:     # anything else fails the test, reported with its type
        return "UNEXPECTED " + type(e).__name__, str(e)[:500]
    return None, None

jobs, out = json.load(sys.stdin), []
for job in jobs:                   # time and peak RSS growth, without tracemalloc's overhead
    rss0, t0 = rss_mb(), time.perf_counter()
    error, message = answer(*job)
    out.append(dict(path=job[0], error=error, message=message, seconds=time.perf_counter() - t0,
                    rss_growth_mb=rss_mb() - rss0))
tracemalloc.start()
for job, rec in zip(jobs, out):    # the peak of Python allocations while answering
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    answer(*job)
    rec["peak_mb"] = (tracemalloc.get_traced_memory()[1] - base) / 2**20
json.dump(out, sys.stdout)
"""


def expectation(path: Path) -> dict:
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8")
    m = HEADER.match(first)
    assert m, f"{path}: the first line must say what the file is and what is expected"
    return m.groupdict()


def corpus_files():
    return sorted((CORPUS / "configs").glob("*.yaml")) + sorted((CORPUS / "presets").glob("*.yaml"))


def generated(tmp: Path) -> dict[Path, dict]:
    """Hostile files too big to commit, with what their answer contains."""
    from s2r.core.yamlio import MAX_BYTES, MAX_NODES
    cases = {
        "over_size_limit.yaml": (b"name: x\n" + b"#" * (MAX_BYTES + 10) + b"\n", "", "larger than 1024 KiB"),
        "many_values.yaml": (b"x: [" + b", ".join([b"1"] * (MAX_BYTES // 4)) + b"]\n", "line",
                             f"more than {MAX_NODES} values"),
        "nesting_100k.yaml": (b"name: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "line",
                              "nesting depth"),
        "huge_name.yaml": (b"name: " + b"x" * 900_000 + b"\nrobot: panda\ncontrol_rate_hz: 100\n", "name",
                           "longer than 128 characters: 'xxxx"),
        "huge_key.yaml": (b"name: x\n? " + b"k" * 500_000 + b"\n: 1\nrobot: panda\ncontrol_rate_hz: 100\n"
                          b"driver: {type: sim}\njoints: [{name: panda_joint1, limits: {position: [-1, 1], "
                          b"velocity: 1, effort: 1}}]\n", "'kkkk", "unknown key"),
    }
    out = {}
    for name, (data, key, reason) in cases.items():
        p = tmp / name
        p.write_bytes(data)
        assert len(data) < MAX_BYTES or name == "over_size_limit.yaml"
        out[p] = dict(what=name, tag="expect", key=key, reason=reason)
    return out


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    expected = {p: expectation(p) for p in corpus_files()}
    expected.update(generated(tmp))
    jobs = [(str(p), "preset" if p.parent.name == "presets" else "config", e["tag"] == "expect-at-connect")
            for p, e in expected.items()]
    r = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(jobs), capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return {Path(a["path"]): (a, expected[Path(a["path"])]) for a in json.loads(r.stdout)}


def test_the_corpus_is_large_and_documented():
    files = corpus_files()
    assert len([f for f in files if f.parent.name == "configs"]) >= 30
    assert len([f for f in files if f.parent.name == "presets"]) >= 10
    for f in files:
        expectation(f)


IDS = [f"{p.parent.name}/{p.stem}" for p in corpus_files()]


@pytest.mark.parametrize("path", corpus_files(), ids=IDS)
def test_hostile_file_is_one_line_quickly_in_bounded_memory(answers, path):
    check(*answers[path])


@pytest.mark.parametrize("name", ["over_size_limit", "many_values", "nesting_100k", "huge_name", "huge_key"])
def test_generated_hostile_file(answers, name):
    (got, want), = [v for p, v in answers.items() if p.stem == name]
    check(got, want)


def check(got: dict, want: dict) -> None:
    where = f"{got['path']} ({want['what']})"
    assert got["error"] in ("ConfigError", "RandomizationError"), f"{where}: {got['error']}: {got['message']}"
    msg = got["message"]
    assert "\n" not in msg, where
    assert msg.startswith(got["path"] + ": "), f"{where}: {msg}"
    rest = msg[len(got["path"]) + 2:]
    assert rest.startswith(want["key"]), f"{where}: expected key {want['key']!r}: {msg}"
    assert want["reason"] in rest, f"{where}: expected {want['reason']!r}: {msg}"
    assert len(rest) < 400, f"{where}: an unbounded message ({len(rest)} characters)"
    assert got["seconds"] < BUDGET_S, f"{where}: {got['seconds']:.2f} s"
    assert got["peak_mb"] < BUDGET_MB and got["rss_growth_mb"] < BUDGET_MB, \
        f"{where}: {got['peak_mb']:.0f} MB allocated, peak RSS +{got['rss_growth_mb']:.0f} MB"


# ------------------------------------------------------------------------------ s2r check
def s2r_check(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "s2r", "check", *map(str, args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_s2r_check_answers_hostile_files_with_one_line_and_exit_2(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_bytes(b"[" * 100_000)
    cfgs = CORPUS / "configs"
    cases = {   # file -> what stderr's one line contains
        cfgs / "laughs_name.yaml": "counting each alias expanded",
        cfgs / "binary_garbage.yaml": "not UTF-8 text",
        cfgs / "rate_tiny.yaml": "control_rate_hz: must be in [1, 10000], got 1e-300",
        cfgs / "position_inf.yaml": "joints[0].limits.position[",
        cfgs / "joint_model_lacks.yaml": "joints[1].name: robot 'panda' (panda.urdf) has no movable joint 'panda_elbow'",
        cfgs / "camera_parent_model_lacks.yaml": "cameras[0].extrinsics.parent: robot 'panda' (panda.urdf) has no link",
        tmp_path: "is a directory",
        deep: "nesting depth",
    }
    procs = {f: s2r_check(f) for f in cases}
    for f, want in cases.items():
        out, err = procs[f].communicate(timeout=120)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert procs[f].returncode == 2, (f, out, err)
        assert "Traceback" not in err and len(lines) == 1, (f, err)
        assert lines[0].startswith(f"config error: {f}: ") and want in lines[0], (f, lines[0])
        assert "OK" not in out, (f, out)       # nothing claimed valid before the refusal


def test_s2r_check_says_ok_only_after_connecting_or_labels_validation_only(tmp_path):
    absent = tmp_path / "dxl.yaml"          # a valid file whose serial port does not exist
    absent.write_text("name: dxl\nhardware: real\ncontrol_rate_hz: 100\n"
                      "driver: {type: dynamixel, port: /dev/s2r-no-such-port}\n"
                      "joints: [{name: j0, id: 1, limits: {position: [-1, 1], velocity: 5, effort: 0.5}}]\n")
    validated, connected = s2r_check(absent, "--no-connect"), s2r_check("hand_sim")
    out, err = validated.communicate(timeout=120)
    assert validated.returncode == 0, err
    assert out.startswith("OK  ") and "(validated only, not connected: --no-connect)" in out
    out, err = connected.communicate(timeout=120)
    assert connected.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("OK  ") and "validated only" not in lines[0]
    assert lines[1] == "connected: backend sim" and "measured q:" in out


def test_s2r_check_reports_a_driver_that_does_not_connect_in_one_line(tmp_path):
    """A real driver whose port does not exist, with `hardware: real` (no fallback)."""
    f = tmp_path / "dxl.yaml"
    f.write_text("name: dxl\nhardware: real\ncontrol_rate_hz: 100\n"
                 "driver: {type: dynamixel, port: /dev/s2r-no-such-port}\n"
                 "joints: [{name: j0, id: 1, limits: {position: [-1, 1], velocity: 5, effort: 0.5}}]\n")
    p = s2r_check(f)
    out, err = p.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert p.returncode == 2 and "Traceback" not in err and "OK" not in out
    assert lines[-1].startswith(f"error: {f}: driver: the dynamixel driver did not connect: cannot open "
                                "/dev/s2r-no-such-port"), lines
