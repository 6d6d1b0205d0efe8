"""Experiments: a training run as a YAML recipe (s2r/core/schema/experiment.py), built into its
agent and algorithm (`build_experiment`), and the run parameters its checkpoints record
(`s2r train`: learning/cli.py).

A training run is an experiment: a YAML recipe found
by name like every file kind (./experiments, $S2R_PATH/experiments, the packaged
learning/experiments; or a path), whose fields KEY=VALUE overrides replace (dotted into a section:
gps.kl_step=0.5, agent.final_position_weight=100; values are YAML). `s2r train gps|plato [options]`
is the same with the task's experiment (TASK_EXPERIMENTS: reach_state, reach_visuomotor,
insert_state, hand_reach, hand_grasp_lift; none: the defaults) and the options as overrides. The
command prints which experiment
and which overrides it runs; the run folder's experiment.yaml is the resolved experiment (every
field, the agent's constructor defaults and the algorithm's config included), which `--resume RUN`
alone runs again and `--experiment RUN/experiment.yaml` repeats.

Run parameters. Every checkpoint records the run's parameters (`build_experiment`'s meta): algorithm, task,
images, image_size, randomize (the name or path) and randomization (the preset's resolved
parameters, so an edited preset file counts as a change), conditions, seed, policy (the network's
architecture), resample_conditions (--fixed-conditions), samples (gps), eval_episodes,
policy_steps (the effective value), iterations, config (every other
field of the algorithm's configuration) and, where given, obs_features and state_features (the
opt-in inputs of the policy and of the local controllers, learning/features.py), hardware_config,
and agent (the agent's constructor keywords that differ from its defaults, e.g. a cost weight).
`--resume` takes the parameters from its experiment like a new run and compares them with the
checkpoint's:
  - iterations may change (extend a run, or stop it earlier than planned, but not below the
    iterations already done): it only says where the loop ends, not what an iteration does; the
    change is recorded in history.json as {"event": "resume", "after_iteration": k,
    "changed": {"iterations": {"from": old, "to": new}}} and in the checkpoints that follow.
  - every other parameter changes the algorithm's state or its results (what is sampled, evaluated,
    trained or randomized), so a resume that changes one would no longer continue the killed run:
    it is refused in one line naming each changed parameter with its old and new value (exit 2).
"""
from __future__ import annotations

import functools

__all__ = ["EXPERIMENT_FILE", "MAY_CHANGE_ON_RESUME", "OPTIONS", "TASK_EXPERIMENTS", "build_experiment",
           "experiment_model", "keys", "load_experiment"]

MAY_CHANGE_ON_RESUME = ("iterations", "config.export_policy")     # the latter changes only the export
# configuration fields that meta records under their command-line names
_CLI_FIELDS = ("iterations", "samples_per_condition", "episodes_per_iteration", "eval_episodes", "policy_steps",
               "seed", "resample_conditions")

# the algorithm configurations' fields an experiment sets at its top level: field -> experiment key
GPS_TOP_LEVEL = {"iterations": "iterations", "samples_per_condition": "samples", "eval_episodes": "eval_episodes",
                 "policy_steps": "policy_steps", "seed": "seed", "resample_conditions": "fixed_conditions"}
PLATO_TOP_LEVEL = {"iterations": "iterations", "episodes_per_iteration": "conditions",
                   "eval_episodes": "eval_episodes", "policy_steps": "policy_steps", "seed": "seed"}
# the agents' constructor keywords an experiment sets at its top level: keyword -> experiment key
AGENT_TOP_LEVEL = {"images": "images", "image_size": "image_size", "randomization": "randomize",
                   "n_conditions": "conditions", "obs_features": "obs_features", "state_features": "state_features",
                   "config": "config"}
# the experiment `s2r train gps|plato [options]` starts from, by (algorithm, task, images): the task's
# recipe; the options override it (no entry: the experiment defaults)
TASK_EXPERIMENTS = {("gps", "s2r/ArmReach-v0", False): "reach_state",
                    ("gps", "s2r/ArmReach-v0", True): "reach_visuomotor",
                    ("gps", "s2r/ArmInsert-v0", False): "insert_state",
                    ("gps", "s2r/HandReach-v0", False): "hand_reach",
                    ("gps", "s2r/HandGraspLift-v0", False): "hand_grasp_lift"}
