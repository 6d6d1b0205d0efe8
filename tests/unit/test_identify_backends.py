"""Identification on the other backends: a recording says which robot backend made it, and
`s2r identify` fits only what that robot lets one identify as simulator parameters (the
emulators' joints are first-order position loops, not the simulator's rigid bodies under a joint
PD: encoder offsets only); asking for more is one line, not a wrong number."""
from __future__ import annotations

import numpy as np
import pytest

from s2r.core.bag import BagWriter

from s2r.core.bag_reader import read_bag
from s2r.core.config import load_config
from s2r.identify import fit_recording, identifiable
from s2r.identify import main as identify_main
from s2r.sim.identification import FIT_PARAMETERS, IdentificationError


def _rest_bag(path, names, n=200, period=0.01, **custom):
    """n periods of a robot at rest, recorded with `custom` as the recorder's custom_data."""
    bag = BagWriter(path, custom_data=custom)
    bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    bag.add_topic("/driver/commands", "std_msgs/msg/Float64MultiArray")
    T = bag.msg_types
    for k in range(n):
        now = 1_000_000_000 + int(k * period * 1e9)
        bag.write_message("/joint_states", now, T["sensor_msgs/msg/JointState"](
            header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=now // 10**9,
                                                                                    nanosec=now % 10**9), frame_id=""),
            name=list(names), position=np.zeros(len(names)), velocity=np.zeros(len(names)),
            effort=np.zeros(len(names))))
        bag.write_message("/driver/commands", now + 1000, T["std_msgs/msg/Float64MultiArray"](
            layout=T["std_msgs/msg/MultiArrayLayout"](dim=[T["std_msgs/msg/MultiArrayDimension"](
                label="position", size=len(names), stride=len(names))], data_offset=0), data=np.zeros(len(names))))
    bag.close()
    return path


@pytest.mark.parametrize("backend, emulated, allowed", [
    ("sim", False, FIT_PARAMETERS),
    ("ros2", False, FIT_PARAMETERS),                 # a real arm under ros2_control: the simulator's model of it
    ("ros2", True, ("encoder_offset",)),
    ("dynamixel", True, ("encoder_offset",)),
    ("dynamixel", False, ("encoder_offset",)),
])
def test_what_each_backend_lets_one_identify(backend, emulated, allowed, tmp_path):
    names = load_config("panda_sim").joint_names
    rec = read_bag(_rest_bag(tmp_path / "b", names, 20, backend=backend, emulated=emulated))
    assert rec.custom["backend"] == backend
    got, why = identifiable(rec)
    assert tuple(got) == tuple(allowed) and (why is None) == (tuple(allowed) == FIT_PARAMETERS)


