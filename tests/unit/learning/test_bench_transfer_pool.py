"""bench_transfer pools the episodes of several training seeds into one cell."""
import pytest

from benchmarks.bench_transfer import pool
from s2r.learning.train import wilson_interval


def test_pooled_cell_counts_every_episode_and_keeps_the_worst_seed():
    cells = [{"success": 0.5, "distance_m": 0.02}, {"success": 1.0, "distance_m": 0.01}, {"success": 0.8, "distance_m": 0.03}]
    c = pool(cells, episodes=10)
    assert c["success"] == pytest.approx(23 / 30)
    assert c["ci95"] == pytest.approx(list(wilson_interval(23, 30)))
    assert c["distance_m"] == pytest.approx(0.02)
    assert c["worst_seed_success"] == 0.5 and c["seeds"] == 3
    assert pool(cells[1:2], 10)["ci95"] == pytest.approx(list(wilson_interval(10, 10)))


def test_the_specialists_reference_is_its_worst_reality_once_every_reality_has_one():
    from benchmarks.bench_transfer import REALITIES, summarize
    names = [r.stem for r in REALITIES]
    assert len(names) >= 2
    cells = {n: {"success": 0.9 - 0.1 * i, "distance_m": 0.01} for i, n in enumerate(names)}
    res = {"reach": {"specialist": cells}}
    assert summarize(res)["reach_specialist_reality_min_success"] == pytest.approx(0.9 - 0.1 * (len(names) - 1))
    del cells[names[0]]                                  # one reality not trained yet: no key
    assert "reach_specialist_reality_min_success" not in summarize(res)
