"""Robot descriptions (robots/*.yaml, s2r.core.robot_description): one registry for every layer,
checked against the URDF; a new arm added as two files, no code."""
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pybullet_data
import pytest
import yaml

import s2r.sim.tasks  # noqa: F401  (registers the tasks)
from s2r.core import resources
from s2r.core.config import ConfigError, load_config
from s2r.core.robot_description import load_robot, robot_names
from s2r.sim.workspace import workspace, workspace_scale

ROOT = Path(__file__).resolve().parents[2]
IIWA = "pybullet_data:kuka_iiwa/model.urdf"
IIWA_ARM = [f"lbr_iiwa_joint_{i}" for i in range(1, 8)]


def description(**over) -> dict:
    d = {"name": "my_arm", "urdf": IIWA, "ee_link": "lbr_iiwa_link_7", "tcp_offset": [0, 0, 0.05],
         "home": {"lbr_iiwa_joint_2": 0.5, "lbr_iiwa_joint_4": -1.6, "lbr_iiwa_joint_6": 1.05},
         "groups": {"arm": list(IIWA_ARM)}}
    d.update(over)
    return d


def write(tmp_path, data, name="my_arm.yaml") -> Path:
    f = tmp_path / name
    f.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return f


def test_every_packaged_description_loads_and_matches_its_urdf():
    names = robot_names()
    assert {"panda", "hand16", "hand16_lift", "iiwa", "xarm6"} <= set(names)
    for name in names:
        r = load_robot(name)
        info = r.urdf_info
        assert r.name == name and Path(r.urdf).is_file()
        assert r.ee_link in info.links
        for group in r.groups.values():
            assert set(group) <= set(info.movable_joints)
    panda = load_robot("panda")
    assert panda.tcp_offset == (0.0, 0.0, 0.1034) and panda.arm_joints[0] == "panda_joint1"
    assert panda.gripper_joints == ("panda_finger_joint1", "panda_finger_joint2")
    assert panda.gains["panda_joint7"] == (50.0, 15.0)
    # the decimated visuals are the packaged asset, loaded with their material colours
    import pybullet
    path, flags = dict(panda.visual_variants)["decimated"]
    assert Path(path).is_file() and flags == pybullet.URDF_USE_MATERIAL_COLORS_FROM_MTL


def test_every_shipped_config_names_a_description_and_uses_its_gains():
    for name, path in resources.names("hardware_config").items():
        cfg = load_config(path)
        if cfg.robot is None:
            continue
        d = cfg.robot_description()
        assert set(cfg.joint_names) <= set(d.urdf_info.movable_joints), name
    # a joint without `gains` in the config takes the description's (panda_sim writes none), one
    # with them keeps its own
    data = yaml.safe_load((ROOT / "hardware_configs" / "panda_sim.yaml").read_text())
    assert not any("gains" in j for j in data["joints"])
    cfg = load_config("panda_sim")
    assert [(j.kp, j.kd) for j in cfg.joints][:7] == [(600, 50)] * 4 + [(250, 30), (150, 25), (50, 15)]
    from s2r.core.config import parse_config
    data["joints"][6]["gains"] = {"kp": 40, "kd": 12}
    assert (parse_config(data, "p.yaml").joints[6].kp, parse_config(data, "p.yaml").joints[6].kd) == (40, 12)