def test_a_parameter_the_backend_cannot_tell_is_one_line(tmp_path, capsys):
    cfg = load_config("leap_hand")
    path = _rest_bag(tmp_path / "b", cfg.joint_names, backend="dynamixel", emulated=True)
    with pytest.raises(IdentificationError, match="gain_scale cannot be identified from a dynamixel recording"):
        fit_recording(read_bag(path), cfg, fit=("gain_scale", "encoder_offset"))
    rc = identify_main([str(path), "--config", "leap_hand", "--out", str(tmp_path / "out"), "--fit", "link_mass_scale"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "link_mass_scale cannot be identified" in err
    assert "first-order" in err and "identifiable: encoder_offset" in err
    assert not (tmp_path / "out").exists()


def test_emulated_ros2_arm_excite_record_identify_offsets(tmp_path):
    """The ros2_control bridge against its emulator, with encoder offsets injected on two joints:
    `s2r excite`'s loop records the run, identification recovers the offsets (and reports nothing
    it cannot tell)."""
    from s2r.drivers import open_driver
    from s2r.drivers.emulators import emulated
    from s2r.drivers.ros2_bridge import parse_params
    from s2r.excite import run_excitation
    from s2r.sim.excitation import ExcitationLimits, fourier_excitation

    cfg = load_config("panda_ros2_control")
    names = cfg.joint_names
    injected = {1: 0.004, 3: -0.003}                  # config joint index -> rad on the robot's encoder
    ros_names = [parse_params(cfg).joint_map.get(n, n) for n in names]
    path = tmp_path / "rec"
    with emulated(cfg) as emu:
        for j, rad in injected.items():
            emu.inject("position_offset", joints=[ros_names[j]], radians=rad)
        robot = open_driver(emu.config, "real")
        try:
            start = np.asarray(robot.read().q, float)
            lim = ExcitationLimits.of_robot(robot.spec, cfg.safety, None)
            plan = fourier_excitation(lim, start, 1.6, seed=1)
            bag = BagWriter(path, custom_data={"backend": robot.backend, "emulated": True})
            bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
            bag.add_topic("/driver/commands", "std_msgs/msg/Float64MultiArray")
            try:
                counts = run_excitation(robot, plan, bag=bag)
            finally:
                bag.close()
        finally:
            robot.disconnect()
    assert counts["periods"] >= 160
    fit, data, _ = fit_recording(read_bag(path), cfg, max_latency=0)
    assert set(fit.values) == {"encoder_offset"} and "gain_scale" in fit.nuisance
    expected = np.zeros(len(names))
    for j, rad in injected.items():
        expected[j] = cfg.joints[j].sign * rad
    err = np.abs(fit.values["encoder_offset"] - expected)
    assert err.max() < 1e-3, err                     # 1 mrad
    assert fit.rms < 0.6 * fit.rms_nominal


def test_emulated_dynamixel_hand_excite_record_identify_offsets(tmp_path, capsys):
    """`s2r excite --emulate` runs the Dynamixel driver against the emulated servo bus and records
    which backend it was; identification then reports encoder offsets only, each within a tick of
    the one injected into a servo's encoder."""
    from s2r.drivers import dynamixel_protocol as P
    from s2r.drivers.emulators import emulated
    from s2r.drivers import open_driver
    from s2r.excite import main as excite_main
    from s2r.excite import run_excitation
    from s2r.sim.excitation import ExcitationLimits, fourier_excitation

    # the CLI: refuses what is the simulator's, records the backend
    assert excite_main(["leap_hand", "--emulate", "--lockstep", "--out", str(tmp_path / "x")]) == 2
    assert "--emulate runs the real driver" in capsys.readouterr().err
    cfg = load_config("leap_hand")
    joints = cfg.joint_names[:4]
    ticks = 3                                         # on the second servo's encoder
    path = tmp_path / "rec"
    with emulated(cfg) as emu:
        emu.inject("position_offset", ids=[cfg.joints[1].id], ticks=ticks)
        robot = open_driver(emu.config, "real")
        try:
            names = list(robot.spec.joint_names)
            start = np.asarray(robot.read().q, float)
            lim = ExcitationLimits.of_robot(robot.spec, cfg.safety, joints)
            idx = [names.index(j) for j in lim.names]
            plan = fourier_excitation(lim, start[idx], 1.8, seed=2)
            bag = BagWriter(path, custom_data={"backend": robot.backend, "emulated": True})
            bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
            bag.add_topic("/driver/commands", "std_msgs/msg/Float64MultiArray")
            try:
                run_excitation(robot, plan, bag=bag)
            finally:
                bag.close()
        finally:
            robot.disconnect()
    rec = read_bag(path)
    assert rec.custom["backend"] == "dynamixel"
    fit, _, _ = fit_recording(rec, cfg, max_latency=0)
    assert set(fit.values) == {"encoder_offset"}
    expected = np.zeros(len(cfg.joint_names))
    expected[1] = cfg.joints[1].sign * ticks * P.RAD_PER_TICK
    err = np.abs(fit.values["encoder_offset"][:4] - expected[:4])
    assert err.max() < P.RAD_PER_TICK, err
