"""Loading a hardware config's robot into the sim driver's simulation (`load_configured_robot`),
with a config error naming the key for what the model lacks (a joint, a camera's parent link)."""
from __future__ import annotations

# first: `sim` imports pybullet without its banner
from sim.robots import robot_model  # noqa: I001

import pybullet as p  # noqa: E402

from s2r.core.yamlio import ConfigError, excerpt  # noqa: E402

from .base import DriverError


def load_configured_robot(simulation, cfg):
    """The config's robot (`cfg.robot`, its joints, gains, effort limits and gravity compensation)
    added to `simulation`, as a `sim.robots.SimRobot`. A model that lacks a configured joint, or a
    camera's parent link, is a ConfigError naming that key; a model that does not load, a DriverError."""
    try:
        model = robot_model(cfg.robot)
    except ValueError as e:
        raise ConfigError(cfg.path, "robot", str(e)) from None
    try:
        sim = simulation.add_robot(
            model, cfg.joint_names,
            kp=[j.kp for j in cfg.joints], kd=[j.kd for j in cfg.joints],
            effort_limits=[j.limits.effort for j in cfg.joints],
            gravity_compensation=cfg.sim.gravity_compensation)
    except p.error as e:
        raise DriverError(f"{cfg.path}: robot: cannot load the {cfg.robot!r} model "
                          f"({excerpt(model.urdf, 200)}): {e}") from None
    except ValueError as e:
        # the model lacks a configured joint: name the first one by its config key
        model_joints = movable_joints(simulation.client, model.urdf, model.urdf_flags)
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


def movable_joints(client: int, urdf: str, flags: int = 0) -> list[str]:
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
