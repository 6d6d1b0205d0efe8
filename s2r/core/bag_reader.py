"""Reading robot runs recorded as rosbag2 folders (s2r.core.bag writes them).

`read_bag` reads a finished recording with the `rosbags` library's reader, and an unfinished one
(killed: no metadata.yaml, no MCAP summary) or a truncated or corrupt one record by record with the
`mcap` library's stream reader, up to where it stops being valid -- `Recording.stopped` says where.
`check_recording` refuses a recording that lacks a needed topic or comes from another robot, in one
line. `repair_bag` rewrites what a damaged recording holds as a finished one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .bag import MCAP_MAGIC, RecordingError


@dataclass
class TopicInfo:
    msgtype: str
    count: int
    msgdef: str = ""


@dataclass
class Recording:
    """What a recording holds: its topics (type, message count), and where reading stopped when the
    file was not finished or is damaged (`stopped`, None for a complete recording)."""
    path: Path
    topics: dict[str, TopicInfo]
    start_ns: int
    end_ns: int
    stopped: str | None = None
    custom: dict = field(default_factory=dict)     # the recorder's custom_data (metadata.yaml)
    _salvaged: list | None = field(default=None, repr=False)   # (topic, stamp_ns, raw), read record by record
    _types: object = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        return self.stopped is None

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) * 1e-9

    def raw_messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, bytes]]:
        """(topic, stamp_ns, serialized message) in time order."""
        want = None if topics is None else set(topics)
        if self._salvaged is not None:
            for m in sorted(self._salvaged, key=lambda m: m[1]):
                if want is None or m[0] in want:
                    yield m
            return
        from rosbags.rosbag2 import Reader
        with Reader(self.path) as r:
            conns = [c for c in r.connections if want is None or c.topic in want]
            for c, stamp, raw in r.messages(connections=conns):
                yield c.topic, stamp, raw

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, object]]:
        """(topic, stamp_ns, message) in time order, decoded with the definitions stored in the
        recording (so a recording from another ROS distribution decodes as it was written)."""
        types = self._typestore()
        for topic, stamp, raw in self.raw_messages(topics):
            yield topic, stamp, types.deserialize_cdr(raw, self.topics[topic].msgtype)

    def _typestore(self):
        if self._types is None:
            self._types = _store_of(self.topics)
        return self._types

    def joint_states(self, topic: str = "/joint_states") -> dict:
        """The states on `topic` as arrays: t (s since the first message, receive time), stamp (s,
        header), names, q, qd, effort (n x joints; NaN where a message left a field empty). A
        message with other joint names than the first is a RecordingError."""
        names, rows = None, []
        for _, stamp, m in self.messages([topic]):
            if names is None:
                names = list(m.name)
            elif list(m.name) != names:
                raise RecordingError(f"{self.path}: {topic} changes its joint names at t={stamp * 1e-9:.3f} s "
                                     f"({names} -> {list(m.name)})")
            n = len(names)

            def col(a):
                a = np.asarray(a, float)
                return a if a.size == n else np.full(n, np.nan)
            rows.append((stamp, m.header.stamp.sec + m.header.stamp.nanosec * 1e-9,
                         col(m.position), col(m.velocity), col(m.effort)))
        if not rows:
            raise RecordingError(f"{self.path}: no messages on {topic}")
        t = np.array([r[0] for r in rows], np.int64)
        return {"t": (t - t[0]) * 1e-9, "stamp": np.array([r[1] for r in rows]), "names": names,
                "q": np.stack([r[2] for r in rows]), "qd": np.stack([r[3] for r in rows]),
                "effort": np.stack([r[4] for r in rows])}


def _store_of(topics: dict[str, TopicInfo]):
    """A type store with the definitions a recording carries (the current ROS 2 ones for a type
    it carries none of)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    defs = {}
    for info in topics.values():
        if info.msgdef:
            defs.update(get_types_from_msg(info.msgdef, info.msgtype))
    if any(t.msgtype not in defs for t in topics.values()):
        defs = {**get_typestore(Stores.LATEST).fielddefs, **defs}
    store = get_typestore(Stores.EMPTY)
    store.register(defs)
    return store


def _bag_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.mcap")) if path.is_dir() else [path]


def read_bag(path) -> Recording:
    """Open a recording (its folder, or an .mcap file). A finished one (metadata.yaml; MCAP or
    sqlite3 storage) is read with rosbags' reader; an MCAP file without metadata.yaml or without a
    valid end is salvaged record by record with the `mcap` stream reader up to where it stops
    being valid (`Recording.stopped` says where)."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such recording")
    files = _bag_files(path)
    why = None
    if path.is_dir() and (path / "metadata.yaml").exists():
        try:
            return _read_finished(path)
        except Exception as e:              # rosbags' ReaderError and friends: salvage the MCAP file
            why = " ".join(str(e).split())[:300]
    if not files:
        raise RecordingError(f"{path}: not a recording (no .mcap file{'; ' + why if why else ''})")
    rec = _salvage(files)
    rec.path = path
    if why is not None:
        rec.stopped = f"{why}; {rec.stopped}" if rec.stopped else why
    elif rec.stopped is None and path.is_dir():
        rec.stopped = "no metadata.yaml (the recorder did not close the recording); every record is valid"
    return rec


def _read_finished(path: Path) -> Recording:
    from rosbags.rosbag2 import Reader
    with Reader(path) as r:
        topics = {}
        for c in r.connections:
            info = topics.setdefault(c.topic, TopicInfo(c.msgtype, 0, c.msgdef.data))
            info.count += c.msgcount
        start, end = (r.start_time, r.end_time) if r.message_count else (0, 0)
    return Recording(path, topics, start, max(start, end - 1), custom=_custom_data(path))


def _custom_data(path: Path) -> dict:
    """metadata.yaml's custom_data (what the recorder said about the run; strings), {} if none."""
    import yaml
    try:
        info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return {str(k): str(v) for k, v in (info.get("custom_data") or {}).items()}
    except Exception:
        return {}


