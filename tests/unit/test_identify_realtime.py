"""Identification from a real-time recording: the simulated "robot" steps physics in its own
thread, so each command lands part-way through a control period and the periods between reads
vary. The recording carries the physics time of every state and command (and where position
streams restarted), and the replay puts each command at the physics step it took over at, so
the hidden latency and gain come out as they do from a lockstep recording."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from s2r.core.bag_reader import read_bag
from s2r.core.config import load_config
from s2r.excite import main as excite_main
from s2r.identify import fit_recording
from s2r.sim.identification import ReplayData

ARM = [f"panda_joint{i}" for i in range(1, 8)]
MASS, GAIN, LATENCY = 1.2, 0.9, 1
REALITY = {"groups": {
    "dynamics": {"link_mass_scale": {"dist": "constant", "value": MASS},
                 "gain_scale": {"dist": "constant", "value": GAIN}},
    "timing": {"action_latency": {"dist": "constant", "value": LATENCY}},
    "unmodeled": {"encoder_offset": {"dist": "uniform", "low": -0.005, "high": 0.005}}}}


@pytest.fixture(scope="module")
def realtime_recording(tmp_path_factory):
    d = tmp_path_factory.mktemp("identify_rt")
    (d / "reality.yaml").write_text(yaml.safe_dump(REALITY))
    rc = excite_main(["panda_sim", "--out", str(d / "run"), "--duration", "5", "--record",
                      "--joints", *ARM, "--reality", str(d / "reality.yaml"), "--reality-seed", "4"])
    assert rc == 0
    return d / "run" / "recording"


def test_recording_is_stamped_on_the_physics_clock(realtime_recording):
    cfg = load_config("panda_sim")
    rec = read_bag(realtime_recording)
    data = ReplayData.from_recording(rec, cfg.joint_names, 1.0 / cfg.control_rate_hz)
    dt = 1.0 / cfg.sim.physics_hz
    # every state and command on a physics step (not wall-clock arrival times)
    for a in (data.elapsed, data.lead):
        np.testing.assert_allclose(a / dt, np.round(a / dt), atol=1e-3)
    assert (data.lead >= 0).all() and (data.lead <= data.elapsed).all()
    # the first set-point started the position stream, at the physics time of its write
    assert data.starts is not None and len(data.starts) >= 1
    assert 0 <= data.starts[0] <= data.elapsed[:3].sum() + LATENCY * data.period + dt


def test_realtime_recording_identifies_latency_exactly_and_gain_within_5_percent(realtime_recording):
    cfg = load_config("panda_sim")
    fit, data, _ = fit_recording(read_bag(realtime_recording), cfg,
                                 fit=("link_mass_scale", "gain_scale", "encoder_offset", "action_latency"),
                                 max_latency=2)
    assert fit.latency == LATENCY, fit.latency_rms
    assert abs(fit.values["gain_scale"] / GAIN - 1) < 0.05
    assert abs(fit.values["link_mass_scale"] / MASS - 1) < 0.10
    assert fit.rms < 0.2 * fit.rms_nominal
