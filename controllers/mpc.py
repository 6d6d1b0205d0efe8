"""Receding-horizon control over any trajectory planner.

Each control step: warm-start the planner with the previous plan shifted by one step, solve until
done or until the real-time budget runs out (the planner then returns the best plan so far), and
apply the plan's first control. When the planner fails (no usable plan, non-finite controls, an
exception from the solver), fall back to the previous plan shifted by one step, executed with its
own feedback gains, and say so in the step's status.

The planner is any `Planner` (controllers.planner): `horizon`, `nx`, `nu` and
    solve(x0, U_init=None, params=None, *, max_iter=None, deadline=None) -> TrajectoryResult
(`ILQR`, `NMPC`, `MPPI`, `CEM`, `RandomShooting`), and optionally `reset()`.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from .dynamics import as_vector
from .planner import Planner
from .result import SolverStatus, TrajectoryResult

__all__ = ["MPC", "MPCStep"]


@dataclass
class MPCStep:
    u: np.ndarray                 # the control to apply now
    status: SolverStatus          # the planner's status this step (FAILED when we fell back)
    fallback: bool                # True: u comes from the shifted previous plan (or the safe default)
    plan: TrajectoryResult | None  # the plan now in force
    solve_time: float             # seconds spent in this step
    iterations: int
    message: str = ""


class MPC:
    """MPC(planner, budget=None, max_iter=None, default_u=None).

    budget: seconds of real time per step (None: unlimited); max_iter: planner iterations per
    step (e.g. 1-2 for real-time iLQR); default_u: applied only if the very first solve fails
    (default: zeros) — with `fallback=True` and status FAILED, so the caller knows.
    """

    def __init__(self, planner: Planner, *, budget: float | None = None, max_iter: int | None = None,
                 default_u=None, history_length: int = 1000):
        if not isinstance(planner, Planner) or not callable(planner.solve):
            missing = [m for m in ("horizon", "nx", "nu", "solve") if not hasattr(planner, m)]
            raise ValueError(f"planner must be a controllers.Planner: horizon, nx, nu and "
                             f"solve(x0, U_init, params, max_iter=, deadline=); missing {missing}")
        self.planner = planner
        self.horizon, self.nx, self.nu = int(planner.horizon), int(planner.nx), int(planner.nu)
        if budget is not None and not budget > 0:
            raise ValueError(f"budget must be positive seconds, got {budget}")
        if max_iter is not None and int(max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        self.budget, self.max_iter = budget, max_iter
        self.default_u = np.zeros(self.nu) if default_u is None else as_vector(default_u, self.nu, "default_u")
        self.history: deque[MPCStep] = deque(maxlen=history_length)   # the latest steps
        self.reset()

    def reset(self, U_init=None) -> None:
        """Forget the current plan; U_init (T, nu) seeds the next solve."""
        self._plan: TrajectoryResult | None = None
        self._U_init = None if U_init is None else np.asarray(U_init, dtype=float)
        if hasattr(self.planner, "reset"):
            self.planner.reset()

    @property
    def plan(self) -> TrajectoryResult | None:
        return self._plan

    def step(self, x, params=None, *, deadline: float | None = None) -> MPCStep:
        """Plan from the measured state x and return the control to apply now."""
        t0 = time.perf_counter()
        x = as_vector(x, self.nx, "measured state x")
        if deadline is None and self.budget is not None:
            deadline = t0 + self.budget
        warm = self._plan.shifted(1).u if self._plan is not None else self._U_init
        try:
            res = self.planner.solve(x, warm, params, max_iter=self.max_iter, deadline=deadline)
            ok = res.status.usable and np.all(np.isfinite(res.u)) and np.all(np.isfinite(res.x))
            why = res.message
            status = res.status
        except (RuntimeError, ArithmeticError, np.linalg.LinAlgError) as exc:
            res, ok, why, status = None, False, f"planner raised {type(exc).__name__}: {exc}", SolverStatus.FAILED
        if ok:
            self._plan = res
            out = MPCStep(res.u[0].copy(), status, False, res, time.perf_counter() - t0, res.iterations, why)
        elif self._plan is not None:                       # fall back to the shifted previous plan
            self._plan = self._plan.shifted(1)
            u = self._plan.control(0, x)
            out = MPCStep(u, SolverStatus.FAILED, True, self._plan, time.perf_counter() - t0,
                          getattr(res, "iterations", 0), f"fallback to shifted previous plan: {why}")
        else:
            out = MPCStep(self.default_u.copy(), SolverStatus.FAILED, True, None, time.perf_counter() - t0,
                          getattr(res, "iterations", 0), f"no plan yet, applying default_u: {why}")
        self.history.append(out)
        return out
