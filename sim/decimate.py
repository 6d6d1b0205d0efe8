"""Decimated Panda visual meshes for fast CPU rendering: `python -m s2r.sim.decimate` writes sim/assets/panda_lite/.

The stock pybullet_data Panda visual meshes have ~100k triangles; pybullet's TinyRenderer (the CPU
renderer we train and test with) spends most of a small image's time transforming them. This
tool reduces each link to a few hundred triangles by vertex clustering (Rossignac & Borrel 1993,
"Multi-resolution 3D approximations for rendering complex scenes"): vertices are snapped to a
uniform grid, each occupied cell is replaced by the mean of its vertices, and triangles that
collapse are dropped. Colours survive as flat per-material Kd: each face's colour (the material's
Kd, times the texture at the face's UV centroid when the material is textured) is quantized to a
small palette and written as one material group per colour.

Only visuals change: the URDF variant keeps the stock inertials, joints and collision meshes
(copied alongside), so the dynamics are identical to the stock model's.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pybullet_data

STOCK = Path(pybullet_data.getDataPath()) / "franka_panda"
OUT = Path(__file__).resolve().parent / "assets" / "panda_lite"
CELL = 0.015         # m, clustering grid: ~6k triangles for the arm, ~100k before
PALETTE_STEP = 0.25   # colour quantization step


def read_mtl(path: Path) -> dict:
    mats, cur = {}, None
    if not path.exists():
        return mats
    for line in path.read_text().splitlines():
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "newmtl":
            cur = mats.setdefault(" ".join(tok[1:]), {"Kd": np.ones(3), "map": None})
        elif tok[0] == "Kd" and cur is not None:
            cur["Kd"] = np.array([float(x) for x in tok[1:4]])
        elif tok[0] == "map_Kd" and cur is not None:
            cur["map"] = tok[-1]
    return mats


def read_obj(path: Path):
    """Vertices (V,3), triangles (F,3), per-face colour (F,3) in [0,1]."""
    verts, uvs, faces, face_uv, face_mat = [], [], [], [], []
    mtl, mat = {}, None
    textures: dict[str, np.ndarray] = {}
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            verts.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("vt "):
            uvs.append([float(x) for x in line.split()[1:3]])
        elif line.startswith("mtllib"):
            mtl = read_mtl(path.parent / line.split(None, 1)[1].strip())
        elif line.startswith("usemtl"):
            mat = line.split(None, 1)[1].strip()
        elif line.startswith("f "):
            items = [t.split("/") for t in line.split()[1:]]
            vi = [int(t[0]) - 1 for t in items]
            ti = [int(t[1]) - 1 if len(t) > 1 and t[1] else -1 for t in items]
            for k in range(1, len(vi) - 1):   # fan-triangulate polygons
                faces.append([vi[0], vi[k], vi[k + 1]])
                face_uv.append([ti[0], ti[k], ti[k + 1]])
                face_mat.append(mat)
    V, F = np.array(verts), np.array(faces)
    UV = np.array(uvs) if uvs else np.zeros((0, 2))
    colors = np.ones((len(F), 3))
    for i, (m, tuv) in enumerate(zip(face_mat, face_uv)):
        info = mtl.get(m, {"Kd": np.array([0.9, 0.9, 0.9]), "map": None})
        c = info["Kd"].copy()
        if info["map"] and min(tuv) >= 0:
            tex = textures.get(info["map"])
            if tex is None:
                from PIL import Image
                tex = textures[info["map"]] = np.asarray(Image.open(path.parent / info["map"]).convert("RGB")) / 255.0
            u, v = UV[tuv].mean(axis=0)
            h, w = tex.shape[:2]
            c = c * tex[int(np.clip((1 - v % 1.0) * h, 0, h - 1)), int(np.clip((u % 1.0) * w, 0, w - 1))]
        colors[i] = c
    return V, F, colors


def cluster_decimate(V: np.ndarray, F: np.ndarray, cell: float):
    """Vertex clustering: one vertex per occupied grid cell; returns (V', F', kept-face mask)."""
    keys = np.floor(V / cell).astype(np.int64)
    _, cluster, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    cluster = cluster.ravel()
    newV = np.zeros((counts.size, 3))
    np.add.at(newV, cluster, V)
    newV /= counts[:, None]
    G = cluster[F]
    keep = (G[:, 0] != G[:, 1]) & (G[:, 1] != G[:, 2]) & (G[:, 0] != G[:, 2])
    # drop duplicates (same three clusters, any winding) keeping the first
    sorted_g = np.sort(G, axis=1)
    _, first = np.unique(sorted_g, axis=0, return_index=True)
    unique_mask = np.zeros(len(F), bool)
    unique_mask[first] = True
    keep &= unique_mask
    return newV, G, keep


def write_obj(path: Path, V, F, colors, keep, name: str) -> int:
    quant = np.clip(np.round(colors / PALETTE_STEP) * PALETTE_STEP, 0, 1)
    groups: dict[tuple, list[int]] = {}
    for i in np.flatnonzero(keep):
        groups.setdefault(tuple(np.round(quant[i], 3)), []).append(i)
    used = np.unique(F[keep].ravel()) if keep.any() else np.zeros(0, int)
    remap = -np.ones(len(V), int)
    remap[used] = np.arange(used.size)
    lines = [f"# decimated from pybullet_data franka_panda by sim/decimate.py (vertex clustering, cell {CELL} m)",
             f"mtllib {name}.mtl"]
    lines += [f"v {x:.5f} {y:.5f} {z:.5f}" for x, y, z in V[used]]
    mtl = []
    n_faces = 0
    for gi, (col, idx) in enumerate(sorted(groups.items())):
        mname = f"c{gi}"
        mtl += [f"newmtl {mname}", "Ka 1 1 1", f"Kd {col[0]:.3f} {col[1]:.3f} {col[2]:.3f}", "Ks 0.05 0.05 0.05", "d 1", ""]
        lines += [f"o {name}_{mname}", f"usemtl {mname}"]
        for i in idx:
            a, b, c = remap[F[i]] + 1
            lines.append(f"f {a} {b} {c}")
            n_faces += 1
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".mtl").write_text("\n".join(mtl))
    return n_faces


def build(cell: float = CELL) -> dict:
    (OUT / "meshes" / "visual").mkdir(parents=True, exist_ok=True)
    (OUT / "meshes" / "collision").mkdir(parents=True, exist_ok=True)
    report = {}
    for src in sorted((STOCK / "meshes" / "visual").glob("*.obj")):
        V, F, colors = read_obj(src)
        newV, G, keep = cluster_decimate(V, F, cell)
        n = write_obj(OUT / "meshes" / "visual" / src.name, newV, G, colors, keep, src.stem)
        report[src.name] = (len(F), n)
    for src in (STOCK / "meshes" / "collision").glob("*.obj"):
        shutil.copy(src, OUT / "meshes" / "collision" / src.name)
    shutil.copy(STOCK / "LICENSE.txt", OUT / "LICENSE.txt")
    urdf = (STOCK / "panda.urdf").read_text().replace("package://meshes/", "meshes/")
    urdf = re.sub(r"<robot name=\"panda\"", "<!-- sim/decimate.py: stock panda.urdf with decimated visual meshes -->\n<robot name=\"panda\"", urdf, count=1)
    (OUT / "panda.urdf").write_text(urdf)
    return report


def main():
    report = build()
    for name, (before, after) in report.items():
        print(f"{name:12s} {before:6d} -> {after:5d} triangles")
    total = sum(a for _, a in report.values()), sum(b for b, _ in report.values())
    print(f"total        {total[1]:6d} -> {total[0]:5d} triangles; wrote {OUT}")


if __name__ == "__main__":
    main()
