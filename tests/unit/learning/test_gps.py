"""Mirror-descent GPS on the point mass: it lowers the cost, resumes exactly, refuses bad input."""
import numpy as np
import pytest
import torch

from s2r.learning.agents import PointMassAgent
from s2r.learning.gps import MDGPS, GPSConfig, PolicyRunner, TrainingError
from s2r.learning.linear_gaussian import LinearGaussianController
from s2r.learning.policies import MLPPolicy
from s2r.learning.train import CHECKPOINT, CheckpointError, load_checkpoint, run_training

from gps_helpers import ResamplingPointMass

FAST = dict(policy_steps=150, eval_episodes=4)


def test_short_gps_run_lowers_the_cost_on_the_point_mass():
    gps = MDGPS(PointMassAgent(), GPSConfig(**FAST))
    costs = [gps.iterate()["cost"] for _ in range(3)]
    assert costs[2] < 0.3 * costs[0]
    assert gps.history[-1]["success"] >= 0.5          # the global policy from held-out starts


def test_evaluate_scores_the_requested_held_out_starts():
    """evaluate(n, first=) runs held-out starts first .. first + n - 1 (bench_gps scores its final
    policies on starts no iteration's evaluation uses)."""
    agent = PointMassAgent()
    gps = MDGPS(agent, GPSConfig(**FAST))
    gps.iterate()
    runner = PolicyRunner(gps.policy)
    d = [agent.held_out(i, lambda t, x, obs: runner(t, x, obs)).final_distance for i in range(3, 6)]
    assert gps.evaluate(3, first=3)["final_distance"] == pytest.approx(np.mean(d))
    assert gps.evaluate(3)["final_distance"] != pytest.approx(np.mean(d))


def test_gps_starts_from_ilqr_on_the_known_model():
    from s2r.controllers import ILQR, ILQROptions, quadratic_cost
    agent = PointMassAgent()
    c = agent.cost
    cost = quadratic_cost(4, 2, c.Q[0], c.R[0], c.Q[-1], goal_param=False, jit=False)
    ilqr = ILQR(agent.model, cost, agent.T, options=ILQROptions(max_iter=20, consistent_gains=True), jit=False)
    init = [LinearGaussianController.from_trajectory(ilqr.solve(x0, None), variance_scale=1e-3) for x0 in agent.x0]
    gps = MDGPS(agent, GPSConfig(**FAST), initial_controllers=init)
    stats = gps.iterate()
    assert stats["cost"] < 20.0                        # the zero-gain PD start costs ~90 (samples stay put)


def _params(policy):
    return torch.cat([p.detach().flatten() for p in policy.state_dict().values()])


def test_resume_after_a_kill_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    meta = {"algorithm": "gps", "task": "PointMass"}
    ref = MDGPS(PointMassAgent(), GPSConfig(**FAST))
    run_training(ref, tmp_path / "ref", 3, meta) if (tmp_path / "ref").mkdir() is None else None
    # the "killed" run: an exception while iteration 2 is running (after checkpoint 1 was written)
    (tmp_path / "run").mkdir()
    killed = MDGPS(PointMassAgent(), GPSConfig(**FAST))
    real_iterate = killed.iterate
    calls = []

    def dying_iterate():
        calls.append(1)
        if len(calls) == 2:
            killed.rng.standard_normal(100)             # half-done work that must not leak into the resume
            raise KeyboardInterrupt
        return real_iterate()
    killed.iterate = dying_iterate
    with pytest.raises(KeyboardInterrupt):
        run_training(killed, tmp_path / "run", 3, meta)
    resumed = MDGPS(PointMassAgent(), GPSConfig(**FAST))
    resumed.load_state_dict(load_checkpoint(tmp_path / "run", meta))
    assert resumed.iteration == 1
    run_training(resumed, tmp_path / "run", 3, meta)
    assert torch.equal(_params(resumed.policy), _params(ref.policy))
    assert [h["cost"] for h in resumed.history] == [h["cost"] for h in ref.history]
    with pytest.raises(CheckpointError, match="task"):
        load_checkpoint(tmp_path / "run" / CHECKPOINT, {"algorithm": "gps", "task": "s2r/ArmReach-v0"})


