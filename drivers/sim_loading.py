"""Loading a hardware config's robot into the sim driver's simulation (`load_configured_robot`).

The config loader has already checked the config against its robot description's URDF (every
joint and camera link exists, s2r.core.config); what is left here is what only loading finds."""
from __future__ import annotations

# first: `sim` imports pybullet without its banner
import s2r.sim.robots  # noqa: F401,I001

import pybullet as p  # noqa: E402

from s2r.core.yamlio import excerpt  # noqa: E402

from .base import DriverError


def load_configured_robot(simulation, cfg):
    """The config's robot (its description, joints, gains, effort limits and gravity
    compensation) added to `simulation`, as a `s2r.sim.robots.SimRobot`. A description that no longer
    loads is a ConfigError naming `robot`; a model pybullet cannot load, a DriverError."""
    model = cfg.robot_description()
    try:
        return simulation.add_robot(
            model, cfg.joint_names,
            kp=[j.kp for j in cfg.joints], kd=[j.kd for j in cfg.joints],
            effort_limits=[j.limits.effort for j in cfg.joints],
            gravity_compensation=cfg.sim.gravity_compensation)
    except p.error as e:
        raise DriverError(f"{cfg.path}: robot: cannot load the {cfg.robot!r} model "
                          f"({excerpt(model.urdf, 200)}): {e}") from None
    except ValueError as e:
        raise DriverError(f"{cfg.path}: robot: {_cut(str(e))}") from None


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."

