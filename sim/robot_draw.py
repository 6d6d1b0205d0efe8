"""A randomization draw's robot physics (`apply_robot_draw`), applied on top of the robot's
nominal parameters (`RobotNominal`): one function for the sim tasks and the sim driver, so that
one draw makes the same robot in both."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pybullet as p

if TYPE_CHECKING:
    from .sim_robot import SimRobot
    from .simulation import Simulation

# randomization parameters (sim.randomization) that act on a robot's physics: `apply_robot_draw`
ROBOT_DYNAMICS = ("link_mass_scale", "joint_damping_scale", "gain_scale", "gravity_offset")
ACTUATOR_EFFECTS = ("backlash", "coulomb_friction", "stiction", "torque_limit_scale", "motor_droop")


@dataclass(frozen=True)
class RobotNominal:
    """A loaded robot's physical parameters before randomization: per link (mass, local inertia
    diagonal), per controlled joint the viscous damping (N m s/rad)."""
    links: tuple
    joint_damping: np.ndarray

    @classmethod
    def of(cls, robot: "SimRobot", joint_damping=None) -> "RobotNominal":
        """Measured from `robot` as loaded; joint_damping default: `model_joint_damping(robot)`."""
        c, body = robot.client, robot.body
        links = tuple(p.getDynamicsInfo(body, i, physicsClientId=c)[:3:2]
                      for i in range(p.getNumJoints(body, physicsClientId=c)))
        d = model_joint_damping(robot) if joint_damping is None else np.asarray(joint_damping, float)
        return cls(links, d)

    def restore_damping(self, robot: "SimRobot") -> None:
        """Set the controlled joints' damping to the nominal values."""
        for i, j in enumerate(robot.idx):
            p.changeDynamics(robot.body, j, jointDamping=float(self.joint_damping[i]), physicsClientId=robot.client)


def model_joint_damping(robot: "SimRobot") -> np.ndarray:
    """Per controlled joint: the model's identified viscous damping (`RobotDescription.joint_damping`),
    else the URDF's."""
    known = robot.model.joint_damping
    return np.array([known[n] if n in known else
                     p.getJointInfo(robot.body, j, physicsClientId=robot.client)[6]
                     for n, j in zip(robot.joint_names, robot.idx)], float)


def apply_robot_draw(simulation: "Simulation", robot: "SimRobot", nominal: RobotNominal, v: dict) -> None:
    """Apply the robot-physics part of a randomization draw `v` (`ROBOT_DYNAMICS` and
    `ACTUATOR_EFFECTS`; per-joint values in `robot.joint_names` order, per-link ones in pybullet
    link order) on top of `nominal`: what the sim tasks and the sim driver both call, so that one
    draw makes the same robot in both. Other entries of `v` are ignored here."""
    c, body = robot.client, robot.body
    if "link_mass_scale" in v:
        for i, s in enumerate(v["link_mass_scale"]):
            m, inertia = nominal.links[i]
            if m > 0:
                p.changeDynamics(body, i, mass=m * s, localInertiaDiagonal=[x * s for x in inertia],
                                 physicsClientId=c)
    if "joint_damping_scale" in v:
        for i, j in enumerate(robot.idx):
            p.changeDynamics(body, j, jointDamping=float(nominal.joint_damping[i] * v["joint_damping_scale"][i]),
                             physicsClientId=c)
    if "gain_scale" in v:
        robot.kp = robot.nominal_kp * v["gain_scale"]
        robot.kd = robot.nominal_kd * v["gain_scale"]
    if "gravity_offset" in v:
        simulation.set_gravity(np.array([0.0, 0.0, -9.81]) + v["gravity_offset"])
    actuator = {k: v[k] for k in ACTUATOR_EFFECTS if k in v}
    if actuator:
        robot.set_unmodeled(**actuator)
