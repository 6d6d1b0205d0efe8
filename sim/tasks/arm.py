"""Arm tasks: reach, push, insert, on any arm with a robot description (robots/*.yaml): the hardware
config (`config=`, default hardware_configs/panda_sim.yaml) names the robot, whose `arm` group the
action moves, whose `gripper` group the task holds, whose `ee_link` and `tcp_offset` give the tool
centre point (TCP). `gym.make("s2r/ArmReach-v0", config="iiwa_sim")`.

The arm stands on the floor at its base; a table (top at `TABLE_HEIGHT`, randomizable +-2 cm) is
in front of it. The task geometry (table, targets, start regions) was laid out for the Franka Panda
and is scaled by the arm's reach over the Panda's (`sim.workspace.workspace_scale`, 1 for the
Panda), about the robot's base. The gripper's joints are held at their home opening, except in
ArmPush, which closes them (their lower limits).

Observations (all float64): joint_pos, joint_vel (the arm's joints; and the gripper's in ArmPush),
tcp_pos (3), tcp_quat (4, xyzw, the ee_link's), object_pos (k, 3), object_quat (k, 4) for the
task's k movable objects, target (3).
"""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pybullet as p

from s2r.sim import scene
from s2r.sim.tasks.base import TaskEnv
from s2r.sim.workspace import workspace_scale

TABLE_HEIGHT = 0.10
TABLE_CENTER = (0.55, 0.0)
TABLE_SIZE = (0.7, 0.9)
DOWN = p.getQuaternionFromEuler([np.pi, 0.0, 0.0])   # hand z pointing down, hand x along world x


def _box_inertia(m, he):
    x, y, z = (2 * h for h in he)
    return [m * (y * y + z * z) / 12, m * (x * x + z * z) / 12, m * (x * x + y * y) / 12]


def rotate(q, v) -> tuple[float, float, float]:
    """Vector v rotated by the unit quaternion q (x, y, z, w), in plain floats (hot path)."""
    x, y, z, w = q
    a, b, c = v
    return (a * (1.0 - 2.0 * (y * y + z * z)) + b * 2.0 * (x * y - w * z) + c * 2.0 * (x * z + w * y),
            a * 2.0 * (x * y + w * z) + b * (1.0 - 2.0 * (x * x + z * z)) + c * 2.0 * (y * z - w * x),
            a * 2.0 * (x * z - w * y) + b * 2.0 * (y * z + w * x) + c * (1.0 - 2.0 * (x * x + y * y)))


