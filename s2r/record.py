"""`s2r record`: record a robot run as a rosbag2 folder (MCAP storage), look into one, repair one.

    s2r record OUT [--topics PATTERN ...] [--duration S]   record until Ctrl-C (the recorder node)
    s2r record --info BAG [--config CONFIG]                 topics, counts, where reading stopped;
                                                            with --config: is it this robot's run?
    s2r record --repair BAG OUT                            rewrite a killed or damaged recording
                                                            as a finished one

Recording runs `s2r_ros.recorder_node` in this process, on the shell's ROS domain, like `ros2 bag
record` would; the result opens in `ros2 bag`, Foxglove and PlotJuggler (ros_ws/README.md).
"""
from __future__ import annotations

import argparse
import sys

from .core.bag import DEFAULT_TOPICS, RecordingError, bag_path

from .core.bag_reader import check_recording, read_bag, repair_bag


def recorder_args(out, topics=None, duration_s: float = 0.0, flush_period_s: float | None = None) -> list[str]:
    """ROS arguments of recorder_node for one recording."""
    args = ["--ros-args", "-r", "__node:=recorder", "-p", f"out:={out}"]
    if topics:
        args += ["-p", "topics:=[" + ",".join(f"'{t}'" for t in topics) + "]"]
    if duration_s:
        args += ["-p", f"duration_s:={float(duration_s)}"]
    if flush_period_s:
        args += ["-p", f"flush_period_s:={float(flush_period_s)}"]
    return args


def info(bag: str, config: str | None = None) -> int:
    rec = read_bag(bag)
    print(f"{rec.path}: {'complete' if rec.complete else 'INCOMPLETE'}, {rec.duration_s:.2f} s, "
          f"{sum(t.count for t in rec.topics.values())} messages")
    for topic, t in sorted(rec.topics.items()):
        print(f"  {topic:<40} {t.msgtype:<40} {t.count:>8}")
    if rec.stopped:
        print(f"reading stopped: {rec.stopped}")
    if config is not None:
        from .core.config import load_config
        cfg = load_config(config)
        check_recording(rec, ("/joint_states",), cfg.joint_names)
        print(f"OK  a run of {cfg.name}: /joint_states carries its {len(cfg.joint_names)} joints")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="s2r record", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="default topics: " + " ".join(DEFAULT_TOPICS))
    ap.add_argument("out", nargs="?", help="the recording's folder (created; must not exist)")
    ap.add_argument("--topics", nargs="+", metavar="PATTERN", help="topic names or fnmatch patterns to record")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default: Ctrl-C)")
    ap.add_argument("--flush-period", type=float, default=None,
                    help="seconds between flushes: the most a kill can lose (default 1)")
    ap.add_argument("--info", metavar="BAG", help="print what a recording holds (and where reading stopped)")
    ap.add_argument("--config", help="with --info: check that the recording is a run of this hardware config")
    ap.add_argument("--repair", nargs=2, metavar=("BAG", "OUT"),
                    help="write what a killed or damaged recording holds as a finished one")
    a = ap.parse_args(argv)
    try:
        if a.info:
            return info(a.info, a.config)
        if a.repair:
            rec = repair_bag(*a.repair)
            print(f"wrote {rec.path}: {sum(t.count for t in rec.topics.values())} messages on {len(rec.topics)} topics")
            return 0
        if not a.out:
            ap.error("give the folder to record into (or --info BAG, --repair BAG OUT)")
        if a.duration < 0:
            ap.error(f"--duration must be >= 0, got {a.duration:g}")
        out = bag_path(a.out, "recording")
    except RecordingError as e:
        print(f"recording error: {e}", file=sys.stderr)
        return 2
    try:
        from s2r_ros.recorder_node import main as recorder_main
    except ImportError as e:
        print(f"error: the recorder node needs the ROS 2 package s2r_ros ({e}); pip install -e ros_ws/src/s2r_ros",
              file=sys.stderr)
        return 2
    return recorder_main(["s2r-record", *recorder_args(out, a.topics, a.duration, a.flush_period)])


if __name__ == "__main__":
    raise SystemExit(main())
