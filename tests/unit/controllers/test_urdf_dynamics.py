"""Rigid-body dynamics from URDF against PyBullet (Panda) and against the closed-form 2-link arm."""
import casadi as ca
import numpy as np
import pybullet as pb
import pytest

from s2r.controllers.models import RigidBodyModel, UrdfError, arm, two_link_arm

from ctl_helpers import PANDA_ARM_JOINTS, PANDA_URDF


@pytest.fixture(scope="module")
def bullet_panda():
    cid = pb.connect(pb.DIRECT)
    pb.setGravity(0, 0, -9.81, physicsClientId=cid)
    body = pb.loadURDF(PANDA_URDF, useFixedBase=True, flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=cid)
    movable = [j for j in range(pb.getNumJoints(body, physicsClientId=cid))
               if pb.getJointInfo(body, j, physicsClientId=cid)[2] != pb.JOINT_FIXED]
    links = {pb.getJointInfo(body, j, physicsClientId=cid)[12].decode(): j
             for j in range(pb.getNumJoints(body, physicsClientId=cid))}
    yield cid, body, movable, links
    pb.disconnect(cid)


def _random_state(rng, model):
    lo, hi = model.lower, model.upper
    q = rng.uniform(np.maximum(lo, -2.5), np.minimum(hi, 2.5))
    return q, rng.normal(size=model.nq), rng.normal(size=model.nq)


def test_panda_all_nine_joints_match_pybullet(bullet_panda):
    cid, body, movable, _ = bullet_panda
    model = RigidBodyModel(PANDA_URDF)
    assert model.nq == 9 and len(movable) == 9
    assert model.joint_names == tuple(pb.getJointInfo(body, j, physicsClientId=cid)[1].decode() for j in movable)
    M_fn, id_fn = model.function("mass_matrix"), model.function("inverse_dynamics")
    fd_fn = model.function("forward_dynamics")
    rng = np.random.default_rng(0)
    for _ in range(5):
        q, qd, qdd = _random_state(rng, model)
        M_pb = np.array(pb.calculateMassMatrix(body, q.tolist(), physicsClientId=cid))
        tau_pb = np.array(pb.calculateInverseDynamics(body, q.tolist(), qd.tolist(), qdd.tolist(),
                                                      physicsClientId=cid))
        np.testing.assert_allclose(np.array(M_fn(q)), M_pb, rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.array(id_fn(q, qd, qdd)).ravel(), tau_pb, rtol=0, atol=1e-6)
        # forward dynamics (ABA) inverts inverse dynamics (RNEA)
        np.testing.assert_allclose(np.array(fd_fn(q, qd, tau_pb)).ravel(), qdd, atol=1e-8)


def test_panda_arm_with_locked_fingers_matches_pybullet(bullet_panda, panda):
    cid, body, _, _ = bullet_panda
    assert panda.joint_names == tuple(PANDA_ARM_JOINTS) and panda.nq == 7
    rng = np.random.default_rng(1)
    for _ in range(5):
        q, qd, qdd = _random_state(rng, panda)
        q9 = np.r_[q, 0.02, 0.02]
        M_pb = np.array(pb.calculateMassMatrix(body, q9.tolist(), physicsClientId=cid))
        tau_pb = np.array(pb.calculateInverseDynamics(body, q9.tolist(), np.r_[qd, 0, 0].tolist(),
                                                      np.r_[qdd, 0, 0].tolist(), physicsClientId=cid))
        np.testing.assert_allclose(np.array(panda.function("mass_matrix")(q)), M_pb[:7, :7], atol=1e-6)
        np.testing.assert_allclose(np.array(panda.function("inverse_dynamics")(q, qd, qdd)).ravel(),
                                   tau_pb[:7], atol=1e-6)
        b = np.array(panda.function("bias_forces")(q, qd)).ravel()
        M = np.array(panda.function("mass_matrix")(q))
        np.testing.assert_allclose(M @ qdd + b, tau_pb[:7], atol=1e-6)


@pytest.mark.parametrize("link", ["panda_link3", "panda_link7", "panda_hand", "panda_grasptarget",
                                  "panda_leftfinger"])
def test_panda_link_pose_matches_pybullet(bullet_panda, panda, link):
    cid, body, movable, links = bullet_panda
    rng = np.random.default_rng(2)
    q, _, _ = _random_state(rng, panda)
    q9 = np.r_[q, 0.02, 0.02]
    for j, v in zip(movable, q9):
        pb.resetJointState(body, j, v, physicsClientId=cid)
    state = pb.getLinkState(body, links[link], computeForwardKinematics=True, physicsClientId=cid)
    R, p = panda.link_pose_function(link)(q)
    np.testing.assert_allclose(np.array(p).ravel(), state[4], atol=1e-6)
    R_pb = np.array(pb.getMatrixFromQuaternion(state[5])).reshape(3, 3)
    np.testing.assert_allclose(np.array(R), R_pb, atol=1e-6)


