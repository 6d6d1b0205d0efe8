"""The ROS demo (`make demo`, s2r/demo_ros.py) end to end, with two goals and short dwells."""
import csv
import json

import cv2
import pytest

from s2r.demo_ros import DEMO_GOALS, run

pytestmark = pytest.mark.slow


def test_demo_reaches_its_goals_and_writes_report_tracking_and_video(tmp_path):
    s = run(goals=DEMO_GOALS[:2], dwell_s=0.5, out_root=tmp_path, quiet=True)
    assert s["launcher_exit"] == 0 and s["goals_reached"] == s["goals"] == 2, s
    assert all(r["final_error_mm"] < s["tolerance_mm"] for r in s["per_goal"])
    d = s["driver"]
    assert d["target_rate_hz"] == 100.0 and d["rate_hz"] > 30 and d["latency_samples"] > 50
    assert d["latency_p50_ms"] > 0 and d["latency_p99_ms"] >= d["latency_p50_ms"]
    out = tmp_path.glob("*-ros-demo").__next__()
    png = out / "report.png"
    assert png.stat().st_size > 20_000 and cv2.imread(str(png)).shape[0] > 500
    rows = list(csv.DictReader(open(out / "tracking.csv")))
    assert len(rows) > 100 and {"t", "goal", "ee_x", "error_m", "panda_joint1"} <= set(rows[0])
    cap = cv2.VideoCapture(str(out / "camera.mp4"))
    ok, frame = cap.read()
    assert ok and frame.shape[:2] == (192, 192) and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == s["video"]["frames"] > 10
    assert json.loads((out / "summary.json").read_text())["report"] == str(png)
