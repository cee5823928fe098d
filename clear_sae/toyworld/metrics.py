"""What the detector reads off clips: generation rates, preservation, drift, intervals, and whether a concept met
the targets."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from clear_sae.toyworld.captions import concept_word
from clear_sae.toyworld.detector import COLOUR_NAMES, Detections, detect
from clear_sae.toyworld.geometry import judge_clips
from clear_sae.toyworld.render import MOTIONS, SHAPES, ClipSpec
from clear_sae.toyworld.sampling import ClipSet, EvalConfig, ToyWorld
from clear_sae.toyworld.stats import clip_rate, mcnemar, outcomes_of

QUALIFYING_RATE = 0.7
"""A concept counts for the targets when its generation rate without erasure is at least this."""
TARGET_RATE = 0.10
"""Erasure meets the target when the generation rate after it is at most this."""
MAX_PRESERVATION_DROP = 0.03
"""... and non-target preservation falls by at most this."""
RENDERED_SHARE = 0.5
"""A clip renders a colour or shape when the judge finds it in more than this share of its frames (a motion is
found per clip): the yes/no outcome that clip rates and their exact intervals count."""


def concept_found(det: Detections, axis: str, value: str, threshold: float) -> np.ndarray:
    """Per clip: the share of frames in which the detector finds the colour or shape (1/0 for a motion)."""
    if axis == "motion":
        return (det.motion[:, MOTIONS.index(value)] > threshold).astype(np.float64)
    probs = det.colour[..., COLOUR_NAMES.index(value)] if axis == "colour" else det.shape[..., SHAPES.index(value)]
    return (probs > threshold).mean(axis=1)


def attribute_agreement(det: Detections, specs: list[ClipSpec]) -> dict[str, np.ndarray]:
    """Per clip and axis: the share of frames whose strongest colour / shape is the caption's, and whether the
    strongest motion is the caption's (single-object captions). A frame where nothing is found (a rule-based
    judge's all-zero row) agrees with no caption; a class tied for the strongest agrees."""
    colour = np.array([COLOUR_NAMES.index(s.main.colour) for s in specs])
    shape = np.array([SHAPES.index(s.main.shape) for s in specs])
    motion = np.array([MOTIONS.index(s.main.motion) for s in specs])
    return {
        "colour": strongest_is(det.colour, colour[:, None]).mean(1),
        "shape": strongest_is(det.shape, shape[:, None]).mean(1),
        "motion": strongest_is(det.motion, motion).astype(np.float64),
    }


