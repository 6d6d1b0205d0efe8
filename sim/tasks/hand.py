"""Hand tasks: fingertip reach, and grasp-and-lift of a cube (hardware config: hand_sim.yaml, the
16-DoF hand; the fingertips are the robot description's `tip_links`, the palm its `ee_link`).

Observations (float64): joint_pos, joint_vel, tip_pos (k, 3) for the k tip links (hand16: index,
middle, ring, thumb), target, and for grasp-lift palm_pos (3), object_pos (1, 3), object_quat (1, 4).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pybullet as p

from s2r.sim import scene
from s2r.sim.cameras import Pose, SimCamera
from s2r.sim.tasks.base import TaskEnv

MARKER_RGBA = ((0.9, 0.2, 0.2, 0.8), (0.2, 0.9, 0.2, 0.8), (0.2, 0.2, 0.9, 0.8), (0.9, 0.9, 0.2, 0.8))


def _box(*shape):
    return gym.spaces.Box(-np.inf, np.inf, shape, np.float64)


class HandTask(TaskEnv):
    """A hand from its robot description: the fingertips are its `tip_links`, the palm its
    `ee_link` (default config: hand_sim)."""
    config_name = "hand_sim"
    HAND_FRICTION = 1.0

    @property
    def ee_link(self) -> str:
        return self.description.ee_link

    @property
    def tip_links(self) -> tuple[str, ...]:
        if not self.description.tip_links:
            raise ValueError(f"{self.cfg.path}: robot {self.description.name!r} lists no tip_links for "
                             f"{type(self).__name__}")
        return self.description.tip_links

    def _links(self, names):
        return [self.robot._links[n] for n in names]

    def tips(self) -> np.ndarray:
        states = p.getLinkStates(self.robot.body, self._tip_idx, computeForwardKinematics=True,
                                 physicsClientId=self.client)
        return np.array([s[4] for s in states])

    def _setup_hand(self):
        self._tip_idx = self._links(self.tip_links)
        for i in range(-1, self.n_links):
            p.changeDynamics(self.robot.body, i, lateralFriction=self.HAND_FRICTION, physicsClientId=self.client)

    def friction_surfaces(self):
        return [(self.robot.body, i, self.HAND_FRICTION) for i in range(-1, self.n_links)]

    def distractor_region(self):
        return (-0.25, 0.05, 0.01), (0.25, 0.35, 0.03)


class HandReach(HandTask):
    """Move the four fingertips to four targets.

    Targets are the fingertip positions of a random posture (each joint uniform in the middle 70 %
    of its range), so they are reachable together. Reward: -sum_i |tip_i - target_i| (m).
    Success: every fingertip within 1.5 cm of its target.
    """
    success_threshold = 0.015

    def build_task(self, dr):
        self._setup_hand()
        k = len(self.tip_links)
        self.target = np.zeros((k, 3))
        self.markers = [scene.marker(self.client, (0, 0, -1), 0.008, MARKER_RGBA[i % len(MARKER_RGBA)])
                        for i in range(k)]

    def sample_task(self, rng):
        span = self.upper - self.lower
        q_goal = rng.uniform(self.lower + 0.15 * span, self.upper - 0.15 * span)
        self.robot.reset(q_goal)
        self.target = self.tips()
        q0 = np.clip(self.robot.q_home + rng.uniform(-0.05, 0.05, len(self.joint_names)), self.lower, self.upper)
        self.robot.reset(q0)
        for m, t in zip(self.markers, self.target):
            p.resetBasePositionAndOrientation(m, t.tolist(), (0, 0, 0, 1), physicsClientId=self.client)

    def task_spaces(self):
        k = len(self.tip_links)
        return {"tip_pos": _box(k, 3), "target": _box(k, 3)}

    def task_obs(self, obs):
        obs["tip_pos"] = self.tips()
        obs["target"] = self.target.copy()

    def reward_success(self, obs):
        d = np.linalg.norm(obs["tip_pos"] - obs["target"], axis=1)
        return -float(d.sum()), bool(d.max() < self.success_threshold), {"distance": float(d.max())}


class HandGraspLift(HandTask):
    """Grasp a 4 cm cube from the floor and lift it 10 cm.

    The hand (palm down, fingers along -y) hangs from a vertical slide, the `wrist_lift` joint, the
    last action dimension (at most 1 cm per step); it cannot move sideways. The cube starts in the
    hand's grasp region, between the curled fingers' pads and the opposed thumb: `GRASP_POINT`
    (x, y) +-1 cm in each (at the start the palm is 7 cm above the cube's top, fingers straight).
    `target` is the cube's start position raised by 10 cm. Reward: -|cube - target| (m).
    Success: the cube is more than 8 cm above its start and within 3 cm of the target.
    The camera (hand_sim.yaml's frames the fingertip-reach workspace, higher up) is moved to a
    three-quarter view across the pinch, from the thumb's side: `CAMERA` (position, rpy); the
    config's intrinsics are kept.
    """
    robot_name = "hand16_lift"
    CUBE_HALF = 0.02
    CUBE_MASS = 0.05
    LIFT = 0.10
    LIFT_GAINS = (2000.0, 120.0, 60.0, 0.0, 0.25)    # kp N/m, kd N s/m, effort N, limits m
    GRASP_POINT = (0.015, -0.022)     # between the curled middle/ring fingers and the opposed thumb
    START_SPREAD = 0.01
    CAMERA = ((0.32, -0.16, 0.21), (0.0, 0.275, 2.745))   # looks at (0.01, -0.03, 0.115)

    def task_camera(self, cam):
        return SimCamera(cam.name, cam.intrinsics, Pose(*self.CAMERA), cam.light)

    @property
    def controlled_joints(self):
        return tuple(self.cfg.joint_names) + ("wrist_lift",)

    def extra_joints(self):
        return {"wrist_lift": self.LIFT_GAINS}

    def action_scales(self):
        s = np.full(len(self.joint_names), self.cfg.safety.max_position_step)
        s[-1] = 0.01
        return s

    def build_task(self, dr):
        self._setup_hand()
        self.target = np.zeros(3)

    def sample_task(self, rng):
        q0 = np.clip(self.robot.q_home + rng.uniform(-0.03, 0.03, len(self.joint_names)), self.lower, self.upper)
        q0[-1] = self.robot.q_home[-1]
        self.robot.reset(q0)
        s = float(self.dr["object_size_scale"][0]) if "object_size_scale" in self.dr else 1.0
        he = [self.CUBE_HALF * s] * 3
        xy = np.asarray(self.GRASP_POINT) + rng.uniform(-self.START_SPREAD, self.START_SPREAD, 2)
        start = np.array([xy[0], xy[1], he[2]])
        cube = scene.box(self.client, he, start, self.CUBE_MASS, rgba=(0.9, 0.4, 0.1, 1))
        p.changeDynamics(cube, -1, lateralFriction=1.0, spinningFriction=0.001, rollingFriction=0.0001,
                         physicsClientId=self.client)
        self.objects.append(cube)
        m = self.CUBE_MASS
        w = 2 * he[0]
        self.object_nominal.append({"mass": m, "inertia": [m * w * w / 6] * 3, "lateral": 1.0,
                                    "spinning": 0.001, "rolling": 0.0001})
        self.surfaces.append(("cube", [(cube, -1)]))
        self.cube_start = start
        self.target = start + [0.0, 0.0, self.LIFT]

    def task_spaces(self):
        return {"tip_pos": _box(len(self.tip_links), 3), "palm_pos": _box(3), "object_pos": _box(1, 3), "object_quat": _box(1, 4),
                "target": _box(3)}

    def task_obs(self, obs):
        obs["tip_pos"] = self.tips()
        obs["palm_pos"] = np.asarray(p.getLinkState(self.robot.body, self.robot._links[self.ee_link],
                                                    physicsClientId=self.client)[4])
        pos, orn = p.getBasePositionAndOrientation(self.objects[0], physicsClientId=self.client)
        obs["object_pos"], obs["object_quat"] = np.array([pos]), np.array([orn])
        obs["target"] = self.target.copy()

    def reward_success(self, obs):
        cube = obs["object_pos"][0]
        d = float(np.linalg.norm(cube - obs["target"]))
        lifted = cube[2] - self.cube_start[2]
        return -d, bool(lifted > 0.08 and d < 0.03), {"distance": d, "lift": float(lifted)}
