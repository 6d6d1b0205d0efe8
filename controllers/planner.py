"""The contract between `MPC` and a trajectory planner: the `Planner` protocol.

ILQR, NMPC, RandomShooting, CEM and MPPI satisfy it; so does any object with these members (a
wrapper, a learned planner). `isinstance(obj, Planner)` checks that the members exist (not their
signatures).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from .result import TrajectoryResult

__all__ = ["Planner"]


@runtime_checkable
class Planner(Protocol):
    """A finite-horizon planner over states of size nx and controls of size nu.

    solve: plan from x0 over `horizon` steps. U_init: a (horizon, nu) warm start or a
    TrajectoryResult (None: cold start); params: the cost parameters (one vector or one row per
    step); max_iter: an iteration budget for this call (None: the planner's own); deadline: a
    `time.perf_counter()` value by which to return the best plan so far (status DEADLINE).
    Failures are returned as status FAILED, not raised; invalid arguments raise ValueError.

    A planner may also have `reset()` (forget warm-start state, re-seed); MPC calls it when present.
    """

    horizon: int
    nx: int
    nu: int

    def solve(self, x0, U_init=None, params=None, *, max_iter: int | None = None,
              deadline: float | None = None) -> TrajectoryResult:
        ...