EXPERIMENT_FILE = "experiment.yaml"      # the run folder's resolved experiment
# command-line option -> experiment field (the options are overrides of the experiment)
OPTIONS = {"task": "task", "config": "config", "images": "images", "image_size": "image_size",
            "randomize": "randomize", "iterations": "iterations", "conditions": "conditions", "samples": "samples",
            "fixed_conditions": "fixed_conditions", "eval_episodes": "eval_episodes",
            "policy_steps": "policy_steps", "seed": "seed", "obs_features": "obs_features",
            "state_features": "state_features", "adr": "gps.adr"}


@functools.cache
def experiment_model():
    """The experiment schema with its `gps:` and `plato:` sections typed from GPSConfig and
    PLATOConfig (s2r.core.schema.experiment; `s2r schema experiment` prints it)."""
    from s2r.core.schema.experiment import experiment_model as make

    from .gps_config import GPSConfig
    from .plato import PLATOConfig
    return make({"gps": (GPSConfig, GPS_TOP_LEVEL), "plato": (PLATOConfig, PLATO_TOP_LEVEL)})


def load_experiment(name=None, overrides=(), *, data=None, file: str | None = None):
    """The experiment `name` (a name in s2r.core.resources' lookup order, or a path; None: `data`,
    a parsed experiment, or the defaults) with `overrides` applied ("KEY=VALUE" strings, or
    (key, value, label) triples), validated, its agent keywords and algorithm section checked
    too. Every problem is one ConfigError naming the file or the override, and the key."""
    from s2r.core.resources import resolve
    from s2r.core.schema.experiment import load_experiment as load
    from s2r.core.schema.experiment import parse_overrides
    from s2r.core.yamlio import load_file
    items = [o if isinstance(o, tuple) else parse_overrides([o])[0] for o in overrides]
    if name is not None:
        path = resolve("experiment", name)
        data, file = load_file(path), str(path)
    return load(data, file or "experiment defaults", items, experiment_model(), check=_check_experiment)


def _check_experiment(exp) -> None:
    """What the schema cannot check alone: the agent keywords against the task's agent's
    constructor, the algorithm section's values (its config's `validate`)."""
    _agent_keywords(exp)
    _algorithm_config(exp, resample=False)


def _agent_class(exp):
    from .registry import GPS_TASKS, task_id
    return GPS_TASKS.get(task_id(exp.task))


