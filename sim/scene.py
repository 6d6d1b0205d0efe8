"""Scene pieces for the tasks: table, boxes, markers, the shape-sorting box, procedural textures.

Everything is built from pybullet primitives at reset time (no files but the textures, which are
generated once per process), so object size and table height can be randomized per episode.
"""
from __future__ import annotations

import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet as p

from s2r.core.schema.randomization import TEXTURE_COUNT

TABLE_COLOR = (0.62, 0.47, 0.32, 1.0)


def box(client: int, half_extents, position, mass: float = 0.0, orientation=(0, 0, 0, 1),
        rgba=(0.8, 0.2, 0.2, 1.0), lateral_friction: float | None = None) -> int:
    col = p.createCollisionShape(p.GEOM_BOX, halfExtents=list(half_extents), physicsClientId=client)
    vis = p.createVisualShape(p.GEOM_BOX, halfExtents=list(half_extents), rgbaColor=list(rgba),
                              physicsClientId=client)
    body = p.createMultiBody(mass, col, vis, list(position), list(orientation), physicsClientId=client)
    if lateral_friction is not None:
        p.changeDynamics(body, -1, lateralFriction=lateral_friction, physicsClientId=client)
    return body


def marker(client: int, position, radius: float = 0.015, rgba=(0.1, 0.8, 0.1, 0.8)) -> int:
    """A visual-only sphere (no collision, no mass): targets and goals."""
    vis = p.createVisualShape(p.GEOM_SPHERE, radius=radius, rgbaColor=list(rgba), physicsClientId=client)
    return p.createMultiBody(0.0, -1, vis, list(position), physicsClientId=client)


def post(client: int, foot, length: float, radius: float, rgba) -> int:
    """A visual-only vertical cylinder standing on `foot` (x, y, z of its bottom face), `length` tall."""
    vis = p.createVisualShape(p.GEOM_CYLINDER, radius=radius, length=length, rgbaColor=list(rgba),
                              physicsClientId=client)
    return p.createMultiBody(0.0, -1, vis, [foot[0], foot[1], foot[2] + length / 2], physicsClientId=client)


@dataclass(frozen=True)
class Table:
    body: int
    height: float           # top surface z
    center: tuple
    half_extents: tuple


def table(client: int, center_xy=(0.55, 0.0), size=(0.7, 0.9), height: float = 0.2, thickness: float = 0.04,
          rgba=TABLE_COLOR) -> Table:
    """A static slab whose top surface is at `height` (legs are not simulated: the slab reaches the floor)."""
    he = (size[0] / 2, size[1] / 2, height / 2)
    body = box(client, he, (center_xy[0], center_xy[1], height / 2), 0.0, rgba=rgba)
    return Table(body, height, (center_xy[0], center_xy[1], height / 2), he)


# ------------------------------------------------------------------------------------ shape sorter
# Pegs and the holes that fit them (x, y half sizes, m). A peg fits only its own hole: the square
# peg is too wide for the slot, the slot peg too long for the square hole.
PEGS = {"square": (0.015, 0.015), "slot": (0.028, 0.009)}
HOLE_CLEARANCE = 0.004
SORTER_SIZE = (0.26, 0.14, 0.08)       # outer x, y, z of the box
SORTER_WALL = 0.01
SORTER_HOLES = (("square", -0.06), ("slot", 0.05))   # name, x offset of the hole centre


@dataclass(frozen=True)
class ShapeSorter:
    body: int
    position: tuple          # centre of the bottom face
    top: float               # z of the top surface
    holes: dict              # name -> world (x, y) of the hole centre
    hole_half: dict          # name -> (hx, hy)


