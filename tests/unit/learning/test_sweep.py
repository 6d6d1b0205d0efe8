"""`s2r eval --sweep PARAM=LOW:HIGH[:N]`: robustness curves over one randomization parameter, on the
same held-out episodes at every value (learning/sweep.py)."""
import csv

import numpy as np
import pytest

from s2r.learning.cli import eval_main
from s2r.learning.sweep import SweepError, parse_sweep, with_constant

STEPS = 15           # short episodes: the sweep's machinery, not the policy, is under test


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def arm_policy(tmp_path_factory):
    """An untrained ArmReach MLP exported as `s2r train` does (as in test_cli.py), with short episodes."""
    import torch

    from s2r.learning.agents import ArmReachAgent
    from s2r.learning.export import export_policy
    from s2r.learning.policies import MLPPolicy
    torch.manual_seed(0)
    agent = ArmReachAgent()
    path = tmp_path_factory.mktemp("pol") / "policy.pt2"
    export_policy(MLPPolicy(agent.obs_dim, agent.dU), path, agent.metadata() | {"episode_steps": STEPS},
                       agent.action_scale)
    agent.close()
    return path


def test_sweep_writes_its_csv_and_plot_and_evaluates_the_held_out_episodes(arm_policy, tmp_path, capsys):
    import cv2
    out = tmp_path / "curves" / "backlash.png"
    argv = [str(arm_policy), "--task", "ArmReach", "--episodes", "3", "--success-distance", "0.3"]
    assert eval_main([*argv, "--sweep", "backlash=0:0.1:3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    csv_path = out.with_suffix(".csv")
    assert f"wrote {csv_path} and {out}" in printed and printed.count("backlash = ") == 3
    rows = _rows(csv_path)
    assert list(rows[0]) == ["backlash", "success", "ci_low", "ci_high", "mean_final_distance", "std_final_distance",
                             "successes", "episodes"]
    assert [float(r["backlash"]) for r in rows] == [0.0, 0.05, 0.1]
    for r in rows:
        assert int(r["episodes"]) == 3 and float(r["success"]) == pytest.approx(int(r["successes"]) / 3, abs=1e-5)
        assert float(r["ci_low"]) <= float(r["success"]) <= float(r["ci_high"])
    dist = [float(r["mean_final_distance"]) for r in rows]
    assert all(0 < d < 2 for d in dist) and len(set(dist)) == 3        # the play changes where the arm ends
    img = cv2.imread(str(out))
    assert out.stat().st_size > 20_000 and img is not None and img.shape == (500, 1100, 3) and img.std() > 10
    # backlash 0 is the nominal simulator: that point is the plain evaluation of the same seeds
    assert eval_main(argv) == 0
    assert f"mean final distance {dist[0]:.3f} m" in capsys.readouterr().out


def test_sweep_points_are_paired_and_integer_parameters_sweep_whole_numbers(arm_policy, capsys):
    """A visuals parameter does not touch a state policy's episodes: with the same seeds at every value,
    every point is the same evaluation, episode for episode. Files go next to the policy by default."""
    argv = [str(arm_policy), "--task", "ArmReach", "--episodes", "3", "--success-distance", "0.3"]
    assert eval_main([*argv, "--sweep", "brightness=log:0.5:2:3", "--randomize", "default"]) == 0
    rows = _rows(arm_policy.parent / "sweep-brightness.csv")
    assert [float(r["brightness"]) for r in rows] == pytest.approx([0.5, 1.0, 2.0])
    assert len({(r["successes"], r["mean_final_distance"], r["std_final_distance"]) for r in rows}) == 1
    assert (arm_policy.parent / "sweep-brightness.png").stat().st_size > 20_000
    assert eval_main([*argv, "--sweep", "action_latency=0:2:5"]) == 0
    assert "whole numbers: 5 asked, 3 distinct" in capsys.readouterr().out
    rows = _rows(arm_policy.parent / "sweep-action_latency.csv")
    assert [r["action_latency"] for r in rows] == ["0", "1", "2"]
    assert len({r["mean_final_distance"] for r in rows}) == 3


def test_parse_sweep_spacing_and_the_constant_override():
    assert parse_sweep("gain_scale=log:0.25:4").values == pytest.approx([0.25, 0.5, 1, 2, 4])
    assert parse_sweep("gravity_offset = -1 : 1 : 3").values == (-1.0, 0.0, 1.0)
    assert parse_sweep("sensor_delay=0:10:4").values == (0.0, 3.0, 7.0, 10.0)      # rounded half up
    base = with_constant("default", "gain_scale", 1.0)
    moved = with_constant("default", "gain_scale", 2.0)
    assert list(moved.params) == list(base.params)         # same place, so the same draw order
    dims = {"joints": 7, "links": 12, "objects": 0, "action": 7, "surfaces": 3}
    a = base.sample_episode(np.random.default_rng(3), dims)
    b = moved.sample_episode(np.random.default_rng(3), dims)
    assert np.array_equal(b["gain_scale"], np.full(7, 2.0))     # every joint takes the swept scalar
    for k in a:
        if k != "gain_scale":
            assert np.array_equal(a[k], b[k]), k               # the preset's other parameters: the same draws
    assert list(with_constant(None, "backlash", 0.01).params) == ["backlash"]


@pytest.mark.parametrize("sweep, match", [
    ("link_mas_scale=0.5:2", "unknown parameter 'link_mas_scale' (did you mean link_mass_scale?"),
    ("backlash", "expected PARAM=LOW:HIGH[:N]"),
    ("backlash=0.1", "expected PARAM=LOW:HIGH[:N]"),
    ("backlash=0.1:0.05", "empty or reversed range: LOW 0.1 must be below HIGH 0.05"),
    ("backlash=0.1:0.1", "empty or reversed range"),
    ("backlash=0:0.1:1", "N must be 2..1000, got 1"),
    ("backlash=0:0.1:2.5", "N '2.5' is not a whole number"),
    ("backlash=0:abc", "HIGH 'abc' is not a number"),
    ("backlash=nan:1", "LOW must be finite"),
    ("link_mass_scale=0:2", "link_mass_scale must stay positive"),
    ("stiction=-1:1", "stiction must not be negative"),
    ("backlash=0:5", "HIGH 5 is beyond backlash's bound +-0.5"),
    ("sensor_delay=0.5:3", "sensor_delay takes whole numbers"),
    ("gain_scale=log:0:2", "log spacing needs LOW > 0"),
])
def test_sweep_bad_input_is_one_line_and_exit_2(sweep, match, arm_policy, capsys):
    assert eval_main([str(arm_policy), "--task", "ArmReach", "--sweep", sweep]) == 2
    line = _one_line(capsys)
    assert line.startswith("s2r eval: error: --sweep") and match in line
    with pytest.raises(SweepError):
        parse_sweep(sweep)


def test_sweep_refusals_that_need_the_task_or_other_options(arm_policy, tmp_path, capsys):
    argv = [str(arm_policy), "--task", "ArmReach"]
    assert eval_main([*argv, "--sweep", "object_mass_scale=0.5:2"]) == 2
    assert "s2r/ArmReach-v0 has no objects, so object_mass_scale would change nothing" in _one_line(capsys)
    assert eval_main([*argv, "--sweep", "backlash=0:0.1", "--video", str(tmp_path / "v.mp4")]) == 2
    assert "does not combine with --sweep" in _one_line(capsys)
    assert eval_main([*argv, "--out", str(tmp_path / "x")]) == 2
    assert "give --sweep too" in _one_line(capsys)
    assert not list(tmp_path.iterdir())
