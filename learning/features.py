"""Observation features: every input a policy can take, defined once.

A policy's export metadata lists its state input as `obs_keys` ("image" aside), e.g.
["joint_pos", "joint_vel", "target_minus_tcp"]; the input is those features' values concatenated in
that order. Each key names a feature of `FEATURES` (its size, the sources and metadata parameters it
needs, how it is computed), or a feature with a history suffix:

    "<feature>@hist<K>"   the feature's last K values, oldest first, the current one last
                          (K * size values); before the episode's first step the first value
                          repeats. "prev_action@hist3" = the last three actions: under an action
                          latency of up to three steps, every action still in flight.

Features are computed from an `ObsContext`: named sources, each given as a value or as a function
(called at most once per step). Who supplies which:

    source            simulator (`sim_context`)                policy_node
    joint_pos, _vel   obs["joint_pos"], obs["joint_vel"]       /joint_states of the observed joints
    action_joint_pos  obs["joint_pos"] of the action joints    /joint_states of the commanded joints
    tcp_pos, tcp_rot  obs["tcp_pos"], matrix of obs["tcp_quat"] URDF forward kinematics of the
                                                               metadata's ee_link + tcp_offset
    target            obs["target"]                            /goal_pose (position)
    q_cmd             env.q_cmd of the action joints            its position targets (position and
                      (position control)                       position_delta actions)
    step, last_action kept by `ObservationBuilder` (control steps since the episode began; the
                      action of the previous step, zeros at the first)

`ObservationBuilder` is the one way to build a policy's input, step by step through an episode:
training (learning/agents.py: the policy's observations and extra entries of the local
controllers' state), `s2r eval` (learning/cli.py) and policy_node all use it with their context.
Actions (`last_action`, `prev_action`) are in the units of the metadata's `action` (what an exported
policy outputs: rad per step for position_delta), not the normalized actions of the task.

Bad input raises `FeatureError` (a ValueError) in one line naming the key: an unknown feature, a
malformed history suffix, a parameter the metadata lacks (phase without episode_steps), a source
the context lacks (a node that has no position targets asked for cmd_offset).
"""
from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np

from s2r.core.yamlio import excerpt

__all__ = ["FEATURES", "SOURCES", "PARAMETERS", "Feature", "FeatureError", "ObsContext", "ObservationBuilder",
           "sim_context", "sim_sources", "compute_features", "feature_size", "parse_key", "phase", "peg_bottom",
           "policy_input_size",
           "MAX_HISTORY"]

MAX_HISTORY = 100                     # the longest history a key may ask for (steps)


class FeatureError(ValueError):
    """An observation key that cannot be built here; the message names the key."""


# what an ObsContext may hold (name -> what it is), for features' `sources` and error messages
SOURCES = {
    "joint_pos": "measured positions of the observed joints",
    "joint_vel": "measured velocities of the observed joints",
    "action_joint_pos": "measured positions of the action (commanded) joints",
    "tcp_pos": "the TCP position, world frame (forward kinematics)",
    "tcp_rot": "the TCP orientation as a rotation matrix, world frame (forward kinematics)",
    "target": "the goal position, world frame (hand tasks: one per fingertip, (k, 3))",
    "tip_pos": "the fingertip positions (k, 3), world frame, in the order of the robot's tip_links",
    "q_cmd": "the commanded joint position targets of the action joints (position control)",
    "setpoint": "the set-points last sent to the action joints, after the joint limiter",
    "setpoint_step": "the set-points' last change per control step (rad), after the joint limiter",
    "step": "control steps since the episode began",
    "last_action": "the action of the previous step (the episode's memory)",
}


