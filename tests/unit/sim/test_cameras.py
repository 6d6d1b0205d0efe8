"""Cameras from the hardware config, ROS-shaped output, and the decimated Panda meshes."""
import numpy as np
import pybullet as p
import pytest

from s2r.core.config import load_config
from s2r.sim import scene
from s2r.sim.cameras import SimCamera
from s2r.sim.robots import Simulation, robot_model


def test_camera_from_config_projects_world_points_to_the_right_pixels():
    cfg = load_config("panda_sim")
    cam = SimCamera.from_config(cfg.cameras[0], width=96, height=96)
    sim = Simulation(240)
    try:
        point = np.array([0.3, 0.1, 0.3])
        ball = scene.marker(sim.client, point, 0.02, (1, 0, 0, 1))
        img = cam.render(sim.client, segmentation=True, depth=True)
        assert (img.height, img.width, img.encoding, img.step) == (96, 96, "rgb8", 288)
        assert img.data.shape == (96, 96, 3) and img.data.dtype == np.uint8
        mask = img.segmentation == ball
        assert mask.sum() > 5
        v, u = np.nonzero(mask)
        pu, pv = cam.project(point)[0]
        assert abs(u.mean() + 0.5 - pu) < 1.0 and abs(v.mean() + 0.5 - pv) < 1.0
        dist = np.linalg.norm(point - np.array(cfg.cameras[0].position))
        assert np.median(img.depth[mask]) == pytest.approx(dist, abs=0.03)   # along the axis, minus the radius
        info = cam.camera_info()
        assert info["k"] == pytest.approx([cam.intrinsics.fx, 0, 48, 0, cam.intrinsics.fy, 48, 0, 0, 1])
        assert info["header"]["frame_id"] == "scene_optical_frame" and len(info["p"]) == 12
        fields = img.to_msg_fields()
        assert len(fields["data"]) == 96 * 288
    finally:
        sim.close()


def test_off_centre_principal_point_shifts_the_image():
    from dataclasses import replace
    cfg = load_config("panda_sim")
    cam = SimCamera.from_config(cfg.cameras[0], 64, 64)
    shifted = SimCamera(cam.name, replace(cam.intrinsics, cx=cam.intrinsics.cx + 10), cam.pose)
    point = np.array([0.2, 0.0, 0.4])
    assert shifted.project(point)[0][0] == pytest.approx(cam.project(point)[0][0] + 10)
    sim = Simulation(240)
    try:
        ball = scene.marker(sim.client, point, 0.03, (1, 0, 0, 1))
        u0 = np.nonzero(cam.render(sim.client, segmentation=True).segmentation == ball)[1].mean()
        u1 = np.nonzero(shifted.render(sim.client, segmentation=True).segmentation == ball)[1].mean()
        assert u1 - u0 == pytest.approx(10, abs=1.0)
    finally:
        sim.close()


def _triangles(urdf_path):
    from pathlib import Path
    import re
    root = Path(urdf_path).parent
    text = Path(urdf_path).read_text()
    total = 0
    for block in re.findall(r"<visual>.*?</visual>", text, re.S):
        mesh = re.search(r'filename="(?:package://)?([^"]+)"', block).group(1)
        total += sum(1 for line in (root / mesh).read_text().splitlines() if line.startswith("f "))
    return total


def test_decimated_panda_has_few_triangles_and_identical_dynamics():
    stock, lite = robot_model("panda"), robot_model("panda").with_visuals("decimated")
    assert _triangles(lite.urdf) < 0.1 * _triangles(stock.urdf)
    sim = Simulation(240)
    try:
        names = [f"panda_joint{i}" for i in range(1, 8)]
        a = sim.add_robot(stock, names, [1] * 7, [1] * 7, [87] * 7)
        b = sim.add_robot(lite, names, [1] * 7, [1] * 7, [87] * 7, base_position=(1.0, 0, 0))
        for i in range(p.getNumJoints(a.body, physicsClientId=sim.client)):
            da = p.getDynamicsInfo(a.body, i, physicsClientId=sim.client)
            db = p.getDynamicsInfo(b.body, i, physicsClientId=sim.client)
            assert da[:4] == db[:4]        # mass, lateral friction, inertia, inertial position
            ja = p.getJointInfo(a.body, i, physicsClientId=sim.client)
            jb = p.getJointInfo(b.body, i, physicsClientId=sim.client)
            assert ja[1:2] + ja[8:10] + ja[13:16] == jb[1:2] + jb[8:10] + jb[13:16]
    finally:
        sim.close()
    with pytest.raises(ValueError, match="no visual variant 'tiny'"):
        stock.with_visuals("tiny")
