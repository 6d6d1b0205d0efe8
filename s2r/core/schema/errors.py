"""Pydantic validation errors as the project's one-line `ConfigError` (`file: key.path: reason`).

A model refuses a value in one of two ways: pydantic's own checks (types, `extra="forbid"`,
literals, lengths), whose errors `reason` rewords into the project's phrasing, or a check of ours
that raises `fail(reason, at=...)`; `at` extends the error's location (a model validator of
`limits` that refuses `position` says `at="position"`). Only the first error is reported: one
line, and the first thing to fix. Values are quoted through `excerpt` only.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from pydantic import ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

from ..yamlio import ConfigError, excerpt, keyname

S2R_ERROR = "s2r"


def fail(reason: str, at: str | None = None) -> PydanticCustomError:
    """The error a check of ours raises: `raise fail("lower 1 >= upper 0", at="position")`."""
    return PydanticCustomError(S2R_ERROR, "{reason}", {"reason": reason, "at": at})


def tname(v: Any) -> str:
    """A YAML-ish name of a value's type for messages."""
    return {dict: "mapping", list: "list", str: "string", type(None): "nothing"}.get(type(v), type(v).__name__)


def with_message(reason: Callable[[Any], str]) -> WrapValidator:
    """Annotated metadata: when the inner type refuses a value, say `reason(value)` instead of
    pydantic's words (the schema stays the inner type's)."""
    def wrap(v, handler):
        try:
            return handler(v)
        except ValidationError:
            raise fail(reason(v)) from None
    return WrapValidator(wrap)


def _options(expected: str) -> str:
    """pydantic's "'a', 'b' or 'c'" as "a, b, c"."""
    found = re.findall(r"'((?:[^'\\]|\\.)*)'", expected)
    return ", ".join(found) if found else expected


def reason(err: dict) -> str:
    """One pydantic error dict, in the project's words."""
    kind, v, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == S2R_ERROR:
        return ctx["reason"]
    if kind == "missing":
        return "missing required key"
    if kind in ("extra_forbidden", "unexpected_keyword_argument", "invalid_key"):
        return "unknown key (check the spelling; `s2r schema` prints every key)"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {tname(v)} {excerpt(v)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {tname(v)} {excerpt(v)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true/false, got {tname(v)} {excerpt(v)}"
    if kind == "finite_number":
        return f"must be a finite number, got {v}"
    if kind == "string_type":
        return f"expected a non-empty string, got {tname(v)} {excerpt(v)}"
    if kind == "string_too_short":
        return f"expected a non-empty string, got {excerpt(v)}"
    if kind == "string_too_long":
        return f"longer than {ctx.get('max_length')} characters: {excerpt(v)}"
    if kind == "literal_error":
        return f"must be one of {_options(str(ctx.get('expected', '')))}; got {excerpt(v)}"
    if kind == "union_tag_invalid":
        key = _options(str(ctx.get("discriminator", "")))
        tag = v.get(key, ctx.get("tag")) if isinstance(v, dict) else ctx.get("tag")
        return f"must be one of {_options(str(ctx.get('expected_tags', '')))}; got {excerpt(tag)}"
    if kind == "union_tag_not_found":
        return "missing required key"
    if kind in ("model_type", "model_attributes_type", "dataclass_type", "dict_type", "dataclass_args_type"):
        return f"expected a mapping, got {tname(v)}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {tname(v)}"
    if kind == "too_short":
        return f"at least {ctx.get('min_length')} item(s) required, got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"at most {ctx.get('max_length')} item(s), got {ctx.get('actual_length')}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bound = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">", "less_than": "<"}[kind]
        limit = next(iter(ctx.values()), "?")
        return f"must be {bound} {limit:g}, got {excerpt(v)}" if isinstance(limit, (int, float)) else err["msg"]
    return " ".join(str(err.get("msg", kind)).split())


def key_path(err: dict, tagged: frozenset = frozenset()) -> str:
    """`joints[2].limits.position` from a pydantic location. Integers are list indices, except the
    last element of an `invalid_key` error (a mapping key that is not a string); `[key]` (where a
    mapping key failed) is dropped, and so is the tag after a top-level discriminated union field
    named in `tagged` (`driver.dynamixel.baudrate` is `driver.baudrate`)."""
    loc = list(err.get("loc", ()))
    out: list[str] = []
    skip_next = False
    for i, part in enumerate(loc):
        if skip_next:
            skip_next = False
            continue
        if part == "[key]":
            continue
        is_key = err["type"] == "invalid_key" and i == len(loc) - 1
        if isinstance(part, int) and not is_key:
            out.append(f"[{part}]")
        else:
            out.append(("." if out else "") + keyname(part))
        if i == 0 and part in tagged:
            skip_next = True
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):     # the discriminator's key
        out.append(("." if out else "") + _options(str(err["ctx"].get("discriminator", ""))))
    at = (err.get("ctx") or {}).get("at") if err["type"] == S2R_ERROR else None
    if at:
        out.append(at if at.startswith("[") or not out else "." + at)
    return "".join(out)


def to_config_error(e: ValidationError, file: str, prefix: str = "", tagged=frozenset(),
                    unknown_key: Callable[[str, dict], str | None] | None = None) -> ConfigError:
    """The first error of `e` as one ConfigError; `prefix` is the key path of what was validated
    (`driver` for a driver section checked on its own), `unknown_key(path, err)` may reword an
    unknown key's reason."""
    errs = e.errors(include_url=False)
    err = errs[0]
    path = key_path(err, frozenset(tagged))
    if prefix:
        path = f"{prefix}.{path}" if path and not path.startswith("[") else prefix + path
    why = reason(err)
    if unknown_key is not None and err["type"] in ("extra_forbidden", "unexpected_keyword_argument", "invalid_key"):
        why = unknown_key(path, err) or why
    return ConfigError(file, path, why)
