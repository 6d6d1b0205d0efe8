"""Guided policy search on the hand tasks, against the model-free baseline trained in the same run.

Tasks (16-DoF hand, hand_sim, position control at 100 Hz), each trained by its recipe (the one
`s2r train gps --task ...` runs; learning/experiments/, results in RESULTS.md there):

  hand_reach       s2r/HandReach-v0, the four fingertips to four targets (100 steps); success:
                   every fingertip within 1.5 cm at the end; recipe hand_reach (learning/hand_agent.py)
  grasp_lift       s2r/HandGraspLift-v0, grasp the cube and lift it 10 cm (200 steps); success: the
                   cube more than 8 cm up and within 3 cm of the target at the end; recipe
                   hand_grasp_lift (learning/hand_grasp_agent.py)

Protocol. GPS runs its recipe's iterations (new training conditions every iteration, as the recipe
says), its global policy evaluated after every iteration on 20 held-out starts (seeds 10000-10019;
these evaluation rollouts are not counted as training rollouts, for either method). "Iterations to
reach" is the first iteration whose 20-start success is at the task's target (TARGETS); the
rollouts to reach count the training rollouts up to it (all of them if never). The final policy
is then evaluated on FINAL_EVAL further held-out starts from seed FINAL_SEED (used for nothing
else), with a 95 % Wilson interval: `<task>_success`, `<task>_success_ci95`.

Baseline: PPO (learning/ppo.py) on the same agent class, the same policy input (the recipe's
obs_features) and the same cost (reward = -cost), PPO_CONDITIONS new conditions x 5 rollouts per
update; its mean policy evaluated on the same 20 held-out starts every `eval_every` updates, up to
BASELINE_FACTOR x GPS's rollouts. The comparison is at one performance level (20-start figures):
GPS's final success if the baseline reached it, else the baseline's best (issue #26): its best
success and, at that success, its smallest mean final distance (a baseline that never succeeds is
compared by how close it came). A baseline that never did better than its first evaluation has no
best to compare at: the level is then GPS's success and the baseline's whole budget a lower bound
(`<task>_rollouts_ratio_kind`: at_goal, at_baseline_best or lower_bound_at_goal).
`<task>_baseline_rollouts` are the baseline's rollouts to that level, `<task>_rollouts_ratio_vs_baseline`
those over GPS's rollouts to the same level (its first iteration there), and
`hand_rollouts_ratio_vs_baseline` the smaller of the tasks' ratios.

Policy inference: the trained MLP at batch 1 through learning.deploy (the exported .onnx, as
policy_node runs it), 2 threads, median of 200 calls: `<task>_inference_ms`.

    python benchmarks/bench_hand.py --json OUT [--quick] [--tasks hand_reach,grasp_lift] [--skip-baseline]

--quick: one GPS iteration on 4 conditions (dynamics prior of 2 clusters), 10 final held-out
starts, a PPO budget of 2 updates: a smoke run of the code paths, not a measurement.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):   # BLAS single-threaded (RESULTS.md)
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s2r.learning.experiment import build_experiment, load_experiment  # noqa: E402
from s2r.learning.gps import PolicyRunner  # noqa: E402
from s2r.learning.ppo import PPO, PPOConfig  # noqa: E402
from s2r.learning.registry import make_agent  # noqa: E402
from s2r.learning.train import wilson_interval  # noqa: E402

RECIPES = {"hand_reach": "hand_reach", "grasp_lift": "hand_grasp_lift"}
TARGETS = {"hand_reach": 0.9, "grasp_lift": 0.8}      # issue #26's targets
FINAL_SEED, FINAL_EVAL = 50_000, 100
BASELINE_FACTOR = 10
PPO_CONDITIONS = 4


def final_evaluation(agent, policy, n: int, first_seed: int = FINAL_SEED) -> dict:
    """The policy's mean on n held-out starts from `first_seed`: successes, Wilson interval, distances."""
    runner = PolicyRunner(policy)
    res = [agent._run(first_seed + i, lambda t, x, obs: runner(t, x, obs)) for i in range(n)]
    k = int(sum(r.success for r in res))
    return {"success": k / n, "successes": k, "episodes": n, "ci95": list(wilson_interval(k, n)),
            "final_distance": float(np.nanmean([r.final_distance for r in res])), "first_seed": first_seed}


