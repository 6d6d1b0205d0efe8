"""Hardware configs: the shipped files load, and every malformed file gets one line naming the
file, the key and the reason."""
import copy
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from s2r.core.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "hardware_configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.joints and cfg.control_rate_hz > 0
    spec = cfg.spec()
    assert spec.n_joints == len(cfg.joints) and (spec.lower < spec.upper).all()


def test_config_by_name_and_values():
    cfg = load_config("panda_sim")
    assert cfg.joint_names[0] == "panda_joint1" and len(cfg.joints) == 9
    assert cfg.joints[3].limits.upper == pytest.approx(-0.0698)
    cam = cfg.cameras[0]
    assert cam.width == 128 and cam.fx == pytest.approx(64 / math.tan(math.radians(30)))


BASE = yaml.safe_load((ROOT / "hardware_configs" / "panda_sim.yaml").read_text())


def edit(fn):
    d = copy.deepcopy(BASE)
    fn(d)
    return d


BAD = {
    "missing name": (lambda d: d.pop("name"), "name", "missing required key"),
    "missing joints": (lambda d: d.pop("joints"), "joints", "missing"),
    "empty joints": (lambda d: d.update(joints=[]), "joints", "at least one joint"),
    "rate is a string": (lambda d: d.update(control_rate_hz="fast"), "control_rate_hz", "expected a number"),
    "negative rate": (lambda d: d.update(control_rate_hz=-5), "control_rate_hz", "must be in [1, 10000], got -5"),
    "unknown driver": (lambda d: d["driver"].update(type="canbus"), "driver.type", "must be one of"),
    "unknown hardware mode": (lambda d: d.update(hardware="maybe"), "hardware", "must be one of"),
    "unknown robot": (lambda d: d.update(robot="ur5"), "robot", "ur5: file not found (robot description"),
    "joint the URDF lacks": (lambda d: d["joints"][3].update(name="elbow"), "joints[3].name",
                             "robot 'panda' (panda.urdf) has no movable joint 'elbow' (its movable joints: panda_joint1, "),
    "inverted limits": (lambda d: d["joints"][2]["limits"].update(position=[1.0, -1.0]), "joints[2].limits.position", "lower 1 >= upper -1"),
    "limits not a pair": (lambda d: d["joints"][0]["limits"].update(position=[1.0]), "joints[0].limits.position", "list of 2 numbers"),
    "zero velocity limit": (lambda d: d["joints"][1]["limits"].update(velocity=0), "joints[1].limits.velocity", "must be in [1e-06, 1000], got 0"),
    "duplicate joint": (lambda d: d["joints"][4].update(name="panda_joint1"), "joints[4].name", "duplicate joint name"),
    "negative gain": (lambda d: d["joints"][0].update(gains={"kp": -1, "kd": 1}), "joints[0].gains.kp", "must be in [0, 100000], got -1"),
    "bad calibration sign": (lambda d: d["joints"][0].update(calibration={"sign": 2}), "joints[0].calibration.sign", "must be 1 or -1"),
    "typo key": (lambda d: d["safety"].update(watchdog_period=2), "safety.watchdog_period", "unknown key"),
    "watchdog below one period": (lambda d: d["safety"].update(watchdog_periods=0.5), "safety.watchdog_periods", "must be in [1, 100]"),
    "camera cx outside image": (lambda d: d["cameras"][0].update(intrinsics={"fx": 100, "fy": 100, "cx": 500, "cy": 64}), "cameras[0].intrinsics.cx", "must lie in the image"),
    "camera negative focal": (lambda d: d["cameras"][0].update(intrinsics={"fx": -1, "fy": 100, "cx": 64, "cy": 64}), "cameras[0].intrinsics.fx", "must be in [0.001, 1e+06], got -1"),
    "camera fov 200": (lambda d: d["cameras"][0].update(intrinsics={"fov_deg": 200}), "cameras[0].intrinsics.fov_deg", "(0, 180)"),
    "camera device missing": (lambda d: d["cameras"][0].update(source="device"), "cameras[0].device", "needs a device"),
    "camera extrinsics short": (lambda d: d["cameras"][0]["extrinsics"].update(position=[0, 1]), "cameras[0].extrinsics.position", "list of 3"),
    "physics slower than control": (lambda d: d["sim"].update(physics_hz=50), "sim.physics_hz", ">= control_rate_hz"),
    "bool where number": (lambda d: d.update(control_rate_hz=True), "control_rate_hz", "expected a number"),
    "unknown mode": (lambda d: d["driver"].update(modes=["torque"]), "driver.modes", "unknown command mode"),
    "joints not a list": (lambda d: d.update(joints={"a": 1}), "joints", "expected a list"),
    "joint not a mapping": (lambda d: d["joints"].append("panda_joint8"), "joints[9]", "expected a mapping"),
    "real with sim driver": (lambda d: d.update(hardware="real"), "hardware", "needs a real driver"),
    "nan effort": (lambda d: d["joints"][0]["limits"].update(effort=float("nan")), "joints[0].limits.effort", "finite"),
    "zero acceleration": (lambda d: d["joints"][0]["limits"].update(acceleration=0), "joints[0].limits.acceleration",
                          "must be in [0.001, 10000], got 0"),
    "inf acceleration": (lambda d: d["joints"][0]["limits"].update(acceleration=math.inf), "joints[0].limits.acceleration",
                         "finite"),
    # absurd values that would switch a safety mechanism off in effect
    "rate 1e-300": (lambda d: d.update(control_rate_hz=1e-300), "control_rate_hz", "must be in [1, 10000], got 1e-300"),
    "rate 1e300": (lambda d: d.update(control_rate_hz=1e300), "control_rate_hz", "must be in [1, 10000]"),
    "physics 1e9": (lambda d: d["sim"].update(physics_hz=1e9), "sim.physics_hz", "must be in [1, 20000]"),
    "watchdog 1e9 periods": (lambda d: d["safety"].update(watchdog_periods=1e9), "safety.watchdog_periods", "must be in [1, 100]"),
    "watchdog over 2 s": (lambda d: d.update(control_rate_hz=10) or d["sim"].update(physics_hz=1000)
                          or d["safety"].update(watchdog_periods=30), "safety.watchdog_periods", "must be in [1, 20]"),
    "margin 0.2": (lambda d: d["safety"].update(limit_margin=0.2), "safety.limit_margin", "must be in [0, 0.1]"),
    "negative margin": (lambda d: d["safety"].update(limit_margin=-0.01), "safety.limit_margin", "must be in [0, 0.1]"),
    "step 5 rad": (lambda d: d["safety"].update(max_position_step=5.0), "safety.max_position_step", "must be in [1e-06, 1]"),
    "step beyond every range": (lambda d: d.update(joints=d["joints"][7:]) or d["safety"].update(max_position_step=0.5),
                                "safety.max_position_step", "must be in [1e-06, 0.04]"),
    "position 1e300": (lambda d: d["joints"][0]["limits"].update(position=[-1e300, 1e300]), "joints[0].limits.position",
                       "every value must be in [-100, 100]"),
    "inf position": (lambda d: d["joints"][0]["limits"].update(position=[-math.inf, math.inf]),
                     "joints[0].limits.position[", "must be a finite number"),
    "kp 1e12": (lambda d: d["joints"][0].update(gains={"kp": 1e12}), "joints[0].gains.kp", "must be in [0, 100000]"),
    "camera 100000 px": (lambda d: d["cameras"][0].update(width=100000), "cameras[0].width", "must be in [1, 4096]"),
    "camera 1e-300 Hz": (lambda d: d["cameras"][0].update(rate_hz=1e-300), "cameras[0].rate_hz", "must be in [0.1, 1000]"),
    "sim camera on a link": (lambda d: d["cameras"][0]["extrinsics"].update(parent="panda_hand"),
                             "cameras[0].extrinsics.parent", "a simulated camera is mounted in the world frame"),
    # hostile values and keys: bounded quoting, no TypeError
    "huge name": (lambda d: d.update(name="x" * 10**6), "name", "longer than 128 characters: 'xxx"),
    "name over lines": (lambda d: d.update(name="a\nb"), "name", "must be one line"),
    "list as name": (lambda d: d.update(name=["lol"] * 10**5), "name", "expected a non-empty string, got list ['lol'"),
    "mixed-type unknown keys": (lambda d: d.update({1: 2, "zz": 3}), "1", "unknown key"),
    "huge unknown key": (lambda d: d["safety"].update({"k" * 10**6: 1}), "safety.'kkk", "unknown key"),
    "mode is a mapping": (lambda d: d["driver"].update(modes=[{"position": 1}]), "driver.modes", "unknown command mode {'position': 1}"),
    "nan driver parameter": (lambda d: d["driver"].update(type="ros2", stale_after_s=float("nan")),
                             "driver.stale_after_s", "must be a finite number"),
    "sim driver parameter": (lambda d: d["driver"].update(port="/dev/ttyUSB0"), "driver.port", "unknown key"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_config_names_file_key_reason(case):
    fn, key, reason = BAD[case]
    with pytest.raises(ConfigError) as e:
        parse_config(edit(fn), "robot.yaml")
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400
    assert msg.startswith(f"robot.yaml: {key}"), msg
    assert reason in msg, msg


@pytest.mark.parametrize("text,reason", [
    ("", "file is empty"),
    ("name: [unclosed\n", "invalid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_unparseable_files(tmp_path, text, reason):
    f = tmp_path / "x.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=reason):
        load_config(f)


def test_robot_is_optional_only_for_real_hardware():
    d = edit(lambda d: d.pop("robot"))
    with pytest.raises(ConfigError, match="robot: missing required key"):
        parse_config(d, "x.yaml")
    d["hardware"], d["driver"]["type"] = "real", "ros2"
    assert parse_config(d, "x.yaml").robot is None


def test_missing_file():
    with pytest.raises(ConfigError, match="file not found"):
        load_config("/nonexistent/robot.yaml")


def test_cli_check_prints_one_line_not_a_traceback(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(edit(BAD["inverted limits"][0])))
    r = subprocess.run([sys.executable, "-m", "s2r", "check", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [f"config error: {f}: joints[2].limits.position: lower 1 >= upper -1"]


def test_cli_check_connects_and_prints_spec():
    r = subprocess.run([sys.executable, "-m", "s2r", "check", "hand_sim"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "connected: backend sim" in r.stdout
    assert "16 joints at 100 Hz" in r.stdout and "th_ip" in r.stdout


def test_a_duplicated_key_is_refused_through_load_config(tmp_path):
    f = tmp_path / "dup.yaml"
    text = (ROOT / "hardware_configs" / "panda_sim.yaml").read_text()
    f.write_text(text.replace("  max_position_step: 0.05", "  max_position_step: 0.02\n  max_position_step: 5.0"))
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert "duplicate key 'max_position_step' (first given on line" in str(e.value)
    assert str(e.value).startswith(f"{f}: line ")


def test_shipped_dynamixel_and_ros2_parameters_are_checked_at_load(tmp_path):
    """Driver parameters are validated when the file loads (so `check --no-connect` sees them)."""
    f = tmp_path / "leap.yaml"
    f.write_text((ROOT / "hardware_configs" / "leap_hand.yaml").read_text().replace("baudrate: 4000000", "baudrate: 1234"))
    with pytest.raises(ConfigError, match=r"driver\.baudrate: 1234 is not a Dynamixel X baud rate"):
        load_config(f)


def test_limit_margin_defaults_and_is_read():
    cfg = parse_config(edit(lambda d: d["safety"].pop("limit_margin")), "robot.yaml")
    assert cfg.safety.limit_margin == 0.02
    assert parse_config(edit(lambda d: None), "robot.yaml").safety.limit_margin == 0.06    # panda_sim's own
    cfg = parse_config(edit(lambda d: d["safety"].update(limit_margin=0.0)), "robot.yaml")
    assert cfg.safety.limit_margin == 0.0


def test_planned_acceleration_is_read_and_defaults_to_velocity_over_brake_time():
    from s2r.core.types import BRAKE_TIME

    def spec(change):
        return parse_config(edit(change), "robot.yaml").spec()

    s = spec(lambda d: d["joints"][0]["limits"].update(acceleration=3.5))
    assert s.max_acceleration[0] == 3.5
    s = spec(lambda d: d["joints"][0]["limits"].pop("acceleration", None))
    assert s.max_acceleration[0] == pytest.approx(s.max_velocity[0] / BRAKE_TIME)
    assert s.max_acceleration[7] == pytest.approx(s.max_velocity[7] / BRAKE_TIME)    # panda_sim's fingers
    assert "|qdd|<=3.5" in spec(lambda d: d["joints"][0]["limits"].update(acceleration=3.5)).describe()


def test_each_joints_margin_is_at_most_a_quarter_of_its_range():
    """The Panda's fingers (0.04 m of travel) keep 0.01 m, the arm joints the configured margin."""
    from s2r.drivers import SafetyLayer
    from s2r.drivers.sim_driver import SimDriver

    cfg = load_config("panda_sim")
    s = SafetyLayer(SimDriver(cfg, realtime=False), cfg.safety)
    s.connect()
    try:
        lo_s, hi_s = s.soft_limits
        margin = lo_s - s.spec.lower
        assert margin[:7] == pytest.approx(cfg.safety.limit_margin) and margin[7:] == pytest.approx(0.01)
        assert hi_s == pytest.approx(s.spec.upper - margin)
    finally:
        s.disconnect()

