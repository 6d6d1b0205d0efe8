"""Sim benchmark: env stepping vs raw pybullet, rendering fps, parallel rollout scaling.

    python benchmarks/bench_sim.py --json OUT [--quick]

- raw_steps_per_s: raw pybullet stepping the same scene (ArmPush: Panda, table, block) with the same
  control (torque PD + gravity compensation per physics substep, 10 substeps per control step),
  written inline with no env around it: the reference.
- simrobot_steps_per_s: the env's own physics path (Simulation.step, SimRobot's control), which
  separates the task layer's overhead (env_over_simrobot_ratio) from the shared control code's.
- env_steps_per_s / env_dr_steps_per_s: `s2r/ArmPush-v0` steps without / with the "default"
  randomization (dynamics, timing, noise; visuals do not cost per step), episode resets excluded.
- render_fps_{64,128,240}: the env's camera with decimated meshes; *_stock: with the stock meshes.
- parallel_speedup_2: episodes/s with 2 worker processes over 1 (same seeds, same results).
The number of measurements is small and the machine may be shared: each figure is the best of
`--repeats` runs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pybullet as p

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402

import sim.tasks  # noqa: E402,F401
from sim.parallel import ParallelRollouts, rollout_serial  # noqa: E402

ENV = "s2r/ArmPush-v0"


def best(fn, repeats):
    return max(fn() for _ in range(repeats))


class RawScene:
    """The same scene and control law in plain pybullet calls (no env, no SimRobot)."""

    def __init__(self):
        self.env = env = gym.make(ENV).unwrapped
        env.reset(seed=0)
        r = env.robot
        self.q_target = r.state()[0].copy()

    def run(self, n_steps: int) -> float:
        env = self.env
        c, body, r = env.client, env.robot.body, env.robot
        all_idx, pos = list(r.all_idx), r._pos_in_all
        kp, kd, lim, q_target = env.kp, env.kd, env.effort, self.q_target
        n_all = len(all_idx)
        zeros = [0.0] * n_all
        others = [i for i in range(n_all) if i not in pos]
        t0 = time.perf_counter()
        for _ in range(n_steps):
            for _ in range(env.substeps):
                js = p.getJointStates(body, all_idx, physicsClientId=c)
                q = [s[0] for s in js]
                qd = [s[1] for s in js]
                tau = list(p.calculateInverseDynamics(body, q, zeros, zeros, physicsClientId=c))
                for k, i in enumerate(pos):
                    t = kp[k] * (q_target[k] - q[i]) - kd[k] * qd[i] + tau[i]
                    tau[i] = min(max(t, -lim[k]), lim[k])
                for i in others:
                    tau[i] += 200.0 * (0.02 - q[i]) - 5.0 * qd[i]
                p.setJointMotorControlArray(body, all_idx, p.TORQUE_CONTROL, forces=tau, physicsClientId=c)
                p.stepSimulation(physicsClientId=c)
            # an observation's worth of reads, as any controller needs
            p.getLinkState(body, env._hand, computeForwardKinematics=True, physicsClientId=c)
            p.getBasePositionAndOrientation(env.objects[0], physicsClientId=c)
        return n_steps / (time.perf_counter() - t0)


class SimRobotScene:
    """The env's physics alone: Simulation.step with SimRobot's control (no obs, action, DR)."""

    def __init__(self):
        self.env = gym.make(ENV).unwrapped
        self.env.reset(seed=0)

    def run(self, n_steps: int) -> float:
        sim, n = self.env.sim, self.env.substeps
        t0 = time.perf_counter()
        for _ in range(n_steps):
            sim.step(n)
        return n_steps / (time.perf_counter() - t0)


class EnvScene:
    def __init__(self, randomization):
        self.env = gym.make(ENV, randomization=randomization).unwrapped
        self.env.reset(seed=0)
        self.a = np.zeros(self.env.action_space.shape)

    def run(self, n_steps: int) -> float:
        env, a = self.env, self.a
        t0 = time.perf_counter()
        for _ in range(n_steps):
            env.step(a)
        return n_steps / (time.perf_counter() - t0)


def stepping(chunks: int, chunk: int) -> dict:
    """Alternate short chunks of each variant (so machine load hits all alike); the best chunk
    gives the rate, and the median of per-round ratios gives the ratios."""
    scenes = {"raw": RawScene(), "simrobot": SimRobotScene(), "env": EnvScene(None), "env_dr": EnvScene("default")}
    rates = {k: [] for k in scenes}
    for _ in range(chunks):
        for k, sc in scenes.items():
            rates[k].append(sc.run(chunk))
    for sc in scenes.values():
        sc.env.close()
    r = {k: np.array(v) for k, v in rates.items()}
    return {"raw_steps_per_s": float(r["raw"].max()), "simrobot_steps_per_s": float(r["simrobot"].max()),
            "env_steps_per_s": float(r["env"].max()), "env_dr_steps_per_s": float(r["env_dr"].max()),
            "env_ratio": float(np.median(r["env"] / r["raw"])), "env_dr_ratio": float(np.median(r["env_dr"] / r["raw"])),
            "env_over_simrobot_ratio": float(np.median(r["env"] / r["simrobot"])),
            "env_dr_over_simrobot_ratio": float(np.median(r["env_dr"] / r["simrobot"]))}


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


def _zero_policy(env):
    n = env.action_space.shape[0]
    return lambda obs: np.zeros(n)


def parallel_episodes_per_s(n_workers: int, n_episodes: int, horizon: int) -> float:
    seeds = list(range(n_episodes))
    if n_workers == 1:
        t0 = time.perf_counter()
        rollout_serial(ENV, _zero_policy, seeds, horizon, {"randomization": "default"})
        return n_episodes / (time.perf_counter() - t0)
    with ParallelRollouts(ENV, n_workers, {"randomization": "default"}) as pool:
        pool.run(_zero_policy, seeds[:n_workers], 5)          # warm: workers up, envs built
        t0 = time.perf_counter()
        pool.run(_zero_policy, seeds, horizon)
        return n_episodes / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test, not for numbers)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    steps = 300 if args.quick else 2000
    secs = 0.3 if args.quick else 1.5
    reps = 1 if args.quick else args.repeats
    res: dict = {}
    res.update(stepping(3 if args.quick else 12, 100 if args.quick else 200))
    for size in (64, 128, 240):
        res[f"render_fps_{size}"] = best(lambda: render_fps(size, "decimated", secs), reps)
        res[f"render_fps_{size}_stock"] = best(lambda: render_fps(size, "stock", secs), reps)
    n_ep, horizon = (4, 20) if args.quick else (8, 100)
    one = best(lambda: parallel_episodes_per_s(1, n_ep, horizon), reps)
    two = best(lambda: parallel_episodes_per_s(2, n_ep, horizon), reps)
    res["parallel_episodes_per_s_1"], res["parallel_episodes_per_s_2"] = one, two
    res["parallel_speedup_2"] = two / one
    print(f"env steps/s       {res['env_steps_per_s']:8.0f}   raw pybullet {res['raw_steps_per_s']:8.0f}   "
          f"ratio {res['env_ratio']:.3f} (median of interleaved chunks)")
    print(f"env+DR steps/s    {res['env_dr_steps_per_s']:8.0f}   raw pybullet {res['raw_steps_per_s']:8.0f}   "
          f"ratio {res['env_dr_ratio']:.3f}")
    print(f"SimRobot physics  {res['simrobot_steps_per_s']:8.0f}   env/SimRobot {res['env_over_simrobot_ratio']:.3f}   "
          f"env+DR/SimRobot {res['env_dr_over_simrobot_ratio']:.3f}")
    for size in (64, 128, 240):
        d, s = res[f"render_fps_{size}"], res[f"render_fps_{size}_stock"]
        print(f"render {size:3d} px      {d:8.1f} fps decimated   {s:8.1f} fps stock   x{d / s:.1f}")
    print(f"parallel          {one:8.2f} episodes/s (1 worker)   {two:8.2f} (2 workers)   "
          f"speedup {res['parallel_speedup_2']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
