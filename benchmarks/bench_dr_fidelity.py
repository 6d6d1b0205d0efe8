"""Issue #27 items 5-7 on randomized ArmReach, one fix at a time: what each is worth under the
`default` randomization preset (dynamics, latency 0-2 steps, action/joint noise, ...).

Protocol (as benchmarks/bench_gps.py's state run): s2r/ArmReach-v0, state MLP, MDGPS with 4 new
training conditions x 5 samples per iteration, 10 iterations (no early stop, so every row has the
same rollout budget: 200), then the final policy on 100 held-out starts (seeds 10100-10199, each with
its own randomization draw) under the same preset: success (TCP within 5 cm) with its Wilson 95 %
interval and the mean final distance. Rows:

  base            the code before items 5-7: every sample of a condition replays one noise sequence
  +noise          item 6: each sample of a condition its own per-step noise (the condition's draw kept)
  +features       item 5: prev_action in the local controllers' state and prev_action, cmd_offset
                  and their 2-step history in the policy's input (latency up to 2 steps)
  +replay         item 7: the S-step also regresses on the 3 previous iterations' samples
  all             5 + 6 + 7

    python benchmarks/bench_dr_fidelity.py --json OUT [--rows base,all] [--iterations N] [--final N]
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):   # the 2-core target machine
    os.environ.setdefault(_v, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s2r.learning.agents import ArmReachAgent  # noqa: E402
from s2r.learning.gps import MDGPS, GPSConfig  # noqa: E402
from s2r.learning.train import wilson_interval  # noqa: E402

PRESET = "default"
FINAL_EVAL_FIRST = 100
POLICY_FEATURES = ["prev_action@hist2", "cmd_offset"]
STATE_FEATURES = ["prev_action@hist2"]


class SharedNoiseAgent(ArmReachAgent):
    """The behaviour before item 6: every sample of a condition replays the condition's episode
    exactly, per-step noise included."""

    def rollout(self, condition, act, seed):
        return self._run(self.condition_seeds[condition], act)


ROWS = {
    "base": dict(shared_noise=True),
    "+noise": dict(),
    "+features": dict(shared_noise=True, features=True),
    "+replay": dict(shared_noise=True, replay=3),
    "all": dict(features=True, replay=3),
}


def run_row(name: str, iterations: int, final: int, seed: int, log) -> dict:
    spec = ROWS[name]
    torch.manual_seed(seed)
    kw = dict(randomization=PRESET, success_distance=0.05)    # this benchmark's success: within 5 cm
    if spec.get("features"):
        kw.update(obs_features=POLICY_FEATURES, state_features=STATE_FEATURES)
    agent = (SharedNoiseAgent if spec.get("shared_noise") else ArmReachAgent)(**kw)
    cfg = GPSConfig(iterations=iterations, eval_episodes=20, resample_conditions=True, seed=seed,
                    policy_replay=spec.get("replay", 0))
    gps = MDGPS(agent, cfg)
    t0 = time.perf_counter()
    for _ in range(iterations):
        s = gps.iterate()
        log(f"  {name} it {s['iteration']}: held-out success {100 * s['success']:.0f}% "
            f"(distance {s['eval_distance']:.3f} m) {s['seconds']:.0f} s")
    ev = gps.evaluate(final, first=FINAL_EVAL_FIRST)
    k = round(ev["success_rate"] * final)
    lo, hi = wilson_interval(k, final)
    log(f"  {name}: final {100 * ev['success_rate']:.0f}% (95 % CI {100 * lo:.0f}-{100 * hi:.0f} %) on {final} "
        f"held-out starts, distance {100 * ev['final_distance']:.2f} cm, {time.perf_counter() - t0:.0f} s")
    agent.close()
    return {"success_rate": ev["success_rate"], "ci95": [lo, hi], "final_distance_m": ev["final_distance"],
            "rollouts": sum(h["rollouts"] for h in gps.history), "history_success": [h["success"] for h in gps.history],
            "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--final", type=int, default=100, help="held-out starts for the final policy")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        print(f"error: unknown row {bad[0]!r} (known: {', '.join(ROWS)})", file=sys.stderr)
        return 2
    out = {"preset": PRESET, "iterations": args.iterations, "final_episodes": args.final, "rows": {}}
    for r in rows:
        out["rows"][r] = run_row(r, args.iterations, args.final, args.seed, lambda m: print(m, flush=True))
        if args.json:                      # written after every row: nothing lost if a later row dies
            Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"\n{'row':12s} {'success':>8s} {'95 % CI':>10s} {'distance':>9s}")
    for r, v in out["rows"].items():
        print(f"{r:12s} {100 * v['success_rate']:7.0f}% {100 * v['ci95'][0]:4.0f}-{100 * v['ci95'][1]:3.0f} % "
              f"{100 * v['final_distance_m']:7.2f} cm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
