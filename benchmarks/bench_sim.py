"""Sim benchmark: env stepping vs raw pybullet, rendering fps, parallel rollout scaling.

    python benchmarks/bench_sim.py --json OUT [--quick]

Stepping (`s2r/ArmPush-v0`: Panda, table, block; 9 joints under torque control at 1 kHz, 10
physics substeps per 100 Hz control step), all driven by the same action sequence:
- raw_steps_per_s: the reference, plain pybullet calls and numpy written inline on the env's own
  scene: per control step, the position target moves by the action, and per substep the set-point
  interpolates toward it with velocity feed-forward (as the sim driver and the env do), joint PD +
  gravity compensation by inverse dynamics, clamped, applied as torques; then an observation's
  reads (joint states, hand pose, block pose). This is benchmarks/bench_sim_driver.py's raw loop.
- simrobot_steps_per_s: the env's own physics path alone (SimRobot.set_target +
  Simulation.step), which separates the shared control code's cost from the task layer's.
- env_steps_per_s / env_dr_steps_per_s: env.step without / with the "default" randomization
  (dynamics, timing, noise and visuals; only per-step noise, jitter and latency cost per step),
  episode resets excluded. env_ratio = env / raw; env_dr_ratio = env_dr / raw_dr, raw_dr being the
  raw loop on the same randomized scene (seed 0's masses, friction, gravity, gains) making the
  same motion: under randomization the env's action noise, bias and latency change the joint
  targets (the bias offsets them, latency delays them) and period jitter changes the substeps per step, so raw_dr replays the joint
  targets and substep counts the randomized env produced for the same actions (recorded from an
  identical env beforehand) rather than integrating the actions itself. A randomized scene costs
  other physics than the nominal one, which is not the env's overhead: raw_dr_over_raw_ratio shows
  how much, and env_dr_over_raw_nominal_ratio the env with randomization against the nominal raw loop.
The variants alternate in chunks (so machine load hits all alike); the rates are medians over
chunks and the ratios medians of the per-round ratios of CPU-time rates (`stepping` says why;
the wall-clock ratios are reported too, as *_wall).
- render_fps_{64,128,240}: the env's camera with decimated meshes; *_stock: with the stock meshes.
- parallel_speedup_2: episodes/s with 2 worker processes over 1 (`s2r.sim.parallel`, same seeds, same
  results), both pools started and warmed up before timing, each measurement several seconds of
  work, alternating 1- and 2-worker runs; medians. Reported beside it: each worker's CPU seconds
  and the CPU/wall ratio of each run (about 2 for 2 workers on an idle 2-core machine; less means
  the workers waited for a core, i.e. the machine was busy), and the machine's load average.
  parallel_speedup_2 is the median over all rounds; parallel_speedup_2_uncontended the median over
  the rounds in which both pools had their cores (None if the machine was never free enough), and
  parallel_cpu_s_per_episode_{1,2} show whether running two workers costs any extra work.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import s2r.sim  # noqa: F401  (imports pybullet without its banner)
import pybullet as p

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402

import s2r.sim.tasks  # noqa: E402,F401
from s2r.sim.parallel import ParallelRollouts  # noqa: E402

ENV = "s2r/ArmPush-v0"


def action_sequence(n: int, n_act: int) -> np.ndarray:
    """Smooth actions that keep the arm moving (so the set-point interpolation is always active),
    about +-0.35 rad per joint, in free space: no contact with the table or the block, so every
    variant simulates the same motion and the same physics work."""
    k = np.arange(n)[:, None]
    return 0.15 * np.sin(2 * np.pi * k / 150.0 + np.arange(n_act)[None, :])


class RawScene:
    """The env's scene and control law in plain pybullet calls and numpy (no env, no SimRobot)."""

    def __init__(self, actions, randomization=None, replay=None):
        # the env only builds the scene (with `randomization`: the randomized one of seed 0, whose
        # masses, friction, gravity and gains the loop below uses as they are). `replay`: per step,
        # the joint targets and substep counts to use instead of integrating `actions`.
        self.env = env = gym.make(ENV, randomization=randomization).unwrapped
        env.reset(seed=0)
        self.actions, self.k, self.replay = actions, 0, replay
        self.q_cmd = env.robot.state()[0].copy()
        self.q_des, self.qd_des = self.q_cmd.copy(), np.zeros_like(self.q_cmd)
        self.obs_q = self.q_cmd

    def run(self, n_steps: int) -> float:
        env = self.env
        c, body = env.client, env.robot.body
        idx = list(env.robot.idx)                 # the 9 controlled joints (all movable ones)
        kp, kd, lim, lo, hi = env.robot.kp, env.robot.kd, env.effort, env.lower, env.upper
        act, scale = env.act_idx, env.action_scale
        fixed = np.zeros(len(idx))                # ArmPush holds its fingers closed
        hand, block = env._hand, env.objects[0]
        dt, rate, sub = env.sim.dt, 1.0 / env.control_dt, env.substeps
        zeros = [0.0] * len(idx)
        q_cmd, q_des = self.q_cmd, self.q_des
        t0, c0 = time.perf_counter(), time.process_time()
        replay = self.replay
        for _ in range(n_steps):
            if replay is None:
                a = np.clip(self.actions[self.k % len(self.actions)], -1.0, 1.0)
                q_new = fixed.copy()
                q_new[act] = np.clip(q_cmd[act] + a * scale, lo[act], hi[act])
                q_cmd = q_new
            else:
                q_cmd, sub = replay[0][self.k], int(replay[1][self.k])
            self.k += 1
            qd_des = (q_cmd - q_des) * rate
            for _ in range(sub):
                q_des = q_des + qd_des * dt
                s = p.getJointStates(body, idx, physicsClientId=c)
                q_list = [x[0] for x in s]
                q, qd = np.array(q_list), np.array([x[1] for x in s])
                g = np.array(p.calculateInverseDynamics(body, q_list, zeros, zeros, physicsClientId=c))
                tau = np.minimum(np.maximum(kp * (q_des - q) + kd * (qd_des - qd) + g, -lim), lim)
                p.setJointMotorControlArray(body, idx, p.TORQUE_CONTROL, forces=tau.tolist(), physicsClientId=c)
                p.stepSimulation(physicsClientId=c)
            # an observation's worth of reads, as any controller needs
            s = p.getJointStates(body, idx, physicsClientId=c)
            self.obs_q = (np.array([x[0] for x in s]), np.array([x[1] for x in s]))
            p.getLinkState(body, hand, computeForwardKinematics=True, physicsClientId=c)
            p.getBasePositionAndOrientation(block, physicsClientId=c)
        self.q_cmd, self.q_des = q_cmd, q_des
        return time.perf_counter() - t0, time.process_time() - c0


