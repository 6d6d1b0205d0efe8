"""Robustness curves: one randomization parameter swept over a range, success and final distance
against it (the plots of Peng et al. 2018, "Sim-to-Real Transfer of Robotic Control with Dynamics
Randomization", and OpenAI et al. 2019, "Solving Rubik's Cube with a Robot Hand").

`s2r eval POLICY --task T --sweep PARAM=LOW:HIGH[:N]` (learning/cli.py) evaluates the policy at N
values of PARAM (default 5), each on the same held-out episodes (the same seeds), so the points of
the curve are paired: a difference between two points is the parameter's effect, not a different
draw of starts and noise.

- PARAM is any `sim.randomization.PARAMETERS` entry (dynamics, timing, noise, visuals, unmodeled).
  At every point it is a constant (`{dist: constant, value: V}`, per episode) on top of the eval's
  `--randomize` preset (or of no randomization): the preset's other parameters stay as they are.
- A vector-shaped parameter (per joint, link, object, action dimension, axis, surface) takes the
  swept scalar in every component: `backlash=0:0.05` gives every joint the same play.
- Spacing is linear; `PARAM=log:LOW:HIGH[:N]` spaces the values geometrically (LOW > 0), for
  scales (`link_mass_scale=log:0.25:4:9` puts 1 in the middle) and the x axis is then logarithmic.
- An integer parameter (`action_latency`, `sensor_delay`, ...) takes whole-number LOW and HIGH and
  sweeps the rounded values, duplicates dropped (`sensor_delay=0:3:10` evaluates 0, 1, 2, 3).

Bad input (unknown parameter, a range that is empty or reversed, N < 2, a non-number, a value the
parameter cannot take as a constant: a non-positive scale, a negative friction, beyond its
`ParamInfo.limit`) raises `SweepError` naming it; the CLI prints it in one line (exit 2).

Output (`write_csv`, `plot_sweep`): a CSV with one row per value (the value, the success rate with
its 95% Wilson interval, the mean and standard deviation of the final distance, successes and
episodes) and a PNG with two panels against the parameter: success with its Wilson band, and the
final distance (mean and every episode).
"""
from __future__ import annotations

import csv
import difflib
import io
import math
import textwrap
from dataclasses import dataclass, field

import numpy as np

from s2r.sim.randomization import PARAMETERS, PER_EPISODE, ParamSpec, RandomizationError, Randomizer, parse_param

__all__ = ["SweepError", "Sweep", "SweepPoint", "parse_sweep", "constant_spec", "with_constant",
           "check_applies", "write_csv", "plot_sweep", "CSV_COLUMNS"]

DEFAULT_POINTS = 5
MAX_POINTS = 1000
CSV_COLUMNS = ("success", "ci_low", "ci_high", "mean_final_distance", "std_final_distance", "successes", "episodes")
_SYNTAX = "expected PARAM=LOW:HIGH[:N] or PARAM=log:LOW:HIGH[:N]"


class SweepError(ValueError):
    """A bad --sweep; the message starts with `--sweep` and names the offending part."""


@dataclass(frozen=True)
class Sweep:
    name: str
    low: float
    high: float
    n: int                     # points asked for (an integer parameter may end with fewer values)
    log: bool = False
    values: tuple = field(default=())

    @property
    def info(self):
        return PARAMETERS[self.name]

    def label(self) -> str:
        """The x axis label: the name, which components take the value, and the parameter's doc
        (which carries its units)."""
        shape = self.info.shape
        where = "" if shape == "scalar" else f" (every {_COMPONENT.get(shape, 'component')})"
        return "\n".join(textwrap.wrap(f"{self.name}{where}: {self.info.doc}", 80))


_COMPONENT = {"joints": "joint", "links": "link", "objects": "object", "objects3": "object and axis",
              "action": "action dimension", "surfaces": "surface", "surfaces3": "surface and channel",
              "vec2": "component", "vec3": "component"}


