"""MDGPS against the papers: the step-size rule sees the S-step's failure (and, a measured deviation,
stays off with resampled conditions, where step rejection on the held-out starts undoes a wrecking
iteration instead), the dynamics fit keeps the samples' mean, and every condition
has its own dynamics prior."""
import numpy as np
import pytest
import torch

from s2r.learning.agents import PointMassAgent, Sample
from s2r.learning.dynamics import GMMPrior, fit_linear_gaussian, fit_linear_gaussian_dynamics, linearize_policy
from s2r.learning.gps import MDGPS, GPSConfig

from gps_helpers import ResamplingPointMass, wrecking

FAST = dict(policy_steps=150, eval_episodes=2)


def _step_mults(agent, iterations, **cfg):
    gps = MDGPS(agent, GPSConfig(**FAST, **cfg))
    out = []
    for _ in range(iterations):
        gps.iterate()
        assert np.all(gps.step_mult == gps.step_mult[0])          # one multiplier for every condition
        out.append(float(gps.step_mult[0]))
    return gps, out


def test_step_size_shrinks_when_the_s_step_cannot_follow_the_local_controllers():
    """An S-step that does not move the policy (learning rate 1e-12): the C-step's controller
    predicts a large improvement, the policy realizes none, and the KL step shrinks every iteration.
    (Predicting with the new policy linearization, predicted - actual is model drift only and the
    step grew instead.)"""
    gps, failing = _step_mults(PointMassAgent(), 4, learning_rate=1e-12)
    assert failing[0] == 1.0 and all(b < 0.75 * a for a, b in zip(failing[1:], failing[2:]))
    assert failing[-1] < 0.3
    c = gps.last_step_costs
    assert c["predicted"] < c["previous"] - 10 and c["actual"] > c["predicted"] + 10
    # the same run with a working S-step: the policy follows, the step grows
    _, working = _step_mults(PointMassAgent(), 3)
    assert working[1] > 2.0 and working[2] > 2.0


def test_resampled_conditions_keep_the_configured_step():
    """New start states every iteration: the costs the rule compares belong to different starts,
    so the multiplier stays 1 (applied there it collapsed to its minimum on ArmInsert in two
    iterations: learning/RESULTS.md), even when the S-step fails."""
    gps, mults = _step_mults(ResamplingPointMass(), 3, learning_rate=1e-12, resample_conditions=True)
    assert mults == [1.0, 1.0, 1.0] and gps.last_step_costs is None


def _rejection_run(step_rejection, monkeypatch):
    """Two ordinary iterations on resampled starts, then one whose S-step is wrecked (after it
    trains, its weights get large noise)."""
    import s2r.learning.gps as gps_module
    gps = MDGPS(ResamplingPointMass(), GPSConfig(policy_steps=150, eval_episodes=10, resample_conditions=True,
                                                  step_rejection=step_rejection))
    weights = []                      # after iterations 1 and 2
    for _ in range(2):
        assert not gps.iterate()["rejected"]
        weights.append({k: v.clone() for k, v in gps.policy.state_dict().items()})
    before = weights[-1]
    cov, optimizer_state = gps.policy_cov.copy(), gps.optimizer.state_dict()["state"]
    steps_before = {i: int(st["step"]) for i, st in optimizer_state.items()}
    with monkeypatch.context() as m:
        m.setattr(gps_module, "train_policy_weighted", wrecking(gps_module.train_policy_weighted, 0))
        wrecked = gps.iterate()
    return gps, wrecked, before, cov, steps_before, weights


def test_an_iteration_that_wrecks_the_held_out_success_is_undone_and_the_step_halved(monkeypatch):
    """Step rejection (resampled conditions): the wrecked iteration's policy fails the held-out
    starts; it is undone (the policy, its optimizer's state and its covariance as before it), the KL
    step is halved, the history keeps the iteration marked rejected, and a resumed run learns on
    from the kept policy. Off (0), the wrecked policy stays."""
    gps, wrecked, before, cov, steps_before, _ = _rejection_run(0.25, monkeypatch)
    best = gps.best.success
    assert best >= 0.5 and wrecked["success"] < best - 0.25
    assert wrecked["rejected"] and wrecked["step_mult"] == 1.0 and np.all(gps.step_mult == 0.5)
    assert all(torch.equal(before[k], v) for k, v in gps.policy.state_dict().items())
    assert np.array_equal(gps.policy_cov, cov)
    assert {i: int(st["step"]) for i, st in gps.optimizer.state_dict()["state"].items()} == steps_before
    assert [h["rejected"] for h in gps.history] == [False, False, True]
    resumed = MDGPS(ResamplingPointMass(), gps.cfg)
    resumed.load_state_dict(gps.state_dict())
    assert resumed.best.success == best and np.all(resumed.step_mult == 0.5)
    after = resumed.iterate()
    assert not after["rejected"] and after["step_mult"] == 0.5 and after["success"] >= best - 0.25
    kept, wrecked_off, before_off, *_ = _rejection_run(0.0, monkeypatch)
    assert not wrecked_off["rejected"] and wrecked_off["success"] < 0.5 and np.all(kept.step_mult == 1.0)
    assert not all(torch.equal(before_off[k], v) for k, v in kept.policy.state_dict().items())


