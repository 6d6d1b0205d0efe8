"""s2r.core.executor: the in-process and process-pool backends give the same results in the same
order; a raising job is reported with its seed and the rest kept; a worker killed in a job has the
job run again; bad input is one line. (Ray: tests/integration/test_ray_executor.py.)"""
import os
import sys
import warnings

import numpy as np
import pytest

from s2r.core.executor import (RAY_INSTALL_HINT, ExecutorError, InlineExecutor, PoolExecutor, make_executor)


class Counter:
    """A worker context: counts how often it was built (once per worker, not per job)."""
    built = 0

    def __init__(self, scale):
        self.scale, self.pid = scale, os.getpid()
        Counter.built += 1


def noisy_sum(ctx, shared, seed):
    """A seeded job: depends only on its seed, the shared offset and the context's scale."""
    rng = np.random.default_rng(seed)
    return ctx.scale * rng.standard_normal(50).sum() + shared, ctx.pid


def raise_on_13(ctx, shared, seed):
    if seed == 13:
        raise ValueError("bad episode")
    return seed * 2


def die_once(ctx, shared, seed):
    """Kills its worker process the first time it runs seed 5 (a marker file remembers)."""
    marker = os.path.join(shared, f"died-{seed}")
    if seed == 5 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(9)
    return seed + 100


def always_die(ctx, shared, seed):
    os._exit(7)


@pytest.fixture(scope="module")
def pool():
    with PoolExecutor(2) as ex:
        yield ex


def test_inline_and_pool_give_the_same_results_in_order(pool):
    seeds = [17, 3, 99, 4, 8, 1]
    ref = InlineExecutor().run(noisy_sum, seeds, keys=seeds, context=(Counter, (2.0,)), shared=0.5)
    par = pool.run(noisy_sum, seeds, keys=seeds, context=(Counter, (2.0,)), shared=0.5)
    assert [r[0] for r in par.results] == [r[0] for r in ref.results]           # bit-identical, in order
    assert len({r[1] for r in par.results}) == 2 and os.getpid() not in {r[1] for r in par.results}
    assert par.backend == "pool" and par.workers == 2 and not par.failures and not par.reruns
    assert sum(w["jobs"] for w in par.worker_stats) == 6 and all(w["omp_num_threads"] == "1" for w in par.worker_stats)
    # the context is built once per worker and reused by the next batch (same pids, no rebuild)
    again = pool.run(noisy_sum, seeds, keys=seeds, context=(Counter, (2.0,)), shared=0.5)
    assert {r[1] for r in again.results} <= {r[1] for r in par.results}
    assert [r[0] for r in again.results] == [r[0] for r in ref.results]


def test_a_raising_job_is_reported_with_its_seed_and_the_rest_kept(pool):
    seeds = [11, 12, 13, 14]
    for ex in (InlineExecutor(), pool):
        b = ex.run(raise_on_13, seeds, keys=seeds)
        assert b.results == [22, 24, None, 28]
        assert len(b.failures) == 1 and b.failures[0].key == 13 and b.failures[0].index == 2
        assert "ValueError: bad episode" in b.failures[0].error
        with pytest.raises(ExecutorError, match=r"episode 2 \(seed 13\) failed: ValueError: bad episode"):
            b.raise_failures("episode")


def test_a_killed_worker_has_its_job_run_again(pool, tmp_path):
    seeds = list(range(8))
    b = pool.run(die_once, seeds, keys=seeds, shared=str(tmp_path))
    assert b.results == [s + 100 for s in seeds] and not b.failures
    assert len(b.reruns) == 1 and b.reruns[0]["key"] == 5 and "exited with code 9" in b.reruns[0]["reason"]
    assert len(pool.pids) == 2                       # the dead worker was replaced
    b = pool.run(raise_on_13, [1, 2], keys=[1, 2])   # and the pool goes on
    assert b.results == [2, 4]


def test_a_job_that_kills_every_worker_is_a_failure_not_a_loop():
    with PoolExecutor(1, max_attempts=2) as ex:
        b = ex.run(always_die, [42], keys=[42])
    assert b.results == [None] and b.failures[0].key == 42 and "killed 2 workers" in b.failures[0].error
    assert len(b.reruns) == 1


def test_a_context_that_cannot_be_built_stops_the_batch(pool):
    with pytest.raises(ExecutorError, match="building the worker's context: ValueError"):
        InlineExecutor().run(noisy_sum, [1], context=(float, ("not a number",)))
    with pytest.raises(ExecutorError, match="building the worker's context: ValueError"):
        PoolExecutor(1).run(noisy_sum, [1], context=(float, ("not a number",)))


def test_make_executor_backends_and_bad_input(monkeypatch):
    assert isinstance(make_executor(None), InlineExecutor) and isinstance(make_executor(1), InlineExecutor)
    with pytest.raises(ValueError, match="--workers must be >= 1"):
        make_executor(0)
    with pytest.raises(ValueError, match="2 keys for 1 payloads"):
        InlineExecutor().run(raise_on_13, [1], keys=[1, 2])
    n = os.cpu_count() + 1
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ex = make_executor(n)
    try:
        assert isinstance(ex, PoolExecutor) and ex.workers == n
        assert any(f"--workers {n} is more than this machine's" in str(x.message) for x in w)
    finally:
        ex.close()
    monkeypatch.setitem(sys.modules, "ray", None)            # Ray not installed: how to get it
    with pytest.raises(ExecutorError, match=r"pip install 's2r-robotics\[ray\]'") as e:
        make_executor(2, "auto")
    assert str(e.value) == RAY_INSTALL_HINT


def test_progress_is_one_line_per_stage_with_workers_and_rate(capsys):
    InlineExecutor(progress=True).run(raise_on_13, [1, 2, 3], label="evaluation")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evaluation (1 inline worker)") and "/s" in err[0]


def test_an_unreachable_ray_address_is_one_line_within_the_timeout(monkeypatch):
    import time
    t0 = time.monotonic()
    with pytest.raises(ExecutorError, match=r"^--ray 127\.0\.0\.1:9: no Ray cluster reachable there \("):
        make_executor(2, "127.0.0.1:9", connect_timeout_s=5)
    monkeypatch.setenv("RAY_ADDRESS", "ray://127.0.0.1:9")          # --ray auto takes RAY_ADDRESS
    with pytest.raises(ExecutorError, match=r"^--ray ray://127\.0\.0\.1:9: no Ray cluster reachable there"):
        make_executor(None, "auto", connect_timeout_s=5)
    with pytest.raises(ExecutorError, match="not a Ray address"):
        make_executor(2, "nowhere")
    assert time.monotonic() - t0 < 30