def record_targets(actions, randomization, n_steps: int):
    """The joint targets and physics substeps per step that the env (seed 0) applies for
    `actions` over n_steps (what RawScene replays to make the same motion), and the reference
    each step ends at (to check a later run of the env made the same motion)."""
    env = gym.make(ENV, randomization=randomization).unwrapped
    env.reset(seed=0)
    targets, substeps, ends = [], [], []
    set_target = env.robot.set_target

    def sent(mode, values, *args):          # the targets as applied: after latency, with the action noise
        targets.append(np.array(values, float))
        return set_target(mode, values, *args)
    env.robot.set_target = sent
    for k in range(n_steps):
        before = env.sim.steps
        env.step(actions[k % len(actions)])
        substeps.append(env.sim.steps - before)
        ends.append(env.robot.q_target.copy())
    env.close()
    return np.array(targets), np.array(substeps), np.array(ends)


class SimRobotScene:
    """The env's physics path alone: SimRobot's set-point interpolation and control, Simulation.step."""

    def __init__(self, actions):
        self.env = env = gym.make(ENV).unwrapped
        env.reset(seed=0)
        self.actions, self.k = actions, 0
        self.q_cmd = env.robot.state()[0].copy()

    def run(self, n_steps: int) -> float:
        env = self.env
        sim, robot, n, dt = env.sim, env.robot, env.substeps, env.control_dt
        act, scale, lo, hi = env.act_idx, env.action_scale, env.lower, env.upper
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n_steps):
            a = np.clip(self.actions[self.k % len(self.actions)], -1.0, 1.0)
            self.k += 1
            self.q_cmd[act] = np.clip(self.q_cmd[act] + a * scale, lo[act], hi[act])
            robot.set_target("position", self.q_cmd, dt)
            sim.step(n)
            robot.state()
        return time.perf_counter() - t0, time.process_time() - c0


