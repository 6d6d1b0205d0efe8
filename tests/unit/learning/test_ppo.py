"""PPO, the model-free baseline of bench_gps: it learns the point mass, its pieces compute what they should."""
import numpy as np
import pytest
import torch

from s2r.learning.agents import PointMassAgent
from s2r.learning.gps import TrainingError
from s2r.learning.ppo import PPO, PPOConfig, _RunningStats


def test_ppo_learns_the_point_mass():
    torch.set_num_threads(1)
    ppo = PPO(PointMassAgent(), PPOConfig(seed=1))
    before = ppo.evaluate(10)
    stats = [ppo.iterate() for _ in range(30)]
    after = ppo.evaluate(10)
    assert stats[-1]["return"] > 0.4 * stats[0]["return"]        # returns are negative costs
    assert after["final_distance"] < 0.5 * before["final_distance"]
    assert stats[-1]["rollouts"] == 30 * 4 * 5 and stats[-1]["dropped"] == 0


def test_advantages_are_generalized_advantage_estimates():
    ppo = PPO(PointMassAgent(), PPOConfig(gamma=0.9, lam=0.8))
    r, v = np.array([1.0, -2.0, 0.5]), np.array([0.3, -0.1, 0.4])
    adv, ret = ppo._advantages([{"rew": r}], [v])
    # by hand: delta_t = r_t + gamma v_{t+1} - v_t (v_3 = 0), A_t = sum_k (gamma lam)^k delta_{t+k}
    delta = r + 0.9 * np.array([-0.1, 0.4, 0.0]) - v
    expect = np.array([delta[0] + 0.72 * delta[1] + 0.72 ** 2 * delta[2], delta[1] + 0.72 * delta[2], delta[2]])
    np.testing.assert_allclose(adv, expect)
    np.testing.assert_allclose(ret, expect + v)
    # gamma = lam = 1 and zero values: the advantage is the reward-to-go
    adv1, _ = PPO(PointMassAgent(), PPOConfig(gamma=1.0, lam=1.0))._advantages([{"rew": r}], [np.zeros(3)])
    np.testing.assert_allclose(adv1, [-0.5, -1.5, 0.5])


def test_log_prob_is_the_diagonal_gaussian_density():
    ppo = PPO(PointMassAgent())
    obs, act = torch.randn(6, 4), torch.randn(6, 2)
    with torch.no_grad():
        ref = torch.distributions.Normal(ppo.policy(obs), ppo.log_std.exp()).log_prob(act).sum(-1)
        got = ppo._log_prob(obs, act)
    # _log_prob drops the constant -log(2 pi)/2 per dimension, which cancels in the probability ratio
    torch.testing.assert_close(got - 2 * 0.5 * np.log(2 * np.pi), ref)


def test_running_stats_match_the_statistics_of_all_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (n, 5)) for n in (7, 40, 1, 13)]
    st = _RunningStats(5)
    for b in batches:
        st.update(b)
    allb = np.concatenate(batches)
    np.testing.assert_allclose(st.mean, allb.mean(0))
    np.testing.assert_allclose(st.std, allb.std(0))


def test_non_finite_samples_are_dropped_and_all_of_them_stop_training():
    ppo = PPO(PointMassAgent())
    with torch.no_grad():
        ppo.policy.net[-1].bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match="non-finite"):
        ppo.iterate()
    assert ppo.dropped_samples == 20


def test_ppo_refuses_bad_configurations_and_image_agents():
    with pytest.raises(ValueError, match="clip"):
        PPOConfig(clip=1.5).validate()
    with pytest.raises(ValueError, match=">= 1"):
        PPOConfig(epochs=0).validate()

    class ImageAgent(PointMassAgent):
        images = True
    with pytest.raises(ValueError, match="state-based"):
        PPO(ImageAgent())