class ArmTask(TaskEnv):
    config_name = "panda_sim"
    n_objects = 0
    hold_gripper = False             # the gripper's joints are controlled (held by the task)

    @property
    def controlled_joints(self):
        d = self.description
        if not d.arm_joints:
            raise ValueError(f"{self.cfg.path}: robot {d.name!r} has no arm group for {type(self).__name__}")
        grip = tuple(j for j in d.gripper_joints if j in self.cfg.joint_names) if self.hold_gripper else ()
        return d.arm_joints + grip

    @property
    def action_joints(self):
        return self.description.arm_joints

    @property
    def ee_link(self) -> str:
        return self.description.ee_link

    @property
    def tcp_offset(self) -> tuple:
        return self.description.tcp_offset

    @property
    def scale(self) -> float:
        """The task geometry's scale: this arm's reach over the Panda's."""
        if not hasattr(self, "_scale"):
            self._scale = workspace_scale(self.description)
        return self._scale

    def at(self, x, y):
        """The point (x, y) of the Panda's layout, for this arm: scaled about its base."""
        bx, by = self.description.base_position[:2]
        s = self.scale
        return bx + s * x, by + s * y

    def build_table(self, dr) -> None:
        h = TABLE_HEIGHT + float(dr.get("table_height_offset", 0.0))
        s = self.scale
        self.table = scene.table(self.client, self.at(*TABLE_CENTER), size=(TABLE_SIZE[0] * s, TABLE_SIZE[1] * s),
                                 height=h)
        self.surfaces.append(("table", [(self.table.body, -1)]))

    def friction_surfaces(self):
        return [(self.table.body, -1, 0.8)]

    def distractor_region(self):
        h = self.table.height
        (x0, y0), (x1, y1) = self.at(0.3, -0.42), self.at(0.85, 0.42)
        return (x0, y0, h + 0.02), (x1, y1, h + 0.03)

    def tcp(self):
        """TCP position and hand orientation (xyzw): `tcp_offset` in the hand's frame."""
        pos, orn = p.getLinkState(self.robot.body, self._hand, computeForwardKinematics=True,
                                  physicsClientId=self.client)[4:6]
        d = rotate(orn, self.description.tcp_offset)
        return np.array((pos[0] + d[0], pos[1] + d[1], pos[2] + d[2])), np.array(orn)

    def hand_target(self, tcp, orn) -> list:
        """Where the hand link goes for the TCP to be at `tcp` with the hand at orientation `orn`."""
        d = rotate(orn, self.description.tcp_offset)
        return [tcp[0] - d[0], tcp[1] - d[1], tcp[2] - d[2]]

    def ik(self, tcp, orn, rest=None, limits=None, iterations=100, threshold=1e-5) -> np.ndarray:
        """The controlled joints' posture putting the TCP at `tcp` with the hand at `orn` (pybullet's
        IK from the current posture; `rest`/`limits` in controlled-joint order for its null space)."""
        r = self.robot
        kw = {}
        if rest is not None:
            lo, hi, rp = r.all_lower.copy(), r.all_upper.copy(), r.q_home_all.copy()
            lo_c, hi_c = limits if limits is not None else (self.lower, self.upper)
            lo[r._pos_in_all], hi[r._pos_in_all], rp[r._pos_in_all] = lo_c, hi_c, rest
            kw = dict(lowerLimits=lo.tolist(), upperLimits=hi.tolist(), jointRanges=(hi - lo).tolist(),
                      restPoses=rp.tolist())
        q = p.calculateInverseKinematics(r.body, self._hand, self.hand_target(tcp, orn), orn,
                                         maxNumIterations=iterations, residualThreshold=threshold,
                                         physicsClientId=self.client, **kw)
        return np.asarray(q)[r._pos_in_all]

    @property
    def _hand(self) -> int:
        return self.robot._links[self.ee_link]

    def task_spaces(self):
        k = self.n_objects
        box = lambda *shape: gym.spaces.Box(-np.inf, np.inf, shape, np.float64)   # noqa: E731
        sp = {"tcp_pos": box(3), "tcp_quat": box(4), "target": box(3)}
        if k:
            sp |= {"object_pos": box(k, 3), "object_quat": box(k, 4)}
        return sp

    def task_obs(self, obs):
        obs["tcp_pos"], obs["tcp_quat"] = self.tcp()
        if len(self.objects) == 1:
            pos, orn = p.getBasePositionAndOrientation(self.objects[0], physicsClientId=self.client)
            obs["object_pos"], obs["object_quat"] = np.array((pos,)), np.array((orn,))
        elif self.objects:
            poses = [p.getBasePositionAndOrientation(b, physicsClientId=self.client) for b in self.objects]
            obs["object_pos"] = np.array([q[0] for q in poses])
            obs["object_quat"] = np.array([q[1] for q in poses])
        obs["target"] = self.target.copy()

    def start_posture(self, rng):
        q = self.robot.q_home + rng.uniform(-0.05, 0.05, len(self.joint_names))
        self.robot.reset(q)

    def add_object(self, body, mass, he, lateral=0.8, spinning=0.001, rolling=0.0001, name="object"):
        p.changeDynamics(body, -1, lateralFriction=lateral, spinningFriction=spinning, rollingFriction=rolling,
                         physicsClientId=self.client)
        self.objects.append(body)
        self.object_nominal.append({"mass": mass, "inertia": _box_inertia(mass, he), "lateral": lateral,
                                    "spinning": spinning, "rolling": rolling})
        self.surfaces.append((name, [(body, -1)]))


class ArmReach(ArmTask):
    """Move the TCP to a 3D target.

    Target: uniform in x [0.35, 0.65], y [-0.25, 0.25], z [table + 0.1, table + 0.45] (m, for the
    Panda; scaled with the arm's reach).
    Reward: -|tcp - target| (m). Success: |tcp - target| < 2 cm.
    The target is shown as a sphere (visual only) of `target_marker_radius` (default 1.5 cm) and
    colour `target_marker_rgba`: about a pixel at 64x64, so image policies ask for a larger one.
    With `target_stand`, a thin post (visual only, the arm passes through it) holds the sphere up
    from the table, as a real target on a stand would be: where its foot meets the table tells a
    single camera the target's depth, which the sphere's image position alone does not.
    """
    TARGET_MARKER_RADIUS = 0.015
    TARGET_MARKER_RGBA = (0.1, 0.8, 0.1, 0.8)
    TARGET_STAND_RADIUS = 0.01
    TARGET_STAND_RGBA = (0.15, 0.15, 0.6, 1.0)

    def __init__(self, *args, target_marker_radius: float | None = None, target_marker_rgba=None,
                 target_stand: bool = False, **kwargs):
        r = self.TARGET_MARKER_RADIUS if target_marker_radius is None else float(target_marker_radius)
        if not 0.0 < r <= 0.2:
            raise ValueError(f"target_marker_radius must be in (0, 0.2] m, got {target_marker_radius}")
        rgba = tuple(float(c) for c in (target_marker_rgba or self.TARGET_MARKER_RGBA))
        if len(rgba) != 4 or not all(0.0 <= c <= 1.0 for c in rgba):
            raise ValueError(f"target_marker_rgba must be 4 values in [0, 1], got {target_marker_rgba}")
        self.target_marker_radius, self.target_marker_rgba = r, rgba
        self.target_stand = bool(target_stand)
        super().__init__(*args, **kwargs)

    def build_task(self, dr):
        self.build_table(dr)
        self.target = np.zeros(3)
        self.target_marker = scene.marker(self.client, (0, 0, -1), self.target_marker_radius, self.target_marker_rgba)

    def sample_task(self, rng):
        self.start_posture(rng)
        h = self.table.height
        s = self.scale
        self.target = rng.uniform((*self.at(0.35, -0.25), h + 0.1 * s), (*self.at(0.65, 0.25), h + 0.45 * s))
        p.resetBasePositionAndOrientation(self.target_marker, self.target.tolist(), (0, 0, 0, 1),
                                          physicsClientId=self.client)
        if self.target_stand:       # the world is rebuilt every episode: a post of this episode's height
            length = self.target[2] - self.target_marker_radius - h
            self.stand = scene.post(self.client, (self.target[0], self.target[1], h), length,
                                    self.TARGET_STAND_RADIUS, self.TARGET_STAND_RGBA)

    def reward_success(self, obs):
        d = math.dist(obs["tcp_pos"].tolist(), obs["target"].tolist())
        return -d, d < self.success_threshold, {"distance": d}


