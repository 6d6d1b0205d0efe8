"""Which iteration's policy a training run exports (`export_policy` of GPSConfig and PLATOConfig).

"best": the last kept iteration's policy, unless the kept iteration with the highest held-out
success (the latest of equals) beat it significantly. Every iteration is scored on the same
held-out starts (the agent's held-out seeds, apart from training's and from `s2r eval`'s 50000...),
so two iterations' outcomes are paired, and the test is McNemar's: of the starts where the two
disagree, does the best succeed on more than chance allows (one-sided, p < SIGNIFICANCE)? It is
the mid-p version, which Fagerland, Lydersen & Laake (BMC Med. Res. Methodol. 2013) recommend over
the exact conditional test, too conservative at these counts. A last iteration that lost 25 points on 20
starts is replaced; one 10 points down, within what 20 starts resolve, is not (an earlier, noisier
maximum would trade a more trained policy for luck).
"last": the final kept iteration's policy, whatever it scored. Either way training goes on from
the last iteration: only the export differs.
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np

EXPORT_CHOICES = ("best", "last")
SIGNIFICANCE = 0.05


def check_export_choice(choice) -> None:
    """ValueError unless `choice` is one of EXPORT_CHOICES."""
    if choice not in EXPORT_CHOICES:
        raise ValueError(f"export_policy must be 'best' or 'last', got {choice!r}")


def significantly_better(a, b) -> bool:
    """Whether outcomes `a` beat `b` on the same episodes (0/1 each, in the same order): McNemar's
    mid-p test, one-sided, at SIGNIFICANCE. Different lengths (not the same episodes): False."""
    from scipy.stats import binom
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        return False
    wins, losses = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = wins + losses
    mid_p = binom.sf(wins, n, 0.5) + 0.5 * binom.pmf(wins, n, 0.5)    # P(X > wins) + P(X = wins) / 2
    return wins > losses and mid_p < SIGNIFICANCE


class Export(NamedTuple):
    """What to export: the module, its iteration, and whether that is the best iteration
    replacing the last kept one (`BestPolicy.exported`)."""
    policy: object
    iteration: int
    replaced_last: bool


class BestPolicy:
    """The kept iteration with the best held-out success so far: its number, its per-start
    outcomes and its policy weights."""

    def __init__(self):
        self.iteration: int | None = None
        self.outcomes: list[int] | None = None
        self.weights: dict | None = None

    @property
    def success(self) -> float:
        return float(np.mean(self.outcomes)) if self.outcomes else float("nan")

    def offer(self, iteration: int, outcomes, policy) -> bool:
        """Keep `policy`'s weights if its held-out `outcomes` (0/1 per start; none: no evaluation)
        succeed at least as often as the best so far's."""
        outcomes = [int(bool(x)) for x in outcomes]
        if not outcomes or (self.weights is not None and np.mean(outcomes) < self.success):
            return False
        self.iteration, self.outcomes = int(iteration), outcomes
        self.weights = copy.deepcopy(policy.state_dict())
        return True

    def exported(self, policy, choice: str, history: list[dict]):
        """The Export: `policy` holds the last kept iteration's weights (in
        `history`: the last entry with an iteration that is not `rejected`); a copy with the best
        iteration's weights where `choice` is "best" and that iteration is significantly better."""
        kept = [h for h in history if "iteration" in h and not h.get("rejected")]
        if not kept:
            return Export(policy, 0, False)
        last = kept[-1]
        if (choice == "last" or self.weights is None or self.iteration == last["iteration"]
                or not significantly_better(self.outcomes, last.get("held_out", []))):
            return Export(policy, int(last["iteration"]), False)
        best = copy.deepcopy(policy)
        best.load_state_dict(self.weights)
        return Export(best, self.iteration, True)

    def state_dict(self) -> dict | None:
        return None if self.weights is None else {"iteration": self.iteration, "outcomes": self.outcomes,
                                                   "weights": self.weights}

    def load_state_dict(self, st: dict | None) -> None:
        """`st` from `state_dict`; None (older checkpoints, or nothing kept yet): no best."""
        self.__init__()
        if st is not None:
            self.iteration, self.outcomes, self.weights = int(st["iteration"]), list(st["outcomes"]), st["weights"]
