"""Domain randomization: named groups of named parameters with ranges, read from YAML, seeded.

A preset (sim/presets/<name>.yaml, or any YAML file, or a dict of the same shape) looks like::

    groups:
      dynamics:
        link_mass_scale: {dist: uniform, low: 0.5, high: 1.5}
        gravity_offset:  {dist: normal, std: 0.4, mode: per_step}
      noise:
        action_noise:    {dist: normal, std: 0.05}
      visuals:
        enabled: false

Every parameter is known here (`PARAMETERS`): its group, what it is applied to (its shape: one
value, one per joint, per link, per object, per action dimension, ...), its default mode and the
modes it supports, and whether it must stay positive. A sampled value is a realization (a mass
scale, a noise vector): the environment applies it and reports it in `info["randomization"]`.

The `unmodeled` group holds effects the nominal simulator leaves out, for testing transfer: an
evaluation preset switches them on to play a "reality" the policy was not trained on (a training
preset may use them too). They are properties of the hardware, so they change only between
episodes. Absent, each costs nothing (the robot's torque loop takes its plain path):
- `backlash`: total gear play per joint (rad, m for a prismatic joint). The joint servo holds the
  motor side at its reference; the link is driven only while it is outside the play window
  (`SimRobot.set_unmodeled` documents the model). A reversal smaller than the play moves the motor,
  not the link.
- `coulomb_friction`, `stiction`: joint friction (N m or N); kinetic friction opposes motion with
  `coulomb_friction`, a joint at rest breaks away only under more than max(stiction, coulomb).
- `torque_limit_scale`, `motor_droop`: the actuator's real torque limit is the configured effort
  limit times the scale, and falls linearly with speed in the direction of motion, by `motor_droop`
  of it per rad/s (a DC motor's torque-speed line, 1 / no-load speed).
- `encoder_offset`: added to the joint positions the policy observes (rad); the true state, the
  joint servo and the Cartesian observations are unchanged (a mis-zeroed calibration of the angles
  reported upstream).
- `sensor_delay`: observations arrive this many control steps late (all entries together, images
  included); `action_latency` (timing) delays actions instead. Rewards use the current state.
- `camera_position_error`, `camera_rotation_error` (extrinsics), `camera_focal_error` (fx and fy
  scaled by 1 + error), `camera_principal_error` (cx, cy shifted, pixels of the configured
  resolution): images are rendered from this miscalibrated camera while `camera_info()` still
  reports the calibrated one (unlike the `visuals` camera offsets, which the metadata follows).

- `per_episode` values are drawn once at reset; `per_step` values again before every step.
- Sampling uses only the generator it is given, in a fixed order, so a seed reproduces everything.
- ADR (automatic domain randomization, Akkaya et al. 2019 "Solving Rubik's Cube with a Robot
  Hand", Alg. 1) needs two things from here: pinning a parameter to one end of its range
  (`sample_episode(..., pin=...)`) and moving that end (`set_bounds`); `AutomaticDomainRandomization`
  does the bookkeeping.

Bad input (unknown group or parameter, unknown distribution, inverted or negative ranges, numbers
beyond the parameter's bound `ParamInfo.limit` such as a mass scale of 1e300, a mode a parameter
cannot have) raises `RandomizationError` naming the key path, e.g.
``groups.dynamics.link_mass_scale.low: 2.0 > high 1.5``; values are quoted as bounded excerpts.
Preset files are read by `s2r.core.yamlio` (size, aliases, duplicate keys, non-finite numbers) and
validated by `s2r.core.schema.randomization`, which also holds the parameter table (`PARAMETERS`).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2r.core import resources, yamlio
from s2r.core.schema import randomization as schema
from s2r.core.schema.randomization import DISTRIBUTIONS, GROUPS, PARAMETERS, PER_EPISODE, PER_STEP, ParamInfo
from s2r.core.yamlio import ConfigError, excerpt

# the packaged presets (the last place a preset name is looked up)
PRESETS_DIR = resources.packaged_dir("preset")
__all__ = ["DISTRIBUTIONS", "GROUPS", "PARAMETERS", "PER_EPISODE", "PER_STEP", "PRESETS_DIR",
           "AutomaticDomainRandomization", "ParamInfo", "ParamSpec", "RandomizationError", "Randomizer", "parse_param"]


class RandomizationError(ValueError):
    """A bad randomization spec; the message starts with the offending key path."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    dist: str
    mode: str
    low: object = None        # scalar or list (per component of a vec2 or vec3)
    high: object = None
    mean: object = 0.0
    std: object = 0.0
    p: float = 0.5
    value: object = None

    @property
    def info(self) -> ParamInfo:
        return PARAMETERS[self.name]

    def sample(self, rng: np.random.Generator, size):
        d = self.dist
        if d == "uniform":
            v = rng.uniform(self.low, self.high, size)
        elif d == "loguniform":
            v = np.exp(rng.uniform(np.log(self.low), np.log(self.high), size))
        elif d == "normal":
            v = rng.normal(self.mean, self.std, size)
        elif d == "randint":
            v = rng.integers(self.low, np.asarray(self.high) + 1, size)
        elif d == "bernoulli":
            v = (rng.random(size) < self.p).astype(np.int64)
        else:  # constant: one value, or one per element
            value = np.asarray(self.value, float)
            if not value.ndim:
                v = np.full(size, float(value)) if size else float(value)
            elif size and value.shape[0] in (1, size[0]):
                v = np.broadcast_to(value.reshape((-1,) + (1,) * (len(size) - 1)), size).copy()
            else:
                raise RandomizationError(f"{self.name}: the constant lists {value.shape[0]} values, for "
                                         f"{size[0] if size else 1} {self.info.shape}")
        if size is None and isinstance(v, np.ndarray):
            v = v.item()
        return v

    def bounds(self) -> tuple:
        return self.low, self.high


