"""Planning in a separate process, so a solve never delays a command.

A controller (the ROS mpc_node, say) answers every state sample within microseconds by evaluating
the plan in force, u = u_hat_i + K_i (x - x_hat_i) (`Plan.control`: the time-varying linear
controller every planner here returns). Replanning -- an `MPC` over iLQR built by `builder(spec,
budget, max_iter)` (default `joint_reach.build_reach`), warm-started, with a deadline -- runs in
this worker process at the planning rate, from the newest state it was sent, and sends plans back.
A separate process rather than a thread: CasADi and NumPy hold the GIL for most of a solve, which
would stall the node's callbacks by milliseconds. The worker also runs at a lower CPU priority
(`nice`, 10 by default): a solve can take most of a core, and on a machine with few cores the
node's callbacks, which answer within microseconds, must not wait for a core behind it (the
scheduler lets a woken callback preempt the planner at once). Lowering one's own priority needs no
privileges.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["Plan", "LatestState", "PlannerProcess"]


@dataclass
class Plan:
    """A plan as the worker sends it: the affine controller and what the caller reports about it."""

    goal_id: int
    stamp_ns: int             # the /joint_states stamp of the state it starts from
    dt: float
    x: np.ndarray             # (T+1, n)
    u: np.ndarray             # (T, n)
    K: np.ndarray             # (T, n, n)
    u_lower: np.ndarray | None
    u_upper: np.ndarray | None
    status: str
    fallback: bool
    solve_time: float
    iterations: int
    message: str
    terminal_ee: np.ndarray | None   # planned end-effector position at the horizon
    received: float = 0.0     # time.monotonic() in the node when it arrived

    def control(self, stamp_ns: int, q: np.ndarray) -> np.ndarray:
        """u at the state q measured at stamp_ns (the plan's step nearest in time, held at the ends)."""
        i = int(round((stamp_ns - self.stamp_ns) * 1e-9 / self.dt))
        i = min(max(i, 0), self.u.shape[0] - 1)
        u = self.u[i] + self.K[i] @ (q - self.x[i])
        if self.u_lower is not None:
            u = np.minimum(np.maximum(u, self.u_lower), self.u_upper)
        return u


class LatestState:
    """The newest measured state, in shared memory: the node overwrites it at the control rate,
    the planner reads it when it plans (no queue, no pickling)."""

    def __init__(self, ctx, n: int):
        self.n = n
        self._q = ctx.RawArray("d", n)
        self._stamp = ctx.RawValue("q", -1)
        self._lock = ctx.Lock()

    def write(self, q: np.ndarray, stamp_ns: int) -> None:
        with self._lock:
            self._q[:] = q
            self._stamp.value = stamp_ns

    def read(self):
        with self._lock:
            if self._stamp.value < 0:
                return None
            return np.array(self._q[:]), int(self._stamp.value)


def _worker(conn, latest: LatestState, spec, budget: float, max_iter: int, period: float, nice: int = 0,
            builder=None) -> None:
    import signal

    if builder is None:
        from .joint_reach import build_reach as builder

    signal.signal(signal.SIGINT, signal.SIG_IGN)     # a terminal's Ctrl-C is for the node; we follow it
    if nice > 0:
        os.nice(nice)                                # background work: the node's callbacks go first

    try:
        mpc, fk = builder(spec, budget=budget, max_iter=max_iter)
    except Exception as e:            # report why, then end: the node holds the robot
        conn.send(("error", f"could not build the MPC problem: {type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    goal = None
    goal_id = -1
    next_t = time.monotonic()
    while True:
        try:
            while conn.poll():
                kind, payload = conn.recv()
                if kind == "goal":
                    gid, params = payload
                    if gid != goal_id:
                        goal_id, goal = gid, params
                        mpc.reset()
                        next_t = time.monotonic()      # plan for a new goal at once
                elif kind == "stop":
                    return
            now = time.monotonic()
            state = latest.read()
            if state is None or goal is None or now < next_t:
                conn.poll(0.05 if state is None or goal is None else next_t - now)
                continue
        except (EOFError, OSError):
            return                      # the node is gone
        next_t = max(next_t + period, now)
        q, stamp = state
        try:
            step = mpc.step(q, goal, deadline=time.perf_counter() + budget)
        except ValueError as e:          # e.g. a non-finite state: no plan, the node holds
            conn.send(("error", f"planner refused the state: {e}"))
            continue
        plan = step.plan
        if plan is None:
            conn.send(("error", f"no plan: {step.message}"))
            continue
        try:
            conn.send(("plan", Plan(goal_id, stamp, spec.dt, plan.x, plan.u, plan.K, plan.u_lower, plan.u_upper,
                                    step.status.value, step.fallback, step.solve_time, step.iterations,
                                    step.message, fk(plan.x[-1]))))
        except (BrokenPipeError, OSError):
            return


class PlannerProcess:
    """The caller's side: start the worker, send it states and goals, keep the newest plan.

    spec: what `builder` builds the MPC from (a `joint_reach.ReachSpec` for the default builder; it
    needs `joints` and `dt`); builder: a module-level function (picklable) (spec, budget=, max_iter=)
    -> (mpc, fk), fk mapping a state to the position reported as `Plan.terminal_ee`.
    """

    def __init__(self, spec, budget: float, max_iter: int, period: float, on_message=None, nice: int = 10,
                 builder=None):
        if not 0 <= int(nice) <= 19:
            raise ValueError(f"planner nice must be in [0, 19] (a lower priority than the node), got {nice}")
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._latest = LatestState(ctx, len(spec.joints))
        self.proc = ctx.Process(target=_worker, name="mpc-planner", daemon=True,
                                args=(child, self._latest, spec, budget, max_iter, period, int(nice), builder))
        self.proc.start()
        child.close()
        self.plan: Plan | None = None
        self.ready = False
        self.error = ""
        self.plans = 0
        self._send_lock = threading.Lock()
        self._on_message = on_message
        self._reader = threading.Thread(target=self._read, name="planner-reader", daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            try:
                kind, payload = self._conn.recv()
            except (EOFError, OSError):
                return
            if kind == "plan":
                payload.received = time.monotonic()
                self.plan = payload
                self.plans += 1
            elif kind == "ready":
                self.ready = True
            elif kind == "error":
                self.error = payload
            if self._on_message is not None:
                self._on_message(kind, payload)

    @property
    def alive(self) -> bool:
        return self.proc.is_alive()

    @property
    def niceness(self) -> int | None:
        """The worker's CPU priority as the OS sees it (None once it is gone)."""
        try:
            return os.getpriority(os.PRIO_PROCESS, self.proc.pid)
        except (OSError, TypeError):
            return None

    def _send(self, msg) -> bool:
        with self._send_lock:
            try:
                self._conn.send(msg)
                return True
            except (BrokenPipeError, OSError):
                return False

    def send_state(self, q: np.ndarray, stamp_ns: int) -> None:
        self._latest.write(q, stamp_ns)

    def send_goal(self, goal_id: int, params: np.ndarray) -> bool:
        """A new goal; the plan in force keeps running until the first plan for it arrives."""
        return self._send(("goal", (goal_id, params)))

    def stop(self, timeout: float = 2.0) -> None:
        self._send(("stop", None))
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(1.0)
        try:
            self._conn.close()
        except OSError:
            pass
