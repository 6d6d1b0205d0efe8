"""Small pieces every s2r node shares: the main loop, QoS, stamps, latency statistics, diagnostics.

Command round-trip latency: a controller that plans from a /joint_states sample names that sample
in the command it sends back, as the label of the Float64MultiArray's single layout dimension
(``joint_states@<stamp in ns>``; size and stride are the number of joints, so the layout stays a
valid 1-D description for any other consumer). The driver node matches it with the time it
published that sample.
"""
from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from collections import deque

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from s2r.core.realtime import enable_realtime, freeze_heap  # noqa: F401  (the nodes import them from here)

# Reliable publishers match every subscriber (reliable or best effort); depth 10 like ROS defaults.
STATE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Commands: only the newest one matters.
COMMAND_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
IMAGE_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Goals: a late-joining controller still gets the last goal.
GOAL_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)

LABEL_PREFIX = "joint_states@"

OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
                          DiagnosticStatus.STALE)


# ----------------------------------------------------------------------------- stamps and labels
def stamp_ns(stamp: TimeMsg) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def stamp_s(stamp: TimeMsg) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def command_msg(values, source_stamp_ns: int | None = None) -> Float64MultiArray:
    """A Float64MultiArray command; with the stamp of the /joint_states sample it answers."""
    values = [float(v) for v in values]
    msg = Float64MultiArray(data=values)
    label = f"{LABEL_PREFIX}{source_stamp_ns}" if source_stamp_ns is not None else "joints"
    msg.layout.dim = [MultiArrayDimension(label=label, size=len(values), stride=len(values))]
    return msg


def tips_goal_msg(points, frame_id: str = "world"):
    """A fingertip goal (policy_node's `goal_topic` for hand policies): one pose per target point
    (x, y, z in `frame_id`), identity orientation."""
    from geometry_msgs.msg import Pose, PoseArray
    msg = PoseArray()
    msg.header.frame_id = frame_id
    for p in np.asarray(points, float).reshape(-1, 3):
        pose = Pose()
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in p)
        pose.orientation.w = 1.0
        msg.poses.append(pose)
    return msg


def command_source_stamp(msg: Float64MultiArray) -> int | None:
    """The /joint_states stamp (ns) a command answers, if its sender said so."""
    if msg.layout.dim:
        label = msg.layout.dim[0].label
        if label.startswith(LABEL_PREFIX):
            try:
                return int(label[len(LABEL_PREFIX):])
            except ValueError:
                return None
    return None


# ----------------------------------------------------------------------------- statistics
class LatencyStats:
    """Durations (seconds) of the last `maxlen` events; percentiles in milliseconds.

    A histogram with logarithmic bins (1 % wide, 1 us to 1000 s) over a sliding window: adding a
    sample and reading percentiles cost microseconds whatever the window holds, because they run
    on a node's executor between control callbacks (sorting a window of 200k samples took ~7 ms,
    a stall every diagnostics period). Percentiles are exact to the bin: within 0.5 %."""

    _LO, _RATIO, _BINS = 1e-6, 1.01, 2084            # 1e-6 * 1.01**2083 ~ 1000 s
    _INV_LOG = 1.0 / math.log(_RATIO)
    # the value reported for a bin: its geometric centre, in ms
    _CENTRES_MS = 1e3 * _LO * _RATIO ** (np.arange(_BINS) - 0.5)

    def __init__(self, maxlen: int = 200_000):
        self._window: deque[int] = deque()
        self._maxlen = int(maxlen)
        self._counts = np.zeros(self._BINS, np.int64)
        self._lock = threading.Lock()

    def _bin(self, seconds: float) -> int:
        if not seconds > self._LO:                   # also NaN: the lowest bin
            return 0
        return min(int(math.log(seconds / self._LO) * self._INV_LOG) + 1, self._BINS - 1)

    def add(self, seconds: float) -> None:
        i = self._bin(seconds)
        with self._lock:
            self._window.append(i)
            self._counts[i] += 1
            if len(self._window) > self._maxlen:
                self._counts[self._window.popleft()] -= 1

    def __len__(self) -> int:
        return len(self._window)

    def percentiles_ms(self, *qs: float) -> list[float]:
        with self._lock:
            n = len(self._window)
            if not n:
                return [float("nan")] * len(qs)
            cdf = np.cumsum(self._counts)
        # nearest rank: the smallest value with at least q % of the samples at or below it
        ranks = [max(1, math.ceil(q / 100.0 * n)) for q in qs]
        return [float(self._CENTRES_MS[int(np.searchsorted(cdf, r))]) for r in ranks]

    def clear(self) -> None:
        with self._lock:
            self._window.clear()
            self._counts[:] = 0