class EnvScene:
    def __init__(self, actions, randomization):
        self.env = gym.make(ENV, randomization=randomization).unwrapped
        self.env.reset(seed=0)
        self.actions, self.k = actions, 0

    def run(self, n_steps: int) -> float:
        env, actions = self.env, self.actions
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n_steps):
            env.step(actions[self.k % len(actions)])
            self.k += 1
        return time.perf_counter() - t0, time.process_time() - c0


def stepping(rounds: int, chunk: int) -> dict:
    """`rounds` rounds, each running a chunk of every variant (in a rotating order, so no variant
    always follows the same one); per chunk the wall time and this process's CPU time.

    Rates are medians over chunks. Ratios are medians of the per-round ratios, from CPU time: a
    shared machine takes the CPU away for stretches that land on one chunk and not the next, which
    wall-clock ratios count as if the code were slower; CPU time counts only what this process ran
    (wall-clock ratios are reported beside them)."""
    actions = action_sequence(600, 7)
    warmup = 50
    replay = record_targets(actions, "default", warmup + rounds * chunk)
    scenes = {"raw": RawScene(actions), "simrobot": SimRobotScene(actions), "env": EnvScene(actions, None),
              "raw_dr": RawScene(actions, "default", replay), "env_dr": EnvScene(actions, "default")}
    for sc in scenes.values():
        sc.run(warmup)
    names = list(scenes)
    wall = {k: [] for k in scenes}
    cpu = {k: [] for k in scenes}
    for i in range(rounds):
        for k in names[i % len(names):] + names[:i % len(names)]:
            w, c = scenes[k].run(chunk)
            wall[k].append(chunk / w)
            cpu[k].append(chunk / c)
    # the randomized env made exactly the recorded motion (same seed, same actions)
    assert np.array_equal(scenes["env_dr"].env.robot.q_target, replay[2][scenes["env_dr"].k - 1]), \
        "env_dr diverged from its replay"
    for sc in scenes.values():
        sc.env.close()
    w = {k: np.array(v) for k, v in wall.items()}
    c = {k: np.array(v) for k, v in cpu.items()}
    med = lambda x: float(np.median(x))   # noqa: E731
    pairs = {"env_ratio": ("env", "raw"), "env_dr_ratio": ("env_dr", "raw_dr"), "simrobot_ratio": ("simrobot", "raw"),
             "env_over_simrobot_ratio": ("env", "simrobot"), "env_dr_over_simrobot_ratio": ("env_dr", "simrobot"),
             "env_dr_over_raw_nominal_ratio": ("env_dr", "raw"), "raw_dr_over_raw_ratio": ("raw_dr", "raw")}
    out = {f"{k}_steps_per_s": med(w[k]) for k in scenes}
    out |= {f"{k}_steps_per_cpu_s": med(c[k]) for k in scenes}
    for name, (a, b) in pairs.items():
        out[name] = med(c[a] / c[b])
        out[f"{name}_wall"] = med(w[a] / w[b])
    out["env_ratio_range"] = [float(np.percentile(c["env"] / c["raw"], q)) for q in (10, 90)]
    out["env_dr_ratio_range"] = [float(np.percentile(c["env_dr"] / c["raw_dr"], q)) for q in (10, 90)]
    out["cpu_over_wall"] = med(np.concatenate([w[k] / c[k] for k in scenes]))
    out |= {"stepping_rounds": rounds, "stepping_chunk": chunk}
    return out


