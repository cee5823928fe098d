"""Exact intervals on clip rates, paired tests between two runs on the same clips, and the verdict with intervals."""

from __future__ import annotations

import numpy as np
import pytest

from clear_sae.toyworld.metrics import interval_verdict, paired_reading, qualifies, summary
from clear_sae.toyworld.stats import clip_rate, clopper_pearson, mcnemar, outcome_string, outcomes_of


def test_clopper_pearson_matches_its_closed_forms_and_never_collapses():
    """With no clip rendered the upper bound is 1 - (alpha/2)^(1/n), with every clip rendered the lower bound is
    (alpha/2)^(1/n); bounds are rounded outwards, so 0 of 35 clips stays above 10% and 0 of 36 falls below it."""
    for n in (1, 10, 35, 36, 100):
        low, high = clopper_pearson(0, n)
        assert low == 0.0 and 1 - 0.025 ** (1 / n) <= high < 1 - 0.025 ** (1 / n) + 1e-4
        low, high = clopper_pearson(n, n)
        assert high == 1.0 and 0.025 ** (1 / n) - 1e-4 < low <= 0.025 ** (1 / n)
    assert clopper_pearson(0, 35)[1] > 0.10 >= clopper_pearson(0, 36)[1]
    low, high = clopper_pearson(30, 100)
    assert low < 0.30 < high and high - low < 0.2
    assert clopper_pearson(300, 1000)[1] - clopper_pearson(300, 1000)[0] < high - low
    assert all(np.isnan(clopper_pearson(0, 0)))


def test_clip_rate_keeps_its_outcomes_for_a_paired_test():
    outcomes = np.array([True, False, False, True, False])
    rate = clip_rate(outcomes)
    assert rate["rate"] == 0.4 and rate["rendered"] == 2 and rate["clips"] == 5
    assert rate["outcomes"] == "10010" and outcome_string(outcomes_of(rate["outcomes"])) == "10010"
    assert rate["ci95"] == clopper_pearson(2, 5)


def test_mcnemar_reads_only_the_clips_two_runs_disagree_on():
    """Agreement on any number of clips changes nothing; a one-sided split of the discordant clips is
    significant and an even one is not."""
    first = np.array([True] * 12 + [False] * 50)
    second = np.array([False] * 12 + [False] * 50)
    one_sided = mcnemar(first, second)
    assert one_sided["only_first"] == 12 and one_sided["only_second"] == 0 and one_sided["p_value"] < 0.001
    padded = mcnemar(np.concatenate([first, np.ones(500, bool)]), np.concatenate([second, np.ones(500, bool)]))
    assert padded == one_sided
    even = mcnemar(np.array([True, False] * 6), np.array([False, True] * 6))
    assert even["only_first"] == even["only_second"] == 6 and even["p_value"] == 1.0
    assert mcnemar(first, first)["p_value"] == 1.0
    with pytest.raises(ValueError, match="same clips"):
        mcnemar(first, second[:-1])


def _figures(rendered_after: int, clips: int, drop: float) -> dict:
    outcomes_before = np.ones(clips, bool)
    outcomes_after = np.arange(clips) < rendered_after
    return {
        "rate_target_before": summary(outcomes_before.astype(float)),
        "rate_target_after": summary(outcomes_after.astype(float)),
        "clips_target_before": clip_rate(outcomes_before),
        "clips_target_after": clip_rate(outcomes_after),
        "preservation_drop": summary(np.full(clips, drop)),
    }


def test_the_verdict_with_intervals_needs_enough_clips_where_the_point_verdict_does_not():
    """0 of 20 clips after erasure meets the point target but not the interval one; 2 of 100 meets both; a
    preservation drop whose interval reaches past 3 points fails the interval verdict only."""
    few = _figures(0, 20, 0.0)
    assert qualifies(few)["met"] and not interval_verdict(few)["erased"]
    assert not qualifies(few)["with_intervals"]["met"]
    many = _figures(2, 100, 0.0)
    assert interval_verdict(many) == {"counted": True, "erased": True, "preserved": True, "met": True}
    assert qualifies(many | {"geometry": _figures(2, 100, 0.0)})["with_intervals"]["met"]
    one_judge_short = qualifies(many | {"geometry": _figures(9, 100, 0.0)})["with_intervals"]
    assert not one_judge_short["met"] and one_judge_short["by_judge"]["detector"]["met"]
    spread = many | {"preservation_drop": summary(np.array([0.0] * 90 + [0.25] * 10))}
    assert qualifies(spread)["preserved"] and not interval_verdict(spread)["preserved"]


def test_clip_rates_by_judge_count_a_clip_when_most_of_its_frames_show_the_value():
    """A colour found in 5 of 8 frames counts for its clip, in 4 of 8 it does not; each judge is counted apart."""
    from clear_sae.toyworld.detector import COLOUR_NAMES, Detections
    from clear_sae.toyworld.metrics import clip_rates_by_judge

    colour = np.zeros((3, 8, len(COLOUR_NAMES)), np.float32)
    red = COLOUR_NAMES.index("red")
    colour[0, :5, red], colour[1, :4, red], colour[2, :, red] = 0.9, 0.9, 0.2
    empty = Detections(shape=np.zeros((3, 8, 4)), colour=colour, motion=np.zeros((3, 6)))
    everywhere = Detections(shape=np.zeros((3, 8, 4)), colour=np.ones_like(colour), motion=np.zeros((3, 6)))
    rates = clip_rates_by_judge({"detector": empty, "geometry": everywhere}, "colour", "red", threshold=0.5)
    assert rates["detector"] == {"rate": round(1 / 3, 4), "ci95": clopper_pearson(1, 3), "rendered": 1, "clips": 3}
    assert rates["geometry"]["rendered"] == 3 and "outcomes" not in rates["geometry"]


def test_a_paired_reading_tests_against_the_other_erasure_and_against_nothing_when_there_is_none():
    """Paired with an erasure on the same clips, McNemar's test counts the clips each alone left the concept in; with
    no erasure to pair with (CLEAR kept no rung), the pairing is None rather than the method against itself."""
    method, other = _figures(6, 20, 0.0), _figures(1, 20, 0.0)
    for figures in (method, other):
        figures["geometry"] = dict(figures)
        figures["qualification"] = qualifies(figures)
    reading = paired_reading(method, "geometry", other, "against_clear")
    test = reading["against_clear"]
    assert (test["only_first"], test["only_second"]) == (5, 0) and reading["rate_after"] == 0.3
    assert paired_reading(method, "detector", None, "against_clear")["against_clear"] is None
