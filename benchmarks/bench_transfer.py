"""Sim-to-real transfer: policies trained with and without domain randomization, evaluated on held-out
"realities" they were never trained on (issue #20).

For each task row, two training runs with the same seed and the same rollout budget (`s2r train gps`,
10 iterations of 4 new conditions x 5 samples = 200 rollouts; the dr run twice that):

  nodr   the task's recipe, no randomization, default inputs
  dr     `--randomize default` (sim/presets/default.yaml: dynamics, 0-2 steps of latency, noise, and
         visuals for the image row) with the inputs a randomized task gets by default
         (learning.registry.default_inputs: the actions in flight `prev_action@hist2` besides the
         integrated targets and the limiter's set-point), and twice the nodr run's rollouts (the
         issue's budget): the reach row 20 draws per iteration x 2 samples with one dynamics prior
         over all of them (its recipe, learning/experiments/reach_randomized.yaml), the insert and
         image rows 8 draws x 5 samples

Every exported policy (policy.pt2, as a robot would run it) is then scored by `s2r eval` on
EPISODES held-out starts (seeds 50000...) in each evaluation setting:

  nominal      no randomization
  train        the training preset (`default`)
  <reality>    each file in benchmarks/realities/: ranges outside every training range
               (`inside_training` names any that is not; a test holds every file to it) plus
               effects training never models (backlash, friction, sensor delay, encoder offsets,
               torque saturation, camera miscalibration); never used for training or tuning
               (but by the --specialists reference below). The image row adds the held-out
               looks of realities/visual/ (visual ranges outside training's)

with the task's own success (ArmReach: TCP within 2 cm at the end; ArmInsert: the peg 1.5 cm down
the hole), its Wilson 95 % interval, the mean final distance, and the transfer ratio (success in the
setting over nominal success). With `--seeds N` each kind is trained N times (seeds S..S+N-1) and a
cell pools the N x EPISODES episodes (`per_seed` keeps each run's, `worst_seed_success` the worst):
on the realities one training seed can differ from the next by 20-40 points.

With `--specialists`, each reality also gets a reference: the dr recipe trained *in* that reality
(`--randomize` its file, the dr run's budget), scored on it. It says what this training reaches
when the reality's dynamics are known, so a dr cell reads against what is attainable; keys
<row>_specialist_reality_min_success and, per reality, the cells under `specialist`.

    python benchmarks/bench_transfer.py --json OUT [--rows reach,insert,image,grasp] [--episodes N]
                                        [--iterations N] [--seed S] [--seeds N] [--keep DIR] [--workers N]
                                        [--specialists]
                                        [--deploy-reality NAME] [--deploy-goals N] [--deploy-kinds dr,nodr]
    python benchmarks/bench_transfer.py --json OUT --deploy-only DIR    (the deploy stage on DIR's policies)

Deploy stage (after the lockstep cells; the reach row's policies, `--deploy-kinds`, default dr): the
same exported policy run by policy_node against driver_node, the simulated robot in real time under
a reality preset (`--deploy-reality`, default the first file in realities/), on the first
`--deploy-goals` held-out starts and goals, each goal on the robot of the task's draw for its seed
(benchmarks/deploy_eval.py), and `s2r eval` of it on the same episodes, the same draws. Keys: deploy_success, deploy_final_distance_m,
deploy_lockstep_success, deploy_minus_lockstep_points (percentage points), for reach dr.

Rows: reach (state ArmReach), insert (state ArmInsert), image (ArmReach from 128x128 images; the
vision pretraining makes it the long one, ~1 h per run on 2 cores; besides the arm realities it is
scored on benchmarks/realities/visual/: the nominal robot seen through textures, lights, camera
poses and distractors outside training's, its image_<kind>_heldout_visual_success), grasp (state
HandGraspLift on the 16-DoF hand, issue #26: its recipe's 6 iterations of 16 draws x 2 samples, the
dr run `--randomize hand` with 32 draws and the actions in flight among its inputs; its realities
are benchmarks/realities/hand/, success the task's own: the cube lifted and held at its target).
The JSON gets the per-cell figures and the summary keys reach_dr_nominal_success,
reach_dr_reality_min_success, reach_dr_reality_distance_m, reach_nodr_reality_min_success,
insert_dr_reality_min_success, image_dr_heldout_visual_success, grasp_dr_reality_min_success and
rollouts_ratio_dr_over_nodr. Written after every cell, so a stopped run keeps what it measured.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):   # the 2-core target machine
    os.environ.setdefault(_v, "2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s2r.learning.cli import eval_main, train_main  # noqa: E402
from s2r.learning.deploy import load_policy  # noqa: E402

from benchmarks.deploy_eval import deploy_eval  # noqa: E402

HERE = Path(__file__).resolve().parent
REALITIES = sorted((HERE / "realities").glob("*.yaml"))            # the arm rows'
HAND_REALITIES = sorted((HERE / "realities" / "hand").glob("*.yaml"))
# the image row's held-out looks (the nominal robot, visuals outside training's): its
# image_dr_heldout_visual_success; its dynamics realities are the arm rows'
VISUAL_REALITIES = sorted((HERE / "realities" / "visual").glob("*.yaml"))
TRAIN_PRESET = "default"
DR_INPUTS = ["--conditions", "8"]
# reach: as many draws as the budget allows, 2 samples each, the local dynamics fitted under one prior
# over every draw's transitions (as the hand's recipe does); learning/RESULTS.md has the comparison
REACH_DR_INPUTS = ["--conditions", "20", "--samples", "2", "gps.dynamics_prior=pooled"]
ROWS = {
    "reach": ["--task", "ArmReach"],
    "insert": ["--task", "ArmInsert"],
    "image": ["--task", "ArmReach", "--images"],
    "grasp": ["--task", "HandGraspLift"],
}
# the hand row: its own preset and realities; the dr run doubles its recipe's 16 draws (the actions in
# flight come with --randomize, learning.registry.default_inputs)
HAND_DR_INPUTS = ["--conditions", "32"]
ROW_SETUP = {"grasp": ("hand", HAND_DR_INPUTS, HAND_REALITIES), "reach": (TRAIN_PRESET, REACH_DR_INPUTS, REALITIES),
             "image": (TRAIN_PRESET, DR_INPUTS, REALITIES + VISUAL_REALITIES)}
FIRST_SEED = 50_000
ROW_ITERATIONS = {"grasp": 6}          # its recipe's; the other rows 10 (`--iterations` sets every row's)


def row_setup(row: str) -> tuple[str, list, list]:
    """(training preset, the dr run's extra arguments, reality files) of a row."""
    return ROW_SETUP.get(row, (TRAIN_PRESET, DR_INPUTS, REALITIES))


def dynamics_and_looks(row: str) -> tuple[list, list]:
    """A row's reality files split: those of the robot (dynamics, unmodeled effects; its
    reality_min keys and specialists) and the held-out looks of realities/visual/."""
    files = row_setup(row)[2]
    return [r for r in files if r not in VISUAL_REALITIES], [r for r in files if r in VISUAL_REALITIES]


def inside_training(reality, training, groups=("dynamics", "unmodeled")) -> list[str]:
    """The per-episode parameters of `groups` (presets or Randomizers) for which a reality could
    take a training draw's value: a range (uniform, loguniform, randint, constant) meeting the
    training range in every element (a vector's draw is a training one only if all of its elements
    can be), or a normal no wider than the training normal (a normal elsewhere counts as mean +- 2
    std). A held-out reality has none; a parameter training leaves out is outside; a bernoulli
    (a switch such as surface_texture) is no range and is not checked."""
    import numpy as np

    from s2r.sim.randomization import PER_EPISODE, Randomizer

    def interval(s):
        if s.dist == "normal":
            m, d = np.asarray(s.mean, float), 2 * np.asarray(s.std, float)
            return m - d, m + d
        lo, hi = (s.value, s.value) if s.dist == "constant" else s.bounds()
        return np.asarray(lo, float), np.asarray(hi, float)

    r, t = Randomizer.load(reality), Randomizer.load(training)
    out = []
    for name, spec in r.params.items():
        train = t.params.get(name)
        if train is None or spec.info.group not in groups or PER_EPISODE not in (spec.mode, train.mode) \
                or "bernoulli" in (spec.dist, train.dist):
            continue
        if spec.dist == train.dist == "normal":
            shared = np.max(np.asarray(spec.std, float)) <= np.max(np.asarray(train.std, float))
        else:
            a, b, c, d = np.broadcast_arrays(*interval(spec), *interval(train))
            shared = bool(np.all((a <= d) & (c <= b)))
        if shared:
            out.append(name)
    return out


def _quiet(fn, argv) -> tuple[int, str]:
    """Run a CLI entry point, its stdout captured (progress bars go to stderr)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = fn(argv)
    return rc, buf.getvalue()


def train(row: str, dr: bool, iterations: int, run_dir: Path, seed: int, log, workers: int = 1,
          reality: Path | None = None) -> tuple[Path, int]:
    """`s2r train` of a row's recipe: the exported policy.pt2 and the iteration it is from. `reality`
    (with dr): the dr recipe randomized by that reality's file instead of the training preset."""
    argv = ["gps", *ROWS[row], "--iterations", str(iterations), "--seed", str(seed), "--run-dir", str(run_dir),
            "--workers", str(workers)]
    if dr:
        preset, extra, _ = row_setup(row)
        argv += ["--randomize", str(reality or preset), *extra]
    t0 = time.perf_counter()
    rc, out = _quiet(train_main, argv)
    if rc != 0:
        raise RuntimeError(f"s2r train {' '.join(argv)} failed ({rc}): {out.strip()[-300:]}")
    exported = load_policy(run_dir / "policy.pt2", 1)[1].get("exported_iteration")
    what = f"specialist in {reality.stem}" if reality else "dr" if dr else "nodr"
    log(f"  trained {row} {what} in {time.perf_counter() - t0:.0f} s -> {run_dir / 'policy.pt2'} "
        f"(iteration {exported}'s policy, learning.best_policy)")
    return run_dir / "policy.pt2", exported


def evaluate(policy: Path, row: str, setting: str, episodes: int, workers: int = 1) -> dict:
    task = ROWS[row][1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        argv = [str(policy), "--task", task, "--episodes", str(episodes), "--first-seed", str(FIRST_SEED),
                "--json", str(out), "--workers", str(workers)]
        if setting != "nominal":
            preset, _, realities = row_setup(row)
            argv += ["--randomize", preset if setting == "train" else str(next(r for r in realities if r.stem == setting))]
        rc, text = _quiet(eval_main, argv)
        if rc != 0:
            raise RuntimeError(f"s2r eval {' '.join(argv)} failed ({rc}): {text.strip()[-300:]}")
        r = json.loads(out.read_text())
    return {"success": r["success_rate"], "ci95": r["ci95"], "distance_m": r["mean_final_distance"],
            "final_distances": r["final_distances"]}


def pool(cells: list, episodes: int) -> dict:
    """One setting's cells of several training seeds as one: their episodes pooled (success and its
    Wilson interval over all of them, mean distance), and the worst seed's success."""
    from s2r.learning.train import wilson_interval
    wins = sum(round(c["success"] * episodes) for c in cells)
    n = episodes * len(cells)
    return {"success": wins / n, "ci95": list(wilson_interval(wins, n)),
            "distance_m": sum(c["distance_m"] for c in cells) / len(cells),
            "worst_seed_success": min(c["success"] for c in cells), "seeds": len(cells)}


DEPLOY_ROWS = ("reach",)     # state policies of robot-only tasks: what the sim driver can play
DEPLOY_GOALS = 50            # the deploy stage's default: about 12 min in real time


def deploy(root: Path, kinds, reality: str, goals: int, log) -> dict:
    """The deploy stage on the reach policies in `root` (`reach_<kind>/policy.pt2`): per policy the
    deployment-path result and the lockstep `s2r eval` on the same episodes and preset."""
    out = {}
    preset = HERE / "realities" / f"{reality}.yaml"
    for kind in kinds:
        for row in DEPLOY_ROWS:
            policy = root / f"{row}_{kind}" / "policy.pt2"
            if not policy.exists():
                raise FileNotFoundError(f"{policy}: no such policy (train it, or give --keep/--deploy-only its folder)")
            log(f"  deploy {row} {kind} under {reality}, {goals} goals")
            lock = evaluate(policy, row, reality, goals)
            t0 = time.perf_counter()
            r = deploy_eval(policy, ROWS[row][1], range(FIRST_SEED, FIRST_SEED + goals), str(preset), log=log)
            out[f"{row}_{kind}"] = c = {
                "reality": reality, "goals": goals, "success": r["success_rate"],
                "final_distance_m": r["mean_final_distance"], "final_distances": r["final_distances"],
                "lockstep_success": lock["success"], "lockstep_distance_m": lock["distance_m"],
                "minus_lockstep_points": 100 * (r["success_rate"] - lock["success"]),
                # paired by episode: the goals only one of the two paths reached
                **discordant(r["final_distances"], lock["final_distances"], r["success_distance"]),
                "driver_restarts": r["driver_restarts"], "start_errors_rad": r["start_errors_rad"]}
            log(f"  deploy {row} {kind}: success {100 * c['success']:.0f}% (lockstep {100 * c['lockstep_success']:.0f}%, "
                f"{c['minus_lockstep_points']:+.0f} points; goals only deploy reached {c['only_deploy']}, only "
                f"lockstep {c['only_lockstep']}), distance {100 * c['final_distance_m']:.2f} cm "
                f"(lockstep {100 * c['lockstep_distance_m']:.2f} cm), {time.perf_counter() - t0:.0f} s")
    return out


def discordant(deploy_m, lockstep_m, threshold: float) -> dict:
    """The episodes the deploy path and the lockstep evaluation score differently (same seeds, in
    order): how many only one of them reached, and McNemar's exact two-sided p of that split (1:
    no evidence the paths differ)."""
    from scipy.stats import binomtest
    if len(deploy_m) != len(lockstep_m):
        raise ValueError(f"deploy has {len(deploy_m)} episodes, lockstep {len(lockstep_m)}")
    d = [x < threshold for x in deploy_m]
    k = [x < threshold for x in lockstep_m]
    only_d = sum(a and not b for a, b in zip(d, k))
    only_k = sum(b and not a for a, b in zip(d, k))
    p = binomtest(only_d, only_d + only_k).pvalue if only_d + only_k else 1.0
    return {"only_deploy": only_d, "only_lockstep": only_k, "mcnemar_p": float(p)}


def deploy_keys(cells: dict) -> dict:
    """The issue's deploy keys, from the reach dr policy's deploy cell."""
    c = cells.get("reach_dr")
    if c is None:
        return {}
    return {"deploy_success": c["success"], "deploy_final_distance_m": c["final_distance_m"],
            "deploy_lockstep_success": c["lockstep_success"], "deploy_minus_lockstep_points": c["minus_lockstep_points"]}


def summarize(res: dict) -> dict:
    """The summary keys of the issue from the per-cell results (absent rows give no keys)."""
    out = {}
    for row in ROWS:
        realities, looks = ([r.stem for r in files] for files in dynamics_and_looks(row))
        for kind in ("dr", "nodr"):
            cells = res.get(row, {}).get(kind, {}).get("eval", {})
            if "nominal" in cells:
                out[f"{row}_{kind}_nominal_success"] = cells["nominal"]["success"]
            got = [cells[r] for r in realities if r in cells]
            if got and len(got) == len(realities):
                worst = min(got, key=lambda c: c["success"])
                out[f"{row}_{kind}_reality_min_success"] = worst["success"]
                out[f"{row}_{kind}_reality_distance_m"] = max(c["distance_m"] for c in got)
            if looks and all(r in cells for r in looks):
                out[f"{row}_{kind}_heldout_visual_success"] = min(cells[r]["success"] for r in looks)
        specialists = res.get(row, {}).get("specialist", {})
        if specialists and all(r in specialists for r in realities):
            out[f"{row}_specialist_reality_min_success"] = min(specialists[r]["success"] for r in realities)
    ratios = [res[r]["dr"]["rollouts"] / res[r]["nodr"]["rollouts"] for r in res
              if "rollouts" in res[r].get("dr", {}) and "rollouts" in res[r].get("nodr", {})]
    if ratios:
        out["rollouts_ratio_dr_over_nodr"] = max(ratios)
    return out


def _save(out: dict, res: dict, json_path) -> None:
    """The summary keys from the cells so far, and the JSON written (a stopped run keeps them)."""
    out.update(summarize(res))
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=1))


