"""The GPS tasks by name: their agents (`make_agent`) and the derived observation keys a policy's
metadata may list (`state_vector`, which `s2r eval` uses to build a state policy's input)."""
from __future__ import annotations

import numpy as np

from .agents import ArmReachAgent, PointMassAgent
from .insert_agent import INSERT_DERIVED_OBS, ArmInsertAgent

__all__ = ["GPS_TASKS", "DERIVED_OBS", "make_agent", "task_id", "state_vector"]

# observation keys a policy's metadata may list that are computed from the task's observations
DERIVED_OBS = {"target_minus_tcp": lambda obs: np.asarray(obs["target"], float) - np.asarray(obs["tcp_pos"], float),
               **INSERT_DERIVED_OBS}


def state_vector(obs: dict, keys) -> np.ndarray:
    """The state-policy input named by a policy's `obs_keys` (observation keys or DERIVED_OBS)."""
    return np.concatenate([np.asarray(DERIVED_OBS[k](obs) if k in DERIVED_OBS else obs[k], float).ravel()
                           for k in keys])


GPS_TASKS = {"PointMass": PointMassAgent, "s2r/ArmReach-v0": ArmReachAgent, "s2r/ArmInsert-v0": ArmInsertAgent}


def task_id(task: str) -> str:
    if task in GPS_TASKS:
        return task
    name = task if task.startswith("s2r/") else f"s2r/{task}"
    if not name.rsplit("-", 1)[-1].startswith("v"):
        name += "-v0"
    return name


def make_agent(task: str, *, images: bool = False, image_size: int = 64, randomization=None, **kw):
    """The agent of a task name ("ArmReach", "s2r/ArmReach-v0", "ArmInsert", "PointMass")."""
    name = task_id(task)
    if name not in GPS_TASKS:
        raise ValueError(f"task {task!r} has no GPS agent (supported: {', '.join(GPS_TASKS)})")
    if name == "PointMass":
        if images:
            raise ValueError("PointMass has no camera: --images needs an s2r/ task")
        if randomization not in (None, "off"):
            raise ValueError("PointMass has no domain randomization")
        return PointMassAgent(**kw)
    return GPS_TASKS[name](images=images, image_size=image_size, randomization=randomization, **kw)
