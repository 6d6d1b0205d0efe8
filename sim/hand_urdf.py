"""Writes sim/assets/hand16.urdf: a 16-DoF four-finger hand in the spirit of the LEAP hand.

Run `python -m s2r.sim.hand_urdf` to regenerate. Geometry is boxes (visual == collision, which also
keeps rendering cheap); inertias are the solid-box formulas, masses are close to a LEAP hand's
(Dynamixel XC330 servos make up most of each finger's mass).

Hand frame: palm centre at the origin, fingers point along +z, the palm faces -y. Flexion is a
positive rotation about +x (bends a finger toward -y); abduction is about +y.

The thumb is opposable: it sits on the palm's +x side near the wrist, lying in the palm plane and
pointing sideways (+x) at th_cmc = 0. th_cmc turns it about the palm's long axis down into
opposition (at pi/2 it points along the palm normal, -y; past that it leans in under the palm), and
its three flexion joints (th_abd, th_mcp, th_ip) bend it toward the fingers (+z), so that in
opposition the thumb pad faces the curled fingers' pads, as a human or LEAP thumb does. (An
earlier version flexed the thumb toward the palm normal like a fifth finger; it could not pinch.)
"""
from __future__ import annotations

from pathlib import Path

ASSET = Path(__file__).resolve().parent / "assets" / "hand16.urdf"
# The same hand, palm down, on a vertical slide ("wrist_lift"), for the grasp-and-lift task.
LIFT_ASSET = Path(__file__).resolve().parent / "assets" / "hand16_lift.urdf"
LIFT = dict(range=(0.0, 0.25), effort=60.0, velocity=0.5, carriage_mass=0.3)

PALM = dict(size=(0.10, 0.035, 0.11), mass=0.45)
# finger segments: (name, length, mass) from the knuckle out
SEGMENTS = (("prox", 0.050, 0.060), ("mid", 0.038, 0.045), ("dist", 0.032, 0.030))
WIDTH, THICK = 0.020, 0.022
FINGERS = (("if", -0.032), ("mf", 0.0), ("rf", 0.032))
FLEX_LIMITS = ((-0.30, 1.65), (-0.10, 1.75), (-0.10, 1.65))
ABD_LIMIT = 0.40
# thumb mount on the palm (x = its +x side, z toward the wrist) and orientation: its local z (the
# thumb's direction) = palm +x, local x (the flexion axis) = palm -y, local y = palm -z.
THUMB_MOUNT = (0.05, -0.005, -0.0275)
THUMB_RPY = (-1.5708, 0.0, -1.5708)
EFFORT, VELOCITY, DAMPING, FRICTION = 0.6, 8.0, 0.02, 0.0
# The servos' geared rotors add reflected inertia at each joint (XC330, 288:1); pybullet has no
# armature, so it is added to the link inertia. It also keeps 1 kHz torque PD stable on light links.
ARMATURE = 2e-4


def _box_inertia(m, sx, sy, sz):
    return (m * (sy * sy + sz * sz) / 12, m * (sx * sx + sz * sz) / 12, m * (sx * sx + sy * sy) / 12)


def _link(name, size, mass, xyz, rgba="0.25 0.25 0.28 1", armature=ARMATURE):
    ixx, iyy, izz = (i + armature for i in _box_inertia(mass, *size))
    s = " ".join(f"{v:.4f}" for v in size)
    o = " ".join(f"{v:.4f}" for v in xyz)
    return f"""  <link name="{name}">
    <inertial><origin xyz="{o}"/><mass value="{mass}"/>
      <inertia ixx="{ixx:.3e}" ixy="0" ixz="0" iyy="{iyy:.3e}" iyz="0" izz="{izz:.3e}"/></inertial>
    <visual><origin xyz="{o}"/><geometry><box size="{s}"/></geometry><material name="m_{name}"><color rgba="{rgba}"/></material></visual>
    <collision><origin xyz="{o}"/><geometry><box size="{s}"/></geometry></collision>
  </link>
"""


def _massless(name):
    return f"""  <link name="{name}"><inertial><mass value="0.001"/><inertia ixx="1e-8" ixy="0" ixz="0" iyy="1e-8" iyz="0" izz="1e-8"/></inertial></link>
"""