class ArmPush(ArmTask):
    """Push a 5 cm block across the table to a goal.

    The fingers are held closed (controlled joints, not in the action): together they make a flat
    5 cm paddle, which pushes a 5 cm block straight; open, the 4 cm gap between them leaves two
    5 mm edges that let the block slip sideways. Observations therefore have 9 joints (7 arm + 2
    fingers); the action has 7.
    Block start: x [0.45, 0.6], y [-0.12, 0.12]; goal 10-18 cm away in a random direction that keeps
    it on the reachable part of the table (x [0.38, 0.7], |y| <= 0.25; Panda figures, scaled with
    the arm's reach). Reward: -|block_xy - goal_xy| - 0.1 |tcp - block|.
    Success: the block's centre within 3 cm of the goal (in the table plane).
    """
    n_objects = 1
    BLOCK_HALF = 0.025
    BLOCK_MASS = 0.2
    success_threshold = 0.03
    hold_gripper = True

    def fixed_joint_targets(self):
        return self._fingers_closed

    def start_posture(self, rng):
        q = self.robot.q_home + rng.uniform(-0.05, 0.05, len(self.joint_names))
        n_arm = len(self.action_joints)
        q[n_arm:] = self.lower[n_arm:]                  # the gripper closed
        self._fingers_closed = np.zeros(len(self.joint_names))
        self._fingers_closed[n_arm:] = self.lower[n_arm:]
        self.robot.reset(q)

    def build_task(self, dr):
        self.build_table(dr)
        s = float(dr["object_size_scale"][0]) if "object_size_scale" in dr else 1.0
        he = [self.BLOCK_HALF * s] * 3
        self.block_half = he[0]
        block = scene.box(self.client, he, (0.5, 0.0, self.table.height + he[2]), self.BLOCK_MASS,
                          rgba=(0.85, 0.25, 0.2, 1))
        self.add_object(block, self.BLOCK_MASS, he, name="block")
        self.target = np.zeros(3)
        self.target_marker = scene.marker(self.client, (0, 0, -1), 0.02, (0.1, 0.8, 0.1, 0.6))

    def sample_task(self, rng):
        self.start_posture(rng)
        h = self.table.height
        (x0, y0), (x1, y1) = self.at(0.45, -0.12), self.at(0.6, 0.12)
        start = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1), h + self.block_half])
        yaw = rng.uniform(-0.3, 0.3)
        p.resetBasePositionAndOrientation(self.objects[0], start.tolist(), p.getQuaternionFromEuler([0, 0, yaw]),
                                          physicsClientId=self.client)
        (gx0, gy0), (gx1, gy1) = self.at(0.38, -0.25), self.at(0.7, 0.25)
        for _ in range(100):
            ang, dist = rng.uniform(-np.pi, np.pi), rng.uniform(0.10, 0.18)
            goal = start[:2] + dist * np.array([np.cos(ang), np.sin(ang)])
            if gx0 <= goal[0] <= gx1 and gy0 <= goal[1] <= gy1:
                break
        self.target = np.array([goal[0], goal[1], h])
        p.resetBasePositionAndOrientation(self.target_marker, self.target.tolist(), (0, 0, 0, 1),
                                          physicsClientId=self.client)

    def reward_success(self, obs):
        block, target, tcp = obs["object_pos"][0], obs["target"], obs["tcp_pos"]
        bx, by, bz = block.tolist()
        d = math.hypot(bx - target[0], by - target[1])
        reach = math.dist(tcp.tolist(), (bx, by, bz))
        return -d - 0.1 * reach, d < self.success_threshold, {"distance": d}


