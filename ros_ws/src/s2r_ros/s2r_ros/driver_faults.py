"""driver_node's fault knobs: node parameters `fault_<knob>` for the knobs of
`drivers.mock_driver.MockFaults`, so that a drill or a test runs the ROS graph against a robot
that fails on purpose (`hardware:=mock`, or any backend wrapped in a `FaultyDriver`).

A parameter left at its default injects nothing: -1 for a count that may be off, "" for a text,
[""] for a list. The parameters' types and defaults are `s2r.core.schema.nodes.DriverNodeParams`'s;
their bounds are MockFaults' own checks. `fault_injection:=true` adds `~/inject_fault` (the robot stops answering until
`~/reset`) with or without knobs.
"""
from __future__ import annotations

from s2r.drivers.mock_driver import MockFaults

# knob -> how its parameter's validated value (s2r.core.schema.nodes.DriverNodeParams, where the
# parameters' types and defaults are) becomes the knob's
_OFF_IF_NEGATIVE = lambda v: None if v < 0 else v          # noqa: E731
_OFF_IF_EMPTY = lambda v: v or None                         # noqa: E731
_AS_IS = lambda v: v                                        # noqa: E731

FAULT_PARAMETERS = {
    "disconnect_after": _OFF_IF_NEGATIVE,
    "recoverable": _AS_IS,
    "stuck_joints": _AS_IS,               # names: the placeholder [""] is already dropped
    "latency": _AS_IS,
    "noise": _AS_IS,
    "nan_after": _OFF_IF_NEGATIVE,
    "nan_joints": _AS_IS,
    "bus_error_every": _AS_IS,
    "bus_error_rate": _AS_IS,
    "bus_error_on": _AS_IS,
    "fail_hold": _AS_IS,
    "connect_error": _OFF_IF_EMPTY,
    "seed": _AS_IS,
}

MOCK_ONLY = ("stuck_joints", "connect_error")     # the other knobs also wrap any backend (FaultyDriver)


def fault_knobs(params, joint_names, hardware: str) -> MockFaults | None:
    """The knobs that driver_node's validated parameters (`DriverNodeParams`) set; None when none
    is set and `fault_injection` is off (the driver is then not wrapped at all). A bad value
    raises ValueError `parameter fault_<knob>: reason`."""
    defaults = type(params)()
    knobs = {}
    for name, convert in FAULT_PARAMETERS.items():
        value = getattr(params, f"fault_{name}")
        if value != getattr(defaults, f"fault_{name}") and convert(value) not in ((), None):
            knobs[name] = convert(value)
    if not knobs and not params.fault_injection:
        return None
    for key in ("stuck_joints", "nan_joints"):
        unknown = [j for j in knobs.get(key, ()) if j not in joint_names]
        if unknown:
            raise ValueError(f"parameter fault_{key}: {unknown[0]!r} is not one of the robot's joints")
    for key in MOCK_ONLY:
        if key in knobs and hardware != "mock":
            raise ValueError(f"parameter fault_{key}: only the mock robot (hardware:=mock) has this fault")
    try:
        return MockFaults(**knobs)
    except ValueError as e:
        raise ValueError(str(e).replace("MockFaults.", "parameter fault_", 1)) from None