def _joint(name, parent, child, xyz, axis, limits, rpy=(0, 0, 0)):
    o = " ".join(f"{v:.4f}" for v in xyz)
    r = " ".join(f"{v:.4f}" for v in rpy)
    a = " ".join(str(v) for v in axis)
    return f"""  <joint name="{name}" type="revolute">
    <parent link="{parent}"/><child link="{child}"/><origin xyz="{o}" rpy="{r}"/><axis xyz="{a}"/>
    <limit lower="{limits[0]}" upper="{limits[1]}" effort="{EFFORT}" velocity="{VELOCITY}"/>
    <dynamics damping="{DAMPING}" friction="{FRICTION}"/>
  </joint>
"""


def _fixed(name, parent, child, xyz):
    o = " ".join(f"{v:.4f}" for v in xyz)
    return f"""  <joint name="{name}" type="fixed"><parent link="{parent}"/><child link="{child}"/><origin xyz="{o}"/></joint>
"""


def _finger(prefix, base_link, base_xyz, base_rpy, first_axis, first_limits):
    """Four joints: a base joint (abduction, or the thumb's rotation) then three flexion joints."""
    out = []
    root = f"{prefix}_base"
    out.append(_link(root, (0.018, 0.018, 0.018), 0.040, (0, 0, 0.009)))
    out.append(_joint(f"{prefix}_abd" if prefix != "th" else "th_cmc", base_link, root, base_xyz,
                      first_axis, first_limits, base_rpy))
    parent, z = root, 0.018
    names = ("mcp", "pip", "dip") if prefix != "th" else ("abd", "mcp", "ip")
    for (seg, length, mass), jname, lim in zip(SEGMENTS, names, FLEX_LIMITS):
        child = f"{prefix}_{seg}"
        out.append(_link(child, (WIDTH, THICK, length), mass, (0, 0, length / 2)))
        out.append(_joint(f"{prefix}_{jname}", parent, child, (0, 0, z), (1, 0, 0), lim))
        parent, z = child, length
    out.append(_massless(f"{prefix}_tip"))
    out.append(_fixed(f"{prefix}_tip_joint", parent, f"{prefix}_tip", (0, 0, z)))
    return "".join(out)


def _lift_mount() -> str:
    """A fixed root, a prismatic z slide and a carriage; the palm hangs below it facing down
    (hand -y -> world -z), fingers pointing along world -y."""
    lo, hi = LIFT["range"]
    return (_massless("lift_base")
            + _link("lift_carriage", (0.04, 0.04, 0.04), LIFT["carriage_mass"], (0, 0, 0.06), "0.3 0.3 0.3 1", armature=0.0)
            + f"""  <joint name="wrist_lift" type="prismatic">
    <parent link="lift_base"/><child link="lift_carriage"/><origin xyz="0 0 0"/><axis xyz="0 0 1"/>
    <limit lower="{lo}" upper="{hi}" effort="{LIFT['effort']}" velocity="{LIFT['velocity']}"/>
    <dynamics damping="1.0" friction="0"/>
  </joint>
  <joint name="wrist_mount" type="fixed">
    <parent link="lift_carriage"/><child link="palm"/><origin xyz="0 0 0" rpy="1.5708 0 0"/>
  </joint>
""")


def build(lift: bool = False) -> str:
    sx, sy, sz = PALM["size"]
    name = "hand16_lift" if lift else "hand16"
    parts = ['<?xml version="1.0"?>\n<!-- generated by sim/hand_urdf.py: edit that, not this -->\n',
             f'<robot name="{name}">\n']
    if lift:
        parts.append(_lift_mount())
    parts.append(_link("palm", PALM["size"], PALM["mass"], (0, 0, 0), "0.15 0.15 0.17 1", armature=0.0))
    for prefix, x in FINGERS:
        parts.append(_finger(prefix, "palm", (x, 0, sz / 2), (0, 0, 0), (0, 1, 0), (-ABD_LIMIT, ABD_LIMIT)))
    # thumb: on the palm's side near the wrist, pointing sideways (+x); th_cmc (about local +y =
    # palm -z) turns it toward the palm normal, into opposition.
    parts.append(_finger("th", "palm", THUMB_MOUNT, THUMB_RPY, (0, 1, 0), (-0.35, 1.90)))
    parts.append("</robot>\n")
    return "".join(parts)


def main():
    ASSET.write_text(build())
    LIFT_ASSET.write_text(build(lift=True))
    print(f"wrote {ASSET} and {LIFT_ASSET}")


if __name__ == "__main__":
    main()
