"""An arm's workspace from its robot description: where its shoulder is and how far its tool
centre point reaches, so that task geometry (table, targets, start regions) scales with the arm.

The arm tasks' geometry was laid out for the Franka Panda; `workspace_scale` is this arm's reach
over the Panda's (exactly 1 for the Panda), measured the same way for both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as p

from s2r.core import resources
from s2r.core.robot_description import RobotDescription, load_robot

REFERENCE_ROBOT = "panda"      # the arm the task geometry was laid out for
SAMPLES = 400


@dataclass(frozen=True)
class Workspace:
    shoulder: np.ndarray       # world position of the shoulder (the second arm joint's frame) at home
    reach: float               # the largest shoulder-to-TCP distance over sampled arm postures, m


def tcp_position(link_pos, link_orn, tcp_offset) -> np.ndarray:
    """The TCP in the world: `tcp_offset` (in the link's frame) from the link's pose."""
    R = np.array(p.getMatrixFromQuaternion(link_orn)).reshape(3, 3)
    return np.asarray(link_pos, float) + R @ np.asarray(tcp_offset, float)


_CACHE: dict[tuple, Workspace] = {}


def workspace(robot: RobotDescription) -> Workspace:
    """The arm's shoulder and reach (cached per description file and URDF)."""
    key = (robot.file, robot.urdf)
    if key not in _CACHE:
        _CACHE[key] = _workspace(robot)
    return _CACHE[key]


def _workspace(robot: RobotDescription) -> Workspace:
    arm = robot.arm_joints
    if not arm:
        raise ValueError(f"robot {robot.name!r} has no arm group: its workspace is undefined")
    client = p.connect(p.DIRECT)
    try:
        body = p.loadURDF(robot.urdf, robot.base_position, robot.base_orientation, useFixedBase=True,
                          physicsClientId=client)
        joints, links = {}, {}
        for i in range(p.getNumJoints(body, physicsClientId=client)):
            info = p.getJointInfo(body, i, physicsClientId=client)
            joints[info[1].decode()] = (i, info[8], info[9])
            links[info[12].decode()] = i
        for name, (i, *_) in joints.items():
            p.resetJointState(body, i, float(robot.home.get(name, 0.0)), physicsClientId=client)
        # a yaw-pitch shoulder: the second arm joint's frame (the child link of a joint has its frame)
        ee, pitch = links[robot.ee_link], joints[arm[min(1, len(arm) - 1)]][0]
        shoulder = np.array(p.getLinkState(body, pitch, computeForwardKinematics=True, physicsClientId=client)[4])
        rng = np.random.default_rng(0)
        reach = 0.0
        for _ in range(SAMPLES):
            for name in arm:
                i, lo, hi = joints[name]
                lo, hi = (-np.pi, np.pi) if lo > hi else (max(lo, -np.pi), min(hi, np.pi))
                p.resetJointState(body, i, rng.uniform(lo, hi), physicsClientId=client)
            pos, orn = p.getLinkState(body, ee, computeForwardKinematics=True, physicsClientId=client)[4:6]
            reach = max(reach, float(np.linalg.norm(tcp_position(pos, orn, robot.tcp_offset) - shoulder)))
        return Workspace(shoulder, reach)
    finally:
        p.disconnect(client)


def workspace_scale(robot: RobotDescription) -> float:
    """This arm's reach over the reference arm's (the packaged Panda description): 1.0 for it."""
    ref = load_robot(resources.packaged_dir("robot") / f"{REFERENCE_ROBOT}.yaml")
    if robot.file and ref.file == robot.file:
        return 1.0
    return workspace(robot).reach / workspace(ref).reach
