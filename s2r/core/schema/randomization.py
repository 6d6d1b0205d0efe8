"""Domain randomization presets (sim/presets/*.yaml) as pydantic models, and the table of every
parameter they may set (`PARAMETERS`): its group, shape, bounds and modes. `sim.randomization`
samples what this validates; `s2r schema randomization` prints the JSON Schema.

A preset is ``{description: ..., groups: {GROUP: {enabled: bool, PARAM: SPEC, ...}, ...}}`` with
SPEC ``{dist: uniform, low: .., high: .., mode: per_episode}`` (see `parse_param` for each
distribution's fields). Problems are one ConfigError keyed like
``groups.dynamics.link_mass_scale.low``.
"""
import functools
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from ..yamlio import ConfigError, excerpt
from .errors import fail, key_path, reason, to_config_error, with_message
from .types import Flag, Real, Text

PER_EPISODE, PER_STEP = "per_episode", "per_step"
DISTRIBUTIONS = ("uniform", "loguniform", "normal", "randint", "bernoulli", "constant")
GROUPS = ("dynamics", "timing", "noise", "visuals", "unmodeled")
FIELDS = ("dist", "low", "high", "mean", "std", "p", "value", "mode")
TEXTURE_COUNT = 32     # the procedural textures sim.scene makes (texture_index 0..31; training presets use 0-7)


@dataclass(frozen=True)
class ParamInfo:
    group: str
    shape: str       # scalar | vec2 | vec3 | joints | links | objects | objects3 | action | surfaces | surfaces3
    doc: str
    positive: bool = False     # values must stay > 0 (scales, coefficients)
    nonneg: bool = False       # values must stay >= 0
    per_step_ok: bool = True
    default_mode: str = PER_EPISODE
    integer: bool = False
    limit: float = 100.0       # no number of its spec (low, high, mean, std, value) beyond +-limit


