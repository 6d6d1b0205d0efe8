"""Rigid-body dynamics of a fixed-base kinematic tree read from a URDF, in CasADi symbols.

Featherstone, *Rigid Body Dynamics Algorithms* (2008): RNEA (Table 5.1) for inverse dynamics and
bias forces, CRBA (Table 6.2) for the joint-space mass matrix, ABA (Table 7.1) for forward dynamics.
Spatial vectors are (angular; linear) and expressed in body frames; a body is a movable joint
together with every link rigidly attached behind it (fixed joints and locked joints are merged),
so a 9-joint Panda with its fingers locked becomes a 7-body chain with the hand's inertia folded in.

Everything is built from CasADi SX symbols, so derivatives of any of these quantities are exact.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import casadi as ca
import numpy as np

__all__ = ["RigidBodyModel", "UrdfError"]


class UrdfError(ValueError):
    """The URDF cannot be read, or a joint/link name does not exist in it."""


# ----------------------------------------------------------------------------- small geometry
def _rpy_matrix(rpy) -> np.ndarray:
    """URDF fixed-axis roll-pitch-yaw: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def _skew(v) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def _axis_angle_matrix(axis: np.ndarray, q):
    """Rotation by angle q (symbolic or float) about a unit axis (Rodrigues)."""
    K = _skew(axis)
    c, s = ca.cos(q), ca.sin(q)
    return ca.DM.eye(3) + s * ca.DM(K) + (1 - c) * ca.DM(K @ K)


def _spatial_inertia(mass: float, com: np.ndarray, inertia_com: np.ndarray) -> np.ndarray:
    """6x6 spatial inertia about the frame origin (Featherstone eq. 2.63), (angular; linear) order."""
    C = _skew(com)
    return np.block([[inertia_com + mass * C @ C.T, mass * C], [mass * C.T, mass * np.eye(3)]])


