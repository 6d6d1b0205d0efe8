"""Proximal policy optimization (Schulman et al. 2017, "Proximal Policy Optimization Algorithms"):
the model-free baseline that benchmarks/bench_gps.py trains beside GPS, on the same agent, the same
cost and the same condition protocol.

One update = the agent's training conditions x `samples_per_condition` stochastic rollouts (with
`resample_conditions`, new conditions each update, as GPS draws them each iteration), then
`epochs` passes of the clipped surrogate objective over minibatches:

    policy   a ~ N(mu_theta(o), diag(exp(2 log_std))), mu_theta the GPS state MLP (`MLPPolicy`) on the
             same observation; the environment applies clip(a, -1, 1) (the agent's normalized actions)
    reward   r_t = -l_t(x_t, u_t) of the agent's cost, the final cost l_T added to the last step's
    value    an MLP on [observation, t / T] (the episode has a fixed length; without the time the
             value of a state is ambiguous), trained on the discounted returns / a fixed return scale
    GAE      advantages with (gamma, lambda), normalized per update; the episode ends at T (V = 0)

Observations are normalized by running statistics of everything sampled so far (as Gymnasium's
NormalizeObservation), shared by the policy and the value network. Non-finite samples are dropped
and counted, as in GPS.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .agents import collect_samples, evaluate_held_out
from .gps import PolicyRunner, TrainingError
from .policies import MLPPolicy

__all__ = ["PPOConfig", "PPO"]


@dataclass
class PPOConfig:
    samples_per_condition: int = 5
    epochs: int = 10
    minibatch: int = 500
    clip: float = 0.2
    learning_rate: float = 3e-4
    gamma: float = 0.99
    lam: float = 0.95
    init_log_std: float = -0.5        # of the normalized actions
    hidden: tuple = (64, 64)
    max_grad_norm: float = 0.5
    resample_conditions: bool = True  # new training conditions every update (agents with `resample`)
    seed: int = 0

    def validate(self) -> "PPOConfig":
        if self.samples_per_condition < 1 or self.epochs < 1 or self.minibatch < 1:
            raise ValueError("samples_per_condition, epochs and minibatch must be >= 1")
        if not 0 < self.clip < 1 or not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError(f"need 0 < clip < 1, 0 < gamma <= 1, 0 <= lam <= 1 (got {self.clip}, {self.gamma}, {self.lam})")
        return self


class _RunningStats:
    """Mean and variance of everything seen so far (Chan et al.'s parallel update)."""

    def __init__(self, n: int):
        self.count, self.mean, self.m2 = 0, np.zeros(n), np.zeros(n)

    def update(self, data: np.ndarray) -> None:
        n = len(data)
        if n == 0:
            return
        mean, m2 = data.mean(0), ((data - data.mean(0)) ** 2).sum(0)
        delta, total = mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta ** 2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count, 1))


class _GaussianActor:
    """The exploring policy of a rollout: the policy's mean plus std * the rollout's noise (picklable)."""

    def __init__(self, policy, std: np.ndarray):
        self.runner, self.std = PolicyRunner(policy), std

    def __call__(self, t, x, obs, noise):
        return self.runner.mean(obs) + self.std * noise


