"""`s2r excite CONFIG --out DIR`: run an excitation trajectory on the robot for identification.

    s2r excite CONFIG --out DIR [--duration 20] [--record] [--joints J ...] [--dry-run]

Builds a finite Fourier series per joint (s2r.sim.excitation, Swevers et al. 1997) from where the
robot is, within the limits the safety layer enforces (soft position limits, speed and acceleration
times `velocity_scale`, the per-period step), prints the plan and checks it before anything moves;
then streams it as position set-points through the driver and its safety layer at the control
rate, and holds. With `--record` every state read goes to /joint_states and every command as sent
to /driver/commands of a rosbag2 recording DIR/recording (as `s2r hil --record` records), which
`s2r identify DIR/recording --config CONFIG` fits the simulator to; the recording's metadata says
which backend ran it (what identification can tell from it depends on that). The plan is saved as
DIR/excitation.yaml. `--emulate` runs the real driver against the config's protocol-level emulator
(a Dynamixel bus, a ros2_control robot) instead of hardware.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

SETTLE_S = 0.5      # recorded after the trajectory, the set-point held: the robot coming to rest


def run_excitation(robot, plan, *, bag=None, settle_s: float = SETTLE_S, realtime: bool = True,
                   progress=None) -> dict:
    """Stream `plan` (an Excitation over some of `robot`'s joints; the others hold where they
    are) as position set-points through `robot` (a SafetyLayer), one per control period, then
    hold the end point for `settle_s`. With `bag` (a BagWriter): each state on /joint_states and
    each command as the safety layer sent it on /driver/commands. Returns counts: periods,
    clamped (set-points the safety layer's limiter changed: it eases a stream of set-points in,
    lagging the plan a little), max_shaped (the most it changed one, rad), missed (real time:
    periods the loop started late). A refusal is ExcitationAborted; the robot then holds."""
    spec = robot.spec
    names = list(spec.joint_names)
    T = spec.period
    idx = [names.index(j) for j in plan.names]
    _, setpoints = plan.setpoints(T)
    st = robot.read()
    hold_q = np.asarray(st.q, float).copy()
    n_settle = int(round(settle_s / T))
    stamp = _Stamps(robot, st)
    rec = _Recorder(bag, names) if bag is not None else None
    counts = dict(periods=0, clamped=0, max_shaped=0.0, missed=0)
    next_t = time.monotonic()
    total = len(setpoints) + n_settle
    try:
        _stream(robot, setpoints, total, hold_q, idx, rec, stamp, counts, T, realtime, progress, next_t)
    except BaseException:          # Ctrl-C, a driver fault: the robot stops under control
        robot.hold()
        raise
    robot.hold()
    return counts


def _stream(robot, setpoints, total, hold_q, idx, rec, stamp, counts, T, realtime, progress, next_t) -> None:
    from s2r.core.types import Command, CommandMode

    for k in range(total):
        st = robot.read()
        if rec is not None:
            rec.state(stamp.state(st), st)
        target = hold_q.copy()
        target[idx] = setpoints[min(k, len(setpoints) - 1)]
        res = robot.write(Command(CommandMode.POSITION, target))
        if res.status == "rejected":
            raise ExcitationAborted(f"period {k}: the safety layer refused the set-point ({res.reason}); "
                                    "the robot holds")
        if res.status == "clamped":
            counts["clamped"] += 1
            counts["max_shaped"] = max(counts["max_shaped"], float(np.max(np.abs(res.sent - target))))
        if rec is not None:
            rec.command(stamp.command(), res.sent)
            rec.stream_starts(stamp)
        counts["periods"] += 1
        if progress is not None and k % max(1, int(round(1.0 / T))) == 0:
            progress(k, total)
        if realtime:
            next_t += T
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -T:
                counts["missed"] += int(-delay / T)
                next_t = time.monotonic()


class ExcitationAborted(RuntimeError):
    """The safety layer refused a set-point during the excitation (the robot was stopped)."""


class _Stamps:
    """Recording time stamps (ns since the epoch) on the robot's clock, so identification replays
    the run as it happened on the robot: wall time at the start plus the robot's time since. On the
    simulator that is its physics clock (the physics time each state was sampled at, and each
    command accepted at: in real time a command lands part-way through a control period); on a
    robot that stamps its states on the wall clock (ROS 2), those stamps and the time each command
    was sent; on another robot, its driver's clock when the state was read and the command written. Stamps
    never go back and are unique (+1 ns where two fall together), so the recording's order is the
    order things happened in (a command follows the state it was computed from)."""

    def __init__(self, robot, st):
        self.robot, self.driver = robot, getattr(robot, "driver", robot)
        self.physics = hasattr(self.driver, "command_time") and "sim_time" in st.sensors
        # a robot that stamps its states on the wall clock (ROS time: the ros2_control bridge's
        # header stamps): those stamps, and the commands' when they were sent
        self.header = not self.physics and abs(st.sensors.get("header_stamp", 0.0) - time.time()) < 1.0
        self.wall0, self.clock0 = time.time_ns(), self._clock(st)
        self.last = 0

    def _clock(self, st=None) -> float:
        if self.physics:
            return st.sensors["sim_time"] if st is not None else self.driver.command_time
        if self.header:
            return st.sensors["header_stamp"] if st is not None else time.time()
        return self.robot.clock()

    def _stamp(self, t: float) -> int:
        ns = int(round(t * 1e9)) if self.header else self.wall0 + int(round((t - self.clock0) * 1e9))
        ns = max(ns, self.last + 1)
        self.last = ns
        return ns

    def state(self, st) -> int:
        """The stamp of a state just read."""
        return self._stamp(self._clock(st))

    def command(self) -> int:
        """The stamp of the command just written."""
        return self._stamp(self._clock())

    def stream_starts(self) -> list:
        """(log stamp, exact stamp) of the position streams the simulator started since the last
        call (its `stream_starts`: physics times); none on another robot."""
        starts = getattr(self.driver, "stream_starts", None) if self.physics else None
        out = []
        while starts:
            t = starts.popleft()
            exact = self.wall0 + int(round((t - self.clock0) * 1e9))
            out.append((self._stamp(t), exact))
        return out


class _Recorder:
    """States and commands as the messages `s2r hil --record` writes."""

    def __init__(self, bag, names):
        T = bag.msg_types
        self.bag, self.names = bag, list(names)
        self.JointState, self.Header, self.Time = (T["sensor_msgs/msg/JointState"], T["std_msgs/msg/Header"],
                                                   T["builtin_interfaces/msg/Time"])
        self.Array, self.Layout, self.Dim = (T["std_msgs/msg/Float64MultiArray"], T["std_msgs/msg/MultiArrayLayout"],
                                             T["std_msgs/msg/MultiArrayDimension"])

    def state(self, now: int, st) -> None:
        self.bag.write_message("/joint_states", now, self.JointState(
            header=self.Header(stamp=self.Time(sec=now // 1_000_000_000, nanosec=now % 1_000_000_000), frame_id=""),
            name=self.names, position=np.asarray(st.q, float), velocity=np.asarray(st.qd, float),
            effort=np.asarray(st.effort, float)))

    def stream_starts(self, stamp) -> None:
        """The simulator's position stream starts (set-points ramped from the measured position:
        the first, and any after a gap or a stop) on /driver/stream_starts, header stamp the
        physics time it happened at, for identification's replay."""
        for log, exact in stamp.stream_starts():
            if "/driver/stream_starts" not in self.bag.stats:
                self.bag.add_topic("/driver/stream_starts", "std_msgs/msg/Header")
            self.bag.write_message("/driver/stream_starts", log, self.Header(
                stamp=self.Time(sec=exact // 1_000_000_000, nanosec=exact % 1_000_000_000), frame_id="position"))

    def command(self, now: int, values) -> None:
        values = np.asarray(values, float)
        self.bag.write_message("/driver/commands", now, self.Array(
            layout=self.Layout(dim=[self.Dim(label="position", size=len(values), stride=len(values))], data_offset=0),
            data=values))


def save_plan(plan, path: Path, config_name: str) -> None:
    import yaml
    data = {"config": config_name, "joints": list(plan.names), "duration_s": plan.duration,
            "omega_rad_s": plan.omega, "q0": plan.q0.tolist(), "a": plan.a.tolist(), "b": plan.b.tolist(),
            "form": "q(t) = q0 + sum_l a_l sin(l w t) + b_l (cos(l w t) - 1)"}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def main(argv=None) -> int:
    from s2r.core.types import HARDWARE_MODES

    ap = argparse.ArgumentParser(prog="s2r excite", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("config", help="hardware config (path or name)")
    ap.add_argument("--out", required=True, help="folder for the plan and the recording (created)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of excitation (default 20)")
    ap.add_argument("--record", action="store_true", help="record the run into OUT/recording (rosbag2, MCAP)")
    ap.add_argument("--joints", nargs="+", help="the joints to excite (default: all; the others hold)")
    ap.add_argument("--harmonics", type=int, default=5, help="harmonics per joint (default 5)")
    ap.add_argument("--base-hz", type=float, default=0.1, help="base frequency (default 0.1 Hz)")
    ap.add_argument("--amplitude", type=float, default=0.5, help="most a joint moves from its start, rad (default 0.5)")
    ap.add_argument("--fill", type=float, default=0.8,
                    help="fraction of each limit (room, speed, acceleration) the plan may use (default 0.8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hardware", choices=list(HARDWARE_MODES), help="override the config's hardware mode")
    ap.add_argument("--emulate", action="store_true",
                    help="run the real driver against the config's protocol-level emulator (dynamixel, ros2)")
    ap.add_argument("--lockstep", action="store_true",
                    help="simulator: step physics per command instead of in real time (faster than real time)")
    ap.add_argument("--dry-run", action="store_true", help="print and check the plan, do not move")
    ap.add_argument("--reality", metavar="PRESET",
                    help="simulator only: run a \"robot\" with hidden physics, one draw of this randomization "
                         "preset on the excited joints (a test robot for `s2r identify`)")
    ap.add_argument("--reality-seed", type=int, default=0, help="the --reality draw's seed")
    a = ap.parse_args(argv)

    from s2r.core.bag import BagWriter, RecordingError, bag_path
    from s2r.core.config import load_config
    from s2r.drivers import open_driver
    from s2r.sim.excitation import ExcitationError, ExcitationLimits, check_excitation, fourier_excitation

    cfg = load_config(a.config)
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        print(f"error: --out {out}: exists and is not a folder", file=sys.stderr)
        return 2
    try:
        rec_path = bag_path(out / "recording", "recording") if a.record else None
    except RecordingError as e:
        print(f"recording error: {e}", file=sys.stderr)
        return 2
    emu = None
    if a.emulate:
        from s2r.drivers.emulators import check_emulated, start_emulated
        try:
            check_emulated(cfg)
        except ValueError as e:
            print(f"error: --emulate: {e}", file=sys.stderr)
            return 2
        if a.reality or a.lockstep:
            print("error: --reality and --lockstep are the simulator's; --emulate runs the real driver", file=sys.stderr)
            return 2
        emu = start_emulated(cfg)
        cfg = emu.config
    try:
        robot = open_driver(cfg, "real" if emu is not None else a.hardware, realtime=False if a.lockstep else None)
    except BaseException:
        if emu is not None:
            emu.close()
        raise
    bag = None
    try:
        names = list(robot.spec.joint_names)
        if a.reality:
            randomize = getattr(robot.driver, "randomize", None)
            if randomize is None:
                print(f"error: --reality needs the simulator, this robot runs on {robot.backend}", file=sys.stderr)
                return 2
            try:
                randomize(a.reality, seed=a.reality_seed, joints=a.joints)
            except ValueError as e:        # a preset (or its parameters) the sim driver cannot apply
                print(f"error: --reality {a.reality}: {e}", file=sys.stderr)
                return 2
        start = np.asarray(robot.read().q, float)
        try:
            limits = ExcitationLimits.of_robot(robot.spec, cfg.safety, a.joints)
            idx = [names.index(j) for j in limits.names]
            plan = fourier_excitation(limits, start[idx], a.duration, harmonics=a.harmonics, base_hz=a.base_hz,
                                      amplitude=a.amplitude, fill=a.fill, seed=a.seed)
            print(plan.describe(robot.spec.period))
            check_excitation(plan, limits, start[idx])        # the plan as it will run, from here
        except ExcitationError as e:
            print(f"excitation refused: {e}", file=sys.stderr)
            return 2
        out.mkdir(parents=True, exist_ok=True)
        save_plan(plan, out / "excitation.yaml", cfg.name)
        print(f"plan checked against the limits; saved {out / 'excitation.yaml'}")
        if a.dry_run:
            print("dry run: nothing moved")
            return 0
        if rec_path is not None:
            bag = BagWriter(rec_path, custom_data={"recorded_by": "s2r excite", "config": cfg.name,
                                                   "control_rate_hz": cfg.control_rate_hz,
                                                   "backend": robot.backend, "emulated": emu is not None,
                                                   "fallback": bool(robot.fallback)})
            bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
            bag.add_topic("/driver/commands", "std_msgs/msg/Float64MultiArray")
        realtime = getattr(robot.driver, "realtime", True)
        print(f"running on {robot.backend}{' (SIMULATOR FALLBACK)' if robot.fallback else ''}"
              f"{'' if realtime else ', lockstep'}: {plan.duration:g} s")

        def progress(k, total):
            print(f"\r  {k * robot.spec.period:6.1f} s / {total * robot.spec.period:.1f} s", end="", flush=True)
        try:
            counts = run_excitation(robot, plan, bag=bag, realtime=realtime, progress=progress)
        except ExcitationAborted as e:
            print(f"\nexcitation aborted: {e}", file=sys.stderr)
            return 2
        print(f"\rdone: {counts['periods']} periods, {counts['clamped']} set-points shaped by the safety layer's "
              f"limiter (at most {counts['max_shaped']:.4f} rad; the recording holds what was sent), "
              f"{counts['missed']} periods late")
    finally:
        if bag is not None:
            bag.close()
            print(f"recorded {bag.written} messages into {bag.path} (dropped {bag.dropped})")
        robot.disconnect()
        if emu is not None:
            emu.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
