"""The typed config schemas (s2r/core/schema/): `s2r schema` prints JSON Schema that covers every
key the shipped files use, the driver sections are a registry a third-party driver can join, the
leaf's Dynamixel facts agree with the protocol module, and defaults are those of the models."""
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pydantic
import pytest
import yaml

from s2r.core.config import ConfigError, parse_config
from s2r.core.schema import drivers as schema_drivers
from s2r.core.schema.hardware import Hil, Safety, Sim
from s2r.core.schema.types import Int, Name

ROOT = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((ROOT / "hardware_configs" / "panda_sim.yaml").read_text())
FILES = {
    "hardware": sorted((ROOT / "hardware_configs").glob("*.yaml")),
    "bringup": sorted((ROOT / "ros_ws" / "src" / "s2r_ros" / "bringup").glob("*.yaml")),
    "randomization": sorted((ROOT / "sim" / "presets").glob("*.yaml")),
}


def printed_schema(kind: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "s2r", "schema", kind], capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def unknown_keys(data, schema: dict, root: dict, path: str = "") -> list[str]:
    """Keys of `data` that the JSON Schema does not describe (what an editor would flag)."""
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    if "oneOf" in schema and "discriminator" in schema:
        tag = data.get(schema["discriminator"]["propertyName"]) if isinstance(data, dict) else None
        ref = schema["discriminator"]["mapping"].get(tag)
        return [f"{path} (type {tag!r})"] if ref is None else unknown_keys(data, {"$ref": ref}, root, path)
    for option in schema.get("anyOf", []):
        if option.get("type") != "null":
            return unknown_keys(data, option, root, path)
    out = []
    if isinstance(data, dict) and "properties" in schema:
        for k, v in data.items():
            if k in schema["properties"]:
                out += unknown_keys(v, schema["properties"][k], root, f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}.{k}")
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(data):
            out += unknown_keys(v, schema["items"], root, f"{path}[{i}]")
    return out


@pytest.mark.parametrize("kind", sorted(FILES))
def test_printed_schema_describes_every_key_of_the_shipped_files(kind):
    schema = printed_schema(kind)
    assert schema["$schema"].startswith("https://json-schema.org/") and schema["additionalProperties"] is False
    assert FILES[kind], kind
    for f in FILES[kind]:
        data = yaml.safe_load(f.read_text())
        assert unknown_keys(data, schema, schema) == [], f
    # and a misspelt key is one the schema does not describe (editors flag it)
    assert unknown_keys({"nmae": 1}, schema, schema) == [".nmae"]


def test_hardware_schema_has_the_driver_union_and_the_bounds():
    s = printed_schema("hardware")
    union = s["properties"]["driver"]
    assert union["discriminator"]["propertyName"] == "type"
    assert set(union["discriminator"]["mapping"]) == {"sim", "dynamixel", "ros2"}
    assert s["properties"]["control_rate_hz"]["minimum"] == 1 and s["properties"]["control_rate_hz"]["maximum"] == 1e4
    dxl = s["$defs"]["DynamixelParams"]["properties"]
    assert dxl["baudrate"]["enum"] == list(schema_drivers.DXL_BAUD_RATES) and dxl["retries"]["default"] == 2
    assert s["$defs"]["Safety"]["properties"]["limit_margin"]["default"] == 0.02


def test_leaf_dynamixel_facts_agree_with_the_protocol_module():
    from s2r.drivers import dynamixel_protocol as P
    assert schema_drivers.DXL_MODELS == tuple(P.MODELS)
    assert set(schema_drivers.DXL_BAUD_RATES) <= set(P.BAUD_CODES)
    assert schema_drivers.DXL_MAX_ID == P.MAX_ID
    for q, off, sign in ((0.3, 0.1, 1), (-1.2, -0.4, -1), (math.pi, 0.0, 1)):
        assert schema_drivers.dxl_ticks(q, off, sign) == pytest.approx(P.joint_to_ticks(q, off, sign))


