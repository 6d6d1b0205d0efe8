"""Training checkpoints: a SHA-256 over everything torch.load reads, verified before unpickling;
damage, truncation, older formats and foreign files are refused in one line; changed run
parameters are refused or, where allowed, returned to be recorded in the run's history."""
import io
import os

import numpy as np
import pytest
import torch

from s2r.learning.agents import PointMassAgent
from s2r.learning.gps import MDGPS, GPSConfig
from s2r.learning.train import (_HEAD, HEADER_SIZE, MAGIC, VERSION, CheckpointError, _digest, check_parameters,
                            history_record, load_checkpoint, read_checkpoint, resume_event, save_checkpoint)

META = {"algorithm": "gps", "task": "PointMass", "samples": 5, "eval_episodes": 2, "iterations": 1,
        "policy": {"kind": "mlp", "hidden": (64, 64)}, "config": {"kl_step": 0.5}}
CFG = dict(policy_steps=20, eval_episodes=1, samples_per_condition=3)


@pytest.fixture(scope="module")
def algo():
    """A real MDGPS after one iteration: controllers, fitted dynamics, RNG states and history in its state."""
    gps = MDGPS(PointMassAgent(n_conditions=2), GPSConfig(**CFG))
    gps.iterate()
    return gps


@pytest.fixture
def saved(algo, tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, algo, META, [resume_event(0, {})])
    return path


def _refused(path, match):
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(f"{path}: ") and match in msg, msg
    return msg


def test_a_clean_checkpoint_round_trips_into_an_identical_algorithm(algo, tmp_path):
    st = algo.state_dict()
    save_checkpoint(tmp_path / "checkpoint.pt", algo, META, [resume_event(0, {})])
    ck = read_checkpoint(tmp_path)                          # a run folder names its checkpoint.pt
    assert ck.meta == META and ck.events[0]["event"] == "resume" and ck.path == tmp_path / "checkpoint.pt"
    raw = ck.path.read_bytes()
    assert raw[:8] == MAGIC and _HEAD.unpack(raw[:_HEAD.size])[1:] == (VERSION, len(raw) - HEADER_SIZE)
    fresh = MDGPS(PointMassAgent(n_conditions=2), GPSConfig(**CFG))
    fresh.load_state_dict(load_checkpoint(ck.path, META))
    b = fresh.state_dict()
    assert fresh.iteration == 1 and b["history"] == st["history"] and b["rng"] == st["rng"]
    assert all(torch.equal(st["policy"][k], b["policy"][k]) for k in st["policy"])
    for (K1, k1, c1), (K2, k2, c2) in zip(st["controllers"], b["controllers"]):
        assert np.array_equal(K1, K2) and np.array_equal(k1, k2) and np.array_equal(c1, c2)
    cost = fresh.iterate()["cost"]                         # and it continues as the in-memory state does
    ref = MDGPS(PointMassAgent(n_conditions=2), GPSConfig(**CFG))
    ref.load_state_dict(st)
    assert ref.iterate()["cost"] == cost


def test_one_flipped_bit_anywhere_is_refused_before_unpickling(saved, tmp_path):
    """Every byte of the header (magic, version, length, digest) and payload bytes at its start,
    middle, end and 24 places drawn at random: each one-bit flip is a one-line checksum refusal."""
    raw = saved.read_bytes()
    n = len(raw)
    rng = np.random.default_rng(7)
    positions = [*range(HEADER_SIZE), HEADER_SIZE + 1, (HEADER_SIZE + n) // 2, n - 1,
                 *rng.integers(HEADER_SIZE, n, 24)]
    bad = tmp_path / "damaged.pt"
    for pos in positions:
        data = bytearray(raw)
        data[pos] ^= 1 << int(rng.integers(8))
        bad.write_bytes(bytes(data))
        _refused(bad, "checksum mismatch: the file is damaged")