BAD = {   # (change to a valid description, key, reason)
    "missing ee_link": (lambda d: d.pop("ee_link"), "ee_link", "missing required key"),
    "missing groups": (lambda d: d.pop("groups"), "groups", "missing required key"),
    "no arm or fingers": (lambda d: d.update(groups={"gripper": ["lbr_iiwa_joint_7"]}), "groups",
                          "at least one of arm or fingers"),
    "ee_link the URDF lacks": (lambda d: d.update(ee_link="tool0"), "ee_link",
                               "model.urdf has no link 'tool0' (its links: lbr_iiwa_link_0, "),
    "tip link the URDF lacks": (lambda d: d.update(tip_links=["lbr_iiwa_link_7", "tip9"]), "tip_links[1]",
                                "has no link 'tip9'"),
    "arm joint the URDF lacks": (lambda d: d["groups"].update(arm=IIWA_ARM[:6] + ["elbow"]), "groups.arm[6]",
                                 "model.urdf has no movable joint 'elbow' (its movable joints: lbr_iiwa_joint_1"),
    "gripper group naming an arm joint": (lambda d: d["groups"].update(gripper=["lbr_iiwa_joint_7"]),
                                          "groups.gripper[0]", "'lbr_iiwa_joint_7' is in the arm group too"),
    "joint listed twice": (lambda d: d["groups"].update(arm=IIWA_ARM + ["lbr_iiwa_joint_1"]), "groups.arm[7]",
                           "listed twice"),
    "home of an unknown joint": (lambda d: d["home"].update(wrist=0.1), "home.wrist", "has no movable joint 'wrist'"),
    "home outside the URDF's limits": (lambda d: d["home"].update(lbr_iiwa_joint_2=2.5), "home.lbr_iiwa_joint_2",
                                       "2.5 is outside the URDF's limits [-2.0944, 2.0944]"),
    "gains of an unknown joint": (lambda d: d.update(gains={"j9": {"kp": 10, "kd": 1}}), "gains.j9",
                                  "has no movable joint 'j9'"),
    "negative gain": (lambda d: d.update(gains={"lbr_iiwa_joint_1": {"kp": -1}}), "gains.lbr_iiwa_joint_1.kp",
                      "must be in [0, 100000], got -1"),
    "damping of an unknown joint": (lambda d: d.update(joint_damping={"j9": 0.1}), "joint_damping.j9",
                                    "has no movable joint 'j9'"),
    "URDF that does not exist": (lambda d: d.update(urdf="nowhere/arm.urdf"), "urdf", "cannot read the URDF"),
    "asset that does not exist": (lambda d: d.update(urdf="asset:no_such_arm"), "urdf",
                                  "'asset:no_such_arm': file not found (robot asset"),
    "unknown key": (lambda d: d.update(ee_lnk="x"), "ee_lnk", "unknown key"),
    "not a unit quaternion": (lambda d: d.update(base={"orientation": [0, 0, 0.5, 0.5]}), "base.orientation",
                              "must be a unit quaternion"),
    "tcp offset not 3 numbers": (lambda d: d.update(tcp_offset=[0, 0.1]), "tcp_offset", "list of 3 numbers"),
    "inertia neither file nor collision": (lambda d: d.update(inertia="cad"), "inertia", "must be one of file, collision"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_description_is_one_line_naming_file_and_key(tmp_path, case):
    change, key, reason = BAD[case]
    d = description()
    change(d)
    f = write(tmp_path, d)
    with pytest.raises(ConfigError) as e:
        load_robot(f)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{f}: {key}: "), msg
    assert reason in msg, msg


@pytest.mark.parametrize("urdf, reason", [
    ("<robot name='x'><link name='a'/><joint name='j' type='revolute'><parent link='a'/>", "not well-formed XML"),
    ("<robot name='x'><link name='a'/><link name='b'/></robot>", "expected one root link, found 2"),
    ("<robot name='x'><link name='a'/><joint name='j' type='fixed'><parent link='a'/><child link='c'/></joint></robot>",
     "names a link 'c' the URDF lacks"),
    ("<robot name='x'><link name='a'><visual><geometry><mesh filename='package://m/a.stl'/></geometry></visual></link>"
     "</robot>", "mesh 'package://m/a.stl' of bad.urdf not found"),
    ("<robot name='x'><link name='a'><inertial><mass value='1'/><inertia ixx='1' iyy='0.1' izz='0.1' ixy='0' ixz='0'"
     " iyz='0'/></inertial></link></robot>", "link 'a''s inertia tensor is not physical"),
    ("<sdf/>", "root element is <sdf>"),
])
def test_a_urdf_that_does_not_parse_or_is_not_one_tree_is_one_line(tmp_path, urdf, reason):
    (tmp_path / "bad.urdf").write_text(urdf)
    f = write(tmp_path, description(urdf="bad.urdf", ee_link="a", home={}, groups={"fingers": ["j"]}))
    with pytest.raises(ConfigError) as e:
        load_robot(f)
    assert str(e.value).startswith(f"{f}: urdf: ") and reason in str(e.value), str(e.value)


def test_a_config_is_checked_against_its_description(tmp_path):
    f = write(tmp_path, description())
    cfg = yaml.safe_load((ROOT / "hardware_configs" / "iiwa_sim.yaml").read_text())
    cfg["robot"] = f.name                       # relative to the config's own folder
    cfg["joints"][3]["name"] = "elbow"
    c = write(tmp_path, cfg, "cfg.yaml")
    with pytest.raises(ConfigError, match=r"cfg.yaml: joints\[3\].name: robot 'my_arm' \(model.urdf\) has no "
                                          r"movable joint 'elbow'"):
        load_config(c)
    cfg["robot"] = "no_such_robot"
    write(tmp_path, cfg, "cfg.yaml")
    with pytest.raises(ConfigError, match=r"cfg.yaml: robot: no_such_robot: file not found \(robot description; "
                                          r"looked in: .*known: .*iiwa"):
        load_config(c)


def test_a_new_arm_is_two_files_and_no_code(tmp_path):
    """A newcomer's arm: a description and a hardware config in their own folder, named by path;
    check, the tasks and the scripted expert work on it unchanged."""
    write(tmp_path, description())
    cfg = yaml.safe_load((ROOT / "hardware_configs" / "iiwa_sim.yaml").read_text())
    cfg.update(name="my_arm_sim", robot="./my_arm.yaml")
    c = write(tmp_path, cfg, "my_arm_sim.yaml")
    r = subprocess.run([sys.executable, "-m", "s2r", "check", str(c)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK  ") and "connected: backend sim" in r.stdout
    env = gym.make("s2r/ArmReach-v0", config=str(c)).unwrapped
    try:
        assert env.description.name == "my_arm" and env.joint_names == tuple(IIWA_ARM)
        assert env.ee_link == "lbr_iiwa_link_7" and env.tcp_offset == (0.0, 0.0, 0.05)
        from s2r.sim.scripted import make_scripted
        obs, _ = env.reset(seed=3)
        expert = make_scripted(env)
        d0 = np.linalg.norm(obs["tcp_pos"] - obs["target"])
        for _ in range(200):
            obs, _, term, _, info = env.step(expert(obs))
            if term:
                break
        assert info["distance"] < 0.02 < d0, (d0, info["distance"])
    finally:
        env.close()


def test_task_geometry_scales_with_the_arms_reach():
    panda, xarm = load_robot("panda"), load_robot("xarm6")
    assert workspace_scale(panda) == 1.0
    assert workspace(panda).shoulder[2] == pytest.approx(0.333)
    s = workspace_scale(xarm)
    assert 0.7 < s < 0.9                        # a 0.7 m arm, against the Panda's 0.86
    envs = [gym.make("s2r/ArmReach-v0", config=c).unwrapped for c in ("panda_sim", "xarm6_sim")]
    try:
        panda_env, xarm_env = envs
        np.testing.assert_allclose(xarm_env.table.center[:2], s * np.asarray(panda_env.table.center[:2]))
        targets = []
        for seed in range(30):
            xarm_env.reset(seed=seed)
            targets.append(xarm_env.target.copy())
        t, h = np.array(targets), xarm_env.table.height
        lo, hi = np.array([0.35 * s, -0.25 * s, h + 0.1 * s]), np.array([0.65 * s, 0.25 * s, h + 0.45 * s])
        assert np.all(t >= lo) and np.all(t <= hi)            # the Panda's target box, scaled
        assert t[:, 0].max() < 0.65 * 0.9                      # which the Panda's would not fit in
    finally:
        for env in envs:
            env.close()


def test_urdf_references_resolve_in_every_form(tmp_path):
    from s2r.core.robot_description import resolve_urdf
    assert resolve_urdf(IIWA, tmp_path) == Path(pybullet_data.getDataPath()) / "kuka_iiwa/model.urdf"
    assert resolve_urdf("asset:hand16", tmp_path).name == "hand16.urdf"
    assert resolve_urdf("sub/arm.urdf", tmp_path) == tmp_path / "sub/arm.urdf"


def test_s2r_check_reports_a_bad_description_in_one_line(tmp_path):
    d = description()
    d["groups"]["gripper"] = ["lbr_iiwa_joint_7"]
    write(tmp_path, d)
    cfg = yaml.safe_load((ROOT / "hardware_configs" / "iiwa_sim.yaml").read_text())
    cfg["robot"] = "my_arm.yaml"
    c = write(tmp_path, cfg, "c.yaml")
    r = subprocess.run([sys.executable, "-m", "s2r", "check", str(c)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0] == (f"config error: {c}: robot: {tmp_path / 'my_arm.yaml'}: groups.gripper[0]: "
                        "'lbr_iiwa_joint_7' is in the arm group too; a joint has one role")


def test_the_demo_goals_scale_with_the_arm():
    from s2r.demo_ros import DEMO_GOALS, arm_goals
    assert arm_goals("panda_sim") == list(DEMO_GOALS)
    s = workspace_scale(load_robot("xarm6"))
    np.testing.assert_allclose(arm_goals("xarm6_sim"), s * np.asarray(DEMO_GOALS))
