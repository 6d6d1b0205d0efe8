"""Parallel rollouts equal serial ones for the same seeds."""
import numpy as np
import pytest

from s2r.sim.parallel import ParallelRollouts, rollout_serial
from s2r.sim.scripted import scripted_factory


def test_parallel_equals_serial_with_randomization():
    kw = {"randomization": "default"}
    seeds = [11, 3, 7, 5]
    serial = rollout_serial("s2r/ArmReach-v0", scripted_factory, seeds, 25, kw)
    with ParallelRollouts("s2r/ArmReach-v0", n_workers=2, env_kwargs=kw) as pool:
        par = pool.run(scripted_factory, seeds, 25)
    assert [e.seed for e in par] == seeds
    for a, b in zip(serial, par):
        assert a.actions.shape == (25, 7)
        assert np.array_equal(a.actions, b.actions)
        assert np.array_equal(a.rewards, b.rewards)
        for k in a.observations:
            assert np.array_equal(a.observations[k], b.observations[k]), k
        for k, v in a.randomization.items():
            assert np.array_equal(v, b.randomization[k]), k
    assert not np.array_equal(serial[0].observations["target"], serial[1].observations["target"])
    # the workers, single-threaded processes other than this one, report what they ran and its CPU time
    import os
    stats = pool.last_worker_stats
    assert sum(s["episodes"] for s in stats) == 4 and os.getpid() not in {s["pid"] for s in stats}
    assert all(s["cpu_s"] > 0 and s["wall_s"] > 0 and s["omp_num_threads"] == "1" for s in stats)


def test_worker_threads_are_pinned_without_touching_the_parent(monkeypatch):
    import os
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with ParallelRollouts("s2r/ArmReach-v0", n_workers=1) as pool:
        pool.run(scripted_factory, [0], 2)
        assert pool.last_worker_stats[0]["omp_num_threads"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "7" and "OPENBLAS_NUM_THREADS" not in os.environ


def test_a_worker_that_dies_is_an_error_not_a_hang():
    from simtest_helpers import dying_policy_factory
    pool = ParallelRollouts("s2r/ArmReach-v0", n_workers=1)
    with pytest.raises(RuntimeError, match="exited with code 3"):
        pool.run(dying_policy_factory, [0, 1], 5)


def test_unknown_task_and_bad_worker_count():
    with pytest.raises(ValueError, match="unknown task 's2r/Nope-v0'"):
        ParallelRollouts("s2r/Nope-v0", 1)
    with pytest.raises(ValueError, match="n_workers"):
        ParallelRollouts("s2r/ArmReach-v0", 0)
