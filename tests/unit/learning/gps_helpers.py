"""Helpers shared by the GPS tests (plain functions and agents)."""
import numpy as np
import torch

from s2r.learning.agents import PointMassAgent


class ResamplingPointMass(PointMassAgent):
    """Point mass whose training starts are drawn anew (on the unit circle) when asked."""

    def __init__(self):
        super().__init__()
        self.condition_seeds = [0, 1, 2, 3]

    def resample(self, rng):
        self.condition_seeds = [int(s) for s in rng.integers(0, 2**31 - 1, self.n_conditions)]
        ang = [np.random.default_rng(s).uniform(0, 2 * np.pi) for s in self.condition_seeds]
        self.x0 = [np.array([np.cos(a), np.sin(a), 0.0, 0.0]) for a in ang]
        return self.condition_seeds


def wreck(policy) -> None:
    """Large fixed noise on every weight: a policy that fails where it succeeded."""
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 3.0)


def wrecking(train, nth: int):
    """An S-step (`train_policy_weighted`'s signature) that trains, then wrecks the policy on its
    `nth` call (1-based; 0: every call)."""
    calls = []

    def s_step(policy, *args, **kw):
        loss = train(policy, *args, **kw)
        calls.append(1)
        if nth == 0 or len(calls) == nth:
            wreck(policy)
        return loss
    return s_step
