"""`s2r train ...` (`train_main`) and `s2r eval POLICY ...` (`eval_main`).

    s2r train --experiment reach_randomized [iterations=5 gps.kl_step=0.25 agent.final_position_weight=100]
    s2r train --resume RUN [iterations=20]
    s2r train gps --task ArmReach [--images] [--randomize default] [--iterations 10] [--resume RUN]
    s2r train plato --task ArmReach [--images]
    s2r train gps --task ArmInsert --obs-features prev_action,cmd_offset --state-features prev_action@hist2
    s2r eval runs/<run>/policy.pt2 --task ArmReach --episodes 20 [--video out.mp4]     (or policy.onnx)
    s2r eval runs/<run>/policy.pt2 --task ArmReach --sweep backlash=0:0.05:6 [--randomize default] [--out F]
    s2r train --experiment reach_randomized --workers 2            (or --ray auto; s2r eval takes them too)

A finished `s2r train` exports its policy (learning/export.py) as policy.pt2 (torch.export) and
policy.onnx (ONNX: runs on onnxruntime without torch); `--export pt2,onnx,pt` picks the formats, `pt`
being TorchScript (deprecated in the torch we pin; for robots that still load it). `s2r eval` runs
any of them (learning.deploy.load_policy).

`--workers N` runs rollouts, held-out episodes and pose-image rendering on N local worker processes,
`--ray auto|local|ADDRESS` on Ray (s2r.core.executor); the results are the same as with one worker.

`--sweep PARAM=LOW:HIGH[:N]` (or `PARAM=log:LOW:HIGH[:N]`) evaluates the same held-out episodes at N
values of one randomization parameter and writes a robustness curve, F.csv and F.png (default:
sweep-PARAM next to the policy); learning/sweep.py documents the format.

Experiments, and the run parameters checkpoints record: learning/experiment.py.

Expected failures (bad arguments, a damaged checkpoint, a checkpoint from another task or
architecture, NaN in training) print one line and return a nonzero exit code; they never end in a
traceback.

args.json holds the command line of the run's latest start; history.json lists every resume.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from pathlib import Path

from .deploy import PolicyCallError      # numpy only: `s2r eval`'s one-line failure of a policy call
from .experiment import (EXPERIMENT_FILE, MAY_CHANGE_ON_RESUME, OPTIONS, TASK_EXPERIMENTS, build_experiment, keys,
                         load_experiment)

__all__ = ["train_main", "eval_main"]
log = logging.getLogger("s2r.train")



class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def _failure(command: str, e: Exception, stopped: tuple) -> int:
    """One line on stderr and the exit code of a command that failed: 2 for a usage error or bad
    input, 1 for a run that had to stop (`stopped` exception types)."""
    if isinstance(e, _UsageError):
        print(str(e), file=sys.stderr)
        return 2
    if isinstance(e, stopped):
        print(f"s2r {command}: stopped: {e}", file=sys.stderr)
        return 1
    print(f"s2r {command}: error: {e}", file=sys.stderr)
    return 2


def _train_parser() -> argparse.ArgumentParser:
    from s2r.core.schema.experiment import Experiment
    d = {n: f.default for n, f in Experiment.model_fields.items()}      # the defaults, written once there
    p = _Parser(prog="s2r train",
                description="Train a policy by guided policy search (gps) or PLATO (plato): `s2r train --experiment "
                            "NAME [KEY=VALUE ...]`, or `s2r train gps|plato [options]` (the task's experiment, "
                            "the options overriding it).")
    p.add_argument("rest", nargs="*", metavar="gps|plato|KEY=VALUE",
                   help="the algorithm, then overrides of the experiment's fields (iterations=3, gps.kl_step=0.5, "
                        "agent.final_position_weight=100; values are YAML)")
    p.add_argument("--experiment", default=None, metavar="NAME",
                   help="experiment file: a name (./experiments, $S2R_PATH/experiments, the packaged "
                        "learning/experiments) or a path")
    p.add_argument("--task", default=None, help=f"ArmReach (s2r/ArmReach-v0), ArmInsert (s2r/ArmInsert-v0, state only), "
                                                f"HandReach (s2r/HandReach-v0, state only), HandGraspLift (s2r/HandGraspLift-v0, "
                                                f"state only) or PointMass "
                                                f"(default: {d['task']})")
    p.add_argument("--config", default=None, metavar="CONFIG",
                   help="hardware config of the robot to train on (a name or path; default: the task's, panda_sim)")
    p.add_argument("--images", action="store_const", const=True, default=None,
                   help="visuomotor CNN on camera images + joint state")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"camera image size for --images (default: {d['image_size']})")
    p.add_argument("--randomize", default=None, help="domain randomization preset / YAML (default: none)")
    p.add_argument("--iterations", type=int, default=None, help=f"(default: {d['iterations']})")
    p.add_argument("--conditions", type=int, default=None,
                   help=f"training conditions (start states) (default: {d['conditions']})")
    p.add_argument("--samples", type=int, default=None,
                   help=f"GPS samples per condition and iteration (default: {d['samples']})")
    p.add_argument("--fixed-conditions", action="store_const", const=True, default=None,
                   help="gps: keep the same training conditions every iteration (default for tasks that can: "
                        "draw new ones from the task's start distribution each iteration)")
    p.add_argument("--eval-episodes", type=int, default=None,
                   help=f"held-out starts evaluated every iteration (default: {d['eval_episodes']})")
    p.add_argument("--policy-steps", type=int, default=None,
                   help="policy gradient steps per iteration (default: the experiment's, else the algorithm's)")
    p.add_argument("--seed", type=int, default=None, help=f"(default: {d['seed']})")
    p.add_argument("--obs-features", default=None, metavar="KEYS",
                   help="extra policy inputs, comma-separated feature keys of learning/features.py "
                        "(e.g. prev_action@hist2); neither option given: the integrated targets and the joint "
                        "limiter's set-point (cmd_offset, setpoint_offset, setpoint_step) and, with --randomize, "
                        "the actions in flight (learning.registry.default_inputs); 'none': no extras")
    p.add_argument("--state-features", default=None, metavar="KEYS",
                   help="extra entries of the local controllers' state (e.g. prev_action@hist2: the actions in "
                        "flight under an action latency of up to 2 steps); 'none': no extras")
    p.add_argument("--adr", default=None, metavar="PARAMS|all",
                   help="gps: automatic domain randomization (Akkaya et al. 2019) of --randomize's ranges: the named "
                        "parameters, comma-separated, or 'all' (its per-episode dynamics and timing ranges) widen where "
                        "the policy succeeds at their ends (gps.adr_step, adr_buffer, adr_boundary_prob)")
    p.add_argument("--run-dir", default=None, help="run folder (default: runs/<stamp>-train-<algo>-<task>)")
    p.add_argument("--export", default="pt2,onnx", metavar="FORMATS",
                   help="policy files written at the end, comma-separated: pt2 (torch.export), onnx (ONNX Runtime, "
                        "no torch needed), pt (TorchScript, deprecated by torch; for robots that still load it); "
                        "the first is the one printed (default: pt2,onnx)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (alone: with its experiment.yaml and any KEY=VALUE overrides)")
    _add_scale_options(p, "rollouts, held-out evaluation and pose-image rendering")
    return p


def _add_scale_options(p, what: str) -> None:
    """--workers / --ray / --device (s2r.core.executor; the results do not depend on them)."""
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help=f"worker processes for {what} (default: 1, in this process; with --ray: the cluster's "
                        f"CPUs); the results are the same for any N")
    p.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                   help="run them on Ray (pip install 's2r-robotics[ray]'): auto (the cluster at RAY_ADDRESS or a "
                        "running one, else a local instance), local (a new local instance) or a cluster's HOST:PORT")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"),
                   help="torch device of vision pretraining (default: cpu; auto: cuda when there is one); the "
                        "S-step and evaluation run on the CPU")


def _scale_setup(args, command: str):
    """The executor of --workers/--ray and the torch device of --device; bad values: _UsageError (one line)."""
    from s2r.core.executor import ExecutorError, make_executor
    if args.workers is not None and args.workers < 1:
        raise _UsageError(f"s2r {command}: --workers must be >= 1, got {args.workers}")
    device = resolve_device(args.device, command)
    try:
        return make_executor(args.workers, args.ray, progress=True,
                             preload=("torch", "s2r.sim.tasks", "s2r.learning.agents")), device
    except ExecutorError as e:
        raise _UsageError(f"s2r {command}: {e}") from None


def resolve_device(name: str, command: str = "train") -> str:
    """--device auto|cpu|cuda -> "cpu" or "cuda"; cuda without a CUDA GPU is a one-line _UsageError."""
    import torch
    if name not in ("auto", "cpu", "cuda"):
        raise _UsageError(f"s2r {command}: --device {name!r}: give auto, cpu or cuda")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise _UsageError(f"s2r {command}: --device cuda: no CUDA GPU here (torch.cuda.is_available() is False); "
                          f"use --device cpu or auto")
    return name


def _export_formats(text: str) -> list[str]:
    """`--export pt2,onnx,pt` -> the export formats (learning.export), checked before training."""
    from .export import FORMATS
    known = {suffix.lstrip("."): fmt for suffix, fmt in FORMATS.items()}
    names = [n.strip().lstrip(".") for n in str(text).split(",") if n.strip()]
    bad = [n for n in names if n not in known and n not in known.values()]
    if bad or not names:
        raise _UsageError(f"s2r train: --export {text!r}: unknown format {', '.join(bad) or '(none given)'} "
                          f"(known: {', '.join(known)})")
    return list(dict.fromkeys(known.get(n, n) for n in names))


def _show_value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _experiment(args):
    """The experiment of a command line, and the line saying which one and which overrides:
    --experiment NAME, else `gps|plato [options]` (the task's experiment, TASK_EXPERIMENTS), else
    --resume RUN's experiment.yaml; then the options, then the KEY=VALUE overrides."""
    from s2r.core.schema.experiment import ALGORITHMS, parse_overrides

    from .registry import task_id
    rest = list(args.rest)
    algorithm = rest.pop(0) if rest and rest[0] in ALGORITHMS else None
    for r in rest:
        if "=" not in r:
            raise _UsageError(f"s2r train: invalid choice {r!r}: give gps or plato, --experiment NAME, "
                              f"or KEY=VALUE overrides")
    options = [(field, getattr(args, opt), f"--{opt.replace('_', '-')} {getattr(args, opt)}")
               for opt, field in OPTIONS.items() if getattr(args, opt) not in (None, "")]
    options = [(k, ([] if v == "none" else keys(v)) if k in ("obs_features", "state_features", "gps.adr") else v, label)
               for k, v, label in options]
    if args.adr is not None and algorithm == "plato":
        raise _UsageError("s2r train: --adr: automatic domain randomization runs in gps training only")
    if algorithm:
        options.insert(0, ("algorithm", algorithm, algorithm))
    overrides = options + parse_overrides(rest)
    if args.experiment:
        name, data, file = args.experiment, None, None
    elif algorithm or options:
        name = TASK_EXPERIMENTS.get((algorithm or "gps", task_id(args.task or "ArmReach"), bool(args.images)))
        data, file = None, None
    elif args.resume:
        path = Path(args.resume) / EXPERIMENT_FILE
        if not path.is_file():
            raise _UsageError(f"s2r train: --resume {args.resume}: no {EXPERIMENT_FILE} there; give the experiment "
                              f"or the options the run was started with")
        name, data, file = str(path), None, None
    else:
        raise _UsageError("s2r train: give --experiment NAME [KEY=VALUE ...] or gps|plato [options] "
                          "(s2r train --help)")
    exp = load_experiment(name, overrides, data=data, file=file)
    shown = " ".join(f"{k}={_show_value(v)}" for k, v, _ in overrides)
    line = f"experiment: {name or 'the defaults'}" + (f"; overrides: {shown}" if shown else "; no overrides")
    return exp, line


def _build(args):
    """The agent, algorithm and run parameters of a `s2r train` command line (see `_experiment`)."""
    return build_experiment(_experiment(args)[0])[:3]


def train_main(argv=None) -> int:
    import numpy as np
    import yaml

    from s2r.core.executor import ExecutorError
    from s2r.core.logs import Progress
    from s2r.core.rundir import atomic_write_bytes, new_run_dir

    from .gps import TrainingError
    from .train import (CHECKPOINT, CheckpointError, check_parameters, plot_run, read_checkpoint, resume_event,
                        run_training)
    argv = list(sys.argv[1:] if argv is None else argv)
    agent = executor = None
    try:
        args = _train_parser().parse_intermixed_args(argv)
        formats = _export_formats(args.export)
        executor, device = _scale_setup(args, "train")
        events = []
        if args.resume:
            run_dir = Path(args.resume)
            if not (run_dir / CHECKPOINT).exists():
                raise CheckpointError(f"--resume {run_dir}: no {CHECKPOINT} there")
            ck = read_checkpoint(run_dir)        # verified before the (slow) agent is built
        exp, line = _experiment(args)
        print(line, flush=True)
        agent, algo, meta, resolved = build_experiment(exp)
        algo.executor, algo.device = executor, device
        record = yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True).encode()
        if args.resume:
            changes = check_parameters(ck, meta, MAY_CHANGE_ON_RESUME)
            done = int(ck.state.get("iteration", 0))
            if exp.iterations < done:
                given = f"--iterations {exp.iterations}" if args.iterations is not None else f"iterations={exp.iterations}"
                raise _UsageError(f"s2r train: {given}: the run in {run_dir} has already done {done}")
            algo.load_state_dict(ck.state)
            events = [*ck.events, resume_event(algo.iteration, changes)]
            changed = "".join(f", {k} {c['from']} -> {c['to']}" for k, c in changes.items())
            print(f"resuming {run_dir} after iteration {algo.iteration}{changed}", flush=True)
            atomic_write_bytes(run_dir / "args.json", json.dumps(vars(args), indent=1).encode())
            atomic_write_bytes(run_dir / EXPERIMENT_FILE, record)
        else:
            run_dir = Path(args.run_dir) if args.run_dir else \
                new_run_dir(f"train-{exp.algorithm}-{meta['task'].split('/')[-1]}")
            run_dir.mkdir(parents=True, exist_ok=True)
            if exp.images and exp.algorithm == "gps":
                print(f"vision pretraining first: {algo.cfg.pretrain_images} rendered images, "
                      f"{algo.cfg.pretrain_steps} steps (not rollouts; about 30 min on 2 CPU cores at 128x128, "
                      f"checkpointed when done)", flush=True)
            (run_dir / "args.json").write_text(json.dumps(vars(args), indent=1))
            atomic_write_bytes(run_dir / EXPERIMENT_FILE, record)
        progress = Progress(exp.iterations, f"{exp.algorithm} {meta['task']}")
        export = {**agent.metadata(), "algorithm": exp.algorithm, "trained_iterations": exp.iterations}
        history = run_training(algo, run_dir, exp.iterations, meta, progress, events=events)
        progress.close()
        from .export import export_policies
        choice = algo.exported_policy()
        it = choice.iteration
        exported = export_policies(choice.policy, run_dir / "policy", export | {"exported_iteration": it},
                                   agent.action_scale, formats)
        plot_run(run_dir, history, meta, exported=it)          # the export starred
        last = history[-1]
        also = f" (also {', '.join(p.name for p in exported[1:])})" if len(exported) > 1 else ""
        chosen = "" if it == len(history) else f"; exported iteration {it}'s policy " + (
            f"({100 * history[it - 1]['success']:.0f}%, significantly better than the last kept)"
            if choice.replaced_last else "(the last kept)")
        print(f"done: {len(history)} iterations, cost {last['cost']:.4g}, held-out success "
              f"{100 * last['success']:.0f}%{chosen}  ->  {exported[0]}{also}, {run_dir}/training.png")
        return 0
    except (_UsageError, CheckpointError, ValueError, TrainingError, FloatingPointError, np.linalg.LinAlgError) as e:
        return _failure("train", e, stopped=(TrainingError, FloatingPointError, np.linalg.LinAlgError))
    except ExecutorError as e:
        return _failure("train", e, stopped=(ExecutorError,))
    except KeyboardInterrupt:
        print("s2r train: interrupted; continue with --resume RUN_DIR", file=sys.stderr)
        return 130
    finally:
        if agent is not None:
            agent.close()
        if executor is not None:
            executor.close()


