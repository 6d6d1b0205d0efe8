"""A node's ROS parameters from its pydantic model (s2r.core.schema.nodes).

`declare_parameters(node, Model)` declares one ROS parameter per field of the model, with the
field's default and description, reads what the node was given, and validates it with the model:
the validated model becomes `node.params`, the values the node runs with. A bad value ends the node
before it opens anything: one error line `<node>: parameter <name>: <reason>` and exit code 2 (bad
configuration), which a launch reports. Checks that need more than the parameters (a joint of the
config, a file) call `refuse(node, name, reason)` for the same line and exit code.

The parameters are dynamically typed for ROS, so that the model is the one type check (a number
parameter takes `rate_hz:=20`, and `config:=5` is refused in the project's words). A later change
(`ros2 param set`) is validated by the model too: a bad one is refused, a good one replaces
`node.params`.
"""
from __future__ import annotations

from typing import NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

from s2r.core.schema.errors import key_path, reason

M = TypeVar("M", bound=BaseModel)


def refuse(node, name: str, why: str) -> NoReturn:
    """Log `<node>: parameter <name>: <why>` and end the node with exit code 2 (spin_node)."""
    node.get_logger().error(f"{node.get_name()}: parameter {name}: {why}")
    raise SystemExit(2)


def _ros_value(v):
    """A model default as ROS declares it (a tuple is a list)."""
    return list(v) if isinstance(v, tuple) else v


def _first_error(e: ValidationError) -> tuple[str, str]:
    err = e.errors(include_url=False)[0]
    return key_path(err) or "?", reason(err)


def declare_parameters(node, model: type[M]) -> M:
    """Declare `model`'s fields as `node`'s parameters (unless declared already), validate the
    values given, and return the validated model (also `node.params`); `refuse` on a bad value."""
    values = {}
    for name, field in model.model_fields.items():
        if not node.has_parameter(name):
            node.declare_parameter(name, _ros_value(field.default),
                                   ParameterDescriptor(description=field.description or "", dynamic_typing=True))
        values[name] = node.get_parameter(name).value
    try:
        node.params = model.model_validate(values)
    except ValidationError as e:
        refuse(node, *_first_error(e))

    def on_set(parameters) -> SetParametersResult:
        changed = {p.name: p.value for p in parameters if p.name in model.model_fields}
        if not changed:
            return SetParametersResult(successful=True)
        merged = {name: node.get_parameter(name).value for name in model.model_fields} | changed
        try:
            node.params = model.model_validate(merged)
        except ValidationError as e:
            name, why = _first_error(e)
            return SetParametersResult(successful=False, reason=f"parameter {name}: {why}")
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    return node.params
