"""Planning in a separate process: `controllers.planner_process` (kept importable from here)."""
from s2r.controllers.planner_process import LatestState, Plan, PlannerProcess

__all__ = ["LatestState", "Plan", "PlannerProcess"]
