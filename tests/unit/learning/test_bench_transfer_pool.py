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


def test_every_reality_lies_outside_its_rows_training_ranges():
    from benchmarks.bench_transfer import ROWS, VISUAL_REALITIES, inside_training, row_setup
    from s2r.sim.randomization import Randomizer
    checked = 0
    for row in ROWS:
        preset, _, realities = row_setup(row)
        for reality in realities:
            groups = ("visuals",) if reality in VISUAL_REALITIES else ("dynamics", "unmodeled")
            assert inside_training(reality, preset, groups) == [], f"{reality.name} overlaps {preset} in training"
            checked += 1
    assert checked >= 5
    assert VISUAL_REALITIES and all(r in row_setup("image")[2] for r in VISUAL_REALITIES)
    for reality in VISUAL_REALITIES:              # looks only: the nominal robot
        assert {s.info.group for s in Randomizer.load(reality).params.values()} == {"visuals"}


def test_the_image_rows_held_out_visuals_are_their_own_key():
    from benchmarks.bench_transfer import REALITIES, VISUAL_REALITIES, summarize
    cells = {r.stem: {"success": 0.8, "distance_m": 0.01} for r in REALITIES}
    cells |= {r.stem: {"success": 0.6 - 0.1 * i, "distance_m": 0.02} for i, r in enumerate(VISUAL_REALITIES)}
    out = summarize({"image": {"dr": {"eval": {"nominal": {"success": 0.9}, **cells}}}})
    assert out["image_dr_reality_min_success"] == pytest.approx(0.8)
    assert out["image_dr_reality_distance_m"] == pytest.approx(0.01)
    assert out["image_dr_heldout_visual_success"] == pytest.approx(0.6 - 0.1 * (len(VISUAL_REALITIES) - 1))
    from benchmarks.bench_transfer import dynamics_and_looks
    assert dynamics_and_looks("image") == (REALITIES, VISUAL_REALITIES)      # specialists: dynamics only
    assert dynamics_and_looks("reach") == (REALITIES, [])
    del cells[VISUAL_REALITIES[0].stem]
    assert "image_dr_heldout_visual_success" not in summarize({"image": {"dr": {"eval": cells}}})


def test_a_vector_reality_is_outside_when_any_element_is():
    from benchmarks.bench_transfer import inside_training
    training = {"groups": {"visuals": {"camera_position_offset": {"dist": "uniform", "low": -0.01, "high": 0.01},
                                       "surface_texture": {"dist": "bernoulli", "p": 0.5}}}}
    beside = {"dist": "uniform", "low": [0.011, -0.015, 0.0], "high": [0.015, -0.011, 0.005]}
    reality = {"groups": {"visuals": {"camera_position_offset": beside,
                                      "surface_texture": {"dist": "bernoulli", "p": 1.0}}}}
    assert inside_training(reality, training, ("visuals",)) == []
    beside["low"][:2], beside["high"][:2] = [0.0, -0.005], [0.005, 0.0]      # every element meets training's
    assert inside_training(reality, training, ("visuals",)) == ["camera_position_offset"]


def test_a_reality_meeting_a_training_range_is_named():
    from benchmarks.bench_transfer import inside_training
    training = {"groups": {"dynamics": {"link_mass_scale": {"dist": "uniform", "low": 0.5, "high": 1.5},
                                        "gravity_offset": {"dist": "normal", "std": 0.4}},
                           "unmodeled": {"backlash": {"dist": "uniform", "low": 0.0, "high": 0.001}}}}
    reality = {"groups": {"dynamics": {"link_mass_scale": {"dist": "uniform", "low": 1.4, "high": 1.8},
                                       "gravity_offset": {"dist": "normal", "std": 0.3},
                                       "joint_damping_scale": {"dist": "uniform", "low": 3.0, "high": 4.0}},
                          "unmodeled": {"backlash": {"dist": "constant", "value": 0.002}}}}
    assert inside_training(reality, training) == ["link_mass_scale", "gravity_offset"]
    reality["groups"]["dynamics"]["link_mass_scale"] = {"dist": "uniform", "low": 1.6, "high": 1.8}
    reality["groups"]["dynamics"]["gravity_offset"] = {"dist": "normal", "std": 0.6}
    reality["groups"]["unmodeled"]["backlash"] = {"dist": "uniform", "low": 0.0005, "high": 0.002}
    assert inside_training(reality, training) == ["backlash"]


def test_deploy_and_lockstep_are_compared_episode_by_episode():
    from benchmarks.bench_transfer import discordant
    deploy = [0.01, 0.03, 0.025, 0.01, 0.05]
    lockstep = [0.01, 0.01, 0.015, 0.03, 0.06]
    c = discordant(deploy, lockstep, 0.02)
    assert (c["only_deploy"], c["only_lockstep"]) == (1, 2)
    assert c["mcnemar_p"] == pytest.approx(1.0)
    c = discordant([0.03] * 8, [0.01] * 8, 0.02)
    assert (c["only_deploy"], c["only_lockstep"]) == (0, 8) and c["mcnemar_p"] == pytest.approx(2 / 2 ** 8)
    assert discordant([0.01], [0.01], 0.02)["mcnemar_p"] == 1.0
    with pytest.raises(ValueError, match="episodes"):
        discordant([0.01], [0.01, 0.02], 0.02)
