"""The foundation demo end to end (short moves): goals reached, plot and CSV written."""
import csv

from s2r.demo_joint import PANDA_GOALS, run


def test_demo_reaches_goals_and_writes_results(tmp_path):
    # the demo's 2 s moves: within the velocity limit and panda_sim's planned acceleration
    # (2.175 rad/s^2 on joint 1; 1.5 s min-jerk moves ask 3.3: the layer ramps, the goals are late)
    s = run("panda_sim", move_s=2.0, settle_s=0.5, out_root=tmp_path, quiet=True)
    assert s["goals_reached"] == s["goals"] == len(PANDA_GOALS)
    assert s["safety"]["rejected_shape"] == 0 and s["safety"]["watchdog_trips"] == 0
    png = tmp_path.glob("*-demo/tracking.png").__next__()
    assert png.stat().st_size > 10_000
    rows = list(csv.reader(open(png.parent / "tracking.csv")))
    assert rows[0][0] == "t" and len(rows) == 1 + 4 * 250


def test_demo_help_names_the_joint_space_demo(capsys):
    """`s2r demo --help` says how to reach the ROS-free demo (it parses its own options)."""
    import pytest

    from s2r.demo_ros import main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--joint-space" in capsys.readouterr().out
