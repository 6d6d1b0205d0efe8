"""Agents: where GPS and PLATO get their samples (the agent abstraction of cbfinn/gps).

An agent runs one episode of a training condition (or of a held-out start) under a controller
`act(t, x, obs) -> u`, and returns the full state x (what the local controllers see) next to the
policy's observations (what the global policy sees: input remapping).

    PointMassAgent   controllers' point mass (a double integrator) to the origin: fast, for tests
    ArmReachAgent    s2r/ArmReach-v0 in simulation; x = [q, qd, q_cmd - q, tcp - target] (24),
                     policy observations: state = [joint_pos, joint_vel, target - tcp_pos] (17) for
                     the MLP, or image + [joint_pos, joint_vel, tcp_pos] (17) for the CNN (which
                     must find the target in the image; tcp_pos is the forward kinematics of the
                     joint angles, the robot's own configuration, as in Levine et al. 2016)
    ArmInsertAgent   s2r/ArmInsert-v0, state-based (learning/insert_agent.py)

Training conditions and held-out starts come from the same distribution (the task's start
postures and targets); held-out starts use seeds no training condition uses. With
`resample_conditions` (GPSConfig) the conditions are drawn anew every iteration (`resample`).
The tasks by name: learning/registry.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .linear_gaussian import LinearGaussianController, QuadraticCost

__all__ = ["Sample", "PointMassAgent", "ArmReachAgent"]


@dataclass
class Sample:
    X: np.ndarray                  # (T+1, dX) full state
    U: np.ndarray                  # (T, dU) applied actions
    state_obs: np.ndarray          # (T+1, obs_dim) the MLP's input / the CNN's joint state
    images: np.ndarray | None      # (T+1, H, W, 3) uint8 or None
    success: bool
    final_distance: float
    info: dict = field(default_factory=dict)


class PointMassAgent:
    """A 2-D point mass (controllers.models.point_mass, semi-implicit Euler) pushed to the origin.
    Conditions: start positions on a circle of radius 1; held-out starts: uniform in the same disc."""
    task = "PointMass"
    images = False
    init_variance = 1.0            # exploration of the initial controllers (force units)

    def __init__(self, n_conditions: int = 4, T: int = 40, dt: float = 0.05, noise: float = 1e-3,
                 success_distance: float = 0.1):
        from controllers.models import point_mass
        self.model = point_mass(2).discretize(dt, "semi_implicit_euler", jit=False)
        self.T, self.dX, self.dU, self.dt = T, 4, 2, dt
        self.obs_dim, self.joint_dim, self.image_size = 4, 4, None
        self.noise, self.success_distance = noise, success_distance
        ang = 2 * np.pi * np.arange(n_conditions) / n_conditions + np.pi / 4
        self.x0 = [np.array([np.cos(a), np.sin(a), 0.0, 0.0]) for a in ang]
        self.n_conditions = n_conditions
        self.cost = QuadraticCost(T, 4, 2, Q=np.array([1.0, 1.0, 0.1, 0.1]), R=0.01 * np.ones(2),
                                  Q_final=np.array([100.0, 100.0, 10.0, 10.0]))
        self.action_scale = np.ones(2)
        self.joint_names = ["p_x", "p_y"]

    def metadata(self) -> dict:
        return {"task": self.task, "obs_keys": ["p", "v"], "action": "force", "joint_names": self.joint_names}

    def _run(self, x0, act, seed) -> Sample:
        rng = np.random.default_rng(seed)
        X, U = [np.asarray(x0, float)], []
        for t in range(self.T):
            u = np.asarray(act(t, X[-1], {"state": X[-1]}), float)
            U.append(u)
            X.append(self.model.step(X[-1], u) + self.noise * rng.standard_normal(4) if np.all(np.isfinite(u))
                     else np.full(4, np.nan))
        X, U = np.array(X), np.array(U)
        d = float(np.linalg.norm(X[-1, :2]))
        return Sample(X, U, X.copy(), None, bool(d < self.success_distance), d)

    def rollout(self, condition: int, act, seed: int) -> Sample:
        return self._run(self.x0[condition], act, seed)

    def held_out(self, index: int, act) -> Sample:
        rng = np.random.default_rng(10_000 + index)
        r, a = np.sqrt(rng.uniform(0.25, 1.0)), rng.uniform(0, 2 * np.pi)
        return self._run(np.array([r * np.cos(a), r * np.sin(a), 0, 0]), act, 20_000 + index)

    def close(self):
        pass


class ArmReachAgent:
    """s2r/ArmReach-v0: the TCP to a 3-D target in position control (normalized joint increments).

    Condition c is the episode of seed `condition_seeds[c]` (start posture, target and, under
    `randomization`, the randomization draw); held-out starts are seeds 10000 + i (training seeds
    never fall in [10000, 10000 + HELD_OUT_SEEDS))."""
    HELD_OUT_BASE = 10_000
    HELD_OUT_SEEDS = 10_000
    # The task's target marker (a 1.5 cm sphere) is about one pixel in the 64x64 camera image; image
    # agents show the target as an opaque green sphere of this radius instead, on a stand from the
    # table (`target_stand`, visual only): the stand's foot gives the single camera the target's depth.
    VISIBLE_MARKER_RADIUS = 0.035
    VISIBLE_MARKER_RGBA = (0.0, 1.0, 0.0, 1.0)
    task = "s2r/ArmReach-v0"
    init_variance = 0.1            # exploration of the initial controllers (normalized actions)

    def __init__(self, images: bool = False, image_size: int = 64, randomization=None, n_conditions: int = 4,
                 T: int = 100, condition_seeds=None, success_distance: float = 0.05,
                 position_weight: float = 2.0, final_position_weight: float = 500.0,
                 velocity_weight: float = 0.01, final_velocity_weight: float = 1.0, action_weight: float = 0.01,
                 target_marker_radius: float | None = None, target_stand: bool | None = None):
        import sim.tasks
        self.target_marker_radius = (self.VISIBLE_MARKER_RADIUS if images else None) \
            if target_marker_radius is None else (float(target_marker_radius) or None)
        self.target_stand = bool(images if target_stand is None else target_stand)
        marker = {"target_marker_radius": self.target_marker_radius,
                  "target_marker_rgba": self.VISIBLE_MARKER_RGBA} if self.target_marker_radius else {}
        if self.target_stand:
            marker["target_stand"] = True
        self.env = sim.tasks.make(self.task, image_obs=images, image_size=image_size,
                                  randomization=randomization, **marker).unwrapped
        self.images, self.image_size = images, (image_size if images else None)
        self.n = len(self.env.act_idx)
        self.T, self.dX, self.dU = T, 3 * self.n + 3, self.n
        self.obs_dim = 2 * self.n + 3
        self.joint_dim = 2 * self.n + 3
        self.success_distance = success_distance
        self.condition_seeds = list(condition_seeds or range(n_conditions))
        self.n_conditions = len(self.condition_seeds)
        n = self.n
        Q = np.zeros(self.dX)
        Q[n:2 * n], Q[-3:] = velocity_weight, position_weight
        Qf = np.zeros(self.dX)
        Qf[n:2 * n], Qf[-3:] = final_velocity_weight, final_position_weight
        self.cost = QuadraticCost(T, self.dX, self.dU, Q=Q, R=action_weight * np.ones(self.dU), Q_final=Qf)
        self.action_scale = np.asarray(self.env.action_scale, float)
        self.joint_names = [self.env.joint_names[i] for i in self.env.act_idx]

    def metadata(self) -> dict:
        from sim.tasks.arm import TCP_OFFSET
        tcp = "tcp_pos: world frame, m, by forward kinematics of the ee_link + tcp_offset along its z axis"
        meta = {"task": self.task, "joint_names": self.joint_names, "action": "position_delta",
                "action_units": "rad per control step (added to the joint position targets)",
                "control_rate_hz": float(1.0 / self.env.control_dt), "episode_steps": self.T, "ee_link": self.env.ee_link,
                "tcp_offset": TCP_OFFSET}
        if self.images:
            meta |= {"target_marker_radius_m": self.target_marker_radius, "target_stand": self.target_stand,
                     "target_marker_rgba": list(self.VISIBLE_MARKER_RGBA)}
            meta |= {"inputs": ["image", "joint_state"], "image_size": [self.image_size, self.image_size],
                     "image_format": "RGB, uint8 or float in [0, 1], (B, 3, H, W) or (B, H, W, 3)",
                     "joint_state": f"[joint_pos; joint_vel; tcp_pos] of joint_names ({tcp})",
                     "obs_keys": ["image", "joint_pos", "joint_vel", "tcp_pos"]}
        else:
            meta |= {"inputs": ["state"], "obs_keys": ["joint_pos", "joint_vel", "target_minus_tcp"],
                     "state": f"[joint_pos; joint_vel; target - tcp_pos] ({tcp})"}
        return meta

    def state(self, obs) -> np.ndarray:
        q = obs["joint_pos"][self.env.act_idx]
        return np.concatenate([q, obs["joint_vel"][self.env.act_idx], self.env.q_cmd[self.env.act_idx] - q,
                               obs["tcp_pos"] - obs["target"]])

    @staticmethod
    def state_obs(obs, t: int = 0) -> np.ndarray:
        """The state MLP's input at control step t of the episode (the reach policy does not use t)."""
        return np.concatenate([obs["joint_pos"], obs["joint_vel"], obs["target"] - obs["tcp_pos"]])

    def joint_obs(self, obs) -> np.ndarray:
        """The CNN's robot configuration: joint angles and velocities, and the TCP by forward kinematics."""
        return np.concatenate([obs["joint_pos"], obs["joint_vel"], obs["tcp_pos"]])

    def _run(self, seed: int, act) -> Sample:
        obs, _ = self.env.reset(seed=int(seed))
        X, U, S, I = [self.state(obs)], [], [], []
        for t in range(self.T + 1):
            S.append(self.joint_obs(obs) if self.images else self.state_obs(obs, t))
            if self.images:
                I.append(obs["image"])
            if t == self.T:
                break
            u = np.asarray(act(t, X[-1], {"state": S[-1], "image": I[-1] if self.images else None}), float)
            if u.shape != (self.dU,) or not np.all(np.isfinite(u)):
                # a broken controller: the sample is marked non-finite and dropped by the caller
                U.append(np.full(self.dU, np.nan))
                X += [np.full(self.dX, np.nan)] * (self.T - t)
                S += [np.full_like(S[-1], np.nan)] * (self.T - t)
                if self.images:
                    I += [I[-1]] * (self.T - t)
                U += [np.full(self.dU, np.nan)] * (self.T - t - 1)
                break
            u = np.clip(u, -1.0, 1.0)
            obs, _, _, _, info = self.env.step(u)
            U.append(u)
            X.append(self.state(obs))
        X = np.array(X)
        d = float(np.linalg.norm(X[-1, -3:]))
        return Sample(X, np.array(U), np.array(S), np.array(I) if self.images else None,
                      bool(d < self.success_distance), d)

    def rollout(self, condition: int, act, seed: int) -> Sample:
        return self._run(self.condition_seeds[condition], act)

    def held_out(self, index: int, act) -> Sample:
        if not 0 <= index < self.HELD_OUT_SEEDS:
            raise ValueError(f"held-out index {index} out of range")
        return self._run(self.HELD_OUT_BASE + index, act)

    def resample(self, rng: np.random.Generator) -> list[int]:
        """New training conditions (same number): fresh episode seeds from the task's start
        distribution, never a held-out seed. Returns the seeds."""
        seeds = []
        while len(seeds) < self.n_conditions:
            s = int(rng.integers(0, 2**31 - 1))
            if not self.HELD_OUT_BASE <= s < self.HELD_OUT_BASE + self.HELD_OUT_SEEDS and s not in seeds:
                seeds.append(s)
        self.condition_seeds = seeds
        return seeds

    INIT_GAIN = 0.05     # initial controllers: the fraction of the TCP's error they correct per control step

    def hand_pose(self, reference_quat=None) -> np.ndarray:
        """The TCP position (3) and, with `reference_quat` (xyzw), the hand's orientation as the
        rotation vector (3, rad) from the reference to it: (3,) or (6,)."""
        pos, orn = self.env.tcp()
        if reference_quat is None:
            return pos
        from scipy.spatial.transform import Rotation
        rot = Rotation.from_quat(reference_quat).inv() * Rotation.from_quat(orn)
        return np.concatenate([pos, rot.as_rotvec()])

    def tcp_jacobian(self, reference_quat=None) -> np.ndarray:
        """d hand_pose / d q (3 or 6, dU) of the action joints at the current posture (central
        differences of the forward kinematics; the robot is put back where it was)."""
        env, robot = self.env, self.env.robot
        q0 = robot.state()[0].copy()
        J, h = np.empty((3 if reference_quat is None else 6, self.dU)), 1e-4
        for col, i in enumerate(env.act_idx):
            pose = []
            for sign in (1.0, -1.0):
                q = q0.copy()
                q[i] += sign * h
                robot.reset(q)
                pose.append(self.hand_pose(reference_quat))
            J[:, col] = (pose[0] - pose[1]) / (2 * h)
        robot.reset(q0)
        return J

    def initial_controllers(self, variance: float) -> list[LinearGaussianController]:
        """The initial local controllers of GPS (a PD law, LQR-FLM's starting point), one per condition:
        joint-position increments along the damped least-squares inverse of the TCP Jacobian at the
        condition's start posture, u = -INIT_GAIN J^+ (tcp - target) / action_scale, plus exploration
        noise of `variance` (normalized actions). Linear in the state x, whose last three entries are
        tcp - target; J is that of the start, so the law is only roughly right far from it."""
        out = []
        for seed in self.condition_seeds:
            self.env.reset(seed=int(seed))
            J = self.tcp_jacobian()
            J_pinv = J.T @ np.linalg.inv(J @ J.T + 1e-4 * np.eye(3))
            G = np.zeros((self.dU, self.dX))
            G[:, -3:] = self.INIT_GAIN * J_pinv / self.action_scale[:, None]
            out.append(LinearGaussianController.pd(self.T, self.dX, self.dU, gains=G, variance=variance))
        return out

    def teacher_params(self) -> np.ndarray:
        """The MPC teacher's cost parameter for the episode just reset: the target position."""
        return self.env.target.copy()

    def _place_tcp(self, tcp_goal: np.ndarray):
        """Put the arm (kinematically, no simulated motion) where its TCP is near `tcp_goal`, with the
        hand's current orientation (pybullet IK), hold it there and return the observation."""
        import pybullet as p
        env, robot = self.env, self.env.robot
        hand = robot._links[env.ee_link]
        pos, orn = p.getLinkState(robot.body, hand, computeForwardKinematics=True, physicsClientId=env.client)[4:6]
        z = np.asarray(p.getMatrixFromQuaternion(orn)).reshape(3, 3)[:, 2]
        tcp_offset = float(np.dot(self.env.tcp()[0] - np.asarray(pos), z))
        q_all = p.calculateInverseKinematics(robot.body, hand, (tcp_goal - tcp_offset * z).tolist(), orn,
                                             maxNumIterations=50, physicsClientId=env.client)
        q = np.array([q_all[robot.all_idx.index(i)] for i in robot.idx])
        q = np.clip(q, env.lower, env.upper)
        robot.reset(q)
        env.q_cmd = q.copy()
        obs, *_ = env.step(np.zeros(self.dU))
        return obs

    def pose_dataset(self, n: int, rng: np.random.Generator, reach_fraction: float = 0.0, progress=None):
        """n rendered (and, under randomization, randomized) images with the pose to regress:
        [target xyz, tcp xyz] -- the object and the arm in view (vision pretraining) -- and the joint
        state the CNN sees with each image: (images (n, H, W, 3), poses (n, 6), joint states (n, 2 n_joints)).
        Episode seeds are drawn from [50000, 2**31): never a held-out start.
        The arm is at its start posture after 0-14 random actions or, for a `reach_fraction` of the
        images, placed (inverse kinematics, no rollout) with its TCP somewhere on the way to the
        target, up to on it (where the gripper covers part of the target), +- 3 cm.
        `progress(done, n)` is called after every image."""
        if not self.images:
            raise ValueError("pose_dataset needs an image agent")
        images, poses, joints = [], [], []
        for i in range(n):
            obs, _ = self.env.reset(seed=int(rng.integers(50_000, 2**31)))
            if rng.uniform() < reach_fraction:
                a = min(1.0, rng.uniform(0.0, 1.3))
                obs = self._place_tcp(obs["tcp_pos"] + a * (obs["target"] - obs["tcp_pos"]) + rng.normal(0, 0.03, 3))
            else:
                for _ in range(int(rng.integers(0, 15))):
                    obs, *_ = self.env.step(rng.uniform(-1, 1, self.dU))
            images.append(obs["image"])
            poses.append(np.concatenate([obs["target"], obs["tcp_pos"]]))
            joints.append(self.joint_obs(obs))
            if progress is not None:
                progress(i + 1, n)
        return np.array(images), np.array(poses), np.array(joints)

    def close(self):
        self.env.close()