class ArmInsert(ArmTask):
    """Insert a held peg into the matching hole of a shape-sorting box (the GPS visuomotor task,
    Levine et al. 2016, "End-to-End Training of Deep Visuomotor Policies").

    As in that work the shape is held rigidly in the gripper (a fixed constraint; the fingers close
    around it). The box (holes: a square and a slot; each peg fits only its own) is placed on the
    table at x [0.5, 0.6], y [-0.1, 0.1] (Panda figures, scaled with the arm's reach). `shape` picks the peg ("square", "slot") or None for a
    random one per episode. `target` is the point 2 cm below the top of the matching hole's centre.
    Reward: -|peg bottom - target|. Success: the peg's bottom face is more than 1.5 cm below the top
    surface, inside the matching hole.
    """
    n_objects = 1
    PEG_HALF_LENGTH = 0.04
    PEG_MASS = 0.1
    GRIP_DEPTH = 0.025        # peg centre below the TCP, along the hand's z
    DEPTH = 0.02
    success_threshold = 0.015

    def __init__(self, shape: str | None = "square", **kw):
        if shape is not None and shape not in scene.PEGS:
            raise ValueError(f"unknown peg shape {shape!r} (known: {', '.join(scene.PEGS)})")
        self.shape_choice = shape
        self.shape = shape or "square"
        super().__init__(**kw)

    def build_task(self, dr):
        self.build_table(dr)
        self.target = np.zeros(3)

    def sample_task(self, rng):
        if self.shape_choice is None:
            self.shape = sorted(scene.PEGS)[int(rng.integers(len(scene.PEGS)))]
        (x0, y0), (x1, y1) = self.at(0.5, -0.1), self.at(0.6, 0.1)
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        self.sorter = scene.shape_sorter(self.client, (x, y, self.table.height))
        self.surfaces.append(("sorter", [(self.sorter.body, -1)]))
        # start above the box, hand down: a posture found by IK from home, then small noise
        start = np.array([x + rng.uniform(-0.08, 0.08), y + rng.uniform(-0.08, 0.08), self.sorter.top + 0.17])
        q = self.ik(start, DOWN)
        self.robot.reset(q + rng.uniform(-0.02, 0.02, len(q)))
        s = float(self.dr["object_size_scale"][0]) if "object_size_scale" in self.dr else 1.0
        hx, hy = scene.PEGS[self.shape]
        he = [hx * s, hy * s, self.PEG_HALF_LENGTH]
        self.peg_half = he
        tcp, orn = self.tcp()
        R = np.array(p.getMatrixFromQuaternion(orn)).reshape(3, 3)
        peg = scene.box(self.client, he, tcp + self.GRIP_DEPTH * R[:, 2], self.PEG_MASS, orn,
                        rgba=(0.95, 0.75, 0.1, 1))
        for link in range(-1, self.n_links):
            p.setCollisionFilterPair(self.robot.body, peg, link, -1, 0, physicsClientId=self.client)
        # constraint frames are relative to the link's centre of mass, not its URDF frame
        com = np.asarray(p.getDynamicsInfo(self.robot.body, self._hand, physicsClientId=self.client)[3])
        self.grip = p.createConstraint(self.robot.body, self._hand, peg, -1, p.JOINT_FIXED, (0, 0, 0),
                                       (np.array(self.tcp_offset) + (0, 0, self.GRIP_DEPTH) - com).tolist(), (0, 0, 0),
                                       physicsClientId=self.client)
        p.changeConstraint(self.grip, maxForce=500.0, physicsClientId=self.client)
        self.add_object(peg, self.PEG_MASS, he, name="peg")
        hole = self.sorter.holes[self.shape]
        self.target = np.array([hole[0], hole[1], self.sorter.top - self.DEPTH])

    def peg_bottom(self, obs) -> np.ndarray:
        R = np.array(p.getMatrixFromQuaternion(obs["object_quat"][0])).reshape(3, 3)
        return obs["object_pos"][0] + self.peg_half[2] * R[:, 2]   # +z of the peg = the hand's z = down

    def reward_success(self, obs):
        bottom = self.peg_bottom(obs)
        d = float(np.linalg.norm(bottom - obs["target"]))
        hx, hy = self.sorter.hole_half[self.shape]
        inside = abs(bottom[0] - obs["target"][0]) < hx and abs(bottom[1] - obs["target"][1]) < hy
        depth = self.sorter.top - bottom[2]
        return -d, bool(inside and depth > self.success_threshold), {"distance": d, "depth": float(depth)}
