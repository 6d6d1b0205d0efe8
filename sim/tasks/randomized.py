"""How a task applies a randomization draw (`sim.randomization.Randomizer`): `RandomizedWorld`, the
part of `sim.tasks.base.TaskEnv` that turns an episode's values into the world's physics
(`_apply_dynamics`: the robot's by `sim.robots.apply_robot_draw`, then objects and surfaces), its
look (`_apply_visuals`: camera, light, colours, textures, distractors) and that draws per-step
values in blocks (`_refill_step_block`); and `PackedArrays`, the copy-once store of the episode's
arrays that every step's `info["randomization"]` returns.

A task overrides `friction_surfaces` and `distractor_region` for its scene; the rest reads
`TaskEnv`'s state (`self.sim`, `self.robot`, `self.objects`, `self.surfaces`, `self.dr`, ...).
"""
from __future__ import annotations

import numpy as np
import pybullet as p

from s2r.sim import scene
from s2r.sim.cameras import Light
from s2r.sim.robots import apply_robot_draw

CAMERA_ERRORS = ("camera_position_error", "camera_rotation_error", "camera_focal_error", "camera_principal_error")


class PackedArrays:
    """Arrays kept in one buffer per dtype: `fresh()` returns copies of all of them (as views of
    one new buffer per dtype), for one copy instead of one per array. Infos carry the episode's
    randomization arrays every step, and Gymnasium asks for fresh data every step."""

    def __init__(self, arrays: dict):
        groups: dict = {}
        for k, v in arrays.items():
            groups.setdefault(v.dtype, []).append((k, v))
        self._buffers, self._views = [], []
        for g, items in enumerate(groups.values()):
            self._buffers.append(np.concatenate([v.ravel() for _, v in items]))
            i = 0
            for k, v in items:
                self._views.append((k, g, i, i + v.size, None if v.ndim == 1 else v.shape))
                i += v.size

    def fresh(self) -> dict:
        bufs = [b.copy() for b in self._buffers]
        return {k: bufs[g][a:b] if shape is None else bufs[g][a:b].reshape(shape)
                for k, g, a, b, shape in self._views}


class RandomizedWorld:
    """The randomization half of `TaskEnv` (a mixin: it has no state of its own)."""

    STEP_BLOCK = 64      # per-step randomization is drawn for this many steps at a time

    def _apply_dynamics(self, v: dict) -> None:
        """A randomization draw's physics: the robot's by `sim.robots.apply_robot_draw` (the sim
        driver's too), then the task's objects and surfaces."""
        c = self.client
        apply_robot_draw(self.sim, self.robot, self.robot_nominal, v)
        for k, (obj, nom) in enumerate(zip(self.objects, self.object_nominal)):
            kw = {}
            if "object_mass_scale" in v:
                s = v["object_mass_scale"][k]
                kw["mass"] = nom["mass"] * s
                kw["localInertiaDiagonal"] = [x * s for x in nom["inertia"]]
            if "friction_scale" in v:
                kw["lateralFriction"] = nom["lateral"] * v["friction_scale"][k]
            if "spin_roll_friction_scale" in v:
                s = v["spin_roll_friction_scale"][k]
                kw["spinningFriction"], kw["rollingFriction"] = nom["spinning"] * s, nom["rolling"] * s
            if kw:
                p.changeDynamics(obj, -1, physicsClientId=c, **kw)
        if "friction_scale" in v and len(v["friction_scale"]):
            s0 = v["friction_scale"][0]
            for b, link, mu in self.friction_surfaces():
                p.changeDynamics(b, link, lateralFriction=mu * s0, physicsClientId=c)

    def friction_surfaces(self) -> list:
        """(body, link, nominal lateral friction) of non-object surfaces scaled by friction_scale[0]."""
        return []

    def _apply_visuals(self, v: dict, rng: np.random.Generator) -> None:
        c = self.client
        cam = self.base_camera
        if any(k in v for k in ("camera_position_offset", "camera_rotation_offset", "camera_fov_offset")):
            cam = cam.perturb(v.get("camera_position_offset", (0, 0, 0)), v.get("camera_rotation_offset", (0, 0, 0)),
                              float(v.get("camera_fov_offset", 0.0)))
        self.camera = cam                 # the camera as calibrated: what camera_info() reports
        if any(k in v for k in CAMERA_ERRORS):
            cam = cam.miscalibrated(v.get("camera_position_error", (0, 0, 0)),
                                    v.get("camera_rotation_error", (0, 0, 0)),
                                    float(v.get("camera_focal_error", 0.0)), v.get("camera_principal_error", (0, 0)))
        self.render_camera = cam          # the camera images are rendered with
        d = Light()
        self.light = Light(tuple(v.get("light_direction", d.direction)), d.color,
                           float(v.get("light_ambient", d.ambient)), float(v.get("light_diffuse", d.diffuse)),
                           float(v.get("light_specular", d.specular)))
        if "surface_color" in v or "surface_texture" in v:
            files = scene.texture_files() if "surface_texture" in v else []
            for k, (_, parts) in enumerate(self.surfaces):
                kw = {}
                if "surface_color" in v:
                    kw["rgbaColor"] = list(v["surface_color"][k]) + [1.0]
                if files and v["surface_texture"][k]:
                    idx = int(v["texture_index"][k]) % len(files) if "texture_index" in v else k % len(files)
                    kw["textureUniqueId"] = p.loadTexture(str(files[idx]), physicsClientId=c)
                    kw["rgbaColor"] = [1.0, 1.0, 1.0, 1.0]
                for body, link in parts:
                    p.changeVisualShape(body, link, physicsClientId=c, **kw)
        for _ in range(int(v.get("distractor_count", 0))):
            lo, hi = self.distractor_region()
            scene.distractor(c, rng, lo, hi)

    def distractor_region(self):
        return (0.25, -0.45, 0.22), (0.85, 0.45, 0.24)

    def _refill_step_block(self) -> None:
        """Draw the per-step values of the next STEP_BLOCK steps, the per-step sums of the additive
        noises with their per-episode biases (one addition per step instead of two) and the substep
        counts under period jitter."""
        block = self.randomizer.sample_steps(self.dr_rng, self.dims, self.STEP_BLOCK)
        if "action_noise" in block:
            block["_action_offset"] = block["action_noise"] + self.dr.get("action_bias", 0.0)
        if "object_position_noise" in block:
            block["_object_offset"] = block["object_position_noise"] + self.dr.get("object_position_bias", 0.0)
        if "control_period_jitter" in block:     # physics substeps per step (np.rint rounds like round())
            block["_substeps"] = np.maximum(1, np.rint(self.substeps * (1.0 + block["control_period_jitter"])))
        self._step_block, self._step_k, self._step_len = block, 0, self.STEP_BLOCK
        self._step_public = [(name, b) for name, b in block.items() if name[0] != "_"]
