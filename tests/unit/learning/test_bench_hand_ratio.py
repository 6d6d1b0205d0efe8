"""bench_hand's rollouts ratio: at GPS's success where the baseline reached it, else at the
baseline's best performance, which for a baseline that never succeeds is how close it came, and
for one that never improved at all its whole budget, a lower bound at GPS's success."""
import math

from benchmarks.bench_hand import rollouts_ratio

GPS = [{"rollouts": 96, "success": 0.0, "eval_distance": 0.06},
       {"rollouts": 96, "success": 0.5, "eval_distance": 0.02},
       {"rollouts": 96, "success": 0.9, "eval_distance": 0.01}]


def ppo(*evals, reached=None):
    return {"rollouts_to_success": reached, "rollouts_used": evals[-1][0],
            "history": [{"rollouts": r, "success": s, "distance": d} for r, s, d in evals]}


def test_a_baseline_that_reached_gps_success_is_compared_there():
    b = ppo((1000, 0.2, 0.03), (2880, 0.9, 0.01), reached=2880)
    assert rollouts_ratio(GPS, b, goal=0.9) == (2880 / 288, 2880, "at_goal")


def test_a_baseline_that_never_succeeded_is_compared_by_its_closest_approach():
    # never a success: its best is 5 cm at 6000 rollouts; GPS did better after its second iteration
    b = ppo((100, 0.0, 0.11), (6000, 0.0, 0.05), (9000, 0.0, 0.055))
    assert rollouts_ratio(GPS, b, goal=0.9) == (6000 / 192, 6000, "at_baseline_best")
    b = ppo((100, 0.0, 0.11), (6000, 0.0, 0.07))
    assert rollouts_ratio(GPS, b, goal=0.9)[:2] == (6000 / 96, 6000)              # 6 cm after the first
    # a success beats any distance without one
    assert rollouts_ratio(GPS, ppo((100, 0.0, 0.02), (200, 0.0, 0.011)), goal=0.9)[:2] == (200 / 192, 200)


def test_a_baseline_that_never_improved_gives_a_lower_bound_at_gps_success():
    # as bad at the end of its budget as at its first evaluation (the cube never left the floor):
    # its "best" is any untrained policy's, so the comparison is at GPS's 90 %, with its whole budget
    b = ppo((100, 0.0, 0.1), (1000, 0.0, 0.1), (2880, 0.0, 0.1))
    assert rollouts_ratio(GPS, b, goal=0.9) == (2880 / 288, 2880, "lower_bound_at_goal")


def test_the_baseline_best_success_short_of_gps_is_the_level():
    b = ppo((500, 0.3, 0.04), (800, 0.5, 0.03), (900, 0.5, 0.02))
    assert rollouts_ratio(GPS, b, goal=0.9)[:2] == (900 / 192, 900)   # 50 % at 2 cm: GPS's second iteration
    b = ppo((500, 0.3, 0.04), (900, 0.5, 0.015))
    assert rollouts_ratio(GPS, b, goal=0.9)[:2] == (900 / 288, 900)   # 50 % at 1.5 cm: its third


def test_gps_never_as_good_gives_no_ratio():
    ratio, base, kind = rollouts_ratio(GPS, ppo((100, 0.2, 0.03), (700, 0.95, 0.005)), goal=1.0)
    assert math.isnan(ratio) and base == 700 and kind == "at_baseline_best"
