"""`SafetyLayer.write` returns a `WriteResult`: for every refusal kind its status, counter key and
reason agree with the counters and nothing reaches the driver; for every accepted command `sent`
is exactly what the driver received and `clamped` marks exactly the joints the limits changed;
and the result still is today's string ("ok", "clamped", "rejected: <why>") for existing callers."""
import copy
import dataclasses
import json
import pickle

import numpy as np
import pytest

from s2r.drivers import (Command, CommandMode, MockDriver, RobotState, SafetyCounters, SafetyLayer,
                     WriteResult)
from s2r.drivers.mock_driver import Sent
from s2r.drivers.safety_types import CLAMP_CAUSES
from s2r.drivers.sim_driver import SimDriver
from s2r.core.config import load_config

CFG = load_config("panda_sim")
SPEC = CFG.spec()
N = SPEC.n_joints
COUNTERS = tuple(SafetyCounters().as_dict())


def layer(driver=None, **mock_kw):
    drv = driver if driver is not None else MockDriver(CFG, **mock_kw)
    s = SafetyLayer(drv, CFG.safety)
    s.connect()
    return drv, s


def write(s, drv, command):
    """s.write(command), with the counters it changed and whether the driver got a command."""
    before, n_sent = s.counters.as_dict(), len(drv.sent)
    r = s.write(command)
    after = s.counters.as_dict()
    bumped = {k for k in COUNTERS if after[k] != before[k] and k not in ("commands", "accepted")}
    return r, bumped, len(drv.sent) - n_sent


def requested(command) -> np.ndarray:
    """The command's values in the robot's joint order."""
    v = np.asarray(command.values, float)
    if command.names is None:
        return v
    return v[[list(command.names).index(n) for n in SPEC.joint_names]]


def check_accepted(r, bumped, n_new, drv, command):
    """An accepted result agrees with the counters, the driver and the request."""
    assert isinstance(r, WriteResult) and r.accepted and not r.refused and n_new == 1
    got = drv.sent[-1].values
    assert r.sent.shape == (N,) and np.array_equal(r.sent, got)          # what the driver received
    assert r.clamped.dtype == bool and np.array_equal(r.clamped, r.sent != requested(command))
    clamps = [k for k in CLAMP_CAUSES if k in bumped]
    assert bumped == set(clamps)                                          # no refusal, no fault counted
    if r.status == "ok":
        assert r == "ok" and r.ok and r.key is None and r.reason == "" and not r.clamped.any() and not clamps
    else:
        assert r.status == "clamped" and r == "clamped" and not r.ok and r.clamped.any()
        assert r.key == clamps[0] and r.reason == ", ".join(CLAMP_CAUSES[k] for k in clamps)
    for a in (r.sent, r.clamped):
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a[0] = a[0]


def check_refused(r, bumped, n_new, key):
    assert isinstance(r, WriteResult) and r.refused and not r.ok and not r.accepted
    assert r.status == "rejected" and r.key == key and n_new == 0
    assert r.sent is None and r.clamped is None
    assert key in bumped and not {k for k in bumped if k.startswith(("rejected_", "clamped_", "braked"))} - {key}
    assert r.reason and "\n" not in r.reason and len(r.reason) < 300
    assert r == f"rejected: {r.reason}" and r.startswith("rejected: ")


class Whipped(MockDriver):
    """The mock, measured moving joint 0 toward its upper limit at full speed (a neighbour's whip)."""

    whip = 0.0

    def read(self):
        st = super().read()
        qd = st.qd.copy()
        qd[0] += self.whip
        return RobotState(st.stamp, st.q, qd, st.effort, st.sensors)


def _q(s):
    """The measured position: a command the limits leave unchanged."""
    return s.read().q


REFUSALS = {
    # kind: (setup(drv, s) -> command, counter key, words of the reason)
    "malformed": (lambda drv, s: None, "rejected_malformed", "not a Command"),
    "malformed_stamp": (lambda drv, s: Command.position(_q(s), stamp="soon"), "rejected_malformed",
                        "not a time"),
    "shape": (lambda drv, s: Command.position(np.zeros(3)), "rejected_shape", f"expected {N} values"),
    "names": (lambda drv, s: Command.position(_q(s), names=[f"j{k}" for k in range(N)]),
              "rejected_names", "do not match"),
    "nonfinite": (lambda drv, s: Command.position(np.r_[np.nan, _q(s)[1:]]), "rejected_nonfinite",
                  "NaN"),
    "stale": (lambda drv, s: Command.position(_q(s), stamp=s.clock() - 1.0), "rejected_stale", "old"),
    "mode": (lambda drv, s: Command.trusted("torque", _q(s)), "rejected_mode", "not supported"),
    "estop": (lambda drv, s: (s.estop(), Command.position(_q(s)))[1], "rejected_estop", "estop"),
    "disabled": (lambda drv, s: (s.enable(False), Command.position(_q(s)))[1], "rejected_disabled",
                 "disabled"),
    "fault": (lambda drv, s: (drv.unplug(), s.hold(), Command.position(np.zeros(N)))[2], "rejected_fault",
              "robot is fault"),
    "driver_fault": (lambda drv, s: (drv.inject(bus_error_every=1, bus_error_on=("write",)),
                                     Command.position(_q(s)))[1], "driver_faults", "driver fault: injected"),
}


