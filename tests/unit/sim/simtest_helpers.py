"""Helpers shared by the sim tests."""
import numpy as np


def run_scripted(env, seed, steps=None):
    from s2r.sim.scripted import make_scripted
    obs, info = env.reset(seed=seed)
    ctrl = make_scripted(env)
    steps = steps or env.spec.max_episode_steps
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(ctrl(obs))
    return obs, info


def rollout(env, seed, actions):
    obs, info = env.reset(seed=seed)
    traj = [obs]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        traj.append(obs)
    return traj, info


def random_actions(env, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n,) + env.action_space.shape)


def dying_policy_factory(env):
    """A policy factory whose worker process dies on the spot (no exception to report)."""
    import os
    os._exit(3)
