"""ADR inside GPS: pinned conditions run at a range's end, the global policy's samples there move the
ranges (wider where it succeeds, never narrower than the preset), the moved ranges reach the
workers' simulators, latency widens no further than the inputs hold actions in flight, and a
checkpoint keeps the ranges."""
import numpy as np
import pytest

from s2r.learning.agents import ArmReachAgent
from s2r.learning.cli import train_main
from s2r.learning.gps import MDGPS, GPSConfig
from s2r.learning.gps_checkpoint import load_gps_state_dict

PRESET = {"groups": {"dynamics": {"gain_scale": {"dist": "uniform", "low": 0.9, "high": 1.1},
                                  "link_mass_scale": {"dist": "uniform", "low": 0.8, "high": 1.2}},
                     "timing": {"action_latency": {"dist": "randint", "low": 0, "high": 1}}}}
HIST = ["prev_action@hist2", "cmd_offset", "setpoint_offset", "setpoint_step"]
FAST = dict(policy_steps=20, eval_episodes=1, samples_per_condition=2, resample_conditions=True,
            adr=("all",), adr_buffer=1, adr_boundary_prob=1.0)


class _Judged(ArmReachAgent):
    """ArmReach whose episodes all succeed (or all fail) by the task's own criterion, ADR's signal."""

    def __init__(self, verdict: bool, **kw):
        super().__init__(**kw)
        self.verdict = verdict
        self.ranges_seen = []            # gain_scale's range at each episode

    def _run(self, seed, act, noise_seed=None, pin=None):
        s = super()._run(seed, act, noise_seed, pin)
        s.info["task_success"] = self.verdict
        self.ranges_seen.append(self.env.randomizer.params["gain_scale"].bounds())
        return s


def _agent(verdict):
    return _Judged(verdict, randomization=PRESET, n_conditions=2, T=12, obs_features=HIST, state_features=HIST)


@pytest.fixture(scope="module")
def widened():
    """Three iterations where every sample succeeds."""
    agent = _agent(True)
    gps = MDGPS(agent, GPSConfig(**FAST, iterations=3))
    for _ in range(3):
        gps.iterate()
    yield gps
    agent.close()


def test_success_at_the_ends_widens_the_ranges_within_the_inputs_latency(widened):
    b = widened.adr.bounds()
    assert b["gain_scale"][0] < 0.9 - 1e-9 or b["gain_scale"][1] > 1.1 + 1e-9
    assert b["link_mass_scale"][0] < 0.8 - 1e-9 or b["link_mass_scale"][1] > 1.2 + 1e-9
    assert b["action_latency"][0] == 0 and b["action_latency"][1] <= 2          # hist2: two actions in flight
    assert widened.history[-1]["adr_bounds"]["gain_scale"] == list(b["gain_scale"])
    assert widened.history[0]["rollouts"] == widened.history[-1]["rollouts"] == 4   # no extra rollouts
    # the agent's simulator samples from the moved ranges
    assert widened.agent.env.randomizer.params["gain_scale"].bounds() == b["gain_scale"]


def test_the_held_out_evaluation_draws_from_the_presets_ranges(widened):
    """Held-out success compares across iterations: its starts come from the preset's ranges, and
    training goes on in the moved ones."""
    moved = widened.adr.bounds()["gain_scale"]
    assert moved != (0.9, 1.1)
    widened.agent.ranges_seen = []
    widened.evaluate(2, first=0)
    assert widened.agent.ranges_seen and all(b == (0.9, 1.1) for b in widened.agent.ranges_seen)
    assert widened.agent.env.randomizer.params["gain_scale"].bounds() == moved
    assert widened.agent.randomization_bounds["gain_scale"] == moved


def test_failure_at_the_ends_keeps_the_presets_ranges():
    agent = _agent(False)
    try:
        gps = MDGPS(agent, GPSConfig(**FAST, iterations=2))
        for _ in range(2):
            gps.iterate()
        assert gps.adr.bounds() == {"gain_scale": (0.9, 1.1), "link_mass_scale": (0.8, 1.2), "action_latency": (0, 1)}
    finally:
        agent.close()


def test_pins_and_moved_ranges_reach_a_worker_and_its_episodes(widened):
    a = widened.agent
    worker = _agent(True)
    try:
        a.set_pins([{"gain_scale": 1.3}, {}])
        worker.set_worker_state(a.worker_state())
        assert worker.env.randomizer.params["link_mass_scale"].bounds() == widened.adr.bounds()["link_mass_scale"]
        worker.rollout(0, lambda t, x, o: np.zeros(worker.dU), seed=1)
        assert np.all(worker.env.dr["gain_scale"] == 1.3)                          # the pinned end
        worker.rollout(1, lambda t, x, o: np.zeros(worker.dU), seed=1)
        lo, hi = widened.adr.bounds()["gain_scale"]
        assert np.all((lo <= worker.env.dr["gain_scale"]) & (worker.env.dr["gain_scale"] <= hi))
    finally:
        worker.close()


def test_a_checkpoint_keeps_the_moved_ranges(widened):
    agent = _agent(True)
    try:
        gps = MDGPS(agent, GPSConfig(**FAST, iterations=3))
        load_gps_state_dict(gps, widened.state_dict())
        assert gps.adr.bounds() == widened.adr.bounds()
        assert agent.env.randomizer.params["gain_scale"].bounds() == widened.adr.bounds()["gain_scale"]
    finally:
        agent.close()


@pytest.mark.parametrize("argv, message", [
    (["--adr", "all"], "adr: the task is not randomized"),
    (["--randomize", "default", "--adr", "link_mass_scal"], "adr: 'link_mass_scal' is not randomized by preset"),
    (["--randomize", "default", "--adr", "all", "--fixed-conditions"], "needs them drawn anew"),
    (["--randomize", "default", "--adr", "gravity_offset"], "gravity_offset: ADR needs a per-episode uniform"),
    (["plato", "--randomize", "default", "--adr", "all"], "--adr: automatic domain randomization runs in gps"),
])
def test_bad_adr_requests_are_one_line(argv, message, tmp_path, capsys):
    rc = train_main([argv.pop(0) if argv[0] == "plato" else "gps", "--task", "ArmReach", "--iterations", "1",
                     "--run-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1


def test_adr_judges_by_the_tasks_own_success_not_the_agents_training_radius():
    agent = ArmReachAgent(T=30, success_distance=10.0)           # the agent's radius: everything succeeds
    try:
        s = agent.rollout(0, lambda t, x, o: np.zeros(agent.dU), seed=0)   # holds still, far from the target
        assert s.success and s.final_distance > agent.env.success_threshold
        assert s.info["task_success"] is False
    finally:
        agent.close()


def test_arm_reach_held_out_success_is_the_tasks_own_unless_a_radius_is_given():
    """Training's held-out success is what `s2r eval` counts (the task's criterion), so a task that
    calls a still arm a success makes it one; a radius given to the agent overrides it."""
    agent = ArmReachAgent(T=30)
    try:
        hold = lambda t, x, o: np.zeros(agent.dU)      # noqa: E731  (far from the target)
        assert agent.success_distance is None and not agent.held_out(0, hold).success
        agent.env.success_threshold = 10.0             # the task's own criterion, loosened
        s = agent.held_out(0, hold)
        assert s.success and s.info["task_success"] and s.final_distance > 0.05
        agent.success_distance = 0.05
        assert not agent.held_out(0, hold).success
    finally:
        agent.close()
