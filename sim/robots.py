"""Robot models and the torque-level joint control shared by the sim driver and the sim tasks.

A robot description (robots/*.yaml) says where a robot comes from (URDF, base pose, home posture). A `SimRobot` is one
loaded into a pybullet client: it owns the mapping from joint names to pybullet indices, reads
state, and turns position / velocity / effort targets into joint torques every physics substep
with the configured PD gains, on top of gravity compensation (as on a torque-controlled arm).
Actuator effects beyond that rigid PD joint (backlash, Coulomb friction and stiction, a lower
torque limit, torque droop with speed) are off unless `SimRobot.set_unmodeled` switches them on.

This is the public module; each part lives in its own:
- `sim.robot_models`: `robot_model(name or path)`, the robot descriptions (s2r.core.robot_description);
- `sim.sim_robot`: `SimRobot` and its torque loop, the command modes;
- `sim.simulation`: `Simulation`, the pybullet client the robots live in;
- `sim.robot_draw`: a randomization draw's robot physics (`apply_robot_draw`, `RobotNominal`).
"""
from __future__ import annotations

import pybullet as p  # noqa: F401  (the module callers patch as `sim.robots.p`)

from .robot_draw import ACTUATOR_EFFECTS, ROBOT_DYNAMICS, RobotNominal, apply_robot_draw, model_joint_damping
from .robot_models import ASSETS, RobotDescription, robot_model, robot_names
from .sim_robot import MODE_EFFORT, MODE_POSITION, MODE_VELOCITY, STICTION_VELOCITY, SimRobot
from .simulation import Simulation

__all__ = ["ACTUATOR_EFFECTS", "ASSETS", "MODE_EFFORT", "MODE_POSITION", "MODE_VELOCITY",
           "ROBOT_DYNAMICS", "STICTION_VELOCITY", "RobotDescription", "RobotNominal", "SimRobot", "Simulation",
           "apply_robot_draw", "model_joint_damping", "robot_model", "robot_names"]