class Randomizer:
    """Named groups of randomized parameters; sample per episode and per step with a given rng."""

    def __init__(self, params: dict[str, ParamSpec], name: str = "custom"):
        self.params = dict(params)
        self.name = name

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, spec) -> "Randomizer":
        """From a preset name ("default", "stress", "off"; looked up in ./presets, $S2R_PATH, then the
        packaged presets: s2r.core.resources), a YAML path, a dict, or a Randomizer."""
        if isinstance(spec, Randomizer):
            return spec
        if spec is None:
            return cls({}, "off")
        if isinstance(spec, dict):
            return cls.from_dict(spec)
        if isinstance(spec, (str, Path)):
            path = Path(spec)
            if not path.suffix and not _exists(path):
                try:
                    path = resources.resolve("preset", spec)
                except resources.ResourceNotFound as e:
                    raise RandomizationError(f"unknown randomization preset {excerpt(str(spec))} (looked in: "
                                             f"{', '.join(e.looked_in)}; known: {', '.join(e.known)}; "
                                             f"or give a YAML path)") from None
            try:
                data = yamlio.load_file(path)
            except yamlio.ConfigError as e:
                raise RandomizationError(str(e)) from None
            try:
                return cls.from_dict(data or {}, name=path.stem)
            except RandomizationError as e:
                raise RandomizationError(f"{path}: {e}") from None
        raise RandomizationError(f"randomization must be a preset name, a path, a dict or a Randomizer, "
                                 f"got {type(spec).__name__}")

    @classmethod
    def from_dict(cls, data: dict, name: str = "custom") -> "Randomizer":
        """From a preset's mapping (`s2r.core.schema.randomization` validates it)."""
        try:
            specs = schema.parse_preset(data)
        except ConfigError as e:
            raise RandomizationError(f"{e.key}: {e.reason}" if e.key else e.reason) from None
        return cls({s["name"]: ParamSpec(**s) for s in specs}, name)

    # ------------------------------------------------------------------ use
    @property
    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for n in self.params:
            out.setdefault(PARAMETERS[n].group, []).append(n)
        return out

    def __bool__(self) -> bool:
        return bool(self.params)

    def has(self, name: str) -> bool:
        return name in self.params

    def per_step_names(self) -> list[str]:
        return [n for n, s in self.params.items() if s.mode == PER_STEP]

    def _size(self, name: str, dims: dict):
        shape = PARAMETERS[name].shape
        if shape == "scalar":
            return None
        if shape in ("vec2", "vec3"):
            return (int(shape[-1]),)
        if shape.endswith("3"):
            return (dims[shape[:-1]], 3)
        return (dims[shape],)

    def sample_episode(self, rng: np.random.Generator, dims: dict, pin: dict | None = None) -> dict:
        """All parameters (per-step ones get their first value). `pin` fixes values (ADR boundary tests)."""
        out = {}
        for name, spec in self.params.items():
            out[name] = spec.sample(rng, self._size(name, dims))
        for name, value in (pin or {}).items():
            if name not in self.params:
                raise RandomizationError(f"cannot pin {name!r}: it is not randomized by {self.name!r}")
            size = self._size(name, dims)
            out[name] = np.full(size, value, float) if size else value
        return out

    def sample_step(self, rng: np.random.Generator, dims: dict) -> dict:
        return {name: self.params[name].sample(rng, self._size(name, dims)) for name in self.per_step_names()}

    def sample_steps(self, rng: np.random.Generator, dims: dict, n: int) -> dict:
        """The per-step parameters for the next n steps at once: name -> array (n, *shape), row k
        being step k's value (one vectorized draw per parameter instead of one per step)."""
        out = {}
        for name in self.per_step_names():
            size = self._size(name, dims)
            out[name] = np.asarray(self.params[name].sample(rng, (n,) + (size or ())))
        return out

    def set_bounds(self, name: str, low, high) -> None:
        """Move a parameter's range (the ADR hook); the new range is validated like YAML input."""
        if name not in self.params:
            raise RandomizationError(f"{name}: not randomized by {self.name!r}")
        spec = self.params[name]
        if spec.dist not in ("uniform", "loguniform", "randint"):
            raise RandomizationError(f"{name}: only ranged distributions have bounds, this one is {spec.dist}")
        d = {"dist": spec.dist, "low": low, "high": high, "mode": spec.mode}
        self.params[name] = parse_param(name, spec.info.group, name, d)

    def describe(self) -> str:
        lines = [f"randomizer {self.name!r}:"]
        for g, names in self.groups.items():
            lines.append(f"  {g}:")
            for n in names:
                s = self.params[n]
                rng = {"uniform": f"U[{s.low}, {s.high}]", "loguniform": f"logU[{s.low}, {s.high}]",
                       "normal": f"N({s.mean}, {s.std})", "randint": f"int[{s.low}, {s.high}]",
                       "bernoulli": f"Bernoulli({s.p})", "constant": f"= {s.value}"}[s.dist]
                lines.append(f"    {n}: {rng} {s.mode}")
        return "\n".join(lines)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):      # a name too long for the file system, or with a NUL byte
        return False