def _positive_int(v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or int(v) < 1:
        raise ValueError("a positive integer")
    return int(v)


def _finite_float(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError("a finite number")
    return float(v)


# metadata parameters features read: name -> (what it is, parser)
PARAMETERS = {
    "episode_steps": ("control steps per training episode", _positive_int),
    "peg_bottom_offset": ("m from the TCP to the held peg's bottom along the hand's z axis", _finite_float),
    "tip_count": ("fingertips with a goal (the robot description's tip_links)", _positive_int),
}


def phase(step: int, episode_steps: int) -> float:
    """The policy's phase input: the episode's progress, control steps since it began over its
    length, 1 from the last step on (the policy then holds at the target)."""
    return min(float(step) / float(episode_steps), 1.0)


@dataclass(frozen=True)
class Feature:
    """One policy input: `size` values (an int, or "joints" / "actions": one per observed / action
    joint, "tips": three per fingertip, `tip_count` of the metadata's parameters), computed by
    `compute(context, params)` from the context's `sources` and the metadata's `params`."""
    name: str
    size: int | str
    sources: tuple[str, ...]
    params: tuple[str, ...]
    compute: Callable[["ObsContext", dict], np.ndarray]
    doc: str

    def size_for(self, n_joints: int, n_actions: int, params: Mapping | None = None) -> int:
        if self.size == "tips":
            return 3 * int((params or {}).get("tip_count") or 0)
        return {"joints": n_joints, "actions": n_actions}.get(self.size, self.size)


def peg_bottom(c: "ObsContext", p: Mapping) -> np.ndarray:
    """The held peg's bottom-face centre by forward kinematics: the peg is rigid in the hand, its
    bottom `peg_bottom_offset` along the hand's z axis below the TCP."""
    return np.asarray(c["tcp_pos"], float) + p["peg_bottom_offset"] * c["tcp_rot"][:, 2]


FEATURES: dict[str, Feature] = {f.name: f for f in (
    Feature("joint_pos", "joints", ("joint_pos",), (), lambda c, p: c["joint_pos"],
            "measured joint positions (rad), observed joints"),
    Feature("joint_vel", "joints", ("joint_vel",), (), lambda c, p: c["joint_vel"],
            "measured joint velocities (rad/s), observed joints"),
    Feature("tcp_pos", 3, ("tcp_pos",), (), lambda c, p: c["tcp_pos"],
            "TCP position (m, world frame), forward kinematics of the joint angles"),
    Feature("target", 3, ("target",), (), lambda c, p: c["target"], "goal position (m, world frame)"),
    Feature("target_minus_tcp", 3, ("target", "tcp_pos"), (),
            lambda c, p: np.asarray(c["target"], float) - np.asarray(c["tcp_pos"], float),
            "goal minus TCP position (m)"),
    Feature("target_minus_peg_bottom", 3, ("target", "tcp_pos", "tcp_rot"), ("peg_bottom_offset",),
            lambda c, p: np.asarray(c["target"], float) - peg_bottom(c, p),
            "goal minus the held peg's bottom (m): tcp_pos + peg_bottom_offset along the hand's z axis"),
    Feature("target_minus_tips", "tips", ("target", "tip_pos"), ("tip_count",),
            lambda c, p: (np.asarray(c["target"], float) - np.asarray(c["tip_pos"], float)).ravel(),
            "goal minus fingertip positions (m), tip by tip (tip_count x 3, the order of the robot's tip_links)"),
    Feature("phase", 1, ("step",), ("episode_steps",), lambda c, p: [phase(c["step"], p["episode_steps"])],
            "the episode's progress, min(step / episode_steps, 1)"),
    Feature("prev_action", "actions", ("last_action",), (), lambda c, p: c["last_action"],
            "the previous step's action, in the metadata's action units (zeros at the episode's start)"),
    Feature("cmd_offset", "actions", ("q_cmd", "action_joint_pos"), (),
            lambda c, p: np.asarray(c["q_cmd"], float) - np.asarray(c["action_joint_pos"], float),
            "commanded position targets minus measured positions of the action joints (rad)"),
    Feature("setpoint_offset", "actions", ("setpoint", "action_joint_pos"), (),
            lambda c, p: np.asarray(c["setpoint"], float) - np.asarray(c["action_joint_pos"], float),
            "set-points sent (after the joint limiter) minus measured positions of the action joints (rad)"),
    Feature("setpoint_step", "actions", ("setpoint_step",), (), lambda c, p: c["setpoint_step"],
            "the set-points' last change per control step (rad): their speed under the joint limiter"),
)}

_HISTORY = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)@hist(?P<k>[0-9]+)$")


def parse_key(key) -> tuple[Feature, int]:
    """(feature, history length: 0 for a plain key) of an obs key; FeatureError if unknown or malformed."""
    if not isinstance(key, str):
        raise FeatureError(f"obs key {excerpt(key)} is not a string")
    if key in FEATURES:
        return FEATURES[key], 0
    m = _HISTORY.match(key) if len(key) <= 100 else None
    if m is None:
        hint = " (a history is <feature>@hist<K>, e.g. joint_pos@hist4)" if "@" in key else ""
        raise FeatureError(f"unknown obs key {excerpt(key)}{hint} (known: {', '.join(FEATURES)})")
    name, k = m.group("name"), int(m.group("k"))
    if name not in FEATURES:
        raise FeatureError(f"obs key {key!r}: unknown feature {name!r} (known: {', '.join(FEATURES)})")
    if not 1 <= k <= MAX_HISTORY:
        raise FeatureError(f"obs key {key!r}: history length must be 1..{MAX_HISTORY}, got {k}")
    return FEATURES[name], k


def feature_size(key: str, n_joints: int, n_actions: int, params: Mapping | None = None) -> int:
    f, k = parse_key(key)
    return max(k, 1) * f.size_for(n_joints, n_actions, params)


class _Missing(KeyError):
    pass


class ObsContext:
    """The sources of one step (see the module docstring): name -> value, or -> a function of no
    arguments called on first use (forward kinematics only when a feature needs it)."""
    __slots__ = ("_values", "where")

    def __init__(self, values: Mapping, where: str = "this context"):
        unknown = [k for k in values if k not in SOURCES]
        if unknown:
            raise FeatureError(f"unknown observation source {unknown[0]!r} (known: {', '.join(SOURCES)})")
        self._values, self.where = dict(values), where

    def provides(self, name: str) -> bool:
        return name in self._values

    def __getitem__(self, name: str):
        try:
            v = self._values[name]
        except KeyError:
            raise _Missing(name) from None
        if callable(v):
            v = self._values[name] = v()
        return v

    def set(self, name: str, value) -> None:
        self._values[name] = value


def sim_context(obs: Mapping, env=None) -> ObsContext:
    """The sources of a simulator observation (sim.tasks): joint state, TCP pose and target where
    the task observes them and, given the task `env`, the action joints' positions and, in position
    control, their commanded targets (`env.q_cmd`, as they are after the step that made `obs`)."""
    v = {"joint_pos": obs["joint_pos"], "joint_vel": obs["joint_vel"]}
    if "tcp_pos" in obs:
        v["tcp_pos"] = obs["tcp_pos"]
    if "tcp_quat" in obs:
        quat = obs["tcp_quat"]

        def tcp_rot():
            from s2r.controllers.reach import quat_matrix
            return quat_matrix(quat)
        v["tcp_rot"] = tcp_rot
    if "target" in obs:
        v["target"] = obs["target"]
    if "tip_pos" in obs:
        v["tip_pos"] = obs["tip_pos"]
    if env is not None:
        idx = env.act_idx
        v["action_joint_pos"] = obs["joint_pos"][idx]
        if getattr(env, "control", "position") == "position":
            v["q_cmd"] = env.q_cmd[idx]              # fancy indexing: a copy, not a view of the live targets
            sp = env.setpoints
            v["setpoint"], v["setpoint_step"] = sp.setpoint[idx], sp.setpoint_step[idx]
    return ObsContext(v, "the simulator's observation")


def sim_sources(env) -> set[str]:
    """The sources `sim_context(obs, env)` supplies for the task `env` (from its observation space)."""
    space = set(getattr(env.observation_space, "spaces", {}))
    have = {"joint_pos", "joint_vel", "action_joint_pos"}
    have |= {s for s, o in (("tcp_pos", "tcp_pos"), ("tcp_rot", "tcp_quat"), ("target", "target"),
                            ("tip_pos", "tip_pos")) if o in space}
    if getattr(env, "control", "position") == "position":
        have |= {"q_cmd", "setpoint", "setpoint_step"}
    return have


def policy_input_size(meta: Mapping) -> int | None:
    """The state input size of an exported policy's network (its metadata's "policy": an MLP's
    obs_dim, a CNN's joint_dim), or None where the metadata does not say."""
    cfg = meta.get("policy") if isinstance(meta, Mapping) else None
    if not isinstance(cfg, Mapping):
        return None
    n = cfg.get("joint_dim" if cfg.get("arch") == "cnn" else "obs_dim")
    return int(n) if isinstance(n, int) and not isinstance(n, bool) else None


def _check_params(keys, features, params: Mapping, where: str) -> dict:
    out = {}
    for key, f in zip(keys, features):
        for name in f.params:
            if name in out:
                continue
            doc, parse = PARAMETERS[name]
            if params.get(name) is None:
                raise FeatureError(f"obs key {key!r} needs {name} ({doc}), but {where} has no {name}")
            try:
                out[name] = parse(params[name])
            except ValueError as e:
                raise FeatureError(f"obs key {key!r} needs {name} to be {e}, got {excerpt(params[name])}") from None
    return out


def _value(key: str, f: Feature, c: ObsContext, params: dict) -> np.ndarray:
    try:
        return np.asarray(f.compute(c, params), float).ravel()
    except _Missing as e:
        src = e.args[0]
        raise FeatureError(f"obs key {key!r} needs {src} ({SOURCES[src]}), which {c.where} does not provide") from None


def _key_list(keys) -> list:
    """obs keys as a list, "image" (the CNN's other input) left out."""
    if isinstance(keys, (str, bytes, Mapping)) or not isinstance(keys, Iterable):
        raise FeatureError(f"obs_keys must be a list of feature keys, got {excerpt(keys)}")
    return [k for k in keys if k != "image"]


def compute_features(keys: Iterable[str], context: ObsContext, params: Mapping | None = None,
                     where: str = "the metadata") -> np.ndarray:
    """The input named by `keys` at one step, without an episode's memory: the context must hold
    every source the keys need (including `step` for phase); history keys need an ObservationBuilder."""
    keys = _key_list(keys)
    parsed = [parse_key(k) for k in keys]
    for key, (_, k) in zip(keys, parsed):
        if k:
            raise FeatureError(f"obs key {key!r} needs the episode's history: build it with an ObservationBuilder")
    p = _check_params(keys, [f for f, _ in parsed], params or {}, where)
    return np.concatenate([_value(key, f, context, p) for key, (f, _) in zip(keys, parsed)]) if keys else np.zeros(0)


class ObservationBuilder:
    """A policy's state input from its obs keys, step after step through an episode.

        b = ObservationBuilder(meta["obs_keys"], meta, n_joints=7, n_actions=7)
        b.reset()                           # at the episode's start
        x = b.observe(context)              # each control step: the input (b.size values)
        b.record_action(a)                  # the action taken after it (metadata units)

    The builder supplies the sources `step` (observe calls since reset, before this one) and
    `last_action` (the latest recorded action, zeros before the first) and keeps the values of
    history keys. "image" keys are skipped. Construction checks the keys and the parameters they
    need from `params` (usually the export metadata; `where` names it in errors)."""

    def __init__(self, keys: Iterable[str], params: Mapping | None = None, *, n_joints: int, n_actions: int,
                 where: str = "the policy's metadata"):
        self.keys = _key_list(keys)
        seen = set()
        for k in self.keys:
            if k in seen:
                raise FeatureError(f"obs key {k!r} is listed twice")
            seen.add(k)
        parsed = [parse_key(k) for k in self.keys]
        self._features = [f for f, _ in parsed]
        self._history = [k for _, k in parsed]
        self.n_joints, self.n_actions = int(n_joints), int(n_actions)
        self.params = _check_params(self.keys, self._features, params or {}, where)
        self.sizes = [max(k, 1) * f.size_for(self.n_joints, self.n_actions, self.params) for f, k in parsed]
        self.size = int(sum(self.sizes))
        self.sources = sorted({s for f in self._features for s in f.sources} - {"step", "last_action"})
        self.reset()

    def require(self, available: Iterable[str], where: str) -> None:
        """FeatureError (one line) naming the first key whose sources are not all in `available`."""
        have = set(available) | {"step", "last_action"}
        for key, f in zip(self.keys, self._features):
            for s in f.sources:
                if s not in have:
                    raise FeatureError(f"obs key {key!r} needs {s} ({SOURCES[s]}), which {where} does not provide")

    def check_policy(self, meta: Mapping, where: str) -> None:
        """FeatureError (one line) if the exported policy's network takes another input size than
        these keys make here (e.g. joint_pos over other joints than it was trained on)."""
        n = policy_input_size(meta)
        if n is not None and n != self.size:
            raise FeatureError(f"the policy takes {n} state values, but its obs_keys {self.keys} make {self.size} "
                               f"{where} ({self.n_joints} observed joints, {self.n_actions} actions)")

    def needs(self, source: str) -> bool:
        return source in self.sources

    def reset(self) -> None:
        """A new episode: step 0, no previous action, no history."""
        self.step = 0
        self._last = np.zeros(self.n_actions)
        self._past = [deque(maxlen=k) if k else None for k in self._history]

    def record_action(self, action) -> None:
        """The action taken after the latest observation (the metadata's action units)."""
        a = np.array(action, dtype=float).reshape(-1)
        if a.shape != (self.n_actions,):
            raise FeatureError(f"recorded action has {a.size} values, the policy has {self.n_actions} actions")
        self._last = a

    def observe(self, context: ObsContext) -> np.ndarray:
        """The input at this step (`size` values), from `context`; advances the step."""
        context.set("step", self.step)
        context.set("last_action", self._last)
        parts, values = [], {}
        for key, f, k, past in zip(self.keys, self._features, self._history, self._past):
            v = values.get(f.name)
            if v is None:
                v = values[f.name] = _value(key, f, context, self.params)
            if past is None:
                parts.append(v)
                continue
            v = v.copy()                        # kept: not a view of a source the caller may reuse
            if not past:
                past.extend([v] * (k - 1))      # before the first step: the first value
            past.append(v)
            parts.append(np.concatenate(past))
        self.step += 1
        out = np.concatenate(parts) if parts else np.zeros(0)
        if out.size != self.size:
            raise FeatureError(f"the obs keys {self.keys} made {out.size} values, expected {self.size} "
                               f"({self.n_joints} observed joints, {self.n_actions} actions)")
        return out