class RateMeter:
    """Events per second over a sliding window of timestamps (time.monotonic)."""

    def __init__(self, window_s: float = 2.0):
        self.window_s = window_s
        self._t: deque[float] = deque()
        self.total = 0

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._t.append(now)
        self.total += 1
        while self._t and now - self._t[0] > self.window_s:
            self._t.popleft()

    def rate(self) -> float:
        if len(self._t) < 2:
            return 0.0
        span = self._t[-1] - self._t[0]
        return (len(self._t) - 1) / span if span > 0 else 0.0


class Throttle:
    """Log the first occurrence of each key and then every `every`-th, with the count."""

    def __init__(self, every: int = 100):
        self.every, self.counts = every, {}

    def __call__(self, key: str) -> int | None:
        n = self.counts.get(key, 0) + 1
        self.counts[key] = n
        return n if n == 1 or n % self.every == 0 else None


# ----------------------------------------------------------------------------- diagnostics
def diag_status(name: str, level, message: str, hardware_id: str, values: dict) -> DiagnosticStatus:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    return DiagnosticStatus(level=bytes([level]) if isinstance(level, int) else level, name=name,
                            message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=fmt(v)) for k, v in values.items()])


def diag_values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def diag_level(status: DiagnosticStatus) -> int:
    lv = status.level
    return lv[0] if isinstance(lv, (bytes, bytearray)) else int(lv)


# ----------------------------------------------------------------------------- logging bridge
class RosLogHandler(logging.Handler):
    """Forward Python `logging` records of our libraries (e.g. the safety layer) to a node's logger."""

    def __init__(self, node):
        super().__init__()
        self.node = node

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = f"{record.name}: {record.getMessage()}"
            log = self.node.get_logger()
            if record.levelno >= logging.ERROR:
                log.error(msg)
            elif record.levelno >= logging.WARNING:
                log.warning(msg)
            elif record.levelno >= logging.INFO:
                log.info(msg)
            else:
                log.debug(msg)
        except Exception:   # a log line must never take a node down
            pass


def bridge_python_logging(node, names=("s2r",)) -> RosLogHandler:
    h = RosLogHandler(node)
    for n in names:
        lg = logging.getLogger(n)
        lg.addHandler(h)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    return h


