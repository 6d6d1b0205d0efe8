"""The PyBullet driver: the simulated robot behind the same interface as the real ones.

Two clocks:
- real time (`realtime=True`, like a robot, for ROS): a thread steps physics one control period
  at a time on a steady clock (substep by substep, so other threads never wait long for it);
  read/write just exchange data with it.
- lockstep (`realtime=False`, for training and tests): every `write()` or `hold()` advances the
  simulation by exactly one control period, so the same commands give bit-identical states.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from sim.robots import Simulation, robot_model   # first: `sim` imports pybullet without its banner

import pybullet as p  # noqa: E402

from s2r.yamlio import ConfigError, excerpt  # noqa: E402

from .base import Driver, DriverError, register_driver
from .types import Command, CommandMode, DriverSpec, RobotState


class SimDriver(Driver):
    name = "sim"

    def __init__(self, config, realtime: bool | None = None):
        self.config = config
        self.realtime = config.sim.realtime if realtime is None else realtime
        self._spec = config.spec()
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._connected = False
        self.simulation: Simulation | None = None
        self.sim = None     # the SimRobot, once connected
        self.stats = dict(missed_periods=0)   # real time: control periods the stepping thread fell behind

    @property
    def spec(self) -> DriverSpec:
        return self._spec

    def clock(self) -> float:
        if self.realtime or self.simulation is None:
            return time.monotonic()
        return self.simulation.time

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Load the config's robot model. A model that lacks a configured joint, or a camera's
        parent link, is a ConfigError naming that key; a model that does not load, a DriverError."""
        if self._connected:
            return
        # Start inside the configured limits even if the model's home posture is not.
        self._start_physics(None)
        self._connected = True

    def _start_physics(self, q, qd=None) -> None:
        cfg = self.config
        self.simulation = Simulation(cfg.sim.physics_hz)
        self._substeps = max(1, round(cfg.sim.physics_hz / cfg.control_rate_hz))
        try:
            self.sim = self._load_robot()
        except BaseException:
            self.simulation.close()
            self.simulation = None
            raise
        self.sim.reset(np.clip(self.sim.q_home if q is None else q, self._spec.lower, self._spec.upper), qd)
        self._last_q, self._last_qd = self.sim.q_target.copy(), np.zeros(self._spec.n_joints)
        if self.realtime:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sim-driver", daemon=True)
            self._thread.start()

    def _load_robot(self):
        cfg = self.config
        try:
            model = robot_model(cfg.robot)
        except ValueError as e:
            raise ConfigError(cfg.path, "robot", str(e)) from None
        try:
            sim = self.simulation.add_robot(
                model, cfg.joint_names,
                kp=[j.kp for j in cfg.joints], kd=[j.kd for j in cfg.joints],
                effort_limits=[j.limits.effort for j in cfg.joints],
                gravity_compensation=cfg.sim.gravity_compensation)
        except p.error as e:
            raise DriverError(f"{cfg.path}: robot: cannot load the {cfg.robot!r} model "
                              f"({excerpt(model.urdf, 200)}): {e}") from None
        except ValueError as e:
            # the model lacks a configured joint: name the first one by its config key
            model_joints = _movable_joints(self.simulation.client, model.urdf, model.urdf_flags)
            for i, name in enumerate(cfg.joint_names):
                if name not in model_joints:
                    raise ConfigError(cfg.path, f"joints[{i}].name",
                                      f"the {cfg.robot!r} robot model has no joint {excerpt(name)} (its movable "
                                      f"joints: {_cut(', '.join(model_joints))})") from None
            raise DriverError(f"{cfg.path}: robot: {_cut(str(e))}") from None
        for i, cam in enumerate(cfg.cameras):
            if cam.parent != "world":
                try:
                    sim.link_pose(cam.parent)
                except ValueError:
                    raise ConfigError(cfg.path, f"cameras[{i}].extrinsics.parent",
                                      f"the {cfg.robot!r} robot model has no link {excerpt(cam.parent)}") from None
        return sim

    def reset_fault(self) -> None:
        """After the physics server died: a new one, with the robot where it was last measured
        (like a robot whose controller restarted), at rest."""
        if not self._connected or p.isConnected(self.simulation.client):
            return
        self._stop_stepping()
        with self._lock:
            self._start_physics(self._last_q)

    def kill_physics(self) -> None:
        """Fault injection for tests and the HIL suite: the physics server disappears, as a bus
        does when it is unplugged. Reads and writes then raise DriverError until reset_fault()."""
        with self._lock:
            p.disconnect(self.simulation.client)

    def disconnect(self) -> None:
        if not self._connected:
            return
        self._stop_stepping()
        with self._lock:
            self.simulation.close()
            self._connected = False

    def _stop_stepping(self) -> None:
        """Stop the real-time stepping thread, if any."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    # ------------------------------------------------------------------ io
    def read(self) -> RobotState:
        self._require_connected()
        with self._lock:
            try:
                q, qd, tau = self.sim.state()
            except p.error as e:
                raise _physics_error(e) from None
            self._last_q, self._last_qd = q, qd
            sim_time = self.simulation.time
            return RobotState(time.monotonic() if self.realtime else sim_time, q, qd, tau, {"sim_time": sim_time})

    def write(self, command: Command) -> None:
        self._require_connected()
        with self._lock:
            try:
                self.sim.set_target(command.mode.value, command.values, self._spec.period)
                if not self.realtime:
                    self.simulation.step(self._substeps)
            except p.error as e:
                raise _physics_error(e) from None

    def hold(self) -> None:
        self._require_connected()
        with self._lock:
            try:
                self.sim.hold()
                if not self.realtime:
                    self.simulation.step(self._substeps)
            except p.error as e:
                raise _physics_error(e) from None

    def step(self, n_periods: int = 1) -> None:
        """Lockstep only: advance n control periods without a new command."""
        self._require_connected()
        with self._lock:
            try:
                self.simulation.step(self._substeps * n_periods)
            except p.error as e:
                raise _physics_error(e) from None

    # ------------------------------------------------------------------ internals
    def _require_connected(self):
        if not self._connected:
            raise DriverError("sim driver is not connected (call connect() first)")

    def _run(self) -> None:
        period = 1.0 / self.config.control_rate_hz
        next_t = time.monotonic()
        while not self._stop.is_set():
            # One substep at a time, handing over the lock and the GIL in between: a command or a
            # read from another thread (a ROS callback) waits for one substep, not a whole period.
            for _ in range(self._substeps):
                with self._lock:
                    if not p.isConnected(self.simulation.client):
                        return   # physics server gone: reads and writes now report the fault
                    self.simulation.step(1)
                time.sleep(0)
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -period:
                # fell more than a period behind: count it and resync rather than sprint to catch up
                self.stats["missed_periods"] += int(-delay / period)
                next_t = time.monotonic()


def _movable_joints(client: int, urdf: str, flags: int = 0) -> list[str]:
    """The names of a URDF's movable joints, loaded into `client` and removed again (a model
    without a configured joint is refused by name before the robot is built)."""
    body = p.loadURDF(urdf, useFixedBase=True, flags=flags, physicsClientId=client)
    try:
        names = []
        for i in range(p.getNumJoints(body, physicsClientId=client)):
            info = p.getJointInfo(body, i, physicsClientId=client)
            if info[2] != p.JOINT_FIXED:
                names.append(info[1].decode())
        return names
    finally:
        p.removeBody(body, physicsClientId=client)


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _physics_error(e: Exception) -> DriverError:
    """A dead physics server is reported like a lost bus."""
    return DriverError(f"physics server: {e}")


@register_driver("sim")
def make_sim_driver(config, **kw) -> SimDriver:
    return SimDriver(config, **kw)
