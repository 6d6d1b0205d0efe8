"""Robot models: where each simulated robot comes from (URDF, base pose, home posture, tip links,
identified joint damping, cheaper visual variants), by name (`ROBOTS`, `robot_model`)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pybullet as p
import pybullet_data

from s2r.core import resources

# the robot descriptions packaged with sim (the URDFs of the built-in robots below)
ASSETS = resources.packaged_dir("asset")


@dataclass(frozen=True)
class RobotModel:
    """Where one robot comes from: its URDF, end-effector link, home posture, base pose."""

    name: str
    urdf: str
    ee_link: str
    home: dict = field(default_factory=dict)
    base_position: tuple = (0.0, 0.0, 0.0)
    base_orientation: tuple = (0.0, 0.0, 0.0, 1.0)   # xyzw
    tip_links: tuple = ()
    # Same kinematics, inertials and collision shapes with cheaper visuals (sim/decimate.py);
    # (name, (URDF path, extra loadURDF flags)) pairs. "stock" is always `urdf`.
    visual_variants: tuple = ()
    urdf_flags: int = 0
    # identified viscous joint friction (N m s/rad, N s/m) by joint name, where the URDF's
    # <dynamics damping> does not hold it: the nominal that `joint_damping_scale` multiplies
    joint_damping: dict = field(default_factory=dict)

    def with_visuals(self, variant: str) -> "RobotModel":
        """This model with another set of visual meshes (dynamics unchanged)."""
        if variant == "stock":
            return self
        variants = dict(self.visual_variants)
        if variant not in variants:
            raise ValueError(f"robot {self.name!r} has no visual variant {variant!r} "
                             f"(known: stock{''.join(', ' + v for v in variants)})")
        path, flags = variants[variant]
        return replace(self, urdf=path, urdf_flags=flags, visual_variants=())


ROBOTS: dict[str, RobotModel] = {
    "panda": RobotModel(
        "panda", str(Path(pybullet_data.getDataPath()) / "franka_panda" / "panda.urdf"), "panda_hand",
        home={"panda_joint1": 0.0, "panda_joint2": -0.785, "panda_joint3": 0.0, "panda_joint4": -2.356,
              "panda_joint5": 0.0, "panda_joint6": 1.571, "panda_joint7": 0.785,
              "panda_finger_joint1": 0.02, "panda_finger_joint2": 0.02},
        # |f_v| of Gaz et al. 2019, "Dynamic identification of the Franka Emika Panda robot with
        # retrieval of feasible parameters using penalty-based optimization"
        joint_damping={"panda_joint1": 0.0665, "panda_joint2": 0.1987, "panda_joint3": 0.0399,
                       "panda_joint4": 0.2257, "panda_joint5": 0.1023, "panda_joint6": 0.0132,
                       "panda_joint7": 0.0638},
        visual_variants=(("decimated", (str(ASSETS / "panda_lite" / "panda.urdf"),
                                        p.URDF_USE_MATERIAL_COLORS_FROM_MTL)),),
    ),
    "hand16": RobotModel(
        "hand16", str(ASSETS / "hand16.urdf"), "palm",
        base_position=(0.0, 0.0, 0.25),
        home={"if_mcp": 0.3, "mf_mcp": 0.3, "rf_mcp": 0.3, "th_cmc": 0.5, "th_abd": 0.2},
        tip_links=("if_tip", "mf_tip", "rf_tip", "th_tip"),
    ),
    # the same hand palm-down on a vertical slide, for grasp-and-lift (sim/hand_urdf.py)
    "hand16_lift": RobotModel(
        "hand16_lift", str(ASSETS / "hand16_lift.urdf"), "palm",
        base_position=(0.0, 0.0, 0.03),
        home={"wrist_lift": 0.10, "th_cmc": 0.2},
        tip_links=("if_tip", "mf_tip", "rf_tip", "th_tip"),
    ),
}


def robot_model(name: str) -> RobotModel:
    try:
        return ROBOTS[name]
    except KeyError:
        raise ValueError(f"unknown sim robot {name!r} (known: {', '.join(ROBOTS)})") from None
