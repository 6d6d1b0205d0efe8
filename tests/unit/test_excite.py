"""`s2r excite`: the finite Fourier series excitation stays within the limits it is built for
(property test), a plan beyond a limit is refused before motion, and the command runs the plan
through the safety layer on the simulated robot and records it."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2r.core.bag_reader import read_bag
from s2r.excite import main as excite_main
from s2r.sim.excitation import (Excitation, ExcitationError, ExcitationLimits, check_excitation,
                                fourier_excitation)

ARM = [f"panda_joint{i}" for i in range(1, 8)]


@st.composite
def limits_and_start(draw):
    n = draw(st.integers(1, 4))
    f = st.floats
    lower = np.array([draw(f(-3.0, 0.5)) for _ in range(n)])
    width = np.array([draw(f(0.02, 4.0)) for _ in range(n)])
    upper = lower + width
    q0 = lower + width * np.array([draw(f(0.0, 1.0)) for _ in range(n)])
    vel = np.array([draw(f(0.05, 5.0)) for _ in range(n)])
    acc = np.array([draw(f(0.1, 20.0)) for _ in range(n)])
    period = draw(st.sampled_from([0.001, 0.002, 0.01, 0.02]))
    max_step = draw(f(0.001, 0.1))
    lim = ExcitationLimits(tuple(f"j{i}" for i in range(n)), lower, upper, vel, acc, period, max_step)
    return lim, q0


def _assert_within(plan: Excitation, lim: ExcitationLimits) -> None:
    """Independently of check_excitation: the set-points the robot gets, their differences, and
    the analytic trajectory on a fine grid, all within the limits."""
    T = lim.period
    t, q = plan.setpoints(T)
    q = np.vstack([plan.q0, q])
    eps = 1e-9
    assert (q >= lim.lower - eps).all() and (q <= lim.upper + eps).all()
    step = np.diff(q, axis=0)
    assert (np.abs(step) <= np.minimum(lim.max_step, lim.velocity * T) + eps).all()
    assert (np.abs(np.diff(q, 2, axis=0)) / T ** 2 <= lim.acceleration + eps).all()
    fine = np.linspace(0.0, plan.duration, 20 * len(t) + 1)
    qf, qdf, qddf = plan.evaluate(fine)
    assert (qf >= lim.lower - eps).all() and (qf <= lim.upper + eps).all()
    assert (np.abs(qdf) <= lim.velocity + eps).all()
    assert (np.abs(qddf) <= lim.acceleration + eps).all()
    # starts and ends at rest where the robot is
    q_end, qd_end, qdd_end = plan.evaluate([0.0, plan.duration])
    np.testing.assert_allclose(q_end, [plan.q0, plan.q0], atol=1e-9)
    np.testing.assert_allclose(qd_end, 0.0, atol=1e-9)
    np.testing.assert_allclose(qdd_end, 0.0, atol=1e-9)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limits_and_start(), st.floats(0.5, 30.0), st.integers(2, 8), st.floats(0.02, 1.0), st.floats(0.01, 2.0),
       st.floats(0.1, 0.95), st.integers(0, 2 ** 16))
def test_excitation_never_exceeds_limits(ls, duration, harmonics, base_hz, amplitude, fill, seed):
    lim, q0 = ls
    try:
        plan = fourier_excitation(lim, q0, duration, harmonics=harmonics, base_hz=base_hz, amplitude=amplitude,
                                  fill=fill, seed=seed)
    except ExcitationError as e:          # only a joint with no room at all is refused
        assert "no room to move" in str(e)
        assert np.any(np.isclose(q0, lim.lower) | np.isclose(q0, lim.upper))
        return
    _assert_within(plan, lim)
    assert np.abs(plan.evaluate(np.linspace(0, plan.duration, 200))[0] - q0).max() <= amplitude + 1e-9
    assert np.ptp(plan.setpoints(lim.period)[1], axis=0).max() > 0     # it does move


def _limits(n=2):
    return ExcitationLimits(("a", "b")[:n], np.full(n, -1.0), np.full(n, 1.0), np.full(n, 1.0), np.full(n, 2.0),
                            0.01, 0.05)


@pytest.mark.parametrize("what, room, vel, acc", [("position", 0.1, 10.0, 100.0), ("velocity", 10.0, 0.2, 100.0),
                                                   ("acceleration", 10.0, 10.0, 0.3)])
def test_plan_beyond_a_limit_is_refused_in_one_line(what, room, vel, acc):
    """A plan built for the limits passes; the same plan 1.5 times larger fails on the limit
    that bounded it, in one line naming the joint."""
    lim = ExcitationLimits(("a", "b"), np.full(2, -room), np.full(2, room), np.full(2, vel), np.full(2, acc),
                           0.01, 1.0)
    plan = fourier_excitation(lim, np.zeros(2), 10.0, amplitude=100.0, fill=1.0)
    check_excitation(plan, lim)
    factor = 1.5
    big = Excitation(plan.names, plan.q0, plan.a * factor, plan.b * factor, plan.omega, plan.duration)
    with pytest.raises(ExcitationError) as e:
        check_excitation(big, lim)
    msg = str(e.value)
    assert "\n" not in msg and "refused before any motion" in msg and msg.split(":")[0] in ("a", "b")
    assert what in msg


def test_bad_requests_are_refused():
    lim = _limits()
    with pytest.raises(ExcitationError, match="b is at \\+1.5000, outside its limits"):
        fourier_excitation(lim, np.array([0.0, 1.5]), 5.0)
    with pytest.raises(ExcitationError, match="duration"):
        fourier_excitation(lim, np.zeros(2), -1.0)
    with pytest.raises(ExcitationError, match="harmonics"):
        fourier_excitation(lim, np.zeros(2), 5.0, harmonics=1)
    with pytest.raises(ExcitationError, match="limits.velocity"):
        ExcitationLimits(("a",), [0.0], [1.0], [np.nan], [1.0], 0.01)
    plan = fourier_excitation(lim, np.zeros(2), 5.0)
    with pytest.raises(ExcitationError, match="the plan starts at"):
        check_excitation(plan, lim, start=np.array([0.0, 0.3]))


def test_excite_runs_the_plan_through_the_safety_layer_and_records_it(tmp_path, capsys):
    from s2r.core.config import load_config
    cfg = load_config("panda_sim")
    out = tmp_path / "run"
    rc = excite_main(["panda_sim", "--out", str(out), "--duration", "2", "--record", "--lockstep",
                      "--joints", *ARM])
    text = capsys.readouterr().out
    assert rc == 0, text
    # the plan is shown before the run
    assert text.index("panda_joint7  range") < text.index("running on sim")
    rec = read_bag(out / "recording")
    assert rec.complete and rec.topics["/joint_states"].count == rec.topics["/driver/commands"].count == 250
    js = rec.joint_states()
    spec = cfg.spec()
    assert (js["q"] >= spec.lower - 1e-6).all() and (js["q"] <= spec.upper + 1e-6).all()
    cmds = np.array([m.data for _, _, m in rec.messages(["/driver/commands"])])
    assert cmds.shape == (250, 9)
    assert np.ptp(cmds[:, :7], axis=0).min() > 0.01          # every arm joint was excited
    np.testing.assert_allclose(np.ptp(cmds[:, 7:], axis=0), 0.0)   # the fingers held
    # it ends where it started, at rest
    np.testing.assert_allclose(js["q"][-1, :7], js["q"][0, :7], atol=2e-3)
    assert (out / "excitation.yaml").exists()


def test_excite_refuses_before_anything_moves(tmp_path, capsys):
    out = tmp_path / "run"
    rc = excite_main(["panda_sim", "--out", str(out), "--record", "--lockstep", "--amplitude", "-1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("excitation refused: amplitude") and err.count("\n") == 1
    assert not (out / "recording").exists()


def test_a_joint_a_rounding_away_from_its_limit_has_no_room():
    """Hypothesis found it: q0 = 0.9999999999999999 under an upper limit of 1 made a plan that
    moved the joint by nothing; it is refused as a joint at its limit is."""
    lim = ExcitationLimits(("j0",), np.array([0.0]), np.array([1.0]), np.array([1.0]), np.array([1.0]), 0.001, 0.0625)
    with pytest.raises(ExcitationError, match="j0: no room to move"):
        fourier_excitation(lim, np.array([np.nextafter(1.0, 0.0)]), 1.0, harmonics=2, base_hz=1.0, fill=0.5, seed=5)
