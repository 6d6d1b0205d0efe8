"""Node parameters through their models (s2r.core.schema.nodes, s2r_ros.node_params): declared from
the model's fields, validated at start (one line, exit 2) and when set later."""
import pytest
import rclpy
from pydantic import ValidationError
from rclpy.parameter import Parameter

from s2r.drivers.mock_driver import MockFaults
from s2r.core.schema.errors import key_path, reason
from s2r.core.schema.nodes import (NODE_PARAMS, CameraNodeParams, DriverNodeParams, MPCNodeParams, PolicyNodeParams,
                                   ReachSequencerParams)
from s2r.launch.bringup import load_bringup
from s2r_ros.driver_faults import FAULT_PARAMETERS, fault_knobs
from s2r_ros.node_params import declare_parameters


def first_error(model, **values):
    with pytest.raises(ValidationError) as e:
        model(**values)
    err = e.value.errors(include_url=False)[0]
    return key_path(err), reason(err)


@pytest.mark.parametrize("model", list(NODE_PARAMS.values()))
def test_every_declared_default_is_a_ros_value_and_valid(model):
    """ROS declares a parameter's type from its default: a scalar or a non-empty list of one kind."""
    for name, f in model.model_fields.items():
        d = f.default
        assert isinstance(d, (bool, int, float, str, list)), name
        if isinstance(d, list):
            assert d and len({type(x) for x in d}) == 1, name
    model()                                                  # the defaults pass their own checks


@pytest.mark.parametrize("model, values, key, why", [
    (PolicyNodeParams, dict(action="fly"), "action", "must be one of position, position_delta, velocity, effort"),
    (PolicyNodeParams, dict(max_lead_rad=0.0), "max_lead_rad", "must be in (0, 10], got 0"),
    (PolicyNodeParams, dict(rate_hz=-5), "rate_hz", "must be in [0, 10000]"),
    (PolicyNodeParams, dict(config=5), "config", "expected a non-empty string, got int 5"),
    (PolicyNodeParams, dict(use_image="yes"), "use_image", "expected true/false"),
    (PolicyNodeParams, dict(joints=[1.0]), "joints", "expected a list of names"),
    (MPCNodeParams, dict(command_mode="effort"), "command_mode", "must be one of position, velocity"),
    (MPCNodeParams, dict(horizon=0), "horizon", "must be in [1, 1000], got 0"),
    (MPCNodeParams, dict(horizon=2.0), "horizon", "expected an integer"),
    (MPCNodeParams, dict(planner_nice=20), "planner_nice", "must be in [0, 19], got 20"),
    (MPCNodeParams, dict(velocity_scale=1.5), "velocity_scale", "must be in (0, 1], got 1.5"),
    (MPCNodeParams, dict(rate_hz=float("nan")), "rate_hz", "finite"),
    (CameraNodeParams, dict(position=[1.0, 2.0]), "position", "expected 3 numbers (or [0.0]: as configured), got 2"),
    (CameraNodeParams, dict(width=-1), "width", "must be in [0, 16384], got -1"),
    (ReachSequencerParams, dict(goals=[0.1, 0.2]), "goals", "must be x, y, z triples, got 2 numbers"),
    (ReachSequencerParams, dict(settle_s=-1), "settle_s", "must be in [0, 3600], got -1"),
    (DriverNodeParams, dict(hardware="moon"), "hardware",
     "must be auto, sim, real, mock or \"\" (the config's); got 'moon'"),
    (DriverNodeParams, dict(diagnostics_period_s=0), "diagnostics_period_s", "must be in (0, 3600], got 0"),
    (DriverNodeParams, dict(randomize_seed=-1), "randomize_seed", "got -1"),
    (DriverNodeParams, dict(fault_latency=1.5), "fault_latency", "expected an integer"),
    (DriverNodeParams, dict(realtime_priority=100), "realtime_priority", "must be in [0, 99], got 100"),
    (DriverNodeParams, dict(fast=1), "fast", "unknown key"),
])
def test_bad_values_are_refused_naming_the_parameter(model, values, key, why):
    path, text = first_error(model, **values)
    assert path == key and why in text, (path, text)


def test_placeholders_mean_unset_and_numbers_take_integers():
    p = CameraNodeParams(position=[0.0], rpy=[0, 0.5, 1])
    assert p.position is None and p.rpy == (0.0, 0.5, 1.0)
    assert PolicyNodeParams(joints=[""]).joints == () and PolicyNodeParams(joints=["a", "b"]).joints == ("a", "b")
    assert MPCNodeParams(rate_hz=20).rate_hz == 20.0 and isinstance(MPCNodeParams(rate_hz=20).rate_hz, float)
    assert ReachSequencerParams(goals=[1, 2, 3, 4, 5, 6]).goals == (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)


