"""A robot description (`robots/*.yaml`) as a pydantic model: what one robot is, read by everything
that needs it (the simulator, the controllers' URDF dynamics, the ROS nodes, the tasks, training):
its URDF, end effector and tool point, home posture, joint groups, tip links, default gains and
identified joint damping. `s2r.core.robot_description` loads a file and checks it against its URDF;
`s2r schema robot` prints this as JSON Schema. robots/README.md explains the keys.
"""
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from .errors import fail
from .hardware import Gains
from .types import FileModel, Flag, Name, Number, Text, Vec

URDF_FORMS = "a path (relative to this file), pybullet_data:REL (pybullet's data folder) or asset:REL (s2r's assets)"
GROUPS = ("arm", "gripper", "fingers")

Position3 = Vec(3, -100.0, 100.0)
Offset3 = Vec(3, -10.0, 10.0)
Quaternion = Vec(4, -1.0, 1.0)
Damping = Number(0.0, 1e4)
HomeValue = Number(-100.0, 100.0)


def _unique(v):
    seen = set()
    for i, x in enumerate(v):
        if x in seen:
            raise fail(f"{x!r} is listed twice", at=f"[{i}]")
        seen.add(x)
    return v


Names = Annotated[list[Name], AfterValidator(_unique)]


class Base(FileModel):
    position: Position3 = Field((0.0, 0.0, 0.0), description="m, in the world")
    orientation: Quaternion = Field((0.0, 0.0, 0.0, 1.0), description="quaternion x, y, z, w")

    @model_validator(mode="after")
    def _unit(self):
        n = sum(x * x for x in self.orientation) ** 0.5
        if abs(n - 1.0) > 1e-3:
            raise fail(f"must be a unit quaternion (x, y, z, w), its norm is {n:.4g}", at="orientation")
        return self


class Groups(FileModel):
    """Joint groups by role: `arm` (what arm tasks, planners and policies move), `gripper` (held
    open or closed by arm tasks), `fingers` (a hand's actuated fingers). A joint is in one group."""
    arm: Names = []
    gripper: Names = []
    fingers: Names = []

    @model_validator(mode="after")
    def _disjoint(self):
        if not (self.arm or self.fingers):
            raise fail("at least one of arm or fingers must list joints")
        owner: dict[str, str] = {}
        for g in GROUPS:
            for i, j in enumerate(getattr(self, g)):
                if j in owner:
                    raise fail(f"{j!r} is in the {owner[j]} group too; a joint has one role", at=f"{g}[{i}]")
                owner[j] = g
        return self


class Visual(FileModel):
    urdf: Name = Field(description=f"same kinematics, inertials and collisions, other visuals: {URDF_FORMS}")
    material_colors_from_mtl: Flag = False


class RobotFile(FileModel):
    name: Name
    description: Text = ""
    urdf: Name = Field(description=URDF_FORMS)
    base: Base = Base()
    ee_link: Name = Field(description="end-effector link: arm tasks' hand, the planners' tip")
    tcp_offset: Offset3 = Field((0.0, 0.0, 0.0), description="tool centre point in the ee_link frame, m")
    home: dict[Name, HomeValue] = Field({}, description="home posture by joint (rad or m); others at 0")
    groups: Groups
    tip_links: Names = Field([], description="fingertip links (hands)")
    gains: dict[Name, Gains] = Field({}, description="default PD gains by joint; a hardware config's "
                                                     "joints[].gains override them")
    inertia: Literal["file", "collision"] = Field("file", description="link inertias: the URDF's <inertia>, or "
                                                                      "computed by pybullet from the collision shapes "
                                                                      "and masses (for URDFs whose tensors are not physical)")
    joint_damping: dict[Name, Damping] = Field({}, description="identified viscous joint friction (N m s/rad or "
                                                               "N s/m) where the URDF's <dynamics> lacks it")
    visual_variants: dict[Name, Visual] = Field({}, description="cheaper visual meshes by variant name "
                                                                "('stock' is `urdf`)")