def _transform_inertia(I6: np.ndarray, R: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Express a spatial inertia given in frame B in frame A, where B has pose (R, p) in A."""
    # force transform B->A is X* = [[R, p^R], [0, R]]; I_A = X* I_B X*^T
    X = np.block([[R, _skew(p) @ R], [np.zeros((3, 3)), R]])
    return X @ I6 @ X.T


def _cross3(a, b):
    return ca.vertcat(a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _crm(v, m):
    """Spatial motion cross product v x m (Featherstone eq. 2.31)."""
    w, vl = v[:3], v[3:]
    return ca.vertcat(_cross3(w, m[:3]), _cross3(w, m[3:]) + _cross3(vl, m[:3]))


def _crf(v, f):
    """Spatial force cross product v x* f (Featherstone eq. 2.32)."""
    w, vl = v[:3], v[3:]
    return ca.vertcat(_cross3(w, f[:3]) + _cross3(vl, f[3:]), _cross3(w, f[3:]))


class _Plucker:
    """Coordinate transform from a parent frame to a child frame whose pose in the parent is (R, p)."""

    def __init__(self, R, p):
        self.R, self.p = R, p  # R: child axes in parent, p: child origin in parent
        self.Rt = R.T

    def motion(self, m):  # parent -> child, motion vector
        w, v = m[:3], m[3:]
        return ca.vertcat(self.Rt @ w, self.Rt @ (v - _cross3(self.p, w)))

    def force_to_parent(self, f):  # child -> parent, force vector (X^T f)
        n, fl = self.R @ f[:3], self.R @ f[3:]
        return ca.vertcat(n + _cross3(self.p, fl), fl)

    def matrix(self):
        """6x6 motion transform parent -> child."""
        Rt = self.Rt
        return ca.blockcat([[Rt, ca.DM.zeros(3, 3)], [-Rt @ ca.skew(self.p), Rt]])


# ----------------------------------------------------------------------------- model
@dataclass(frozen=True)
class _Body:
    joint: str
    parent: int             # index of the parent body, -1 for the fixed base
    kind: str               # "revolute" | "prismatic"
    axis: np.ndarray        # unit joint axis in the joint frame
    R0: np.ndarray          # joint frame orientation in the parent body frame
    p0: np.ndarray          # joint frame origin in the parent body frame
    inertia: np.ndarray     # 6x6 spatial inertia about the joint frame, all merged links included
    lower: float
    upper: float
    effort: float
    velocity: float


class RigidBodyModel:
    """Fixed-base rigid-body tree from a URDF: mass matrix, bias forces, inverse and forward
    dynamics and forward kinematics of any link, as CasADi expressions and compiled Functions.

    `joints` selects the degrees of freedom in order (default: every movable joint, in URDF tree
    order); every other movable joint is locked at `locked.get(name, 0.0)`.
    """

    def __init__(self, urdf: str | Path, joints: list[str] | None = None,
                 locked: dict[str, float] | None = None,
                 gravity=(0.0, 0.0, -9.81)):
        path = Path(urdf)
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as exc:
            raise UrdfError(f"{path}: cannot read URDF: {exc}") from exc
        self.urdf_path = path
        self.name = root.get("name", path.stem)
        self.gravity = np.asarray(gravity, dtype=float).reshape(3)
        links = {ln.get("name"): ln for ln in root.findall("link")}
        jnodes = root.findall("joint")
        children: dict[str, list] = {}
        child_links = set()
        for j in jnodes:
            parent = j.find("parent").get("link")
            child = j.find("child").get("link")
            children.setdefault(parent, []).append(j)
            child_links.add(child)
        roots = [n for n in links if n not in child_links]
        if len(roots) != 1:
            raise UrdfError(f"{path}: expected one root link, found {roots}")
        movable_all = [j.get("name") for j in self._tree_order(roots[0], children)
                       if j.get("type") in ("revolute", "continuous", "prismatic")]
        if joints is None:
            joints = list(movable_all)
        unknown = [n for n in joints if n not in movable_all]
        if unknown:
            raise UrdfError(f"{path}: no movable joint named {unknown}; movable joints are {movable_all}")
        if len(set(joints)) != len(joints):
            raise UrdfError(f"{path}: duplicate joint names in {joints}")
        locked = dict(locked or {})
        unknown = [n for n in locked if n not in movable_all or n in joints]
        if unknown:
            raise UrdfError(f"{path}: cannot lock {unknown}: not a movable joint outside `joints`")
        self.joint_names = tuple(joints)
        self.locked = {n: float(locked.get(n, 0.0)) for n in movable_all if n not in joints}
        self.root_link = roots[0]

        # Walk the tree; every link gets (body index, pose in that body's frame).
        bodies: list[dict] = []
        self._link_frames: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
        dof_index = {n: i for i, n in enumerate(joints)}

        def add_link_inertia(link_name: str, body: int, R: np.ndarray, p: np.ndarray):
            if body < 0:
                return
            inertial = links[link_name].find("inertial")
            if inertial is None:
                return
            mass = float(inertial.find("mass").get("value"))
            o = inertial.find("origin")
            xyz = np.array([float(v) for v in (o.get("xyz", "0 0 0") if o is not None else "0 0 0").split()])
            rpy = [float(v) for v in (o.get("rpy", "0 0 0") if o is not None else "0 0 0").split()]
            node = inertial.find("inertia")
            vals = {k: float(node.get(k, 0.0)) for k in ("ixx", "ixy", "ixz", "iyy", "iyz", "izz")}
            Ic = np.array([[vals["ixx"], vals["ixy"], vals["ixz"]],
                           [vals["ixy"], vals["iyy"], vals["iyz"]],
                           [vals["ixz"], vals["iyz"], vals["izz"]]])
            Rin = _rpy_matrix(rpy)
            I_link = _spatial_inertia(mass, xyz, Rin @ Ic @ Rin.T)   # about the link frame
            bodies[body]["inertia"] += _transform_inertia(I_link, R, p)

        def visit(link_name: str, body: int, R: np.ndarray, p: np.ndarray):
            self._link_frames[link_name] = (body, R, p)
            add_link_inertia(link_name, body, R, p)
            for j in children.get(link_name, []):
                jname, jtype = j.get("name"), j.get("type")
                o = j.find("origin")
                xyz = np.array([float(v) for v in (o.get("xyz", "0 0 0") if o is not None else "0 0 0").split()])
                rpy = [float(v) for v in (o.get("rpy", "0 0 0") if o is not None else "0 0 0").split()]
                Rj, pj = R @ _rpy_matrix(rpy), p + R @ xyz      # joint frame in the current body
                child = j.find("child").get("link")
                axis_node = j.find("axis")
                axis = np.array([float(v) for v in (axis_node.get("xyz") if axis_node is not None
                                                    else "1 0 0").split()])
                if jtype in ("revolute", "continuous", "prismatic"):
                    axis = axis / np.linalg.norm(axis)
                if jname in dof_index:
                    lim = j.find("limit")
                    getlim = (lambda k, d: float(lim.get(k, d)) if lim is not None else d)
                    cont = jtype == "continuous"
                    bodies.append(dict(
                        joint=jname, parent=body,
                        kind="prismatic" if jtype == "prismatic" else "revolute",
                        axis=axis, R0=Rj, p0=pj, inertia=np.zeros((6, 6)),
                        lower=-math.inf if cont else getlim("lower", -math.inf),
                        upper=math.inf if cont else getlim("upper", math.inf),
                        effort=getlim("effort", math.inf), velocity=getlim("velocity", math.inf)))
                    visit(child, len(bodies) - 1, np.eye(3), np.zeros(3))
                else:
                    if jtype in ("revolute", "continuous"):      # locked: fold the joint motion in
                        Rc = Rj @ np.array(ca.DM(_axis_angle_matrix(axis, self.locked[jname])))
                        pc = pj
                    elif jtype == "prismatic":
                        Rc, pc = Rj, pj + Rj @ (axis * self.locked[jname])
                    elif jtype == "fixed":
                        Rc, pc = Rj, pj
                    else:
                        raise UrdfError(f"{path}: joint {jname!r} has unsupported type {jtype!r}")
                    visit(child, body, Rc, pc)

        visit(self.root_link, -1, np.eye(3), np.zeros(3))
        # bodies must be in tree order = order of `joints`; re-index if the caller chose another order
        order = [next(i for i, b in enumerate(bodies) if b["joint"] == n) for n in joints]
        remap = {old: new for new, old in enumerate(order)}
        remap[-1] = -1
        if any(remap[bodies[o]["parent"]] >= new for new, o in enumerate(order)):
            raise UrdfError(f"{path}: `joints` must list parents before children; got {list(joints)}")
        self.bodies = tuple(_Body(**{**bodies[o], "parent": remap[bodies[o]["parent"]]}) for o in order)
        self._link_frames = {k: (remap[b], R, p) for k, (b, R, p) in self._link_frames.items()}
        self.nq = len(self.bodies)
        self._functions: dict[str, ca.Function] = {}

    @staticmethod
    def _tree_order(root: str, children: dict) -> list:
        out, stack = [], [root]
        while stack:
            link = stack.pop(0)
            for j in children.get(link, []):
                out.append(j)
                stack.append(j.find("child").get("link"))
        return out

    # ------------------------------------------------------------------ properties
    @property
    def link_names(self) -> tuple[str, ...]:
        return tuple(self._link_frames)

    @property
    def lower(self) -> np.ndarray:
        return np.array([b.lower for b in self.bodies])

    @property
    def upper(self) -> np.ndarray:
        return np.array([b.upper for b in self.bodies])

    @property
    def effort_limit(self) -> np.ndarray:
        return np.array([b.effort for b in self.bodies])

    @property
    def velocity_limit(self) -> np.ndarray:
        return np.array([b.velocity for b in self.bodies])

    # ------------------------------------------------------------------ kinematics
    def _joint_transform(self, i: int, qi) -> _Plucker:
        """Pose of body i's frame in its parent body's frame at joint value qi."""
        b = self.bodies[i]
        R0, p0 = ca.DM(b.R0), ca.DM(b.p0)
        if b.kind == "revolute":
            return _Plucker(R0 @ _axis_angle_matrix(b.axis, qi), p0)
        return _Plucker(R0, p0 + R0 @ ca.DM(b.axis) * qi)

    def _motion_subspace(self, i: int) -> ca.DM:
        b = self.bodies[i]
        z = np.zeros(3)
        return ca.DM(np.concatenate([b.axis, z]) if b.kind == "revolute" else np.concatenate([z, b.axis]))

    def _check_q(self, *vectors):
        out = []
        for v in vectors:
            if isinstance(v, (ca.SX, ca.MX, ca.DM)):
                if v.shape != (self.nq, 1):
                    raise ValueError(f"expected a ({self.nq},) vector, got shape {v.shape}")
                out.append(v)
            else:
                a = np.asarray(v, dtype=float).reshape(-1)
                if a.shape != (self.nq,):
                    raise ValueError(f"expected a ({self.nq},) vector, got shape {np.shape(v)}")
                out.append(ca.DM(a))
        return out

    def link_pose(self, link: str, q):
        """World pose (R 3x3, p 3) of a link frame as CasADi expressions of q."""
        if link not in self._link_frames:
            raise UrdfError(f"{self.urdf_path}: no link named {link!r}; links are {list(self._link_frames)}")
        (q,) = self._check_q(q)
        body, Rl, pl = self._link_frames[link]
        R, p = ca.DM(Rl), ca.DM(pl)
        while body >= 0:      # compose up to the base: pose_in_parent = X_parent,body * pose_in_body
            X = self._joint_transform(body, q[body])
            R, p = X.R @ R, X.p + X.R @ p
            body = self.bodies[body].parent
        return R, p

    # ------------------------------------------------------------------ dynamics
    def inverse_dynamics(self, q, qd, qdd, gravity: bool = True):
        """tau = M(q) qdd + C(q, qd) qd + g(q): recursive Newton-Euler (Featherstone Table 5.1)."""
        q, qd, qdd = self._check_q(q, qd, qdd)
        n = self.nq
        a_base = ca.DM(np.concatenate([np.zeros(3), -self.gravity if gravity else np.zeros(3)]))
        X, v, a, f = [None] * n, [None] * n, [None] * n, [None] * n
        for i, b in enumerate(self.bodies):              # forward: velocities and accelerations
            X[i] = self._joint_transform(i, q[i])
            S = self._motion_subspace(i)
            vJ = S * qd[i]
            vp = X[i].motion(v[b.parent]) if b.parent >= 0 else ca.DM.zeros(6)
            ap = X[i].motion(a[b.parent] if b.parent >= 0 else a_base)
            v[i] = vp + vJ
            a[i] = ap + S * qdd[i] + _crm(v[i], vJ)
            I = ca.DM(b.inertia)
            f[i] = I @ a[i] + _crf(v[i], I @ v[i])
        tau = [None] * n
        for i in reversed(range(n)):                     # backward: joint forces
            tau[i] = ca.dot(self._motion_subspace(i), f[i])
            p = self.bodies[i].parent
            if p >= 0:
                f[p] = f[p] + X[i].force_to_parent(f[i])
        return ca.vertcat(*tau)

    def bias_forces(self, q, qd):
        """C(q, qd) qd + g(q) (RNEA with zero acceleration)."""
        return self.inverse_dynamics(q, qd, ca.DM.zeros(self.nq))

    def gravity_torques(self, q):
        return self.inverse_dynamics(q, ca.DM.zeros(self.nq), ca.DM.zeros(self.nq))

    def mass_matrix(self, q):
        """Joint-space inertia matrix: composite-rigid-body algorithm (Featherstone Table 6.2)."""
        (q,) = self._check_q(q)
        n = self.nq
        X = [self._joint_transform(i, q[i]) for i in range(n)]
        Ic = [ca.DM(b.inertia) for b in self.bodies]
        for i in reversed(range(n)):                     # composite inertias, leaves to root
            p = self.bodies[i].parent
            if p >= 0:
                Xm = X[i].matrix()
                Ic[p] = Ic[p] + Xm.T @ Ic[i] @ Xm
        M = type(q).zeros(n, n)                            # SX, MX or DM like q
        for i in range(n):
            F = Ic[i] @ self._motion_subspace(i)
            M[i, i] = ca.dot(self._motion_subspace(i), F)
            j = i
            while self.bodies[j].parent >= 0:
                F = X[j].force_to_parent(F)
                j = self.bodies[j].parent
                M[i, j] = M[j, i] = ca.dot(self._motion_subspace(j), F)
        return M

    def forward_dynamics(self, q, qd, tau):
        """qdd = M^-1 (tau - C qd - g): articulated-body algorithm (Featherstone Table 7.1)."""
        q, qd, tau = self._check_q(q, qd, tau)
        n = self.nq
        a_base = ca.DM(np.concatenate([np.zeros(3), -self.gravity]))
        X, S, v, c, IA, pA = [None] * n, [None] * n, [None] * n, [None] * n, [None] * n, [None] * n
        for i, b in enumerate(self.bodies):              # pass 1: velocities, bias terms
            X[i] = self._joint_transform(i, q[i])
            S[i] = self._motion_subspace(i)
            vJ = S[i] * qd[i]
            v[i] = (X[i].motion(v[b.parent]) if b.parent >= 0 else 0) + vJ
            c[i] = _crm(v[i], vJ)
            I = ca.DM(b.inertia)
            IA[i] = I
            pA[i] = _crf(v[i], I @ v[i])
        U, d, u = [None] * n, [None] * n, [None] * n
        for i in reversed(range(n)):                     # pass 2: articulated inertias
            U[i] = IA[i] @ S[i]
            d[i] = ca.dot(S[i], U[i])
            u[i] = tau[i] - ca.dot(S[i], pA[i])
            p = self.bodies[i].parent
            if p >= 0:
                Ia = IA[i] - (U[i] @ U[i].T) / d[i]
                pa = pA[i] + Ia @ c[i] + U[i] * (u[i] / d[i])
                Xm = X[i].matrix()
                IA[p] = IA[p] + Xm.T @ Ia @ Xm
                pA[p] = pA[p] + X[i].force_to_parent(pa)
        a, qdd = [None] * n, [None] * n
        for i, b in enumerate(self.bodies):              # pass 3: accelerations
            ap = X[i].motion(a[b.parent] if b.parent >= 0 else a_base) + c[i]
            qdd[i] = (u[i] - ca.dot(U[i], ap)) / d[i]
            a[i] = ap + S[i] * qdd[i]
        return ca.vertcat(*qdd)

    # ------------------------------------------------------------------ compiled numeric versions
    def function(self, what: str) -> ca.Function:
        """Compiled CasADi Function: 'mass_matrix' (q), 'bias_forces' (q, qd),
        'inverse_dynamics' (q, qd, qdd), 'forward_dynamics' (q, qd, tau), 'gravity_torques' (q)."""
        if what not in self._functions:
            q, qd, w = (ca.SX.sym(s, self.nq) for s in ("q", "qd", "w"))
            if what == "mass_matrix":
                args, out = [q], self.mass_matrix(q)
            elif what == "bias_forces":
                args, out = [q, qd], self.bias_forces(q, qd)
            elif what == "gravity_torques":
                args, out = [q], self.gravity_torques(q)
            elif what == "inverse_dynamics":
                args, out = [q, qd, w], self.inverse_dynamics(q, qd, w)
            elif what == "forward_dynamics":
                args, out = [q, qd, w], self.forward_dynamics(q, qd, w)
            else:
                raise ValueError(f"unknown function {what!r}")
            self._functions[what] = ca.Function(what, args, [ca.densify(out)])
        return self._functions[what]

    def link_pose_function(self, link: str) -> ca.Function:
        """Compiled q -> (R 3x3, p 3) of a named link."""
        key = "pose:" + link
        if key not in self._functions:
            q = ca.SX.sym("q", self.nq)
            R, p = self.link_pose(link, q)
            self._functions[key] = ca.Function("pose_" + link, [q], [ca.densify(R), ca.densify(p)])
        return self._functions[key]