def shape_sorter(client: int, position, rgba=(0.2, 0.35, 0.8, 1.0)) -> ShapeSorter:
    """A hollow box (four walls and a top plate with one hole per peg), static, as one compound body."""
    lx, ly, lz = SORTER_SIZE
    t = SORTER_WALL
    boxes: list[tuple] = []   # (half extents, centre relative to the bottom-face centre)
    # walls
    boxes += [((lx / 2, t / 2, (lz - t) / 2), (0, s * (ly - t) / 2, (lz - t) / 2)) for s in (-1, 1)]
    boxes += [((t / 2, ly / 2 - t, (lz - t) / 2), (s * (lx - t) / 2, 0, (lz - t) / 2)) for s in (-1, 1)]
    # top plate: strips across y between the holes, and beside each hole in y
    zc = lz - t / 2
    holes = sorted((x, PEGS[name][0] + HOLE_CLEARANCE, PEGS[name][1] + HOLE_CLEARANCE, name)
                   for name, x in SORTER_HOLES)
    x_edges = [-lx / 2]
    for x, hx, hy, _ in holes:
        x_edges += [x - hx, x + hx]
    x_edges.append(lx / 2)
    for a, b in zip(x_edges[0::2], x_edges[1::2]):   # solid strips
        boxes.append((((b - a) / 2, ly / 2, t / 2), ((a + b) / 2, 0, zc)))
    for x, hx, hy, _ in holes:                        # beside each hole
        w = (ly / 2 - hy) / 2
        for s in (-1, 1):
            boxes.append(((hx, w, t / 2), (x, s * (hy + w), zc)))
    he = [list(b[0]) for b in boxes]
    pos = [list(b[1]) for b in boxes]
    col = p.createCollisionShapeArray([p.GEOM_BOX] * len(boxes), halfExtents=he, collisionFramePositions=pos,
                                      physicsClientId=client)
    vis = p.createVisualShapeArray([p.GEOM_BOX] * len(boxes), halfExtents=he, visualFramePositions=pos,
                                   rgbaColors=[list(rgba)] * len(boxes), physicsClientId=client)
    body = p.createMultiBody(0.0, col, vis, list(position), physicsClientId=client)
    holes_w = {name: (position[0] + x, position[1]) for x, _, _, name in holes}
    half = {name: (hx, hy) for _, hx, hy, name in holes}
    return ShapeSorter(body, tuple(position), position[2] + lz, holes_w, half)


# ------------------------------------------------------------------------------------ textures
_texture_dir: Path | None = None


def texture_files() -> list[Path]:
    """TEXTURE_COUNT procedural textures (checkers, stripes, noise, waves; texture_index 0 ..
    TEXTURE_COUNT - 1), written once per process as PNG files for p.loadTexture; the same images
    every time (one fixed-seed generator, drawn in index order, so texture i never depends on how
    many follow it). The training presets draw texture_index 0-7; the others are textures no
    training draw shows, for held-out visuals."""
    global _texture_dir
    if _texture_dir is None or not _texture_dir.exists():
        _texture_dir = Path(tempfile.mkdtemp(prefix="s2r_textures_"))
        rng = np.random.default_rng(12345)
        size = 64
        yy, xx = np.mgrid[0:size, 0:size]
        for i in range(TEXTURE_COUNT):
            c1, c2 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
            kind = i % 4
            if kind == 0:
                k = int(rng.integers(4, 16))
                m = ((xx // k + yy // k) % 2)[..., None]
            elif kind == 1:
                k = int(rng.integers(3, 12))
                m = ((xx + (yy if rng.random() < 0.5 else 0)) // k % 2)[..., None]
            elif kind == 2:
                m = rng.random((size, size, 1))
            else:
                m = 0.5 + 0.5 * np.sin(xx[..., None] / rng.uniform(2, 8)) * np.cos(yy[..., None] / rng.uniform(2, 8))
            img = (255 * (c1 * m + c2 * (1 - m))).clip(0, 255).astype(np.uint8)
            write_png(_texture_dir / f"tex{i}.png", img)
    return [_texture_dir / f"tex{i}.png" for i in range(TEXTURE_COUNT)]


def write_png(path: Path, rgb: np.ndarray) -> None:
    """A minimal RGB8 PNG writer (no imaging library needed)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def distractor(client: int, rng: np.random.Generator, region_lo, region_hi) -> int:
    """A visual-only random box, sphere or cylinder placed uniformly in a region (no physics)."""
    kind = int(rng.integers(3))
    rgba = list(rng.uniform(0, 1, 3)) + [1.0]
    size = rng.uniform(0.015, 0.04)
    if kind == 0:
        vis = p.createVisualShape(p.GEOM_BOX, halfExtents=[size, size * rng.uniform(0.5, 1.5), size],
                                  rgbaColor=rgba, physicsClientId=client)
    elif kind == 1:
        vis = p.createVisualShape(p.GEOM_SPHERE, radius=size, rgbaColor=rgba, physicsClientId=client)
    else:
        vis = p.createVisualShape(p.GEOM_CYLINDER, radius=size, length=2 * size, rgbaColor=rgba,
                                  physicsClientId=client)
    pos = rng.uniform(region_lo, region_hi)
    yaw = rng.uniform(-np.pi, np.pi)
    return p.createMultiBody(0.0, -1, vis, list(pos), list(p.getQuaternionFromEuler([0, 0, yaw])),
                             physicsClientId=client)