def _cell_text(e: dict) -> str:
    """A cell's success, interval and distance, as the log prints it."""
    return (f"success {100 * e['success']:5.1f}% (CI {100 * e['ci95'][0]:.0f}-{100 * e['ci95'][1]:.0f} %), "
            f"distance {100 * e['distance_m']:.2f} cm")


def specialist(row: str, root: Path, seeds: list, args, res: dict, out: dict, log) -> None:
    """Each dynamics reality's specialist: the dr recipe trained in the reality (every seed), scored
    there; `res[row]["specialist"][reality]` pools the seeds' episodes as the other cells do."""
    cells = res[row]["specialist"] = {}
    iterations = args.iterations or ROW_ITERATIONS.get(row, 10)
    for reality in dynamics_and_looks(row)[0]:
        per_seed = []
        for seed in seeds:
            run = root / f"{row}_specialist_{reality.stem}_s{seed}"
            policy, _ = train(row, True, iterations, run, seed, log, args.workers, reality=reality)
            per_seed.append(e := evaluate(policy, row, reality.stem, args.episodes, args.workers))
            log(f"  {row:6s} specialist seed {seed} {reality.stem:12s} {_cell_text(e)}")
        cells[reality.stem] = pool(per_seed, args.episodes)
        _save(out, res, args.json)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results here (after every cell)")
    ap.add_argument("--rows", default="reach,insert", help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--episodes", type=int, default=100, help="held-out starts per evaluation setting")
    ap.add_argument("--iterations", type=int, default=None, help="GPS iterations of every row (default: 10, grasp 6)")
    ap.add_argument("--seed", type=int, default=0, help="training seed (the first of --seeds)")
    ap.add_argument("--seeds", type=int, default=1,
                    help="training runs per row and kind, seeds --seed, --seed+1, ...: each cell pools their "
                         "episodes (one seed is one draw of the training; on the realities they spread widely)")
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes of every training and evaluation (the same results, sooner)")
    ap.add_argument("--specialists", action="store_true",
                    help="also train the dr recipe in each reality and score it there: what is attainable")
    ap.add_argument("--keep", default=None, help="keep the training runs in this folder (default: a temporary one)")
    ap.add_argument("--deploy-reality", default=REALITIES[0].stem if REALITIES else None,
                    help="the reality preset of the deploy stage (default: the first in realities/)")
    # 50: near-threshold episodes make 20 goals swing 15 points between two runs (learning/RESULTS.md)
    ap.add_argument("--deploy-goals", type=int, default=DEPLOY_GOALS,
                    help=f"goals of the deploy stage (0: no deploy stage; default {DEPLOY_GOALS})")
    ap.add_argument("--deploy-kinds", default="dr", help="which reach policies to deploy: dr, nodr or dr,nodr")
    ap.add_argument("--deploy-only", default=None, metavar="DIR",
                    help="only the deploy stage, on the policies a --keep DIR run left there")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.deploy_kinds.split(",") if k.strip()]
    if args.deploy_goals < 0 or any(k not in ("dr", "nodr") for k in kinds) or \
            args.deploy_reality not in [r.stem for r in REALITIES]:
        print(f"error: --deploy-goals must be >= 0, --deploy-kinds dr and/or nodr, --deploy-reality one of "
              f"{', '.join(r.stem for r in REALITIES)}", file=sys.stderr)
        return 2
    log = lambda m: print(m, flush=True)  # noqa: E731
    if args.deploy_only:
        root = Path(args.deploy_only)
        missing = [str(root / f"{row}_{k}" / "policy.pt2") for k in kinds for row in DEPLOY_ROWS
                   if not (root / f"{row}_{k}" / "policy.pt2").exists()]
        if missing:
            print(f"error: --deploy-only {root}: no policy {missing[0]}", file=sys.stderr)
            return 2
        out = {"deploy": deploy(root, kinds, args.deploy_reality, args.deploy_goals or DEPLOY_GOALS, log)}
        out.update(deploy_keys(out["deploy"]))
        _save(out, {}, args.json)
        for k, v in deploy_keys(out["deploy"]).items():
            print(f"{k}: {v:.3f}")
        return 0
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad or args.episodes < 1 or args.seeds < 1 or args.workers < 1 or \
            (args.iterations is not None and args.iterations < 1):
        print(f"error: {'unknown row ' + repr(bad[0]) + ' (known: ' + ', '.join(ROWS) + ')' if bad else '--episodes, --seeds, --workers and --iterations must be >= 1'}",
              file=sys.stderr)
        return 2
    if not REALITIES:
        print(f"error: no reality presets in {HERE / 'realities'}", file=sys.stderr)
        return 2
    res: dict = {}
    seeds = list(range(args.seed, args.seed + args.seeds))
    out = {"train_preset": {row: row_setup(row)[0] for row in rows},
           "realities": {row: [r.stem for r in row_setup(row)[2]] for row in rows}, "episodes": args.episodes,
           "iterations": args.iterations, "seed": args.seed, "seeds": seeds, "rows": res}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        for row in rows:
            res[row] = {}
            settings = ["nominal", "train"] + out["realities"][row]
            for kind in ("nodr", "dr"):
                iterations = args.iterations or ROW_ITERATIONS.get(row, 10)
                cell = res[row][kind] = {"rollouts": 0, "eval": {}, "per_seed": {}}
                for seed in seeds:
                    # the first seed's run keeps the plain folder name (the deploy stage's policy)
                    run = root / (f"{row}_{kind}" if seed == seeds[0] else f"{row}_{kind}_s{seed}")
                    policy, exported = train(row, kind == "dr", iterations, run, seed, log, args.workers)
                    hist = json.loads((policy.parent / "history.json").read_text())
                    hist = hist["iterations"] if isinstance(hist, dict) else hist
                    cell["rollouts"] = int(sum(h.get("rollouts", 0) for h in hist))      # per run
                    cell.setdefault("exported_iteration", {})[str(seed)] = exported
                    mine = cell["per_seed"][str(seed)] = {}
                    for setting in settings:
                        mine[setting] = e = evaluate(policy, row, setting, args.episodes, args.workers)
                        log(f"  {row:6s} {kind:4s} seed {seed} {setting:12s} {_cell_text(e)}")
                        cell["eval"][setting] = pool([c[setting] for c in cell["per_seed"].values()], args.episodes)
                        nominal = cell["eval"]["nominal"]["success"]
                        for e in cell["eval"].values():
                            e["transfer_ratio"] = e["success"] / nominal if nominal else None
                        _save(out, res, args.json)
                for setting in settings:
                    e = cell["eval"][setting]
                    log(f"  {row:6s} {kind:4s} {setting:12s} success {100 * e['success']:5.1f}% "
                        f"(CI {100 * e['ci95'][0]:.0f}-{100 * e['ci95'][1]:.0f} %, {len(seeds)} seed(s), "
                        f"worst seed {100 * e['worst_seed_success']:.0f}%), distance {100 * e['distance_m']:.2f} cm"
                        + (f", transfer {e['transfer_ratio']:.2f}" if e["transfer_ratio"] is not None else ""))
            if args.specialists:
                specialist(row, root, seeds, args, res, out, log)
        if args.deploy_goals and "reach" in rows:
            out["deploy"] = deploy(root, kinds, args.deploy_reality, args.deploy_goals, log)
            out.update(deploy_keys(out["deploy"]))
            _save(out, res, args.json)
    for row, row_cells in res.items():
        settings = ["nominal", "train"] + out["realities"][row]
        print(f"\n{'row':7s} {'kind':5s} " + " ".join(f"{s:>14s}" for s in settings))
        for kind, cell in row_cells.items():
            if kind == "specialist":
                print(f"{row:7s} {'spec.':5s} " + " ".join(f"{'':>14s}" for _ in settings[:2]) + " " + " ".join(
                    f"{100 * cell[s]['success']:5.0f}% {100 * cell[s]['distance_m']:4.1f}cm" for s in settings[2:]))
                continue
            print(f"{row:7s} {kind:5s} " + " ".join(
                f"{100 * cell['eval'][s]['success']:5.0f}% {100 * cell['eval'][s]['distance_m']:4.1f}cm" for s in settings))
    for k, v in {**summarize(res), **deploy_keys(out.get("deploy", {}))}.items():
        print(f"{k}: {v:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