@dataclass(frozen=True)
class SweepPoint:
    """One value's evaluation: paired with every other point by its episodes' seeds."""
    value: float
    successes: int
    distances: tuple            # final distance of each episode (nan where the task reports none)
    ci_low: float
    ci_high: float

    @property
    def episodes(self) -> int:
        return len(self.distances)

    @property
    def success(self) -> float:
        return self.successes / self.episodes if self.episodes else float("nan")

    @property
    def mean_distance(self) -> float:
        d = np.asarray(self.distances, float)
        return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")

    @property
    def std_distance(self) -> float:
        d = np.asarray(self.distances, float)
        return float(np.nanstd(d)) if np.isfinite(d).any() else float("nan")


def _number(text: str, what: str, whole: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise SweepError(f"--sweep {whole}: {what} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise SweepError(f"--sweep {whole}: {what} must be finite, got {text!r}")
    return v


def parse_sweep(text: str) -> Sweep:
    """`PARAM=LOW:HIGH[:N]` or `PARAM=log:LOW:HIGH[:N]`, validated, with its values computed."""
    whole = str(text).strip()
    name, eq, rng = whole.partition("=")
    name = name.strip()
    if not eq or not name or not rng.strip():
        raise SweepError(f"--sweep {whole!r}: {_SYNTAX}")
    if name not in PARAMETERS:
        close = difflib.get_close_matches(name, PARAMETERS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise SweepError(f"--sweep {whole}: unknown parameter {name!r} ({hint}known: {', '.join(sorted(PARAMETERS))})")
    parts = [s.strip() for s in rng.split(":")]
    log = parts[0].lower() == "log"
    if log:
        parts = parts[1:]
    if len(parts) not in (2, 3):
        raise SweepError(f"--sweep {whole}: {_SYNTAX}")
    low, high = _number(parts[0], "LOW", whole), _number(parts[1], "HIGH", whole)
    n = DEFAULT_POINTS
    if len(parts) == 3:
        try:
            n = int(parts[2])
        except ValueError:
            raise SweepError(f"--sweep {whole}: N {parts[2]!r} is not a whole number") from None
    if not 2 <= n <= MAX_POINTS:
        raise SweepError(f"--sweep {whole}: N must be 2..{MAX_POINTS}, got {n}")
    if not low < high:
        raise SweepError(f"--sweep {whole}: empty or reversed range: LOW {low:g} must be below HIGH {high:g}")
    info = PARAMETERS[name]
    if log and low <= 0:
        raise SweepError(f"--sweep {whole}: log spacing needs LOW > 0, got {low:g}")
    if info.integer and not (low.is_integer() and high.is_integer()):
        raise SweepError(f"--sweep {whole}: {name} takes whole numbers: LOW and HIGH must be integers")
    for what, v in (("LOW", low), ("HIGH", high)):
        if abs(v) > info.limit:
            raise SweepError(f"--sweep {whole}: {what} {v:g} is beyond {name}'s bound +-{info.limit:g}")
    if info.positive and low <= 0:
        raise SweepError(f"--sweep {whole}: {name} must stay positive (a scale or coefficient), LOW is {low:g}")
    if info.nonneg and low < 0:
        raise SweepError(f"--sweep {whole}: {name} must not be negative, LOW is {low:g}")
    values = np.geomspace(low, high, n) if log else np.linspace(low, high, n)
    if info.integer:       # round half up, drop duplicates (np.unique also sorts)
        values = np.unique(np.floor(values + 0.5))
    sweep = Sweep(name, low, high, n, log, tuple(float(v) for v in values))
    for v in sweep.values:         # the simulator's own validation of each constant, as a last word
        try:
            constant_spec(name, v)
        except RandomizationError as e:
            raise SweepError(f"--sweep {whole}: {name} = {v:g}: {e}") from None
    return sweep


def constant_spec(name: str, value: float) -> ParamSpec:
    """`name` held at `value` (broadcast to the parameter's shape), per episode, validated like a
    preset entry. (A candidate for sim/randomization.py, next to `parse_param`.)"""
    info = PARAMETERS[name]
    return parse_param(name, info.group, name, {"dist": "constant", "value": float(value), "mode": PER_EPISODE})


def with_constant(base, name: str, value: float) -> Randomizer:
    """A copy of the randomizer `base` (anything `Randomizer.load` takes: a preset name, a path, a
    dict, None) with `name` held at `value`. The parameter keeps its place among the preset's (the
    order the episode's values are drawn in), so the other parameters' draws are the same at every
    value of a sweep."""
    r = Randomizer.load(base)
    params = dict(r.params)
    params[name] = constant_spec(name, value)
    suffix = f"{name}={value:g}"
    return Randomizer(params, f"{r.name}+{suffix}" if r else suffix)


def check_applies(sweep: Sweep, dims: dict, task: str) -> None:
    """Refuse a sweep of a parameter that has nothing to act on in this task (object parameters on
    a task without objects): every point would be the same evaluation."""
    shape = sweep.info.shape
    key = shape[:-1] if shape.endswith("3") and shape != "vec3" else shape
    if key in dims and not dims[key]:
        raise SweepError(f"--sweep {sweep.name}: {task} has no {key}, so {sweep.name} would change nothing")


def _value_text(sweep: Sweep, v: float) -> str:
    return str(int(v)) if sweep.info.integer else f"{v:.6g}"


def write_csv(sweep: Sweep, points: list[SweepPoint]) -> bytes:
    """The CSV's bytes: a header naming the parameter, then one row per value."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow((sweep.name, *CSV_COLUMNS))
    for p in points:
        w.writerow((_value_text(sweep, p.value), f"{p.success:.6g}", f"{p.ci_low:.6g}", f"{p.ci_high:.6g}",
                    f"{p.mean_distance:.6g}", f"{p.std_distance:.6g}", p.successes, p.episodes))
    return buf.getvalue().encode()


def _legend_below(ax) -> None:
    """Under the axes, off the data (the curves may run anywhere in the panel)."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8, frameon=False)


def plot_sweep(sweep: Sweep, points: list[SweepPoint], title: str, success_distance: float | None = None) -> bytes:
    """The PNG's bytes: success (%) with its 95% Wilson band, and the final distance (mean, and each
    episode as a dot), against the parameter."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter
    x = np.array([p.value for p in points])
    n = points[0].episodes if points else 0
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5))
    ax1.fill_between(x, [100 * p.ci_low for p in points], [100 * p.ci_high for p in points], color="tab:green",
                     alpha=0.2, label="95% Wilson interval")
    ax1.plot(x, [100 * p.success for p in points], "o-", color="tab:green", label=f"success ({n} episodes per value)")
    ax1.set_ylim(-5, 105)
    ax1.set_ylabel("success (%)")
    ax1.set_title("success")
    _legend_below(ax1)
    dist = np.array([p.distances for p in points], float) if points else np.zeros((0, 0))
    if np.isfinite(dist).any():
        for j in range(dist.shape[1]):
            ax2.plot(x, dist[:, j], ".", color="tab:blue", alpha=0.25, ms=5,
                     label="episodes (same seeds at every value)" if j == 0 else None)
        ax2.plot(x, [p.mean_distance for p in points], "o-", color="tab:blue", label="mean")
        if success_distance is not None:
            ax2.axhline(success_distance, color="tab:gray", ls="--", lw=1,
                        label=f"success below {success_distance:g} m")
        ax2.set_ylim(bottom=0)
        _legend_below(ax2)
    else:
        ax2.text(0.5, 0.5, "the task reports no final distance", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_ylabel("final distance (m)")
    ax2.set_title("final distance")
    for ax in (ax1, ax2):
        if sweep.log:      # plain numbers at the swept values (or matplotlib's decades when there are many)
            ax.set_xscale("log")
            if len(x) <= 9:
                ax.set_xticks(x)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        elif sweep.info.integer:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(sweep.label(), fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
