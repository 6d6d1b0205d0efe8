"""`s2r tune`: gains proposed from the URDF pass the simulator's check through the safety layer;
bad gains are reported in one line naming the joint's key; and the HIL suite's failure messages
name the joint, the value, the tolerance and what to change. Lockstep sim, two wrist joints of
the iiwa (the smallest inertias, where bad gains show first), so each run takes about a second."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from s2r.cli import main as s2r_main
from s2r.core.config import load_config
from s2r.hil.test_hil import gains_hint, over_tolerance
from s2r.sim import gain_tuning as gt

REPO = Path(__file__).resolve().parents[2]
WRIST = ["lbr_iiwa_joint_6", "lbr_iiwa_joint_7"]


def config_with_gains(tmp_path, joint, kp, kd) -> Path:
    """iiwa_sim.yaml with one joint's gains set in the config (over the description's), as a new file."""
    text = (REPO / "hardware_configs" / "iiwa_sim.yaml").read_text()
    line = re.compile(rf"(  - \{{name: {joint}, limits: \{{[^}}]*\}})\}}")
    assert line.search(text), f"{joint} has no line in iiwa_sim.yaml"
    out = tmp_path / "iiwa_bad.yaml"
    out.write_text(line.sub(rf"\g<1>, gains: {{kp: {kp}, kd: {kd}}}}}", text)
                   .replace("robot: iiwa", f"robot: {REPO}/robots/iiwa.yaml"))
    return out


def test_proposed_gains_are_bounded_and_pass_verification(capsys):
    cfg = load_config("iiwa_sim")
    gains = gt.propose_gains(cfg, joints=WRIST)
    dt = 1.0 / cfg.sim.physics_hz
    lead = gt.setpoint_lead(cfg)
    for g in gains:
        assert g.kp > 0 and g.kd >= 0 and g.inertia > 0 and g.passive_damping > 0
        assert g.damping_step(dt) < gt.UNSTABLE_DAMPING_STEP
        assert g.kp * lead[g.index] <= cfg.joints[g.index].limits.effort * 1.001
        # the joint's damping lags a joint at its velocity limit by at most half the tolerance
        v = cfg.joints[g.index].limits.velocity * cfg.safety.velocity_scale     # the fastest commands go
        assert g.passive_damping * v / g.kp <= cfg.hil.tracking_tolerance / 2 * 1.01

    rc = s2r_main(["tune", "iiwa_sim", "--joints", *WRIST])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "FAIL" not in out and err == ""
    # the YAML to paste: one config line per joint, parsed back to the proposed gains, and a gains: block
    lines = [ln for ln in out.splitlines() if ln.startswith("  - {name: ")]
    assert len(lines) == 2
    for ln, g in zip(lines, gains):
        joint = yaml.safe_load(ln.strip()[2:])
        assert joint["name"] == g.name and joint["gains"] == {"kp": g.kp, "kd": g.kd}
        assert joint["limits"]["effort"] == cfg.joints[g.index].limits.effort
    block = yaml.safe_load(out[out.index("\ngains:\n") + 1:])
    assert block["gains"] == {g.name: {"kp": g.kp, "kd": g.kd} for g in gains}


def test_tiny_kp_is_reported_as_a_sweep_error_in_one_line(tmp_path, capsys):
    path = config_with_gains(tmp_path, "lbr_iiwa_joint_6", 0.5, 0.05)
    rc = s2r_main(["tune", str(path), "--check", "--joints", *WRIST])
    out, err = capsys.readouterr()
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"{path}: joints[5].gains: lbr_iiwa_joint_6 max sweep tracking error "), err
    measured = float(re.search(r"error ([0-9.]+) rad", err).group(1))
    assert measured > 0.05 and "hil.tracking_tolerance 0.05 rad" in err and "raise its kp/kd" in err
    assert re.search(r"lbr_iiwa_joint_6 .* FAIL", out) and re.search(r"lbr_iiwa_joint_7 .* pass", out)


@pytest.mark.parametrize("joint, index, fix", [
    ("lbr_iiwa_joint_6", 5, r"lower kd to <= ([0-9.]+) "),
    # the joint's own damping (the URDF's 0.5) already takes half of joint 7's speed per physics step
    ("lbr_iiwa_joint_7", 6, r"lower kd to (0) \(the joint's damping alone"),
])
def test_huge_kd_is_unstable_at_the_physics_step(tmp_path, capsys, joint, index, fix):
    path = config_with_gains(tmp_path, joint, 105, 50)
    rc = s2r_main(["tune", str(path), "--check", "--joints", joint])
    out, err = capsys.readouterr()
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"{path}: joints[{index}].gains: {joint} unstable at the physics step: "), err
    assert re.search(rf"{joint} .* FAIL: unstable", out)
    kd_max = float(re.search(fix, err).group(1))
    cfg = load_config(path)
    g = gt.current_gains(cfg, [joint])[0]
    assert 0 <= kd_max < 50
    assert (kd_max + g.passive_damping) / cfg.sim.physics_hz / g.inertia_free < gt.UNSTABLE_DAMPING_STEP


def test_the_simulator_confirms_the_instability(tmp_path):
    """The analytic bound is not the only witness: after a step, held still, the joint chatters
    (its velocity flips sign every physics step, so its sampled position can look still)."""
    from s2r.drivers import open_driver

    cfg = load_config(config_with_gains(tmp_path, "lbr_iiwa_joint_7", 105, 50))
    robot = open_driver(cfg, "sim", realtime=False)
    try:
        check = gt.verify_gains(robot, cfg, gt.current_gains(cfg, ["lbr_iiwa_joint_7"]))[0]
    finally:
        robot.disconnect()
    assert check.rest_speed > cfg.joints[6].limits.velocity
    assert check.kind == "unstable"


def test_a_joint_lagging_into_its_limit_trips_the_speed_stop(tmp_path, capsys):
    """xarm6_sim without its velocity_scale: commands plan with the deceleration the speed stop judges
    with, and joint3 (nearest its limit), lagging its braking set-point, trips it as in the HIL limit test."""
    text = (REPO / "hardware_configs" / "xarm6_sim.yaml").read_text()
    assert "  velocity_scale: 0.8" in text
    path = tmp_path / "xarm_full_speed.yaml"
    path.write_text(text.replace("  velocity_scale: 0.8", "  velocity_scale: 1.0")
                    .replace("robot: xarm6", f"robot: {REPO}/robots/xarm6.yaml"))
    assert s2r_main(["tune", str(path), "--check", "--joints", "joint3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: joints[2].gains: joint3 trips the safety layer's speed stop "), err
    assert "driving into its limit" in err and "raise kd or the bandwidth" in err


def test_current_gains_of_the_shipped_arms_pass_check(capsys):
    for name, joints in (("iiwa_sim", WRIST), ("xarm6_sim", ["joint5", "joint6"])):
        assert s2r_main(["tune", name, "--check", "--joints", *joints]) == 0, capsys.readouterr().err
        assert "OK  the gains of 2 joint(s)" in capsys.readouterr().out


def test_bad_arguments_are_one_line(capsys):
    assert s2r_main(["tune", "iiwa_sim", "--joints", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("error: --joints: nope not in iiwa_sim's joints (lbr_iiwa_joint_1, lbr_iiwa_joint_2, "
                           "lbr_iiwa_joint_3, lbr_iiwa_joint_4, lbr_iiwa_joint_5, lbr_iiwa_joint_6, lbr_iiwa_joint_7)")
    assert s2r_main(["tune", "iiwa_sim", "--bandwidth", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --bandwidth: must be a positive number of Hz, got -1.0"
    assert s2r_main(["tune", "leap_hand"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: ") and ": driver.type: `s2r tune` tunes the simulator's" in err


def test_pd_rule_puts_the_slow_pole_at_the_bandwidth():
    w, I = 2 * np.pi * 5, 0.01
    kp, kd = gt._pd(I, 0.0, w, 1.0)                 # no URDF damping: critically damped at w
    assert kp == pytest.approx(I * w * w) and kd == pytest.approx(2 * I * w)
    kp, kd = gt._pd(I, 2.0, w, 1.0)                 # URDF damping beyond critical: kd 0, slow pole at w
    assert kd == 0.0
    slow = min(abs(np.roots([I, 2.0, kp])))
    assert slow == pytest.approx(w)


def test_hil_message_names_joint_value_tolerance_and_hint():
    cfg = load_config("iiwa_sim")
    msg = over_tolerance(cfg.joint_names, [0.01, 0.134, 0.02, 0, 0, 0, 0.05], 0.03, "max tracking error",
                         "hil.tracking_tolerance", gains_hint(cfg))
    assert msg == ("joint lbr_iiwa_joint_2: max tracking error 0.134 rad > hil.tracking_tolerance 0.03 rad: "
                   "raise its kp/kd (`s2r tune iiwa_sim`) or hil.tracking_tolerance")
    # per-joint allowances: the joint furthest over its own allowance is named
    msg = over_tolerance(["a", "b"], [0.5, 0.2], [0.6, 0.1], "moved", "its braking distance", "hint")
    assert msg.startswith("joint b: moved 0.2 rad > its braking distance 0.1 rad: hint")
