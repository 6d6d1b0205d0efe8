"""--workers / --ray / --device of `s2r train` and `s2r eval`: 2 worker processes evaluate with
the same results as one (a --sweep runs the same evaluation per value: tests/unit/learning); an unreachable Ray address, --device cuda without a GPU and
--workers 0 are one line and exit 2, before anything is built."""
import json
import time

import pytest

from s2r.learning.cli import eval_main, train_main


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def arm_policy(tmp_path_factory):
    import torch

    from s2r.learning.agents import ArmReachAgent
    from s2r.learning.export import export_policy
    from s2r.learning.policies import MLPPolicy
    agent = ArmReachAgent()
    torch.manual_seed(3)
    net = MLPPolicy(agent.obs_dim, agent.dU)
    with torch.no_grad():
        net.net[-1].weight.mul_(20.0)            # actions that move the arm: distances differ per seed
    path = tmp_path_factory.mktemp("pol") / "policy.pt2"
    export_policy(net, path, agent.metadata(), agent.action_scale)
    agent.close()
    return path


def test_eval_on_two_workers_equals_one(arm_policy, tmp_path, capsys):
    out1, out2 = tmp_path / "one.json", tmp_path / "two.json"
    common = [str(arm_policy), "--task", "ArmReach", "--episodes", "2", "--randomize", "default"]
    assert eval_main(common + ["--json", str(out1)]) == 0
    assert eval_main(common + ["--json", str(out2), "--workers", "2", "--device", "cpu"]) == 0
    one, two = json.loads(out1.read_text()), json.loads(out2.read_text())
    assert len(set(one["final_distances"])) == 2 and one["final_distances"] == two["final_distances"]
    err = capsys.readouterr().err
    assert "evaluation (2 pool workers)" in err and "2/2" in err


def test_bad_scale_options_are_one_line_and_exit_2(tmp_path, capsys):
    import torch
    argv = ["gps", "--task", "PointMass", "--iterations", "1", "--run-dir", str(tmp_path / "r")]
    t0 = time.monotonic()
    assert train_main(argv + ["--ray", "127.0.0.1:9"]) == 2
    assert "s2r train: --ray 127.0.0.1:9: no Ray cluster reachable there" in _one_line(capsys)
    assert time.monotonic() - t0 < 30
    assert train_main(argv + ["--workers", "0"]) == 2
    assert "--workers must be >= 1" in _one_line(capsys)
    if torch.cuda.is_available():
        from s2r.learning.cli import resolve_device
        assert resolve_device("cuda") == resolve_device("auto") == "cuda"
    else:
        assert train_main(argv + ["--device", "cuda"]) == 2
        assert "--device cuda: no CUDA GPU here" in _one_line(capsys)
    assert not (tmp_path / "r").exists()          # refused before anything was built
