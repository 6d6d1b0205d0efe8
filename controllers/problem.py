"""The optimal-control problem every planner here solves, validated once: `Problem`.

    minimize   sum_{t<T} l(x_t, u_t, p_t) + l_f(x_T, p_T)
    subject to x_{t+1} = f(x_t, u_t),  u_lower <= u_t <= u_upper,  x_lower <= x_t <= x_upper

A `Problem` holds the dynamics f (`Dynamics`, or `FiniteDifferenceDynamics` around a black-box
step), the `Cost`, the horizon T and the limits, checked against each other when it is built (the
role of Crocoddyl's ShootingProblem). ILQR, NMPC and the sampling planners take one and never
re-check it; their old ``(dynamics, cost, horizon, u_lower=, u_upper=)`` signatures build one
through `as_problem`. It also validates what changes between solves (x0, a warm start, cost
parameters) with the same one-line messages for every planner.
"""
from __future__ import annotations

import math

import numpy as np

from .dynamics import as_trajectory, as_vector
from .result import TrajectoryResult

__all__ = ["Problem", "as_problem", "bounds", "control_bounds"]


def bounds(n: int, lower, upper, what: str, noun: str = "bounds") -> tuple[np.ndarray, np.ndarray]:
    """Validate limits on n values (None = unbounded; a scalar applies to all): no NaN, lower <= upper.
    Messages name them "<what> <noun>" ("state bounds", "control limits")."""
    lo = np.full(n, -np.inf) if lower is None else np.broadcast_to(np.asarray(lower, dtype=float), (n,)).copy()
    hi = np.full(n, np.inf) if upper is None else np.broadcast_to(np.asarray(upper, dtype=float), (n,)).copy()
    if np.any(np.isnan(lo)) or np.any(np.isnan(hi)):
        raise ValueError(f"{what} {noun} contain NaN")
    if np.any(lo > hi):
        raise ValueError(f"infeasible {what} {noun}: lower {lo} > upper {hi}")
    return lo, hi


def control_bounds(nu: int, lower, upper) -> tuple[np.ndarray, np.ndarray]:
    """Validate control limits (None = unbounded): finite-or-inf, no NaN, lower <= upper."""
    return bounds(nu, lower, upper, "control", "limits")


class Problem:
    """Problem(dynamics, cost, horizon, *, u_lower=None, u_upper=None, x_lower=None, x_upper=None).

    dynamics: anything with nx, nu, step / rollout / calc / calc_diff (`Dynamics`,
    `FiniteDifferenceDynamics`); cost: a `Cost` over the same nx, nu; horizon: T controls.
    Limits: None (unbounded), a scalar or one value per control / state. Immutable by convention:
    planners keep the arrays they were built with.
    """

    def __init__(self, dynamics, cost, horizon: int, *, u_lower=None, u_upper=None, x_lower=None,
                 x_upper=None):
        for attr in ("nx", "nu", "rollout", "calc", "calc_diff"):
            if not hasattr(dynamics, attr):
                raise ValueError(f"dynamics has no {attr!r}: use Dynamics or FiniteDifferenceDynamics")
        if dynamics.nx != cost.nx or dynamics.nu != cost.nu:
            raise ValueError(f"dynamics (nx={dynamics.nx}, nu={dynamics.nu}) and cost "
                             f"(nx={cost.nx}, nu={cost.nu}) disagree on dimensions")
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer, float)) \
                or not math.isfinite(horizon) or int(horizon) != horizon or horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        self.dynamics, self.cost, self.horizon = dynamics, cost, int(horizon)
        self.nx, self.nu = int(dynamics.nx), int(dynamics.nu)
        self.u_lower, self.u_upper = control_bounds(self.nu, u_lower, u_upper)
        self.x_lower, self.x_upper = bounds(self.nx, x_lower, x_upper, "state")
        self.has_control_limits = bool(np.any(np.isfinite(self.u_lower)) or np.any(np.isfinite(self.u_upper)))
        self.has_state_bounds = bool(np.any(np.isfinite(self.x_lower)) or np.any(np.isfinite(self.x_upper)))
        # every control bounded on both sides: samplers draw uniformly in the box
        self.bounded = bool(np.all(np.isfinite(self.u_lower)) and np.all(np.isfinite(self.u_upper)))

    def __repr__(self) -> str:
        return (f"Problem({getattr(self.dynamics, 'name', 'dynamics')}, {self.cost.name}, T={self.horizon}, "
                f"nx={self.nx}, nu={self.nu}, control limits={self.has_control_limits}, "
                f"state bounds={self.has_state_bounds})")

    # ------------------------------------------------------------------ per-solve inputs
    def initial_state(self, x0) -> np.ndarray:
        return as_vector(x0, self.nx, "initial state x0")

    def params(self, params) -> np.ndarray:
        """Cost parameters for the horizon, (T+1, np) (see `Cost.params_for_horizon`)."""
        return self.cost.params_for_horizon(params, self.horizon)

    def initial_controls(self, U_init) -> np.ndarray | None:
        """A warm start ((T, nu) array or a `TrajectoryResult`) validated and clipped to the limits;
        None stays None."""
        if U_init is None:
            return None
        if isinstance(U_init, TrajectoryResult):
            U_init = U_init.u
        return self.clip(as_trajectory(U_init, self.horizon, self.nu, "initial controls U_init"))

    def clip(self, U: np.ndarray) -> np.ndarray:
        return np.clip(U, self.u_lower, self.u_upper)

    # ------------------------------------------------------------------ evaluation
    def rollout(self, x0, U) -> np.ndarray:
        """States (T+1, nx) of the open-loop rollout of U from x0."""
        return self.dynamics.rollout(x0, U)

    def total_cost(self, X: np.ndarray, U: np.ndarray, P: np.ndarray) -> float:
        """J of states X (T+1, nx) and controls U (T, nu); inf for a non-finite rollout or cost."""
        if not np.all(np.isfinite(X)):
            return math.inf
        J = self.cost.calc(self.cost.create_data(U.shape[0]), X, U, P)
        return J if math.isfinite(J) else math.inf

    def require_no_state_bounds(self, who: str) -> None:
        """One-line refusal for planners that enforce control limits only."""
        if self.has_state_bounds:
            raise ValueError(f"{who} enforces control limits only; a problem with state bounds needs NMPC")


def as_problem(problem_or_dynamics, cost=None, horizon=None, u_lower=None, u_upper=None, *,
               x_lower=None, x_upper=None, who: str = "planner") -> Problem:
    """A planner's first arguments as a `Problem`: a Problem as is (then nothing else may be given),
    or (dynamics, cost, horizon, limits) built into one."""
    if isinstance(problem_or_dynamics, Problem):
        extra = [n for n, v in (("cost", cost), ("horizon", horizon), ("u_lower", u_lower), ("u_upper", u_upper),
                                ("x_lower", x_lower), ("x_upper", x_upper)) if v is not None]
        if extra:
            raise ValueError(f"{who}: given a Problem, do not pass {', '.join(extra)} again")
        return problem_or_dynamics
    if cost is None or horizon is None:
        raise ValueError(f"{who}: pass a Problem, or dynamics, cost and horizon")
    return Problem(problem_or_dynamics, cost, horizon, u_lower=u_lower, u_upper=u_upper,
                   x_lower=x_lower, x_upper=x_upper)
