"""Robot runs as rosbag2 recordings: a folder with one MCAP file and its `metadata.yaml`, which
`ros2 bag`, Foxglove and PlotJuggler open.

The container and the serialization are the `rosbags` library's (its rosbag2 Writer with the MCAP
storage plugin; message definitions come from its type store and are embedded in the file, with
their RIHS01 hashes in metadata.yaml). `BagWriter` adds what a recorder next to a control loop
needs: callers hand over messages (serialized CDR bytes, or message objects of the type store)
through a bounded queue that never blocks them (what does not fit is dropped and counted), one
writer thread serializes and does the disk work, and every `flush_period_s` the open chunk is
closed and written through to the disk, so a process killed at any moment leaves a file that is
valid up to its last flushed chunk.

Reading them back (also killed, truncated or damaged ones): s2r.core.bag_reader.
"""
from __future__ import annotations

import fnmatch
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

# Topics a robot run is recorded with (fnmatch patterns): the states, every controller's
# commands, the diagnostics, the goals and the cameras (ros_ws/README.md, "Recording").
DEFAULT_TOPICS = ("/joint_states", "*/true_joint_states", "*/commands", "*/setpoints", "*/joint_trajectory",
                  "/diagnostics", "/goal_pose", "/goal_joint_state", "*/image_raw", "*/camera_info")

MCAP_MAGIC = b"\x89MCAP0\r\n"


class RecordingError(ValueError):
    """A recording that cannot be written or used; the message is one line naming what is wrong."""


def topic_matches(topic: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(topic, p) for p in patterns)


def typestore():
    """The type store with the message definitions of current ROS 2 (rosbags' newest store)."""
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.LATEST)


