"""Parallel rollouts: N worker processes, each with its own pybullet DIRECT client (its own env) and
its own seeds; the results are identical to a serial run with the same seeds.

    from s2r.sim.parallel import ParallelRollouts, rollout_serial
    from s2r.sim.scripted import scripted_factory
    with ParallelRollouts("s2r/ArmReach-v0", n_workers=2, env_kwargs={"randomization": "default"}) as pool:
        episodes = pool.run(scripted_factory, seeds=range(16), horizon=100)

Why serial == parallel: every episode is reset with its own seed, and a reset rebuilds the world
from nothing (`Simulation.reset_world`), so an episode does not depend on which worker ran it or
what that worker ran before. Each worker's seed stream is the list of episode seeds it takes from
the job queue (each episode's own seed seeds everything in it); results are returned in the order
of `seeds`.

`policy_factory(env) -> policy` must be picklable (a module-level function or class); it is called
once per episode in the worker, and `policy(obs) -> action`. Workers are started with the "spawn"
context (no fork of a process holding pybullet clients or threads), with numpy/BLAS/torch limited
to one thread each (the environment variables are set before the child imports anything), so N
workers use N cores and no more.

No serial bottleneck: workers take episodes from one job queue as they become free (so a slow
episode does not hold up the others' share), and each episode comes back as one message with its
arrays already stacked (nothing is pickled per step). `last_worker_stats` has, per worker, the
episodes it ran and their CPU and wall seconds in the last `run`: CPU well below wall means the
worker waited for a core (a contended machine).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass, field

import numpy as np


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


# one thread per worker process for every numerical library that would otherwise start a pool
SINGLE_THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                      "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")}


def _worker(env_id, env_kwargs, jobs, outbox):
    try:
        env = make_env(env_id, env_kwargs)
    except Exception as e:   # report construction errors instead of dying silently
        outbox.put(("error", -1, f"{type(e).__name__}: {e}", None))
        return
    try:
        while True:
            job = jobs.get()
            if job is None:
                break
            index = job[1]
            try:
                policy_factory, index, seed, horizon = job
                cpu0, wall0 = time.process_time(), time.perf_counter()
                episode = run_episode(env, policy_factory, seed, horizon)
                stats = {"pid": os.getpid(), "cpu_s": time.process_time() - cpu0,
                         "wall_s": time.perf_counter() - wall0, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
                outbox.put(("ok", index, episode, stats))
            except Exception as e:
                outbox.put(("error", index, f"{type(e).__name__}: {e}", None))
    finally:
        env.close()


class ParallelRollouts:
    """A pool of worker processes, each owning one env (one pybullet DIRECT client)."""

    def __init__(self, env_id: str, n_workers: int = 2, env_kwargs: dict | None = None,
                 start_method: str = "spawn"):
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        import s2r.sim.tasks
        if env_id not in s2r.sim.tasks.TASKS:
            raise ValueError(f"unknown task {env_id!r} (known: {', '.join(s2r.sim.tasks.TASKS)})")
        ctx = mp.get_context(start_method)
        self.env_id, self.n_workers = env_id, n_workers
        self._jobs = ctx.Queue()
        self._outbox = ctx.Queue()
        self._procs = [ctx.Process(target=_worker, args=(env_id, env_kwargs, self._jobs, self._outbox), daemon=True)
                       for _ in range(n_workers)]
        self.last_worker_stats: list[dict] = []
        saved = {k: os.environ.get(k) for k in SINGLE_THREAD_ENV}
        os.environ.update(SINGLE_THREAD_ENV)       # inherited by the children at start
        try:
            for pr in self._procs:
                pr.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def run(self, policy_factory, seeds, horizon: int) -> list[Episode]:
        """Episodes for `seeds`, returned in that order; each idle worker takes the next one."""
        seeds = list(seeds)
        for i, s in enumerate(seeds):
            self._jobs.put((policy_factory, i, s, horizon))
        out: list = [None] * len(seeds)
        per_worker: dict = {}
        for _ in seeds:
            while True:
                try:
                    status, index, payload, stats = self._outbox.get(timeout=1.0)
                    break
                except queue.Empty:         # still working, unless a worker died without a word
                    dead = [pr for pr in self._procs if not pr.is_alive()]
                    if dead:
                        self.close()
                        raise RuntimeError(f"rollout worker (pid {dead[0].pid}) exited with code "
                                           f"{dead[0].exitcode} without a result (see its stderr)") from None
            if status != "ok":
                self.close()
                where = f"episode {index} (seed {seeds[index]})" if index >= 0 else "worker start-up"
                raise RuntimeError(f"rollout worker failed in {where}: {payload}")
            out[index] = payload
            w = per_worker.setdefault(stats["pid"], {"pid": stats["pid"], "episodes": 0, "cpu_s": 0.0, "wall_s": 0.0,
                                                     "omp_num_threads": stats["omp_num_threads"]})
            w["episodes"] += 1
            w["cpu_s"] += stats["cpu_s"]
            w["wall_s"] += stats["wall_s"]
        self.last_worker_stats = list(per_worker.values())
        return out

    def close(self) -> None:
        for _ in self._procs:
            try:
                self._jobs.put(None)
            except (ValueError, OSError):
                pass
        for pr in self._procs:
            pr.join(timeout=5)
            if pr.is_alive():
                pr.terminate()
        self._procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
