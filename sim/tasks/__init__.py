"""The s2r tasks as Gymnasium environments, registered under the `s2r/` namespace on import.

    import gymnasium as gym, sim.tasks
    env = gym.make("s2r/ArmPush-v0", randomization="default", image_obs=True)
    # or, without importing first: gym.make("s2r.sim.tasks:s2r/ArmPush-v0")

Every env takes: randomization (None | preset name | YAML path | dict | Randomizer),
image_obs (add a camera image to the observation), image_size (px), render_size (px),
meshes ("decimated" | "stock"), control ("position" | "effort"), config (hardware config).

They pass gymnasium.utils.env_checker.check_env, run under gymnasium.make_vec (vectorization_mode
"sync" or "async": each worker process opens its own pybullet DIRECT client), and their
metadata["render_fps"] is the control rate of their hardware config (one render() per step).
"""
from __future__ import annotations

import gymnasium as gym

from s2r.sim.tasks.arm import ArmInsert, ArmPush, ArmReach
from s2r.sim.tasks.base import TaskEnv
from s2r.sim.tasks.hand import HandGraspLift, HandReach

# id -> (class, episode length in control steps at 100 Hz)
TASKS = {
    "s2r/ArmReach-v0": (ArmReach, 150),
    "s2r/ArmPush-v0": (ArmPush, 600),
    "s2r/ArmInsert-v0": (ArmInsert, 250),
    "s2r/HandReach-v0": (HandReach, 100),
    "s2r/HandGraspLift-v0": (HandGraspLift, 200),
}

for _id, (_cls, _steps) in TASKS.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point=f"{_cls.__module__}:{_cls.__name__}", max_episode_steps=_steps)


def make(task: str, **kwargs) -> gym.Env:
    """gym.make with a clear error for unknown names; accepts "ArmReach" or "s2r/ArmReach-v0"."""
    name = task if task.startswith("s2r/") else f"s2r/{task}"
    if not name.rsplit("-", 1)[-1].startswith("v"):
        name += "-v0"
    if name not in TASKS:
        raise ValueError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    return gym.make(name, **kwargs)


__all__ = ["TASKS", "TaskEnv", "ArmReach", "ArmPush", "ArmInsert", "HandReach", "HandGraspLift", "make"]
