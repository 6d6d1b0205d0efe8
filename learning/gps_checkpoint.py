"""Checkpoints of mirror-descent GPS (`learning.gps.MDGPS`): everything the next iteration needs,
random number generator states included (`gps_state_dict`), and restoring it into a freshly built
MDGPS on the same task and configuration (`load_gps_state_dict`), so that a run resumed from a
checkpoint continues exactly as if it had not stopped. Older checkpoints load too."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from .linear_gaussian import LinearGaussianController, LinearGaussianDynamics


def gps_state_dict(gps) -> dict:
    """The state of `gps` (an MDGPS) as plain values, tensors and arrays (torch.save-able)."""
    return {"algorithm": "gps", "config": asdict(gps.cfg), "iteration": gps.iteration,
            "policy_config": gps.policy.config(), "policy": gps.policy.state_dict(),
            "optimizer": gps.optimizer.state_dict(),
            "controllers": [(c.K, c.k, c.cov) for c in gps.controllers],
            "step_mult": gps.step_mult, "eta": gps.eta,
            "prev_pibar": [None if p is None else (p.K, p.k, p.cov) for p in gps.prev_pibar],
            "prev_dyn": [None if d is None else (d.F, d.f, d.cov, d.x0_mean, d.x0_cov) for d in gps.prev_dyn],
            "prev_xbar": gps.prev_xbar,
            "prev_traj": [None if p is None else (p.K, p.k, p.cov) for p in gps.prev_traj],
            "transitions": gps.transitions, "policy_cov": gps.policy_cov, "pretrained": gps.pretrained,
            "history": gps.history, "best": gps.best.state_dict(), "dropped_samples": gps.dropped_samples,
            "condition_seeds": list(getattr(gps.agent, "condition_seeds", [])),
            "replay": gps.replay,
            "adr": None if gps.adr is None else gps.adr.state_dict(),
            "aux": None if gps.aux is None else {"readout": gps.aux.readout.state_dict(), "points": gps.aux.points,
                                                  "joints": gps.aux.joints, "rel": gps.aux.rel},
            "rng": gps.rng.bit_generator.state, "torch_generator": gps.gen.get_state(),
            "torch_rng": torch.get_rng_state()}


def load_gps_state_dict(gps, st: dict) -> None:
    """Restore `st` (from `gps_state_dict`) into `gps`. A checkpoint from another algorithm, policy,
    task or auxiliary-loss setting raises ValueError."""
    if st.get("algorithm") != "gps":
        raise ValueError(f"checkpoint is from {st.get('algorithm')!r}, not gps")
    if st["policy_config"] != gps.policy.config():
        raise ValueError(f"checkpoint policy {st['policy_config']} does not match {gps.policy.config()}")
    gps.policy.load_state_dict(st["policy"])
    gps.optimizer.load_state_dict(st["optimizer"])
    gps.controllers = [LinearGaussianController(*c) for c in st["controllers"]]
    if len(gps.controllers) != gps.agent.n_conditions or gps.controllers[0].dX != gps.agent.dX:
        raise ValueError("checkpoint controllers do not match the task's conditions or state")
    gps.step_mult, gps.eta = np.array(st["step_mult"]), np.array(st["eta"])
    gps.prev_pibar = [None if p is None else LinearGaussianController(*p) for p in st["prev_pibar"]]
    gps.prev_dyn = [None if d is None else LinearGaussianDynamics(*d) for d in st["prev_dyn"]]
    gps.prev_xbar = list(st.get("prev_xbar", [None] * len(gps.prev_dyn)))  # older runs: quadratic costs only
    # older checkpoints: no previous C-step controllers saved; they are the checkpoint's controllers
    gps.prev_traj = [None if p is None else LinearGaussianController(*p)
                      for p in st.get("prev_traj", [c if p is not None else None
                                                    for c, p in zip(st["controllers"], st["prev_pibar"])])]
    tr = list(st["transitions"])
    if tr and not isinstance(tr[0], list):        # older checkpoints: one pooled history
        tr = [tr] + [[] for _ in range(gps.agent.n_conditions - 1)]
    gps.transitions = tr or [[] for _ in range(gps.agent.n_conditions)]
    gps.policy_cov, gps.pretrained = np.array(st["policy_cov"]), st["pretrained"]
    gps.history, gps.dropped_samples = list(st["history"]), st["dropped_samples"]
    gps.best.load_state_dict(st.get("best"))
    gps.iteration = int(st["iteration"])
    gps.replay = list(st.get("replay", []))
    if (st.get("aux") is None) != (gps.aux is None):
        raise ValueError("checkpoint and configuration disagree on the auxiliary pose loss (aux_pose_weight)")
    if gps.aux is not None:
        gps.aux.readout.load_state_dict(st["aux"]["readout"])
        gps.aux.points, gps.aux.joints, gps.aux.rel = st["aux"]["points"], st["aux"]["joints"], st["aux"]["rel"]
    if st.get("condition_seeds") and hasattr(gps.agent, "condition_seeds"):
        gps.agent.condition_seeds = list(st["condition_seeds"])
    if (st.get("adr") is None) != (gps.adr is None):
        raise ValueError("checkpoint and configuration disagree on ADR (adr)")
    if gps.adr is not None:
        gps.adr.load_state_dict(st["adr"])
        gps.agent.set_randomization_bounds(gps.adr.bounds())
    gps.rng.bit_generator.state = st["rng"]
    gps.gen.set_state(st["torch_generator"])
    torch.set_rng_state(st["torch_rng"])