def test_defaults_come_from_the_models_and_null_means_default():
    minimal = {"name": "m", "robot": "hand16", "control_rate_hz": 100, "driver": {"type": "sim"},
               "joints": [{"name": "if_abd", "limits": {"position": [-1, 1], "velocity": 1, "effort": 1}}],
               "hil": None, "safety": None}
    cfg = parse_config(minimal, "m.yaml")
    models = {"safety": Safety(), "sim": Sim(), "hil": Hil()}
    for section, model in models.items():
        assert dataclasses.asdict(getattr(cfg, section)) == model.model_dump(), section
    j = cfg.joints[0]
    assert (j.kp, j.kd, j.offset, j.sign, j.id) == (100.0, 10.0, 0.0, 1, None)
    assert cfg.modes == {m for m in cfg.modes} and len(cfg.modes) == 3 and cfg.hardware == "auto"
    # the default step is capped by the widest joint range
    narrow = dict(minimal, joints=[{"name": "if_mcp", "limits": {"position": [0, 0.04], "velocity": 1, "effort": 1}}])
    assert parse_config(narrow, "m.yaml").safety.max_position_step == pytest.approx(0.04)


@pytest.mark.parametrize("change, key, reason", [
    (lambda d: d["driver"].pop("type"), "driver.type", "missing required key"),
    (lambda d: d["driver"].update(type=7), "driver.type", "must be one of sim, dynamixel, ros2; got 7"),
    (lambda d: d.update(control_rate_hz="100"), "control_rate_hz", "expected a number, got string '100'"),
    (lambda d: d["sim"].update(realtime="yes"), "sim.realtime", "expected true/false, got string 'yes'"),
    (lambda d: d["joints"][0].update(id=1.0), "joints[0].id", "expected an integer, got float 1.0"),
    (lambda d: d["cameras"][0]["intrinsics"].update(fx=100), "cameras[0].intrinsics.fx",
     "give fov_deg or fx, fy, cx, cy, not both"),
    (lambda d: d["cameras"][0].update(far=0.005), "cameras[0].far", "must be in (near (0.01)"),
    (lambda d: d["driver"].update(type="ros2", joint_map={"panda_joint1": 5}), "driver.joint_map.panda_joint1",
     "expected the robot's joint name, got 5"),
    (lambda d: d["driver"].update(type="dynamixel"), "joints[0].id", "a dynamixel joint needs its servo id"),
])
def test_more_refusals_are_one_line_with_the_key(change, key, reason):
    d = json.loads(json.dumps(BASE))
    change(d)
    with pytest.raises(ConfigError) as e:
        parse_config(d, "robot.yaml")
    assert "\n" not in str(e.value) and e.value.key == key and reason in e.value.reason, str(e.value)


@pytest.fixture
def canbus(monkeypatch):
    """A third-party driver's section, registered as a driver package would (and removed after)."""
    @pydantic.dataclasses.dataclass(frozen=True, kw_only=True, config=schema_drivers.SECTION_CONFIG)
    class CanbusSection(schema_drivers.DriverSection):
        type: Literal["canbus"]
        interface: Name = "can0"
        bitrate: Int(10_000, 1_000_000) = 500_000

    monkeypatch.setattr(schema_drivers, "_SECTIONS", dict(schema_drivers._SECTIONS))
    assert schema_drivers.register_driver_section(CanbusSection) is CanbusSection
    return CanbusSection


def test_a_third_party_driver_section_joins_the_union(canbus):
    d = json.loads(json.dumps(BASE))
    d["driver"] = {"type": "canbus", "modes": ["position"], "bitrate": 250_000}
    cfg = parse_config(d, "can.yaml")
    assert cfg.driver_type == "canbus" and cfg.driver_params == {"bitrate": 250_000}
    params = schema_drivers.driver_params(cfg)
    assert isinstance(params, canbus) and (params.interface, params.bitrate) == ("can0", 250_000)
    with pytest.raises(pydantic.ValidationError):          # a section re-validates when replaced
        dataclasses.replace(params, bitrate=5)
    for change, key, reason in (({"bitrate": 5}, "driver.bitrate", "must be in [10000, 1e+06], got 5"),
                                ({"speed": 1}, "driver.speed", "unknown canbus driver parameter (known: bitrate, "
                                                               "interface)")):
        with pytest.raises(ConfigError) as e:
            parse_config(dict(d, driver={**d["driver"], **change}), "can.yaml")
        assert e.value.key == key and reason in e.value.reason, str(e.value)
    from s2r.core.schema.hardware import hardware_model
    assert "canbus" in hardware_model().model_json_schema()["properties"]["driver"]["discriminator"]["mapping"]


def test_register_refuses_what_is_not_a_section():
    with pytest.raises(TypeError, match="not a DriverSection"):
        schema_drivers.register_driver_section(dict)
