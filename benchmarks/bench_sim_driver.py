"""Control-loop throughput of the sim driver behind the safety layer vs raw pybullet.

Both loops run the same robot (Panda, 9 joints), the same physics rate (1 kHz, 10 substeps per
100 Hz control period) and the same control law per substep (set-point interpolation with velocity
feed-forward, joint PD + gravity compensation by inverse dynamics, torque control), with the same
streamed position set-points. The raw loop is plain pybullet calls and numpy: no safety checks, no
locks, no driver interface.

The two loops alternate in short chunks, so both see the same machine load. Both are single-threaded
and in-process (pybullet DIRECT), so the overhead is measured in process CPU time per chunk, which
other processes on a shared machine do not inflate; wall-clock rates and their ratio are reported
beside it. All figures are medians over chunk pairs.

    python benchmarks/bench_sim_driver.py --json OUT [--chunk 300] [--pairs 15]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import s2r.sim  # noqa: F401  (imports pybullet without its banner)
import pybullet as p
import pybullet_data

from s2r.drivers import Command, open_driver
from s2r.core.config import load_config


def setpoint(q0, k, rate):
    return q0 + 0.2 * np.sin(2 * np.pi * 0.5 * k / rate) * (np.arange(len(q0)) < 7)


class RawLoop:
    def __init__(self, cfg):
        self.c = c = p.connect(p.DIRECT)
        p.setGravity(0, 0, -9.81, physicsClientId=c)
        self.dt = 1.0 / cfg.sim.physics_hz
        p.setTimeStep(self.dt, physicsClientId=c)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=c)
        p.loadURDF("plane.urdf", physicsClientId=c)
        self.body = body = p.loadURDF("franka_panda/panda.urdf", useFixedBase=True,
                                      flags=p.URDF_USE_INERTIA_FROM_FILE, physicsClientId=c)
        names = {p.getJointInfo(body, i, physicsClientId=c)[1].decode(): i
                 for i in range(p.getNumJoints(body, physicsClientId=c))}
        self.idx = [names[n] for n in cfg.joint_names]
        p.setJointMotorControlArray(body, self.idx, p.VELOCITY_CONTROL, forces=[0.0] * len(self.idx), physicsClientId=c)
        self.q0 = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.02, 0.02])
        for i, q in zip(self.idx, self.q0):
            p.resetJointState(body, i, q, physicsClientId=c)
        self.kp = np.array([j.kp for j in cfg.joints])
        self.kd = np.array([j.kd for j in cfg.joints])
        self.lim = np.array([j.limits.effort for j in cfg.joints])
        self.sub = round(cfg.sim.physics_hz / cfg.control_rate_hz)
        self.rate = cfg.control_rate_hz
        self.q_des = self.q0.copy()
        self.k = 0

    def run(self, steps: int) -> float:
        body, idx, c, kp, kd, lim, dt = self.body, self.idx, self.c, self.kp, self.kd, self.lim, self.dt
        zeros = [0.0] * len(idx)
        q_des = self.q_des
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            p.getJointStates(body, idx, physicsClientId=c)          # the loop's state read
            # the set-point is reached by linear interpolation over the period, with feed-forward
            qd_des = (setpoint(self.q0, self.k, self.rate) - q_des) * self.rate
            self.k += 1
            for _ in range(self.sub):
                q_des = q_des + qd_des * dt
                s = p.getJointStates(body, idx, physicsClientId=c)
                q_list = [x[0] for x in s]
                q = np.array(q_list)
                qd = np.array([x[1] for x in s])
                g = np.array(p.calculateInverseDynamics(body, q_list, zeros, zeros, physicsClientId=c))
                tau = np.minimum(np.maximum(kp * (q_des - q) + kd * (qd_des - qd) + g, -lim), lim)
                p.setJointMotorControlArray(body, idx, p.TORQUE_CONTROL, forces=tau.tolist(), physicsClientId=c)
                p.stepSimulation(physicsClientId=c)
        elapsed = time.perf_counter() - t0, time.process_time() - c0
        self.q_des = q_des
        return elapsed

    def close(self):
        p.disconnect(self.c)


class DriverLoop:
    def __init__(self, cfg):
        self.d = open_driver(cfg, "sim", realtime=False)
        self.q0 = self.d.read().q
        self.rate = cfg.control_rate_hz
        self.k = 0

    def run(self, steps: int) -> float:
        d = self.d
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            d.read()
            d.write(Command.position(setpoint(self.q0, self.k, self.rate)))
            self.k += 1
        return time.perf_counter() - t0, time.process_time() - c0

    def close(self):
        assert self.d.counters.rejected == 0
        self.d.disconnect()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--chunk", type=int, default=300, help="control periods per chunk")
    ap.add_argument("--pairs", type=int, default=15, help="alternating chunk pairs")
    a = ap.parse_args(argv)
    cfg = load_config("panda_sim")
    raw, drv = RawLoop(cfg), DriverLoop(cfg)
    raw.run(50), drv.run(50)                                    # warm up
    raw_hz, drv_hz, ratios, wall_ratios = [], [], [], []
    end = ""
    try:
        for i in range(a.pairs):
            (tr, cr), (td, cd) = raw.run(a.chunk), drv.run(a.chunk)
            raw_hz.append(a.chunk / tr)
            drv_hz.append(a.chunk / td)
            ratios.append(cr / cd)
            wall_ratios.append(tr / td)
            print(f"{end}  pair {i + 1}/{a.pairs}: raw {raw_hz[-1]:6.0f} Hz  driver+safety {drv_hz[-1]:6.0f} Hz  "
                  f"CPU-time ratio {ratios[-1]:.3f}", end="", flush=True)
            end = "\r" if sys.stdout.isatty() else "\n"
    finally:
        raw.close()
        drv.close()
    print()
    load = os.getloadavg()[0]
    out = {"raw_hz": statistics.median(raw_hz), "driver_hz": statistics.median(drv_hz),
           "ratio": statistics.median(ratios), "ratio_wall": statistics.median(wall_ratios),
           "target_ratio": 0.87, "chunk": a.chunk, "pairs": a.pairs, "physics_substeps": raw.sub,
           "load_average_1min": load, "ratios": ratios}
    print(f"control loop (read + write + {raw.sub} physics substeps), Panda, median of {a.pairs} alternating chunks"
          f" (load average {load:.2f} on {os.cpu_count()} CPUs):")
    print(f"  raw pybullet           {out['raw_hz']:8.0f} Hz")
    print(f"  sim driver + safety    {out['driver_hz']:8.0f} Hz")
    print(f"  ratio (CPU time)       {out['ratio']:8.3f}   (target >= 0.87, i.e. <= 15 % overhead; "
          f"range {min(ratios):.3f}-{max(ratios):.3f})")
    print(f"  ratio (wall clock)     {out['ratio_wall']:8.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
