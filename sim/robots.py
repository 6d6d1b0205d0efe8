"""Robot models and the torque-level joint control shared by the sim driver and the sim tasks.

A `RobotModel` says where a robot comes from (URDF, base pose, home posture). A `SimRobot` is one
loaded into a pybullet client: it owns the mapping from joint names to pybullet indices, reads
state, and turns position / velocity / effort targets into joint torques every physics substep
with the configured PD gains, on top of gravity compensation (as on a torque-controlled arm).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pybullet as p
import pybullet_data

ASSETS = Path(__file__).resolve().parent / "assets"


@dataclass(frozen=True)
class RobotModel:
    name: str
    urdf: str
    ee_link: str
    home: dict = field(default_factory=dict)
    base_position: tuple = (0.0, 0.0, 0.0)
    base_orientation: tuple = (0.0, 0.0, 0.0, 1.0)   # xyzw
    tip_links: tuple = ()


ROBOTS: dict[str, RobotModel] = {
    "panda": RobotModel(
        "panda", str(Path(pybullet_data.getDataPath()) / "franka_panda" / "panda.urdf"), "panda_hand",
        home={"panda_joint1": 0.0, "panda_joint2": -0.785, "panda_joint3": 0.0, "panda_joint4": -2.356,
              "panda_joint5": 0.0, "panda_joint6": 1.571, "panda_joint7": 0.785,
              "panda_finger_joint1": 0.02, "panda_finger_joint2": 0.02},
    ),
    "hand16": RobotModel(
        "hand16", str(ASSETS / "hand16.urdf"), "palm",
        base_position=(0.0, 0.0, 0.25),
        home={"if_mcp": 0.3, "mf_mcp": 0.3, "rf_mcp": 0.3, "th_cmc": 0.5, "th_abd": 0.2},
        tip_links=("if_tip", "mf_tip", "rf_tip", "th_tip"),
    ),
}


def robot_model(name: str) -> RobotModel:
    try:
        return ROBOTS[name]
    except KeyError:
        raise ValueError(f"unknown sim robot {name!r} (known: {', '.join(ROBOTS)})") from None


MODE_POSITION, MODE_VELOCITY, MODE_EFFORT = "position", "velocity", "effort"


class SimRobot:
    """One robot in a pybullet client, controlled by joint torques computed here."""

    def __init__(self, client: int, model: RobotModel, joint_names, kp, kd, effort_limits,
                 gravity_compensation: bool = True, base_position=None):
        self.client, self.model = client, model
        self.body = p.loadURDF(model.urdf, basePosition=base_position or model.base_position,
                               baseOrientation=model.base_orientation, useFixedBase=True,
                               flags=p.URDF_USE_INERTIA_FROM_FILE, physicsClientId=client)
        self._links: dict[str, int] = {p.getBodyInfo(self.body, physicsClientId=client)[0].decode(): -1}
        movable: dict[str, int] = {}
        for i in range(p.getNumJoints(self.body, physicsClientId=client)):
            info = p.getJointInfo(self.body, i, physicsClientId=client)
            self._links[info[12].decode()] = i
            if info[2] != p.JOINT_FIXED:
                movable[info[1].decode()] = i
        unknown = [n for n in joint_names if n not in movable]
        if unknown:
            raise ValueError(f"robot {model.name!r} has no joint(s) {unknown}; its joints are {list(movable)}")
        self.joint_names = tuple(joint_names)
        self.idx = [movable[n] for n in joint_names]
        # Inverse dynamics in pybullet works on all movable joints; keep both index sets.
        self.all_idx = list(movable.values())
        self._pos_in_all = [self.all_idx.index(i) for i in self.idx]
        self.n = len(self.idx)
        self.kp, self.kd = np.asarray(kp, float), np.asarray(kd, float)
        self.effort_limits = np.asarray(effort_limits, float)
        self.gravity_compensation = gravity_compensation
        for i in range(-1, p.getNumJoints(self.body, physicsClientId=client)):
            p.changeDynamics(self.body, i, linearDamping=0.0, angularDamping=0.0, physicsClientId=client)
        # Free the joints from pybullet's default velocity motors: we command torques.
        p.setJointMotorControlArray(self.body, self.all_idx, p.VELOCITY_CONTROL,
                                    forces=[0.0] * len(self.all_idx), physicsClientId=client)
        self._others = [i for i in self.all_idx if i not in self.idx]
        self._others_in_all = [self.all_idx.index(i) for i in self._others]
        self.q_home = np.array([model.home.get(n, 0.0) for n in joint_names])
        self._others_home = np.array([model.home.get(p.getJointInfo(self.body, i, physicsClientId=client)[1].decode(), 0.0)
                                      for i in self._others])
        self.reset(self.q_home)

    # ---------------------------------------------------------------- state
    def reset(self, q, qd=None) -> None:
        qd = np.zeros(self.n) if qd is None else qd
        for i, qi, vi in zip(self.idx, q, qd):
            p.resetJointState(self.body, i, float(qi), float(vi), physicsClientId=self.client)
        for i, qi in zip(self._others, self._others_home):
            p.resetJointState(self.body, i, float(qi), 0.0, physicsClientId=self.client)
        self.q_target = np.array(q, float)
        self._q_goal = self.q_target.copy()
        self._interp_left = 0.0
        self.qd_target = np.zeros(self.n)
        self.tau_ff = np.zeros(self.n)
        self.mode = MODE_POSITION
        self.tau = np.zeros(self.n)
        self._others_target = self._others_home.copy()

    def joint_state(self):
        """(q, qd) of all movable joints in pybullet order."""
        states = p.getJointStates(self.body, self.all_idx, physicsClientId=self.client)
        q = np.fromiter((s[0] for s in states), float, len(states))
        qd = np.fromiter((s[1] for s in states), float, len(states))
        return q, qd

    def state(self):
        """(q, qd, tau) of the controlled joints, tau being the last torque applied."""
        q, qd = self.joint_state()
        return q[self._pos_in_all], qd[self._pos_in_all], self.tau.copy()

    def link_pose(self, link: str):
        """World position (3,) and orientation quaternion xyzw (4,) of a named link."""
        try:
            i = self._links[link]
        except KeyError:
            raise ValueError(f"robot {self.model.name!r} has no link {link!r}") from None
        if i == -1:
            pos, orn = p.getBasePositionAndOrientation(self.body, physicsClientId=self.client)
        else:
            pos, orn = p.getLinkState(self.body, i, computeForwardKinematics=True, physicsClientId=self.client)[4:6]
        return np.array(pos), np.array(orn)

    # ---------------------------------------------------------------- control
    def set_target(self, mode: str, values: np.ndarray, period: float | None = None) -> None:
        """Latch a command; `apply_control` turns it into torques each substep.

        With `period` (the control period), a position command is reached by linear interpolation
        over that period with the matching velocity feed-forward, as a robot's joint interpolator
        does with streamed set-points; without it, the target is a step (used for holding).
        """
        values = np.asarray(values, float)
        if mode == MODE_POSITION:
            if period and self.mode == MODE_POSITION:
                self._interp_left = period
                self.qd_target = (values - self.q_target) / period
            else:
                self._interp_left = 0.0
                self.q_target = values.copy()
                self.qd_target = np.zeros(self.n)
            self._q_goal = values.copy()
            self.tau_ff = np.zeros(self.n)
        elif mode == MODE_VELOCITY:
            if self.mode != MODE_VELOCITY:
                self.q_target = self.state()[0]
            self.qd_target, self.tau_ff = values.copy(), np.zeros(self.n)
        elif mode == MODE_EFFORT:
            self.tau_ff = values.copy()
        else:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode

    def hold(self) -> None:
        self.set_target(MODE_POSITION, self.state()[0])

    def apply_control(self, dt: float) -> None:
        """Compute and apply this substep's joint torques (call before each stepSimulation)."""
        q_all, qd_all = self.joint_state()
        q, qd = q_all[self._pos_in_all], qd_all[self._pos_in_all]
        if self.mode == MODE_EFFORT:
            tau = self.tau_ff.copy()
        else:
            if self.mode == MODE_POSITION:
                if self._interp_left > 1e-12:
                    self.q_target = self.q_target + self.qd_target * dt
                    self._interp_left -= dt
                    if self._interp_left <= 1e-12:
                        self.q_target = self._q_goal.copy()
                else:
                    self.qd_target = np.zeros(self.n)
            elif self.mode == MODE_VELOCITY:
                # velocity mode tracks an integrated reference so it does not drift under load
                self.q_target = self.q_target + self.qd_target * dt
            tau = self.kp * (self.q_target - q) + self.kd * (self.qd_target - qd)
        tau_all = np.zeros(len(self.all_idx))
        if self._others:
            # joints not under command (e.g. a gripper left out of the config) are held at home
            oi = self._others_in_all
            tau_all[oi] = 200.0 * (self._others_target - q_all[oi]) - 5.0 * qd_all[oi]
        if self.gravity_compensation:
            g = p.calculateInverseDynamics(self.body, list(q_all), [0.0] * len(q_all), [0.0] * len(q_all),
                                           physicsClientId=self.client)
            tau_all += np.asarray(g)
        tau_all[self._pos_in_all] += tau
        tau_all[self._pos_in_all] = np.clip(tau_all[self._pos_in_all], -self.effort_limits, self.effort_limits)
        self.tau = tau_all[self._pos_in_all]
        p.setJointMotorControlArray(self.body, self.all_idx, p.TORQUE_CONTROL, forces=tau_all.tolist(),
                                    physicsClientId=self.client)


