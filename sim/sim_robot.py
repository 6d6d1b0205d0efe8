"""One robot loaded into a pybullet client (`SimRobot`), controlled by joint torques computed here.

It owns the mapping from joint names to pybullet indices, reads state, and turns position /
velocity / effort targets into joint torques every physics substep with the configured PD gains,
on top of gravity compensation (as on a torque-controlled arm) by the robot's model as loaded: the
controller's model, as a real arm's controller compensates with its own. Link masses a
randomization draw changes later (`apply_robot_draw`) are not compensated: a heavier arm sags
under its PD, as it would on the robot. (pybullet builds its inverse-dynamics model of a body at
the first call and keeps it through `changeDynamics`, bullet3 issue #4809 in the pinned pybullet
3.2.7; the model is built at load, before any draw, so that it is always the one as loaded, in the
tasks, the sim driver and identification's replay alike.) Actuator effects beyond that rigid
PD joint (backlash, Coulomb friction and stiction, a lower torque limit, torque droop with speed)
are off unless `SimRobot.set_unmodeled` switches them on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as p

from s2r.core.robot_description import RobotDescription

MODE_POSITION, MODE_VELOCITY, MODE_EFFORT = "position", "velocity", "effort"
STICTION_VELOCITY = 0.005     # rad/s (m/s): a joint slower than this is at rest for stiction


@dataclass
class _Unmodeled:
    """The effects of `SimRobot.set_unmodeled` that the torque loop computes, per controlled joint."""
    half_gap: np.ndarray | None       # backlash / 2 (None: no backlash anywhere)
    gap_mask: np.ndarray | None       # the joints with backlash
    hi: np.ndarray                    # torque limit (effort limit x torque_limit_scale)
    droop: np.ndarray | None          # torque limit lost per unit speed, fraction
    f_static: np.ndarray | None       # friction motor force at rest and moving (None: constant,
    f_kinetic: np.ndarray | None      # set once, nothing to switch)
    stuck: np.ndarray | None = None   # the at-rest mask whose forces pybullet has now


class SimRobot:
    """One robot in a pybullet client, controlled by joint torques computed here."""

    def __init__(self, client: int, model: RobotDescription, joint_names, kp, kd, effort_limits,
                 gravity_compensation: bool = True, base_position=None):
        self.client, self.model = client, model
        self.body = p.loadURDF(model.urdf, basePosition=base_position or model.base_position,
                               baseOrientation=model.base_orientation, useFixedBase=True,
                               flags=(p.URDF_USE_INERTIA_FROM_FILE if model.inertia_from_file else 0) | model.urdf_flags,
                               physicsClientId=client)
        self._links: dict[str, int] = {p.getBodyInfo(self.body, physicsClientId=client)[0].decode(): -1}
        movable: dict[str, int] = {}
        limits = []
        for i in range(p.getNumJoints(self.body, physicsClientId=client)):
            info = p.getJointInfo(self.body, i, physicsClientId=client)
            self._links[info[12].decode()] = i
            if info[2] != p.JOINT_FIXED:
                movable[info[1].decode()] = i
                limits.append((info[8], info[9]) if info[8] <= info[9] else (-np.pi, np.pi))
        unknown = [n for n in joint_names if n not in movable]
        if unknown:
            raise ValueError(f"robot {model.name!r} has no joint(s) {unknown}; its joints are {list(movable)}")
        self.joint_names = tuple(joint_names)
        self.idx = [movable[n] for n in joint_names]
        # Inverse dynamics in pybullet works on all movable joints; keep both index sets.
        self.all_idx = list(movable.values())
        # every movable joint in pybullet's order: names, URDF limits, home (what IK works on)
        self.all_names = tuple(movable)
        self.all_lower, self.all_upper = (np.array(v, float) for v in zip(*limits)) if limits else (np.zeros(0),) * 2
        self.q_home_all = np.array([model.home.get(n, 0.0) for n in self.all_names])
        self._pos_in_all = [self.all_idx.index(i) for i in self.idx]
        self.n = len(self.idx)
        self._kp, self._kd = np.asarray(kp, float), np.asarray(kd, float)
        self.nominal_kp, self.nominal_kd = self._kp.copy(), self._kd.copy()   # kp/kd may be randomized
        self.effort_limits = np.asarray(effort_limits, float)
        self._neg_effort_limits = -self.effort_limits
        self.gravity_compensation = gravity_compensation
        for i in range(-1, p.getNumJoints(self.body, physicsClientId=client)):
            p.changeDynamics(self.body, i, linearDamping=0.0, angularDamping=0.0, physicsClientId=client)
        # the description's identified viscous joint friction replaces the URDF's <dynamics damping>
        # wherever it gives one, in every simulation of the robot (driver, tasks, tuning)
        for name, c in model.joint_damping.items():
            if name in movable:
                p.changeDynamics(self.body, movable[name], jointDamping=float(c), physicsClientId=client)
        # Free the joints from pybullet's default velocity motors: we command torques.
        p.setJointMotorControlArray(self.body, self.all_idx, p.VELOCITY_CONTROL,
                                    forces=[0.0] * len(self.all_idx), physicsClientId=client)
        self._others = [i for i in self.all_idx if i not in self.idx]
        self._others_in_all = [self.all_idx.index(i) for i in self._others]
        # the common case, every movable joint commanded in pybullet order: slice, don't gather
        if self._pos_in_all == list(range(len(self.all_idx))):
            self._pos_in_all = slice(None)
        self._unmodeled: _Unmodeled | None = None
        self.q_home = np.array([model.home.get(n, 0.0) for n in joint_names])
        self._others_home = np.array([model.home.get(p.getJointInfo(self.body, i, physicsClientId=client)[1].decode(), 0.0)
                                      for i in self._others])
        self.reset(self.q_home)
        if gravity_compensation:
            self._measure()           # pybullet's inverse-dynamics model of the robot, as loaded (see above)

    # ---------------------------------------------------------------- state
    def reset(self, q, qd=None) -> None:
        qd = np.zeros(self.n) if qd is None else qd
        for i, qi, vi in zip(self.idx, q, qd):
            p.resetJointState(self.body, i, float(qi), float(vi), physicsClientId=self.client)
        for i, qi in zip(self._others, self._others_home):
            p.resetJointState(self.body, i, float(qi), 0.0, physicsClientId=self.client)
        self._zeros = np.zeros(self.n)
        self._zeros_all = [0.0] * len(self.all_idx)
        self.tau_ff = self._zeros
        self.mode = MODE_POSITION
        self._set_reference(np.array(q, float), self._zeros, np.inf)
        self.tau = np.zeros(self.n)
        self._others_target = self._others_home.copy()

    def joint_state(self):
        """(q, qd) of all movable joints in pybullet order."""
        q, qd, _, _ = zip(*p.getJointStates(self.body, self.all_idx, physicsClientId=self.client))
        return np.array(q), np.array(qd)

    def state(self):
        """(q, qd, tau) of the controlled joints, tau being the last torque applied."""
        q, qd = self.joint_state()
        return q[self._pos_in_all], qd[self._pos_in_all], self.tau   # tau is a fresh array each substep

    def link_pose(self, link: str):
        """World position (3,) and orientation quaternion xyzw (4,) of a named link."""
        try:
            i = self._links[link]
        except KeyError:
            raise ValueError(f"robot {self.model.name!r} has no link {link!r}") from None
        if i == -1:
            pos, orn = p.getBasePositionAndOrientation(self.body, physicsClientId=self.client)
        else:
            pos, orn = p.getLinkState(self.body, i, computeForwardKinematics=True, physicsClientId=self.client)[4:6]
        return np.array(pos), np.array(orn)

    # ---------------------------------------------------------------- control
    # The joint reference is q_ref(t) = anchor + qd_ref * t for t < horizon, then the goal. The PD
    # law tau = kp (q_ref - q) + kd (qd_ref - qd) is evaluated as A - kp q - kd qd with
    # A = kp q_ref + kd qd_ref advanced by one addition per substep (this runs at the physics rate).

    @property
    def kp(self) -> np.ndarray:
        return self._kp

    @kp.setter
    def kp(self, v) -> None:
        self._kp = np.asarray(v, float)
        self._refresh_pd()

    @property
    def kd(self) -> np.ndarray:
        return self._kd

    @kd.setter
    def kd(self, v) -> None:
        self._kd = np.asarray(v, float)
        self._refresh_pd()

    @property
    def q_target(self) -> np.ndarray:
        """The joint position reference right now."""
        if self._elapsed >= self._horizon:
            return self._q_goal
        if self._elapsed == 0.0:
            return self._q_anchor
        return self._q_anchor + self.qd_target * self._elapsed

    def _set_reference(self, anchor: np.ndarray, qd_ref: np.ndarray, horizon: float, goal=None) -> None:
        self._q_anchor, self.qd_target, self._horizon, self._elapsed = anchor, qd_ref, horizon, 0.0
        self._q_goal = anchor if goal is None else goal
        self._refresh_pd()

    def _refresh_pd(self) -> None:
        if not hasattr(self, "_q_anchor"):
            return
        self._moving = self.qd_target is not self._zeros and bool(self.qd_target.any())
        if self._moving:
            self._pd_a = self._kp * self.q_target + self._kd * self.qd_target
            self._pd_rate = self._kp * self.qd_target
            self._pd_inc_dt = None
        else:
            self._pd_a = self._kp * self.q_target

    def set_target(self, mode: str, values: np.ndarray, period: float | None = None) -> None:
        """Latch a command; `run_control` turns it into torques each substep.

        With `period` (the control period), a position command is reached by linear interpolation
        over that period with the matching velocity feed-forward, as a robot's joint interpolator
        does with streamed set-points; without it, the target is a step (used for holding).
        Velocity mode tracks the integral of the commanded velocity, so it does not drift under load.
        """
        values = np.asarray(values, float)
        if mode == MODE_POSITION:
            if period and self.mode == MODE_POSITION:
                # _set_reference(q_now, qd, period, goal=values), specialized: this runs on every
                # streamed set-point. At rest, _pd_a already is kp * q_now; a zero velocity just
                # arrives after one period.
                q_now = self.q_target
                qd = (values - q_now) / period
                kp_q = self._kp * q_now if self._moving else self._pd_a
                self._q_anchor, self.qd_target, self._horizon, self._elapsed = q_now, qd, period, 0.0
                self._q_goal = values.copy()
                self._moving, self._pd_inc_dt = True, None
                self._pd_a = kp_q + self._kd * qd
                self._pd_rate = self._kp * qd
            else:
                self._set_reference(values.copy(), self._zeros, np.inf)
            self.tau_ff = self._zeros
        elif mode == MODE_VELOCITY:
            anchor = self.q_target if self.mode == MODE_VELOCITY else self.state()[0]
            self._set_reference(anchor, values.copy(), np.inf)
            self.tau_ff = self._zeros
        elif mode == MODE_EFFORT:
            self.tau_ff = values.copy()
        else:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode

    def hold(self) -> None:
        self.set_target(MODE_POSITION, self.state()[0])

    def set_unmodeled(self, backlash=None, coulomb_friction=None, stiction=None, torque_limit_scale=None,
                      motor_droop=None) -> None:
        """Actuator effects beyond the rigid PD joint, one value per controlled joint; None leaves an
        effect out, and with all of them None the torque loop is the plain one again.

        - `backlash` b (total play, rad or m): the joint servo holds the motor side at the reference
          q_ref (a stiff motor position loop); the gear drives the link only while the link is outside
          the play window [q_ref - b/2, q_ref + b/2], with the joint's PD acting on how far beyond the
          window's edge it is: tau = kp (e - clip(e, -b/2, b/2)) + kd (qd_ref - qd), e = q_ref - q.
          A gear flank only pushes: a torque that would pull the link back onto the flank is zero
          (the link separates and coasts). Inside the window the link gets no servo torque
          (gravity compensation and effort feed-forward still act on it), so a reversal of the
          reference within the play moves the motor and not the link, and the link comes to rest
          anywhere within b/2 of the reference. Joints with b = 0 keep the plain PD; effort commands
          have no reference and are unaffected.
        - `coulomb_friction` Fc and `stiction` Fs (N m or N): pybullet's joint velocity motor with
          target velocity 0 and force max(Fs, Fc) while the joint is at rest (|qd| below
          STICTION_VELOCITY), Fc while it moves. The solver treats it like a contact: it holds a
          joint exactly under a net torque below the breakaway max(Fs, Fc) and opposes motion
          with Fc.
        - `torque_limit_scale` s and `motor_droop` d (per rad/s or m/s): the applied torque is
          clipped to s * effort_limit * clip(1 - d qd, 0, 1) in the positive direction and
          s * effort_limit * clip(1 + d qd, 0, 1) in the negative one: the torque available in the
          direction of motion falls linearly with speed (a DC motor's torque-speed line, d being
          1 / no-load speed), braking keeps the whole limit.
        """
        def vec(name, v, positive=False):
            if v is None:
                return None
            a = np.array(v, dtype=float).reshape(-1) if np.ndim(v) else np.full(self.n, float(v))
            if a.shape != (self.n,):
                raise ValueError(f"{name}: expected {self.n} values (one per joint of {self.joint_names}), "
                                 f"got {np.shape(v)}")
            if not np.isfinite(a).all() or ((a <= 0).any() if positive else (a < 0).any()):
                raise ValueError(f"{name}: must be finite and {'> 0' if positive else '>= 0'}, got {a.tolist()}")
            return a

        backlash, coulomb = vec("backlash", backlash), vec("coulomb_friction", coulomb_friction)
        stiction, scale = vec("stiction", stiction), vec("torque_limit_scale", torque_limit_scale, positive=True)
        droop = vec("motor_droop", motor_droop)
        zero = np.zeros(self.n)
        kinetic = coulomb if coulomb is not None else zero
        static = np.maximum(kinetic, stiction) if stiction is not None else kinetic
        p.setJointMotorControlArray(self.body, self.idx, p.VELOCITY_CONTROL, targetVelocities=zero.tolist(),
                                    forces=static.tolist(), physicsClientId=self.client)
        switching = bool((static != kinetic).any())
        if backlash is not None and not backlash.any():
            backlash = None
        if droop is not None and not droop.any():
            droop = None
        if backlash is None and droop is None and scale is None and not switching:
            self._unmodeled = None          # friction alone lives in pybullet's motors: the plain loop
            return
        self._unmodeled = _Unmodeled(
            half_gap=None if backlash is None else backlash / 2.0,
            gap_mask=None if backlash is None else backlash > 0.0,
            hi=self.effort_limits * (1.0 if scale is None else scale), droop=droop,
            f_static=static if switching else None, f_kinetic=kinetic if switching else None)

    def _measure(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One substep's joint positions and velocities (every movable joint, pybullet order) and
        the torques that start the substep: gravity compensation, or zeros."""
        states = p.getJointStates(self.body, self.all_idx, physicsClientId=self.client)
        q_list = [s[0] for s in states]
        qd_all = np.array([s[1] for s in states])
        if self.gravity_compensation:
            z = self._zeros_all
            tau = np.array(p.calculateInverseDynamics(self.body, q_list, z, z, physicsClientId=self.client))
        else:
            tau = np.zeros(len(q_list))
        return np.array(q_list), qd_all, tau

    def _pd_increment(self, dt: float) -> np.ndarray:
        """kp * qd_ref * dt: how much the PD's reference term grows per substep while moving."""
        if self._pd_inc_dt != dt:
            self._pd_inc, self._pd_inc_dt = self._pd_rate * dt, dt
        return self._pd_inc

    def run_control(self, n: int, dt: float, physics_step=None) -> None:
        """n substeps of joint torque control. Before each substep's `physics_step()` (None: the
        caller steps physics, n must be 1), the torques from the state measured right then.

        This runs at the physics rate, so everything constant over the n substeps is looked up once.
        """
        if self._unmodeled is not None:
            self._run_control_unmodeled(n, dt, physics_step)
            return
        body, client, all_idx = self.body, self.client, self.all_idx
        set_motors, torque_control = p.setJointMotorControlArray, p.TORQUE_CONTROL
        sel, others, oi = self._pos_in_all, self._others, self._others_in_all
        kp, kd, hi, lo = self._kp, self._kd, self.effort_limits, self._neg_effort_limits
        effort_mode = self.mode == MODE_EFFORT
        moving, elapsed, horizon, pd_a = self._moving, self._elapsed, self._horizon, self._pd_a
        if moving and not effort_mode:
            pd_inc = self._pd_increment(dt)
        tau_c = self.tau
        every = sel == slice(None)            # every movable joint commanded: whole arrays, no views
        for _ in range(n):
            q_all, qd_all, tau_all = self._measure()
            if effort_mode:
                tau_all[sel] += self.tau_ff
            else:
                if moving:
                    elapsed += dt
                    if elapsed >= horizon - 1e-12:
                        # arrived: hold exactly the goal (what _set_reference(goal, 0, inf) computes)
                        self._q_anchor, self.qd_target, horizon, elapsed = self._q_goal, self._zeros, np.inf, 0.0
                        moving = False
                        pd_a = kp * self._q_goal
                    else:
                        pd_a = pd_a + pd_inc
                if every:
                    tau_all += pd_a - kp * q_all - kd * qd_all
                else:
                    tau_all[sel] += pd_a - kp * q_all[sel] - kd * qd_all[sel]
            if others:
                # joints not under command (e.g. a gripper left out of the config) are held at home
                tau_all[oi] += 200.0 * (self._others_target - q_all[oi]) - 5.0 * qd_all[oi]
            tau_c = tau_all if every else tau_all[sel]
            np.maximum(tau_c, lo, out=tau_c)
            np.minimum(tau_c, hi, out=tau_c)
            if tau_c is not tau_all and tau_c.base is not tau_all:
                tau_all[sel] = tau_c
            set_motors(body, all_idx, torque_control, forces=tau_all.tolist(), physicsClientId=client)
            if physics_step is not None:
                physics_step(physicsClientId=client)
        self._moving, self._elapsed, self._horizon, self._pd_a = moving, elapsed, horizon, pd_a
        self.tau = tau_c                     # tau_all is new every substep: nothing writes it later

    def _run_control_unmodeled(self, n: int, dt: float, physics_step) -> None:
        """`run_control` with the effects of `set_unmodeled` (the same reference and PD law)."""
        u = self._unmodeled
        body, client, all_idx = self.body, self.client, self.all_idx
        set_motors = p.setJointMotorControlArray
        sel, others, oi = self._pos_in_all, self._others, self._others_in_all
        kp, kd, hi0 = self._kp, self._kd, u.hi
        lo0 = -hi0
        effort_mode = self.mode == MODE_EFFORT
        moving, elapsed, horizon, pd_a = self._moving, self._elapsed, self._horizon, self._pd_a
        anchor, qd_ref = self._q_anchor, self.qd_target
        if moving and not effort_mode:
            pd_inc = self._pd_increment(dt)
        tau = self.tau
        for _ in range(n):
            q_all, qd_all, tau_all = self._measure()
            q, qd = q_all[sel], qd_all[sel]
            if effort_mode:
                tau = tau_all[sel] + self.tau_ff
            else:
                if moving:
                    elapsed += dt
                    if elapsed >= horizon - 1e-12:
                        self._q_anchor, self.qd_target, horizon, elapsed = self._q_goal, self._zeros, np.inf, 0.0
                        anchor, qd_ref, moving = self._q_goal, self._zeros, False
                        pd_a = kp * self._q_goal
                    else:
                        pd_a = pd_a + pd_inc
                tau = pd_a - kp * q - kd * qd
                if u.half_gap is not None:
                    e = (anchor + qd_ref * elapsed if moving else anchor) - q
                    beyond = e - np.clip(e, -u.half_gap, u.half_gap)
                    gear = kp * beyond + kd * (qd_ref - qd)
                    gear[beyond * gear <= 0.0] = 0.0          # inside the play, or a flank pulling
                    tau = np.where(u.gap_mask, gear, tau)
                tau += tau_all[sel]
            if others:
                tau_all[oi] += 200.0 * (self._others_target - q_all[oi]) - 5.0 * qd_all[oi]
            if u.droop is None:
                tau = np.minimum(np.maximum(tau, lo0), hi0)
            else:
                f = u.droop * qd
                tau = np.minimum(np.maximum(tau, lo0 * np.clip(1.0 + f, 0.0, 1.0)), hi0 * np.clip(1.0 - f, 0.0, 1.0))
            tau_all[sel] = tau
            if u.f_static is not None:        # stiction: the friction motor's force follows rest / motion
                stuck = np.abs(qd) < STICTION_VELOCITY
                if u.stuck is None or (stuck != u.stuck).any():
                    set_motors(body, self.idx, p.VELOCITY_CONTROL, targetVelocities=self._zeros.tolist(),
                               forces=np.where(stuck, u.f_static, u.f_kinetic).tolist(), physicsClientId=client)
                    u.stuck = stuck
            set_motors(body, all_idx, p.TORQUE_CONTROL, forces=tau_all.tolist(), physicsClientId=client)
            if physics_step is not None:
                physics_step(physicsClientId=client)
        self._moving, self._elapsed, self._horizon, self._pd_a = moving, elapsed, horizon, pd_a
        self.tau = tau