def test_vision_pretraining_shows_progress_and_is_checkpointed_before_the_first_iteration(tmp_path):
    """An image policy's vision pretraining (tens of minutes at full size) reports each stage and is
    saved before iteration 1: a run killed after it resumes without pretraining again and ends where
    an uninterrupted run ends."""
    import io

    from s2r.learning.agents import ArmReachAgent
    from s2r.core.logs import Progress
    cfg = dict(pretrain_images=6, pretrain_steps=4, aux_pose_weight=1.0, aux_pretrain_steps=2, policy_steps=5,
               batch_size=16, eval_episodes=1, samples_per_condition=2)
    meta = {"algorithm": "gps", "task": "s2r/ArmReach-v0", "images": True}
    runs = []

    def make():
        runs.append(MDGPS(ArmReachAgent(images=True, image_size=32, n_conditions=2, T=6), GPSConfig(**cfg)))
        return runs[-1]
    try:
        stream = io.StringIO()
        (tmp_path / "run").mkdir()
        killed = make()
        run_training(killed, tmp_path / "run", 1, meta, Progress(1, stream=stream), stop_after=0)
        out = stream.getvalue()
        assert "rendering pose images" in out and "6/6" in out
        assert "vision pretraining" in out and "4/4" in out and "pose loss" in out
        assert killed.iteration == 0 and (tmp_path / "run" / CHECKPOINT).exists()
        resumed = make()
        resumed.load_state_dict(load_checkpoint(tmp_path / "run", meta))
        assert resumed.pretrained and resumed.iteration == 0
        resumed.pretrain = lambda progress=None: pytest.fail("the resumed run pretrained again")
        run_training(resumed, tmp_path / "run", 1, meta)
        (tmp_path / "ref").mkdir()
        ref = make()
        run_training(ref, tmp_path / "ref", 1, meta)
        assert torch.equal(_params(resumed.policy), _params(ref.policy))
        assert resumed.history[0]["cost"] == ref.history[0]["cost"]
    finally:
        for r in runs:
            r.agent.close()


class _NaNAgent(PointMassAgent):
    """Every `every`-th rollout comes back with NaN states (a simulator blow-up)."""

    def __init__(self, every):
        super().__init__()
        self.every, self.count = every, 0

    def rollout(self, condition, act, seed):
        s = super().rollout(condition, act, seed)
        self.count += 1
        if self.count % self.every == 0:
            s.X[5:] = np.nan
        return s


def test_nan_samples_are_dropped_and_counted_or_stop_training():
    gps = MDGPS(_NaNAgent(every=5), GPSConfig(**FAST))
    stats = gps.iterate()
    assert stats["dropped"] == 4 and np.isfinite(stats["cost"])
    with pytest.raises(TrainingError, match="NaN"):
        MDGPS(_NaNAgent(every=1), GPSConfig(**FAST)).iterate()


def test_mismatched_policy_or_controller_dimensions_are_refused():
    agent = PointMassAgent()
    with pytest.raises(ValueError, match="observations"):
        MDGPS(agent, GPSConfig(**FAST), policy=MLPPolicy(5, 2))
    with pytest.raises(ValueError, match="actions"):
        MDGPS(agent, GPSConfig(**FAST), policy=MLPPolicy(4, 3))
    bad = [LinearGaussianController.pd(agent.T, 3, 2) for _ in range(4)]
    with pytest.raises(ValueError, match="does not fit"):
        MDGPS(agent, GPSConfig(**FAST), initial_controllers=bad)
    with pytest.raises(ValueError, match="samples_per_condition"):
        GPSConfig(samples_per_condition=1).validate()


def test_plato_with_the_mpc_teacher_learns_the_point_mass():
    from s2r.learning.plato import PLATO, PLATOConfig
    plato = PLATO(PointMassAgent(), PLATOConfig(policy_steps=150, eval_episodes=4))
    for _ in range(2):
        stats = plato.iterate()
    assert stats["success"] == 1.0 and stats["dataset"] == 2 * 4 * 40


def test_resampled_conditions_change_every_iteration_and_gps_still_learns():
    with pytest.raises(ValueError, match="fixed conditions"):
        MDGPS(PointMassAgent(), GPSConfig(resample_conditions=True, **FAST))
    agent = ResamplingPointMass()
    gps = MDGPS(agent, GPSConfig(resample_conditions=True, **FAST))
    seen = []
    for _ in range(3):
        gps.iterate()
        seen.append(tuple(agent.condition_seeds))
    assert len(set(seen)) == 3
    assert gps.history[-1]["cost"] < 0.3 * gps.history[0]["cost"]
    assert gps.state_dict()["condition_seeds"] == list(seen[-1])


def test_arm_training_conditions_never_use_held_out_seeds():
    from types import SimpleNamespace

    from s2r.learning.agents import ArmReachAgent

    class _Rng:                                     # proposes held-out seeds first
        def __init__(self):
            self.values = iter([10_000, 10_019, 15_000, 5, 5, 7, 19_999, 20_000, 3])

        def integers(self, lo, hi):
            return next(self.values)

    stub = SimpleNamespace(n_conditions=4, HELD_OUT_BASE=ArmReachAgent.HELD_OUT_BASE,
                           HELD_OUT_SEEDS=ArmReachAgent.HELD_OUT_SEEDS)
    assert ArmReachAgent.resample(stub, _Rng()) == [5, 7, 20_000, 3]