# ----------------------------------------------------------------------------- eval
def _eval_parser():
    p = _Parser(prog="s2r eval",
                description="Evaluate an exported policy (.pt2, .onnx or .pt) on held-out episodes.")
    p.add_argument("policy", help="policy exported by s2r train: policy.pt2 (torch.export), policy.onnx (ONNX Runtime) "
                                  "or policy.pt (TorchScript, with --export pt)")
    p.add_argument("--task", required=True)
    p.add_argument("--config", default=None, metavar="CONFIG",
                   help="hardware config of the robot (default: the one the policy was trained with)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--video", default=None, help="record the episodes to this MP4 file")
    p.add_argument("--randomize", default=None)
    p.add_argument("--first-seed", type=int, default=10_000, help="held-out episode seeds start here")
    p.add_argument("--success-distance", type=float, default=None,
                   help="success = final distance below this (m); default: the task's own success")
    p.add_argument("--sweep", default=None, metavar="PARAM=LOW:HIGH[:N]",
                   help="robustness curve: evaluate at N (default 5) values of one randomization parameter, "
                        "held constant on top of --randomize, on the same episodes; log:LOW:HIGH spaces them "
                        "geometrically; a per-joint/per-axis parameter takes the value in every component")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="--sweep: write PATH.csv and PATH.png (default: sweep-PARAM next to the policy)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the result (successes, Wilson interval, distances, seeds) to this JSON file")
    _add_scale_options(p, "the episodes (not with --video)")
    return p


