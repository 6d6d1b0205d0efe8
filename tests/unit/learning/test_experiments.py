"""Experiments as files: learning/experiments/*.yaml validate and build, `s2r train --experiment NAME
[KEY=VALUE ...]` overrides any field, bad input is one line (exit 2), and the run folder's
experiment.yaml gives the same run again."""
import json

import numpy as np
import pytest
import yaml

from s2r.learning.cli import _experiment, _train_parser, train_main
from s2r.learning.experiment import build_experiment, load_experiment
from s2r.core import resources
from s2r.core.yamlio import ConfigError

PACKAGED = sorted(p.stem for p in resources.packaged_dir("experiment").glob("*.yaml"))


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_the_recipes_are_packaged_and_found_by_name():
    assert {"reach_state", "reach_visuomotor", "insert_state", "reach_randomized"} <= set(PACKAGED)
    assert (resources.packaged_dir("experiment") / "RESULTS.md").is_file()
    assert resources.resolve("experiment", "insert_state") == resources.packaged_dir("experiment") / "insert_state.yaml"


@pytest.mark.parametrize("name", PACKAGED)
def test_every_packaged_experiment_builds_its_agent_and_algorithm_and_round_trips(name):
    """The file's fields reach the agent and the algorithm's config; its resolved form (what the run
    folder's experiment.yaml holds) loads back to the same run parameters and the same resolution."""
    from s2r.core.yamlio import load_file
    exp = load_experiment(name)
    raw = load_file(resources.resolve("experiment", name))
    agent, algo, meta, resolved = build_experiment(exp)
    try:
        cfg = algo.cfg
        assert (cfg.iterations, cfg.eval_episodes, cfg.seed) == (raw["iterations"], raw["eval_episodes"], raw["seed"])
        assert cfg.samples_per_condition == raw["samples"] and agent.n_conditions == raw["conditions"]
        assert cfg.policy_steps == raw.get("policy_steps", 400)
        for k, v in raw.get("gps", {}).items():
            assert getattr(cfg, k) == (tuple(v) if isinstance(v, list) else v), k      # YAML lists: tuples there
        weights = getattr(agent, "weights", None)
        for k, v in raw.get("agent", {}).items():
            assert resolved["agent"][k] == v and (weights is None or k not in weights or weights[k] == v)
        assert agent.images == raw.get("images", False) and (not agent.images or agent.image_size == raw["image_size"])
        assert meta["randomize"] == raw.get("randomize")
        if "obs_features" in raw:
            assert agent.obs_keys[-len(raw["obs_features"]):] == raw["obs_features"] == meta["obs_features"]
            assert meta["state_features"] == raw["state_features"]
    finally:
        agent.close()
    text = yaml.safe_dump(resolved, sort_keys=False)
    again = load_experiment(data=yaml.safe_load(text), file="experiment.yaml")
    agent2, _, meta2, resolved2 = build_experiment(again)
    agent2.close()
    assert json.dumps(meta2, sort_keys=True, default=str) == json.dumps(meta, sort_keys=True, default=str)
    assert resolved2 == resolved


def test_overrides_reach_every_section():
    exp = load_experiment("reach_state", ["iterations=3", "gps.kl_step=0.25", "agent.final_position_weight=100",
                                          "obs_features=[prev_action]", "conditions=2", "description="])
    assert (exp.iterations, exp.conditions, exp.description) == (3, 2, "")
    agent, algo, meta, resolved = build_experiment(exp)
    try:
        assert algo.cfg.kl_step == 0.25 and algo.cfg.iterations == 3 and agent.n_conditions == 2
        assert np.isclose(agent.cost.Q[-1][-1, -1], 100.0)          # the final step's position weight
        assert meta["agent"] == {"final_position_weight": 100} and meta["obs_features"] == ["prev_action"]
        assert resolved["agent"]["final_position_weight"] == 100 and resolved["agent"]["position_weight"] == 2.0
    finally:
        agent.close()


def test_the_options_are_overrides_of_the_tasks_experiment():
    """`s2r train gps --task ArmInsert --iterations 3` is insert_state.yaml with iterations=3."""
    exp, line = _experiment(_train_parser().parse_intermixed_args(["gps", "--task", "ArmInsert", "--iterations", "3"]))
    assert exp == load_experiment("insert_state", ["algorithm=gps", "task=ArmInsert", "iterations=3"])
    assert line == "experiment: insert_state; overrides: algorithm=gps task=ArmInsert iterations=3"
    exp, _ = _experiment(_train_parser().parse_intermixed_args(
        ["--experiment", "reach_state", "--randomize", "default", "--obs-features", "none", "seed=4"]))
    assert (exp.randomize, exp.obs_features, exp.state_features, exp.seed) == ("default", [], None, 4)
    plato, line = _experiment(_train_parser().parse_intermixed_args(["plato", "--task", "PointMass"]))
    assert plato.algorithm == "plato" and line.startswith("experiment: the defaults;")


def test_a_local_experiments_folder_comes_first(tmp_path, monkeypatch):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "reach_state.yaml").write_text("task: PointMass\niterations: 7\n")
    monkeypatch.chdir(tmp_path)
    exp = load_experiment("reach_state")
    assert (exp.task, exp.iterations, exp.conditions) == ("PointMass", 7, 4)


BAD_FILE = "task: PointMass\niterations: 0\n"


