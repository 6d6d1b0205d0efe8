"""The wheel carries its data: built from a copy of the sources and installed into a bare folder, the
commands that take a name (configs, bringups, presets, the HIL suite) work from another directory.

The wheel is built without build isolation (no network: setuptools comes from this environment),
from a copy so that the checkout's build/ and s2r.egg-info are left alone, and installed with
--no-deps --target; the dependencies are this environment's. The checks run with that folder first
on sys.path, from an empty working directory, with $S2R_PATH unset: only the packaged copies answer.
"""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SOURCES = ["pyproject.toml", "README.md", "s2r", "sim", "drivers", "learning", "controllers", "hardware_configs", "robots",
           "ros_ws/src/s2r_ros/bringup"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel path, install folder, an empty working directory, the environment to run in)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for rel in SOURCES:
        s, d = REPO / rel, src / rel
        if s.is_dir():      # links stay links: s2r/data/ points into hardware_configs/ and bringup/
            shutil.copytree(s, d, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, d)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp / "dist")], cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = (tmp / "dist").glob("s2r-*.whl")
    site = tmp / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target",
                        str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    cwd = tmp / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("S2R_PATH", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    return wheel, site, cwd, env


def run(installed, *args, timeout=180):
    _, _, cwd, env = installed
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_wheel_holds_the_data(installed):
    wheel = installed[0]
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {f"s2r/data/hardware_configs/{p.name}" for p in (REPO / "hardware_configs").iterdir() if p.is_file()}
    want |= {f"s2r/data/bringup/{p.name}" for p in (REPO / "ros_ws/src/s2r_ros/bringup").glob("*.yaml")}
    want |= {f"s2r/data/robots/{p.name}" for p in (REPO / "robots").iterdir() if p.is_file()}
    want |= {f"sim/presets/{p.name}" for p in (REPO / "sim/presets").glob("*.yaml")}
    want |= {p.relative_to(REPO).as_posix() for p in (REPO / "sim/assets").rglob("*") if p.is_file()}
    want |= {"s2r/hil/plugin.py", "s2r/hil/test_hil.py", "s2r/core/resources.py"}
    assert len(want) > 20 and not want - names, sorted(want - names)
    eps = zipfile.ZipFile(wheel).read("s2r-0.1.0.dist-info/entry_points.txt").decode()
    assert "[pytest11]\ns2r.hil.plugin = s2r.hil.plugin" in eps
    meta = zipfile.ZipFile(wheel).read("s2r-0.1.0.dist-info/METADATA").decode()
    assert "Provides-Extra: hil" in meta and "pytest>=8; extra == \"hil\"" in meta


def test_installed_copy_is_the_one_imported(installed):
    site = installed[1]
    r = run(installed, "-c", "import s2r, sim, drivers; from s2r.core import resources; "
                             "print(s2r.__file__, sim.__file__, drivers.__file__, resources.packaged_dir('preset'))")
    assert r.returncode == 0, r.stderr
    assert all(p.startswith(str(site)) for p in r.stdout.split()), r.stdout


def test_check_launch_and_a_missing_name_from_another_directory(installed):
    site = installed[1]
    r = run(installed, "-m", "s2r", "check", "panda_sim", "--no-connect")
    assert r.returncode == 0 and r.stdout.startswith("OK  panda_sim: 'panda_sim', robot panda"), r.stdout + r.stderr
    r = run(installed, "-m", "s2r", "launch", "sim_panda", "--dry-run")
    assert r.returncode == 0 and "driver" in r.stdout, r.stdout + r.stderr
    r = run(installed, "-m", "s2r", "check", "panda_simm", "--no-connect")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"looked in: path panda_simm, ./hardware_configs, packaged:{site}/s2r/data/hardware_configs;" in r.stderr


def test_gym_make_with_a_preset_and_another_arm_from_another_directory(installed):
    r = run(installed, "-c", "import gymnasium as gym, sim.tasks\n"
                             "env = gym.make('s2r/ArmReach-v0', randomization='default', config='iiwa_sim')\n"
                             "obs, _ = env.reset(seed=0)\n"
                             "obs, rew, term, trunc, _ = env.step(env.action_space.sample())\n"
                             "print(env.unwrapped.randomizer.name, len(env.unwrapped.randomizer.params), float(rew),\n"
                             "      env.unwrapped.description.name)\n"
                             "env.close()")
    assert r.returncode == 0, r.stderr
    name, n_params, rew, robot = r.stdout.split()
    assert name == "default" and int(n_params) > 5 and float(rew) == float(rew) and robot == "iiwa"


def test_hil_suite_runs_from_the_install(installed):
    r = run(installed, "-m", "s2r", "hil", "hand_sim", "-k", "connect or bad_commands")
    assert r.returncode == 0 and "2/2 checks passed" in r.stdout, r.stdout + r.stderr
    # plain pytest: the plugin comes from the installed entry point, the tests from the package
    r = run(installed, "-m", "pytest", "--pyargs", "s2r.hil", "--hardware", "hand_sim", "-k", "connect_and_spec",
            "-v", "-p", "no:cacheprovider")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "plugins: s2r-0.1.0" in r.stdout and "test_hil.py::test_connect_and_spec[hand_sim] PASSED" in r.stdout, \
        r.stdout
