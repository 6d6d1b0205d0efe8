"""`s2r train` / `s2r eval` entry points: bad input gives one line and a nonzero exit, never a traceback."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from s2r.learning.cli import eval_main, train_main


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    return err


@pytest.mark.parametrize("argv, match", [
    (["gps", "--task", "Nope"], "no GPS agent"),
    (["gps", "--task", "PointMass", "--images"], "no camera"),
    (["gps", "--task", "PointMass", "--iterations", "0"], "--iterations"),
    (["gps", "--task", "PointMass", "--samples", "1"], "--samples"),
    (["sac"], "invalid choice"),
    (["gps", "--resume", "/nonexistent/run"], "no checkpoint.pt"),
    (["plato", "--task", "ArmInsert"], "no MPC teacher"),
    (["gps", "--task", "ArmReach", "--obs-features", "prev_action,joint_torque"], "unknown obs key 'joint_torque'"),
    (["gps", "--task", "ArmReach", "--state-features", "prev_action@hist0"], "history length must be 1..100"),
    (["gps", "--task", "PointMass", "--obs-features", "prev_action"], "PointMass takes no extra"),
])
def test_train_bad_arguments(argv, match, capsys):
    assert train_main(argv) == 2
    assert match in _one_line(capsys)


POINTMASS = ["--task", "PointMass", "--conditions", "2", "--samples", "3", "--eval-episodes", "2",
             "--policy-steps", "30"]


@pytest.fixture(scope="module")
def one_iteration_run(tmp_path_factory):
    """A finished 1-iteration gps run on the point mass; tests resume copies of it."""
    run = tmp_path_factory.mktemp("train") / "run"
    assert train_main(["gps", *POINTMASS, "--iterations", "1", "--run-dir", str(run)]) == 0
    return run


def _copy(run, tmp_path):
    import shutil
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_train_writes_checkpoint_plot_export_and_refuses_a_foreign_resume(one_iteration_run, tmp_path, capsys):
    run = _copy(one_iteration_run, tmp_path)
    for f in ("checkpoint.pt", "history.json", "training.png", "policy.pt2", "policy.onnx"):
        assert (run / f).stat().st_size > 0
    assert not (run / "policy.pt").exists()           # TorchScript only when asked for (--export pt)
    assert json.loads((run / "history.json").read_text())[0]["iteration"] == 1
    capsys.readouterr()
    assert train_main(["plato", *POINTMASS, "--resume", str(run)]) == 2
    assert "algorithm 'gps' -> 'plato' (" in _one_line(capsys)
    assert train_main(["gps", *POINTMASS, "--conditions", "3", "--resume", str(run)]) == 2
    assert "conditions 2 -> 3" in _one_line(capsys)
    (run / "checkpoint.pt").write_bytes(b"garbage")
    assert train_main(["gps", *POINTMASS, "--resume", str(run)]) == 2
    assert "not an s2r training checkpoint" in _one_line(capsys)


def test_export_formats_are_chosen_and_checked_before_training(tmp_path, capsys):
    import warnings

    from s2r.learning.deploy import load_policy
    run = tmp_path / "run"
    with warnings.catch_warnings():                   # TorchScript is deprecated by torch; asked for here
        warnings.simplefilter("ignore", DeprecationWarning)
        assert train_main(["gps", *POINTMASS, "--iterations", "1", "--run-dir", str(run), "--export", "pt"]) == 0
        assert {p.name for p in run.glob("policy*")} == {"policy.pt"}
        assert f"->  {run}/policy.pt, " in capsys.readouterr().out
        _, meta = load_policy(run / "policy.pt")
    assert meta["task"] == "PointMass"
    assert train_main(["gps", *POINTMASS, "--iterations", "1", "--run-dir", str(tmp_path / "r2"),
                       "--export", "onnx,png"]) == 2
    assert "--export 'onnx,png': unknown format png (known: onnx, pt2, pt)" in _one_line(capsys)
    assert not (tmp_path / "r2").exists()             # refused before anything was made


def test_resume_refuses_a_damaged_checkpoint_and_changed_run_parameters(one_iteration_run, tmp_path, capsys):
    run = _copy(one_iteration_run, tmp_path)
    before = (run / "history.json").read_bytes()
    capsys.readouterr()
    for argv, named in ((["--samples", "4"], "samples 3 -> 4"),
                        (["--eval-episodes", "3", "--seed", "1"], "eval_episodes 2 -> 3, seed 0 -> 1"),
                        (["--policy-steps", "50"], "policy_steps 30 -> 50")):
        assert train_main(["gps", *POINTMASS, *argv, "--iterations", "2", "--resume", str(run)]) == 2
        line = _one_line(capsys)
        assert line.startswith(f"s2r train: error: {run / 'checkpoint.pt'}: this run's parameters differ") and \
            named + " (" in line
    raw = bytearray((run / "checkpoint.pt").read_bytes())
    raw[len(raw) // 2] ^= 0x08
    (run / "checkpoint.pt").write_bytes(bytes(raw))
    assert train_main(["gps", *POINTMASS, "--resume", str(run)]) == 2
    assert "checkpoint.pt: checksum mismatch: the file is damaged (" in _one_line(capsys)
    assert (run / "history.json").read_bytes() == before          # nothing ran, nothing was recorded


def test_resume_with_more_iterations_records_the_change_and_matches_an_uninterrupted_run(
        one_iteration_run, tmp_path, capsys):
    from s2r.learning.train import read_checkpoint
    run = _copy(one_iteration_run, tmp_path)
    assert train_main(["gps", *POINTMASS, "--iterations", "2", "--resume", str(run)]) == 0
    assert "resuming" in capsys.readouterr().out
    hist = json.loads((run / "history.json").read_text())
    assert [h.get("iteration", h.get("event")) for h in hist] == [1, "resume", 2]
    assert hist[1]["after_iteration"] == 1 and hist[1]["changed"] == {"iterations": {"from": 1, "to": 2}}
    ck = read_checkpoint(run)
    assert ck.meta["iterations"] == 2 and ck.events == hist[1:2]
    assert json.loads((run / "args.json").read_text())["iterations"] == 2
    ref = tmp_path / "ref"                     # --iterations says where the loop ends, not what it does
    assert train_main(["gps", *POINTMASS, "--iterations", "2", "--run-dir", str(ref)]) == 0
    want = read_checkpoint(ref)
    assert [h["cost"] for h in ck.state["history"]] == [h["cost"] for h in want.state["history"]]
    assert all(torch.equal(ck.state["policy"][k], want.state["policy"][k]) for k in want.state["policy"])
    capsys.readouterr()
    assert train_main(["gps", *POINTMASS, "--iterations", "1", "--resume", str(run)]) == 2
    line = _one_line(capsys)
    assert "--iterations 1: the run in" in line and "has already done 2" in line


def test_train_exports_the_best_kept_iteration_unless_told_the_last(tmp_path, monkeypatch, capsys):
    """Iteration 2's S-step is wrecked after it trains: `s2r train` exports iteration 1's policy,
    the same as a run that stopped there, says so and stars it in training.png;
    `gps.export_policy=last` exports the wrecked one."""
    import s2r.learning.gps as gps_module
    from s2r.learning.deploy import load_policy
    from gps_helpers import wrecking
    train = gps_module.train_policy_weighted
    import s2r.learning.train as train_module
    plot, plotted = train_module.plot_run, []
    monkeypatch.setattr(train_module, "plot_run",
                        lambda *a, **kw: (plotted.append(kw.get("exported")), plot(*a, **kw))[1])
    pm = ["--task", "PointMass", "--eval-episodes", "6", "--policy-steps", "150"]
    runs = {}
    for name, argv in (("one", ["--iterations", "1"]), ("best", ["--iterations", "2"]),
                       ("last", ["--iterations", "2", "gps.export_policy=last"])):
        monkeypatch.setattr(gps_module, "train_policy_weighted", wrecking(train, 2))    # counts afresh
        runs[name] = tmp_path / name
        assert train_main(["gps", *pm, *argv, "--run-dir", str(runs[name])]) == 0
        out = capsys.readouterr().out
        if name == "best":
            assert ("held-out success 0%; exported iteration 1's policy (100%, significantly better than the "
                    "last kept)") in out
            assert plotted[-1] == 1           # training.png, drawn again at the end, stars the export
    assert [h["success"] for h in json.loads((runs["last"] / "history.json").read_text())] == [1.0, 0.0]
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    act = {name: load_policy(run / "policy.onnx")[0](obs) for name, run in runs.items()}
    np.testing.assert_array_equal(act["best"], act["one"])
    assert np.abs(act["last"] - act["one"]).max() > 1e-3
    assert load_policy(runs["best"] / "policy.onnx")[1]["exported_iteration"] == 1
    history = json.loads((runs["best"] / "history.json").read_text())
    fig = train_module.history_figure(history, "gps on PointMass", exported=1)
    plain = train_module.history_figure(history, "gps on PointMass")
    assert "exported (iteration 1)" in fig.axes[1].get_legend_handles_labels()[1]
    assert not any(lb.startswith("exported") for lb in plain.axes[1].get_legend_handles_labels()[1])
    import matplotlib.pyplot as plt
    plt.close(fig)
    plt.close(plain)


@pytest.fixture(scope="module")
def arm_policy(tmp_path_factory):
    from s2r.learning.agents import ArmReachAgent
    from s2r.learning.export import export_policy
    from s2r.learning.policies import MLPPolicy
    agent = ArmReachAgent()
    path = tmp_path_factory.mktemp("pol") / "policy.pt2"
    export_policy(MLPPolicy(agent.obs_dim, agent.dU), path, agent.metadata(), agent.action_scale)
    agent.close()
    return path


def test_eval_reports_success_with_a_wilson_interval_and_records_mp4(arm_policy, tmp_path, capsys):
    video = tmp_path / "eval.mp4"
    assert eval_main([str(arm_policy), "--task", "ArmReach", "--episodes", "2", "--video", str(video)]) == 0
    out = capsys.readouterr().out
    assert "success 0/2" in out and "95% Wilson interval 0-66%" in out
    import cv2
    cap = cv2.VideoCapture(str(video))
    assert cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) > 10
    cap.release()


def test_eval_writes_its_result_as_json(arm_policy, tmp_path, capsys):
    import json
    out = tmp_path / "eval.json"
    assert eval_main([str(arm_policy), "--task", "ArmReach", "--episodes", "3", "--json", str(out),
                      "--randomize", "default", "--first-seed", "50000"]) == 0
    r = json.loads(out.read_text())
    assert r["episodes"] == 3 and r["first_seed"] == 50000 and r["randomize"] == "default"
    assert r["success_rate"] == r["successes"] / 3 and r["ci95"][0] <= r["success_rate"] <= r["ci95"][1]
    assert len(r["final_distances"]) == 3 and r["mean_final_distance"] == pytest.approx(np.mean(r["final_distances"]))
    assert f"success {r['successes']}/3" in capsys.readouterr().out
    assert eval_main([str(arm_policy), "--task", "ArmReach", "--json", str(out), "--sweep", "gain_scale=0.5:1"]) == 2


@pytest.mark.parametrize("kind", ["image", "insert"])
def test_eval_builds_the_inputs_and_the_scene_the_metadata_names(kind, tmp_path, capsys):
    """An image policy gets the image and its 17-value robot configuration [q, qd, tcp_pos] in the
    scene it was trained in (the visible target marker on its stand); an ArmInsert policy gets the
    peg-bottom error and the episode's phase, over its 250-step episodes."""
    from s2r.learning.agents import ArmReachAgent
    from s2r.learning.insert_agent import ArmInsertAgent
    from s2r.learning.export import export_policy
    from s2r.learning.policies import MLPPolicy, VisuomotorCNN
    from s2r.learning.registry import scene_kwargs
    agent = ArmReachAgent(images=True, image_size=64) if kind == "image" else ArmInsertAgent(n_conditions=1)
    meta = agent.metadata()
    net = VisuomotorCNN(agent.joint_dim, agent.dU, 64) if kind == "image" else MLPPolicy(agent.obs_dim, agent.dU)
    path = tmp_path / "policy.pt2"
    export_policy(net, path, meta, agent.action_scale)
    agent.close()
    if kind == "image":
        assert scene_kwargs(meta) == {"config": "panda_sim", "target_marker_radius": ArmReachAgent.VISIBLE_MARKER_RADIUS,
                                      "target_stand": True, "target_marker_rgba": ArmReachAgent.VISIBLE_MARKER_RGBA}
    else:
        assert scene_kwargs(meta) == {"config": "panda_sim", "shape": "square"} and meta["episode_steps"] == 250
    assert eval_main([str(path), "--task", "ArmInsert" if kind == "insert" else "ArmReach", "--episodes", "1"]) == 0
    assert "success" in capsys.readouterr().out