@pytest.mark.parametrize("argv, match", [
    (["--experiment", "reach_state", "gps.kl_step=-1"], "override gps.kl_step=-1: gps.kl_step: must be positive"),
    (["--experiment", "reach_state", "gps.klstep=1"], "override gps.klstep=1: gps.klstep: unknown key"),
    (["--experiment", "reach_state", "gps.iterations=3"], "gps.iterations: set at the top level: iterations"),
    (["--experiment", "reach_state", "agent.nope=1"], "agent.nope: not a keyword of ArmReachAgent"),
    (["--experiment", "reach_state", "agent.action_weight=[1]"], "agent.action_weight: expected a number"),
    (["--experiment", "reach_state", "agent.n_conditions=2"], "agent.n_conditions: set at the top level: conditions"),
    (["--experiment", "reach_state", "iterations=many"], "override iterations=many: iterations: expected an integer"),
    (["--experiment", "reach_state", "samples=1"], "override samples=1: samples: must be in [2, "),
    (["--experiment", "reach_state", "iterations.x=1"], "iterations: not a section"),
    (["--experiment", "reach_state", "iterations"], "invalid choice 'iterations'"),
    (["--experiment", "reach_state", "2x=1"], "expected KEY=VALUE"),
    (["--experiment", "insert_state", "algorithm=plato"], "gps: a gps section, but algorithm is plato"),
    (["--experiment", "insert_state", "task=ArmReach"], "agent.approach_height: not a keyword of ArmReachAgent"),
    (["--experiment", "no_such_recipe"], "no_such_recipe: file not found (experiment;"),
    (["--experiment", "BAD"], "bad.yaml: iterations: must be in [1, "),
    (["--experiment", "BAD", "iterations=2", "itertions=3"], "override itertions=3: itertions: unknown key"),
    (["--experiment", "BAD", "seed=3"], "bad.yaml: iterations: must be in [1, "),
    (["gps", "--task", "PointMass", "--samples", "1"], "override --samples 1: samples: must be in [2, "),
    ([], "give --experiment NAME"),
])
def test_bad_experiments_and_overrides_are_one_line(argv, match, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_FILE)
    argv = [str(bad) if a == "BAD" else a for a in argv]
    assert train_main(argv) == 2
    assert match in _one_line(capsys)


def test_load_experiment_refuses_what_is_not_a_mapping(tmp_path):
    (tmp_path / "list.yaml").write_text("- iterations: 3\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping of experiment fields"):
        load_experiment(str(tmp_path / "list.yaml"))


POINTMASS = {"description": "tiny", "task": "PointMass", "iterations": 1, "conditions": 2, "samples": 3,
             "eval_episodes": 2, "policy_steps": 30, "agent": {"T": 20}}


def test_the_run_folder_records_the_resolved_experiment_and_resume_reuses_it(tmp_path, capsys):
    from s2r.learning.train import check_parameters, read_checkpoint
    path = tmp_path / "pm.yaml"
    path.write_text(yaml.safe_dump(POINTMASS))
    run = tmp_path / "run"
    assert train_main(["--experiment", str(path), "gps.kl_step=0.4", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"experiment: {path}; overrides: gps.kl_step=0.4" in out
    recorded = yaml.safe_load((run / "experiment.yaml").read_text())
    assert recorded["gps"]["kl_step"] == 0.4 and recorded["agent"]["T"] == 20 and recorded["policy_steps"] == 30
    assert recorded["gps"]["max_clusters"] == 20 and "plato" not in recorded     # every field of the run's
    ck = read_checkpoint(run)
    assert ck.meta["agent"] == {"T": 20} and ck.meta["config"]["kl_step"] == 0.4
    # re-running the recorded experiment gives the same run parameters
    agent, _, meta, resolved = build_experiment(load_experiment(str(run / "experiment.yaml")))
    agent.close()
    assert check_parameters(ck, meta) == {} and resolved == recorded
    # --resume alone reuses it; a changed iteration count is allowed, a changed cost weight is not
    assert train_main(["--resume", str(run), "agent.T=30"]) == 2
    assert "agent.T 20 -> 30" in _one_line(capsys)
    assert train_main(["--resume", str(run), "iterations=2"]) == 0
    out = capsys.readouterr().out
    assert f"experiment: {run / 'experiment.yaml'}; overrides: iterations=2" in out and "resuming" in out
    assert yaml.safe_load((run / "experiment.yaml").read_text())["iterations"] == 2
    assert [h["iteration"] for h in json.loads((run / "history.json").read_text()) if "iteration" in h] == [1, 2]


def test_resume_without_an_experiment_file_says_so(tmp_path, capsys):
    from s2r.learning.gps import MDGPS, GPSConfig
    from s2r.learning.agents import PointMassAgent
    from s2r.learning.train import save_checkpoint
    run = tmp_path / "old"
    run.mkdir()
    save_checkpoint(run / "checkpoint.pt", MDGPS(PointMassAgent(), GPSConfig(iterations=1)), {"task": "PointMass"})
    assert train_main(["--resume", str(run)]) == 2
    assert "no experiment.yaml there" in _one_line(capsys)


def test_s2r_schema_experiment_prints_every_section(capsys):
    from s2r.cli import main
    assert main(["schema", "experiment"]) == 0
    schema = json.loads(capsys.readouterr().out)
    props = schema["properties"]
    assert {"algorithm", "task", "iterations", "obs_features", "agent", "gps", "plato"} <= set(props)
    assert props["iterations"]["default"] == 10 and props["iterations"]["minimum"] == 1
    gps = schema["$defs"]["GPSSection"]
    assert gps["properties"]["kl_step"]["default"] == 0.5 and gps["additionalProperties"] is False
    assert "iterations" not in gps["properties"]          # set at the top level
    assert "mpc_horizon" in schema["$defs"]["PLATOSection"]["properties"]
    from s2r.core.yamlio import load_file
    for name in PACKAGED:              # what an editor checking the files against it would see
        raw = load_file(resources.resolve("experiment", name))
        assert set(raw) <= set(props) and set(raw.get("gps", {})) <= set(gps["properties"]), name
