"""PLATO: policy learning with adaptive trajectory optimization (Kahn, Zhang, Levine & Abbeel,
ICRA 2017), a DAgger-style learner with an MPC teacher from controllers/.

    for iteration k = 1 .. K
        for each training episode: at every visited state x_t (observation o_t)
            teacher:  u*_t, Q_uu,t = MPC(x_t)                   the label (cost only) and its curvature
            adaptive: u_t = first action of the KL-regularized MPC over the horizon
                      min  sum_j l(x_j, u_j) + lambda_k KL(pi_teacher(u_j|x_j) || pi_theta(u_j|o_j))
                      with the learner pi_theta(u|o) = N(mu_theta(o), Sigma_theta): the KL's
                      dependence on the teacher's actions is lambda_k/2 |u_j - mu_theta(o_j)|^2 in
                      Sigma_theta^-1, at the observations o_j the teacher predicts along its plan
                      (`learner_obs`); this is what is executed, so the visited states approach
                      the learner's own distribution as lambda_k grows
        D <- D + {(o_t, u*_t, Q_uu,t)}
        pi <- argmin sum_D (pi(o) - u*)' Q_uu (pi(o) - u*)   (the Q_uu-weighted supervised loss)
        Sigma_theta <- the covariance of u* - mu_theta(o) over D

Teachers: the hand tasks (no model to plan on) use their agents' expert laws (`ExpertTeacher`);
the point mass with its exact model; ArmReach with a kinematic model of the arm in
position control (the commanded joint targets integrate the normalized action, the TCP is the
Panda's forward kinematics from the same URDF as the simulator). The learner's observations along
the plan: the point mass's are its states; ArmReach's state policy sees [q, qd, target - tcp],
predicted as q = q_cmd (the position controller tracks the command), qd from consecutive commands
and the TCP by forward kinematics; an image policy's future images cannot be predicted, so its
mean at the current observation stands for every step of the horizon.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Literal

import casadi as ca
import numpy as np
import torch

from .agents import evaluate_held_out
from .best_policy import BestPolicy, check_export_choice
from .gps import PolicyRunner, TrainingError, feature_points, render_and_pretrain, train_policy_weighted
from .policies import MLPPolicy, VisuomotorCNN, make_policy

__all__ = ["PLATOConfig", "PLATO", "make_teacher", "ExpertTeacher"]


@dataclass
class PLATOConfig:
    """PLATO's settings; an experiment file's `plato:` section sets them (its top level sets
    iterations, episodes_per_iteration (`conditions`), eval_episodes, policy_steps and seed)."""
    iterations: int = 10
    episodes_per_iteration: int = 4   # one per training condition
    mpc_horizon: int = 15
    mpc_iterations: int = 2
    lambda_start: float = 0.1         # weight of the learner in the adaptive teacher, first iteration
    lambda_growth: float = 3.0        # multiplied every iteration
    policy_steps: int = 400
    batch_size: int = 256
    learning_rate: float = 1e-3
    hidden: tuple = (64, 64)
    eval_episodes: int = 20
    pretrain_images: int = 300
    pretrain_steps: int = 300
    pretrain_bf16: bool = False
    export_policy: Literal["best", "last"] = "best"   # as GPSConfig's (learning.best_policy)
    seed: int = 0

    def validate(self) -> "PLATOConfig":
        check_export_choice(self.export_policy)
        for name in ("iterations", "episodes_per_iteration", "mpc_horizon", "mpc_iterations", "policy_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lambda_start > 0 or not self.lambda_growth >= 1:
            raise ValueError("lambda_start must be > 0 and lambda_growth >= 1")
        return self


class _Teacher:
    """MPC over a controllers/ model; `__call__(x) -> (u*, Q_uu at t = 0)` (the cost alone), and
    `adaptive(x, obs, learner, lam, cov)` (the KL-regularized MPC: the module docstring).

    Subclasses give `_costs(lam_term)`: the task's cost, with lam_term the cost of the learner term
    (u - m)' C' C (u - m) / 2 in extra parameters m (nu) and C (nu x nu, row-major), and
    `learner_obs(X, obs)`: the learner's observations at the planned states X (H, nx)."""

    def __init__(self, dynamics, horizon, iterations, u_lim=None):
        from s2r.controllers import ILQR, MPC, ILQROptions
        nu = dynamics.nu
        lo, hi = (None, None) if u_lim is None else (-u_lim * np.ones(nu), u_lim * np.ones(nu))
        u, m, C = ca.SX.sym("u", nu), ca.SX.sym("m", nu), ca.SX.sym("C", nu * nu)
        r = ca.reshape(C, nu, nu).T @ (u - m)                    # C (u - m), C given row-major
        plain, kl = self._costs(u, m, C, r)
        self.horizon, self.nu = horizon, nu
        self.mpcs = []
        for cost in (plain, kl):
            planner = ILQR(dynamics, cost, horizon, u_lower=lo, u_upper=hi,
                           options=ILQROptions(max_iter=iterations, consistent_gains=True), jit=False)
            self.mpcs.append(MPC(planner, max_iter=iterations))
        self.mpc, self.kl_mpc = self.mpcs
        self.params = None

    def reset(self, params=None):
        for mpc in self.mpcs:
            mpc.reset()
        self.params = None if params is None else np.atleast_1d(np.asarray(params, float))

    def _base_params(self) -> np.ndarray:
        return np.zeros(0) if self.params is None else self.params

    def __call__(self, x):
        step = self.mpc.step(x, self._base_params() if self.params is not None else None)
        Quu = step.plan.Quu[0] if step.plan is not None else np.eye(len(step.u))
        return step.u, 0.5 * (Quu + Quu.T)

    def adaptive(self, x, obs, learner, lam: float, cov: np.ndarray):
        """The KL-regularized MPC's plan from x (`controllers.MPCStep`): the learner's means m_j at the
        observations predicted along the previous adaptive plan (shifted; at the first step: the
        current observation for every j), weight lam Sigma_theta^-1."""
        H = self.horizon
        prev = self.kl_mpc.plan
        if prev is None:
            O = np.repeat(np.asarray(obs["state"], float)[None], H, 0)
        else:
            X = np.concatenate([prev.x[1:H + 1], prev.x[H:H + 1]])[:H]
            X[0] = x
            O = self.learner_obs(X, obs)
        if isinstance(learner.policy, VisuomotorCNN):
            m = np.repeat(learner.mean(obs)[None], H, 0)
        else:
            with torch.inference_mode():
                m = learner.policy(torch.as_tensor(O, dtype=torch.float32)).double().numpy()
            m[0] = learner.mean(obs)
        C = np.linalg.cholesky(lam * np.linalg.inv(cov)).T                # C' C = lam Sigma_theta^-1
        base = self._base_params()
        P = np.concatenate([np.repeat(base[None], H + 1, 0),
                            np.concatenate([m, m[-1:]]), np.repeat(C.ravel()[None], H + 1, 0)], axis=1)
        return self.kl_mpc.step(x, P)