def inference_ms(policy, meta: dict, scale, calls: int = 200) -> float:
    """Median ms of one batch-1 call of the exported ONNX policy, as policy_node loads it."""
    from s2r.learning.deploy import load_policy
    from s2r.learning.export import export_policies
    with tempfile.TemporaryDirectory() as tmp:
        path = export_policies(policy, Path(tmp) / "policy", meta, scale, formats=("onnx",))[0]
        module, _ = load_policy(path, threads=2)
        x = np.zeros((1, policy.obs_dim), np.float32)
        for _ in range(20):
            module(x)
        ts = []
        for _ in range(calls):
            t0 = time.perf_counter()
            module(x)
            ts.append(time.perf_counter() - t0)
    return 1000 * float(np.median(ts))


def run_gps(task: str, quick: bool, log) -> dict:
    # quick: 8 samples are too few for the recipes' 4-cluster dynamics prior (LQR-FLM then finds no
    # controller within the KL bound): 2 clusters
    overrides = ["conditions=4", "iterations=1", "eval_episodes=5", "policy_steps=300", "gps.max_clusters=2"] \
        if quick else []
    exp = load_experiment(RECIPES[task], overrides)
    agent, gps, _, _ = build_experiment(exp)
    t0, reached, rollouts_to = time.perf_counter(), None, None
    try:
        for _ in range(exp.iterations):
            s = gps.iterate()
            log(f"  {task} GPS it {s['iteration']}: cost {s['cost']:.3g}, held-out success {100 * s['success']:.0f}% "
                f"(distance {s['eval_distance']:.3f} m), {s['rollouts']} rollouts, {s['seconds']:.0f} s")
            if reached is None and s["success"] >= TARGETS[task]:
                reached = s["iteration"]
                rollouts_to = sum(h["rollouts"] for h in gps.history)
        seconds = time.perf_counter() - t0
        total = sum(h["rollouts"] for h in gps.history)
        n = 10 if quick else FINAL_EVAL
        ev = final_evaluation(agent, gps.policy, n)
        log(f"  {task}: final policy on {n} held-out starts from seed {FINAL_SEED}: {ev['successes']}/{n} "
            f"(95 % Wilson {100 * ev['ci95'][0]:.0f}-{100 * ev['ci95'][1]:.0f} %), "
            f"distance {ev['final_distance']:.3f} m")
        ms = inference_ms(gps.policy, agent.metadata(), agent.action_scale)
        return {"success": ev["success"], "success_ci95": ev["ci95"], "final_eval": ev,
                "iterations": reached, "iterations_run": exp.iterations, "rollouts": total,
                "rollouts_to_target": rollouts_to, "train_success_20": gps.history[-1]["success"],
                "history": gps.history, "seconds": seconds, "inference_ms": ms,
                "recipe": RECIPES[task], "overrides": overrides}
    finally:
        agent.close()


def run_ppo(task: str, budget: int, goal: float, log, eval_every: int, eval_episodes: int = 20) -> dict:
    """PPO on the recipe's agent and inputs (PPO_CONDITIONS x 5 rollouts per update) up to `budget`
    rollouts; rollouts at which its mean policy first reached `goal` on the 20 held-out starts."""
    exp = load_experiment(RECIPES[task])
    agent = make_agent(exp.task, n_conditions=PPO_CONDITIONS, obs_features=exp.obs_features or (),
                       state_features=exp.state_features or (), **dict(exp.agent))
    torch.set_num_threads(1)
    try:
        ppo = PPO(agent, PPOConfig(resample_conditions=True, hidden=(256, 256)))
        per_update = agent.n_conditions * ppo.cfg.samples_per_condition
        reached, history, t0 = None, [], time.perf_counter()
        while ppo.rollouts + per_update <= budget:
            s = ppo.iterate()
            if s["iteration"] % eval_every and ppo.rollouts + per_update <= budget:
                continue
            ev = ppo.evaluate(eval_episodes)
            history.append({"rollouts": ppo.rollouts, "success": ev["success_rate"],
                            "distance": ev["final_distance"], "return": s["return"]})
            log(f"  {task} PPO: {ppo.rollouts} rollouts, held-out success {100 * ev['success_rate']:.0f}% "
                f"(distance {ev['final_distance']:.3f} m), return {s['return']:.3g}")
            if ev["success_rate"] >= goal:
                reached = ppo.rollouts
                break
        best = max((h["success"] for h in history), default=0.0)
        return {"rollouts_to_success": reached, "rollouts_used": ppo.rollouts, "best_success": best,
                "goal": goal, "history": history, "seconds": time.perf_counter() - t0}
    finally:
        agent.close()