def parse_param(key: str, group: str, name: str, d) -> ParamSpec:
    """One parameter's spec `d` (a mapping like {dist: uniform, low: .., high: ..}), validated as
    in a preset; every problem is a RandomizationError starting with the key path."""
    try:
        return ParamSpec(**schema.parse_param(key, group, name, d))
    except ConfigError as e:
        raise RandomizationError(f"{e.key}: {e.reason}") from None


# --------------------------------------------------------------------------------------------
class AutomaticDomainRandomization:
    """ADR (Akkaya et al. 2019, Alg. 1) over ranged parameters of a Randomizer.

    Each episode, with probability `boundary_prob`, one parameter is pinned to its low or high end
    (`next_pin`); the episode's success is reported back (`report`). When a boundary's buffer holds
    `buffer_size` results, its mean success is compared with the thresholds: at or above `t_high`
    the range widens by the parameter's step at that end, at or below `t_low` it narrows (never past
    the initial value), and the buffer is cleared.

    `delta`: the step, one number for every parameter or a dict per name; a loguniform range's ends
    move by the factor exp(delta), an integer parameter's (randint, e.g. `action_latency`) by whole
    values, at least 1; a positive uniform range keeps its low end one step above 0. `limits`: name -> (low,
    high) a range never widens past (e.g. the action latency the policy's inputs can represent),
    besides the parameter's own bound.
    """

    def __init__(self, randomizer: Randomizer, names, delta, buffer_size: int = 20,
                 t_low: float = 0.5, t_high: float = 0.8, boundary_prob: float = 0.5, limits: dict | None = None):
        if not 0 <= t_low < t_high <= 1:
            raise RandomizationError(f"ADR thresholds must satisfy 0 <= t_low < t_high <= 1, got {t_low}, {t_high}")
        self.names = list(names)
        steps = delta if isinstance(delta, dict) else {n: delta for n in self.names}
        if buffer_size < 1 or not 0 < boundary_prob <= 1:
            raise RandomizationError(f"ADR buffer_size must be >= 1 and boundary_prob in (0, 1], "
                                     f"got {buffer_size}, {boundary_prob}")
        self.r, self.buffer_size = randomizer, int(buffer_size)
        self.t_low, self.t_high, self.boundary_prob = t_low, t_high, boundary_prob
        self.limits = dict(limits or {})
        for n in self.names:
            spec = randomizer.params.get(n)
            if spec is None or spec.dist not in ADR_DISTRIBUTIONS or np.ndim(spec.low) or spec.mode != PER_EPISODE:
                raise RandomizationError(f"{n}: ADR needs a per-episode uniform, loguniform or randint parameter "
                                         f"with scalar bounds of the randomizer")
            if not (n in steps and np.isfinite(steps[n]) and steps[n] > 0):
                raise RandomizationError(f"{n}: ADR delta must be > 0, got {steps.get(n)}")
        self.delta = {n: max(1, round(float(steps[n]))) if randomizer.params[n].dist == "randint" else float(steps[n])
                      for n in self.names}
        self.initial = {n: randomizer.params[n].bounds() for n in self.names}
        self.buffers = {(n, end): deque() for n in self.names for end in ("low", "high")}

    @staticmethod
    def eligible(randomizer: Randomizer, dims: dict | None = None, groups=("dynamics", "timing")) -> list[str]:
        """The parameters of `groups` ADR can move: per-episode uniform, loguniform or randint with
        scalar bounds and a range to widen (low < high), applied to something (`dims`, the task's
        counts of joints, links, objects...: none where a parameter's count is 0)."""
        def applied(name):
            shape = PARAMETERS[name].shape.removesuffix("3")
            return dims is None or shape not in dims or dims[shape] > 0
        return [n for n, s in randomizer.params.items()
                if PARAMETERS[n].group in groups and s.dist in ADR_DISTRIBUTIONS and s.mode == PER_EPISODE
                and not np.ndim(s.low) and s.low < s.high and applied(n)]

    def next_pin(self, rng: np.random.Generator):
        """(pin dict for sample_episode, (name, end)) or ({}, None) for an ordinary episode."""
        if rng.random() >= self.boundary_prob:
            return {}, None
        name = self.names[int(rng.integers(len(self.names)))]
        end = "low" if rng.random() < 0.5 else "high"
        low, high = self.r.params[name].bounds()
        return {name: low if end == "low" else high}, (name, end)

    def report(self, boundary, success: bool) -> None:
        if boundary is None:
            return
        buf = self.buffers[tuple(boundary)]
        buf.append(float(success))
        if len(buf) < self.buffer_size:
            return
        mean = sum(buf) / len(buf)
        buf.clear()
        name, end = boundary
        spec = self.r.params[name]
        low, high = spec.bounds()
        low0, high0 = self.initial[name]
        step = self.delta[name]
        if spec.dist == "loguniform":           # ends move by factors: exp(step)
            low, high, low0, high0 = np.log(low), np.log(high), np.log(low0), np.log(high0)
        if mean >= self.t_high:
            low, high = (low - step, high) if end == "low" else (low, high + step)
        elif mean <= self.t_low:
            low, high = (min(low + step, low0), high) if end == "low" else (low, max(high - step, high0))
        if spec.dist == "loguniform":
            low, high = float(np.exp(low)), float(np.exp(high))
        elif spec.info.positive:
            low = max(low, step)                  # a positive range keeps its low end a step above 0
        if spec.info.nonneg:
            low = max(low, 0)
        lo_lim, hi_lim = self.limits.get(name, (-spec.info.limit, spec.info.limit))
        low = max(low, lo_lim, -spec.info.limit)        # widen up to the bounds, not past
        high = min(high, hi_lim, spec.info.limit)
        self.r.set_bounds(name, low, high)

    def bounds(self) -> dict:
        return {n: self.r.params[n].bounds() for n in self.names}

    def state_dict(self) -> dict:
        """The current ranges and the boundaries' pending results (a checkpoint's part)."""
        return {"bounds": {n: list(b) for n, b in self.bounds().items()},
                "buffers": {f"{n}:{end}": list(b) for (n, end), b in self.buffers.items()}}

    def load_state_dict(self, state: dict) -> None:
        for n, (low, high) in state["bounds"].items():
            if n in self.names:
                self.r.set_bounds(n, low, high)
        for key, values in state.get("buffers", {}).items():
            n, _, end = key.rpartition(":")
            if (n, end) in self.buffers:
                self.buffers[(n, end)] = deque(float(v) for v in values)


ADR_DISTRIBUTIONS = ("uniform", "loguniform", "randint")
