"""Parallel rollouts: N worker processes, each with its own pybullet DIRECT client (its own env) and
its own seeds; the results are identical to a serial run with the same seeds.

    from s2r.sim.parallel import ParallelRollouts, rollout_serial
    from s2r.sim.scripted import scripted_factory
    with ParallelRollouts("s2r/ArmReach-v0", n_workers=2, env_kwargs={"randomization": "default"}) as pool:
        episodes = pool.run(scripted_factory, seeds=range(16), horizon=100)

Why serial == parallel: every episode is reset with its own seed, and a reset rebuilds the world
from nothing (`Simulation.reset_world`), so an episode does not depend on which worker ran it or
what that worker ran before. Each worker's seed stream is the list of episode seeds it is handed
(each episode's own seed seeds everything in it); results are returned in the order
of `seeds`.

`policy_factory(env) -> policy` must be picklable (a module-level function or class); it is called
once per episode in the worker, and `policy(obs) -> action`. Workers are started with the "spawn"
context (no fork of a process holding pybullet clients or threads), with numpy/BLAS/torch limited
to one thread each (the environment variables are set before the child imports anything), so N
workers use N cores and no more.

No serial bottleneck: each idle worker is handed the next episode (so a slow episode does not hold
up the others' share), and each episode comes back as one message with its arrays already stacked
(nothing is pickled per step). `last_worker_stats` has, per worker, the episodes it ran and their
CPU and wall seconds in the last `run`: CPU well below wall means the worker waited for a core (a
contended machine). The pool is s2r.core.executor's (a worker that dies has its episode run again:
`last_batch.reruns`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from s2r.core.executor import PoolExecutor


@dataclass
class Episode:
    seed: int
    observations: dict           # key -> (T+1, ...) array
    actions: np.ndarray          # (T, n_act)
    rewards: np.ndarray          # (T,)
    successes: np.ndarray        # (T,) bool, info["success"] after each step
    randomization: dict = field(default_factory=dict)   # the episode's sampled values after reset

    @property
    def success(self) -> bool:
        return bool(self.successes[-1]) if len(self.successes) else False

    @property
    def ret(self) -> float:
        return float(self.rewards.sum())


def make_env(env_id: str, env_kwargs: dict | None):
    import gymnasium as gym

    import s2r.sim.tasks  # noqa: F401  (registers the s2r/ ids)
    if env_id not in s2r.sim.tasks.TASKS:
        raise ValueError(f"unknown task {env_id!r} (known: {', '.join(s2r.sim.tasks.TASKS)})")
    return gym.make(env_id, **(env_kwargs or {})).unwrapped


def run_episode(env, policy_factory, seed: int, horizon: int) -> Episode:
    obs, info = env.reset(seed=int(seed))
    policy = policy_factory(env)
    keys = [k for k in obs if k != "image"] + (["image"] if "image" in obs else [])
    traj = {k: [obs[k]] for k in keys}
    acts, rews, succ = [], [], []
    randomization = info["randomization"]
    for _ in range(horizon):
        a = np.asarray(policy(obs), dtype=np.float64)
        obs, r, terminated, truncated, info = env.step(a)
        for k in keys:
            traj[k].append(obs[k])
        acts.append(a)
        rews.append(r)
        succ.append(info["success"])
        if terminated or truncated:
            break
    return Episode(int(seed), {k: np.asarray(v) for k, v in traj.items()}, np.asarray(acts),
                   np.asarray(rews), np.asarray(succ, bool), randomization)


def rollout_serial(env_id: str, policy_factory, seeds, horizon: int, env_kwargs: dict | None = None) -> list[Episode]:
    """The reference: all episodes in this process, one env."""
    env = make_env(env_id, env_kwargs)
    try:
        return [run_episode(env, policy_factory, s, horizon) for s in seeds]
    finally:
        env.close()


def _episode_job(env, shared, seed) -> Episode:
    policy_factory, horizon = shared
    return run_episode(env, policy_factory, seed, horizon)


class ParallelRollouts:
    """Episodes of one task on N worker processes (s2r.core.executor.PoolExecutor), each owning one
    env (one pybullet DIRECT client) built once."""

    def __init__(self, env_id: str, n_workers: int = 2, env_kwargs: dict | None = None,
                 start_method: str = "spawn"):
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        import s2r.sim.tasks
        if env_id not in s2r.sim.tasks.TASKS:
            raise ValueError(f"unknown task {env_id!r} (known: {', '.join(s2r.sim.tasks.TASKS)})")
        self.env_id, self.n_workers = env_id, n_workers
        self._context = (make_env, (env_id, env_kwargs))
        self._pool = PoolExecutor(n_workers, start_method=start_method, max_attempts=2)
        self.last_worker_stats: list[dict] = []
        self.last_batch = None

    def run(self, policy_factory, seeds, horizon: int) -> list[Episode]:
        """Episodes for `seeds`, returned in that order; each idle worker takes the next one.
        RuntimeError naming the seed when an episode raised or kept killing its workers."""
        seeds = [int(s) for s in seeds]
        batch = self._pool.run(_episode_job, seeds, keys=seeds, context=self._context,
                               shared=(policy_factory, horizon))
        self.last_batch = batch
        self.last_worker_stats = [{**w, "episodes": w["jobs"]} for w in batch.worker_stats]
        if batch.failures:
            f = batch.failures[0]
            raise RuntimeError(f"rollout worker failed in episode {f.index} (seed {f.key}): {f.error}")
        return batch.results

    def close(self) -> None:
        self._pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