class _EvalWorker:
    """What a worker of `s2r eval` builds once: the task's env, the exported policy (one thread) and
    its observation builder (`_eval_setup`)."""

    def __init__(self, policy: str, task: str, randomization, config, success_distance):
        from .deploy import load_policy
        module, meta = load_policy(Path(policy), threads=1)
        self.env, self.run = _eval_setup(module, meta, Path(policy), task, randomization, config, success_distance)

    def close(self):
        self.env.close()


def _eval_episode_job(worker, shared, seed) -> tuple[int, float]:
    """One held-out episode of `seed` on a worker: (success 0/1, final distance)."""
    successes, distances = worker.run(worker.env, [seed])
    return successes, distances[0]


def _eval_setup(module, meta, path, task, randomization, config, success_distance=None):
    """The env of `task` for the policy's metadata and `run(env, seeds, ...)` (_run_episodes bound to the
    policy); ValueError (one line) where policy and task do not fit."""
    import numpy as np

    import s2r.sim.tasks

    from .features import ObservationBuilder, sim_sources
    from .registry import scene_kwargs
    images = "image" in meta.get("inputs", [])
    size = meta["image_size"][0] if images else 64
    scene = scene_kwargs(meta) | ({"config": config} if config else {})
    env = s2r.sim.tasks.make(task, image_obs=images, image_size=size, randomization=randomization, **scene).unwrapped
    try:
        joints = [env.joint_names[i] for i in env.act_idx]
        if meta.get("joint_names") != joints:
            raise ValueError(f"{path} commands {meta.get('joint_names')}, {task} has {joints}")
        scale = np.asarray(env.action_scale, float)
        observed = meta.get("obs_joint_names") or joints
        if list(observed) != list(env.joint_names):
            raise ValueError(f"{path} observes joints {observed}, {task} has {list(env.joint_names)}")
        # the policy's state input, as in training and in policy_node (learning.features)
        inputs = ObservationBuilder(meta.get("obs_keys") or (), meta, n_joints=len(env.joint_names),
                                    n_actions=len(joints), where=f"{path}'s metadata")
        inputs.require(sim_sources(env), f"{task}'s simulation")
        inputs.check_policy(meta, f"on {task}")
    except Exception:
        env.close()
        raise
    T = int(meta.get("episode_steps") or (env.spec.max_episode_steps if env.spec else 0) or 100)
    return env, functools.partial(_run_episodes, module=module, inputs=inputs, images=images, scale=scale, T=T,
                                  success_distance=success_distance)


