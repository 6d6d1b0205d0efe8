"""The GPS tasks by name: their agents (`make_agent`), the policy input a policy's metadata names
(`state_vector`, built by learning.features) and the scene a policy was trained in (`scene_kwargs`)."""
from __future__ import annotations

import numpy as np

from .agents import ArmReachAgent, PointMassAgent
from .features import compute_features, sim_context
from .hand_agent import HandReachAgent
from .hand_grasp_agent import HandGraspLiftAgent
from .insert_agent import ArmInsertAgent

__all__ = ["GPS_TASKS", "make_agent", "task_id", "state_vector", "scene_kwargs"]


def state_vector(obs: dict, keys, step: int = 0, episode_steps: int | None = None, params: dict | None = None,
                 env=None) -> np.ndarray:
    """The state input named by a policy's `obs_keys` ("image" skipped) for one simulator observation
    at control step `step` of its episode (learning.features; `params`: the metadata's parameters,
    `env`: the task, for the action joints' position targets). Keys that need the episode's past
    (prev_action, histories) are refused: `s2r eval` and the agents use an ObservationBuilder."""
    ctx = sim_context(obs, env)
    ctx.set("step", int(step))
    p = dict(params or {})
    if episode_steps is not None:
        p["episode_steps"] = episode_steps
    return compute_features(keys, ctx, p)


def scene_kwargs(meta: dict) -> dict:
    """The task options (sim.tasks.make) that rebuild the scene a policy's metadata says it was
    trained in: its robot (the hardware config it was trained with), the image agents' visible
    target marker and stand, ArmInsert's peg shape."""
    kw = {}
    if meta.get("hardware_config"):
        kw["config"] = str(meta["hardware_config"])
    if meta.get("target_marker_radius_m"):
        kw["target_marker_radius"] = float(meta["target_marker_radius_m"])
        if meta.get("target_marker_rgba"):
            kw["target_marker_rgba"] = tuple(meta["target_marker_rgba"])
    if meta.get("target_stand"):
        kw["target_stand"] = True
    if "peg_shape" in meta:
        kw["shape"] = meta["peg_shape"]
    return kw


GPS_TASKS = {"PointMass": PointMassAgent, "s2r/ArmReach-v0": ArmReachAgent, "s2r/ArmInsert-v0": ArmInsertAgent,
             "s2r/HandReach-v0": HandReachAgent, "s2r/HandGraspLift-v0": HandGraspLiftAgent}


HAND_TASKS = ("s2r/HandReach-v0", "s2r/HandGraspLift-v0")


def task_id(task: str) -> str:
    if task in GPS_TASKS:
        return task
    name = task if task.startswith("s2r/") else f"s2r/{task}"
    if not name.rsplit("-", 1)[-1].startswith("v"):
        name += "-v0"
    return name


def make_agent(task: str, *, images: bool = False, image_size: int = 64, randomization=None, **kw):
    """The agent of a task name ("ArmReach", "s2r/ArmReach-v0", "ArmInsert", "HandReach", "HandGraspLift",
    "PointMass")."""
    name = task_id(task)
    if name not in GPS_TASKS:
        raise ValueError(f"task {task!r} has no GPS agent (supported: {', '.join(GPS_TASKS)})")
    if name == "PointMass":
        if images:
            raise ValueError("PointMass has no camera: --images needs an s2r/ task")
        if randomization not in (None, "off"):
            raise ValueError("PointMass has no domain randomization")
        if kw.get("config"):
            raise ValueError("PointMass has no robot: --config needs an s2r/ task")
        if kw.get("obs_features") or kw.get("state_features"):
            raise ValueError("PointMass takes no extra observation features (its state is the policy's input)")
        kw.pop("obs_features", None)
        kw.pop("state_features", None)
        return PointMassAgent(**kw)
    return GPS_TASKS[name](images=images, image_size=image_size, randomization=randomization, **kw)


def default_inputs(task: str, randomization=None, adr=None) -> tuple[list[str], list[str]]:
    """The extra inputs a policy gets by default, and the extra entries of the local controllers'
    state, for `task` trained under `randomization` (a preset name, file or dict, or None):
    - a simulator task (position actions, paced by the safety layer's joint limiter as on the
      robot): the targets the actions have integrated (`cmd_offset`), where the limiter has the
      set-point and how fast it moves it toward them (`setpoint_offset`, `setpoint_step`). The next
      state depends on all three, so without them neither the policy's input nor the controllers'
      state is Markov, and the local controllers' fitted dynamics are wrong;
    - under randomization, first the actions still in flight (`prev_action@histK`, K the preset's
      largest action latency, at least 1), for the same reason; one more where ADR (`adr`: its
      parameter names, or ["all"]) may widen the latency (it widens no further than the inputs hold).
    The hand agents' state holds q_cmd - q already, so their controllers' state leaves
    `cmd_offset` out. learning/experiments/RESULTS.md has the measurements. PointMass: none."""
    from s2r.sim.randomization import Randomizer
    name = task_id(task)
    if name == "PointMass":
        return [], []
    extra = ["cmd_offset", "setpoint_offset", "setpoint_step"]
    in_state = [k for k in extra if k != "cmd_offset"] if name in HAND_TASKS else list(extra)
    r = Randomizer.load(randomization)
    if not r.params:
        return list(extra), in_state
    lat = r.params.get("action_latency")
    k = 1
    if lat is not None:
        top = {"constant": lat.value, "randint": lat.high, "uniform": lat.high}.get(lat.dist, 0)
        k = max(1, int(np.max(np.asarray(top if top is not None else 0, float))))
        if lat.dist == "randint" and adr and ("action_latency" in adr or list(adr) == ["all"]):
            k += 1
    hist = f"prev_action@hist{k}" if k > 1 else "prev_action"
    return [hist, *extra], [hist, *in_state]
