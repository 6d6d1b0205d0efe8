"""An experiment file (`learning/experiments/*.yaml`; found by name like every file kind,
s2r.core.resources kind "experiment") as a pydantic model: one training recipe for `s2r train
--experiment NAME [key=value ...]`. It names the task and the robot, what the policy sees, how much
is sampled and for how long, the agent's constructor keywords (`agent:`, e.g. its cost weights) and
the algorithm's configuration (`gps:` or `plato:`). A field left out takes the default written here;
`s2r train`'s options take theirs from here too.

This leaf module cannot import learning, so the `gps:` and `plato:` sections are built from
learning's configuration dataclasses by `experiment_model` (learning.experiment and `s2r schema
experiment` call it); `Experiment` alone takes them as plain mappings. `agent:` depends on the task:
learning.experiment checks it against the agent's constructor (the `check` of `load_experiment`).

`load_experiment` validates a parsed file with `key=value` overrides applied (`parse_overrides`:
dotted keys, values parsed as YAML); every problem is one ConfigError line naming the file or the
override, and the key.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, Field, Strict, StrictBool, StrictInt, StrictStr, ValidationError, create_model, \
    model_validator

from ..yamlio import ConfigError, excerpt, loads
from .errors import fail, to_config_error
from .types import STRICT, Flag, Int, Name, Real, Text, drop_nulls

__all__ = ["ALGORITHMS", "Experiment", "experiment_model", "load_experiment", "parse_overrides", "section_model"]

ALGORITHMS = ("gps", "plato")

Scalar = Union[StrictBool, StrictInt, Real, StrictStr]
Value = Optional[Union[Scalar, list[Scalar]]]          # an agent keyword or an untyped section value
Features = list[Name]


class Experiment(BaseModel):
    """One training run's recipe; every field has the default a run without it gets."""
    model_config = STRICT

    description: Text = Field("", description="what the recipe is for; its measured results are in the "
                                              "RESULTS file beside it")
    algorithm: Literal["gps", "plato"] = Field("gps", description="guided policy search or PLATO")
    task: Name = Field("ArmReach", description="ArmReach, ArmInsert, PointMass (or s2r/NAME-v0)")
    config: Optional[Name] = Field(None, description="hardware config of the robot to train on (a name or path; "
                                                     "null: the task's own)")
    images: Flag = Field(False, description="visuomotor CNN on camera images + joint state")
    image_size: Int(16, 1024) = Field(128, description="camera image size (pixels, square) when images is true")
    randomize: Optional[Name] = Field(None, description="domain randomization preset (a name or path; null: none)")
    iterations: Int(1, 1_000_000) = Field(10, description="training iterations")
    conditions: Int(1, 10_000) = Field(4, description="training conditions (start states) per iteration; "
                                                      "plato: episodes per iteration")
    samples: Int(2, 10_000) = Field(5, description="gps: samples per condition and iteration")
    fixed_conditions: Flag = Field(False, description="gps: the same training conditions every iteration "
                                                      "(false: new ones each iteration, where the task can)")
    eval_episodes: Int(0, 1_000_000) = Field(20, description="held-out starts evaluated every iteration")
    policy_steps: Optional[Int(1, 10_000_000)] = Field(None, description="policy gradient steps per iteration "
                                                                          "(null: the algorithm's default)")
    seed: Int(0, 2**32 - 1) = Field(0, description="the algorithm's random seed")
    obs_features: Optional[Features] = Field(None, description="extra policy inputs (learning/features.py keys); "
                                                               "null: the task's defaults "
                                                               "(learning.registry.default_inputs), [] none")
    state_features: Optional[Features] = Field(None, description="extra entries of the local controllers' state; "
                                                                 "null as for obs_features")
    agent: dict[Name, Value] = Field({}, description="the agent's constructor keywords (cost weights, episode "
                                                     "length, ...), checked against the task's agent")
    gps: dict[Name, Value] = Field({}, description="GPSConfig fields (learning/gps_config.py)")
    plato: dict[Name, Value] = Field({}, description="PLATOConfig fields (learning/plato.py)")

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_absent(cls, data):
        # only the fields whose default is not null: `config: null` and `obs_features: null` mean
        # their default anyway, `image_size:` with nothing after it means 128
        return drop_nulls(data, [n for n, f in cls.model_fields.items() if f.default is not None])

    @model_validator(mode="after")
    def _one_algorithm(self):
        for other in ALGORITHMS:
            section = getattr(self, other)
            given = section.model_fields_set if isinstance(section, BaseModel) else section
            if other != self.algorithm and other in self.model_fields_set and given:
                raise fail(f"a {other} section, but algorithm is {self.algorithm}", at=other)
        return self

    def section(self) -> dict:
        """The running algorithm's section as keywords (every field, defaults included)."""
        s = getattr(self, self.algorithm)
        return s.model_dump() if isinstance(s, BaseModel) else dict(s)