def render_fps(size: int, meshes: str, seconds: float) -> float:
    env = gym.make(ENV, meshes=meshes).unwrapped
    env.reset(seed=0)
    env.render_image(size)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.render_image(size)
        n += 1
    fps = n / (time.perf_counter() - t0)
    env.close()
    return fps


class SinePolicy:
    """A cheap deterministic policy (module level: picklable for the workers)."""

    def __init__(self, env):
        self.n, self.k = env.action_space.shape[0], 0

    def __call__(self, obs):
        self.k += 1
        return 0.15 * np.sin(2 * np.pi * self.k / 150.0 + np.arange(self.n))


def parallel(rounds: int, n_episodes: int, horizon: int) -> dict:
    """Episodes/s of a 1-worker and a 2-worker pool (both started and warmed before any timing),
    alternating, with each worker's CPU time; medians over rounds."""
    kw = {"randomization": "default"}
    seeds = list(range(n_episodes))
    pools = {1: ParallelRollouts(ENV, 1, kw), 2: ParallelRollouts(ENV, 2, kw)}
    runs: dict = {1: [], 2: []}
    try:
        for n, pool in pools.items():
            pool.run(SinePolicy, seeds[:n], 5)                    # workers up, envs built, imports done
        reference = None
        for i in range(rounds):
            for n in ((1, 2) if i % 2 == 0 else (2, 1)):          # alternate which goes first
                pool = pools[n]
                load0 = os.getloadavg()[0]
                t0 = time.perf_counter()
                eps = pool.run(SinePolicy, seeds, horizon)
                wall = time.perf_counter() - t0
                cpu = [s["cpu_s"] for s in pool.last_worker_stats]
                runs[n].append({"wall_s": wall, "episodes_per_s": n_episodes / wall, "worker_cpu_s": cpu,
                                "cpu_over_wall": sum(cpu) / wall, "loadavg_1min_before": load0})
                if reference is None:
                    reference = eps
                else:   # every run, 1 or 2 workers, gives the same episodes
                    assert all(np.array_equal(a.actions, b.actions) and np.array_equal(a.rewards, b.rewards)
                               for a, b in zip(reference, eps))
    finally:
        for pool in pools.values():
            pool.close()
    one = statistics.median(r["episodes_per_s"] for r in runs[1])
    two = statistics.median(r["episodes_per_s"] for r in runs[2])
    speedups = [b["episodes_per_s"] / a["episodes_per_s"] for a, b in zip(runs[1], runs[2])]
    # rounds in which the machine gave the workers their cores (1 worker >= 0.9 of one, 2 workers
    # >= 1.8 together): the speedup of the code itself, without other people's processes in it
    free = [s for s, a, b in zip(speedups, runs[1], runs[2]) if a["cpu_over_wall"] >= 0.9 and b["cpu_over_wall"] >= 1.8]
    cpu_per_episode = {n: statistics.median(sum(r["worker_cpu_s"]) / n_episodes for r in runs[n]) for n in (1, 2)}
    return {"parallel_episodes_per_s_1": one, "parallel_episodes_per_s_2": two,
            "parallel_speedup_2": two / one, "parallel_speedup_2_per_round": speedups,
            "parallel_speedup_2_uncontended": statistics.median(free) if free else None,
            "parallel_uncontended_rounds": len(free),
            "parallel_cpu_s_per_episode_1": cpu_per_episode[1], "parallel_cpu_s_per_episode_2": cpu_per_episode[2],
            "parallel_cpu_over_wall_1": statistics.median(r["cpu_over_wall"] for r in runs[1]),
            "parallel_cpu_over_wall_2": statistics.median(r["cpu_over_wall"] for r in runs[2]),
            "parallel_runs": runs, "parallel_episodes": n_episodes, "parallel_horizon": horizon,
            "cpu_count": os.cpu_count()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test, not for numbers)")
    ap.add_argument("--rounds", type=int, default=40, help="alternating stepping rounds")
    ap.add_argument("--parallel-rounds", type=int, default=5)
    args = ap.parse_args(argv)
    q = args.quick
    res: dict = {}
    res.update(stepping(5 if q else args.rounds, 100 if q else 150))
    print(f"stepping, median of {res['stepping_rounds']} rounds of {res['stepping_chunk']}-step chunks "
          f"(ratios from CPU time; wall-clock ratios in brackets; this process got "
          f"{100 * res['cpu_over_wall']:.0f} % of a core):")
    print(f"  env     {res['env_steps_per_s']:7.0f} steps/s   raw pybullet {res['raw_steps_per_s']:7.0f}   "
          f"ratio {res['env_ratio']:.3f} [{res['env_ratio_wall']:.3f}] "
          f"(10-90 %: {res['env_ratio_range'][0]:.3f}-{res['env_ratio_range'][1]:.3f}; target >= 0.9)")
    print(f"  env+DR  {res['env_dr_steps_per_s']:7.0f} steps/s   raw pybullet {res['raw_dr_steps_per_s']:7.0f}   "
          f"ratio {res['env_dr_ratio']:.3f} [{res['env_dr_ratio_wall']:.3f}] "
          f"(10-90 %: {res['env_dr_ratio_range'][0]:.3f}-{res['env_dr_ratio_range'][1]:.3f}; "
          f"raw on the same randomized scene; target >= 0.9)")
    print(f"  SimRobot physics path / raw {res['simrobot_ratio']:.3f}   env / SimRobot {res['env_over_simrobot_ratio']:.3f}"
          f"   env+DR / SimRobot {res['env_dr_over_simrobot_ratio']:.3f}   randomized scene's physics: raw_dr / raw "
          f"{res['raw_dr_over_raw_ratio']:.3f}   env+DR / nominal raw {res['env_dr_over_raw_nominal_ratio']:.3f}",
          flush=True)
    secs, reps = (0.3, 1) if q else (1.5, 3)
    for size in (64, 128, 240):
        res[f"render_fps_{size}"] = max(render_fps(size, "decimated", secs) for _ in range(reps))
        res[f"render_fps_{size}_stock"] = max(render_fps(size, "stock", secs) for _ in range(reps))
        d, s = res[f"render_fps_{size}"], res[f"render_fps_{size}_stock"]
        print(f"render {size:3d} px      {d:8.1f} fps decimated   {s:8.1f} fps stock   x{d / s:.1f} (best of {reps})",
              flush=True)
    res.update(parallel(1 if q else args.parallel_rounds, 4 if q else 16, 20 if q else 200))
    one, two = res["parallel_episodes_per_s_1"], res["parallel_episodes_per_s_2"]
    print(f"parallel          {one:8.2f} episodes/s (1 worker)   {two:8.2f} (2 workers)   "
          f"speedup {res['parallel_speedup_2']:.2f} (per round: "
          f"{', '.join(f'{x:.2f}' for x in res['parallel_speedup_2_per_round'])}; target >= 1.6)")
    free = res["parallel_speedup_2_uncontended"]
    print(f"                  in the {res['parallel_uncontended_rounds']} round(s) where both workers had a core each: "
          + (f"speedup {free:.2f}" if free else "none (the machine was busy throughout)")
          + f"; CPU s per episode {res['parallel_cpu_s_per_episode_1']:.3f} (1 worker), "
          f"{res['parallel_cpu_s_per_episode_2']:.3f} (2 workers)")
    loads = ", ".join(f"{r['loadavg_1min_before']:.1f}" for n in (1, 2) for r in res["parallel_runs"][n])
    print(f"                  worker CPU / wall: {res['parallel_cpu_over_wall_1']:.2f} (1 worker), "
          f"{res['parallel_cpu_over_wall_2']:.2f} (2 workers; 2.0 = both cores to themselves); "
          f"{res['cpu_count']} CPUs, 1-min load average before each run: {loads}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
