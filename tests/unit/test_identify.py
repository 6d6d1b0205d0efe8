"""`s2r identify`: identification recovers the hidden parameters of a simulated "robot" (the sim
driver under a fixed randomization draw) from a short excitation recorded by `s2r excite`, writes
a config overlay and a preset that load, and refuses recordings it cannot use in one line."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from s2r.core.bag import BagWriter, RecordingError

from s2r.core.bag_reader import read_bag
from s2r.core.config import load_config
from s2r.excite import main as excite_main
from s2r.identify import fit_recording
from s2r.identify import main as identify_main
from s2r.sim.identification import IdentificationError, ReplayData, segments_of
from s2r.sim.randomization import Randomizer

ARM = [f"panda_joint{i}" for i in range(1, 8)]
MASS, GAIN, LATENCY = 1.2, 0.9, 1
REALITY = {"groups": {
    "dynamics": {"link_mass_scale": {"dist": "constant", "value": MASS},
                 "gain_scale": {"dist": "constant", "value": GAIN}},
    "timing": {"action_latency": {"dist": "constant", "value": LATENCY}},
    "unmodeled": {"encoder_offset": {"dist": "uniform", "low": -0.005, "high": 0.005}}}}
SEED = 4


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """3 s of excitation of the Panda's arm joints on a "robot" with hidden mass, gains, latency
    and encoder offsets, recorded by `s2r excite`; and the hidden encoder offsets."""
    d = tmp_path_factory.mktemp("identify")
    (d / "reality.yaml").write_text(yaml.safe_dump(REALITY))
    rc = excite_main(["panda_sim", "--out", str(d / "run"), "--duration", "3", "--record", "--lockstep",
                      "--joints", *ARM, "--reality", str(d / "reality.yaml"), "--reality-seed", str(SEED)])
    assert rc == 0
    offsets = Randomizer.load(REALITY).sample_episode(np.random.default_rng(SEED), {"joints": 7, "links": 1})
    return d / "run" / "recording", np.asarray(offsets["encoder_offset"])


def test_identification_recovers_hidden_parameters(recording):
    path, true_offsets = recording
    cfg = load_config("panda_sim")
    fit, data, _ = fit_recording(read_bag(path), cfg, fit=("link_mass_scale", "gain_scale", "encoder_offset",
                                                             "action_latency"), max_latency=2)
    v, s = fit.values, fit.std
    assert fit.latency == v["action_latency"] == LATENCY
    assert abs(v["link_mass_scale"] / MASS - 1) < 0.02
    assert abs(v["gain_scale"] / GAIN - 1) < 0.01
    err = np.abs(v["encoder_offset"][:7] - true_offsets)
    assert err.max() < 1e-4, err                                 # 0.1 mrad
    np.testing.assert_allclose(v["encoder_offset"][7:], 0.0, atol=1e-4)   # the fingers: no offset
    # the calibrated replay explains the recording, the nominal one does not
    assert fit.rms < 0.05 * fit.rms_nominal and fit.rms_nominal > 1e-3
    assert all(np.all(np.isfinite(s[k])) and np.all(np.asarray(s[k]) >= 0) for k in s)
    assert fit.latency_rms[LATENCY] < min(r for L, r in fit.latency_rms.items() if L != LATENCY)


def test_identify_cli_writes_overlay_preset_and_plot(recording, tmp_path, capsys):
    path, true_offsets = recording
    out = tmp_path / "id"
    rc = identify_main([str(path), "--config", "panda_sim", "--out", str(out), "--fit", "gain_scale",
                        "encoder_offset", "action_latency", "--max-latency", "1"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "gain_scale:" in text and "±" in text and "action_latency:         1 control periods" in text
    ident = yaml.safe_load((out / "identified.yaml").read_text())
    g = ident["values"]["gain_scale"]
    # the preset: centred on the identified values, accepted by the randomizer `s2r train` uses
    rz = Randomizer.load(out / "preset.yaml")
    lo, hi = rz.params["gain_scale"].bounds()
    assert lo < g < hi and hi - lo < 0.2
    assert rz.params["action_latency"].value == 1
    # the overlay: the excited joints' gains scaled, the fingers' unchanged; offsets corrected
    cfg, cal = load_config("panda_sim"), load_config(out / "calibrated.yaml")
    for j in range(7):
        assert cal.joints[j].kp == pytest.approx(cfg.joints[j].kp * g, rel=1e-5)
        assert cal.joints[j].offset == pytest.approx(ident["values"]["encoder_offset"][j], abs=1e-8)
    assert [c.kp for c in cal.joints[7:]] == [c.kp for c in cfg.joints[7:]]
    assert (out / "replay.png").stat().st_size > 10_000


def _bag(path, names, n, period=0.01, commands=True, mode="position"):
    """A recording of n periods of a robot at rest: states, and (optionally) commands."""
    bag = BagWriter(path)
    bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    if commands:
        bag.add_topic("/driver/commands", "std_msgs/msg/Float64MultiArray")
    T = bag.msg_types
    for k in range(n):
        now = 1_000_000_000 + int(k * period * 1e9)
        bag.write_message("/joint_states", now, T["sensor_msgs/msg/JointState"](
            header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id=""),
            name=list(names), position=np.zeros(len(names)), velocity=np.zeros(len(names)),
            effort=np.zeros(len(names))))
        if commands:
            bag.write_message("/driver/commands", now + 1000, T["std_msgs/msg/Float64MultiArray"](
                layout=T["std_msgs/msg/MultiArrayLayout"](dim=[T["std_msgs/msg/MultiArrayDimension"](
                    label=mode, size=len(names), stride=len(names))], data_offset=0), data=np.zeros(len(names))))
    bag.close()
    return path


@pytest.mark.parametrize("case, expected", [
    ("no_commands", "no messages on /driver/commands"),
    ("too_short", "too short: needs at least"),
    ("other_robot", "recorded from another robot: joints missing"),
])
def test_unusable_recordings_are_refused_in_one_line(case, expected, tmp_path, capsys):
    names = load_config("panda_sim").joint_names
    if case == "no_commands":
        path = _bag(tmp_path / "b", names, 300, commands=False)
    elif case == "too_short":
        path = _bag(tmp_path / "b", names, 50)
    else:
        path = _bag(tmp_path / "b", load_config("xarm6_sim").joint_names, 300)
    rc = identify_main([str(path), "--config", "panda_sim", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("identification error: ") and expected in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_velocity_commands_and_gaps(tmp_path):
    cfg = load_config("panda_sim")
    rec = read_bag(_bag(tmp_path / "v", cfg.joint_names, 300, mode="velocity"))
    with pytest.raises(IdentificationError, match="carries velocity commands only"):
        fit_recording(rec, cfg)
    data = ReplayData.from_recording(read_bag(_bag(tmp_path / "p", cfg.joint_names, 300)), cfg.joint_names, 0.01)
    assert data.u.shape == (299, 9) and not np.isnan(data.u).any()
    data.u[120] = np.nan                        # a period without its command: no segment spans it
    segs = segments_of(data, 50, 2)
    assert segs[0] == (4, 50) and all(not (k0 - 4 <= 120 < k0 + n) for k0, n in segs)
    with pytest.raises(RecordingError, match="another robot"):
        fit_recording(read_bag(_bag(tmp_path / "x", ["a", "b"], 300)), cfg)