def test_the_export_is_the_best_kept_iteration_where_it_is_significantly_better(monkeypatch):
    """GPS: a wrecked last iteration, kept with step rejection off, is not exported: the best kept
    iteration is, also after a resume from the checkpoint; export_policy "last" exports the wrecked
    policy, as does a checkpoint from before the choice existed. With rejection on, the wrecked
    iteration is undone and the last kept one, a start behind the best, stays the export. PLATO
    makes the same choice."""
    from s2r.learning.plato import PLATO, PLATOConfig
    kept, wrecked, _, _, _, weights = _rejection_run(0.0, monkeypatch)
    first, second = (h["held_out"] for h in kept.history[:2])
    assert sum(first) > sum(second) > 5 and sum(wrecked["held_out"]) == 0
    for gps in (kept, MDGPS(ResamplingPointMass(), kept.cfg)):
        if gps is not kept:
            gps.load_state_dict(kept.state_dict())
        policy, it, replaced = gps.exported_policy()
        assert it == 1 and replaced and policy is not gps.policy
        assert all(torch.equal(weights[0][k], v) for k, v in policy.state_dict().items())
    kept.cfg.export_policy = "last"
    assert kept.exported_policy() == (kept.policy, 3, False)
    kept.cfg.export_policy = "best"
    old = kept.state_dict()
    del old["best"]
    kept.load_state_dict(old)
    assert kept.exported_policy() == (kept.policy, 3, False)
    rejecting, *_ = _rejection_run(0.25, monkeypatch)
    assert rejecting.history[-1]["rejected"] and rejecting.exported_policy() == (rejecting.policy, 2, False)
    with pytest.raises(ValueError, match="export_policy must be 'best' or 'last'"):
        GPSConfig(export_policy="final").validate()
    plato = PLATO(PointMassAgent(), PLATOConfig(policy_steps=150, eval_episodes=6))
    for _ in range(2):
        plato.iterate()
    best = {k: v.clone() for k, v in plato.policy.state_dict().items()}
    import s2r.learning.plato as plato_module
    monkeypatch.setattr(plato_module, "train_policy_weighted", wrecking(plato_module.train_policy_weighted, 0))
    assert plato.history[1]["held_out"] == [1] * 6 and plato.iterate()["held_out"] == [0] * 6
    resumed = PLATO(PointMassAgent(), plato.cfg)
    resumed.load_state_dict(plato.state_dict())
    policy, it, replaced = resumed.exported_policy()
    assert it == 2 and replaced and all(torch.equal(best[k], v) for k, v in policy.state_dict().items())


def test_significantly_better_is_mcnemars_mid_p_test_on_paired_outcomes():
    """25 points down on 20 starts is beyond chance, as 5 wins to none (mid-p 1/64) or 6 wins to 1
    (mid-p 0.035, where the exact test's 0.0625 would keep the worse policy); 10 points down (2 wins
    to none, mid-p 0.125) is not; the same rate on other starts is no evidence; unpaired lengths
    never are."""
    from s2r.learning.best_policy import significantly_better
    best = [1] * 19 + [0]
    assert significantly_better(best, [0] * 5 + [1] * 14 + [0])
    assert significantly_better(best, [0] * 6 + [1] * 13 + [1])
    assert not significantly_better(best, [0] * 2 + [1] * 17 + [0])
    assert not significantly_better([1] * 10 + [0] * 10, [0] * 10 + [1] * 10)
    assert not significantly_better([1] * 20, [0] * 10)