# ----------------------------------------------------------------------------- writing
def _flushing_writer_class():
    """rosbags' rosbag2 Writer whose MCAP storage can close its open chunk on request.

    The library closes a chunk only when it passes 1 MiB (about a minute of joint states), so a
    killed recorder would lose that much; `flush()` closes it early and hands the file to the disk
    (fsync: a power cut keeps it too)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.storage_mcap import McapWriter

    class FlushingMcapWriter(McapWriter):
        def flush(self) -> None:
            if self.chunk.bio.tell():
                self.close_chunk()
            self.bio.flush()
            os.fsync(self.bio.fileno())

    class FlushingWriter(Writer):
        STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: FlushingMcapWriter}

        def flush(self) -> None:
            if self.storage is not None:
                self.storage.flush()

    return FlushingWriter, StoragePlugin


def _qos(reliable: bool, transient_local: bool, depth: int):
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                    QosTime)
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, int(depth),
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


def _approx_size(msg) -> int:
    """Bytes a message object will take serialized, roughly (its arrays and strings, one level)."""
    n = 64
    for v in getattr(msg, "__dict__", {}).values():
        n += v.nbytes if isinstance(v, np.ndarray) else len(v) if isinstance(v, (bytes, str, list, tuple)) else 8
    return n


@dataclass
class TopicStats:
    msgtype: str
    written: int = 0
    dropped: int = 0


class BagWriter:
    """A rosbag2 recording being written (MCAP storage), fed without blocking.

    `add_topic` declares a topic and its type (a ROS type name, `pkg/msg/Name`; its definition comes
    from `types`, by default the current ROS 2 store); `put` queues one serialized message and
    returns at once: False when the queue is full (`max_queue` messages or `max_queue_bytes`), the
    message then counted as dropped. A thread writes the queue out; `close` drains it, finishes the
    file and writes metadata.yaml. `path` must not exist yet."""

    def __init__(self, path, *, max_queue: int = 2000, max_queue_bytes: int = 64 << 20,
                 flush_period_s: float = 1.0, types=None, custom_data: dict | None = None):
        if max_queue < 1 or max_queue_bytes < 1:
            raise ValueError(f"max_queue and max_queue_bytes must be positive, got {max_queue}, {max_queue_bytes}")
        if not flush_period_s > 0:
            raise ValueError(f"flush_period_s must be positive, got {flush_period_s}")
        self.path = Path(path)
        if self.path.exists():
            raise RecordingError(f"{self.path} exists already; a recording is never written over")
        writer_cls, plugin = _flushing_writer_class()
        self._types = types if types is not None else typestore()
        self._writer = writer_cls(self.path, version=9, storage_plugin=plugin.MCAP)
        for k, v in (custom_data or {}).items():
            self._writer.set_custom_data(str(k), str(v))
        self._writer.open()
        self.max_queue, self.max_queue_bytes = int(max_queue), int(max_queue_bytes)
        self.flush_period_s = float(flush_period_s)
        self.stats: dict[str, TopicStats] = {}
        self._conns: dict[str, object] = {}
        self._queue: deque = deque()
        self._queued_bytes = 0
        self._cv = threading.Condition()
        self._write_lock = threading.Lock()       # the rosbags writer: the thread, add_topic, close
        self._closing = False
        self._flush_now = False
        self._flushed = threading.Event()
        self.error: BaseException | None = None   # what stopped the writer thread, if anything
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._thread.start()

    @property
    def file(self) -> Path:
        return self.path / f"{self.path.name}.mcap"

    def add_topic(self, topic: str, msgtype: str, *, reliable: bool = True, transient_local: bool = False,
                  depth: int = 10) -> None:
        """Declare `topic` with ROS type `msgtype` (and the QoS it was offered with, which
        `ros2 bag play` republishes with). A type the store does not know is a RecordingError."""
        if topic in self._conns:
            if self.stats[topic].msgtype != msgtype:
                raise RecordingError(f"{topic}: recorded as {self.stats[topic].msgtype}, now offered as {msgtype}")
            return
        if msgtype not in self._types.fielddefs:
            raise RecordingError(f"{topic}: message type {msgtype} has no definition in the type store")
        with self._write_lock:
            self._conns[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self._types,
                offered_qos_profiles=[_qos(reliable, transient_local, depth)])
        self.stats[topic] = TopicStats(msgtype)

    def put(self, topic: str, stamp_ns: int, data: bytes) -> bool:
        """Queue one serialized message of a declared topic, received at `stamp_ns` (ns since the
        epoch). Never blocks: False (and counted in `stats[topic].dropped`) when the queue is full
        or the writer has stopped."""
        return self._enqueue(topic, stamp_ns, data, len(data))

    def write_message(self, topic: str, stamp_ns: int, msg) -> bool:
        """`put` for a message object of the type store (`msg_types`), for recorders with no ROS
        middleware (a driver read in-process); the writer thread serializes it, off the caller's
        path."""
        return self._enqueue(topic, stamp_ns, msg, _approx_size(msg))

    def _enqueue(self, topic: str, stamp_ns: int, data, n: int) -> bool:
        st = self.stats[topic]
        with self._cv:
            if (self._closing or self.error is not None or len(self._queue) >= self.max_queue
                    or self._queued_bytes + n > self.max_queue_bytes):
                st.dropped += 1
                return False
            self._queue.append((topic, int(stamp_ns), data))
            self._queued_bytes += n
            self._cv.notify()
        return True

    @property
    def msg_types(self):
        """Message classes of the type store (`bag.msg_types['sensor_msgs/msg/JointState']`)."""
        return self._types.types

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.stats.values())

    @property
    def written(self) -> int:
        return sum(s.written for s in self.stats.values())

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_period_s
        try:
            while True:
                with self._cv:
                    while not self._queue and not self._closing and not self._flush_now:
                        timeout = next_flush - time.monotonic()
                        if timeout <= 0:
                            break
                        self._cv.wait(timeout)
                    batch = list(self._queue)
                    self._queue.clear()
                    self._queued_bytes = 0
                    done = self._closing and not batch
                    flush_now, self._flush_now = self._flush_now, False
                with self._write_lock:
                    for topic, stamp, data in batch:
                        if not isinstance(data, (bytes, bytearray, memoryview)):
                            try:
                                data = self._types.serialize_cdr(data, self.stats[topic].msgtype)
                            except Exception:        # not a message of its type: dropped, not fatal
                                self.stats[topic].dropped += 1
                                continue
                        self._writer.write(self._conns[topic], stamp, data)
                        self.stats[topic].written += 1
                        time.sleep(0)    # hand the GIL over: a control loop in this process waits one message at most
                    if flush_now or done or time.monotonic() >= next_flush:
                        self._writer.flush()
                        next_flush = time.monotonic() + self.flush_period_s
                if flush_now:
                    self._flushed.set()
                if done:
                    return
        except BaseException as e:          # a full disk: stop writing, keep what was flushed
            self.error = e
            self._flushed.set()

    def flush(self, timeout: float = 10.0) -> None:
        """Write out what is queued now and close the chunk (waits for the writer thread)."""
        with self._cv:
            self._flushed.clear()
            self._flush_now = True
            self._cv.notify()
        self._flushed.wait(timeout)

    def close(self) -> None:
        """Write out what is queued, finish the MCAP file and write metadata.yaml."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join()
        with self._write_lock:
            if self._writer.storage is None:
                return
            if self.error is None:
                self._writer.close()
            else:
                self._writer.abort()
                raise RecordingError(f"{self.path}: writing stopped: {self.error}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def bag_path(where, name: str) -> Path:
    """Where `--record WHERE` puts a recording: WHERE itself, or WHERE/<name> when WHERE is an
    existing folder that is not a recording (so `--record runs/bags` collects one per run)."""
    p = Path(where)
    if p.is_dir() and not (p / "metadata.yaml").exists() and not any(p.glob("*.mcap")):
        return p / name
    if p.exists():
        raise RecordingError(f"{p} exists already; a recording is never written over")
    return p