P = ParamInfo
PARAMETERS: dict[str, ParamInfo] = {
    # dynamics ------------------------------------------------------------------------------
    "link_mass_scale": P("dynamics", "links", "robot link mass (and inertia) multiplier", positive=True, limit=100),
    "object_mass_scale": P("dynamics", "objects", "object mass (and inertia) multiplier", positive=True, limit=100),
    "joint_damping_scale": P("dynamics", "joints", "joint viscous damping multiplier", positive=True, limit=1000),
    "gain_scale": P("dynamics", "joints", "joint controller kp and kd multiplier", positive=True, limit=100),
    "friction_scale": P("dynamics", "objects", "lateral friction multiplier (objects; the table "
                        "and fingertips use the first value)", positive=True, limit=100),
    "spin_roll_friction_scale": P("dynamics", "objects", "spinning and rolling friction multiplier",
                                  positive=True, limit=1000),
    "object_size_scale": P("dynamics", "objects", "object size multiplier", positive=True,
                           per_step_ok=False, limit=10),
    "gravity_offset": P("dynamics", "vec3", "added to gravity, m/s^2 per axis", limit=50),
    "table_height_offset": P("dynamics", "scalar", "table height change, m", per_step_ok=False, limit=1),
    # timing ------------------------------------------------------------------------------------
    "action_latency": P("timing", "scalar", "actions take effect this many control steps late",
                        nonneg=True, per_step_ok=False, integer=True, limit=100),
    "control_period_jitter": P("timing", "scalar", "relative change of the control period",
                               default_mode=PER_STEP, limit=0.9),
    # noise -------------------------------------------------------------------------------------
    "action_noise": P("noise", "action", "actuation error in normalized action units: added to the applied "
                      "position targets (x max_position_step) or torques, unseen by the policy",
                      default_mode=PER_STEP, limit=10),
    "action_bias": P("noise", "action", "as action_noise, fixed per episode", limit=10),
    "joint_noise": P("noise", "joints", "added to observed joint positions, rad", default_mode=PER_STEP, limit=1),
    "object_position_bias": P("noise", "objects3", "added to observed object positions, m", limit=1),
    "object_position_noise": P("noise", "objects3", "added to observed object positions, m",
                               default_mode=PER_STEP, limit=1),
    # visuals -----------------------------------------------------------------------------------
    "camera_position_offset": P("visuals", "vec3", "camera moved by, m", limit=1),
    "camera_rotation_offset": P("visuals", "vec3", "camera roll/pitch/yaw offset, rad", limit=3.15),
    "camera_fov_offset": P("visuals", "scalar", "vertical field of view offset, deg", limit=90),
    "light_direction": P("visuals", "vec3", "direction towards the light", limit=100),
    "light_ambient": P("visuals", "scalar", "ambient coefficient", nonneg=True, limit=10),
    "light_diffuse": P("visuals", "scalar", "diffuse coefficient", nonneg=True, limit=10),
    "light_specular": P("visuals", "scalar", "specular coefficient", nonneg=True, limit=10),
    "surface_color": P("visuals", "surfaces3", "RGB of floor, table, objects, robot", nonneg=True, limit=1),
    "surface_texture": P("visuals", "surfaces", "1: a procedural texture instead of a plain colour",
                         integer=True, nonneg=True, limit=1),
    "texture_index": P("visuals", "surfaces", f"which procedural texture, 0-{TEXTURE_COUNT - 1} (sim.scene)",
                       integer=True, nonneg=True, limit=TEXTURE_COUNT - 1),
    "distractor_count": P("visuals", "scalar", "visual-only distractor objects", integer=True,
                          nonneg=True, per_step_ok=False, limit=50),
    "brightness": P("visuals", "scalar", "image brightness multiplier", positive=True, limit=10),
    "pixel_noise_std": P("visuals", "scalar", "std of pixel noise, fraction of full scale", nonneg=True, limit=1),
    # unmodeled (effects the nominal simulator leaves out; see sim/randomization.py) -------------
    "backlash": P("unmodeled", "joints", "gear play, total width, rad (m for prismatic joints)",
                  nonneg=True, per_step_ok=False, limit=0.5),
    "coulomb_friction": P("unmodeled", "joints", "kinetic joint friction, N m (N)", nonneg=True,
                          per_step_ok=False, limit=100),
    "stiction": P("unmodeled", "joints", "static joint friction (breakaway), N m (N)", nonneg=True,
                  per_step_ok=False, limit=100),
    "torque_limit_scale": P("unmodeled", "joints", "actuator torque limit, times the configured effort "
                            "limit", positive=True, per_step_ok=False, limit=10),
    "motor_droop": P("unmodeled", "joints", "torque limit lost per rad/s (m/s) in the direction of "
                     "motion, fraction; 1 / no-load speed", nonneg=True, per_step_ok=False, limit=10),
    "encoder_offset": P("unmodeled", "joints", "added to observed joint positions, rad (m)",
                        per_step_ok=False, limit=3.15),
    "sensor_delay": P("unmodeled", "scalar", "observations arrive this many control steps late",
                      nonneg=True, per_step_ok=False, integer=True, limit=100),
    "camera_position_error": P("unmodeled", "vec3", "true camera position minus the calibrated one, m",
                               per_step_ok=False, limit=1),
    "camera_rotation_error": P("unmodeled", "vec3", "true camera roll/pitch/yaw minus the calibrated, rad",
                               per_step_ok=False, limit=3.15),
    "camera_focal_error": P("unmodeled", "scalar", "true focal length (fx, fy) / calibrated - 1",
                            per_step_ok=False, limit=0.9),
    "camera_principal_error": P("unmodeled", "vec2", "true principal point (cx, cy) minus the calibrated, "
                                "pixels at the configured resolution", per_step_ok=False, limit=1000),
}
del P

# parameters with one value per joint, link or object: a constant may list them (a measured robot,
# one draw of a task replayed on the sim driver)
PER_ELEMENT = ("joints", "links", "action", "objects")
_NUMBER_MESSAGE = with_message(lambda v: f"expected a finite number, got {excerpt(v)}")
Value = Annotated[Union[Real, list[Real]], _NUMBER_MESSAGE]


