"""The GPS tasks by name: their agents (`make_agent`), the derived observation keys a policy's
metadata may list (`state_vector`, which `s2r eval` uses to build a policy's state input) and the
scene a policy was trained in (`scene_kwargs`)."""
from __future__ import annotations

import numpy as np

from .agents import ArmReachAgent, PointMassAgent
from .insert_agent import INSERT_DERIVED_OBS, ArmInsertAgent, phase

__all__ = ["GPS_TASKS", "DERIVED_OBS", "make_agent", "task_id", "state_vector", "scene_kwargs"]

# observation keys a policy's metadata may list that are computed from the task's observations
DERIVED_OBS = {"target_minus_tcp": lambda obs: np.asarray(obs["target"], float) - np.asarray(obs["tcp_pos"], float),
               **INSERT_DERIVED_OBS}


def state_vector(obs: dict, keys, step: int = 0, episode_steps: int | None = None) -> np.ndarray:
    """The state input named by a policy's `obs_keys` (observation keys, DERIVED_OBS, or "phase":
    `phase(step, episode_steps)`, step = control steps since the episode began); "image" is skipped."""
    def value(k):
        if k == "phase":
            if not episode_steps:
                raise ValueError("the policy takes the episode's phase but its metadata has no episode_steps")
            return phase(step, episode_steps)
        return DERIVED_OBS[k](obs) if k in DERIVED_OBS else obs[k]
    return np.concatenate([np.asarray(value(k), float).ravel() for k in keys if k != "image"])


def scene_kwargs(meta: dict) -> dict:
    """The task options (sim.tasks.make) that rebuild the scene a policy's metadata says it was
    trained in: the image agents' visible target marker and stand, ArmInsert's peg shape."""
    kw = {}
    if meta.get("target_marker_radius_m"):
        kw["target_marker_radius"] = float(meta["target_marker_radius_m"])
        if meta.get("target_marker_rgba"):
            kw["target_marker_rgba"] = tuple(meta["target_marker_rgba"])
    if meta.get("target_stand"):
        kw["target_stand"] = True
    if "peg_shape" in meta:
        kw["shape"] = meta["peg_shape"]
    return kw


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
