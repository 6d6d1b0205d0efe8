"""Scripted controllers that solve the s2r tasks: the reference experts for tests and demonstrations.

They read the observation (noisy under randomization, like a real controller would) and use the
simulated robot's kinematics for inverse kinematics: pybullet's IK for the arm (TCP position, hand
pointing down) and damped least squares on fingertip Jacobians for the hand. A joint-space target
q* becomes the action that moves the commanded joint targets there, a = clip((q* - q_cmd) / scale),
with q_cmd including the actions still in flight (the experts are privileged: they read the sim).

`make_scripted(env)` picks the controller for a task; each is a callable `obs -> action`, and
`scripted_factory` is a picklable policy factory for `sim.parallel`.
"""
from __future__ import annotations

import numpy as np
import pybullet as p

from s2r.sim.tasks.arm import ArmInsert, ArmPush, ArmReach
from s2r.sim.tasks.hand import HandGraspLift, HandReach


class _Scripted:
    """Privileged expert: besides the observation it reads the simulator (for IK) and the env's
    commanded joint targets (which include the set-points still in flight under latency)."""

    def __init__(self, env):
        self.env = env.unwrapped
        self.phase = 0
        self.t = 0

    def joint_action(self, q_des, q_meas=None) -> np.ndarray:
        """The action that moves the commanded joint targets to q_des (as far as one step allows)."""
        e = self.env
        idx = e.act_idx
        return np.clip((q_des[idx] - e.q_cmd[idx]) / e.action_scale, -1.0, 1.0)


class ArmIK(_Scripted):
    """TCP to a point, hand pointing down: pybullet IK from the current posture, null space to home."""

    yaw = 0.0               # hand yaw about world z (hand pointing down): hand x at this angle

    def ik(self, tcp_target) -> np.ndarray:
        e = self.env
        orn = p.getQuaternionFromEuler([np.pi, 0.0, self.yaw])
        return e.ik(np.asarray(tcp_target, float), orn, rest=e.robot.q_home, iterations=50, threshold=1e-4)

    def goto(self, obs, tcp_target) -> np.ndarray:
        # Re-solve IK only when the target moves: solving from the current posture every step lets
        # the redundant arm wander along its null space.
        tcp_target = np.asarray(tcp_target, float)
        cached = getattr(self, "_ik", None)
        if cached is None or np.linalg.norm(cached[0] - tcp_target) > self.resolve_distance or cached[2] != self.yaw:
            cached = self._ik = (tcp_target, self.ik(tcp_target), self.yaw)
        return self.joint_action(cached[1], obs["joint_pos"])

    resolve_distance = 0.003


class ReachController(ArmIK):
    def __call__(self, obs):
        return self.goto(obs, obs["target"])