def test_urdf_two_link_arm_matches_closed_form(tmp_path):
    """A 2-link arm written as URDF gives the same forward dynamics as the textbook model."""
    m1, m2, l1, l2 = 1.3, 0.7, 0.9, 1.1
    urdf = tmp_path / "two_link.urdf"
    urdf.write_text(f"""<robot name="two_link">
  <link name="base"/>
  <link name="l1"><inertial><origin xyz="0 0 {-l1 / 2}"/><mass value="{m1}"/>
    <inertia ixx="{m1 * l1 ** 2 / 12}" iyy="{m1 * l1 ** 2 / 12}" izz="0" ixy="0" ixz="0" iyz="0"/></inertial></link>
  <link name="l2"><inertial><origin xyz="0 0 {-l2 / 2}"/><mass value="{m2}"/>
    <inertia ixx="{m2 * l2 ** 2 / 12}" iyy="{m2 * l2 ** 2 / 12}" izz="0" ixy="0" ixz="0" iyz="0"/></inertial></link>
  <link name="tip"/>
  <joint name="shoulder" type="continuous"><parent link="base"/><child link="l1"/><axis xyz="0 -1 0"/></joint>
  <joint name="elbow" type="revolute"><parent link="l1"/><child link="l2"/><origin xyz="0 0 {-l1}"/>
    <axis xyz="0 -1 0"/><limit lower="-3" upper="3" effort="50" velocity="5"/></joint>
  <joint name="tip_joint" type="fixed"><parent link="l2"/><child link="tip"/><origin xyz="0 0 {-l2}"/></joint>
</robot>""")
    rb = RigidBodyModel(urdf)
    assert rb.joint_names == ("shoulder", "elbow")
    assert np.isinf(rb.lower[0]) and rb.upper[1] == 3.0 and rb.effort_limit[1] == 50
    ode_urdf = arm(rb).ode
    ode_ref = two_link_arm(m1, m2, l1, l2).ode
    rng = np.random.default_rng(3)
    for _ in range(5):
        x, u = rng.normal(size=4), rng.normal(size=2)
        np.testing.assert_allclose(np.array(ode_urdf(x, u)), np.array(ode_ref(x, u)), atol=1e-10)
    q = np.array([0.3, -0.8])
    _, p = rb.link_pose_function("tip")(q)
    expected = [l1 * np.sin(q[0]) + l2 * np.sin(q.sum()), 0.0, -l1 * np.cos(q[0]) - l2 * np.cos(q.sum())]
    np.testing.assert_allclose(np.array(p).ravel(), expected, atol=1e-12)


def test_gravity_compensated_arm_holds_still(panda):
    """With u = 0 on top of gravity compensation the arm at rest does not accelerate."""
    ode = arm(panda, gravity_compensated=True).ode
    q = np.array([0.1, -0.5, 0.2, -2.0, 0.1, 1.6, 0.7])
    xdot = np.array(ode(np.r_[q, np.zeros(7)], np.zeros(7))).ravel()
    np.testing.assert_allclose(xdot, 0.0, atol=1e-9)


def test_urdf_bad_input(tmp_path, panda):
    with pytest.raises(UrdfError, match="no link named 'panda_gripper'"):
        panda.link_pose("panda_gripper", ca.SX.sym("q", 7))
    with pytest.raises(ValueError, match="no link named"):
        panda.link_pose_function("nope")
    with pytest.raises(UrdfError, match="no movable joint named"):
        RigidBodyModel(PANDA_URDF, joints=["panda_joint1", "panda_joint9"])
    with pytest.raises(UrdfError, match="cannot lock"):
        RigidBodyModel(PANDA_URDF, joints=PANDA_ARM_JOINTS, locked={"panda_joint1": 0.0})
    with pytest.raises(UrdfError, match="cannot read"):
        RigidBodyModel(tmp_path / "missing.urdf")
    bad = tmp_path / "bad.urdf"
    bad.write_text("<robot><link name='a'>")
    with pytest.raises(UrdfError, match="cannot read"):
        RigidBodyModel(bad)
    with pytest.raises(ValueError, match="expected a \\(7,\\) vector"):
        panda.mass_matrix(np.zeros(6))
    assert issubclass(UrdfError, ValueError)