def _evaluate_seeds(executor, args, task, randomization, seeds, label, on_episode=None) -> tuple[int, list[float]]:
    """Episodes of `seeds` on the executor's workers (each builds its env and policy once): (successes,
    final distances in seed order). An episode that raised: FloatingPointError naming its seed."""
    batch = executor.run(_eval_episode_job, list(seeds), keys=list(seeds),
                         context=(_EvalWorker, (str(Path(args.policy).resolve()), task, randomization, args.config,
                                                args.success_distance)),
                         shared=None, label=label,
                         on_done=None if on_episode is None else lambda done, n: on_episode(done - 1))
    if batch.failures:
        f = batch.failures[0]
        raise FloatingPointError(f"episode of seed {f.key}: {f.error}")
    return int(sum(r[0] for r in batch.results)), [float(r[1]) for r in batch.results]


VIDEO_MAX_FPS = 30      # s2r eval --video: frame-rate cap (frames are rendered, which costs more than a step)


def _run_episodes(env, seeds, *, module, inputs, images: bool, scale, T: int, success_distance=None,
                  video=None, on_episode=None) -> tuple[int, list[float]]:
    """Run the exported policy (`module`: learning.deploy's callable, numpy in and out; its inputs
    built by `inputs`, an ObservationBuilder) for one episode
    of at most T steps per seed; (successes, final distances). `video`: an MP4 path to record every
    episode to (H.264, real time: every k-th control step rendered, k the smallest that keeps the
    video at <= 30 fps); `on_episode(i)` is called after episode i."""
    import math
    from fractions import Fraction

    import numpy as np

    from s2r.core.video import VideoWriter

    from .features import sim_context
    writer = None
    if video:
        rate = Fraction(env.metadata["render_fps"]).limit_denominator(1001)     # the control rate
        stride = max(1, math.ceil(rate / VIDEO_MAX_FPS))
        writer = VideoWriter(video, rate / stride)
    successes, distances = 0, []
    try:
        for i, seed in enumerate(seeds):
            obs, info = env.reset(seed=int(seed))
            inputs.reset()
            if writer is not None:
                writer.write(env.render())
            for t in range(T):
                s = np.asarray(inputs.observe(sim_context(obs, env)), dtype=np.float32)[None]
                out = module(obs["image"][None], s) if images else module(s)
                a = np.asarray(out, dtype=float)[0] / scale
                if a.shape != env.action_space.shape or not np.all(np.isfinite(a)):
                    raise FloatingPointError(f"episode {i}, step {t}: policy returned {a}")
                a = np.clip(a, -1, 1)
                inputs.record_action(a * scale)          # in the metadata's units, as the agents record it
                obs, _, terminated, truncated, info = env.step(a)
                if writer is not None and (t + 1) % stride == 0:     # render only the frames written
                    writer.write(env.render())
                if terminated or truncated:
                    break
            d = float(info.get("distance", np.nan))
            successes += d < success_distance if success_distance is not None else bool(info["success"])
            distances.append(d)
            if on_episode is not None:
                on_episode(i)
    finally:
        if writer is not None:
            writer.close()
    return int(successes), distances


