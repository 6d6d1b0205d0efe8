"""Ray next to the process pool and in-process runs (s2r.core.executor): the same GPS samples,
held-out episodes and pose images for the same seeds on every backend; an actor killed in a job has
the job run again; a raising episode is reported with its seed. One local Ray instance for the module."""
import os
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the [ray] extra (make install installs it)")

from s2r.core.executor import InlineExecutor, PoolExecutor, RayExecutor  # noqa: E402
from s2r.learning.agents import ArmReachAgent, collect_samples, evaluate_held_out  # noqa: E402
from s2r.learning.gps_policy import PolicyRunner  # noqa: E402
from s2r.learning.policies import MLPPolicy  # noqa: E402


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, address="local", logging_level="ERROR")
    import ray.cloudpickle as cp
    cp.register_pickle_by_value(sys.modules[__name__])      # this file's jobs travel by value
    ex = RayExecutor(2)
    yield ex
    ex.close()
    ray.shutdown()


def die_once(ctx, shared, seed):
    marker = os.path.join(shared, f"died-{seed}")
    if seed == 2 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(9)
    if seed == 3:
        raise RuntimeError("episode blew up")
    return seed * 10


def test_same_samples_episodes_and_images_on_every_backend(ray_local):
    agent = ArmReachAgent(n_conditions=2, T=12)
    image_agent = ArmReachAgent(images=True, image_size=32, n_conditions=1, T=5)
    try:
        rng = np.random.default_rng(4)
        jobs = [(c, rng.standard_normal((agent.T, agent.dU)), int(rng.integers(2**31))) for c in (0, 1, 0, 1, 1)]
        controllers = agent.initial_controllers(0.1)
        policy = MLPPolicy(agent.obs_dim, agent.dU, (16,))
        runs = {}
        with PoolExecutor(2) as pool:
            for name, ex in (("inline", InlineExecutor()), ("pool", pool), ("ray", ray_local)):
                samples = collect_samples(agent, ex, jobs, controllers)
                on_policy = collect_samples(agent, ex, jobs[:2], PolicyRunner(policy, 0.01 * np.eye(agent.dU)))
                held_out = evaluate_held_out(agent, ex, PolicyRunner(policy), [0, 3, 1])
                images = image_agent.pose_dataset(3, np.random.default_rng(7), reach_fraction=0.5, executor=ex)
                assert not samples.failures and not on_policy.failures
                runs[name] = (samples.results + on_policy.results + held_out, images)
        ref_samples, ref_images = runs["inline"]
        assert len({s.X[-1, -3:].tobytes() for s in ref_samples[:5]}) == 5     # the seeds make distinct samples
        for name in ("pool", "ray"):
            samples, images = runs[name]
            for a, b in zip(ref_samples, samples):
                for f in ("X", "U", "state_obs"):
                    assert np.array_equal(getattr(a, f), getattr(b, f)), (name, f)
                assert a.final_distance == b.final_distance
            for a, b in zip(ref_images, images):
                assert np.array_equal(a, b), name
        assert ref_images[0].shape == (3, 32, 32, 3) and ref_images[0].std() > 0
    finally:
        agent.close()
        image_agent.close()


def test_a_killed_actor_is_replaced_and_a_raising_episode_reported(ray_local, tmp_path):
    b = ray_local.run(die_once, [1, 2, 3, 4], keys=[1, 2, 3, 4], shared=str(tmp_path))
    assert b.results == [10, 20, None, 40]
    # the killed job runs again; a job the same actor had finished may run again too, when its
    # reply was still on the way as the process died (a race Ray does not close)
    rerun = [r["key"] for r in b.reruns]
    assert 2 in rerun and len(set(rerun)) == len(rerun), rerun
    assert all("lost" in r["reason"] for r in b.reruns)
    assert [f.key for f in b.failures] == [3] and "RuntimeError: episode blew up" in b.failures[0].error
    assert b.backend == "ray" and b.workers == 2


def test_plato_samples_on_ray_equal_in_process(ray_local):
    """PLATO's teacher-led episodes (the MPC teacher built once per worker, reset per episode)."""
    import torch

    from s2r.learning.plato import PLATO, PLATOConfig
    runs = []
    for ex in (None, ray_local):
        agent = ArmReachAgent(n_conditions=2, T=8)
        try:
            plato = PLATO(agent, PLATOConfig(episodes_per_iteration=4, eval_episodes=2, policy_steps=10,
                                             mpc_horizon=4, mpc_iterations=1, seed=2))
            plato.executor = ex
            runs.append(([plato.iterate() for _ in range(2)], plato.policy.state_dict()))
        finally:
            agent.close()
    (h0, p0), (h1, p1) = runs
    for a, b in zip(h0, h1):
        assert [a[k] for k in ("cost", "eval_distance", "policy_loss", "dataset")] == \
            [b[k] for k in ("cost", "eval_distance", "policy_loss", "dataset")]
    assert all(torch.equal(p0[k], p1[k]) for k in p0)


def worker_pid(ctx, shared, seed):
    return seed, os.getpid()


def test_more_workers_than_free_cpus_share_them_and_none_free_is_one_error(ray_local, monkeypatch):
    """An actor asking for a CPU that nobody frees would wait for ever: the workers share the free
    CPUs (a warning), and with none free the executor says so at once. Runs last: it frees the
    module's executor (2 actors on the instance's 2 CPUs)."""
    from s2r.core.executor import ExecutorError
    ray_local.close()
    with pytest.warns(RuntimeWarning, match="3 Ray workers and 2 free CPUs.*share them"):
        ex = RayExecutor(3)
    try:
        b = ex.run(worker_pid, list(range(9)), keys=list(range(9)))
        assert [r[0] for r in b.results] == list(range(9)) and not b.failures
        assert len({pid for _, pid in b.results}) == 3          # all three actors were scheduled and ran jobs
        monkeypatch.setattr("s2r.core.executor.CPU_SETTLE_S", 0.5)     # none will come back
        with pytest.raises(ExecutorError, match="no free CPU on the cluster for 1 worker"):
            RayExecutor(1)
    finally:
        ex.close()
