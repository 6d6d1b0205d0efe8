"""PLATO: policy learning with adaptive trajectory optimization (Kahn, Zhang, Levine & Abbeel,
ICRA 2017), a DAgger-style learner with an MPC teacher from controllers/.

    for iteration k = 1 .. K
        for each training episode: at every visited state x_t (observation o_t)
            teacher:  u*_t = MPC(x_t)                      the label (cost only)
            adaptive: u_t  = argmin_u  1/2 (u - u*_t)' Q_uu (u - u*_t) + lambda_k/2 |u - pi(o_t)|^2
                           = (Q_uu + lambda_k I)^-1 (Q_uu u*_t + lambda_k pi(o_t))
                      the MPC's local Q-function (its Q_uu at t = 0) traded against staying close
                      to the learner; this is what is executed, so the visited states approach the
                      learner's own distribution as lambda_k grows
        D <- D + {(o_t, u*_t)}
        pi <- argmin sum_D |pi(o) - u*|^2     (supervised learning on the aggregated data)

Teachers: the point mass with its exact model; ArmReach with a kinematic model of the arm in
position control (the commanded joint targets integrate the normalized action, the TCP is the
Panda's forward kinematics from the same URDF as the simulator).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import casadi as ca
import numpy as np
import torch

from .gps import PolicyRunner, TrainingError, feature_points, render_and_pretrain, train_policy_weighted
from .policies import MLPPolicy, VisuomotorCNN, make_policy

__all__ = ["PLATOConfig", "PLATO", "make_teacher"]


@dataclass
class PLATOConfig:
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
    seed: int = 0

    def validate(self) -> "PLATOConfig":
        for name in ("iterations", "episodes_per_iteration", "mpc_horizon", "mpc_iterations", "policy_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lambda_start > 0 or not self.lambda_growth >= 1:
            raise ValueError("lambda_start must be > 0 and lambda_growth >= 1")
        return self


class _Teacher:
    """MPC over a controllers/ model; `__call__(x) -> (u*, Q_uu at t = 0)`."""

    def __init__(self, dynamics, cost, horizon, iterations, params=None, u_lim=None):
        from controllers import ILQR, MPC, ILQROptions
        lo, hi = (None, None) if u_lim is None else (-u_lim * np.ones(dynamics.nu), u_lim * np.ones(dynamics.nu))
        self.planner = ILQR(dynamics, cost, horizon, u_lower=lo, u_upper=hi,
                            options=ILQROptions(max_iter=iterations, consistent_gains=True), jit=False)
        self.mpc = MPC(self.planner, max_iter=iterations)
        self.params = params

    def reset(self, params=None):
        self.mpc.reset()
        self.params = params

    def __call__(self, x):
        step = self.mpc.step(x, self.params)
        Quu = step.plan.Quu[0] if step.plan is not None else np.eye(len(step.u))
        return step.u, 0.5 * (Quu + Quu.T)


class PointMassTeacher(_Teacher):
    def __init__(self, agent, horizon, iterations):
        from controllers import quadratic_cost
        c = agent.cost
        cost = quadratic_cost(4, 2, c.Q[0], c.R[0], c.Q[-1], goal_param=False, jit=False)
        super().__init__(agent.model, cost, horizon, iterations)

    def teacher_state(self, x, obs):
        return x


class ArmReachTeacher(_Teacher):
    """x = commanded joint targets q_cmd (7); x' = q_cmd + scale * u; TCP by forward kinematics."""

    def __init__(self, agent, horizon, iterations):
        from controllers import Cost, Dynamics
        from controllers.models import RigidBodyModel
        from sim.robots import robot_model
        from sim.tasks.arm import FINGER_JOINTS, TCP_OFFSET
        env = agent.env
        n = agent.n
        rb = RigidBodyModel(robot_model("panda").urdf, joints=list(agent.joint_names),
                            locked={j: 0.02 for j in FINGER_JOINTS})
        x, u = ca.SX.sym("q", n), ca.SX.sym("u", n)
        R, p = rb.link_pose(env.ee_link, x)
        tcp = p + TCP_OFFSET * R[:, 2]
        goal = ca.SX.sym("goal", 3)
        dyn = Dynamics(x, u, x + ca.DM(agent.action_scale) * u, name="panda_kinematic", jit=False)
        cost = Cost.least_squares(x, u, ca.vertcat(tcp - goal, u), np.r_[np.full(3, 20.0), np.full(n, 0.01)],
                                  tcp - goal, np.full(3, 2000.0), goal, name="reach_tcp", jit=False)
        super().__init__(dyn, cost, horizon, iterations, u_lim=1.0)
        self.n = n

    def teacher_state(self, x, obs):
        return x[: self.n] + x[2 * self.n: 3 * self.n]             # q + (q_cmd - q) = q_cmd