def _sweep_paths(args, sweep) -> tuple[Path, Path]:
    """(CSV, PNG) paths: --out without its .csv/.png suffix, or sweep-PARAM next to the policy."""
    stem = Path(args.out) if args.out else Path(args.policy).parent / f"sweep-{sweep.name}"
    if stem.suffix.lower() in (".csv", ".png"):
        stem = stem.with_suffix("")
    if stem.is_dir():
        stem = stem / f"sweep-{sweep.name}"
    return stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".png")


def _run_sweep(args, sweep, task: str, evaluate) -> None:
    """Evaluate the policy at each value of the sweep on the same seeds (`evaluate(randomization, label,
    on_episode)` -> (successes, distances)); write the CSV after every value (a stopped sweep keeps
    what it measured) and the plot at the end."""
    import numpy as np

    from s2r.core.logs import Progress
    from s2r.core.rundir import atomic_write_bytes

    from .sweep import SweepPoint, plot_sweep, with_constant, write_csv
    from .train import wilson_interval
    csv_path, png_path = _sweep_paths(args, sweep)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    seeds = range(args.first_seed, args.first_seed + args.episodes)
    vals = ", ".join(f"{v:.4g}" for v in sweep.values)
    base = f" on top of --randomize {args.randomize}" if args.randomize else ""
    fewer = f" (whole numbers: {sweep.n} asked, {len(sweep.values)} distinct)" if len(sweep.values) < sweep.n else ""
    print(f"sweeping {sweep.name} over {len(sweep.values)} values{fewer}: {vals}{base}; {args.episodes} held-out "
          f"episodes each (seeds {seeds[0]}-{seeds[-1]})", flush=True)
    progress = Progress(len(sweep.values) * args.episodes, f"sweep {sweep.name}", stream=sys.stderr)
    points = []
    for k, v in enumerate(sweep.values):
        done = k * args.episodes
        successes, distances = evaluate(with_constant(args.randomize, sweep.name, v), "",
                                        on_episode=lambda i: progress.update(done + i + 1))
        lo, hi = wilson_interval(successes, args.episodes)
        points.append(SweepPoint(v, successes, tuple(distances), lo, hi))
        print(f"  [{k + 1}/{len(sweep.values)}] {sweep.name} = {v:.4g}: success {successes}/{args.episodes} = "
              f"{100 * successes / args.episodes:.0f}% (95% Wilson interval {100 * lo:.0f}-{100 * hi:.0f}%), "
              f"mean final distance {np.nanmean(distances) if np.isfinite(distances).any() else np.nan:.3f} m",
              flush=True)
        atomic_write_bytes(csv_path, write_csv(sweep, points))
    progress.close()
    title = (f"{Path(args.policy).parent.name}/{Path(args.policy).name} on {task}: {sweep.name} sweep\n"
             f"{args.episodes} held-out episodes per value (seeds {seeds[0]}-{seeds[-1]}), "
             + (f"other parameters from --randomize {args.randomize}" if args.randomize else "no other randomization"))
    atomic_write_bytes(png_path, plot_sweep(sweep, points, title, args.success_distance))
    print(f"wrote {csv_path} and {png_path}")