def strongest_is(scores: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Whether class `index` scores highest in each row of `scores` (`[..., classes]`) and above zero."""
    picked = np.take_along_axis(scores, index[..., None], axis=-1)[..., 0]
    return (picked >= scores.max(-1)) & (picked > 0)


def bootstrap_ci(values: np.ndarray, seed: int = 0, resamples: int = 2000) -> list[float]:
    """95% percentile bootstrap interval of the mean, resampling clips."""
    if len(values) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(1)
    return [round(float(np.quantile(means, 0.025)), 4), round(float(np.quantile(means, 0.975)), 4)]


def rounded_mean(values: np.ndarray) -> float:
    """The mean as reports store it (4 decimals)."""
    return round(float(values.mean()), 4)


def summary(values: np.ndarray) -> dict[str, Any]:
    """Mean, 95% interval and count."""
    return {
        "mean": rounded_mean(values) if len(values) else None,
        "ci95": bootstrap_ci(values),
        "clips": int(len(values)),
    }


def read_by_judges(world: ToyWorld, clips: np.ndarray) -> dict[str, Detections]:
    """What both judges read in `clips`: the learned detector's and the rule-based judge's `Detections`."""
    return {"detector": detect(world.detector, clips), "geometry": judge_clips(clips)}


def clip_rates_by_judge(
    readings: dict[str, Detections], axis: str, value: str, threshold: float
) -> dict[str, dict[str, Any]]:
    """Per judge, the share of clips rendering `value` (in more than `RENDERED_SHARE` of their frames for a colour
    or shape) with its exact 95% interval and counts (the per-clip outcomes left out)."""
    out = {}
    for judge, det in readings.items():
        rate = clip_rate(concept_found(det, axis, value, threshold) > RENDERED_SHARE)
        out[judge] = {k: rate[k] for k in ("rate", "ci95", "rendered", "clips")}
    return out


def others_per_clip(
    det: Detections, specs: list[ClipSpec], axis: str, per_axis: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """Per clip, the agreement on the two axes other than `axis`, averaged."""
    per_axis = attribute_agreement(det, specs) if per_axis is None else per_axis
    return np.mean([v for a, v in per_axis.items() if a != axis], axis=0)


def other_attributes_kept(det: Detections, specs: list[ClipSpec], axis: str) -> dict[str, Any]:
    """On target clips: how far the detector still reads the caption's attributes on the two axes the concept is
    not on (a shape's colour and motion), per clip averaged over those axes; an erasure that breaks the object
    rather than changing the one attribute lowers it."""
    per_axis = attribute_agreement(det, specs)
    return summary(others_per_clip(det, specs, axis, per_axis)) | {
        "axes": {a: round(float(v.mean()), 4) for a, v in per_axis.items() if a != axis}
    }


def preservation(det: Detections, specs: list[ClipSpec]) -> tuple[np.ndarray, dict[str, float]]:
    """Per clip the mean agreement over the three axes, and each axis's mean."""
    per_axis = attribute_agreement(det, specs)
    return np.mean(list(per_axis.values()), axis=0), {k: round(float(v.mean()), 4) for k, v in per_axis.items()}


def compare(
    world: ToyWorld, axis: str, value: str, before: dict[str, ClipSet], after: dict[str, ClipSet], cfg: EvalConfig
) -> dict[str, Any]:
    """The figures for one erasure: generation rates, preservation and drift, with intervals, read by the learned
    detector; under `geometry`, the same rates and preservation read by the rule-based judge (`geometry.py`),
    which shares nothing with the detector that calibration reads."""
    result = judged_figures(lambda clips: detect(world.detector, clips), axis, value, before, after, cfg)
    result["geometry"] = judged_figures(judge_clips, axis, value, before, after, cfg)
    drift = np.abs(after["nontarget"].sampled_clips().astype(np.float64) - before["nontarget"].sampled_clips()).mean(
        axis=(1, 2, 3, 4)
    )
    result["pixel_drift_nontarget"] = summary(drift)
    result["nontarget_unchanged"] = int((drift == 0).sum())
    result["clips_resampled"] = {k: s.sampled for k, s in after.items()}
    return result


def judged_figures(
    read: Callable[[np.ndarray], Detections],
    axis: str,
    value: str,
    before: dict[str, ClipSet],
    after: dict[str, ClipSet],
    cfg: EvalConfig,
) -> dict[str, Any]:
    """The figures one judge (`read`: clips to `Detections`) gives an erasure: the generation rates before and
    after, per word, with the words removed, the targets' other attributes, and non-target preservation."""
    det_before = {k: read(s.sampled_clips()) for k, s in before.items()}
    det_after = {k: read(s.sampled_clips()) for k, s in after.items()}
    result: dict[str, Any] = {}
    for name in [n for n in ("target", "heldout", "reserved") if n in det_before]:
        found_before = concept_found(det_before[name], axis, value, cfg.threshold)
        found_after = concept_found(det_after[name], axis, value, cfg.threshold)
        result[f"rate_{name}_before"], result[f"rate_{name}_after"] = summary(found_before), summary(found_after)
        result[f"clips_{name}_before"] = clip_rate(found_before > RENDERED_SHARE)
        result[f"clips_{name}_after"] = clip_rate(found_after > RENDERED_SHARE)
        if name == "target":
            result["rate_target_by_word"] = rates_by_word(before[name].prompts, axis, value, found_before, found_after)
    if "removed" in det_before:
        result["rate_words_removed"] = summary(concept_found(det_before["removed"], axis, value, cfg.threshold))
    for when, det in (("before", det_before["target"]), ("after", det_after["target"])):
        result[f"target_others_{when}"] = other_attributes_kept(det, before["target"].specs, axis)
    specs = before["nontarget"].specs
    kept_before, axes_before = preservation(det_before["nontarget"], specs)
    kept_after, axes_after = preservation(det_after["nontarget"], specs)
    result["preservation_before"] = summary(kept_before) | {"axes": axes_before}
    result["preservation_after"] = summary(kept_after) | {"axes": axes_after}
    result["preservation_drop"] = summary(kept_before - kept_after)
    return result


def rates_by_word(
    prompts: list[str], axis: str, value: str, found_before: np.ndarray, found_after: np.ndarray
) -> dict[str, dict[str, Any]]:
    """The generation rate before and after erasure for each synonym of the concept the prompts use (a latent
    set that misses one phrasing shows here: erasure can take out "yellow" and leave "lemon")."""
    words = np.array([concept_word(p, axis, value) or "" for p in prompts])
    by_word = {}
    for word in sorted(set(words) - {""}):
        rows = words == word
        by_word[word] = {
            "clips": int(rows.sum()),
            "before": rounded_mean(found_before[rows]),
            "after": rounded_mean(found_after[rows]),
        }
    return by_word


def qualifies(result: dict[str, Any]) -> dict[str, Any]:
    """Whether the concept counts (rate before at least 70%), whether erasure met the targets, and whether
    removing the concept's words from the prompts would itself reach the 10% target (None if not measured). Where
    the rule-based judge read the clips too (`geometry`), each verdict needs both judges, and `by_judge` gives
    each judge's own."""
    own = judge_verdict(result)
    second = judge_verdict(result["geometry"]) if "geometry" in result else None
    verdict: dict[str, Any] = {
        key: bool(own[key] and (second is None or second[key])) for key in ("counted", "erased", "preserved")
    }
    verdict["met"] = verdict["counted"] and verdict["erased"] and verdict["preserved"]
    removed = result.get("rate_words_removed", {}).get("mean")
    verdict["reachable_by_removal"] = None if removed is None else bool(removed <= TARGET_RATE)
    if second is not None:
        verdict["by_judge"] = {"detector": own, "geometry": second}
    if "clips_target_after" in result:
        by_judge = {"detector": interval_verdict(result)}
        if "geometry" in result:
            by_judge["geometry"] = interval_verdict(result["geometry"])
        verdict["with_intervals"] = {"met": all(v["met"] for v in by_judge.values()), "by_judge": by_judge}
    return verdict


def interval_verdict(figures: dict[str, Any]) -> dict[str, bool]:
    """One judge's verdict with the uncertainty counted in: counted when at least 70% of clips render the concept
    before erasure, erased when the exact 95% interval of the clip rate after reaches no higher than 10%, and
    preserved when the 95% bootstrap interval of the paired preservation drop reaches no higher than 3 points (it is
    [0, 0] where erasure left every non-target clip bit for bit unchanged). Fewer than 36 target clips can never be
    erased by this rule (0 of 35 still reaches 10.0%)."""
    rate_before = figures["clips_target_before"]["rate"]
    counted = rate_before is not None and rate_before >= QUALIFYING_RATE
    erased = figures["clips_target_after"]["ci95"][1] <= TARGET_RATE
    kept = figures["preservation_drop"]["ci95"][1] <= MAX_PRESERVATION_DROP
    return {
        "counted": bool(counted),
        "erased": bool(erased),
        "preserved": bool(kept),
        "met": bool(counted and erased and kept),
    }


def judge_verdict(figures: dict[str, Any]) -> dict[str, bool]:
    """One judge's verdict on its figures: counted, erased, preserved, met."""
    rate_before = figures["rate_target_before"]["mean"]
    counted = rate_before is not None and rate_before >= QUALIFYING_RATE
    erased = figures["rate_target_after"]["mean"] <= TARGET_RATE
    kept = figures["preservation_drop"]["mean"] <= MAX_PRESERVATION_DROP
    return {
        "counted": counted,
        "erased": bool(erased),
        "preserved": bool(kept),
        "met": bool(counted and erased and kept),
    }


def paired_reading(
    figures: dict[str, Any], judge: str, against: dict[str, Any] | None, key: str = "against"
) -> dict[str, Any]:
    """One judge's reading of one erasure (`compare`'s figures with `qualifies`' verdict, judge `detector` or
    `geometry`): rates, clip rate and preservation drop with intervals, both verdicts, and McNemar's paired test of
    its target clips after erasure against those of erasure `against` (under `key`), sampled from the same prompts and
    noise; None under `key` when there is nothing to pair with."""
    own = figures if judge == "detector" else figures["geometry"]
    clips = own["clips_target_after"]
    verdicts = figures["qualification"]
    return {
        "rate_before": own["rate_target_before"]["mean"],
        "rate_after": own["rate_target_after"]["mean"],
        "clip_rate_after": clips["rate"],
        "clip_rate_after_ci95": clips["ci95"],
        "preservation_drop": own["preservation_drop"]["mean"],
        "preservation_drop_ci95": own["preservation_drop"]["ci95"],
        "met": verdicts["by_judge"][judge]["met"],
        "met_with_intervals": verdicts["with_intervals"]["by_judge"][judge]["met"],
        key: None if against is None else paired_test(clips, against if judge == "detector" else against["geometry"]),
    } | ({"reserved": reserved_reading(own)} if "rate_reserved_before" in own else {})


def paired_test(clips: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """McNemar's test of the target clips after one erasure (`clips`, a `clip_rate`) against those of another (its
    judge's figures)."""
    return mcnemar(outcomes_of(clips["outcomes"]), outcomes_of(base["clips_target_after"]["outcomes"]))


def reserved_reading(judged: dict[str, Any]) -> dict[str, Any]:
    """One judge's figures (`judged_figures`) on the reserved paraphrases, which a final run reads: the rate before
    and after erasure, and the share of clips rendering the concept before and after, the latter with its exact 95%
    interval."""
    return {
        "rate_before": judged["rate_reserved_before"]["mean"],
        "rate_after": judged["rate_reserved_after"]["mean"],
        "clip_rate_before": judged["clips_reserved_before"]["rate"],
        "clip_rate_after": judged["clips_reserved_after"]["rate"],
        "clip_rate_after_ci95": judged["clips_reserved_after"]["ci95"],
        "clips": judged["rate_reserved_before"]["clips"],
    }
