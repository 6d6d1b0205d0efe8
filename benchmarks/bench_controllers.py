"""Trajectory optimization and MPC speed, side by side with a plain NumPy iLQR in the same run.

Tasks (fixed so they compare with published peers):
  cart-pole swing-up   m_cart=1, m_pole=0.1, l=0.5, dt=0.05, T=100, from hanging; iLQR (RK4)
  pendulum swing-up    Gym Pendulum-v1 (g=10, m=l=1, |u|<=2, dt=0.05): MPPI K=1000 T=15, CEM, random shooting
  Panda reach          7-DOF URDF dynamics, N=100, dt=0.01, torque control, end-effector pose cost
                       + 1e-4 state/control regularization; warm-started MPC at N=50
  acrobot swing-up     T=100, dt=0.01 (uniform 0.2 m links, elbow torque only)
  cart-pole NMPC       acados pendulum_on_cart: M=1, m=0.1, l=0.8, N=40, Tf=0.8, |F|<=80, closed loop
                       (NLP functions compiled to C; the CasADi-VM numbers are reported beside them)
  horizon scaling      cart-pole iLQR time per iteration / T for T = 25 .. 400

The reference is a plain NumPy iLQR (finite-difference Jacobians, Python loops, the same cost,
line search and regularization) on the same cart-pole; the speed-up is printed. Times are the best
of a few repeats (solves) or medians over a closed loop (per-step numbers); compile time is
excluded (CasADi code is built once and cached on disk) and reported separately.

    python benchmarks/bench_controllers.py --json OUT
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):   # the 2-core target machine
    os.environ.setdefault(_v, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import casadi as ca  # noqa: E402
import numpy as np  # noqa: E402
import pybullet_data  # noqa: E402

from s2r.controllers import (CEM, ILQR, MPC, MPPI, NMPC, Cost, ILQROptions, RandomShooting,  # noqa: E402
                         quadratic_cost)
from s2r.controllers._compiled import jit_available  # noqa: E402
from s2r.controllers.models import RigidBodyModel, acrobot, arm, cartpole, pendulum  # noqa: E402

TARGETS = {  # key: (limit, "<=" or ">=")
    "cartpole_ilqr_ms_per_iter": (2.0, "<="),
    "cartpole_solve_s": (0.3, "<="),
    "cartpole_final_angle_err_rad": (0.05, "<="),
    "panda_ilqr_ms_per_iter": (4.0, "<="),
    "panda_mpc_hz": (200.0, ">="),
    "mppi_ms_per_cmd": (1.5, "<="),
    "nmpc_rti_ms_per_step": (3.0, "<="),
    "nmpc_ipopt_ms_per_step": (6.0, "<="),
}


def log(msg: str) -> None:
    print(msg, flush=True)


def wrap(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


# ----------------------------------------------------------------------------- cart-pole
CP_Q = np.diag([1.0, 1.0, 0.1, 0.1])
CP_R = 0.01
CP_QF = np.diag([100.0, 100.0, 10.0, 10.0])
CP_GOAL = np.array([0.0, np.pi, 0.0, 0.0])


def cartpole_problem():
    model = cartpole(1.0, 0.1, 0.5)
    dyn = model.discretize(0.05, "rk4")
    x, u = model.x, model.u
    e = x - CP_GOAL
    cost = Cost(x, u, 0.5 * e.T @ ca.DM(CP_Q) @ e + 0.5 * CP_R * u[0] ** 2, 0.5 * e.T @ ca.DM(CP_QF) @ e,
                name="bench_cartpole")
    return dyn, cost


def bench_cartpole(repeats: int = 5) -> dict:
    t = time.perf_counter()
    dyn, cost = cartpole_problem()
    solver = ILQR(dyn, cost, 100, options=ILQROptions(max_iter=500))
    build = time.perf_counter() - t
    best = None
    for _ in range(repeats):
        t = time.perf_counter()
        res = solver.solve(np.zeros(4))
        dt = time.perf_counter() - t
        if best is None or dt < best[0]:
            best = (dt, res)
    dt, res = best
    return {"cartpole_ilqr_ms_per_iter": 1e3 * dt / res.iterations, "cartpole_solve_s": dt,
            "cartpole_final_angle_err_rad": float(abs(wrap(res.x[-1, 1] - np.pi))),
            "cartpole_iterations": res.iterations, "cartpole_status": res.status.value,
            "cartpole_cost": res.cost, "cartpole_build_s": build}


# ----------------------------------------------------------------------------- NumPy reference
class NumpyILQR:
    """The reference: a plain NumPy iLQR on the same cart-pole and cost, as one would write it
    without code generation: RK4 in numpy, central finite-difference Jacobians (vectorized over
    the horizon), Python loops for the backward and forward passes, the same line search
    (10^linspace(0,-3,11)), acceptance test and mu schedule."""

    def __init__(self, T=100, dt=0.05, m_cart=1.0, m_pole=0.1, l=0.5, g=9.81):
        self.T, self.dt, self.mc, self.mp, self.l, self.g = T, dt, m_cart, m_pole, l, g
        self.alphas = 10.0 ** np.linspace(0, -3, 11)

    def f(self, x, u):
        """xdot for one state (4,) or a batch (N, 4) with controls (1,) / (N, 1)."""
        mc, mp, l, g = self.mc, self.mp, self.l, self.g
        th, pd, thd, f = x[..., 1], x[..., 2], x[..., 3], u[..., 0]
        s, c = np.sin(th), np.cos(th)
        den = mc + mp * s * s
        pdd = (f + mp * s * (l * thd * thd + g * c)) / den
        thdd = (-f * c - mp * l * thd * thd * c * s - (mc + mp) * g * s) / (l * den)
        return np.stack([pd, thd, pdd, thdd], axis=-1)

    def step(self, x, u):
        h = self.dt
        k1 = self.f(x, u)
        k2 = self.f(x + h / 2 * k1, u)
        k3 = self.f(x + h / 2 * k2, u)
        k4 = self.f(x + h * k3, u)
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    def cost(self, X, U):
        E = X - CP_GOAL
        return float(0.5 * np.einsum("ti,ij,tj->", E[:-1], CP_Q, E[:-1]) + 0.5 * CP_R * np.sum(U ** 2)
                     + 0.5 * E[-1] @ CP_QF @ E[-1])

    def rollout(self, x0, U, X=None, K=None, k=None, alpha=0.0):
        Xn = np.zeros((self.T + 1, 4))
        Un = np.zeros_like(U)
        Xn[0] = x0
        for t in range(self.T):
            Un[t] = U[t] if K is None else U[t] + alpha * k[t] + K[t] @ (Xn[t] - X[t])
            Xn[t + 1] = self.step(Xn[t], Un[t])
        return Xn, Un

    def jacobians(self, X, U, eps=1e-6):
        """Central differences for the whole horizon at once: one vectorized RK4 on 10 T states."""
        T = U.shape[0]
        Z = np.concatenate([X[:T], U], axis=1)                      # (T, 5)
        D = np.concatenate([np.eye(5), -np.eye(5)]) * eps           # (10, 5)
        Zp = (Z[:, None, :] + D[None]).reshape(-1, 5)
        Y = self.step(Zp[:, :4], Zp[:, 4:]).reshape(T, 2, 5, 4)
        J = ((Y[:, 0] - Y[:, 1]) / (2 * eps)).transpose(0, 2, 1)   # (T, 4, 5)
        return J[:, :, :4], J[:, :, 4:]

    def solve(self, x0, iterations: int):
        T = self.T
        U = np.zeros((T, 1))
        X, U = self.rollout(x0, U)
        J = self.cost(X, U)
        mu, delta = 1.0, 1.0
        done = 0
        while done < iterations:
            fx, fu = self.jacobians(X, U)
            Vx, Vxx = CP_QF @ (X[T] - CP_GOAL), CP_QF.copy()
            K, k = np.zeros((T, 1, 4)), np.zeros((T, 1))
            dV = np.zeros(2)
            ok = True
            for t in range(T - 1, -1, -1):
                A, B = fx[t], fu[t]
                lx, lu = CP_Q @ (X[t] - CP_GOAL), CP_R * U[t]
                Qx, Qu = lx + A.T @ Vx, lu + B.T @ Vx
                Qxx = CP_Q + A.T @ Vxx @ A
                Quu = CP_R * np.eye(1) + B.T @ Vxx @ B
                Qux = B.T @ Vxx @ A
                Quu_r = Quu + mu * B.T @ B
                Qux_r = Qux + mu * B.T @ A
                try:
                    np.linalg.cholesky(Quu_r)
                except np.linalg.LinAlgError:
                    ok = False
                    break
                k[t] = -np.linalg.solve(Quu_r, Qu)
                K[t] = -np.linalg.solve(Quu_r, Qux_r)
                dV += [k[t] @ Qu, 0.5 * k[t] @ Quu @ k[t]]
                Vx = Qx + K[t].T @ Quu @ k[t] + K[t].T @ Qu + Qux.T @ k[t]
                Vxx = Qxx + K[t].T @ Quu @ K[t] + K[t].T @ Qux + Qux.T @ K[t]
                Vxx = 0.5 * (Vxx + Vxx.T)
            if not ok:
                delta = max(2.0, 2.0 * delta)
                mu = max(1e-6, mu * delta)
                continue
            for alpha in self.alphas:
                Xn, Un = self.rollout(x0, U, X, K, k, alpha)
                Jn = self.cost(Xn, Un)
                expected = -alpha * (dV[0] + alpha * dV[1])
                z = (J - Jn) / expected if expected > 0 else np.sign(J - Jn)
                if z > 0:
                    X, U, J = Xn, Un, Jn
                    delta = min(0.5, delta / 2.0)
                    mu = mu * delta if mu * delta > 1e-6 else 0.0
                    break
            else:
                delta = max(2.0, 2.0 * delta)
                mu = max(1e-6, mu * delta)
            done += 1
        return X, U, J


def bench_numpy_reference(iterations: int = 15, repeats: int = 2) -> dict:
    ref = NumpyILQR()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        ref.solve(np.zeros(4), iterations)
        best = min(best, time.perf_counter() - t)
    return {"numpy_ref_ms_per_iter": 1e3 * best / iterations}


def check_reference_agrees(iterations: int = 10) -> float:
    """Both implementations take the same first iterations: relative cost difference after 10."""
    dyn, cost = cartpole_problem()
    ours = ILQR(dyn, cost, 100, options=ILQROptions(max_iter=iterations, consistent_gains=False))
    a = ours.solve(np.zeros(4)).cost
    _, _, b = NumpyILQR().solve(np.zeros(4), iterations)
    return abs(a - b) / abs(b)


# ----------------------------------------------------------------------------- horizon scaling
def bench_horizon_scaling(horizons=(25, 50, 100, 200, 400), iterations: int = 10, repeats: int = 3) -> dict:
    dyn, cost = cartpole_problem()
    out = {}
    for T in horizons:
        solver = ILQR(dyn, cost, T, options=ILQROptions(max_iter=iterations, consistent_gains=False))
        best = math.inf
        for _ in range(repeats):
            t = time.perf_counter()
            res = solver.solve(np.zeros(4))
            best = min(best, (time.perf_counter() - t) / res.iterations)
        out[str(T)] = 1e6 * best / T
    return {"us_per_node": out}


# ----------------------------------------------------------------------------- pendulum sampling
def gym_pendulum():
    model = pendulum(1.0, 1.0, 10.0, inertia="rod")
    dyn = model.discretize(0.05, "semi_implicit_euler")
    x, u = model.x, model.u
    th = x[0] - 2 * np.pi * ca.floor(x[0] / (2 * np.pi)) - np.pi      # Gym's angle_normalize(theta_gym)
    cost = Cost(x, u, th ** 2 + 0.1 * x[1] ** 2 + 0.001 * u[0] ** 2, th ** 2 + 0.1 * x[1] ** 2,
                name="gym_pendulum")
    return dyn, cost


def bench_sampling(steps: int = 200) -> dict:
    dyn, cost = gym_pendulum()
    planners = {
        "mppi": MPPI(dyn, cost, 15, 1000, u_lower=-2.0, u_upper=2.0, temperature=1.0, noise_sigma=1.0, seed=0),
        "cem": CEM(dyn, cost, 15, 200, u_lower=-2.0, u_upper=2.0, iterations=4, seed=0),
        "random_shooting": RandomShooting(dyn, cost, 15, 1000, u_lower=-2.0, u_upper=2.0, seed=0),
    }
    out = {}
    for name, planner in planners.items():
        mpc = MPC(planner)
        x = np.zeros(2)
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            st = mpc.step(x)
            times.append(time.perf_counter() - t)
            x = dyn.step(x, st.u)
        out[f"{name}_ms_per_cmd"] = 1e3 * statistics.median(times)
        out[f"{name}_final_angle_err_rad"] = float(abs(wrap(x[0] - np.pi)))
        out[f"{name}_swung_up"] = bool(abs(wrap(x[0] - np.pi)) < 0.1 and abs(x[1]) < 0.5)
    return out


# ----------------------------------------------------------------------------- Panda
PANDA_Q0 = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785])
PANDA_DQ = np.array([0.4, 0.3, -0.2, 0.3, 0.2, -0.2, 0.1])


def panda_problem():
    rb = RigidBodyModel(pybullet_data.getDataPath() + "/franka_panda/panda.urdf",
                        joints=[f"panda_joint{i}" for i in range(1, 8)],
                        locked={"panda_finger_joint1": 0.02, "panda_finger_joint2": 0.02})
    model = arm(rb)
    dyn = model.discretize(0.01, "semi_implicit_euler")
    x, u = model.x, model.u
    q = x[:7]
    R, p = rb.link_pose("panda_hand", q)
    goal = ca.SX.sym("goal", 12)                                   # position, vec(R) column-major
    x_reg = np.r_[PANDA_Q0, np.zeros(7)]
    pose = ca.vertcat(p - goal[:3], ca.vec(R) - goal[3:])
    r_run = ca.vertcat(pose, x - x_reg, u - rb.gravity_torques(q))
    w_run = np.r_[np.ones(3), np.full(9, 0.1), np.full(21, 1e-4)]
    cost = Cost.least_squares(x, u, r_run, w_run, ca.vertcat(pose, x[7:]),
                              np.r_[np.full(3, 1e4), np.full(9, 1e3), np.ones(7)], goal, name="panda_reach")
    fk = rb.link_pose_function("panda_hand")
    Rg, pg = (np.array(a) for a in fk(PANDA_Q0 + PANDA_DQ))
    goal_value = np.r_[pg.ravel(), Rg.T.ravel()]
    g0 = np.array(rb.function("gravity_torques")(PANDA_Q0)).ravel()
    return rb, dyn, cost, goal_value, fk, pg.ravel(), g0


def bench_panda(repeats: int = 3, mpc_steps: int = 150) -> dict:
    t = time.perf_counter()
    rb, dyn, cost, goal, fk, pg, g0 = panda_problem()
    solver = ILQR(dyn, cost, 100, options=ILQROptions(max_iter=100))
    build = time.perf_counter() - t
    x0 = np.r_[PANDA_Q0, np.zeros(7)]
    best = None
    for _ in range(repeats):
        t = time.perf_counter()
        res = solver.solve(x0, np.tile(g0, (100, 1)), goal)
        dt = time.perf_counter() - t
        if best is None or dt < best[0]:
            best = (dt, res)
    dt, res = best
    err = float(np.linalg.norm(np.array(fk(res.x[-1, :7])[1]).ravel() - pg))
    out = {"panda_ilqr_ms_per_iter": 1e3 * dt / res.iterations, "panda_solve_s": dt,
           "panda_iterations": res.iterations, "panda_final_pos_err_m": err, "panda_build_s": build}
    # warm-started receding horizon: N=50, at most 2 iterations per step, plant = the model
    planner = ILQR(dyn, cost, 50, options=ILQROptions(max_iter=2, consistent_gains=False))
    mpc = MPC(planner, max_iter=2)
    mpc.reset(np.tile(g0, (50, 1)))
    x = x0.copy()
    times = []
    for _ in range(mpc_steps):
        t = time.perf_counter()
        st = mpc.step(x, goal)
        times.append(time.perf_counter() - t)
        x = dyn.step(x, st.u)
    out["panda_mpc_hz"] = 1.0 / statistics.median(times)
    out["panda_mpc_final_pos_err_m"] = float(np.linalg.norm(np.array(fk(x[:7])[1]).ravel() - pg))
    return out


# ----------------------------------------------------------------------------- acrobot
def bench_acrobot(repeats: int = 3) -> dict:
    L = 0.2
    model = acrobot(1.0, 1.0, L, L, L / 2, L / 2, L * L / 12, L * L / 12, 0.0, 0.0)
    dyn = model.discretize(0.01, "rk4")
    x, u = model.x, model.u
    goal = np.array([np.pi, 0.0, 0.0, 0.0])
    e = x - goal
    cost = Cost(x, u, 0.5 * ca.dot(ca.DM([1e-3, 1e-3, 1e-4, 1e-4]) * e, e) + 5e-4 * u[0] ** 2,
                0.5e4 * ca.dot(ca.DM([1.0, 1.0, 0.1, 0.1]) * e, e), name="bench_acrobot")
    solver = ILQR(dyn, cost, 100, options=ILQROptions(max_iter=300))
    best = None
    for _ in range(repeats):
        t = time.perf_counter()
        res = solver.solve(np.zeros(4))
        dt = time.perf_counter() - t
        if best is None or dt < best[0]:
            best = (dt, res)
    dt, res = best
    return {"acrobot_ilqr_ms_per_iter": 1e3 * dt / res.iterations, "acrobot_solve_s": dt,
            "acrobot_iterations": res.iterations,
            "acrobot_final_err_rad": float(np.abs(wrap(res.x[-1, :2] - goal[:2])).max())}


# ----------------------------------------------------------------------------- NMPC
def bench_nmpc(steps: int = 150) -> dict:
    """Closed loop from hanging, plant = the model. Reported per mode with the NLP functions compiled
    to C (jit=True, built once and cached) and, for comparison, on CasADi's VM (expand=True)."""
    dyn = cartpole(1.0, 0.1, 0.8).discretize(0.02, "rk4")
    cost = quadratic_cost(4, 1, [1e3, 1e3, 1e-2, 1e-2], [1e-2], [1e3, 1e3, 1e-2, 1e-2], name="acados_cartpole")
    cost.set_default_params([0.0, np.pi, 0.0, 0.0])
    out = {}
    for mode in ("rti", "ipopt"):
        for jit in (True, False):
            t = time.perf_counter()
            planner = NMPC(dyn, cost, 40, u_lower=-80.0, u_upper=80.0, mode=mode, jit=jit)
            build = time.perf_counter() - t
            mpc = MPC(planner)
            x = np.zeros(4)
            times, fallbacks, max_u = [], 0, 0.0
            for _ in range(steps):
                t = time.perf_counter()
                st = mpc.step(x)
                times.append(time.perf_counter() - t)
                fallbacks += st.fallback
                max_u = max(max_u, float(np.abs(st.u).max()))
                x = dyn.step(x, st.u)
            key = f"nmpc_{mode}" if jit else f"nmpc_{mode}_vm"
            out[f"{key}_ms_per_step"] = 1e3 * statistics.median(times)
            out[f"{key}_p90_ms"] = 1e3 * float(np.percentile(times, 90))
            out[f"{key}_final_angle_err_rad"] = float(abs(wrap(x[1] - np.pi)))
            out[f"{key}_fallbacks"] = fallbacks
            out[f"{key}_max_abs_u"] = max_u
            out[f"{key}_build_s"] = build
    return out


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True, help="write the results here")
    args = ap.parse_args(argv)
    t_all = time.perf_counter()
    res: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                 "python": sys.version.split()[0], "casadi": ca.__version__, "numpy": np.__version__,
                 "c_codegen": jit_available(), "threads": os.environ.get("OMP_NUM_THREADS")}
    log(f"[bench_controllers] C code generation: {'on' if res['c_codegen'] else 'off (no compiler)'}; "
        "first run compiles and caches the CasADi code")
    steps = [("cart-pole iLQR", bench_cartpole), ("NumPy reference iLQR", bench_numpy_reference),
             ("horizon scaling", bench_horizon_scaling), ("pendulum MPPI / CEM / shooting", bench_sampling),
             ("Panda reach + MPC", bench_panda), ("acrobot iLQR", bench_acrobot), ("cart-pole NMPC", bench_nmpc)]
    for name, fn in steps:
        t = time.perf_counter()
        res.update(fn())
        log(f"  {name:<32} done in {time.perf_counter() - t:6.1f} s")
    res["numpy_ref_speedup"] = res["numpy_ref_ms_per_iter"] / res["cartpole_ilqr_ms_per_iter"]
    res["numpy_ref_cost_rel_diff_after_10_iters"] = check_reference_agrees()
    res["targets"] = {}
    for key, (limit, op) in TARGETS.items():
        ok = res[key] <= limit if op == "<=" else res[key] >= limit
        res["targets"][key] = {"value": res[key], "target": f"{op} {limit:g}", "met": bool(ok)}
    res["total_s"] = time.perf_counter() - t_all

    rows = [
        ("cart-pole iLQR ms/iter", res["cartpole_ilqr_ms_per_iter"], "<= 2", "cartpole_ilqr_ms_per_iter"),
        ("cart-pole swing-up solve s", res["cartpole_solve_s"], "<= 0.3", "cartpole_solve_s"),
        ("cart-pole final angle err rad", res["cartpole_final_angle_err_rad"], "<= 0.05",
         "cartpole_final_angle_err_rad"),
        ("cart-pole iterations", res["cartpole_iterations"], "", None),
        ("NumPy FD iLQR ms/iter (reference)", res["numpy_ref_ms_per_iter"], "", None),
        ("speed-up vs NumPy reference", res["numpy_ref_speedup"], "", None),
        ("Panda iLQR ms/iter (N=100)", res["panda_ilqr_ms_per_iter"], "<= 4", "panda_ilqr_ms_per_iter"),
        ("Panda reach final pos err m", res["panda_final_pos_err_m"], "", None),
        ("Panda MPC Hz (N=50, <=2 it)", res["panda_mpc_hz"], ">= 200", "panda_mpc_hz"),
        ("MPPI ms/cmd (K=1000, T=15)", res["mppi_ms_per_cmd"], "<= 1.5", "mppi_ms_per_cmd"),
        ("MPPI swung up", res["mppi_swung_up"], "", None),
        ("CEM ms/cmd / swung up", f"{res['cem_ms_per_cmd']:.3f} / {res['cem_swung_up']}", "", None),
        ("shooting ms/cmd / swung up",
         f"{res['random_shooting_ms_per_cmd']:.3f} / {res['random_shooting_swung_up']}", "", None),
        ("acrobot iLQR ms/iter / err rad",
         f"{res['acrobot_ilqr_ms_per_iter']:.3f} / {res['acrobot_final_err_rad']:.4f}", "", None),
        ("NMPC RTI ms/step", res["nmpc_rti_ms_per_step"], "<= 3", "nmpc_rti_ms_per_step"),
        ("NMPC ipopt ms/step", res["nmpc_ipopt_ms_per_step"], "<= 6", "nmpc_ipopt_ms_per_step"),
        ("NMPC RTI / ipopt ms/step, CasADi VM",
         f"{res['nmpc_rti_vm_ms_per_step']:.3f} / {res['nmpc_ipopt_vm_ms_per_step']:.3f}", "", None),
    ]
    print()
    print(f"{'metric':<38} {'value':>14}  {'target':>8}  met")
    for label, value, target, key in rows:
        v = f"{value:.4g}" if isinstance(value, float) else str(value)
        met = "" if key is None else ("yes" if res["targets"][key]["met"] else "NO")
        print(f"{label:<38} {v:>14}  {target:>8}  {met}")
    print("us per node (cart-pole iLQR): " + ", ".join(f"T={T}: {v:.1f}" for T, v in res["us_per_node"].items()))
    print(f"speed-up over the NumPy finite-difference iLQR: {res['numpy_ref_speedup']:.1f}x "
          f"(same algorithm: cost after 10 iterations agrees to {res['numpy_ref_cost_rel_diff_after_10_iters']:.1e})")
    with open(args.json, "w") as fh:
        json.dump(res, fh, indent=2)
    print(f"wrote {args.json} ({res['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