def eval_main(argv=None) -> int:
    import numpy as np

    from s2r.core.executor import ExecutorError
    argv = list(sys.argv[1:] if argv is None else argv)
    env = executor = None
    try:
        args = _eval_parser().parse_args(argv)
        if args.episodes < 1:
            raise _UsageError("s2r eval: --episodes must be >= 1")
        if args.out and not args.sweep:
            raise _UsageError("s2r eval: --out names the files of a --sweep; give --sweep too")
        if args.sweep and args.json:
            raise _UsageError("s2r eval: --json writes one evaluation; a --sweep writes its CSV (--out)")
        if args.sweep and args.video:
            raise _UsageError("s2r eval: --video records one evaluation; it does not combine with --sweep")
        from .sweep import check_applies, parse_sweep
        sweep = parse_sweep(args.sweep) if args.sweep is not None else None
        from .deploy import METADATA_FORMAT, load_policy
        from .registry import task_id
        from .train import wilson_interval
        path = Path(args.policy)
        module, meta = load_policy(path, threads=2)      # PolicyLoadError (a ValueError): one line
        if meta.get("format") != METADATA_FORMAT:
            raise ValueError(f"{path}: no s2r policy metadata (was it exported by s2r train?)")
        task = task_id(args.task)
        if meta.get("task") != task:
            raise ValueError(f"{path} was trained for {meta.get('task')!r}, not {task!r}")
        if not task.startswith("s2r/"):
            raise ValueError(f"s2r eval runs simulator tasks; {task} has no environment")
        if args.video and (args.workers or args.ray):
            raise _UsageError("s2r eval: --video records the episodes in this process; drop --workers and --ray")
        env, run = _eval_setup(module, meta, path, task, args.randomize, args.config, args.success_distance)
        if sweep is not None:
            check_applies(sweep, env.dims, task)
        seeds = range(args.first_seed, args.first_seed + args.episodes)
        if args.video:
            resolve_device(args.device, "eval")
            successes, distances = run(env, seeds, video=args.video)
        else:
            env.close()             # the workers (or this process's inline worker) build their own
            env = None
            executor, _ = _scale_setup(args, "eval")

            def evaluate(randomization, label, on_episode=None):
                return _evaluate_seeds(executor, args, task, randomization, seeds, label, on_episode)
            if sweep is not None:
                _run_sweep(args, sweep, task, evaluate)
                return 0
            successes, distances = evaluate(args.randomize, "evaluation")
        lo, hi = wilson_interval(successes, args.episodes)
        if args.json:
            Path(args.json).write_text(json.dumps({
                "policy": str(path), "task": task, "randomize": args.randomize, "episodes": args.episodes,
                "first_seed": args.first_seed, "successes": int(successes),
                "success_rate": successes / args.episodes, "ci95": [lo, hi],
                "mean_final_distance": float(np.nanmean(distances)),
                "final_distances": [float(d) for d in distances]}, indent=1))
        print(f"{task}: success {successes}/{args.episodes} = {100 * successes / args.episodes:.0f}% "
              f"(95% Wilson interval {100 * lo:.0f}-{100 * hi:.0f}%), mean final distance "
              f"{np.nanmean(distances):.3f} m" + (f"; video {args.video}" if args.video else ""))
        return 0
    except (_UsageError, ValueError, KeyError, FloatingPointError, OSError, PolicyCallError) as e:
        return _failure("eval", e, stopped=(FloatingPointError,))
    except ExecutorError as e:
        return _failure("eval", e, stopped=(ExecutorError,))
    except KeyboardInterrupt:
        print("s2r eval: interrupted (a --sweep's CSV holds the values finished so far)", file=sys.stderr)
        return 130
    finally:
        if env is not None:
            env.close()
        if executor is not None:
            executor.close()


if __name__ == "__main__":
    raise SystemExit(train_main())
