"""A user's install: the wheels built from the repository (the core distribution `s2r-robotics` and
the ROS package `s2r_ros`) go into a fresh virtual environment, and every command that takes a name
(configs, bringups, presets, robots, experiments, the HIL suite) works from another directory.

The wheels are built without build isolation (no network: setuptools comes from this environment)
from a copy, so the checkout's build/ and egg-info are left alone. The fresh venv has no pip and no
packages of its own; this environment's pip installs the two wheels into it (`pip --python`). The
third-party dependencies (torch, rclpy, ...) are this environment's, put on the venv's path by a .pth
line (not its .pth files, so the checkout's editable install stays invisible): installing them again
would take minutes and prove nothing about s2r. Everything runs from an empty working directory with
$S2R_PATH and $PYTHONPATH unset: only the installed copies answer.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SOURCES = ["pyproject.toml", "README.md", "s2r", "sim", "drivers", "learning", "controllers",
           "hardware_configs", "robots", "ros_ws/src/s2r_ros"]
DIST = "s2r_robotics-0.1.0"


def _build_wheel(src: Path, out: Path) -> Path:
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out)], cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(core wheel, ROS wheel, venv folder, an empty working directory, the environment to run in)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for rel in SOURCES:
        s, d = REPO / rel, src / rel
        if s.is_dir():      # links stay links: s2r/data/ points into hardware_configs/, robots/, bringup/
            shutil.copytree(s, d, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "install", "log"))
        else:
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, d)
    core = _build_wheel(src, tmp / "dist-core")
    ros = _build_wheel(src / "ros_ws/src/s2r_ros", tmp / "dist-ros")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = sysconfig.get_paths()["purelib"]
    lines = [deps] + (["import ros_wheels_bootstrapper"] if Path(deps, "ros_wheels_bootstrapper.pth").exists() else [])
    (site / "zz_s2r_test_dependencies.pth").write_text("\n".join(lines) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                        "--no-compile", "-q", str(core), str(ros)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    cwd = tmp / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("S2R_PATH", "PYTHONPATH", "AMENT_PREFIX_PATH")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return core, ros, venv, cwd, env


def run(installed, *args, timeout=180):
    *_, cwd, env = installed
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def s2r(installed, *args, **kw):
    return run(installed, str(installed[2] / "bin" / "s2r"), *args, **kw)


def python(installed, *args, **kw):
    return run(installed, str(installed[2] / "bin" / "python"), *args, **kw)


class Background:
    """A long-running command from the install, its output collected line by line."""

    def __init__(self, installed, *args):
        *_, cwd, env = installed
        self.p = subprocess.Popen([str(installed[2] / "bin" / "s2r"), *args], cwd=cwd, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=lambda: self.lines.extend(self.p.stdout), daemon=True)
        self._t.start()

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for ln in list(self.lines):
                if m := re.search(pattern, ln):
                    return m
            if self.p.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(self.lines)}")

    def stop(self, timeout: float = 60) -> int:
        self.p.send_signal(signal.SIGINT)
        try:
            return self.p.wait(timeout)
        finally:
            if self.p.poll() is None:
                os.killpg(self.p.pid, signal.SIGKILL)
            self._t.join(5)


def test_the_wheels_hold_the_data_under_one_import_name(installed):
    core, ros = installed[0], installed[1]
    assert core.name.startswith(DIST + "-") and ros.name.startswith("s2r_ros-0.1.0-")
    names = set(zipfile.ZipFile(core).namelist())
    # nothing at the top level but s2r/ and its metadata: no `sim`, `learning`, ... to collide with
    assert {n.split("/")[0] for n in names} == {"s2r", f"{DIST}.dist-info"}
    want = {f"s2r/data/hardware_configs/{p.name}" for p in (REPO / "hardware_configs").iterdir() if p.is_file()}
    want |= {f"s2r/data/bringup/{p.name}" for p in (REPO / "ros_ws/src/s2r_ros/bringup").glob("*.yaml")}
    want |= {f"s2r/data/robots/{p.name}" for p in (REPO / "robots").iterdir() if p.is_file()}
    want |= {f"s2r/sim/presets/{p.name}" for p in (REPO / "sim/presets").glob("*.yaml")}
    want |= {f"s2r/learning/experiments/{p.name}" for p in (REPO / "learning/experiments").glob("*.yaml")}
    want |= {"s2r/" + p.relative_to(REPO).as_posix() for p in (REPO / "sim/assets").rglob("*") if p.is_file()}
    want |= {"s2r/hil/plugin.py", "s2r/hil/test_hil.py", "s2r/core/resources.py", "s2r/sim/tasks/arm.py",
             "s2r/controllers/ilqr.py", "s2r/drivers/sim_driver.py", "s2r/learning/gps.py"}
    assert len(want) > 30 and not want - names, sorted(want - names)
    eps = zipfile.ZipFile(core).read(f"{DIST}.dist-info/entry_points.txt").decode()
    assert "[pytest11]\ns2r.hil.plugin = s2r.hil.plugin" in eps and "s2r = s2r.cli:main" in eps
    meta = zipfile.ZipFile(core).read(f"{DIST}.dist-info/METADATA").decode()
    assert "Name: s2r-robotics" in meta and "Provides-Extra: hil" in meta
    ros_meta = next(zipfile.ZipFile(ros).read(n).decode() for n in zipfile.ZipFile(ros).namelist()
                    if n.endswith("dist-info/METADATA"))
    assert "Requires-Dist: s2r-robotics" in ros_meta


def test_the_installed_copies_are_the_ones_imported(installed):
    venv = installed[2]
    r = python(installed, "-c", "import s2r, s2r.sim, s2r.drivers, s2r_ros; from s2r.core import resources; "
                                "print(s2r.__file__, s2r.sim.__file__, s2r.drivers.__file__, s2r_ros.__file__, "
                                "resources.packaged_dir('preset'))")
    assert r.returncode == 0, r.stderr
    assert all(p.startswith(str(venv)) for p in r.stdout.split()), r.stdout
    for top in ("sim", "learning", "drivers", "controllers"):      # the folders' names stay free
        r = python(installed, "-c", f"import {top}")
        assert r.returncode == 1 and f"No module named '{top}'" in r.stderr, (top, r.stdout, r.stderr)


def test_check_and_launch_from_another_directory(installed):
    venv = installed[2]
    r = s2r(installed, "check", "panda_sim", "--no-connect")
    assert r.returncode == 0 and r.stdout.startswith("OK  panda_sim: 'panda_sim', robot panda"), r.stdout + r.stderr
    r = s2r(installed, "check", "panda_simm", "--no-connect")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "looked in: path panda_simm, ./hardware_configs, packaged:" in r.stderr and str(venv) in r.stderr
    r = s2r(installed, "launch", "sim_panda", "--dry-run")
    assert r.returncode == 0 and "driver_node" in r.stdout, r.stdout + r.stderr
    # the nodes of the installed s2r_ros start, run and stop on Ctrl-C
    lp = Background(installed, "launch", "sim_panda", "--isolated", "--set", "camera.rate_hz=5.0")
    try:
        lp.wait_for(r"^\[driver\] .*active: publishing /joint_states")
        lp.wait_for(r"^\[launch\] started mpc \(mpc_node, pid \d+\)")
    finally:
        code = lp.stop()
    text = "".join(lp.lines)
    assert code == 0 and "Traceback" not in text, text


def test_train_and_eval_from_another_directory(installed):
    cwd = installed[3]
    r = s2r(installed, "train", "gps", "--task", "ArmReach", "--iterations", "1", "--conditions", "1",
            "--samples", "2", "--eval-episodes", "1", "--policy-steps", "20", "--run-dir", "run", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = cwd / "run"
    assert {"policy.onnx", "policy.pt2", "checkpoint.pt", "experiment.yaml"} <= {p.name for p in run_dir.iterdir()}
    assert "experiment: reach_state" in r.stdout          # the packaged recipe was found by name
    r = s2r(installed, "eval", "run/policy.onnx", "--task", "ArmReach", "--episodes", "2", "--randomize", "default",
            timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^s2r/ArmReach-v0: success \d/2 = \d+% \(95% Wilson interval", r.stdout, re.M), r.stdout


def test_gym_make_with_a_preset_and_another_arm(installed):
    r = python(installed, "-c", "import gymnasium as gym\n"
                                "env = gym.make('s2r.sim.tasks:s2r/ArmReach-v0', randomization='default', "
                                "config='iiwa_sim')\n"
                                "obs, _ = env.reset(seed=0)\n"
                                "obs, rew, term, trunc, _ = env.step(env.action_space.sample())\n"
                                "print(env.unwrapped.randomizer.name, len(env.unwrapped.randomizer.params), "
                                "float(rew), env.unwrapped.description.name)\n"
                                "env.close()")
    assert r.returncode == 0, r.stderr
    name, n_params, rew, robot = r.stdout.split()
    assert name == "default" and int(n_params) > 5 and float(rew) == float(rew) and robot == "iiwa"


def test_hil_suite_runs_from_the_install(installed):
    r = s2r(installed, "hil", "hand_sim", "-k", "connect or bad_commands")
    assert r.returncode == 0 and "2/2 checks passed" in r.stdout, r.stdout + r.stderr
    # plain pytest: the plugin comes from the installed entry point, the tests from the package
    r = python(installed, "-m", "pytest", "--pyargs", "s2r.hil", "--hardware", "hand_sim", "-k", "connect_and_spec",
               "-v", "-p", "no:cacheprovider")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "plugins: s2r-robotics-0.1.0" in r.stdout, r.stdout
    assert "test_hil.py::test_connect_and_spec[hand_sim] PASSED" in r.stdout, r.stdout


def test_emulate_from_another_directory(installed):
    em = Background(installed, "emulate", "dynamixel", "leap_hand", "--fast")
    try:
        em.wait_for(r"port: /dev/\S+", timeout=60)
    finally:
        code = em.stop(timeout=30)
    assert code == 0 and "stopped" in "".join(em.lines), "".join(em.lines)
