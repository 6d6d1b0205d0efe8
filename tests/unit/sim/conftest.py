import gymnasium as gym
import numpy as np
import pytest

import s2r.sim.tasks  # noqa: F401  registers s2r/*


@pytest.fixture
def make():
    envs = []

    def _make(env_id, **kw):
        env = gym.make(env_id, **kw)
        envs.append(env)
        return env
    yield _make
    for e in envs:
        e.close()