class PointMassTeacher(_Teacher):
    def __init__(self, agent, horizon, iterations):
        self.agent_cost = agent.cost
        super().__init__(agent.model, horizon, iterations)

    def _costs(self, u, m, C, r):
        from s2r.controllers import Cost
        c = self.agent_cost
        x = ca.SX.sym("x", 4)
        run = 0.5 * x.T @ ca.DM(c.Q[0]) @ x + 0.5 * u.T @ ca.DM(c.R[0]) @ u
        fin = 0.5 * x.T @ ca.DM(c.Q[-1]) @ x
        return (Cost(x, u, run, fin, name="pm_teacher", jit=False),
                Cost(x, u, run + 0.5 * r.T @ r, fin, ca.vertcat(m, C), name="pm_teacher_kl", jit=False))

    def teacher_state(self, x, obs):
        return x

    def learner_obs(self, X, obs):
        return X


class ArmReachTeacher(_Teacher):
    """x = commanded joint targets q_cmd (7); x' = q_cmd + scale * u; TCP by forward kinematics."""

    def __init__(self, agent, horizon, iterations):
        import pybullet as pb

        from s2r.controllers import Dynamics
        from s2r.controllers.models import RigidBodyModel
        env = agent.env
        robot = env.description
        n = agent.n
        movable = RigidBodyModel(robot.urdf).joint_names
        rb = RigidBodyModel(robot.urdf, joints=list(agent.joint_names),
                            locked={j: float(robot.home.get(j, 0.0)) for j in movable if j not in agent.joint_names})
        x, u = ca.SX.sym("q", n), ca.SX.sym("u", n)
        R, p = rb.link_pose(env.ee_link, x)
        base_R = ca.DM(np.array(pb.getMatrixFromQuaternion(robot.base_orientation)).reshape(3, 3))
        tcp_base = p + R @ ca.DM(robot.tcp_offset)           # in the robot's base frame
        self.tcp = ca.Function("tcp", [x], [base_R @ tcp_base + ca.DM(robot.base_position)])
        self.n, self.dt = n, float(env.control_dt)
        dyn = Dynamics(x, u, x + ca.DM(agent.action_scale) * u, name=f"{robot.name}_kinematic", jit=False)
        super().__init__(dyn, horizon, iterations, u_lim=1.0)

    def _costs(self, u, m, C, r):
        from s2r.controllers import Cost
        n = self.n
        x = ca.SX.sym("q", n)
        tcp = self.tcp(x)
        goal = ca.SX.sym("goal", 3)
        w = np.r_[np.full(3, 20.0), np.full(n, 0.01)]
        plain = Cost.least_squares(x, u, ca.vertcat(tcp - goal, u), w, tcp - goal, np.full(3, 2000.0), goal,
                                   name="reach_tcp", jit=False)
        kl = Cost.least_squares(x, u, ca.vertcat(tcp - goal, u, r), np.r_[w, np.ones(n)], tcp - goal,
                                np.full(3, 2000.0), ca.vertcat(goal, m, C), name="reach_tcp_kl", jit=False)
        return plain, kl

    def teacher_state(self, x, obs):
        return x[: self.n] + x[2 * self.n: 3 * self.n]             # q + (q_cmd - q) = q_cmd

    def learner_obs(self, X, obs):
        """[joint_pos, joint_vel, target - tcp] at the planned commands X (H, n): q = q_cmd."""
        n = self.n
        O = np.repeat(np.asarray(obs["state"], float)[None], len(X), 0)
        O[1:, :n] = X[1:]
        O[1:, n:2 * n] = np.diff(X, axis=0) / self.dt
        O[1:, -3:] = self.params - np.array(self.tcp.map(len(X) - 1)(X[1:].T)).T
        return O


