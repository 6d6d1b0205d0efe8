"""Simulated cameras: intrinsics and extrinsics from the hardware config, output shaped like ROS.

A `SimCamera` is built from a `s2r.core.config.CameraConfig` (fx, fy, cx, cy, width, height, near, far,
and the camera body pose `position` + `rpy`, with the REP-103 body convention x forward, y left,
z up). It renders with pybullet's TinyRenderer (CPU; the same renderer in training and tests) and
returns a `CameraImage` with the fields of sensor_msgs/Image, and `camera_info()` returns the fields
of sensor_msgs/CameraInfo for the optical frame (x right, y down, z forward).

Visual randomization (camera pose, field of view, light, brightness, pixel noise) is applied through
`perturb(...)` and `render(..., light=..., brightness=..., noise_std=..., rng=...)`, so that the
randomizer owns the sampling and the camera only the geometry. `miscalibrated(...)` gives the camera
that really takes the images when the calibration (this camera) is off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pybullet as p

# columns: the OpenGL camera axes (x right, y up, z backward) in the camera body frame (x fwd, y left, z up)
_GL_IN_BODY = np.array([[0.0, 0.0, -1.0],
                        [-1.0, 0.0, 0.0],
                        [0.0, 1.0, 0.0]])


def rpy_matrix(rpy) -> np.ndarray:
    """Rotation matrix of fixed-axis roll, pitch, yaw (R = Rz(yaw) Ry(pitch) Rx(roll)), as in URDF."""
    r, pch, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(pch), math.sin(pch), math.cos(y), math.sin(y)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


@dataclass(frozen=True)
class Intrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    near: float = 0.01
    far: float = 5.0

    @classmethod
    def from_fov(cls, width: int, height: int, fov_deg: float, near=0.01, far=5.0) -> "Intrinsics":
        f = 0.5 * height / math.tan(math.radians(fov_deg) / 2)
        return cls(width, height, f, f, width / 2, height / 2, near, far)

    @property
    def fov_y_deg(self) -> float:
        return math.degrees(2 * math.atan(0.5 * self.height / self.fy))

    def resized(self, width: int, height: int) -> "Intrinsics":
        """The same field of view at another resolution."""
        sx, sy = width / self.width, height / self.height
        return replace(self, width=width, height=height, fx=self.fx * sx, fy=self.fy * sy,
                       cx=self.cx * sx, cy=self.cy * sy)

    def with_fov_offset(self, dfov_deg: float) -> "Intrinsics":
        """Widen (or narrow) the vertical field of view by dfov_deg, keeping the aspect of fx/fy."""
        fov = self.fov_y_deg + dfov_deg
        if not 1.0 < fov < 179.0:
            raise ValueError(f"field of view {fov:.1f} deg out of range")
        s = (0.5 * self.height / math.tan(math.radians(fov) / 2)) / self.fy
        return replace(self, fx=self.fx * s, fy=self.fy * s)

    def with_error(self, focal_error: float = 0.0, principal_error=(0.0, 0.0)) -> "Intrinsics":
        """The true intrinsics when these are the calibrated ones: fx, fy times (1 + focal_error),
        the principal point moved by principal_error (du right, dv down, pixels)."""
        if not focal_error > -1.0:
            raise ValueError(f"focal_error must be > -1 (a positive focal length), got {focal_error}")
        du, dv = (float(x) for x in np.broadcast_to(np.asarray(principal_error, float), (2,)))
        s = 1.0 + float(focal_error)
        return replace(self, fx=self.fx * s, fy=self.fy * s, cx=self.cx + du, cy=self.cy + dv)

    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def projection_matrix(self) -> list:
        """OpenGL projection (column-major, as pybullet wants it) of a pinhole with this K.

        The principal point maps to pixel (cx, cy) counted from the top-left corner.
        """
        w, h, n, f = self.width, self.height, self.near, self.far
        P = np.array([[2 * self.fx / w, 0.0, 1.0 - 2 * self.cx / w, 0.0],
                      [0.0, 2 * self.fy / h, 2 * self.cy / h - 1.0, 0.0],
                      [0.0, 0.0, -(f + n) / (f - n), -2 * f * n / (f - n)],
                      [0.0, 0.0, -1.0, 0.0]])
        return P.T.ravel().tolist()


@dataclass(frozen=True)
class Pose:
    position: tuple
    rpy: tuple

    def matrix(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = rpy_matrix(self.rpy)
        T[:3, 3] = self.position
        return T

    def view_matrix(self) -> list:
        """OpenGL view matrix (column-major) of a camera whose body frame has this pose."""
        R = rpy_matrix(self.rpy) @ _GL_IN_BODY
        V = np.eye(4)
        V[:3, :3] = R.T
        V[:3, 3] = -R.T @ np.asarray(self.position, float)
        return V.T.ravel().tolist()


@dataclass
class CameraImage:
    """The fields of sensor_msgs/Image (plus the depth/segmentation that came with the render)."""
    header_frame_id: str
    stamp: float
    height: int
    width: int
    encoding: str            # "rgb8"
    is_bigendian: int
    step: int                # bytes per row
    data: np.ndarray         # (height, width, 3) uint8
    depth: np.ndarray | None = None          # (height, width) float32 metres along the optical axis
    segmentation: np.ndarray | None = None   # (height, width) int32 body ids (-1 background)

    def to_msg_fields(self) -> dict:
        return {"header": {"frame_id": self.header_frame_id, "stamp": self.stamp}, "height": self.height,
                "width": self.width, "encoding": self.encoding, "is_bigendian": self.is_bigendian,
                "step": self.step, "data": self.data.tobytes()}


@dataclass(frozen=True)
class Light:
    direction: tuple = (0.4, -0.6, 1.0)
    color: tuple = (1.0, 1.0, 1.0)
    ambient: float = 0.6
    diffuse: float = 0.35
    specular: float = 0.05


@dataclass
class SimCamera:
    name: str
    intrinsics: Intrinsics
    pose: Pose
    light: Light = field(default_factory=Light)

    @classmethod
    def from_config(cls, cam, width: int | None = None, height: int | None = None) -> "SimCamera":
        """From a `s2r.core.config.CameraConfig`; optionally at another resolution (same field of view)."""
        intr = Intrinsics(cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy, cam.near, cam.far)
        if width or height:
            intr = intr.resized(width or cam.width, height or cam.height)
        if cam.parent != "world":
            raise ValueError(f"camera {cam.name!r}: sim cameras are mounted in the world frame, "
                             f"got parent {cam.parent!r}")
        return cls(cam.name, intr, Pose(tuple(cam.position), tuple(cam.rpy)))

    @property
    def frame_id(self) -> str:
        return f"{self.name}_optical_frame"

    def perturb(self, d_position=(0, 0, 0), d_rpy=(0, 0, 0), d_fov_deg=0.0) -> "SimCamera":
        """A copy moved by d_position (m), rotated by d_rpy (rad) and with the fov widened by d_fov_deg."""
        pose = Pose(tuple(np.add(self.pose.position, d_position)), tuple(np.add(self.pose.rpy, d_rpy)))
        return SimCamera(self.name, self.intrinsics.with_fov_offset(d_fov_deg) if d_fov_deg else self.intrinsics,
                         pose, self.light)

    def miscalibrated(self, d_position=(0, 0, 0), d_rpy=(0, 0, 0), focal_error: float = 0.0,
                      principal_error=(0.0, 0.0)) -> "SimCamera":
        """The camera that really takes the images when this one is its calibration: moved by
        d_position (m) and d_rpy (rad), intrinsics as `Intrinsics.with_error`."""
        moved = self.perturb(d_position, d_rpy)
        return SimCamera(self.name, self.intrinsics.with_error(focal_error, principal_error), moved.pose, self.light)

    def render(self, client: int, stamp: float = 0.0, light: Light | None = None, brightness: float = 1.0,
               noise_std: float = 0.0, rng: np.random.Generator | None = None, depth: bool = False,
               segmentation: bool = False) -> CameraImage:
        intr, li = self.intrinsics, light or self.light
        flags = 0 if segmentation else p.ER_NO_SEGMENTATION_MASK
        _, _, rgba, zbuf, seg = p.getCameraImage(
            intr.width, intr.height, self.pose.view_matrix(), intr.projection_matrix(),
            lightDirection=list(li.direction), lightColor=list(li.color), lightAmbientCoeff=li.ambient,
            lightDiffuseCoeff=li.diffuse, lightSpecularCoeff=li.specular, shadow=0, flags=flags,
            renderer=p.ER_TINY_RENDERER, physicsClientId=client)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(intr.height, intr.width, 4)[:, :, :3]
        if brightness != 1.0 or noise_std > 0.0:
            img = rgb.astype(np.float32) * brightness
            if noise_std > 0.0:
                if rng is None:
                    raise ValueError("pixel noise needs an rng (for reproducibility)")
                img += rng.normal(0.0, noise_std * 255.0, img.shape).astype(np.float32)
            rgb = np.clip(img, 0, 255).astype(np.uint8)
        else:
            rgb = np.ascontiguousarray(rgb)
        d = None
        if depth:
            z = np.asarray(zbuf, np.float32).reshape(intr.height, intr.width)
            n, f = intr.near, intr.far
            d = (f * n / (f - (f - n) * z)).astype(np.float32)
        s = np.asarray(seg, np.int32).reshape(intr.height, intr.width) if segmentation else None
        return CameraImage(self.frame_id, stamp, intr.height, intr.width, "rgb8", 0, 3 * intr.width, rgb, d, s)

    def camera_info(self, stamp: float = 0.0) -> dict:
        """The fields of sensor_msgs/CameraInfo (no distortion: the sim is an ideal pinhole)."""
        K = self.intrinsics.K()
        P = np.hstack([K, np.zeros((3, 1))])
        return {"header": {"frame_id": self.frame_id, "stamp": stamp}, "height": self.intrinsics.height,
                "width": self.intrinsics.width, "distortion_model": "plumb_bob", "d": [0.0] * 5,
                "k": K.ravel().tolist(), "r": np.eye(3).ravel().tolist(), "p": P.ravel().tolist(),
                "binning_x": 0, "binning_y": 0}

    def project(self, points_world) -> np.ndarray:
        """Pixel coordinates (u right, v down, from the top-left corner) of world points (N, 3)."""
        T = self.pose.matrix()
        R_wo = T[:3, :3] @ _GL_IN_BODY @ np.diag([1.0, -1.0, -1.0])   # optical frame: x right, y down, z fwd
        pc = (np.atleast_2d(points_world) - T[:3, 3]) @ R_wo
        K = self.intrinsics.K()
        uvw = pc @ K.T
        return uvw[:, :2] / uvw[:, 2:3]