@pytest.mark.parametrize("kind", REFUSALS)
def test_each_refusal_names_its_counter_and_reason_and_sends_nothing(kind):
    setup, key, words = REFUSALS[kind]
    drv, s = layer()
    s.write(Command.position(s.read().q))                  # streaming: a refusal must stop that
    cmd = setup(drv, s)
    r, bumped, n_new = write(s, drv, cmd)
    check_refused(r, bumped, n_new, key)
    assert words in r.reason, r


def test_unsupported_mode_and_speed_stop_refusals():
    # a real mode the robot does not offer
    spec = dataclasses.replace(SPEC, modes=frozenset({CommandMode.POSITION}))
    drv, s = layer(MockDriver(spec))
    r, bumped, n_new = write(s, drv, Command.velocity(np.zeros(N)))
    check_refused(r, bumped, n_new, "rejected_mode")
    assert "velocity not supported" in r.reason
    # measured moving toward a limit faster than it can stop: refused and held, whatever the command
    drv, s = layer(Whipped(CFG))
    drv.whip = 1.5 * SPEC.max_velocity[0]
    r, bumped, n_new = write(s, drv, Command.position(drv.true_state().q))
    check_refused(r, bumped, n_new, "rejected_speed")
    assert r.reason.startswith(SPEC.joint_names[0]) and "faster than it can stop" in r.reason
    assert s.state == "holding"


def test_ok_sends_the_command_unchanged_with_an_all_false_mask():
    drv, s = layer()
    q = s.read().q
    cmd = Command.position(q)
    r, bumped, n_new = write(s, drv, cmd)
    check_accepted(r, bumped, n_new, drv, cmd)
    assert r.status == "ok" and np.array_equal(r.sent, q)


def test_position_clamps_mark_exactly_the_joints_changed():
    q0 = 0.5 * (SPEC.lower + SPEC.upper)
    q0[2] = SPEC.upper[2] - CFG.safety.limit_margin - 0.05        # joint 2 near its soft limit
    drv, s = layer(q0=q0)
    q = s.read().q
    # a far jump on joints 0 and 3: the step clamp takes it gradually; the others stay exact
    goal = q.copy()
    goal[[0, 3]] += [0.5, -0.4]
    cmd = Command.position(goal)
    r, bumped, n_new = write(s, drv, cmd)
    check_accepted(r, bumped, n_new, drv, cmd)
    assert r.key == "clamped_step" and r.reason == "position step"
    assert np.flatnonzero(r.clamped).tolist() == [0, 3]
    # beyond joint 2's upper limit: clamped to it; once there, only the position limit applies
    beyond = q.copy()
    beyond[2] = SPEC.upper[2] + 0.5
    lo_s, hi_s = s.soft_limits
    for _ in range(200):
        cmd = Command.position(beyond)
        r, bumped, n_new = write(s, drv, cmd)
        check_accepted(r, bumped, n_new, drv, cmd)
        if r.key == "clamped_position" and "position step" not in r.reason:
            break
    assert r.reason == "position limit" and np.flatnonzero(r.clamped).tolist() == [2]
    assert r.sent[2] == hi_s[2] and drv.true_state().q[2] <= SPEC.upper[2]
    # both at once, with the joints named in reverse order: the mask is in the robot's order
    rev = tuple(reversed(SPEC.joint_names))
    both = beyond.copy()
    both[0] = q[0] - 0.5
    cmd = Command.position(both[::-1], names=rev)
    r, bumped, n_new = write(s, drv, cmd)
    check_accepted(r, bumped, n_new, drv, cmd)
    assert r.key == "clamped_position" and r.reason == "position limit, position step"
    assert np.flatnonzero(r.clamped).tolist() == [0, 2]


def test_velocity_and_effort_clamps_mark_exactly_the_joints_changed():
    drv, s = layer()
    v = np.zeros(N)
    v[1] = 10 * SPEC.max_velocity[1]
    cmd = Command.velocity(v)
    r, bumped, n_new = write(s, drv, cmd)
    check_accepted(r, bumped, n_new, drv, cmd)
    assert r.key == "clamped_velocity" and np.flatnonzero(r.clamped).tolist() == [1]
    assert 0 < r.sent[1] < v[1]
    s.hold()
    tau = np.zeros(N)
    tau[4] = -5 * SPEC.max_effort[4]
    cmd = Command.effort(tau)
    r, bumped, n_new = write(s, drv, cmd)
    check_accepted(r, bumped, n_new, drv, cmd)
    assert r.key == "clamped_effort" and np.flatnonzero(r.clamped).tolist() == [4]
    assert r.reason.startswith("effort limit") and tau[4] < r.sent[4] < 0


