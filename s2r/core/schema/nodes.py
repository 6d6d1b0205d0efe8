"""The ROS parameters of s2r's nodes, one pydantic model per node.

A model's fields are the node's parameters: name, type, default (written here once) and bounds;
cross-field rules are model validators. The node declares its ROS parameters from the model
(`s2r_ros.node_params.declare_parameters`), so a parameter's default is the field's default, and
validates what it was given with the model: a bad value ends the node with one line
`<node>: parameter <name>: <reason>` and exit code 2. What depends on files or the hardware config
(a joint name, the driver's command modes) is checked by the node itself, in the same form.

ROS parameters have no empty-list type, so a list whose default means "unset" is declared with a
placeholder (`[""]`, `[0.0]`); the validated model gives the meaning (an empty tuple, `None`).
Every parameter accepts its ROS type's values only (strict: `"5"` is not a number, `1` is not
true), except that a number parameter accepts an integer (`rate_hz:=20`).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, BeforeValidator, Field, StrictStr, model_validator

from ..bag import DEFAULT_TOPICS
from ..joint_limiter import MAX_LEAD
from ..yamlio import excerpt
from .errors import fail, tname, with_message
from .types import MAX_TEXT, STRICT, Flag, Int, Name, Number

HOUR = 3600.0
MAX_RATE_HZ = 10_000.0


def _g(x: float) -> str:
    return f"{x:g}"


def Positive(hi: float) -> Any:
    """A finite number in (0, hi]: periods, timeouts, rates."""
    def check(v):
        if not 0 < v <= hi:
            raise fail(f"must be in (0, {_g(hi)}], got {_g(v)}")
        return float(v)
    return Annotated[float, Field(strict=True, allow_inf_nan=False,
                                  json_schema_extra={"exclusiveMinimum": 0, "maximum": hi}),
                     AfterValidator(check)]


def _as_list(v):
    """rclpy hands number arrays over as array.array: a list like the others."""
    return list(v) if hasattr(v, "typecode") else v


def _unset_or(n: int):
    """A list of n numbers, or the one-element placeholder `[0.0]`: None."""
    def check(v):
        v = _as_list(v)
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                       for x in v):
            raise fail(f"expected a list of {n} numbers, got {tname(v)} {excerpt(v)}")
        if len(v) == 1 and v[0] == 0:
            return None
        if len(v) != n:
            raise fail(f"expected {n} numbers (or [0.0]: as configured), got {len(v)}")
        if not all(abs(x) < float("inf") for x in v):
            raise fail(f"must be finite numbers, got {excerpt(v)}")
        return tuple(float(x) for x in v)
    return BeforeValidator(check)


def _names(v):
    """A list of names; the placeholder `[""]` (and any empty entry) is dropped."""
    v = _as_list(v)
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise fail(f"expected a list of names, got {tname(v)} {excerpt(v)}")
    out = tuple(x for x in v if x)
    for x in out:
        if len(x) > 128 or not x.isprintable():
            raise fail(f"not a valid name: {excerpt(x)}")
    return out


def _numbers(v):
    v = _as_list(v)
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                   for x in v):
        raise fail(f"expected a list of numbers, got {tname(v)} {excerpt(v)}")
    if not all(abs(x) < float("inf") for x in v):
        raise fail(f"must be finite numbers, got {excerpt(v)}")
    return tuple(float(x) for x in v)


# "" (the default: none) or a path, a name, a device
Text = Annotated[StrictStr, Field(max_length=MAX_TEXT)]
Names = Annotated[tuple[str, ...], BeforeValidator(_names),
                  Field(json_schema_extra={"type": "array", "items": {"type": "string"}})]
Numbers = Annotated[tuple[float, ...], BeforeValidator(_numbers),
                    Field(json_schema_extra={"type": "array", "items": {"type": "number"}})]
Xyz = Annotated[tuple[float, float, float] | None, _unset_or(3),
                Field(json_schema_extra={"type": "array", "items": {"type": "number"}})]


def _rate(v):
    if not 0 <= v <= MAX_RATE_HZ:
        raise fail(f"must be in [0, {_g(MAX_RATE_HZ)}] (0: the configured rate), got {_g(v)}")
    return float(v)


# a rate in Hz, 0 for "the configured one"
Rate = Annotated[float, Field(strict=True, allow_inf_nan=False, json_schema_extra={"minimum": 0, "maximum": MAX_RATE_HZ}),
                 AfterValidator(_rate)]


class NodeParams(BaseModel):
    """What every node has. A field's default is the declared ROS parameter's default as is
    (placeholders included); validated, it is the value the node runs with."""

    model_config = STRICT | ConfigDict(validate_default=True)

    realtime_priority: Int(0, 99) = Field(0, description="0: normal scheduling; 1-99: SCHED_FIFO for the node's threads")


class PolicyNodeParams(NodeParams):
    policy: Text = Field("", description="the exported policy: TorchScript (.pt) or torch.export (.pt2) file")
    config: Name = "panda_sim"
    driver: Name = Field("driver", description="the driver node's name: commands go to /<driver>/commands")
    rate_hz: Rate = Field(0.0, description="control rate; 0: the policy's (its metadata), else the config's")
    trigger: Literal["state", "timer"] = Field(
        "state", description="state: one step per /joint_states, at most at rate_hz (paced by the driver's "
                             "clock, as in training); timer: on its own clock at rate_hz")
    action: Literal["position", "position_delta", "velocity", "effort"] = "position"
    joints: Names = Field([""], description="commanded joints; [\"\"]: the metadata's, else all of the config's")
    use_image: Flag = True
    image_topic: Name = "/camera/image_raw"
    image_size: Int(0, 4096) = Field(0, description="square input size; 0: as received")
    max_state_age_s: Positive(HOUR) = 0.25
    max_image_age_s: Positive(HOUR) = 0.5
    diagnostics_period_s: Positive(HOUR) = 1.0
    max_lead_rad: Positive(10.0) = Field(MAX_LEAD, description="position targets stay this close to the measured position")
    enabled: Flag = Field(True, description="run the policy (also ~/enable)")


class MPCNodeParams(NodeParams):
    config: Name = "panda_sim"
    driver: Name = Field("driver", description="the driver node's name: commands go to /<driver>/commands")
    rate_hz: Positive(1000.0) = Field(20.0, description="replanning rate; also 1 / the plan's time step")
    horizon: Int(1, 1000) = 20
    max_iter: Int(1, 100) = Field(3, description="iLQR iterations per replan (warm-started)")
    velocity_scale: Positive(1.0) = Field(0.5, description="fraction of the joint velocity limits the plan may use")
    command_mode: Literal["position", "velocity"] = Field("position", description="must match the driver's")
    ee_link: Text = Field("", description="\"\": the robot model's end effector")
    goal_timeout_s: Positive(HOUR) = Field(2.0, description="goals stamped longer ago than this are stale")
    state_timeout_s: Positive(HOUR) = Field(0.25, description="no commands from a state older than this")
    plan_timeout_s: Positive(HOUR) = Field(0.5, description="hold when the newest plan is older than this")
    tolerance_m: Positive(10.0) = Field(0.005, description="\"reached\" in the diagnostics")
    min_goal_height: Number(-100.0, 100.0) = Field(0.02, description="end-effector goals below this z are refused")
    lead_periods: Positive(1000.0) = Field(3.0, description="position mode: how far (in periods at full speed) "
                                                            "the set-point may run ahead of the measured position")
    diagnostics_period_s: Positive(HOUR) = 1.0
    planner_nice: Int(0, 19) = Field(10, description="the planner process's CPU priority below the node's")


class CameraNodeParams(NodeParams):
    config: Name = "panda_sim"
    camera: Text = Field("", description="camera name in the config; \"\": the first")
    rate_hz: Rate = Field(0.0, description="0: the camera's rate")
    width: Int(0, 16384) = Field(0, description="0: the configured size (sim: same field of view at another size)")
    height: Int(0, 16384) = 0
    device: Text = Field("", description="override the configured device (index or path)")
    position: Xyz = Field([0.0], description="sim: the camera's position (x, y, z); [0.0]: as configured")
    rpy: Xyz = Field([0.0], description="sim: the camera's orientation (roll, pitch, yaw); [0.0]: as configured")
    show_goal: Flag = True
    topic_prefix: Name = "/camera"
    diagnostics_period_s: Positive(HOUR) = 1.0


class ReachSequencerParams(NodeParams):
    config: Name = "panda_sim"
    goals: Numbers = Field([0.45, 0.25, 0.45], description="x, y, z of each goal, flattened")
    frame_id: Name = "world"
    tolerance_m: Positive(10.0) = 0.01
    settle_s: Number(0.0, HOUR) = 0.3
    dwell_s: Number(0.0, HOUR) = Field(0.0, description="stay at a reached goal this long before the next one")
    goal_timeout_s: Positive(HOUR) = 12.0
    start_timeout_s: Positive(HOUR) = 90.0
    driver: Name = "driver"
    mpc: Name = "mpc"
    out_dir: Text = Field("", description="where tracking.csv, summary.json and camera.mp4 go; \"\": nowhere")
    video_fps: Positive(1000.0) = 15.0
    progress: Flag = True

    @model_validator(mode="after")
    def _triples(self):
        if not self.goals or len(self.goals) % 3:
            raise fail(f"must be x, y, z triples, got {len(self.goals)} numbers", at="goals")
        return self


class DriverNodeParams(NodeParams):
    """driver_node; the `fault_<knob>` parameters set the knobs of drivers.mock_driver.MockFaults
    (whose own checks bound their values): a default injects nothing (-1: off, "": none,
    [""]: none or all, as the knob says)."""

    config: Name = "panda_sim"
    hardware: Annotated[Literal["", "auto", "sim", "real", "mock"],
                        with_message(lambda v: f"must be auto, sim, real, mock or \"\" (the config's); got {excerpt(v)}")
                        ] = Field("", description="\"\": the config's")
    autostart: Flag = Field(False, description="configure + activate on start-up")
    emulate: Flag = Field(False, description="drive the config's protocol-level emulator (dynamixel, ros2), "
                                             "started and stopped by the node, instead of the hardware")
    command_mode: Literal["position", "velocity", "effort"] = "position"
    diagnostics_period_s: Positive(HOUR) = 1.0
    latency_log: Text = Field("", description="CSV of every state's publish/answer time")
    randomize: Text = Field("", description="sim only: a randomization preset's name or YAML path")
    randomize_seed: Int(0, 2**63 - 1) = 0
    randomize_joints: Names = Field([""], description="joints the draw's per-joint values act on; [\"\"]: all")
    fault_injection: Flag = Field(False, description="adds ~/inject_fault")
    fault_disconnect_after: int = Field(-1, strict=True, description="calls until the robot stops answering")
    fault_recoverable: Flag = Field(True, description="false: ~/reset cannot bring it back")
    fault_stuck_joints: Names = Field([""], description="joint names that do not move (mock only)")
    fault_latency: int = Field(0, strict=True, description="control periods before a command takes effect")
    fault_noise: float = Field(0.0, strict=True, allow_inf_nan=False, description="std (rad) of the position noise")
    fault_nan_after: int = Field(-1, strict=True, description="reads until positions read NaN")
    fault_nan_joints: Names = Field([""], description="joints whose positions read NaN ([\"\"]: all)")
    fault_bus_error_every: int = Field(0, strict=True, description="every k-th call fails")
    fault_bus_error_rate: float = Field(0.0, strict=True, allow_inf_nan=False,
                                        description="each call fails with this probability")
    fault_bus_error_on: Names = Field([""], description="read, write, hold, reset_fault ([\"\"]: the first three)")
    fault_fail_hold: Flag = Field(False, description="every hold fails")
    fault_connect_error: Text = Field("", description="configure fails with this message (mock: unplugged)")
    fault_seed: int = Field(0, strict=True, description="noise and random bus errors")


class RecorderNodeParams(NodeParams):
    out: Text = Field("", description="the recording's folder (created; must not exist)")
    topics: Names = Field(list(DEFAULT_TOPICS), description="topic names or fnmatch patterns to record")
    duration_s: float = Field(0.0, strict=True, ge=0, allow_inf_nan=False,
                              description="stop and finish the file after this long (0: until stopped)")
    flush_period_s: Positive(60.0) = Field(1.0, description="longest time a message waits to reach the file")
    max_queue: Int(1, 10_000_000) = Field(5000, description="messages waiting for the disk before drops")
    max_queue_mb: Int(1, 65536) = Field(256, description="bytes (MiB) waiting for the disk before drops")
    depth: Int(1, 100_000) = Field(100, description="each subscription's queue (KEEP_LAST): absorbs executor stalls")
    discovery_period_s: Positive(60.0) = Field(0.5, description="how often new publishers are looked for")
    diagnostics_period_s: Positive(HOUR) = 1.0


NODE_PARAMS: dict[str, type[NodeParams]] = {
    "driver_node": DriverNodeParams,
    "mpc_node": MPCNodeParams,
    "camera_node": CameraNodeParams,
    "policy_node": PolicyNodeParams,
    "reach_sequencer": ReachSequencerParams,
    "recorder_node": RecorderNodeParams,
}