def test_auxiliary_pose_loss_lowers_the_pose_error_on_a_synthetic_set():
    from s2r.learning.gps import AuxPose, train_policy_weighted
    from s2r.learning.policies import VisuomotorCNN
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = VisuomotorCNN(joint_dim=4, act_dim=2, image_size=32)
    aux = AuxPose(net)
    n = 512
    points = rng.uniform(-1, 1, (n, 64))
    joints = rng.normal(0, 1, (n, 4))
    rel = 0.1 * np.tanh(points[:, :3] - 0.5 * joints[:, :3])      # "tcp - target" (m) from points and joints
    aux.set_data(torch.as_tensor(points[:256], dtype=torch.float32), joints[:256], rel[:256])
    inputs = {"state": joints[256:], "points": torch.as_tensor(points[256:], dtype=torch.float32), "rel": rel[256:]}
    before = aux.error(net, inputs["points"], inputs["state"], inputs["rel"])
    opt = torch.optim.Adam(list(net.fc.parameters()) + list(aux.parameters()), lr=3e-3)
    train_policy_weighted(net, opt, inputs, np.zeros((256, 2)), None, 400, 64, torch.Generator().manual_seed(0),
                          head_only=True, aux=aux, aux_weight=1.0)
    after = aux.error(net, inputs["points"], inputs["state"], inputs["rel"])
    assert after < 0.2 * before
    with pytest.raises(ValueError, match="frozen vision"):
        GPSConfig(aux_pose_weight=1.0, finetune_vision=True).validate()


def test_reach_pose_images_put_the_tcp_on_the_way_to_the_target():
    from s2r.learning.agents import ArmReachAgent
    agent = ArmReachAgent(images=True, image_size=32)
    try:
        images, poses, joints = agent.pose_dataset(6, np.random.default_rng(0))
        r_images, r_poses, r_joints = agent.pose_dataset(6, np.random.default_rng(0), reach_fraction=1.0)
    finally:
        agent.close()
    assert images.shape == r_images.shape == (6, 32, 32, 3) and joints.shape == r_joints.shape == (6, 17)
    assert np.allclose(joints[:, 14:], poses[:, 3:]) and np.allclose(r_joints[:, 14:], r_poses[:, 3:])   # + tcp_pos
    dist = lambda p: np.linalg.norm(p[:, 3:] - p[:, :3], axis=1)   # noqa: E731
    assert dist(r_poses).mean() < 0.6 * dist(poses).mean()


def test_policy_replay_regresses_on_earlier_iterations_too_and_still_learns():
    gps = MDGPS(PointMassAgent(), GPSConfig(policy_replay=2, **FAST))
    costs = [gps.iterate()["cost"] for _ in range(3)]
    assert costs[2] < 0.3 * costs[0]
    assert len(gps.replay) == 2 and len(gps.state_dict()["replay"]) == 2
    with pytest.raises(ValueError, match="frozen vision"):
        GPSConfig(policy_replay=1, finetune_vision=True).validate()


def test_arm_reach_initial_controllers_are_a_pd_law_that_reaches_the_target():
    """GPS's first local controllers on the arm: the TCP error through the start posture's Jacobian
    (their means reach the targets of the training conditions), and MDGPS starts from them."""
    from s2r.learning.agents import ArmReachAgent
    from s2r.learning.gps import MDGPS, GPSConfig
    agent = ArmReachAgent(condition_seeds=[3, 8])
    try:
        obs, _ = agent.env.reset(seed=3)
        J, q0 = agent.tcp_jacobian(), agent.env.robot.state()[0].copy()
        dq = 0.01 * np.random.default_rng(0).standard_normal(agent.dU)
        q = q0.copy()
        q[agent.env.act_idx] += dq
        agent.env.robot.reset(q)
        assert np.allclose(agent.env.tcp()[0] - obs["tcp_pos"], J @ dq, atol=3e-4)    # first order
        ctrls = agent.initial_controllers(0.1)
        start = [agent.rollout(c, lambda t, x, o: np.zeros(agent.dU), 0).final_distance for c in range(2)]
        reached = [agent.rollout(c, lambda t, x, o, k=k: k.act(t, x), 0).final_distance for c, k in enumerate(ctrls)]
        assert min(start) > 0.1 and max(reached) < 0.01
        gps = MDGPS(agent, GPSConfig(iterations=1, eval_episodes=0))
        assert all(np.array_equal(a.K, b.K) and np.array_equal(a.cov, b.cov) for a, b in zip(gps.controllers, ctrls))
    finally:
        agent.close()