def make_teacher(agent, horizon: int, iterations: int):
    if agent.task == "PointMass":
        return PointMassTeacher(agent, horizon, iterations)
    if agent.task == "s2r/ArmReach-v0":
        return ArmReachTeacher(agent, horizon, iterations)
    raise ValueError(f"no MPC teacher for task {agent.task}")


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
        self.data = {"state": [], "image": [], "label": []}
        self.iteration, self.history, self.pretrained = 0, [], not a.images

    def pretrain(self, progress=None) -> None:
        """Vision pretraining of an image policy (once; see MDGPS.pretrain)."""
        if self.pretrained:
            return
        cfg = self.cfg
        render_and_pretrain(self.policy, self.agent, cfg.pretrain_images, cfg.pretrain_steps, self.rng, self.gen,
                            progress=progress, bf16=cfg.pretrain_bf16)
        self.pretrained = True

    def iterate(self) -> dict:
        t0 = time.perf_counter()
        a, cfg, k = self.agent, self.cfg, self.iteration
        if not self.pretrained:
            self.pretrain()
        lam = cfg.lambda_start * cfg.lambda_growth ** k
        learner = PolicyRunner(self.policy)
        costs, succ = [], []
        for e in range(cfg.episodes_per_iteration):
            cond = e % a.n_conditions
            labels = []

            def act(t, x, obs):
                if t == 0:
                    self.teacher.reset(self.agent.teacher_params() if hasattr(self.agent, "teacher_params") else None)
                u_star, Quu = self.teacher(self.teacher.teacher_state(x, obs))
                labels.append(u_star)
                if k == 0:
                    return u_star                                   # the first iteration: the teacher alone
                u_pi = learner.mean(obs)
                return np.linalg.solve(Quu + lam * np.eye(len(u_star)), Quu @ u_star + lam * u_pi)

            s = a.rollout(cond, act, int(self.rng.integers(2**31)))
            if not (np.all(np.isfinite(s.X)) and np.all(np.isfinite(s.U))):
                raise TrainingError(f"episode {e}: non-finite state or action (teacher or learner diverged)")
            self.data["state"].append(s.state_obs[:-1])
            self.data["label"].append(np.array(labels))
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
        loss = train_policy_weighted(self.policy, self.optimizer, inputs, np.concatenate(self.data["label"]), None,
                                     cfg.policy_steps, cfg.batch_size, self.gen, head_only=a.images)
        runner = PolicyRunner(self.policy)
        ev = [a.held_out(i, lambda t, x, obs: runner(t, x, obs)) for i in range(cfg.eval_episodes)]
        stats = {"iteration": k + 1, "cost": float(np.mean(costs)), "train_success": float(np.mean(succ)),
                 "success": float(np.mean([r.success for r in ev])) if ev else float("nan"),
                 "eval_distance": float(np.mean([r.final_distance for r in ev])) if ev else float("nan"),
                 "lambda": lam, "policy_loss": loss, "dataset": int(len(states)),
                 "rollouts": cfg.episodes_per_iteration, "seconds": time.perf_counter() - t0}
        self.history.append(stats)
        self.iteration += 1
        return stats

    def state_dict(self) -> dict:
        return {"algorithm": "plato", "config": asdict(self.cfg), "iteration": self.iteration,
                "policy_config": self.policy.config(), "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(), "data": self.data, "history": self.history,
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
        self.pretrained, self.iteration = st["pretrained"], int(st["iteration"])
        self.rng.bit_generator.state = st["rng"]
        self.gen.set_state(st["torch_generator"])
        torch.set_rng_state(st["torch_rng"])