def test_dynamics_fit_passes_through_the_samples_mean_whatever_the_prior():
    """mu = mu_hat: at the samples' mean input the fit predicts the samples' mean output, even with a
    strong prior fitted far away; the prior still shapes the slopes (with 5 samples of a 6-input
    regression, the slopes are the prior's)."""
    rng = np.random.default_rng(0)
    A = rng.normal(0, 0.5, (3, 6))
    far = rng.normal(5.0, 1.0, (2000, 6))
    prior = GMMPrior(max_clusters=2, min_points_per_cluster=100, strength=20.0).update(
        np.concatenate([far, far @ A.T + 3.0], axis=1), rng)
    x = rng.normal(0, 1, (5, 6))
    y = x @ A.T + 0.01 * rng.normal(size=(5, 3))
    K, b, _ = fit_linear_gaussian(x, y, prior)
    np.testing.assert_allclose(K @ x.mean(0) + b, y.mean(0), atol=1e-9)
    K0, b0, _ = fit_linear_gaussian(x, y)
    assert np.abs(K - A).max() < 0.5 * np.abs(K0 - A).max()      # the prior's slopes are better
    # the dynamics fit and the policy linearization inherit it, step by step
    X = rng.normal(0, 1, (5, 4, 4))
    U = rng.normal(0, 1, (5, 3, 2))
    X[:, 1:] += 2.0
    dyn = fit_linear_gaussian_dynamics(X, U, prior=GMMPrior(1, 10, 50.0).update(
        rng.normal(-4, 1, (400, 10)), rng))
    for t in range(3):
        np.testing.assert_allclose(dyn.F[t] @ np.r_[X[:, t].mean(0), U[:, t].mean(0)] + dyn.f[t],
                                   X[:, t + 1].mean(0), atol=1e-9)
    pol = linearize_policy(X, U, 0.1 * np.eye(2), GMMPrior(1, 10, 50.0).update(rng.normal(-4, 1, (400, 6)), rng))
    for t in range(3):
        np.testing.assert_allclose(pol.mean(t, X[:, t].mean(0)), U[:, t].mean(0), atol=1e-9)


class _RandomizedGainPointMass(PointMassAgent):
    """Each condition is its own physics draw: the actuators' gain differs (0.5 .. 4), as
    randomized masses or motor gains make it under domain randomization."""
    GAINS = (0.5, 1.0, 2.0, 4.0)

    def rollout(self, condition, act, seed) -> Sample:
        g, rng = self.GAINS[condition], np.random.default_rng(seed)
        X, U = [self.x0[condition].copy()], []
        for t in range(self.T):
            U.append(np.asarray(act(t, X[-1], {"state": X[-1]}), float))
            X.append(self.model.step(X[-1], g * U[-1]) + self.noise * rng.standard_normal(4))
        X, U = np.array(X), np.array(U)
        d = float(np.linalg.norm(X[-1, :2]))
        return Sample(X, U, X.copy(), None, bool(d < self.success_distance), d)


def _gain_errors(mode):
    agent = _RandomizedGainPointMass()
    gps = MDGPS(agent, GPSConfig(**FAST, dynamics_prior=mode))
    gps.iterate()
    B = agent.model.jacobians(np.zeros((1, 4)), np.zeros((1, 2)))[1][0]        # d x' / d u at gain 1
    return [np.abs(gps.prev_dyn[c].F[:, :, 4:] - g * B).max() / (g * np.abs(B).max())
            for c, g in enumerate(agent.GAINS)]


def test_each_condition_has_its_own_dynamics_prior():
    """Conditions with different actuator gains: 5 samples cannot determine the 6-input regression,
    so the prior sets the control slope; a prior per condition finds each condition's gain, one
    pooled over the conditions blends them."""
    own, pooled = _gain_errors("condition"), _gain_errors("pooled")
    assert max(own) < 0.1
    assert max(pooled) > 3 * max(own)
    with pytest.raises(ValueError, match="dynamics_prior"):
        GPSConfig(dynamics_prior="shared").validate()


def test_per_condition_priors_forget_resampled_conditions_and_survive_a_checkpoint():
    agent = ResamplingPointMass()
    gps = MDGPS(agent, GPSConfig(**FAST, resample_conditions=True, prior_iterations=3))
    gps.iterate()
    gps.iterate()
    assert [len(h) for h in gps.transitions] == [1] * 4                  # the current samples only
    fixed = MDGPS(PointMassAgent(), GPSConfig(**FAST, prior_iterations=2))
    for _ in range(3):
        fixed.iterate()
    assert [len(h) for h in fixed.transitions] == [2] * 4
    again = MDGPS(PointMassAgent(), GPSConfig(**FAST, prior_iterations=2))
    again.load_state_dict(fixed.state_dict())
    assert all(np.array_equal(a.K, b.K) for a, b in zip(again.prev_traj, fixed.prev_traj))
    assert [len(h) for h in again.transitions] == [2] * 4