class PushController(ArmIK):
    """Push with the two fingers as a flat paddle (the hand turned so that the fingers line up
    across the push direction), at block height, along the block-goal line.

    A Cartesian set-point walks at a bounded speed (the arm follows it in straight lines, and slowly
    enough for the wrist to keep up); each phase ends when the measured TCP has arrived, not the
    set-point. Phases: up to a safe height, over the point behind the block (seen from the goal)
    while turning the hand, down to push height, push (the set-point chases the point just inside
    the block's back face, so the block is steered back onto the line as it drifts), hold at the
    goal. If the block gets off the paddle (the TCP too far to the side of the block-goal line, or
    not behind the block) or is pushed past the goal, it goes up and around again.
    """
    fast, slow, push_speed = 0.006, 0.003, 0.0025     # set-point speeds, m per control step
    yaw_rate = 0.04                                    # rad per control step
    paddle_half = 0.0105                               # finger half-thickness along the push
    clearance = 0.035                                  # paddle to block when coming down behind it
    press = 0.015                                      # set-point this far inside the block's face,
    press_max, press_rate = 0.04, 0.0005               # and deeper while the block does not move
    #                                                    (the observed block may be off by a cm)
    UP, OVER, DOWN, PUSH, HOLD = range(5)

    def __call__(self, obs):
        e = self.env
        block, goal, tcp = obs["object_pos"][0][:2], obs["target"][:2], obs["tcp_pos"]
        h = e.table.height
        z_push, z_safe = h + 0.018, h + 0.13
        if self.t == 0:
            self.sp, self.yaw = tcp.copy(), 0.0
            self.phase = self.OVER if tcp[2] > z_safe - 0.01 else self.UP
        self.t += 1
        to_goal = goal - block
        dist = float(np.linalg.norm(to_goal))
        u = to_goal / max(dist, 1e-6)
        back = e.block_half + self.paddle_half
        behind = block - u * (back + self.clearance)
        rel = tcp[:2] - block
        lateral, along = abs(rel[0] * u[1] - rel[1] * u[0]), float(rel @ u)
        speed, yaw_goal = self.fast, self.paddle_yaw(u)
        if self.phase == self.UP:
            target = np.array([*self.sp[:2], z_safe])
            if tcp[2] > z_safe - 0.01:
                self.phase = self.OVER
        elif self.phase == self.OVER:
            target = np.array([*behind, z_safe])
            if np.linalg.norm(tcp[:2] - behind) < 0.01 and abs(self._yaw_error(yaw_goal)) < 0.03:
                self.phase = self.DOWN
        elif self.phase == self.DOWN:
            speed, target = self.slow, np.array([*behind, z_push])
            if tcp[2] < z_push + 0.006:
                self.phase, self._press = self.PUSH, self.press
        elif self.phase == self.PUSH:
            speed = self.push_speed
            # press harder (integral action) while the block does not approach the goal
            stalled = dist > getattr(self, "_last_dist", np.inf) - 0.2 * self.push_speed
            self._press = min(self._press + self.press_rate, self.press_max) if stalled else \
                max(self._press - self.press_rate, self.press)
            target = np.array([*(block - u * (back - self._press)), z_push])
            if dist < 0.008:
                self.phase, target = self.HOLD, self.sp.copy()
            elif lateral > 0.02 or along > 0.0:
                self.phase, target = self.UP, self.sp.copy()
        else:                                           # HOLD: stay, unless the block is off the goal
            target = self.sp.copy()
            if dist > 0.02:
                self.phase = self.UP
        if self.phase in (self.OVER, self.DOWN):        # turn the paddle only when clear of the block
            self.yaw += float(np.clip(self._yaw_error(yaw_goal), -self.yaw_rate, self.yaw_rate))
        self._last_dist = dist
        step = target - self.sp
        n = np.linalg.norm(step)
        self.sp = target if n <= speed else self.sp + step / n * speed
        return self.goto(obs, self.sp)

    def _yaw_error(self, yaw_goal) -> float:
        """yaw_goal - yaw, the paddle being symmetric (mod pi), as a turn back toward home (yaw 0)
        where the shorter way would take the wrist past a quarter turn."""
        d = (yaw_goal - self.yaw + np.pi / 2) % np.pi - np.pi / 2
        if abs(self.yaw + d) > np.pi / 2 + 0.3:
            d -= np.sign(d) * np.pi
        return float(d)

    @staticmethod
    def paddle_yaw(u) -> float:
        """Hand yaw that puts the fingers across the direction u (hand x along u), in [-pi/2, pi/2)
        (the paddle is symmetric, so the wrist never turns more than a quarter turn from home)."""
        return (float(np.arctan2(u[1], u[0])) + np.pi / 2) % np.pi - np.pi / 2


class InsertController(ArmIK):
    """Peg above the matching hole, then down; a small spiral search if it sticks on the rim.
    The peg's bottom is computed from the TCP pose and the (rigid) grasp, so hand tilt is
    corrected for and the noisy object observation is not needed."""
    resolve_distance = 0.001

    def __call__(self, obs):
        e = self.env
        target, tcp = obs["target"], obs["tcp_pos"]
        R = np.array(p.getMatrixFromQuaternion(obs["tcp_quat"])).reshape(3, 3)
        bottom = tcp + (e.GRIP_DEPTH + e.peg_half[2]) * R[:, 2]
        xy_err = np.linalg.norm(bottom[:2] - target[:2])
        above = e.sorter.top + 0.015
        self.t += 1
        if self.phase == 0:
            goal = np.array([target[0], target[1], above])
            if xy_err < 0.002 and abs(bottom[2] - above) < 0.01:
                self.phase, self.t = 1, 0
        else:
            goal = np.array([target[0], target[1], target[2] - 0.01])
            if bottom[2] > e.sorter.top - 0.002 and self.t > 25:   # stuck on the rim: search around
                r = min(0.002 + 0.0002 * (self.t - 25), 0.008)
                goal[:2] += r * np.array([np.cos(0.6 * self.t), np.sin(0.6 * self.t)])
        return self.goto(obs, goal + (tcp - bottom))