class Simulation:
    """A pybullet DIRECT client with a fixed physics step, a ground plane and some robots."""

    def __init__(self, physics_hz: float = 1000.0, gui: bool = False):
        self.client = p.connect(p.GUI if gui else p.DIRECT)
        self.dt = 1.0 / physics_hz
        p.resetSimulation(physicsClientId=self.client)
        p.setGravity(0, 0, -9.81, physicsClientId=self.client)
        p.setTimeStep(self.dt, physicsClientId=self.client)
        p.setPhysicsEngineParameter(deterministicOverlappingPairs=1, physicsClientId=self.client)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self.client)
        self.plane = p.loadURDF("plane.urdf", physicsClientId=self.client)
        self.robots: list[SimRobot] = []
        self.time = 0.0

    def add_robot(self, model: RobotModel, joint_names, kp, kd, effort_limits, gravity_compensation=True,
                  base_position=None) -> SimRobot:
        r = SimRobot(self.client, model, joint_names, kp, kd, effort_limits, gravity_compensation, base_position)
        self.robots.append(r)
        return r

    def step(self, n: int = 1) -> None:
        """n physics substeps, each with fresh joint torques from every robot's controller."""
        for _ in range(n):
            for r in self.robots:
                r.apply_control(self.dt)
            p.stepSimulation(physicsClientId=self.client)
            self.time += self.dt

    def close(self) -> None:
        if self.client is not None and p.isConnected(self.client):
            p.disconnect(self.client)
        self.client = None