class _ExactReads:
    """A file whose short read is an error: the stream reader would otherwise parse a record cut
    off by the end of the file as if it were whole."""

    def __init__(self, fh):
        self.fh = fh

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        if n > 0 and len(data) < n:
            raise EOFError(f"{n - len(data)} bytes missing")
        return data


def _salvage(files: list[Path]) -> Recording:
    """Every message of `files` up to the first invalid or missing byte (the `mcap` library's
    stream reader, one whole top-level record -- a chunk is one -- at a time)."""
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader

    topics: dict[str, TopicInfo] = {}
    msgs, stopped = [], None                   # (topic, stamp_ns, raw)
    for f in files:
        size = f.stat().st_size
        schemas, channels = {}, {}             # ids are the file's own
        with open(f, "rb") as fh:
            if fh.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
                raise RecordingError(f"{f}: not an MCAP file (no MCAP magic at its start)")
            fh.seek(0)
            valid_end, n_before = len(MCAP_MAGIC), len(msgs)
            try:
                for rec in StreamReader(_ExactReads(fh), record_size_limit=size).records:
                    valid_end = fh.tell()     # the end of the whole record this one came from
                    if isinstance(rec, Schema):
                        schemas[rec.id] = rec
                    elif isinstance(rec, Channel):
                        if rec.schema_id not in schemas:
                            raise ValueError(f"channel {rec.topic} without its schema")
                        channels[rec.id] = rec
                        sc = schemas[rec.schema_id]
                        topics.setdefault(rec.topic, TopicInfo(sc.name, 0, sc.data.decode("utf-8", "replace")))
                    elif isinstance(rec, Message):
                        if rec.channel_id not in channels:
                            raise ValueError(f"a message on undeclared channel {rec.channel_id}")
                        msgs.append((channels[rec.channel_id].topic, rec.log_time, rec.data))
            except Exception as e:            # truncated or corrupt: keep what came before
                if valid_end >= size:
                    why = "unfinished (it ends after a whole record, with no MCAP footer)"
                elif isinstance(e, EOFError) or type(e).__name__ in ("EndOfFile", "RecordLengthLimitExceeded"):
                    why = "truncated (it ends inside a record)"
                else:
                    why = f"invalid data ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
                stopped = (f"{f.name}: {why}; read {len(msgs) - n_before} messages, valid up to byte "
                           f"{valid_end} of {size}")
                break
    out, store = [], _store_of(topics)
    for k, (topic, stamp, data) in enumerate(msgs):
        try:                                  # a chunk has no checksum: a message must at least decode
            store.deserialize_cdr(bytes(data), topics[topic].msgtype)
        except Exception as e:
            stopped = (f"message {k + 1} ({topic}) does not decode ({type(e).__name__}); "
                       f"read {len(out)} messages before it" + (f"; and: {stopped}" if stopped else ""))
            break
        topics[topic].count += 1
        out.append((topic, stamp, bytes(data)))
    stamps = [m[1] for m in out]
    return Recording(files[0], topics, min(stamps, default=0), max(stamps, default=0), stopped, _salvaged=out)


def check_recording(rec: Recording, needed: Iterable[str] = ("/joint_states",), joint_names=None,
                    state_topic: str = "/joint_states", min_duration_s: float = 0.0) -> None:
    """Refuse, in one line (RecordingError), a recording without a needed topic (or without
    messages on it), shorter than `min_duration_s`, or whose `state_topic` names other joints than
    `joint_names` (another robot)."""
    missing = [t for t in needed if t not in rec.topics or rec.topics[t].count == 0]
    if missing:
        have = ", ".join(f"{t} ({i.count})" for t, i in sorted(rec.topics.items())) or "none"
        raise RecordingError(f"{rec.path}: no messages on {', '.join(missing)} (topics recorded: {have})")
    if rec.duration_s < min_duration_s:
        raise RecordingError(f"{rec.path}: {rec.duration_s:.2f} s long, too short: needs at least {min_duration_s:g} s")
    if joint_names is not None:
        for _, _, m in rec.messages([state_topic]):
            got = list(m.name)
            break
        else:
            raise RecordingError(f"{rec.path}: no messages on {state_topic}")
        want = list(joint_names)
        if sorted(got) != sorted(want):
            absent = [j for j in want if j not in got]
            extra = [j for j in got if j not in want]
            raise RecordingError(f"{rec.path}: recorded from another robot: joints missing {absent}, "
                                 f"not in this robot {extra}")


def repair_bag(src, dst) -> Recording:
    """Write what `src` (an unfinished or damaged recording) holds as a finished recording at `dst`
    (which must not exist): an indexed MCAP file and metadata.yaml, as if it had been closed."""
    rec = read_bag(src)
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_types_from_msg, Stores, get_typestore
    store = get_typestore(Stores.EMPTY)
    for info in rec.topics.values():
        store.register(get_types_from_msg(info.msgdef, info.msgtype))
    with Writer(Path(dst), version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {t: w.add_connection(t, i.msgtype, typestore=store) for t, i in rec.topics.items()}
        for topic, stamp, raw in rec.raw_messages():
            w.write(conns[topic], stamp, raw)
    return read_bag(dst)
