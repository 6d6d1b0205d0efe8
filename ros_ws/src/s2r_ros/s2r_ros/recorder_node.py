"""recorder_node: records a robot run as a rosbag2 folder with an MCAP file (`s2r record`).

Every topic whose name matches one of `topics` (fnmatch patterns; by default the joint states,
every `*/commands`, `*/setpoints` and `*/joint_trajectory`, /diagnostics, the goals and the cameras' `*/image_raw`
and `*/camera_info`) is subscribed as soon as a publisher of it appears (looked for every
`discovery_period_s`), with the publishers' reliability and durability, and written as the
serialized bytes that arrived (rclpy `raw=True`: no decoding, no re-encoding), stamped with the
receive time, under the message definition of its type (s2r.core.bag).

The subscriptions (KEEP_LAST `depth`, never KEEP_ALL, which would push back on the publishers)
hand each message to a bounded queue and return; a writer thread does the disk work, so a slow
disk drops messages (counted per topic, published on /diagnostics and in the last log line)
instead of delaying anything. Chunks are flushed every `flush_period_s`: a recorder
killed at any time leaves a file readable up to its last flush (`s2r record --info`); stopped
with Ctrl-C / SIGTERM (or after `duration_s`) it finishes the file and writes metadata.yaml.
`out` must not exist: a recording is never written over.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from s2r.core.bag import BagWriter, RecordingError, topic_matches
from s2r.core.schema.nodes import RecorderNodeParams

from .common import ERROR, OK, WARN, diag_status, spin_node
from .node_params import declare_parameters, refuse


def message_class(type_name: str):
    """The rclpy message class of `pkg/msg/Name`."""
    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class RecorderNode(Node):
    def __init__(self, name: str = "recorder", **kw):
        super().__init__(name, **kw)
        p = declare_parameters(self, RecorderNodeParams)
        if not p.out:
            refuse(self, "out", "needs the folder to record into")
        if Path(p.out).exists():
            refuse(self, "out", f"{p.out} exists already; a recording is never written over")
        if not p.topics:
            refuse(self, "topics", "names no topic")
        try:
            self.bag = BagWriter(p.out, max_queue=p.max_queue, max_queue_bytes=p.max_queue_mb << 20,
                                 flush_period_s=p.flush_period_s,
                                 custom_data={"recorded_by": "s2r recorder_node", "topics": " ".join(p.topics)})
        except (RecordingError, OSError) as e:
            refuse(self, "out", " ".join(str(e).split()))
        self.subs = {}
        self.skipped: dict[str, str] = {}          # topic -> why it is not recorded
        self.t_start = time.monotonic()
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(p.discovery_period_s, self._discover)
        self.create_timer(p.diagnostics_period_s, self._publish_diagnostics)
        self._discover()
        self.get_logger().info(f"recording {', '.join(p.topics)} into {p.out}")

    # ------------------------------------------------------------------ subscriptions
    def _discover(self) -> None:
        p = self.params
        if p.duration_s and time.monotonic() - self.t_start >= p.duration_s:
            raise SystemExit(0)                    # spin_node closes the node: the file is finished
        for topic, types in self.get_topic_names_and_types():
            if topic in self.subs or topic in self.skipped or not topic_matches(topic, p.topics):
                continue
            pubs = self.get_publishers_info_by_topic(topic)
            if not pubs:
                continue                           # only subscribers so far: its QoS is not known yet
            if len(types) != 1:
                self._skip(topic, f"published with several types ({', '.join(types)})")
                continue
            self._subscribe(topic, types[0], pubs)

    def _subscribe(self, topic: str, type_name: str, pubs) -> None:
        reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in pubs)
        latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in pubs)
        try:
            cls = message_class(type_name)
            self.bag.add_topic(topic, type_name, reliable=reliable, transient_local=latched)
        except (ImportError, AttributeError, ValueError) as e:
            self._skip(topic, " ".join(str(e).split()))
            return
        qos = QoSProfile(depth=self.params.depth, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
        put, clock = self.bag.put, self.get_clock()

        def on_message(data: bytes, topic=topic):
            put(topic, clock.now().nanoseconds, data)
        self.subs[topic] = self.create_subscription(cls, topic, on_message, qos, raw=True)
        self.get_logger().info(f"recording {topic} ({type_name})")

    def _skip(self, topic: str, why: str) -> None:
        self.skipped[topic] = why
        self.get_logger().warning(f"not recording {topic}: {why}")

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        b = self.bag
        level, message = OK, f"recording {len(self.subs)} topics"
        if b.error is not None:
            level, message = ERROR, f"writing stopped: {b.error}"
        elif b.dropped:
            level, message = WARN, f"{b.dropped} messages dropped (the disk did not keep up)"
        values = {"path": str(b.path), "topics": len(self.subs), "written": b.written, "dropped": b.dropped,
                  "queued": b.queued, "file_bytes": b.file.stat().st_size if b.file.exists() else 0}
        values.update({f"dropped {t}": s.dropped for t, s in b.stats.items() if s.dropped})
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [diag_status(f"{self.get_name()}: recorder", level, message, str(b.path), values)]
        self.pub_diag.publish(msg)

    def close(self) -> None:
        for sub in self.subs.values():
            self.destroy_subscription(sub)
        self.bag.close()
        b = self.bag
        counts = ", ".join(f"{t} {s.written}" for t, s in sorted(b.stats.items())) or "nothing"
        self.get_logger().info(f"recorded {b.written} messages into {b.path} ({counts}); dropped {b.dropped}")


def main(args=None) -> int:
    return spin_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