def test_truncated_extended_or_length_damaged_files_are_refused(saved, tmp_path):
    raw = saved.read_bytes()
    bad = tmp_path / "damaged.pt"
    for n in (0, 5, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 1, len(raw) // 2, len(raw) - 1):
        bad.write_bytes(raw[:n])
        _refused(bad, "checksum mismatch: the file is damaged (truncated")
    bad.write_bytes(raw + b"\0")
    _refused(bad, "the file is damaged (extended")
    length = bytearray(raw)
    length[_HEAD.size - 1] ^= 4                          # the payload intact, its recorded length not
    bad.write_bytes(bytes(length))
    _refused(bad, "the header's length field is damaged")


def test_older_checkpoints_and_foreign_files_are_refused(algo, tmp_path):
    old = tmp_path / "old.pt"
    torch.save({"format": "s2r-train/1", "meta": {}, "state": algo.state_dict()}, old)   # before checksums
    _refused(old, "an older checkpoint format without a checksum")
    for name, data in (("text.pt", b"garbage text, not a checkpoint"), ("png.pt", b"\x89PNG\r\n\x1a\n" + bytes(64))):
        (tmp_path / name).write_bytes(data)
        _refused(tmp_path / name, "not an s2r training checkpoint")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        read_checkpoint(tmp_path / "empty_run")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ["S2R_TEST_MARKER"],))


def test_a_valid_digest_does_not_let_a_checkpoint_run_code(tmp_path, monkeypatch):
    """The digest proves integrity, not origin: the payload is still loaded with weights_only, so a
    crafted file with a correct digest is refused and its pickle does not run."""
    marker = tmp_path / "ran"
    monkeypatch.setenv("S2R_TEST_MARKER", str(marker))
    buf = io.BytesIO()
    torch.save({"format": "s2r-train/2", "meta": {}, "events": [], "state": _RunsCode()}, buf)
    payload = buf.getvalue()
    head = _HEAD.pack(MAGIC, VERSION, len(payload))
    (tmp_path / "crafted.pt").write_bytes(head + _digest(head, payload) + payload)
    assert "system, which a weights-only load refuses" in _refused(tmp_path / "crafted.pt",
                                                                   "not a loadable checkpoint (it names GLOBAL ")
    assert not marker.exists()


def test_changed_parameters_are_refused_by_name_or_returned_where_allowed(saved):
    ck = read_checkpoint(saved)
    changed = {**META, "samples": 3, "eval_episodes": 4, "config": {"kl_step": 1.0}}
    with pytest.raises(CheckpointError) as e:
        check_parameters(ck, changed, may_change=("iterations",))
    msg = str(e.value)
    assert "config.kl_step 0.5 -> 1.0, eval_episodes 2 -> 4, samples 5 -> 3 (" in msg and len(msg.splitlines()) == 1
    with pytest.raises(CheckpointError, match="algorithm 'gps' -> 'plato' [(]"):   # the rest follows from it
        check_parameters(ck, {**changed, "algorithm": "plato"})
    with pytest.raises(CheckpointError, match="policy.hidden [(]64, 64[)] -> [(]32, 32[)]"):
        check_parameters(ck, {**META, "policy": {"kind": "mlp", "hidden": (32, 32)}})
    with pytest.raises(CheckpointError, match="iterations 1 -> 3"):              # only where allowed
        check_parameters(ck, {**META, "iterations": 3})
    assert check_parameters(ck, {**META, "iterations": 3}, may_change=("iterations",)) == \
        {"iterations": {"from": 1, "to": 3}}
    assert check_parameters(ck, META) == {}


def test_history_lists_each_event_after_the_iteration_it_followed():
    its = [{"iteration": i, "cost": float(i)} for i in (1, 2, 3)]
    events = [resume_event(0, {}), resume_event(2, {"iterations": {"from": 2, "to": 4}}), resume_event(3, {})]
    rec = history_record(its, events)
    assert [h.get("iteration", "r%d" % h.get("after_iteration", -1)) for h in rec] == ["r0", 1, 2, "r2", 3, "r3"]
    assert rec[3]["changed"] == {"iterations": {"from": 2, "to": 4}} and "changed" not in rec[0]