class SpecFields(BaseModel):
    """One parameter's distribution as written; which fields a distribution needs is checked
    against the parameter (`check_spec`)."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    dist: Annotated[Literal[DISTRIBUTIONS], with_message(
        lambda v: f"unknown distribution {excerpt(v)} (known: {', '.join(DISTRIBUTIONS)})")] = Field(
        json_schema_extra={"description": "uniform, loguniform, randint: low, high; normal: mean, std; "
                                          "bernoulli: p; constant: value (per-joint, -link and "
                                          "-object parameters: one number, or one per element)"})
    mode: Annotated[Literal[PER_EPISODE, PER_STEP], with_message(
        lambda v: f"must be {PER_EPISODE} or {PER_STEP}, got {excerpt(v)}")] | None = None
    low: Value | None = None
    high: Value | None = None
    mean: Value | None = None
    std: Value | None = None
    p: Annotated[Real, _NUMBER_MESSAGE] | None = None
    value: Value | None = None


def check_spec(name: str, s: SpecFields) -> dict:
    """The parameter's spec, checked against what the parameter allows: the fields of a ParamSpec
    (name, dist, mode, low, high, mean, std, p, value). Raises `fail(reason, at=field)`."""
    info = PARAMETERS[name]
    dist = s.dist
    mode = s.mode or info.default_mode
    if mode == PER_STEP and not info.per_step_ok:
        raise fail(f"{name} can only change between episodes (per_episode)", at="mode")
    width = int(info.shape[-1]) if info.shape in ("vec2", "vec3") else 1

    def number(field, default=...):
        v = getattr(s, field)
        if v is None:
            if default is ...:
                raise fail(f"missing (needed by dist {dist})", at=field)
            return default
        if isinstance(v, list) and field == "value" and dist == "constant" and info.shape in PER_ELEMENT:
            if not v:                        # one value per joint, link or object: checked when drawn
                raise fail("expected a number or one number per element, got []", at=field)
        elif isinstance(v, list) and (width == 1 or len(v) != width):
            raise fail(f"expected a finite number, got {excerpt(v)}" if width == 1 else
                       f"expected a number or a list of {width} numbers, got {excerpt(v)}", at=field)
        if field != "p" and any(abs(x) > info.limit for x in np.ravel(v)):    # p: a probability
            raise fail(f"{name} takes values within +-{info.limit:g}, got {excerpt(v)}", at=field)
        return v

    def check_sign(field, v):
        vals = v if isinstance(v, list) else [v]
        if info.positive and any(x <= 0 for x in vals):
            raise fail(f"{name} must stay positive, got {v}", at=field)
        if info.nonneg and any(x < 0 for x in vals):
            raise fail(f"{name} must not be negative, got {v}", at=field)

    out = dict(name=name, dist=dist, mode=mode)
    if dist in ("uniform", "loguniform", "randint"):
        low, high = number("low"), number("high")
        if np.any(np.broadcast_to(low, (width,)) > np.broadcast_to(high, (width,))):
            raise fail(f"{low} > high {high} (inverted range)", at="low")
        check_sign("low", low)
        if dist == "loguniform" and np.any(np.asarray(low) <= 0):
            raise fail(f"loguniform needs low > 0, got {low}", at="low")
        if dist == "randint":
            if not all(float(x).is_integer() for x in np.ravel([low, high])):
                raise fail(f"randint needs integer low/high, got {low}, {high}")
            low, high = int(low), int(high)
        elif info.integer:
            raise fail(f"{name} takes integers: use randint, bernoulli or constant", at="dist")
        return dict(out, low=low, high=high)
    if dist == "normal":
        if info.positive or info.nonneg or info.integer:
            raise fail(f"{name} must not go negative: a normal distribution can; use uniform or loguniform",
                       at="dist")
        mean, std = number("mean", 0.0), number("std")
        if np.any(np.asarray(std) < 0):
            raise fail(f"must be >= 0, got {std}", at="std")
        return dict(out, mean=mean, std=std)
    if dist == "bernoulli":
        pr = number("p")
        if not 0.0 <= pr <= 1.0:
            raise fail(f"must be in [0, 1], got {pr}", at="p")
        return dict(out, p=pr)
    value = number("value")
    check_sign("value", value)
    return dict(out, value=value)


def _param_field(name: str):
    spec = Annotated[SpecFields, AfterValidator(lambda s: check_spec(name, s))]
    return (spec, Field(None, description=PARAMETERS[name].doc))


def _group_model(group: str) -> type[BaseModel]:
    fields = {n: _param_field(n) for n, i in PARAMETERS.items() if i.group == group}
    return create_model(f"{group.capitalize()}Group", __config__=ConfigDict(extra="forbid", frozen=True),
                        enabled=(Flag, True), **fields)


_GROUP_MODELS = {g: _group_model(g) for g in GROUPS}
Groups = create_model("Groups", __config__=ConfigDict(extra="forbid", frozen=True),
                      **{g: (m | None, None) for g, m in _GROUP_MODELS.items()})


class Preset(BaseModel):
    """A randomization preset: named groups of randomized parameters."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: Text | None = None
    groups: Groups | None = None


