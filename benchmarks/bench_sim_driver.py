"""Control-loop throughput of the sim driver behind the safety layer vs raw pybullet.

Both loops run the same robot (Panda, 9 joints), the same physics rate (1 kHz, 10 substeps per
100 Hz control period) and the same control law per substep (set-point interpolation with velocity
feed-forward, joint PD + gravity compensation by inverse dynamics, torque control), with the same
streamed position set-points. The raw loop is plain pybullet calls and numpy: no safety checks,
no locks, no driver interface.

    python benchmarks/bench_sim_driver.py --json OUT [--steps 3000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pybullet as p
import pybullet_data

from drivers import Command, open_driver
from s2r.config import load_config


def setpoints(q0, n, rate):
    t = np.arange(n)[:, None] / rate
    return q0 + 0.2 * np.sin(2 * np.pi * 0.5 * t) * (np.arange(len(q0)) < 7)


def raw_loop(cfg, steps: int) -> float:
    c = p.connect(p.DIRECT)
    try:
        p.setGravity(0, 0, -9.81, physicsClientId=c)
        dt = 1.0 / cfg.sim.physics_hz
        p.setTimeStep(dt, physicsClientId=c)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=c)
        p.loadURDF("plane.urdf", physicsClientId=c)
        body = p.loadURDF("franka_panda/panda.urdf", useFixedBase=True, flags=p.URDF_USE_INERTIA_FROM_FILE,
                          physicsClientId=c)
        names = {p.getJointInfo(body, i, physicsClientId=c)[1].decode(): i for i in range(p.getNumJoints(body, physicsClientId=c))}
        idx = [names[n] for n in cfg.joint_names]
        p.setJointMotorControlArray(body, idx, p.VELOCITY_CONTROL, forces=[0.0] * len(idx), physicsClientId=c)
        q0 = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.02, 0.02])
        for i, q in zip(idx, q0):
            p.resetJointState(body, i, q, physicsClientId=c)
        kp = np.array([j.kp for j in cfg.joints])
        kd = np.array([j.kd for j in cfg.joints])
        lim = np.array([j.limits.effort for j in cfg.joints])
        sub = round(cfg.sim.physics_hz / cfg.control_rate_hz)
        ref = setpoints(q0, steps, cfg.control_rate_hz)
        zeros = [0.0] * len(idx)
        q_des = q0.copy()
        t0 = time.perf_counter()
        for k in range(steps):
            p.getJointStates(body, idx, physicsClientId=c)          # the loop's state read
            # the same control law as the driver: the set-point is reached by linear
            # interpolation over the period, with the matching velocity feed-forward
            qd_des = (ref[k] - q_des) * cfg.control_rate_hz
            for _ in range(sub):
                q_des = q_des + qd_des * dt
                s = p.getJointStates(body, idx, physicsClientId=c)
                q_list = [x[0] for x in s]
                q = np.array(q_list)
                qd = np.array([x[1] for x in s])
                g = np.array(p.calculateInverseDynamics(body, q_list, zeros, zeros, physicsClientId=c))
                tau = np.minimum(np.maximum(kp * (q_des - q) + kd * (qd_des - qd) + g, -lim), lim)
                p.setJointMotorControlArray(body, idx, p.TORQUE_CONTROL, forces=tau.tolist(), physicsClientId=c)
                p.stepSimulation(physicsClientId=c)
        return steps / (time.perf_counter() - t0)
    finally:
        p.disconnect(c)


def driver_loop(cfg, steps: int) -> float:
    d = open_driver(cfg, "sim", realtime=False)
    try:
        ref = setpoints(d.read().q, steps, cfg.control_rate_hz)
        t0 = time.perf_counter()
        for k in range(steps):
            d.read()
            d.write(Command.position(ref[k]))
        hz = steps / (time.perf_counter() - t0)
        assert d.counters.rejected == 0
        return hz
    finally:
        d.disconnect()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--steps", type=int, default=3000, help="control periods per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs; the best of each is kept")
    a = ap.parse_args(argv)
    cfg = load_config("panda_sim")
    raw, drv = [], []
    for r in range(a.repeats):           # alternate so both see the same machine conditions
        raw.append(raw_loop(cfg, a.steps))
        drv.append(driver_loop(cfg, a.steps))
        print(f"  run {r + 1}/{a.repeats}: raw {raw[-1]:7.0f} Hz   driver+safety {drv[-1]:7.0f} Hz", flush=True)
    out = {"raw_hz": max(raw), "driver_hz": max(drv), "ratio": max(drv) / max(raw),
           "target_ratio": 0.87, "steps": a.steps, "physics_substeps": round(cfg.sim.physics_hz / cfg.control_rate_hz),
           "raw_hz_runs": raw, "driver_hz_runs": drv}
    print(f"\ncontrol loop (read + write + {out['physics_substeps']} physics substeps), Panda, best of {a.repeats}:")
    print(f"  raw pybullet           {out['raw_hz']:8.0f} Hz")
    print(f"  sim driver + safety    {out['driver_hz']:8.0f} Hz")
    print(f"  ratio                  {out['ratio']:8.3f}   (target >= 0.87, i.e. <= 15 % overhead)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
