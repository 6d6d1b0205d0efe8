"""The deployment-path harness (benchmarks/deploy_eval.py): a scripted TorchScript policy with the
metadata of an exported randomized ArmReach policy (history and set-point inputs included) run by policy_node
against driver_node under a small preset, on 2 held-out starts and goals, against the same policy
stepped in the task (lockstep) under the same preset."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.deploy_eval import deploy_eval, driver_preset, episode_preset  # noqa: E402

pytestmark = pytest.mark.slow
ARM = [f"panda_joint{i}" for i in range(1, 8)]
STEP = np.array([0.002, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])     # rad per control step, joint 1
STEPS = 50
SEEDS = [50_000, 50_001]
PRESET = {"groups": {"timing": {"action_latency": {"dist": "constant", "value": 2}},
                     "dynamics": {"gain_scale": {"dist": "uniform", "low": 0.8, "high": 0.9}}}}


class ConstantStep(torch.nn.Module):
    """A constant joint-1 increment, whatever the (52-value) input: moves the arm a known way."""

    def __init__(self):
        super().__init__()
        self.step = torch.tensor(STEP, dtype=torch.float32)

    def forward(self, x):
        return x[:, :7] * 0.0 + self.step


def scripted_policy(path: Path) -> Path:
    meta = {"format": "s2r-policy/1", "task": "s2r/ArmReach-v0", "joint_names": ARM, "action": "position_delta",
            "action_units": "rad per control step (added to the joint position targets)",
            "control_rate_hz": 100.0, "episode_steps": STEPS, "ee_link": "panda_hand", "tcp_offset": 0.1034,
            "inputs": ["state"],
            "obs_keys": ["joint_pos", "joint_vel", "target_minus_tcp", "prev_action@hist2", "cmd_offset",
                         "setpoint_offset", "setpoint_step"],
            "policy": {"arch": "scripted", "obs_dim": 52, "act_dim": 7}, "precision": "fp32"}
    program = torch.export.export(ConstantStep(), (torch.zeros(1, 52),))
    torch.export.save(program, str(path), extra_files={"s2r_policy.json": json.dumps(meta)})
    return path


def lockstep_tcp(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start TCP, final TCP, target) of the policy stepped in the task under PRESET."""
    import s2r.sim.tasks
    env = s2r.sim.tasks.make("s2r/ArmReach-v0", randomization=PRESET, render_mode=None).unwrapped
    try:
        obs, _ = env.reset(seed=seed)
        start = obs["tcp_pos"].copy()
        for _ in range(STEPS):
            obs, *_ = env.step(STEP / env.action_scale)
        return start, env.tcp()[0], env.target.copy()
    finally:
        env.close()


def test_deploy_harness_runs_the_policy_through_the_nodes(tmp_path):
    policy = scripted_policy(tmp_path / "policy.pt2")
    preset = tmp_path / "preset.json"
    preset.write_text(json.dumps(PRESET))
    lines = []
    r = deploy_eval(policy, "ArmReach", SEEDS, str(preset), log=lines.append)
    assert r["episodes"] == 2 and len(lines) == 2 and "deploy goal 2/2" in lines[-1]
    assert r["per_episode_draws"] and r["driver_restarts"] == 0      # each goal on its own episode's robot, no recovery
    # the policy sent nothing while the driver took the robot to each start, which it reached
    assert r["commands_while_disabled"] == [0, 0]
    assert max(r["start_errors_rad"]) < 0.005
    for k, seed in enumerate(SEEDS):
        start, final, target = lockstep_tcp(seed)
        deployed = np.array(r["final_tcp"][k])
        assert np.linalg.norm(final - start) > 0.02                 # the policy moves the TCP ...
        assert np.linalg.norm(deployed - final) < 0.01              # ... on the robot as in the task
        assert r["final_distances"][k] == pytest.approx(np.linalg.norm(deployed - target), abs=1e-9)


def test_driver_node_refuses_a_preset_it_cannot_apply(tmp_path):
    """A reality with camera errors (the driver renders nothing): one error line naming it, exit 2."""
    import os
    import subprocess

    import yaml

    from s2r.launch import NodeSpec, node_command
    from s2r.core.ros_env import claim_domain_id, isolation_vars, release_domain_id

    pfile = tmp_path / "driver.yaml"
    pfile.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "config": "panda_sim", "autostart": True,
        "randomize": str(ROOT / "benchmarks" / "realities" / "light_stiff.yaml")}}}))
    domain = claim_domain_id()
    try:
        r = subprocess.run(node_command(NodeSpec("driver", "driver_node"), str(pfile)), capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, **isolation_vars(domain)))
    finally:
        release_domain_id(domain)
    errors = [ln for ln in (r.stdout + r.stderr).splitlines() if "ERROR" in ln]
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(errors) == 1 and "camera_focal_error" in errors[0] and "randomize" in errors[0]


def test_each_goal_runs_on_the_robot_of_its_episodes_draw(tmp_path):
    """The driver's preset for an episode (`episode_preset`) makes the sim driver draw exactly what
    the task drew for that seed (per-episode parameters; per-step ones keep their distribution)."""
    import s2r.sim.tasks
    from s2r.core.config import load_config
    from s2r.drivers.sim_driver import SimDriver

    wide = {"groups": {
        "dynamics": {"gain_scale": {"dist": "uniform", "low": 0.5, "high": 1.5},
                     "link_mass_scale": {"dist": "uniform", "low": 0.5, "high": 1.5},
                     "gravity_offset": {"dist": "normal", "std": 0.5}},
        "timing": {"action_latency": {"dist": "randint", "low": 0, "high": 3},
                   "control_period_jitter": {"dist": "uniform", "low": -0.1, "high": 0.1, "mode": "per_step"}},
        "unmodeled": {"encoder_offset": {"dist": "normal", "std": 0.003}}}}
    (tmp_path / "wide.json").write_text(json.dumps(wide))
    base = driver_preset(str(tmp_path / "wide.json"), False, tmp_path, log=lambda *_: None)
    env = s2r.sim.tasks.make("s2r/ArmReach-v0", randomization=wide, render_mode=None).unwrapped
    drv = SimDriver(load_config("panda_sim"))
    drv.connect()
    try:
        draws = []
        for seed in SEEDS:
            env.reset(seed=seed)
            got = drv.randomize(episode_preset(base, env.dr, tmp_path / f"e{seed}.json"), 0, ARM)
            for name in ("gain_scale", "encoder_offset"):           # per joint: the arm's 7 of the driver's 9
                np.testing.assert_array_equal(got[name][:7], env.dr[name])
            for name in ("link_mass_scale", "gravity_offset", "action_latency"):
                np.testing.assert_array_equal(got[name], env.dr[name])
            assert drv.randomization["control_period_jitter"] is not None    # still drawn per step
            draws.append(env.dr["gain_scale"].copy())
        assert not np.allclose(draws[0], draws[1])                   # two episodes, two robots
    finally:
        env.close()
        drv.disconnect()