def test_eval_bad_input(arm_policy, tmp_path, capsys):
    assert eval_main([str(tmp_path / "missing.pt"), "--task", "ArmReach"]) == 2
    assert "no such file" in _one_line(capsys)
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 10)
    assert eval_main([str(tmp_path / "junk.pt"), "--task", "ArmReach"]) == 2
    assert "not a TorchScript policy" in _one_line(capsys)
    assert eval_main([str(arm_policy), "--task", "ArmPush"]) == 2
    assert "trained for 's2r/ArmReach-v0'" in _one_line(capsys)
    assert eval_main([str(arm_policy), "--task", "ArmReach", "--episodes", "0"]) == 2
    assert "--episodes" in _one_line(capsys)


def test_wilson_interval():
    from s2r.learning.train import wilson_interval
    lo, hi = wilson_interval(18, 20)
    assert lo == pytest.approx(0.699, abs=1e-3) and hi == pytest.approx(0.972, abs=1e-3)
    assert wilson_interval(0, 5)[0] == 0.0 and np.isclose(wilson_interval(5, 5)[1], 1.0)


def test_train_options_start_from_the_tasks_experiment_file():
    """`s2r train gps --images` trains with learning/experiments/reach_visuomotor.yaml (what bench_gps
    measures: pose pretraining with bf16 convolutions, auxiliary pose loss, replay) at its image size,
    `--task ArmInsert` with insert_state.yaml, not the generic defaults; options still override them."""
    from s2r.learning.cli import _build, _train_parser
    from s2r.learning.experiment import load_experiment
    recipe = load_experiment("reach_visuomotor")
    agent, algo, meta = _build(_train_parser().parse_args(["gps", "--task", "ArmReach", "--images", "--policy-steps", "50"]))
    try:
        assert agent.image_size == meta["image_size"] == recipe.image_size == 128
        assert algo.policy.config()["image_size"] == 128
        fields = ("pretrain_images", "pretrain_steps", "pretrain_bf16", "aux_pose_weight", "policy_replay", "kl_step")
        assert [getattr(algo.cfg, f) for f in fields] == [recipe.gps.model_dump()[f] for f in fields] \
            == [8000, 6000, True, 1.0, 9, 1.0]
        assert recipe.policy_steps == 800 and algo.cfg.policy_steps == 50 and algo.aux is not None
    finally:
        agent.close()
    state_agent, state_algo, _ = _build(_train_parser().parse_args(["gps", "--task", "PointMass"]))
    assert state_algo.cfg.policy_replay == 0 and state_algo.cfg.aux_pose_weight == 0
    insert, insert_algo, meta = _build(_train_parser().parse_args(["gps", "--task", "ArmInsert", "--iterations", "3"]))
    try:       # the insert task's own recipe (insert_state.yaml), as bench_gps runs it
        cfg = insert_algo.cfg
        assert (cfg.policy_replay, cfg.policy_steps, cfg.kl_step, cfg.iterations) == (9, 1600, 0.2, 3)
        assert insert_algo.init_variance == insert.init_variance == 0.01
        assert insert.weights["log_alpha"] == load_experiment("insert_state").agent["log_alpha"] == 1e-5
        sp = ["cmd_offset", "setpoint_offset", "setpoint_step"]                  # the task's default inputs
        assert meta["obs_features"] == meta["state_features"] == sp
        assert "agent" not in meta          # the file's weights are the agent's defaults: parameters as before
    finally:
        insert.close()