@pytest.mark.parametrize("bringup", ["sim_panda", "robot_panda", "hand_policy"])
def test_the_shipped_bringups_parameters_pass_their_nodes_models(bringup):
    b = load_bringup(bringup)
    checked = 0
    for node in b.nodes:
        if node.executable in NODE_PARAMS:
            NODE_PARAMS[node.executable](**node.parameters)
            checked += 1
    assert checked >= 2


def test_the_fault_knobs_are_the_driver_models_fault_parameters():
    fields = {n for n in DriverNodeParams.model_fields if n.startswith("fault_")} - {"fault_injection"}
    assert fields == {f"fault_{k}" for k in FAULT_PARAMETERS}
    joints = ["j1", "j2"]
    assert fault_knobs(DriverNodeParams(), joints, "sim") is None
    assert fault_knobs(DriverNodeParams(fault_injection=True), joints, "sim") == MockFaults()
    f = fault_knobs(DriverNodeParams(fault_latency=2, fault_nan_after=5, fault_nan_joints=["j2"]), joints, "sim")
    assert (f.latency, f.nan_after, f.nan_joints, f.disconnect_after) == (2, 5, ("j2",), None)
    with pytest.raises(ValueError, match=r"^parameter fault_latency: must be a non-negative integer, got -2$"):
        fault_knobs(DriverNodeParams(fault_latency=-2), joints, "mock")
    with pytest.raises(ValueError, match="fault_stuck_joints: only the mock robot"):
        fault_knobs(DriverNodeParams(fault_stuck_joints=["j1"]), joints, "sim")
    with pytest.raises(ValueError, match="fault_nan_joints: 'elbow' is not one of"):
        fault_knobs(DriverNodeParams(fault_nan_joints=["elbow"]), joints, "mock")


@pytest.fixture
def make_node():
    """A node of a context of its own, with command-line parameter overrides."""
    ctx = rclpy.Context()
    made = []

    def make(name, *overrides):
        args = ["--ros-args"] + [x for o in overrides for x in ("-p", o)]
        rclpy.init(context=ctx, args=["test"] + args)
        node = rclpy.create_node(name, context=ctx)
        made.append(node)
        return node
    yield make
    for n in made:
        n.destroy_node()
    rclpy.try_shutdown(context=ctx)


def test_a_node_declares_its_models_parameters_with_their_defaults(make_node):
    node = make_node("mpc_t", "rate_hz:=10", "ee_link:=tool")
    p = declare_parameters(node, MPCNodeParams)
    assert node.params is p and p.rate_hz == 10.0 and p.ee_link == "tool" and p.horizon == 20
    for name, f in MPCNodeParams.model_fields.items():
        assert node.has_parameter(name), name
    assert node.get_parameter("horizon").value == 20                 # the model's default, declared once
    assert node.get_parameter("horizon").type_ == Parameter.Type.INTEGER
    assert node.get_parameter("rate_hz").type_ == Parameter.Type.INTEGER    # as given; the model makes it a float
    assert node.describe_parameter("horizon").dynamic_typing
    assert "iLQR iterations" in node.describe_parameter("max_iter").description


def test_a_bad_value_at_start_is_one_line_and_exit_2(make_node, capfd):
    node = make_node("cam_t", "position:=[1.0, 2.0]")
    with pytest.raises(SystemExit) as e:
        declare_parameters(node, CameraNodeParams)
    assert e.value.code == 2
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].endswith(
        "cam_t: parameter position: expected 3 numbers (or [0.0]: as configured), got 2"), err


def test_a_later_set_is_validated_by_the_model(make_node):
    node = make_node("pol_t")
    declare_parameters(node, PolicyNodeParams)
    r = node.set_parameters([Parameter("max_state_age_s", value=-1.0)])[0]
    assert not r.successful and r.reason == "parameter max_state_age_s: must be in (0, 3600], got -1"
    assert node.params.max_state_age_s == 0.25 and node.get_parameter("max_state_age_s").value == 0.25
    assert node.set_parameters([Parameter("max_state_age_s", value=1)])[0].successful    # an integer is a number
    assert node.params.max_state_age_s == 1.0
    r = node.set_parameters([Parameter("action", value="fly")])[0]
    assert not r.successful and "parameter action: must be one of" in r.reason and node.params.action == "position"


def test_s2r_schema_lists_every_nodes_parameters():
    from s2r.cli import schema_models

    kinds = {k[len("node:"):]: f for k, f in schema_models().items() if k.startswith("node:")}
    assert set(kinds) == set(NODE_PARAMS)
    for executable, model in kinds.items():
        schema = model().model_json_schema()
        assert set(schema["properties"]) == set(NODE_PARAMS[executable].model_fields)
    props = kinds["policy_node"]().model_json_schema()["properties"]
    assert props["max_lead_rad"]["default"] == 0.2 and props["action"]["enum"][1] == "position_delta"
