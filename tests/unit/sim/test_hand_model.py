"""The generated 16-DoF hand: the URDFs match their generator, and the thumb opposes the fingers."""
import numpy as np
import pybullet as p

from s2r.sim import hand_urdf
from s2r.sim.robots import Simulation, robot_model


def test_assets_are_what_the_generator_writes():
    assert hand_urdf.ASSET.read_text() == hand_urdf.build()
    assert hand_urdf.LIFT_ASSET.read_text() == hand_urdf.build(lift=True)


def _pad_normal(robot, link):
    """World direction a segment's pad (its local -y side, the flexion side) faces."""
    _, orn = robot.link_pose(link)
    return -np.array(p.getMatrixFromQuaternion(orn)).reshape(3, 3)[:, 1]


def test_thumb_in_opposition_faces_the_curled_fingers():
    sim = Simulation(240)
    try:
        names = ["mf_mcp", "th_cmc", "th_abd"]
        hand = sim.add_robot(robot_model("hand16"), names, [3] * 3, [0.05] * 3, [0.6] * 3)
        palm_normal = _pad_normal(hand, "palm")
        hand.reset(np.zeros(3))
        # flat hand: the finger pads face where the palm does; the thumb lies in the palm plane
        # and flexes across it, toward the fingers
        assert _pad_normal(hand, "mf_dist") @ palm_normal > 0.99
        finger_dir = hand.link_pose("mf_tip")[0] - hand.link_pose("mf_prox")[0]
        assert _pad_normal(hand, "th_dist") @ finger_dir / np.linalg.norm(finger_dir) > 0.99
        hand.reset(np.array([np.pi / 2, np.pi / 2, 0.0]))
        finger, thumb = _pad_normal(hand, "mf_dist"), _pad_normal(hand, "th_dist")
        assert finger @ thumb < -0.99                 # pad to pad
        # and they face each other: the thumb's pad looks toward the finger, and vice versa
        gap = hand.link_pose("mf_dist")[0] - hand.link_pose("th_dist")[0]
        assert thumb @ gap > 0.03 and finger @ -gap > 0.03
        # flexing the thumb brings its tip toward the curled fingers
        d0 = np.linalg.norm(hand.link_pose("th_tip")[0] - hand.link_pose("mf_tip")[0])
        hand.reset(np.array([np.pi / 2, np.pi / 2, 0.5]))
        assert np.linalg.norm(hand.link_pose("th_tip")[0] - hand.link_pose("mf_tip")[0]) < d0 - 0.02
    finally:
        sim.close()
