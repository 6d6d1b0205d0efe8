"""driver_node's fault knobs: node parameters `fault_<knob>` for the knobs of
`drivers.mock_driver.MockFaults`, so that a drill or a test runs the ROS graph against a robot
that fails on purpose (`hardware:=mock`, or any backend wrapped in a `FaultyDriver`).

A parameter left at its default injects nothing: -1 for a count that may be off, "" for a text,
[""] for a list. `fault_injection:=true` adds `~/inject_fault` (the robot stops answering until
`~/reset`) with or without knobs.
"""
from __future__ import annotations

from drivers.mock_driver import MockFaults

# parameter -> (default, how its value becomes the knob's)
_OFF_IF_NEGATIVE = lambda v: None if v < 0 else v          # noqa: E731
_OFF_IF_EMPTY = lambda v: v or None                         # noqa: E731
_LIST = lambda v: tuple(x for x in v if x)                  # noqa: E731
_AS_IS = lambda v: v                                        # noqa: E731

FAULT_PARAMETERS = {
    "disconnect_after": (-1, _OFF_IF_NEGATIVE),   # calls until the robot stops answering
    "recoverable": (True, _AS_IS),                # False: ~/reset cannot bring it back
    "stuck_joints": ([""], _LIST),                # joint names that do not move (mock only)
    "latency": (0, _AS_IS),                       # control periods before a command takes effect
    "noise": (0.0, _AS_IS),                       # std (rad) of the noise on reported positions
    "nan_after": (-1, _OFF_IF_NEGATIVE),          # reads until positions read NaN
    "nan_joints": ([""], _LIST),                  # ... of these joints ([""]: all)
    "bus_error_every": (0, _AS_IS),               # every k-th call fails
    "bus_error_rate": (0.0, _AS_IS),              # each call fails with this probability
    "bus_error_on": ([""], _LIST),                # read, write, hold, reset_fault ([""]: the first three)
    "fail_hold": (False, _AS_IS),                 # every hold fails
    "connect_error": ("", _OFF_IF_EMPTY),         # configure fails with this message (mock: unplugged)
    "seed": (0, _AS_IS),                          # noise and random bus errors
}

MOCK_ONLY = ("stuck_joints", "connect_error")     # the other knobs also wrap any backend (FaultyDriver)


def declare_fault_parameters(node) -> None:
    node.declare_parameter("fault_injection", False)
    for name, (default, _) in FAULT_PARAMETERS.items():
        node.declare_parameter(f"fault_{name}", default)


def fault_knobs(node, joint_names, hardware: str) -> MockFaults | None:
    """The knobs the node's parameters set; None when none is set and `fault_injection` is off
    (the driver is then not wrapped at all). A bad value raises ValueError, one line naming its
    parameter."""
    knobs = {}
    for name, (default, convert) in FAULT_PARAMETERS.items():
        value = node.get_parameter(f"fault_{name}").value
        if value != default and convert(value) not in ((), None):
            knobs[name] = convert(value)
    if not knobs and not node.get_parameter("fault_injection").value:
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