# ----------------------------------------------------------------------------- main
class FastSubscription:
    """One latency-critical subscription, served by a minimal node of its own and its own executor
    thread.

    An rclpy executor rebuilds its wait set from all of its nodes' entities every time it wakes, in
    Python: parameter and lifecycle services, QoS event handlers, timers -- a few hundred
    microseconds per message for a full node, on the path of every control message. The control
    path (the driver's commands, the MPC's joint states) gets a hidden node (`_<owner>_<suffix>`)
    with this one subscription, no parameter services and no rosout, spun in a thread; the owner
    keeps everything else. The topic is resolved by the owner (its namespace, `~`, its
    remappings), so remapping the owner's topic moves this subscription too. A callback that
    raises ends the process as it would on the owner's executor (logged, exit code 1, the context
    shut down), rather than leaving a node that no longer hears its control topic."""

    def __init__(self, owner, topic: str, msg_type, callback, qos, suffix: str):
        self.owner = owner
        self.topic = owner.resolve_topic_name(topic)
        self.node = rclpy.create_node(f"_{owner.get_name()}_{suffix}", namespace=owner.get_namespace(),
                                      context=owner.context, use_global_arguments=False,
                                      enable_rosout=False, start_parameter_services=False)
        self.subscription = self.node.create_subscription(msg_type, self.topic, callback, qos)
        self.executor = SingleThreadedExecutor(context=owner.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=f"fast-{suffix}", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass
        except Exception as e:
            if not self.node.context.ok():
                return                            # the context went away under us at shutdown
            import traceback
            self.owner.get_logger().error(f"{self.topic} callback failed, shutting the node down: "
                                          f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
            self.owner.exit_code = 1
            rclpy.try_shutdown(context=self.node.context)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self._thread.join(timeout=2.0)
        self.node.destroy_node()


class _Signals:
    """SIGINT and SIGTERM for a node's process, handled in the main thread.

    rclpy's own handler shuts the context down from a thread of its own, while the main thread may
    be inside another rcl call (a publish, the executor's wait, creating the executor): a race
    that ends in a crash at Ctrl-C now and then (ros2/rclpy#1352 is one of its forms). Here a
    signal while the node is being built raises KeyboardInterrupt (nothing has started yet); while
    it spins, it asks the loop to stop, and the main thread then shuts everything down itself; while
    it closes, it is ignored so that closing (a driver's hold, a flush) completes."""

    def __init__(self):
        self.stage = "starting"
        self.stop = False
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._on_signal)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)

    def _on_signal(self, signum, frame):
        if self.stage == "starting":
            raise KeyboardInterrupt
        self.stop = True


# How often the main loop looks at the stop flag: the longest a signal waits to be acted on.
SIGNAL_POLL_S = 0.1


def spin_node(make_node, args=None) -> int:
    """rclpy.init, build the node, spin until Ctrl-C / SIGTERM / shutdown, clean up. Exit code.

    `make_node()` may raise `SystemExit(code)` to refuse to start (bad parameters, missing file):
    the reason has been logged by then. A parameter of the wrong type (rclpy's ParameterException)
    or a bad file (ConfigError) raised while building the node is refused the same way, in one
    line with exit code 2, whichever node it is. Signals are handled by `_Signals`.
    """
    from rclpy.signals import SignalHandlerOptions

    from s2r.core.yamlio import ConfigError

    # Threads here (the executor, a control loop, the simulator's physics) share the GIL; hand it over
    # every 0.5 ms instead of every 5 ms so that a callback never waits out a long C call's slice.
    sys.setswitchinterval(5e-4)
    node = None
    code = 0
    with _Signals() as signals:
        rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
        try:
            node = make_node()
            if not node.has_parameter("realtime_priority"):
                # 0: normal scheduling; 1-99: SCHED_FIFO for this node's threads (enable_realtime)
                node.declare_parameter("realtime_priority", 0)
            rt = int(node.get_parameter("realtime_priority").value)
            if rt:
                why = enable_realtime(rt)
                if why:
                    node.get_logger().warning(f"realtime_priority {rt}: could not enable SCHED_FIFO ({why}); "
                                              "running at normal priority")
                else:
                    node.get_logger().info(f"SCHED_FIFO priority {rt} for this node's threads")
            freeze_heap()
            ex = SingleThreadedExecutor()
            ex.add_node(node)
            signals.stage = "spinning"
            try:
                while not signals.stop and node.context.ok():
                    ex.spin_once(timeout_sec=SIGNAL_POLL_S)
            finally:
                signals.stage = "closing"
                ex.shutdown(timeout_sec=1.0)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except (ParameterException, ConfigError) as e:
            if node is not None:
                raise
            print(f"refusing to start: {' '.join(str(e).split())[:500]}", file=sys.stderr)
            code = 2
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            signals.stage = "closing"
            if node is not None:
                close = getattr(node, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception as e:   # report, but still shut rclpy down
                        print(f"[{node.get_name()}] error while closing: {e}", file=sys.stderr)
                        code = code or 1
                code = getattr(node, "exit_code", 0) or code
                node.destroy_node()
            rclpy.try_shutdown()
    return code
