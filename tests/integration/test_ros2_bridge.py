"""The ROS 2 bridge driver against the fake ros2_control robot, each in its own process.

DDS is isolated per test process: tests/conftest.py sets a ROS_DOMAIN_ID derived from the pid and
localhost-only discovery before anything imports rclpy (set here too for a standalone run).
"""
import dataclasses
import logging
import os
import time

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))

import numpy as np
import pytest

from s2r.drivers import Command, DriverError, DriverFault, SafetyLayer
from s2r.drivers.emulators import emulated
from s2r.drivers.ros2_bridge import Ros2BridgeDriver, parse_params
from s2r.core.config import ConfigError, load_config


@pytest.fixture(scope="module")
def panda():
    return load_config("panda_ros2_control")


@pytest.fixture(scope="module")
def fake(panda):
    with emulated(panda) as emu:
        yield emu


@pytest.fixture
def bridge(fake):
    fake.clear()
    d = Ros2BridgeDriver(fake.config)
    d.connect()
    yield d
    d.disconnect()
    fake.clear()


def with_driver(cfg, **params):
    return dataclasses.replace(cfg, driver_params={**cfg.driver_params, **params})


def wait_until(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False


def namespaced(cfg, ns, **params):
    """The same robot under /<ns>/... topics, so that it does not mix with the module's fake robot."""
    return with_driver(cfg, joint_states_topic=f"/{ns}/joint_states", trajectory_topic=f"/{ns}/jtc/joint_trajectory",
                       command_topics={m.value: f"/{ns}/forward_{m.value}_controller/commands" for m in cfg.modes},
                       **params)


def raw_position(fake, names):
    snap = fake.snapshot()
    pos = dict(zip(snap["joints"], snap["position"]))
    return np.array([pos[n] for n in names])


# ------------------------------------------------------------------------------ parameters
@pytest.mark.parametrize("params, key, reason", [
    ({"stale_after": 1}, "driver.stale_after", "unknown ros2 driver parameter"),
    ({"command_interface": "action"}, "driver.command_interface", "forward or trajectory"),
    ({"command_interface": "trajectory"}, "driver.modes", "not effort"),
    ({"joint_map": {"nope": "x"}}, "driver.joint_map.nope", "not a joint of this config"),
    ({"joint_map": {"panda_joint1": "panda_joint2"}}, "driver.joint_map", "same robot joint"),
    ({"command_topics": {"torque": "/t"}}, "driver.command_topics.torque", "unknown command mode"),
    ({"joint_states_topic": "has space"}, "driver.joint_states_topic", "topic name"),
    ({"stale_after_s": 0}, "driver.stale_after_s", "must be in"),
    ({"domain_id": 500}, "driver.domain_id", "must be in"),
    ({"node_name": "9lives"}, "driver.node_name", "ROS node name"),
])
def test_bad_bridge_parameters_are_refused_with_the_key(panda, params, key, reason):
    with pytest.raises(ConfigError, match=reason) as e:
        parse_params(with_driver(panda, **params))
    assert e.value.key == key


# ------------------------------------------------------------------------------ state and commands
def test_joint_states_are_mapped_by_name_whatever_the_order(bridge, fake, panda):
    st = bridge.read()
    snap = fake.snapshot()
    # the fake robot publishes in reverse order plus a joint the config does not have
    assert snap["joints"] == list(panda.joint_names)
    assert st.q == pytest.approx(raw_position(fake, panda.joint_names), abs=1e-6)
    assert st.q.shape == st.qd.shape == st.effort.shape == (7,)
    assert st.sensors["has_velocity"] and st.sensors["untrusted"] == ()
    assert st.sensors["age_s"] < bridge.params.stale_after_s


def test_reads_return_the_newest_sample_and_can_wait_for_the_next(bridge):
    seqs = [bridge.read().sensors["seq"] for _ in range(10)]
    assert all(b >= a for a, b in zip(seqs, seqs[1:]))
    for _ in range(5):
        before = bridge.read()
        assert bridge.wait_for_state(timeout=5.0)
        after = bridge.read()
        assert after.sensors["seq"] > before.sensors["seq"] and after.stamp > before.stamp


def test_position_commands_reach_the_forward_controller_in_config_order(bridge, fake):
    q0 = bridge.read().q
    target = q0 + np.linspace(0.01, 0.07, 7)
    bridge.write(Command.position(target))
    assert wait_until(lambda: np.allclose(fake.snapshot()["target"], target))
    assert fake.snapshot()["mode"] == "position"
    assert wait_until(lambda: np.abs(bridge.read().q - target).max() < 1e-3)


def test_velocity_and_effort_commands(bridge, fake, panda):
    v = np.full(7, 0.1)
    q0 = bridge.read().q
    for _ in range(20):
        bridge.write(Command.velocity(v))
        time.sleep(0.01)
    st = bridge.read()
    assert fake.snapshot()["mode"] == "velocity"
    assert np.all(st.q > q0) and st.qd == pytest.approx(v, abs=0.03)
    tau = np.linspace(-2.0, 2.0, 7)
    bridge.write(Command.effort(tau))
    assert wait_until(lambda: np.allclose(bridge.read().effort, tau))      # mirrored into the state
    bridge.hold()
    assert wait_until(lambda: fake.snapshot()["mode"] == "position")


def test_calibration_and_joint_map_apply_both_ways(panda):
    j = list(panda.joints)
    j[1] = dataclasses.replace(j[1], offset=0.3, sign=-1)
    j[2] = dataclasses.replace(j[2], name="shoulder_roll", offset=-0.2)
    cfg = namespaced(dataclasses.replace(panda, joints=tuple(j)), "calibrated", joint_map={"shoulder_roll": "panda_joint3"})
    with emulated(cfg) as emu:
        d = Ros2BridgeDriver(emu.config)
        d.connect()
        try:
            ros = ["panda_joint1", "panda_joint2", "panda_joint3", "panda_joint4", "panda_joint5",
                   "panda_joint6", "panda_joint7"]
            assert emu.snapshot()["joints"] == ros
            raw = raw_position(emu, ros)
            st = d.read()
            assert st.q[1] == pytest.approx(-(raw[1] - 0.3), abs=1e-6)
            assert st.q[2] == pytest.approx(raw[2] + 0.2, abs=1e-6)
            target = st.q + 0.05
            d.write(Command.position(target))
            assert wait_until(lambda: np.allclose(emu.snapshot()["target"][1], -target[1] + 0.3))
            assert emu.snapshot()["target"][2] == pytest.approx(target[2] - 0.2)
        finally:
            d.disconnect()


def test_trajectory_interface(panda):
    cfg = dataclasses.replace(panda, modes=frozenset(m for m in panda.modes if m.value != "effort"))
    cfg = namespaced(cfg, "traj", command_interface="trajectory")
    with emulated(cfg) as emu:
        d = Ros2BridgeDriver(emu.config)
        d.connect()
        try:
            q0 = d.read().q
            target = q0 + 0.05
            sent = d.stats["commands"]
            for _ in range(30):
                d.write(Command.position(target))
                time.sleep(0.01)
            assert d.stats["commands"] - sent == 30                          # one trajectory per write
            # the emulated controller's subscription keeps the last 10 (KEEP_LAST): a stalled
            # controller process drops older ones, so not all 30 need to arrive, and none is refused
            assert wait_until(lambda: emu.snapshot()["trajectories"] >= 10)
            assert emu.snapshot()["rejected_commands"] == 0
            assert wait_until(lambda: np.abs(d.read().q - target).max() < 2e-3)
            for _ in range(20):
                d.write(Command.velocity(np.full(7, 0.1)))
                time.sleep(0.01)
            assert np.all(d.read().q > target)
        finally:
            d.disconnect()


# ------------------------------------------------------------------------------ faults
def test_stale_state_latches_a_fault_and_refuses_commands(bridge, fake, caplog):
    bridge.read()
    fake.inject("stop_publishing")
    with pytest.raises(DriverFault, match=r"state stale: no /joint_states .* for 0\.\d+ s \(limit 0.1 s\)"):
        for _ in range(100):
            bridge.read()
            time.sleep(0.01)
    with pytest.raises(DriverFault):
        bridge.write(Command.position(np.zeros(7)))
    with pytest.raises(DriverFault):
        bridge.hold()
    bridge.params = dataclasses.replace(bridge.params, connect_timeout_s=0.5)
    with pytest.raises(DriverFault, match="reset failed, still no fresh /joint_states"):
        bridge.reset_fault()
    fake.clear()
    bridge.reset_fault()
    assert bridge.read().sensors["age_s"] < 0.1


def test_unplug_mid_motion_through_the_safety_layer(bridge, fake, panda, caplog):
    caplog.set_level(logging.CRITICAL)
    robot = SafetyLayer(bridge, panda.safety)
    robot.connect()
    q0 = robot.read().q
    results, read_faults = [], 0
    for k in range(80):
        if k == 20:
            fake.inject("unplug")
        try:
            robot.read()
        except DriverFault:
            read_faults += 1
        results.append(robot.write(Command.position(q0 + 0.1 * np.sin(0.1 * k))))   # never raises
        time.sleep(0.01)
    assert robot.status["state"] == "fault" and "state stale" in robot.status["fault"]
    assert read_faults > 0 and all(r.startswith("rejected") for r in results[-20:])
    fake.clear()
    ok, msg = robot.reset()
    assert ok, msg
    q_reset = robot.read().q
    # recovery holds the measured position: the fake robot's target is where it is
    assert wait_until(lambda: np.abs(np.array(fake.snapshot()["target"]) - q_reset).max() < 1e-3)
    assert robot.write(Command.position(q_reset + 1.0)) == "clamped"    # step-limited, no jump
    assert wait_until(lambda: np.abs(np.array(fake.snapshot()["target"]) - q_reset).max() > 1e-4)
    assert np.abs(np.array(fake.snapshot()["target"]) - q_reset).max() <= panda.safety.max_position_step + 1e-6


def test_implausible_readings_are_flagged_then_fault(bridge, fake):
    q0 = bridge.read().q
    fake.inject("position_offset", joints=["panda_joint2"], radians=3.0)      # far past its limit
    seen = []
    with pytest.raises(DriverFault, match="panda_joint2 readings not trusted for 3 cycles"):
        for _ in range(100):
            st = bridge.read()
            seen.append(st.sensors["untrusted"])
            if st.sensors["untrusted"]:
                assert st.q[1] == pytest.approx(q0[1], abs=1e-3)   # the last trusted value stands in
                assert st.sensors["q_raw"][1] > 2.5
    assert seen[-1] == ("panda_joint2",)
    fake.clear()
    bridge.reset_fault()
    assert bridge.read().sensors["untrusted"] == ()


def test_the_fake_robot_is_steerable_over_ros(bridge, fake):
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from std_srvs.srv import SetBool
    ctx = Context()
    rclpy.init(context=ctx, args=[])
    node = rclpy.create_node("test_steering", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    try:
        client = node.create_client(SetBool, "/fake_robot/set_publishing")
        assert client.wait_for_service(timeout_sec=10.0)

        def call(on):
            fut = client.call_async(SetBool.Request(data=on))
            executor.spin_until_future_complete(fut, timeout_sec=10.0)
            assert fut.result().success
        call(False)
        with pytest.raises(DriverFault, match="state stale"):
            for _ in range(100):
                bridge.read()
                time.sleep(0.01)
        call(True)
        bridge.reset_fault()
        bridge.read()
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_connect_without_a_robot_fails_with_a_clear_error(panda):
    cfg = with_driver(panda, joint_states_topic="/nobody/joint_states", connect_timeout_s=1.0)
    t = time.monotonic()
    with pytest.raises(DriverError, match=r"no /nobody/joint_states with joints .* within 1 s on ROS_DOMAIN_ID=\d+"):
        Ros2BridgeDriver(cfg).connect()
    assert time.monotonic() - t < 10
