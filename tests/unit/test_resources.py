"""One lookup order for names (s2r.core.resources): a path, ./<kind dir>, $S2R_PATH, the packaged copies.

Each test runs from an empty temporary directory with $S2R_PATH unset unless it sets them."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from s2r.core import resources
from s2r.core.config import ConfigError, load_config, resolve_config_path
from s2r.core.resources import KINDS, Kind, ResourceNotFound
from s2r.launch import load_bringup
from s2r.sim.randomization import RandomizationError, Randomizer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def elsewhere(tmp_path, monkeypatch):
    """An empty working directory, no $S2R_PATH: only the packaged copies can answer."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv(resources.ENV_VAR, raising=False)
    return cwd


def config_named(folder: Path, stem: str, name: str) -> Path:
    """A copy of panda_sim.yaml, saved as folder/stem.yaml, whose `name:` tells the copies apart."""
    data = yaml.safe_load((REPO / "hardware_configs" / "panda_sim.yaml").read_text())
    data["name"] = name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.yaml").write_text(yaml.safe_dump(data))
    return folder / f"{stem}.yaml"


def test_packaged_copies_answer_from_anywhere():
    assert resolve_config_path("panda_sim") == resources.packaged_dir("hardware_config") / "panda_sim.yaml"
    assert load_config("panda_sim").robot == "panda"
    b = load_bringup("sim_panda")
    assert Path(b.path) == resources.packaged_dir("bringup") / "sim_panda.yaml" and b.node("driver")
    assert Randomizer.load("default").name == "default" and Randomizer.load("default").params
    assert resources.resolve("asset", "hand16").name == "hand16.urdf"
    assert resources.resolve("asset", "panda_lite/panda.urdf").is_file()
    # every kind's packaged folder exists and holds files of that kind
    for kind, k in KINDS.items():
        assert list(resources.packaged_dir(kind).glob(f"*{k.suffix}")), kind


