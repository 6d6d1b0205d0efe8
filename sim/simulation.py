"""A pybullet DIRECT (or GUI) client with a fixed physics step, a ground plane and the robots in
it (`Simulation`), stepped with fresh joint torques from every robot's controller each substep."""
from __future__ import annotations

import pybullet as p
import pybullet_data

from s2r.core.robot_description import RobotDescription

from .sim_robot import SimRobot


class Simulation:
    """A pybullet DIRECT client with a fixed physics step, a ground plane and some robots."""

    def __init__(self, physics_hz: float = 1000.0, gui: bool = False):
        self.client = p.connect(p.GUI if gui else p.DIRECT)
        self.dt = 1.0 / physics_hz
        self.reset_world()

    def reset_world(self) -> None:
        """Empty the world (bodies, constraints, textures, contact caches) and add the ground plane:
        what follows is independent of everything simulated before, as in a fresh client."""
        p.resetSimulation(physicsClientId=self.client)
        p.setGravity(0, 0, -9.81, physicsClientId=self.client)
        p.setTimeStep(self.dt, physicsClientId=self.client)
        p.setPhysicsEngineParameter(deterministicOverlappingPairs=1, physicsClientId=self.client)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self.client)
        self.plane = p.loadURDF("plane.urdf", physicsClientId=self.client)
        self.robots: list[SimRobot] = []
        self.gravity = (0.0, 0.0, -9.81)
        self.steps = 0

    def add_robot(self, model: RobotDescription, joint_names, kp, kd, effort_limits, gravity_compensation=True,
                  base_position=None) -> SimRobot:
        r = SimRobot(self.client, model, joint_names, kp, kd, effort_limits, gravity_compensation, base_position)
        self.robots.append(r)
        return r

    def set_gravity(self, g) -> None:
        self.gravity = tuple(float(x) for x in g)
        p.setGravity(*self.gravity, physicsClientId=self.client)

    def step(self, n: int = 1) -> None:
        """n physics substeps, each with fresh joint torques from every robot's controller."""
        robots, dt, client = self.robots, self.dt, self.client
        if len(robots) == 1:
            robots[0].run_control(n, dt, p.stepSimulation)
        else:
            for _ in range(n):
                for r in robots:
                    r.run_control(1, dt)
                p.stepSimulation(physicsClientId=client)
        self.steps += n

    @property
    def time(self) -> float:
        """Simulated seconds, from an integer step count so it does not drift."""
        return self.steps * self.dt

    def close(self) -> None:
        if self.client is not None and p.isConnected(self.client):
            p.disconnect(self.client)
        self.client = None