def test_train_takes_opt_in_features_for_the_policy_and_the_local_controllers():
    """--obs-features / --state-features reach the agent, the policy's input size, the export's
    obs_keys and the run parameters (a resume with other features is refused)."""
    from s2r.learning.cli import _build, _train_parser
    agent, algo, meta = _build(_train_parser().parse_args(
        ["gps", "--task", "ArmInsert", "--obs-features", "prev_action, cmd_offset", "--state-features",
         "prev_action@hist2"]))
    try:
        n = agent.dU
        assert meta["obs_features"] == ["prev_action", "cmd_offset"] and meta["state_features"] == ["prev_action@hist2"]
        assert agent.metadata()["obs_keys"][-2:] == ["prev_action", "cmd_offset"]
        assert algo.policy.obs_dim == agent.obs_dim == 2 * n + 4 + 2 * n and agent.dX == 3 * n + 3 + 2 * n
        assert algo.controllers[0].dX == agent.dX
    finally:
        agent.close()


def test_training_gets_the_limiter_state_and_under_randomization_the_actions_in_flight_by_default():
    """Without feature options: the joint limiter's set-point (setpoint_offset, setpoint_step) for
    the policy and the local controllers, and under --randomize first the actions in flight (as
    long a history as the preset's largest latency); 'none' opts out; PointMass gets nothing."""
    from s2r.learning.cli import _build, _train_parser
    from s2r.learning.registry import default_inputs
    sp = ["cmd_offset", "setpoint_offset", "setpoint_step"]
    latency = {"groups": {"timing": {"action_latency": {"dist": "randint", "low": 0, "high": 3}}}}
    assert default_inputs("ArmReach", latency) == (["prev_action@hist3", *sp], ["prev_action@hist3", *sp])
    assert default_inputs("ArmInsert", None) == (sp, sp) and default_inputs("ArmReach", "off") == (sp, sp)
    assert default_inputs("PointMass", None) == ([], [])
    assert default_inputs("ArmReach", latency, adr=["all"])[0][0] == "prev_action@hist4"   # room for ADR's widening
    # the hands' state holds q_cmd - q already; randomized, they get the actions in flight too
    assert default_inputs("HandReach", None) == (sp, sp[1:])
    assert default_inputs("HandGraspLift", "hand") == (["prev_action@hist2", *sp], ["prev_action@hist2", *sp[1:]])
    for extra, obs in ((["--randomize", "default"], ["prev_action@hist2", *sp]), ([], sp),
                       (["--randomize", "default", "--obs-features", "none"], None)):
        agent, algo, meta = _build(_train_parser().parse_args(["gps", "--task", "ArmReach", "--conditions", "1", *extra]))
        try:
            assert meta.get("obs_features") == obs and meta.get("state_features") == obs
            if obs:
                assert agent.metadata()["obs_keys"][-len(obs):] == obs
                assert agent.dX == 3 * agent.n + 3 + agent.state_inputs.size
        finally:
            agent.close()