class _HandDLS(_Scripted):
    """Damped least squares on the fingertip Jacobians: dq = J^T (J J^T + l^2 I)^-1 e."""
    damping = 0.02

    def tip_ik_step(self, q, tip_targets, tip_pos, which=None) -> np.ndarray:
        e = self.env
        which = range(len(e.tip_links)) if which is None else which
        body = e.robot.body
        n_all = len(e.robot.all_idx)
        q_all, _ = e.robot.joint_state()
        J_rows, err = [], []
        for k in which:
            link = e.robot._links[e.tip_links[k]]
            jl, _ = p.calculateJacobian(body, link, [0, 0, 0], q_all.tolist(), [0.0] * n_all, [0.0] * n_all,
                                        physicsClientId=e.client)
            J_rows.append(np.asarray(jl)[:, e.robot._pos_in_all])
            err.append(tip_targets[k] - tip_pos[k])
        J, err = np.vstack(J_rows), np.concatenate(err)
        dq = J.T @ np.linalg.solve(J @ J.T + self.damping ** 2 * np.eye(len(err)), err)
        return q + dq


class HandReachController(_HandDLS):
    """Solve the fingertip IK once per episode, finger by finger (each tip depends only on its own
    four joints), on the simulator's kinematics: damped least squares clamped to the joint limits,
    restarted from random postures (seeded) when it stalls against a limit short of the target; then
    drive the joints to that solution, and finish with closed-loop DLS steps on the observed tips.
    (Plain DLS from the start posture folded about one finger in five against its limits.)"""
    restarts, iterations, tolerance = 12, 60, 1e-3
    near = 0.01                  # closer than this to every target: closed-loop DLS on the tips

    def __call__(self, obs):
        q = obs["joint_pos"]
        if self.t == 0:
            self.q_star = self.solve(obs["target"])
        self.t += 1
        if np.abs(obs["tip_pos"] - obs["target"]).max() < self.near:
            q_des = np.clip(self.tip_ik_step(q, obs["target"], obs["tip_pos"]), self.env.lower, self.env.upper)
        else:
            q_des = self.q_star
        return self.joint_action(q_des, q)

    def solve(self, targets) -> np.ndarray:
        e = self.env
        r, c = e.robot, e.client
        saved = [p.getJointState(r.body, j, physicsClientId=c)[:2] for j in r.all_idx]
        rng = np.random.default_rng(0)
        q_all_names = [p.getJointInfo(r.body, j, physicsClientId=c)[1].decode() for j in r.all_idx]
        q = r.state()[0].copy()
        try:
            for k, tip in enumerate(e.tip_links):
                cols = [i for i, n in enumerate(e.joint_names) if n.startswith(tip[:3])]
                lo, hi = e.lower[cols], e.upper[cols]
                best = (np.inf, q[cols].copy())
                for attempt in range(self.restarts):
                    qf = q[cols].copy() if attempt == 0 else rng.uniform(lo, hi)
                    for _ in range(self.iterations):
                        for i, v in zip(cols, qf):
                            p.resetJointState(r.body, r.idx[i], float(v), 0.0, physicsClientId=c)
                        pos = np.asarray(p.getLinkState(r.body, r._links[tip], computeForwardKinematics=True,
                                                        physicsClientId=c)[4])
                        err = targets[k] - pos
                        if np.linalg.norm(err) < self.tolerance:
                            break
                        q_now = [p.getJointState(r.body, j, physicsClientId=c)[0] for j in r.all_idx]
                        jl, _ = p.calculateJacobian(r.body, r._links[tip], [0, 0, 0], q_now, [0.0] * len(q_now),
                                                    [0.0] * len(q_now), physicsClientId=c)
                        J = np.asarray(jl)[:, [q_all_names.index(e.joint_names[i]) for i in cols]]
                        dq = J.T @ np.linalg.solve(J @ J.T + self.damping ** 2 * np.eye(3), err)
                        qf = np.clip(qf + dq, lo, hi)
                    d = float(np.linalg.norm(err))
                    if d < best[0]:
                        best = (d, qf.copy())
                    if d < self.tolerance:
                        break
                q[cols] = best[1]
        finally:
            for j, (qv, vv) in zip(r.all_idx, saved):
                p.resetJointState(r.body, j, qv, vv, physicsClientId=c)
        return q