def test_order_path_then_cwd_then_search_path_then_packaged(tmp_path, elsewhere, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    config_named(b / "hardware_configs", "panda_sim", "from_b")
    config_named(a / "hardware_configs", "panda_sim", "from_a")
    monkeypatch.setenv(resources.ENV_VAR, os.pathsep.join([str(tmp_path / "missing"), str(a), str(b)]))
    assert load_config("panda_sim").name == "from_a"                 # first $S2R_PATH entry holding it
    config_named(elsewhere / "hardware_configs", "panda_sim", "from_cwd")
    assert load_config("panda_sim").name == "from_cwd"               # ./hardware_configs before $S2R_PATH
    assert load_config("panda_sim.yaml").name == "from_cwd"          # the suffix may be given
    config_named(elsewhere, "panda_sim", "bare_path")
    assert load_config("panda_sim.yaml").name == "bare_path"         # an existing path wins over any name
    assert load_config(str(b / "hardware_configs" / "panda_sim.yaml")).name == "from_b"
    # names only in the later places are still found there
    config_named(b / "hardware_configs", "only_b", "only_b")
    assert load_config("only_b").name == "only_b"
    assert load_config("hand_sim").robot == "hand16"                 # nowhere but packaged


def test_a_folder_named_like_a_file_does_not_hide_the_lookup(elsewhere):
    """A run folder `./panda_sim/` in the working directory: the bare name still finds the config;
    a path-like name is taken as the path it is."""
    (elsewhere / "panda_sim").mkdir()
    assert resources.resolve("hardware_config", "panda_sim").name == "panda_sim.yaml"
    assert load_config("panda_sim").robot == "panda"
    assert resources.find("hardware_config", "./panda_sim") == Path("./panda_sim")


def test_portable_names_find_the_same_file_from_anywhere(tmp_path, elsewhere):
    """What a run records and a launcher hands its nodes: a packaged copy's bare name; a file found
    only from here (./hardware_configs, a relative path) as its absolute path."""
    assert resources.portable("hardware_config", "panda_sim") == "panda_sim"
    own = config_named(elsewhere / "hardware_configs", "my_arm", "mine")
    assert resources.portable("hardware_config", "my_arm") == str(own.resolve())
    assert resources.portable("hardware_config", "hardware_configs/my_arm.yaml") == str(own.resolve())
    assert resources.portable("hardware_config", "nowhere") == "nowhere"


def test_names_first_in_order_wins(tmp_path, elsewhere, monkeypatch):
    config_named(elsewhere / "hardware_configs", "hand_sim", "mine")
    monkeypatch.setenv(resources.ENV_VAR, str(tmp_path / "sp"))
    config_named(tmp_path / "sp" / "hardware_configs", "extra_robot", "extra")
    found = resources.names("hardware_config")
    assert found["hand_sim"] == elsewhere / "hardware_configs" / "hand_sim.yaml"
    assert found["extra_robot"].parent == tmp_path / "sp" / "hardware_configs"
    assert found["panda_sim"].parent == resources.packaged_dir("hardware_config")
    assert list(found) == sorted(found)


def test_every_kind_follows_the_search_path(tmp_path, monkeypatch):
    sp = tmp_path / "sp"
    (sp / "presets").mkdir(parents=True)
    (sp / "presets" / "mine.yaml").write_text("groups: {dynamics: {gain_scale: {dist: uniform, low: 0.9, high: 1.1}}}\n")
    (sp / "bringup").mkdir()
    (sp / "bringup" / "two.yaml").write_text("nodes: [{name: driver, executable: driver_node}]\n")
    with pytest.raises(RandomizationError, match="unknown randomization preset 'mine'"):
        Randomizer.load("mine")
    monkeypatch.setenv(resources.ENV_VAR, str(sp))
    r = Randomizer.load("mine")
    assert r.name == "mine" and list(r.params) == ["gain_scale"]
    assert [n.name for n in load_bringup("two").nodes] == ["driver"]
    assert Randomizer.load("default").params                          # packaged still behind it


def test_packaged_fallback_is_the_installed_package_not_the_checkout(tmp_path, monkeypatch):
    """The packaged folder follows the package wherever it is installed (a temporary copy here)."""
    site = tmp_path / "site"
    data = site / "fake_s2r_pkg" / "data" / "hardware_configs"
    config_named(data, "copied", "copied_robot")
    (site / "fake_s2r_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(KINDS, "hardware_config",
                        Kind("hardware config", "hardware_configs", ".yaml", "fake_s2r_pkg", "data/hardware_configs"))
    assert resources.packaged_dir("hardware_config") == site / "fake_s2r_pkg" / "data" / "hardware_configs"
    assert load_config("copied").name == "copied_robot"
    with pytest.raises(ConfigError, match="file not found"):
        load_config("panda_sim")                                      # the checkout's copy is not consulted


def test_not_found_is_one_line_listing_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv(resources.ENV_VAR, os.pathsep.join([str(tmp_path / "p1"), "", str(tmp_path / "p2")]))
    with pytest.raises(ConfigError) as e:
        load_config("panda_simm")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("panda_simm: file not found (hardware config; looked in: ")
    assert isinstance(e.value, ResourceNotFound)
    looked = e.value.looked_in
    assert looked[0] == "path panda_simm" and looked[1] == "./hardware_configs"
    assert looked[2:4] == [f"$S2R_PATH:{tmp_path / 'p1' / 'hardware_configs'}",
                           f"$S2R_PATH:{tmp_path / 'p2' / 'hardware_configs'}"]
    assert looked[4] == f"packaged:{resources.packaged_dir('hardware_config')}" and len(looked) == 5
    assert "known: hand_sim, " in msg and "panda_sim" in msg

    with pytest.raises(ConfigError, match=r"^.*sim_pand: file not found \(bringup; looked in: path sim_pand, "
                                          r"\./bringup, .*known: hand_policy, robot_panda, sim_panda\)$"):
        load_bringup("sim_pand")
    with pytest.raises(RandomizationError) as e:
        Randomizer.load("defualt")
    assert "\n" not in str(e.value) and "looked in: path defualt, ./presets, " in str(e.value)
    assert "known: default, hand, off, stress" in str(e.value)


def test_paths_are_not_looked_up_and_hostile_names_stay_one_line(tmp_path):
    with pytest.raises(ResourceNotFound) as e:
        resources.resolve("hardware_config", str(tmp_path / "nowhere.yaml"))
    assert e.value.looked_in == [f"path {tmp_path / 'nowhere.yaml'}"]       # absolute: that path only
    with pytest.raises(ResourceNotFound) as e:
        resources.resolve("hardware_config", "../hardware_configs/panda_sim")
    assert len(e.value.looked_in) == 1                                       # never climbs out of a folder
    for name in ("x" * 5000, "a\0b", "line\nbreak", "é" * 300):
        with pytest.raises(ConfigError) as e:
            load_config(name)
        assert "\n" not in str(e.value) and len(str(e.value)) < 1000, name
    with pytest.raises(ValueError, match="unknown resource kind 'urdf' \\(known: hardware_config, preset, "):
        resources.resolve("urdf", "x")


def test_hil_without_pytest_is_one_line():
    code = ("import sys; sys.modules['pytest'] = None\n"
            "from s2r.cli import main; sys.exit(main(['hil', 'hand_sim']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == "", r
    assert r.stderr.strip() == ("error: `s2r hil` runs the suite with pytest, which is not installed: "
                                "pip install 's2r-robotics[hil]'")
