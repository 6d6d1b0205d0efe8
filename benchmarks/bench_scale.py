"""Scale-out benchmark: 2 workers over 1 for the rollout-bound stages, on the process pool and on a
local Ray instance (s2r.core.executor), and whether every backend gives the same results.

    python benchmarks/bench_scale.py --json OUT [--quick]

Stages (each a batch of independent jobs, as in training; learning.agents):
- gps_sampling: one GPS iteration's sampling of ArmReach (conditions x samples rollouts under the
  initial local controllers, `collect_samples`);
- evaluation: 100 held-out ArmReach episodes of an MLP policy (`evaluate_held_out`);
- rendering: 2000 pose images for vision pretraining (`ArmReachAgent.pose_dataset`, 64 px).
Backends: the process pool and local Ray with 1 and 2 workers, each started and warmed up (every
worker has built its simulator) before a stage is timed; rates are jobs per wall-clock second.
Timing: `--rounds` rounds (default 3), each starting every backend and worker count afresh, in
alternating order (1 then 2 workers, then 2 then 1) so that a drift in the machine's speed weighs on
both; the short sampling stage is timed `SAMPLING_REPEATS` times per round. Each rate is from the
median time; every time is in the JSON (`runs.<backend>_<workers>_<stage>.all_seconds`).
Keys: <backend>_speedup_2_<stage> = rate(2 workers) / rate(1); pool_speedup_2 and ray_speedup_2:
the smallest over the stages (the issue's target: >= 1.7 on an idle 2-core machine);
ray_overhead_vs_pool: the largest over the stages of time(Ray, 2) / time(pool, 2) - 1 (target <=
0.15); identical_across_backends: 1 if in-process, pool and Ray runs (1 and 2 workers) returned
bit-identical samples, episodes and images, else 0. `cpu_count` and the 1-minute load average
before each run say how busy the machine was: on a shared machine the speedups mean little.
--quick: a few jobs per stage, one round (a smoke test of the benchmark, not for numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s2r.core.executor import InlineExecutor, PoolExecutor, RayExecutor  # noqa: E402
from s2r.learning.agents import ArmReachAgent, collect_samples, evaluate_held_out  # noqa: E402
from s2r.learning.gps_policy import PolicyRunner  # noqa: E402
from s2r.learning.policies import MLPPolicy  # noqa: E402

SAMPLING_REPEATS = 5        # the sampling stage (1-3 s) is timed this many times per round


def _stages(quick: bool):
    """{stage: (run(executor, n) -> list of arrays to compare, jobs timed)} and the agents to close."""
    state_agent = ArmReachAgent(n_conditions=4, T=30 if quick else None)
    image_agent = ArmReachAgent(images=True, image_size=64, n_conditions=1)
    controllers = state_agent.initial_controllers(state_agent.init_variance)
    policy = MLPPolicy(state_agent.obs_dim, state_agent.dU)
    runner = PolicyRunner(policy)

    def gps_sampling(ex, n):
        rng = np.random.default_rng(0)
        jobs = [(i % state_agent.n_conditions, rng.standard_normal((state_agent.T, state_agent.dU)),
                 int(rng.integers(2**31))) for i in range(n)]
        batch = collect_samples(state_agent, ex, jobs, controllers)
        batch.raise_failures("sample")
        return [a for s in batch.results for a in (s.X, s.U)]

    def evaluation(ex, n):
        return [s.X for s in evaluate_held_out(state_agent, ex, runner, range(n))]

    def rendering(ex, n):
        return list(image_agent.pose_dataset(n, np.random.default_rng(1), reach_fraction=0.3, executor=ex))

    sizes = {"gps_sampling": 4 if quick else 20, "evaluation": 4 if quick else 100, "rendering": 8 if quick else 2000}
    return {"gps_sampling": gps_sampling, "evaluation": evaluation, "rendering": rendering}, sizes, \
        [state_agent, image_agent]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--quick", action="store_true", help="a few jobs per stage, one round (a smoke test, not for numbers)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every backend and worker count (default 3)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {args.rounds}")
    stages, sizes, agents = _stages(args.quick)
    rounds = 1 if args.quick else args.rounds
    repeats = {name: SAMPLING_REPEATS if name == "gps_sampling" and not args.quick else 1 for name in stages}
    res: dict = {"cpu_count": os.cpu_count(), "jobs": sizes, "quick": bool(args.quick), "rounds": rounds,
                 "repeats_per_round": repeats, "runs": {}}
    reference = {name: run(InlineExecutor(), min(sizes[name], 4)) for name, run in stages.items()}
    identical = True
    times: dict = {}                  # "<backend>_<workers>_<stage>" -> [(seconds, load before)]
    import ray
    ray.init(num_cpus=2, include_dashboard=False, address="local", logging_level="ERROR")
    try:
        for r in range(rounds):
            for backend in ("pool", "ray"):
                for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
                    ex = PoolExecutor(workers) if backend == "pool" else RayExecutor(workers)
                    try:
                        for name, run in stages.items():
                            warm = run(ex, min(sizes[name], 4))          # every worker builds its simulator
                            identical &= _same(warm, reference[name])
                            for _ in range(repeats[name]):
                                load = os.getloadavg()[0]
                                t0 = time.perf_counter()
                                run(ex, sizes[name])
                                seconds = time.perf_counter() - t0
                                times.setdefault(f"{backend}_{workers}_{name}", []).append((seconds, load))
                                print(f"round {r + 1}/{rounds}  {backend:4s} {workers} worker(s)  {name:13s} "
                                      f"{sizes[name] / seconds:8.2f} jobs/s ({sizes[name]} in {seconds:.1f} s; "
                                      f"load {load:.1f})", flush=True)
                    finally:
                        ex.close()
    finally:
        ray.shutdown()
        for a in agents:
            a.close()
    for key, ts in times.items():
        seconds = float(np.median([t for t, _ in ts]))
        res["runs"][key] = {"seconds": seconds, "jobs_per_s": sizes[key.split("_", 2)[2]] / seconds,
                            "all_seconds": [t for t, _ in ts], "loadavg_1min_before": [load for _, load in ts]}
    runs = res["runs"]
    for backend in ("pool", "ray"):
        for name in stages:
            res[f"{backend}_speedup_2_{name}"] = runs[f"{backend}_2_{name}"]["jobs_per_s"] / \
                runs[f"{backend}_1_{name}"]["jobs_per_s"]
        res[f"{backend}_speedup_2"] = min(res[f"{backend}_speedup_2_{n}"] for n in stages)
    for name in stages:
        res[f"ray_overhead_vs_pool_{name}"] = runs[f"ray_2_{name}"]["seconds"] / runs[f"pool_2_{name}"]["seconds"] - 1
    res["ray_overhead_vs_pool"] = max(res[f"ray_overhead_vs_pool_{n}"] for n in stages)
    res["identical_across_backends"] = int(identical)
    print(f"speedup with 2 workers: pool {res['pool_speedup_2']:.2f}, Ray {res['ray_speedup_2']:.2f} (smallest over "
          f"the stages; target >= 1.7); Ray over the pool at 2 workers: {100 * res['ray_overhead_vs_pool']:+.0f} % "
          f"(target <= 15 %); identical across backends: {res['identical_across_backends']}"
          + ("  [--quick: not for numbers]" if args.quick else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