def _agent_parameters(cls) -> dict:
    """The agent's constructor keywords an experiment's `agent:` may set, with their defaults."""
    import inspect
    return {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
            if n != "self" and n not in AGENT_TOP_LEVEL and p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _agent_keywords(exp) -> dict:
    """`agent:` checked against the task's agent's constructor: known keywords of the right type."""
    import typing

    from pydantic import ConfigDict, TypeAdapter, ValidationError

    from s2r.core.schema.errors import reason
    from s2r.core.yamlio import ConfigError
    cls = _agent_class(exp)
    if cls is None:            # an unknown task: make_agent says so
        return dict(exp.agent)
    known = _agent_parameters(cls)
    hints = typing.get_type_hints(cls.__init__)
    for key, value in exp.agent.items():
        if key in AGENT_TOP_LEVEL:
            raise ConfigError("", f"agent.{key}", f"set at the top level: {AGENT_TOP_LEVEL[key]}")
        if key not in known:
            raise ConfigError("", f"agent.{key}", f"not a keyword of {cls.__name__} (its keywords: {', '.join(known)})")
        if key in hints:
            try:
                TypeAdapter(hints[key], config=ConfigDict(strict=True)).validate_python(value)
            except ValidationError as e:
                raise ConfigError("", f"agent.{key}", reason(e.errors(include_url=False)[0])) from None
    return dict(exp.agent)


def _algorithm_config(exp, resample: bool):
    """The GPSConfig / PLATOConfig of the experiment (its section and top-level fields), validated:
    a value the config refuses is a ConfigError at `gps.FIELD` (or `plato.FIELD`)."""
    from s2r.core.yamlio import ConfigError
    section = exp.section()
    steps = {"policy_steps": exp.policy_steps} if exp.policy_steps else {}
    if exp.algorithm == "gps":
        from .gps_config import GPSConfig
        cfg = GPSConfig(**section, iterations=exp.iterations, samples_per_condition=exp.samples,
                        eval_episodes=exp.eval_episodes, seed=exp.seed, resample_conditions=resample, **steps)
    else:
        from .plato import PLATOConfig
        cfg = PLATOConfig(**section, iterations=exp.iterations, episodes_per_iteration=exp.conditions,
                          eval_episodes=exp.eval_episodes, seed=exp.seed, **steps)
    try:
        return cfg.validate()
    except ValueError as e:
        field, _, rest = str(e).partition(" ")
        if field in section:
            raise ConfigError("", f"{exp.algorithm}.{field}", rest) from None
        raise ConfigError("", exp.algorithm, str(e)) from None


def build_experiment(exp):
    """The agent and the algorithm of an experiment, the run parameters checkpoints record
    (`_run_parameters`) and the resolved experiment (every field, as experiment.yaml holds it:
    loading that gives the same run)."""
    from dataclasses import asdict

    from s2r.core import resources

    from .registry import default_inputs, make_agent
    # the files it names, as a resume or an evaluation in another directory finds them again
    exp = exp.model_copy(update={k: resources.portable(kind, getattr(exp, k)) for k, kind in
                                 (("config", "hardware_config"), ("randomize", "preset")) if getattr(exp, k)})
    obs, state = exp.obs_features, exp.state_features
    if obs is None and state is None:
        # the inputs the task needs by default (registry.default_inputs)
        try:
            adr = exp.section().get("adr") if exp.algorithm == "gps" else None
            obs, state = default_inputs(exp.task, exp.randomize, adr=adr)
        except ValueError as e:
            raise ValueError(f"randomize {exp.randomize}: {e}") from None
    obs, state = list(obs or []), list(state or [])
    agent_kw = _agent_keywords(exp)
    kw = {"n_conditions": exp.conditions} | ({"obs_features": obs} if obs else {}) | \
        ({"state_features": state} if state else {}) | ({"config": exp.config} if exp.config else {})
    agent = make_agent(exp.task, images=exp.images, image_size=exp.image_size, randomization=exp.randomize,
                       **kw, **agent_kw)
    try:
        cfg = _algorithm_config(exp, resample=hasattr(agent, "resample") and not exp.fixed_conditions)
        if exp.algorithm == "gps":
            from .gps import MDGPS
            algo = MDGPS(agent, cfg)
        else:
            from .plato import PLATO
            algo = PLATO(agent, cfg)
    except BaseException:
        agent.close()
        raise
    defaults = _agent_parameters(type(agent)) if _agent_class(exp) is not None else {}
    top = GPS_TOP_LEVEL if exp.algorithm == "gps" else PLATO_TOP_LEVEL
    resolved = exp.model_dump(mode="json", exclude={a for a in ("gps", "plato") if a != exp.algorithm})
    resolved |= {"obs_features": obs, "state_features": state, "policy_steps": cfg.policy_steps,
                 "agent": _plain({k: v for k, v in defaults.items() if _is_plain(v)} | agent_kw),
                 exp.algorithm: _plain({k: v for k, v in asdict(cfg).items() if k not in top})}
    changed = {k: v for k, v in agent_kw.items() if defaults.get(k, object()) != v}
    return agent, algo, _run_parameters(exp, obs, state, changed, agent, algo), resolved


def _is_plain(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str)) or \
        (isinstance(v, (tuple, list)) and all(_is_plain(x) for x in v))


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def keys(text) -> list[str]:
    return [k.strip() for k in str(text or "").split(",") if k.strip()]


def _run_parameters(exp, obs, state, agent_kw, agent, algo) -> dict:
    """The run's parameters as checkpoints record them (see the module docstring)."""
    from dataclasses import asdict

    from .registry import task_id
    cfg = algo.cfg
    randomizer = getattr(getattr(agent, "env", None), "randomizer", None)
    # opt-in entries only where given: runs without them keep the parameters they always had
    extra = {name: keys for name, keys in (("obs_features", obs), ("state_features", state)) if keys}
    if exp.config:
        extra["hardware_config"] = exp.config
    if agent_kw:
        extra["agent"] = agent_kw       # constructor keywords that differ from the agent's defaults
    return extra | {"algorithm": exp.algorithm, "task": task_id(exp.task), "images": bool(exp.images),
            "image_size": exp.image_size if exp.images else None, "randomize": exp.randomize,
            "randomization": {n: asdict(s) for n, s in sorted(randomizer.params.items())} if randomizer else None,
            "conditions": exp.conditions, "seed": cfg.seed, "policy": algo.policy.config(),
            "resample_conditions": bool(getattr(cfg, "resample_conditions", False)),
            "samples": getattr(cfg, "samples_per_condition", None), "eval_episodes": cfg.eval_episodes,
            "policy_steps": cfg.policy_steps, "iterations": cfg.iterations,
            "config": {k: v for k, v in asdict(cfg).items() if k not in _CLI_FIELDS}}


