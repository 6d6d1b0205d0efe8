"""Field types shared by the config models: strict scalars (YAML's types matter: `"5"` is not a
number, `yes` is not a flag), finite numbers with inclusive bounds, bounded names and texts,
fixed-length vectors. Each carries its JSON Schema (minimum/maximum, lengths) for `s2r schema`."""
from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, StrictBool, StrictStr,
                      model_validator)
from pydantic.json_schema import WithJsonSchema

from ..yamlio import excerpt
from .errors import fail, tname

MAX_NAME = 128                # characters of a name (setup, joint, camera, frame)
MAX_TEXT = 4096               # characters of free text (description) and device paths

# Every model: unknown keys refused, no NaN/inf, frozen once built.
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


def drop_nulls(data: Any, fields) -> Any:
    """A field given as null (`hil:` with nothing after it) counts as absent: its default. (An
    unknown key stays, to be refused.)"""
    if not isinstance(data, dict):
        return data
    return {k: v for k, v in data.items() if v is not None or k not in fields}


class FileModel(BaseModel):
    """Base of a YAML file's models: strict (`STRICT`), a key given as null counts as absent."""
    model_config = STRICT

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_absent(cls, data):
        return drop_nulls(data, cls.model_fields)


def _g(x: float) -> str:
    return f"{x:g}"


def _within(lo: float, hi: float):
    def check(v):
        if not lo <= v <= hi:
            raise fail(f"must be in [{_g(lo)}, {_g(hi)}], got {_g(v)}")
        return v
    return check


def Number(lo: float, hi: float) -> Any:
    """A finite number (an integer is one too) in [lo, hi]."""
    return Annotated[float, Strict(), Field(allow_inf_nan=False, json_schema_extra={"minimum": lo, "maximum": hi}),
                     AfterValidator(_within(lo, hi))]


def Int(lo: int, hi: int) -> Any:
    """An integer in [lo, hi] (not a bool, not 2.0)."""
    return Annotated[int, Strict(), Field(json_schema_extra={"minimum": lo, "maximum": hi}),
                     AfterValidator(_within(lo, hi))]


def _fraction(v):
    if not 0 < v <= 1:
        raise fail(f"must be in (0, 1], got {_g(v)}")
    return v


# a number in (0, 1]: scales and ratios
Fraction = Annotated[float, Strict(), AfterValidator(_fraction),
                     Field(allow_inf_nan=False, json_schema_extra={"exclusiveMinimum": 0, "maximum": 1})]


def _printable(v: str) -> str:
    if not v.isprintable():
        raise fail(f"must be one line of printable characters, got {excerpt(v)}")
    return v


Flag = StrictBool
Real = Annotated[float, Strict(), Field(allow_inf_nan=False)]      # any finite number
Name = Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME), AfterValidator(_printable)]
Text = Annotated[StrictStr, Field(max_length=MAX_TEXT)]


def Vec(n: int, lo: float, hi: float) -> Any:
    """A list of exactly n finite numbers, each in [lo, hi], as a tuple of floats."""
    def check(v):
        if not isinstance(v, (list, tuple)):
            raise fail(f"expected a list of {n} numbers, got {tname(v)} {excerpt(v)}")
        if len(v) != n or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise fail(f"expected a list of {n} numbers, got {excerpt(v)}")
        for i, x in enumerate(v):
            if not math.isfinite(x):
                raise fail(f"must be a finite number, got {x}", at=f"[{i}]")
            if not lo <= x <= hi:
                raise fail(f"every value must be in [{_g(lo)}, {_g(hi)}], got {excerpt(x)}")
        return tuple(float(x) for x in v)
    schema = {"type": "array", "minItems": n, "maxItems": n, "items": {"type": "number", "minimum": lo, "maximum": hi}}
    return Annotated[tuple[float, ...], BeforeValidator(check), WithJsonSchema(schema)]