def rollouts_ratio(gps_history: list, baseline: dict, goal: float) -> tuple[float, int, str]:
    """(baseline rollouts / GPS rollouts, baseline rollouts, kind) at one held-out performance (20
    starts). GPS's rollouts are those up to its first iteration at least as good as the level (NaN
    if it never was); the level and the baseline's rollouts, by `kind`:

    - "at_goal": the baseline reached GPS's final success `goal`; the rollouts it took.
    - "at_baseline_best": it did not, but it improved: its best (highest success and, at that
      success, smallest mean final distance -- with no success at all, success alone cannot tell
      a trained policy from an untrained one); the rollouts at which it first had it.
    - "lower_bound_at_goal": it never did better than its first evaluation, so its best is where
      any untrained policy stands; the level is `goal`, and the baseline's whole budget a lower
      bound on what it would need."""
    hist = baseline["history"]
    best = max(h["success"] for h in hist)
    dist = min(h["distance"] for h in hist if h["success"] == best)
    first = hist[0]
    improved = best > first["success"] or (best == first["success"] and dist < first["distance"])
    if baseline["rollouts_to_success"] is not None or not improved:
        kind = "at_goal" if baseline["rollouts_to_success"] is not None else "lower_bound_at_goal"
        base = baseline["rollouts_to_success"] or baseline["rollouts_used"]

        def as_good(success, distance):
            return success >= goal
    else:
        kind = "at_baseline_best"
        base = next(h["rollouts"] for h in hist if h["success"] == best and h["distance"] == dist)

        def as_good(success, distance):
            return success > best or (success == best and distance <= dist)
    done = 0
    for h in gps_history:
        done += h["rollouts"]
        if as_good(h["success"], h["eval_distance"]):
            return base / done, base, kind
    return float("nan"), base, kind


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True, metavar="OUT")
    ap.add_argument("--quick", action="store_true", help="a smoke run of the code paths (not a measurement)")
    ap.add_argument("--tasks", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    ap.add_argument("--skip-baseline", action="store_true", help="GPS only (no PPO row)")
    args = ap.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in RECIPES]
    if bad or not tasks:
        ap.error(f"--tasks: unknown task {bad[0] if bad else '(none)'} (known: {', '.join(RECIPES)})")

    def log(msg):
        print(msg, flush=True)

    out: dict = {"quick": args.quick, "final_eval_first_seed": FINAL_SEED,
                 "final_eval_episodes": 10 if args.quick else FINAL_EVAL, "targets": TARGETS,
                 "baseline": None if args.skip_baseline else
                 f"PPO (learning/ppo.py), {BASELINE_FACTOR}x GPS's rollouts"}
    ratios = []
    for task in tasks:
        log(f"{task}: GPS ({RECIPES[task]})")
        g = run_gps(task, args.quick, log)
        out[f"{task}_success"] = g["success"]
        out[f"{task}_success_ci95"] = g["success_ci95"]
        out[f"{task}_iterations"] = g["iterations"]
        out[f"{task}_rollouts"] = g["rollouts"]
        out[f"{task}_inference_ms"] = g["inference_ms"]
        out[f"{task}_gps"] = g
        if args.skip_baseline:
            continue
        budget = (2 * PPO_CONDITIONS * 5) if args.quick else BASELINE_FACTOR * g["rollouts"]
        goal = g["train_success_20"]
        log(f"{task}: PPO baseline, budget {budget} rollouts, goal {100 * goal:.0f}% (GPS's final 20-start success)")
        b = run_ppo(task, budget, goal, log, eval_every=1 if args.quick else 5, eval_episodes=5 if args.quick else 20)
        ratio, base, kind = rollouts_ratio(g["history"], b, goal)
        ratios.append(ratio)
        out[f"{task}_baseline_rollouts"] = base
        out[f"{task}_rollouts_ratio_kind"] = kind
        out[f"{task}_baseline_reached"] = b["rollouts_to_success"] is not None
        out[f"{task}_baseline_best_success"] = b["best_success"]
        out[f"{task}_rollouts_ratio_vs_baseline"] = ratio
        out[f"{task}_baseline"] = b
    # the key names
    for task, key in (("hand_reach", "hand_reach"), ("grasp_lift", "grasp_lift")):
        if task in tasks:
            out[f"{key}_success"] = out[f"{task}_success"]
    if ratios:
        out["hand_rollouts_ratio_vs_baseline"] = min(ratios)
    Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    log(json.dumps({k: v for k, v in out.items() if not isinstance(v, dict)}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