class PPO:
    """PPO on an agent's state observation (see the module docstring). `iterate()` runs one update and
    returns its statistics; `evaluate()` runs the policy's mean on the agent's held-out starts."""

    def __init__(self, agent, config: PPOConfig | None = None):
        if getattr(agent, "images", False):
            raise ValueError("PPO here is state-based: use an agent without images")
        self.agent, self.cfg = agent, (config or PPOConfig()).validate()
        torch.manual_seed(self.cfg.seed)
        self.rng = np.random.default_rng(self.cfg.seed)
        self.policy = MLPPolicy(agent.obs_dim, agent.dU, self.cfg.hidden)
        self.value = MLPPolicy(agent.obs_dim + 1, 1, self.cfg.hidden)
        with torch.no_grad():                 # start near the zero action with small outputs
            self.policy.net[-1].weight.mul_(0.01)
            self.policy.net[-1].bias.zero_()
        self.log_std = nn.Parameter(torch.full((agent.dU,), float(self.cfg.init_log_std)))
        params = list(self.policy.parameters()) + list(self.value.parameters()) + [self.log_std]
        self.optimizer = torch.optim.Adam(params, lr=self.cfg.learning_rate)
        self.obs_stats = _RunningStats(agent.obs_dim)
        self.return_scale: float | None = None
        self.iteration, self.rollouts, self.dropped_samples = 0, 0, 0
        self.reruns = 0              # rollouts run again after their worker died (s2r.core.executor)
        self.executor = None         # where rollouts run (s2r.core.executor); None: in this process
        self.history: list[dict] = []

    # ------------------------------------------------------------------ sampling
    def _rollouts(self) -> list:
        """`samples_per_condition` stochastic rollouts of every condition, on `self.executor`
        (learning.agents.collect_samples; None: in this process): per rollout its seed, then its
        action noise (T, dU) drawn here, so every backend gives the same samples.
        [(episode or None if non-finite, sample or None if it raised)]."""
        a, cfg = self.agent, self.cfg
        std = self.log_std.detach().exp().numpy().astype(np.float64)
        jobs = []
        for c in range(a.n_conditions):
            for _ in range(cfg.samples_per_condition):
                seed = int(self.rng.integers(2**31))
                jobs.append((c, self.rng.standard_normal((a.T, a.dU)), seed))
        batch = collect_samples(a, self.executor, jobs, _GaussianActor(self.policy, std),
                                label=f"PPO update {self.iteration + 1}: sampling")
        self.reruns += len(batch.reruns)
        out = []
        for (_, noise, _), s in zip(jobs, batch.results):
            if s is None:
                out.append((None, None))
                continue
            costs = a.cost.evaluate(s.X, s.U)
            T = len(s.U)
            if not (np.all(np.isfinite(s.X)) and np.all(np.isfinite(costs))):
                out.append((None, s))
                continue
            with torch.inference_mode():            # the actions before the agent clipped them
                mean = self.policy(torch.as_tensor(s.state_obs[:T], dtype=torch.float32)).double().numpy()
            rewards = -costs[:T]
            rewards[-1] -= costs[T]
            out.append(({"obs": s.state_obs[:T], "act": mean + std * noise[:T], "rew": rewards}, s))
        return out

    def _normalize(self) -> None:
        mean = torch.as_tensor(self.obs_stats.mean, dtype=torch.float32)
        std = torch.as_tensor(np.maximum(self.obs_stats.std, 1e-3), dtype=torch.float32)
        self.policy.normalizer.mean.copy_(mean)
        self.policy.normalizer.std.copy_(std)
        self.value.normalizer.mean.copy_(torch.cat([mean, torch.tensor([0.5])]))
        self.value.normalizer.std.copy_(torch.cat([std, torch.tensor([0.3])]))

    def _advantages(self, episodes, values) -> tuple[np.ndarray, np.ndarray]:
        g, lam = self.cfg.gamma, self.cfg.lam
        adv, ret = [], []
        for ep, v in zip(episodes, values):
            r, T = ep["rew"], len(ep["rew"])
            v_next = np.append(v[1:], 0.0)              # the episode ends at T
            delta = r + g * v_next - v
            a = np.zeros(T)
            acc = 0.0
            for t in range(T - 1, -1, -1):
                acc = delta[t] + g * lam * acc
                a[t] = acc
            adv.append(a)
            ret.append(a + v)
        return np.concatenate(adv), np.concatenate(ret)

    # ------------------------------------------------------------------ one update
    def iterate(self) -> dict:
        t0 = time.perf_counter()
        cfg, a = self.cfg, self.agent
        if cfg.resample_conditions and self.iteration > 0 and hasattr(a, "resample"):
            a.resample(self.rng)
        episodes, samples = [], []
        for ep, s in self._rollouts():
            self.rollouts += 1
            if s is not None:
                samples.append(s)
            if ep is None:
                self.dropped_samples += 1
            else:
                episodes.append(ep)
        if not episodes:
            raise TrainingError("every PPO sample of this update was non-finite")
        obs = np.concatenate([e["obs"] for e in episodes])
        self.obs_stats.update(obs)
        self._normalize()
        T = a.T
        time_feat = np.concatenate([np.arange(len(e["obs"])) / T for e in episodes])
        v_in = torch.as_tensor(np.c_[obs, time_feat], dtype=torch.float32)
        if self.return_scale is None:
            returns0 = [np.sum(e["rew"]) for e in episodes]
            self.return_scale = float(max(np.std(returns0), np.mean(np.abs(returns0)) * 0.1, 1e-6))
        with torch.no_grad():
            v = self.value(v_in)[:, 0].numpy() * self.return_scale
        bounds = np.cumsum([0] + [len(e["obs"]) for e in episodes])
        adv, ret = self._advantages(episodes, [v[i:j] for i, j in zip(bounds[:-1], bounds[1:])])
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        O = torch.as_tensor(obs, dtype=torch.float32)
        A = torch.as_tensor(np.concatenate([e["act"] for e in episodes]), dtype=torch.float32)
        ADV = torch.as_tensor(adv, dtype=torch.float32)
        RET = torch.as_tensor(ret / self.return_scale, dtype=torch.float32)
        with torch.no_grad():
            old_logp = self._log_prob(O, A)
        n = len(O)
        gen = torch.Generator().manual_seed(int(self.rng.integers(2**31)))
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, cfg.minibatch):
                j = perm[i:i + cfg.minibatch]
                ratio = (self._log_prob(O[j], A[j]) - old_logp[j]).exp()
                surrogate = torch.min(ratio * ADV[j], ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * ADV[j]).mean()
                value_loss = ((self.value(v_in[j])[:, 0] - RET[j]) ** 2).mean()
                loss = -surrogate + 0.5 * value_loss
                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                self.optimizer.step()
        if not all(torch.isfinite(p).all() for p in params):
            raise TrainingError("PPO diverged (non-finite parameters)")
        self.iteration += 1
        finite = [s for s in samples if np.isfinite(s.final_distance)]
        stats = {"iteration": self.iteration, "rollouts": self.rollouts,
                 "return": float(np.mean([e["rew"].sum() for e in episodes])),
                 "train_success": float(np.mean([s.success for s in finite])) if finite else 0.0,
                 "std": float(self.log_std.detach().exp().mean()), "dropped": self.dropped_samples,
                 "seconds": time.perf_counter() - t0}
        self.history.append(stats)
        return stats

    def _log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        mu = self.policy(obs)
        z = (act - mu) / self.log_std.exp()
        return (-0.5 * z ** 2 - self.log_std).sum(-1)

    def evaluate(self, episodes: int = 20) -> dict:
        """The policy's mean from held-out starts: success rate and mean final distance."""
        res = evaluate_held_out(self.agent, self.executor, PolicyRunner(self.policy), range(episodes),
                                label="PPO evaluation")
        return {"success_rate": float(np.mean([r.success for r in res])),
                "final_distance": float(np.mean([r.final_distance for r in res]))}