def _strict(hint) -> Any:
    """A dataclass field's type as a strict pydantic type (YAML's types matter: "5" is no number)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return StrictBool
    if hint is int:
        return Annotated[int, Strict()]
    if hint is float:
        return Real
    if hint is str:
        return StrictStr
    if origin is tuple and args[:1] == (str,):
        return tuple[Name, ...]
    if hint is tuple or origin is tuple:
        return tuple[Union[StrictInt, Real], ...]
    if origin in (Union, types.UnionType):
        return Union[tuple(type(None) if a is type(None) else _strict(a) for a in args)]
    return hint


def section_model(name: str, config_cls, top_level: dict[str, str]) -> type[BaseModel]:
    """A strict model of a configuration dataclass's fields (their defaults the dataclass's), less
    `top_level` (field -> the experiment's top-level key that sets it)."""
    hints = typing.get_type_hints(config_cls)
    fields = {f.name: (_strict(hints[f.name]), f.default if f.default is not dataclasses.MISSING else ...)
              for f in dataclasses.fields(config_cls) if f.name not in top_level}
    moved = ", ".join(f if k == f else f"{f} ({k})" for f, k in top_level.items())
    return create_model(name, __config__=STRICT, __doc__=f"{config_cls.__name__} fields; set at the top level "
                        f"instead: {moved}", **fields)


def experiment_model(sections: dict[str, tuple[type, dict[str, str]]]) -> type[Experiment]:
    """`Experiment` with typed algorithm sections: `sections` maps "gps"/"plato" to (the config
    dataclass, {field: the top-level key that sets it})."""
    fields = {}
    for algo, (cls, top) in sections.items():
        model = section_model(f"{algo.upper()}Section", cls, top)
        fields[algo] = (model, Field(model(), description=f"{cls.__name__} fields"))
    model = create_model("Experiment", __base__=Experiment, **fields)
    model._top_level = {algo: top for algo, (_, top) in sections.items()}
    return model


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def parse_overrides(items) -> list[tuple[str, Any, str]]:
    """`key=value` strings as (dotted key, value parsed as YAML, the item as given)."""
    out = []
    for item in items:
        key, eq, text = str(item).partition("=")
        key = key.strip()
        if not eq or not _KEY.fullmatch(key):
            raise ConfigError(f"override {excerpt(item)}", "", "expected KEY=VALUE (KEY a field, dotted into a "
                                                               "section: gps.kl_step=0.5)")
        out.append((key, loads(text, f"override {item}") if text.strip() else None, str(item)))
    return out


def _apply(data: dict, overrides) -> dict:
    data = dict(data)
    for key, value, item in overrides:
        parts = key.split(".")
        d = data
        for i, p in enumerate(parts[:-1]):
            sub = d.get(p)
            if sub is None:
                sub = {}
            elif not isinstance(sub, dict):
                raise ConfigError(f"override {item}", ".".join(parts[:i + 1]), "not a section; cannot set a key in it")
            d[p] = sub = dict(sub)
            d = sub
        d[parts[-1]] = value
    return data


def _validate(model, data, file: str, top_level: dict, check=None):
    def unknown(path, err):
        section, _, key = path.partition(".")
        if key in top_level.get(section, {}):
            return f"set at the top level: {top_level[section][key]}"
        return None
    try:
        exp = model.model_validate(data)
    except ValidationError as e:
        raise to_config_error(e, file, unknown_key=unknown) from None
    if check is not None:
        try:
            check(exp)
        except ConfigError as e:
            raise ConfigError(file, e.key, e.reason) from None
    return exp


def _touches(path: str, key: str) -> bool:
    return path == key or path.startswith((key + ".", key + "[")) or key.startswith(path + ".")


def load_experiment(data: Any, file: str, overrides=(), model: type[Experiment] = Experiment,
                    check=None) -> Experiment:
    """The experiment of `data` (a parsed file, or None for the defaults), named `file` in
    errors, with `overrides` ((key, value, label) from `parse_overrides`) applied. `check(exp)` may
    refuse what the schema cannot see with a ConfigError (its file left empty: filled in here). An
    error names the override it is at, else the file where the file alone has it (an override may
    repair a file), else both."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, "", f"expected a mapping of experiment fields, got {type(data).__name__}")
    top = getattr(model, "_top_level", {})
    try:
        return _validate(model, _apply(data, overrides), file, top, check)
    except ConfigError as e:
        if not overrides:
            raise
        culprit = [label for key, _, label in overrides if _touches(e.key, key)]
        if culprit:
            raise ConfigError(f"override {culprit[-1]}", e.key, e.reason) from None
        _validate(model, data, file, top, check)          # the file's own error, if it has one
        raise ConfigError(f"{file} with {' '.join(lb for *_, lb in overrides)}", e.key, e.reason) from None
