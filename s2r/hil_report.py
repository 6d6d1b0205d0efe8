"""`s2r hil CONFIG`: the hardware-in-the-loop suite (the installed package s2r.hil, run by pytest
with its plugin) against one config, as a report. pytest comes with the `hil` extra. With
`--record DIR`, each robot session is also recorded as a rosbag2 folder under DIR."""
from __future__ import annotations

import sys
from pathlib import Path

from .core.config import load_config, resolve_config_path

SUITE = "s2r.hil"
PLUGIN = "s2r.hil.plugin"


class _Collector:
    def __init__(self):
        self.rows = []

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            name = report.nodeid.split("::")[-1].split("[")[0].removeprefix("test_").replace("_", " ")
            why = ""
            if report.failed:
                why = str(report.longrepr.reprcrash.message if hasattr(report.longrepr, "reprcrash")
                          else report.longrepr).splitlines()[0][:400]   # the check says what to change
            self.rows.append((name, report.outcome, report.duration, why))


def _record_plugin(where):
    """pytest plugin of `s2r hil --record DIR`: every robot session of the suite (its `hil_session`
    fixture) is recorded into DIR/<config>-<n>/, a rosbag2 folder (s2r.core.bag): each state read
    on /joint_states, each command on /driver/commands (config joint order; the layout's one
    dimension is labelled with the command mode). Recording goes through BagWriter's bounded queue,
    so it never holds the robot up, and a failure to record never fails a check."""
    import pytest

    from .core.bag import BagWriter

    class RecordRobot:
        def __init__(self):
            self.where = Path(where)
            self.bags = []

        @pytest.hookimpl(hookwrapper=True)
        def pytest_fixture_setup(self, fixturedef, request):
            outcome = yield
            if fixturedef.argname != "hil_session" or outcome.excinfo is not None:
                return
            cfg, robot, _ = outcome.get_result()
            self.where.mkdir(parents=True, exist_ok=True)
            name = Path(str(getattr(cfg, "path", "") or cfg.name)).stem
            n = 1 + sum(1 for _ in self.where.glob(f"{name}-*"))
            bag = BagWriter(self.where / f"{name}-{n}", custom_data={"recorded_by": "s2r hil --record"})
            bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
            bag.add_topic("/driver/commands", "std_msgs/msg/Float64MultiArray")
            self.bags.append(bag)
            _wrap(robot, bag, list(robot.spec.joint_names))
            fixturedef.addfinalizer(bag.close)     # before the robot disconnects (finalizers run LIFO)

        def close(self):
            for bag in self.bags:
                bag.close()

    return RecordRobot()


def _wrap(robot, bag, names: list[str]) -> None:
    """Record `robot`'s reads and writes into `bag` (the instance's methods are replaced)."""
    import time

    import numpy as np

    T = bag.msg_types
    JointState, Header, Time = T["sensor_msgs/msg/JointState"], T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    Array, Layout, Dim = (T["std_msgs/msg/Float64MultiArray"], T["std_msgs/msg/MultiArrayLayout"],
                          T["std_msgs/msg/MultiArrayDimension"])
    read, write = robot.read, robot.write

    def header(now):
        return Header(stamp=Time(sec=now // 1_000_000_000, nanosec=now % 1_000_000_000), frame_id="")

    def recorded_read():
        st = read()
        try:
            now = time.time_ns()
            bag.write_message("/joint_states", now, JointState(
                header=header(now), name=names, position=np.asarray(st.q, float),
                velocity=np.asarray(st.qd, float), effort=np.asarray(st.effort, float)))
        except Exception:                      # recording never fails a check
            pass
        return st

    def recorded_write(command):
        try:
            values = np.asarray(command.values, float).ravel()
            if command.names is not None:          # to config order; joints not commanded: NaN
                given = dict(zip(command.names, values))
                values = np.array([given.get(n, np.nan) for n in names], float)
            bag.write_message("/driver/commands", time.time_ns(), Array(
                layout=Layout(dim=[Dim(label=command.mode.value, size=len(values), stride=len(values))],
                              data_offset=0), data=values))
        except Exception:
            pass
        return write(command)

    robot.read, robot.write = recorded_read, recorded_write


def run_hil(config: str, emulate: bool = False, extra=None, record=None) -> int:
    try:
        import pytest
    except ImportError:
        print("error: `s2r hil` runs the suite with pytest, which is not installed: pip install 's2r-robotics[hil]'",
              file=sys.stderr)
        return 2
    extra = list(extra or [])
    for i, arg in enumerate(extra):         # `s2r hil CONFIG --record DIR`: after CONFIG, pytest's arguments
        if arg == "--record" and i + 1 < len(extra):
            record = extra[i + 1]
            del extra[i:i + 2]
            break
        if arg.startswith("--record="):
            record = arg.split("=", 1)[1]
            del extra[i]
            break
    if record is not None and Path(record).exists() and not Path(record).is_dir():
        print(f"error: --record {record}: exists and is not a folder", file=sys.stderr)
        return 2
    cfg = load_config(config)       # a bad file is refused here, in one line
    path = str(resolve_config_path(config))
    col = _Collector()
    plugins = [col]
    if record is not None:
        plugins.append(_record_plugin(record))
    # the suite and its plugin are self-contained: conftest files of the current directory stay out
    args = ["--pyargs", SUITE, "-p", PLUGIN, "--noconftest", "--hardware", path, "-q", "-p", "no:cacheprovider",
            "--no-header", "-rN"]
    if emulate:
        args.append("--emulate")
    print(f"HIL suite: {cfg.name} ({cfg.driver_type} driver, hardware {cfg.hardware}"
          f"{', emulated' if emulate else ''}), {len(cfg.joints)} joints at {cfg.control_rate_hz:g} Hz")
    try:
        rc = pytest.main(args + extra, plugins=plugins)
    finally:
        for p in plugins[1:]:
            p.close()
    print(f"\n{'check':<48} {'result':<8} {'time':>7}")
    for name, outcome, dur, why in col.rows:
        print(f"{name:<48} {outcome.upper():<8} {dur:6.2f}s" + (f"  {why}" if why else ""))
    n_ok = sum(r[1] == "passed" for r in col.rows)
    print(f"\n{n_ok}/{len(col.rows)} checks passed")
    for p in plugins[1:]:
        for bag in p.bags:
            print(f"recorded {bag.written} messages into {bag.path} (dropped {bag.dropped})")
    return int(rc)
