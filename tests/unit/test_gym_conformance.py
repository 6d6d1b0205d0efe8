"""Every registered s2r task is a conforming Gymnasium env: gymnasium's own env checker passes,
gymnasium.make_vec runs it (sync and async, the same numbers as a single env), and its
metadata["render_fps"] is its hardware config's control rate."""
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import s2r.sim.tasks
from s2r.core.config import resolve_config_path

TASK_IDS = list(s2r.sim.tasks.TASKS)


def _allowed(w) -> bool:
    """Joint velocities, object poses and the like have no finite bound: the checker's only note."""
    return "observation space m" in str(w.message) and "infinity" in str(w.message)


@pytest.mark.parametrize("task", TASK_IDS)
@pytest.mark.parametrize("image_obs", [False, True])
def test_every_task_passes_gymnasiums_env_checker(task, image_obs):
    env = gym.make(task, image_obs=image_obs)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped)            # reset/step/seeding determinism, spaces, render, close
        other = [str(w.message) for w in caught if not _allowed(w)]
        assert not other, other
    finally:
        env.close()


def _rollout(env, n_envs, steps=4):
    obs, _ = env.reset(seed=7)
    out = [obs]
    rng = np.random.default_rng(0)
    for _ in range(steps):
        a = rng.uniform(-1, 1, (n_envs, *env.single_action_space.shape))
        obs, rew, term, trunc, _ = env.step(a)
        out.append((obs, rew, term, trunc))
    return out


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("task", TASK_IDS)
def test_make_vec_sync_and_async_give_the_single_envs_numbers(task):
    """Env i of a vector env seeded s is the single env seeded s + i; the async one (pybullet
    DIRECT clients in worker processes) steps to the very same numbers as the sync one."""
    single = gym.make(task)
    try:
        want = [single.reset(seed=7 + i)[0] for i in range(2)]
        rate = single.unwrapped.cfg.control_rate_hz
    finally:
        single.close()
    runs = {}
    for mode in ("sync", "async"):
        venv = gym.make_vec(task, num_envs=2, vectorization_mode=mode)
        try:
            assert venv.metadata["render_fps"] == rate
            runs[mode] = _rollout(venv, 2)
        finally:
            venv.close()
        for i in range(2):
            _assert_same({k: v[i] for k, v in runs[mode][0].items()}, want[i])
        assert all(np.all(np.isfinite(r[1])) for r in runs[mode][1:])
    _assert_same(runs["sync"], runs["async"])


@pytest.mark.parametrize("task", TASK_IDS)
def test_render_fps_is_the_control_rate(task):
    env = gym.make(task)
    try:
        assert env.metadata["render_fps"] == env.unwrapped.cfg.control_rate_hz == 1 / env.unwrapped.control_dt
    finally:
        env.close()


def test_render_fps_follows_the_config_per_instance(tmp_path):
    """A config at 50 Hz gives 50 fps on its instance only: neither the class nor an env of
    another config sees it."""
    src = resolve_config_path("panda_sim")
    text = src.read_text()
    assert "control_rate_hz: 100\n" in text
    slow = tmp_path / "panda_50hz.yaml"
    slow.write_text(text.replace("control_rate_hz: 100\n", "control_rate_hz: 50\n").replace(
        "name: panda_sim", "name: panda_50hz"))
    a = gym.make("s2r/ArmReach-v0", config=str(slow))
    b = gym.make("s2r/ArmReach-v0")
    try:
        assert a.unwrapped.control_dt == pytest.approx(0.02)
        assert a.metadata["render_fps"] == 50 and b.metadata["render_fps"] == 100
        assert "render_fps" not in s2r.sim.tasks.TaskEnv.metadata
        assert a.metadata["render_modes"] == ["rgb_array"]
    finally:
        a.close()
        b.close()


def test_the_benchmarks_sb3_env_is_the_agents_task_and_stable_baselines3_trains_on_it():
    """bench_gps's stable-baselines3 row: its env passes the checker, an episode's return is minus
    the agent's own cost of the same episode (same seed, same actions), and SB3's PPO runs on it."""
    import importlib.util
    from pathlib import Path

    from stable_baselines3 import PPO

    from s2r.learning.agents import ArmReachAgent
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gps.py"
    spec = importlib.util.spec_from_file_location("bench_gps_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    agent = ArmReachAgent(T=30)
    try:
        env = bench._reach_gym_env(agent)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env, skip_render_check=True)     # it renders nothing
        assert not [str(w.message) for w in caught if not _allowed(w)]
        env.reset(seed=3)
        seed = env.episode_seed
        assert not agent.HELD_OUT_BASE <= seed < agent.HELD_OUT_BASE + agent.HELD_OUT_SEEDS
        rng = np.random.default_rng(1)
        actions = rng.uniform(-1, 1, (agent.T, agent.dU))
        rewards, done, t = [], False, 0
        while not done:
            _, r, done, trunc, _ = env.step(actions[t].astype(np.float32))
            rewards.append(r)
            t += 1
        assert t == agent.T and not trunc and env.rollouts == 1
        s = agent._run(seed, lambda t, x, o: actions[t].astype(np.float32).astype(float))
        want = agent.cost.evaluate(s.X, s.U)
        assert -sum(rewards) == pytest.approx(want.sum(), rel=1e-9)
        assert rewards[-1] == pytest.approx(-(want[-2] + want[-1]), rel=1e-9)   # the final cost on the last step
        model = PPO("MlpPolicy", env, n_steps=2 * agent.T, batch_size=agent.T, n_epochs=1, seed=0, device="cpu")
        model.learn(2 * agent.T)
        assert env.rollouts == 3 and model.num_timesteps == 2 * agent.T
    finally:
        agent.close()