def _stream(drv, s, n, seed):
    """Random commands in every mode (some far out of range, some reordered); each result checked
    against the counters, the driver and the request."""
    rng = np.random.default_rng(seed)
    names = list(SPEC.joint_names)
    lo, hi = SPEC.lower, SPEC.upper
    seen = set()
    for k in range(n):
        mode = list(CommandMode)[(k // 25) % 3]
        q = s.read().q
        if mode is CommandMode.POSITION:
            v = q + rng.choice([0.0, 0.002, 0.3]) * rng.standard_normal(N)
            if rng.random() < 0.2:
                v = rng.uniform(lo - 0.3, hi + 0.3)
        elif mode is CommandMode.VELOCITY:
            v = rng.choice([0.0, 0.05, 3.0]) * rng.standard_normal(N)
        else:
            v = rng.choice([0.0, 1.0, 200.0]) * rng.standard_normal(N)
        order = None
        if rng.random() < 0.3:
            order = [names[i] for i in rng.permutation(N)]
            v = v[[names.index(n) for n in order]]
        cmd = Command(mode, v, names=order)
        r, bumped, n_new = write(s, drv, cmd)
        seen.add(r.status)
        if r.refused:
            check_refused(r, bumped, n_new, r.key)
            s.enable()
        else:
            check_accepted(r, bumped, n_new, drv, cmd)
    return seen


def test_every_result_of_a_random_stream_agrees_with_counters_and_driver():
    drv, s = layer()
    assert {"ok", "clamped"} <= _stream(drv, s, 300, seed=1)


class RecordingSim(SimDriver):
    """The real (PyBullet) sim driver, recording what it received as the mock's `sent` does."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent = []

    def write(self, command):
        self.sent.append(Sent(command.mode, np.array(command.values, float), self.sim.state()[0].copy()))
        super().write(command)


def test_results_agree_with_what_the_sim_driver_received():
    drv, s = layer(RecordingSim(CFG, realtime=False))
    try:
        assert {"ok", "clamped"} <= _stream(drv, s, 150, seed=2)
    finally:
        s.disconnect()


def test_string_form_is_unchanged_for_existing_callers():
    drv, s = layer()
    q = s.read().q
    ok = s.write(Command.position(q))
    far = q.copy()
    far[0] += 1.0
    clamped = s.write(Command.position(far))
    bad = s.write(Command.position(np.zeros(2)))
    for r, text in ((ok, "ok"), (clamped, "clamped"), (bad, f"rejected: expected {N} values, got shape (2,)")):
        assert r == text and str(r) == text and type(str(r)) is str
        assert f"{r}" == text and "%s" % r == text and repr(r) == repr(text) and hash(r) == hash(text)
        assert json.dumps(r) == json.dumps(text) and r in {text} and r.startswith(text[:2])
    assert ok in ("ok", "clamped") and clamped in ("ok", "clamped") and bad.startswith("rejected")
    assert bad[len("rejected: "):] == bad.reason


def test_result_is_frozen_and_survives_pickle_and_copy():
    drv, s = layer()
    q = s.read().q
    far = q.copy()
    far[5] -= 1.0
    r = s.write(Command.position(far))
    assert r.status == "clamped"
    for name in ("status", "key", "reason", "sent", "clamped", "_f", "other"):
        with pytest.raises(AttributeError):
            setattr(r, name, None)
    with pytest.raises(AttributeError):
        del r.status
    for twin in (pickle.loads(pickle.dumps(r)), copy.copy(r), copy.deepcopy(r)):
        assert type(twin) is WriteResult and twin == r
        assert (twin.status, twin.key, twin.reason) == (r.status, r.key, r.reason)
        assert np.array_equal(twin.sent, r.sent) and np.array_equal(twin.clamped, r.clamped)
        assert not twin.sent.flags.writeable


def test_public_constructor_checks_its_fields():
    r = WriteResult("rejected", "command is 1 s old", "rejected_stale")
    assert r == "rejected: command is 1 s old" and r.refused and r.sent is None and r.clamped is None
    src = np.array([1.0, 2.0])
    r = WriteResult("clamped", "position limit", "clamped_position", src, [False, True])
    src[0] = 9.0                                  # the result keeps its own copy
    assert r == "clamped" and r.sent.tolist() == [1.0, 2.0] and r.clamped.tolist() == [False, True]
    assert WriteResult("ok", sent=[0.5]).clamped.tolist() == [False]
    for args, key in ((("fine",), "WriteResult.status"), (("ok",), "WriteResult.sent"),
                      (("ok", 3, None, [0.0]), "WriteResult.reason"),
                      (("ok", "", None, [0.0], [True, False]), "WriteResult.clamped")):
        with pytest.raises(ValueError, match=key):
            WriteResult(*args)