class ExpertTeacher:
    """The teacher of tasks without a controllers/ model to plan on (the hand tasks): the agent's
    own expert law at the visited state, `agent.teacher_action(x)` (privileged: it reads the
    simulator; HandReachAgent: damped least squares on the fingertip errors, HandGraspLiftAgent:
    the scripted grasp), as the label u* with Q_uu = I. The adaptive teacher is PLATO's
    KL-regularized objective over a one-step horizon, the teacher's cost taken as 1/2 |u - u*|^2:

        u = argmin 1/2 |u - u*|^2 + lam/2 (u - m)' Sigma_theta^-1 (u - m)
          = (I + lam Sigma_theta^-1)^-1 (u* + lam Sigma_theta^-1 m),   m the learner's mean

    so the executed action moves from the expert's to the learner's as lam grows (DAgger's mixing,
    weighted by the learner's confidence per action dimension)."""

    def __init__(self, agent):
        self.agent, self._u = agent, None

    def reset(self, params=None):
        self.agent.teacher_reset()

    def teacher_state(self, x, obs):
        return x

    def __call__(self, x):
        self._u = np.clip(np.asarray(self.agent.teacher_action(x), float), -1.0, 1.0)
        return self._u, np.eye(len(self._u))

    def adaptive(self, x, obs, learner, lam: float, cov: np.ndarray):
        from types import SimpleNamespace
        P = lam * np.linalg.inv(cov)
        return SimpleNamespace(u=np.linalg.solve(np.eye(len(self._u)) + P, self._u + P @ learner.mean(obs)))


def make_teacher(agent, horizon: int, iterations: int):
    if agent.task == "PointMass":
        return PointMassTeacher(agent, horizon, iterations)
    if agent.task == "s2r/ArmReach-v0":
        return ArmReachTeacher(agent, horizon, iterations)
    if hasattr(agent, "teacher_action"):          # the hand agents: their expert law (no MPC model)
        return ExpertTeacher(agent)
    raise ValueError(f"no MPC teacher for task {agent.task}")


class _PlatoWorker:
    """What a PLATO worker builds once: its agent (`agent_spec`, learning.agents.Agent.worker_spec)
    and the task's teacher."""

    def __init__(self, agent_spec, horizon: int, iterations: int, agent=None, teacher=None):
        if agent is None:
            factory, args = agent_spec
            agent = factory(*args)
            teacher = make_teacher(agent, horizon, iterations)
        self.agent, self.teacher = agent, teacher

    def close(self):
        self.agent.close()