def _reason(err: dict) -> str:
    """Preset errors in the words of the preset format, by depth of the key path."""
    loc, kind, v = err["loc"], err["type"], err.get("input")
    unknown = kind in ("extra_forbidden", "invalid_key")
    mapping = kind in ("model_type", "model_attributes_type")
    if len(loc) <= 1 and unknown:
        return "unknown top-level key (expected groups, description)"
    if len(loc) == 1 and loc[0] == "description" and kind == "string_type":
        return f"expected text, got {excerpt(v)}"
    if loc == ("groups",) and mapping:
        return f"expected a mapping of group name to parameters, got {excerpt(v)}"
    if len(loc) == 2 and unknown:
        return f"unknown group (known: {', '.join(GROUPS)})"
    if len(loc) == 2 and mapping:
        return f"expected a mapping of parameters, got {excerpt(v)}"
    if len(loc) == 3 and unknown:
        group, name = loc[1], loc[2]
        if name in PARAMETERS:
            return f"{name} belongs to group {PARAMETERS[name].group}, not {group}"
        known = ", ".join(n for n, i in PARAMETERS.items() if i.group == group)
        return f"unknown parameter (group {group} has: {known})"
    if len(loc) == 3 and mapping:
        return f"expected a mapping like {{dist: uniform, low: .., high: ..}}, got {excerpt(v)}"
    if len(loc) == 4 and unknown:
        return f"unknown field (known: {', '.join(sorted(FIELDS))})"
    if len(loc) == 4 and kind == "missing" and loc[3] == "dist":
        return f"unknown distribution None (known: {', '.join(DISTRIBUTIONS)})"
    return reason(err)


def parse_preset(data: Any, file: str = "") -> list[dict]:
    """Validate a preset (a parsed YAML mapping): the enabled parameters' specs, in the order the
    preset gives them (sampling follows that order). A ConfigError(file, key, reason)."""
    if not isinstance(data, dict):
        raise ConfigError(file, "", f"expected a mapping with 'groups', got {type(data).__name__}")
    try:
        m = Preset.model_validate(data)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        first = to_config_error(e, file)
        raise ConfigError(file, first.key, _reason(err)) from None
    out = []
    for gname, gdata in (data.get("groups") or {}).items():
        group = getattr(m.groups, gname)
        if group is None or not group.enabled:
            continue
        out += [getattr(group, p) for p in gdata if p != "enabled"]
    return out


def parse_param(key: str, group: str, name: str, d: Any) -> dict:
    """One parameter's spec, validated as in a preset; errors are keyed from `key`."""
    if not isinstance(name, str) or name not in PARAMETERS:
        known = ", ".join(n for n, i in PARAMETERS.items() if i.group == group)
        raise ConfigError("", key, f"unknown parameter (group {group} has: {known})")
    if PARAMETERS[name].group != group:
        raise ConfigError("", key, f"{name} belongs to group {PARAMETERS[name].group}, not {group}")
    try:
        return _spec_adapter(name).validate_python(d)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        sub = key_path(err)
        as_in_a_preset = dict(err, loc=("groups", group, name) + tuple(err["loc"]))
        raise ConfigError("", f"{key}{'.' if sub and not sub.startswith('[') else ''}{sub}",
                          _reason(as_in_a_preset)) from None


@functools.lru_cache(maxsize=None)
def _spec_adapter(name: str) -> TypeAdapter:
    return TypeAdapter(_param_field(name)[0])


__all__ = ["DISTRIBUTIONS", "FIELDS", "GROUPS", "PARAMETERS", "PER_EPISODE", "PER_STEP", "ParamInfo", "Preset",
           "SpecFields", "check_spec", "parse_param", "parse_preset"]