class GraspLiftController(_Scripted):
    """Pinch grasp between the curled fingers and the opposed thumb, then lift (joint space).

    1. pre-shape while rising to `z_pre`: fingers bent down and open (MCP `open`), thumb turned into
       opposition (th_cmc) and leaned back (th_abd < 0), until the measured posture is there (the
       joint limiter paces the set-points; lowering half-shaped fingers onto the cube misses it);
    2. lower the hand to `z_grasp` (finger pads beside the cube's -y face, thumb beside its +y face);
    3. close over `n_close` steps to targets past contact (fingers curl, the thumb flexes toward
       them), so the PD error squeezes the cube; dwell `n_dwell` steps;
    4. raise the slide until the observed cube reaches the target height.
    """
    z_pre, z_grasp, lift_speed = 0.14, 0.10, 0.005        # slide positions (m), m per step
    n_pre, n_lower, n_close, n_dwell = 15, 15, 20, 10
    shaped_tol, n_pre_max = 0.05, 80                       # rad: pre-shape reached; give up waiting after
    FINGERS_OPEN = {"mcp": 1.2, "pip": 0.05, "dip": 0.05}
    FINGERS_CLOSED = {"mcp": 1.65, "pip": 0.4, "dip": 0.2}
    THUMB_OPEN = {"th_cmc": 1.8, "th_abd": -0.3, "th_mcp": 0.5, "th_ip": 0.3}
    THUMB_CLOSED = {"th_cmc": 1.8, "th_abd": 0.5, "th_mcp": 0.6, "th_ip": 0.3}

    def __init__(self, env):
        super().__init__(env)
        names = self.env.joint_names
        self.open = self._posture(names, self.FINGERS_OPEN, self.THUMB_OPEN)
        self.closed = self._posture(names, self.FINGERS_CLOSED, self.THUMB_CLOSED)
        self.lift = names.index("wrist_lift")

    @staticmethod
    def _posture(names, fingers, thumb):
        q = np.zeros(len(names))
        for i, n in enumerate(names):
            if n in thumb:
                q[i] = thumb[n]
            elif n[:2] in ("if", "mf", "rf") and n[3:] in fingers:
                q[i] = fingers[n[3:]]
        return q

    def __call__(self, obs):
        e, L = self.env, self.lift
        self.t += 1
        if self.phase == 0:                                   # pre-shape, rising
            self.q = self.open.copy()
            self.q[L] = self.z_pre
            shaped = np.abs(obs["joint_pos"] - self.q).max() < self.shaped_tol
            if self.t >= self.n_pre and shaped or self.t >= self.n_pre_max:
                self.phase, self.t = 1, 0
        elif self.phase == 1:                                 # lower
            self.q[L] = max(self.q[L] - self.lift_speed, self.z_grasp)
            if self.t >= self.n_lower:
                self.phase, self.t = 2, 0
        elif self.phase == 2:                                 # close, then dwell
            s = min(1.0, self.t / self.n_close)
            self.q = self.open + s * (self.closed - self.open)
            self.q[L] = self.z_grasp
            if self.t >= self.n_close + self.n_dwell:
                self.phase, self.t = 3, 0
        elif obs["object_pos"][0][2] < e.target[2]:           # lift to the target height
            self.q[L] = min(self.q[L] + self.lift_speed, e.upper[L])
        return self.joint_action(self.q)


def make_scripted(env):
    e = env.unwrapped
    for cls, ctrl in ((ArmReach, ReachController), (ArmPush, PushController), (ArmInsert, InsertController),
                      (HandReach, HandReachController), (HandGraspLift, GraspLiftController)):
        if isinstance(e, cls):
            return ctrl(env)
    raise ValueError(f"no scripted controller for {type(e).__name__}")


def scripted_factory(env):
    """Picklable policy factory for sim.parallel: a fresh scripted controller per episode."""
    return make_scripted(env)