def _plato_episode_job(worker, shared, payload):
    """One teacher-led episode: (sample, the teacher's labels u*, their Q_uu)."""
    state, learner, lam, cov, k = shared
    agent, teacher = worker.agent, worker.teacher
    if state:
        agent.set_worker_state(state)
    cond, seed = payload
    labels, precs = [], []

    def act(t, x, obs):
        if t == 0:
            teacher.reset(agent.teacher_params() if hasattr(agent, "teacher_params") else None)
        xt = teacher.teacher_state(x, obs)
        u_star, Quu = teacher(xt)
        labels.append(u_star)
        precs.append(Quu)
        if k == 0:
            return u_star                                   # the first iteration: the teacher alone
        return teacher.adaptive(xt, obs, learner, lam, cov).u

    s = agent.rollout(cond, act, seed)
    return s, np.array(labels), np.array(precs)


class PLATO:
    def __init__(self, agent, config: PLATOConfig | None = None, policy=None):
        self.agent, self.cfg = agent, (config or PLATOConfig()).validate()
        a = agent
        if policy is None:
            policy = (VisuomotorCNN(a.joint_dim, a.dU, a.image_size, pose_dim=6) if a.images
                      else MLPPolicy(a.obs_dim, a.dU, self.cfg.hidden))
        if policy.act_dim != a.dU:
            raise ValueError(f"policy has {policy.act_dim} actions, task {a.task} has {a.dU}")
        self.policy = policy
        torch.manual_seed(self.cfg.seed)
        self.policy.load_state_dict(make_policy(policy.config()).state_dict())
        head = isinstance(policy, VisuomotorCNN)
        self.optimizer = torch.optim.Adam(policy.fc.parameters() if head else policy.parameters(),
                                          lr=self.cfg.learning_rate)
        self.teacher = make_teacher(a, self.cfg.mpc_horizon, self.cfg.mpc_iterations)
        self.rng = np.random.default_rng(self.cfg.seed)
        self.gen = torch.Generator().manual_seed(self.cfg.seed)
        self.data = {"state": [], "image": [], "label": [], "prec": []}
        self.learner_cov = np.eye(a.dU)          # Sigma_theta, re-estimated after every S-step
        self.iteration, self.history, self.pretrained = 0, [], not a.images
        self.best = BestPolicy()          # the iteration `s2r train` exports (export_policy)
        self.executor = None     # where episodes and pose images run (s2r.core.executor); None: in this process
        self.device = "cpu"      # torch device of vision pretraining (--device)

    def pretrain(self, progress=None) -> None:
        """Vision pretraining of an image policy (once; see MDGPS.pretrain)."""
        if self.pretrained:
            return
        cfg = self.cfg
        render_and_pretrain(self.policy, self.agent, cfg.pretrain_images, cfg.pretrain_steps, self.rng, self.gen,
                            progress=progress, bf16=cfg.pretrain_bf16, executor=self.executor, device=self.device)
        self.pretrained = True

    def _sample_episodes(self, jobs, learner, lam: float, k: int):
        """The teacher-led episodes of `jobs` [(condition, seed)] on `self.executor` (None: in this
        process): each worker builds its agent and teacher once; the teacher is reset at every
        episode's start, so an episode depends only on its condition, seed and the learner, and every
        backend gives the same samples. The executor's Batch of (sample, labels u*, precisions Q_uu)."""
        from s2r.core.executor import InlineExecutor

        from .agents import _state_of, agent_executor_context
        ex = self.executor or InlineExecutor()
        context = None if isinstance(ex, InlineExecutor) else \
            (_PlatoWorker, (agent_executor_context(self.agent), self.cfg.mpc_horizon, self.cfg.mpc_iterations))
        local = _PlatoWorker(None, 0, 0, agent=self.agent, teacher=self.teacher)
        return ex.run(_plato_episode_job, jobs, keys=[seed for _, seed in jobs], context=context,
                      shared=(_state_of(self.agent), learner, lam, self.learner_cov, k),
                      label=f"PLATO iteration {k + 1}: sampling", local=local)

    def iterate(self) -> dict:
        t0 = time.perf_counter()
        a, cfg, k = self.agent, self.cfg, self.iteration
        if not self.pretrained:
            self.pretrain()
        lam = cfg.lambda_start * cfg.lambda_growth ** k
        learner = PolicyRunner(self.policy)
        costs, succ = [], []
        jobs = [(e % a.n_conditions, int(self.rng.integers(2**31))) for e in range(cfg.episodes_per_iteration)]
        batch = self._sample_episodes(jobs, learner, lam, k)
        for e, ((_, seed), result) in enumerate(zip(jobs, batch.results)):
            if result is None:
                raise TrainingError(f"episode {e} (seed {seed}) raised: {batch.failures[0].error}")
            s, labels, precs = result
            if not (np.all(np.isfinite(s.X)) and np.all(np.isfinite(s.U))):
                raise TrainingError(f"episode {e}: non-finite state or action (teacher or learner diverged)")
            self.data["state"].append(s.state_obs[:-1])
            self.data["label"].append(np.array(labels))
            self.data["prec"].append(np.array(precs))
            if a.images:
                self.data["image"].append(s.images[:-1])
            costs.append(a.cost.evaluate(s.X, s.U).sum())
            succ.append(s.success)
        states = np.concatenate(self.data["state"])
        if k == 0:
            norm = self.policy.joint_normalizer if isinstance(self.policy, VisuomotorCNN) else self.policy.normalizer
            norm.set(states)
        inputs = {"state": states}
        if a.images:
            inputs["points"] = feature_points(self.policy, np.concatenate(self.data["image"]))
        labels = np.concatenate(self.data["label"])
        loss = train_policy_weighted(self.policy, self.optimizer, inputs, labels, np.concatenate(self.data["prec"]),
                                     cfg.policy_steps, cfg.batch_size, self.gen, head_only=a.images)
        self.learner_cov = self._learner_covariance(inputs, labels)
        runner = PolicyRunner(self.policy)
        ev = evaluate_held_out(a, self.executor, runner, range(cfg.eval_episodes),
                               label=f"PLATO iteration {k + 1}: evaluation")
        stats = {"iteration": k + 1, "cost": float(np.mean(costs)), "train_success": float(np.mean(succ)),
                 "success": float(np.mean([r.success for r in ev])) if ev else float("nan"),
                 "eval_distance": float(np.mean([r.final_distance for r in ev])) if ev else float("nan"),
                 "held_out": [int(r.success) for r in ev],
                 "lambda": lam, "policy_loss": loss, "dataset": int(len(states)),
                 "rollouts": cfg.episodes_per_iteration, "seconds": time.perf_counter() - t0}
        self.history.append(stats)
        self.best.offer(k + 1, stats["held_out"], self.policy)
        self.iteration += 1
        return stats

    def exported_policy(self):
        """What `s2r train` exports (`export_policy`): a learning.best_policy.Export."""
        return self.best.exported(self.policy, self.cfg.export_policy, self.history)

    @torch.inference_mode()
    def _learner_covariance(self, inputs, labels) -> np.ndarray:
        """Sigma_theta: the covariance of the labels about the learner's means on the data set
        (floored at 1e-4 of its trace so that Sigma_theta^-1 stays bounded)."""
        S = torch.as_tensor(inputs["state"], dtype=torch.float32)
        mean = (self.policy.head(inputs["points"], S) if isinstance(self.policy, VisuomotorCNN)
                else self.policy(S)).double().numpy()
        r = labels - mean
        cov = r.T @ r / len(r)
        return cov + 1e-4 * (np.trace(cov) / len(cov) + 1e-8) * np.eye(len(cov))

    def state_dict(self) -> dict:
        return {"algorithm": "plato", "config": asdict(self.cfg), "iteration": self.iteration,
                "policy_config": self.policy.config(), "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(), "data": self.data, "history": self.history,
                "learner_cov": self.learner_cov, "best": self.best.state_dict(),
                "pretrained": self.pretrained, "rng": self.rng.bit_generator.state,
                "torch_generator": self.gen.get_state(), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, st: dict) -> None:
        if st.get("algorithm") != "plato":
            raise ValueError(f"checkpoint is from {st.get('algorithm')!r}, not plato")
        if st["policy_config"] != self.policy.config():
            raise ValueError(f"checkpoint policy {st['policy_config']} does not match {self.policy.config()}")
        self.policy.load_state_dict(st["policy"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.data, self.history = st["data"], list(st["history"])
        if "prec" not in self.data:              # older checkpoints: unweighted labels
            self.data["prec"] = [np.repeat(np.eye(self.agent.dU)[None], len(x), 0) for x in self.data["label"]]
        self.learner_cov = np.array(st.get("learner_cov", np.eye(self.agent.dU)))
        self.best.load_state_dict(st.get("best"))
        self.pretrained, self.iteration = st["pretrained"], int(st["iteration"])
        self.rng.bit_generator.state = st["rng"]
        self.gen.set_state(st["torch_generator"])
        torch.set_rng_state(st["torch_rng"])
