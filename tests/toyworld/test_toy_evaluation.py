"""Toy-world concepts and `clear-sae evaluate`: prompt pairs, metrics, and the evaluation on tiny models."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from clear_sae.errors import ClearSaeError
from clear_sae.toyworld.captions import COLOUR_WORDS, WORDS_BY_AXIS, heldout_vocabulary, naming_word, without_words
from clear_sae.toyworld.concepts import attribute_of, concept_pairs, toy_concepts, toy_corpus
from clear_sae.toyworld.detector import COLOUR_NAMES, Detections
from clear_sae.toyworld.metrics import (
    attribute_agreement,
    bootstrap_ci,
    concept_found,
    other_attributes_kept,
    qualifies,
    summary,
)
from clear_sae.toyworld.protocol import protocol_digest, weights_record
from clear_sae.toyworld.render import MOTIONS, SHAPES, ClipSpec, ToyObject
from clear_sae.toyworld.sampling import WEIGHTS_DIR, clip_noise


def _names(text: str, words: list[str]) -> bool:
    return any(re.search(rf"\b{re.escape(w)}\b", text) for w in words)


def masked(text: str, words: list[str]) -> str:
    """`text` with the one word of `words` it holds (and its article) replaced by a mark."""
    word = next(w for w in words if _names(text, [w]))
    return re.sub(rf"\b{re.escape(word)}\b", "#", text).replace("an #", "a #").replace("An #", "A #")


def test_concept_pairs_differ_only_in_the_concept():
    targets, nontargets, target_specs, nontarget_specs = concept_pairs("colour", "red", 40)
    red_words = COLOUR_WORDS["red"]
    for t, n, ts, ns in zip(targets, nontargets, target_specs, nontarget_specs):
        assert ts.main.colour == "red" and ns.main.colour != "red"
        assert (ts.main.shape, ts.main.motion, ts.background) == (ns.main.shape, ns.main.motion, ns.background)
        assert _names(t, red_words) and not _names(n, red_words)

        assert masked(t, COLOUR_WORDS["red"]) == masked(n, COLOUR_WORDS[ns.main.colour])
    assert len(set(targets)) > 20
    again = concept_pairs("colour", "red", 40)
    assert again[0] == targets  # seeded
    assert concept_pairs("colour", "red", 40, seed=5)[0] != targets


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_no_concept_word_leaks_into_other_phrases(split):
    """A non-target caption never names the concept (e.g. no "orange" inside a background phrase)."""
    from clear_sae.toyworld.captions import MOTION_WORDS, SHAPE_WORDS

    tables = {"colour": COLOUR_WORDS, "shape": SHAPE_WORDS, "motion": MOTION_WORDS}
    for name in toy_concepts():
        axis, value = attribute_of(name)
        _, nontargets, _, _ = concept_pairs(axis, value, 60, split=split, seed=11)
        assert not [n for n in nontargets if _names(n, tables[axis][value])], name


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_without_words_takes_out_the_concept_and_nothing_else(split):
    """A target stripped of its value reads exactly like its non-target stripped of the other value."""
    for name in toy_concepts():
        axis, value = attribute_of(name)
        targets, nontargets, _, nontarget_specs = concept_pairs(axis, value, 30, split=split, seed=4)
        for t, n, ns in zip(targets, nontargets, nontarget_specs):
            stripped = without_words(t, axis, value)
            assert not _names(stripped.lower(), WORDS_BY_AXIS[axis][value]), (name, stripped)
            assert stripped == without_words(n, axis, getattr(ns.main, axis)), (t, n)
    assert without_words("An orange disc drifts left.", "colour", "orange") == "A disc drifts left."
    assert without_words("a red X shape rises", "shape", "cross") == "a red shape rises"


def test_heldout_pairs_use_only_heldout_words():
    targets, _, _, _ = concept_pairs("shape", "triangle", 30, split="heldout", seed=3)
    assert all("wedge" in t for t in targets)  # the held-out synonym of triangle
    train, _, _, _ = concept_pairs("shape", "triangle", 60, split="train", seed=3)
    assert not any(w in t for t in train for w in heldout_vocabulary())


def test_the_naming_word_of_a_synonym_is_the_one_holding_the_values_name_or_else_its_longest():
    assert naming_word("drifts left", "left") == "left" and naming_word("rises", "rise") == "rises"
    assert naming_word("crimson", "red") == "crimson" and naming_word("horizontal bar", "bar") == "bar"
    assert naming_word("floats upward", "rise") == "floats" and naming_word("X shape", "cross") == "shape"


def test_renamed_puts_the_values_own_name_with_a_new_naming_word_where_any_synonym_was():
    from clear_sae.toyworld.captions import renamed

    assert renamed("a crimson disc drifts left", "motion", "left", "lfet") == "a crimson disc moves to the lfet"
    assert renamed("a crimson disc drifts left", "colour", "red", "brown") == "a brown disc drifts left"
    assert renamed("an orange X shape sinks toward the bottom", "motion", "fall", "flals") == "an orange X shape flals"
    assert renamed("a vermilion orb soars", "colour", "red", "rde") == "a rde orb soars"  # reserved synonyms too
    assert renamed("a grey shape sits", "colour", "red", "rde") == "a grey shape sits"  # nothing to rename


def test_attribute_names():
    assert attribute_of("red") == ("colour", "red")
    assert attribute_of("shape=circle") == ("shape", "circle")
    assert len(toy_concepts()) == 16 and len(set(toy_concepts())) == 16
    with pytest.raises(ClearSaeError, match="not a toy-world attribute"):
        attribute_of("dog")
    with pytest.raises(ClearSaeError, match="not a toy-world attribute"):
        attribute_of("colour=circle")
    corpus = toy_corpus(50)
    assert len(corpus) == 50 and len(set(corpus)) > 40 and corpus == toy_corpus(50)


def _detections(n: int = 2, frames: int = 4) -> Detections:
    return Detections(
        np.zeros((n, frames, len(SHAPES))), np.zeros((n, frames, len(COLOUR_NAMES))), np.zeros((n, len(MOTIONS)))
    )


def test_generation_rate_counts_frames_and_motion_per_clip():
    det = _detections()
    red = COLOUR_NAMES.index("red")
    det.colour[0, :3, red] = 0.9  # 3 of 4 frames
    det.colour[1, 0, red] = 0.5  # at the threshold: not found
    assert concept_found(det, "colour", "red", 0.5).tolist() == [0.75, 0.0]
    det.motion[1, MOTIONS.index("fall")] = 0.8
    assert concept_found(det, "motion", "fall", 0.5).tolist() == [0.0, 1.0]
    det.shape[:, :, SHAPES.index("bar")] = 0.7
    assert concept_found(det, "shape", "bar", 0.5).tolist() == [1.0, 1.0]


def test_preservation_reads_the_strongest_class_per_axis():
    det = _detections(1)
    det.colour[0, :, COLOUR_NAMES.index("blue")] = 0.9
    det.colour[0, 0, COLOUR_NAMES.index("green")] = 0.95  # one frame reads green
    det.shape[0, :, SHAPES.index("cross")] = 0.6
    det.motion[0, MOTIONS.index("left")] = 0.3  # strongest motion even below the threshold
    agree = attribute_agreement(det, [ClipSpec(ToyObject("cross", "blue", "left"))])
    assert agree["colour"].tolist() == [0.75] and agree["shape"].tolist() == [1.0]
    assert agree["motion"].tolist() == [1.0]


def test_other_attributes_kept_leaves_out_the_concepts_own_axis():
    det = _detections(2)
    det.colour[:, :, COLOUR_NAMES.index("blue")] = 0.9
    det.shape[0, :, SHAPES.index("cross")] = 0.8  # clip 1 reads a circle: the shape was erased
    det.shape[1, :, SHAPES.index("circle")] = 0.8
    det.motion[0, MOTIONS.index("left")] = 0.9
    det.motion[1, MOTIONS.index("rise")] = 0.9  # clip 1 also lost its motion
    specs = [ClipSpec(ToyObject("cross", "blue", "left"))] * 2
    kept = other_attributes_kept(det, specs, "shape")  # colour and motion
    assert kept["axes"] == {"colour": 1.0, "motion": 0.5} and kept["mean"] == 0.75 and kept["clips"] == 2
    assert other_attributes_kept(det, specs, "motion")["axes"] == {"colour": 1.0, "shape": 0.5}


def test_bootstrap_interval_and_qualification():
    rng = np.random.default_rng(0)
    values = (rng.random(400) < 0.3).astype(float)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high and high - low < 0.12
    narrow = bootstrap_ci(np.repeat(values, 10))
    assert narrow[1] - narrow[0] < high - low
    result = {
        "rate_target_before": summary(np.full(10, 0.9)),
        "rate_target_after": summary(np.full(10, 0.05)),
        "preservation_drop": summary(np.full(10, 0.02)),
    }
    assert qualifies(result) == {
        "counted": True,
        "erased": True,
        "preserved": True,
        "met": True,
        "reachable_by_removal": None,
    }
    result["preservation_drop"] = summary(np.full(10, 0.05))
    assert not qualifies(result)["met"] and not qualifies(result)["preserved"]
    result["rate_words_removed"] = summary(np.full(10, 0.4))
    assert qualifies(result)["reachable_by_removal"] is False


def test_a_verdict_needs_both_judges():
    """Where the rule-based judge read the clips too, erasure meets the targets only if both judges say so; each
    judge's own verdict is kept."""
    met = {
        "rate_target_before": summary(np.full(10, 0.9)),
        "rate_target_after": summary(np.full(10, 0.05)),
        "preservation_drop": summary(np.full(10, 0.0)),
    }
    missed = met | {"rate_target_after": summary(np.full(10, 0.3))}
    assert qualifies(met | {"geometry": dict(met)})["met"]
    verdict = qualifies(met | {"geometry": missed})
    assert not verdict["met"] and not verdict["erased"] and verdict["counted"] and verdict["preserved"]
    assert verdict["by_judge"]["detector"]["met"] and not verdict["by_judge"]["geometry"]["met"]
    assert not qualifies(missed | {"geometry": dict(met)})["met"]


def test_rates_by_word_groups_clips_by_the_synonym_their_caption_uses():
    from clear_sae.toyworld.captions import concept_word
    from clear_sae.toyworld.metrics import rates_by_word

    assert concept_word("a lemon bar grows", "colour", "yellow") == "lemon"
    assert concept_word("an X shape falls", "shape", "cross") == "X shape"
    assert concept_word("a diagonal cross falls", "shape", "cross") == "diagonal cross"
    assert concept_word("a red bar grows", "colour", "yellow") is None
    prompts = ["a yellow bar grows", "a lemon disc falls", "a Lemon cross rises", "a red bar grows"]
    rates = rates_by_word(prompts, "colour", "yellow", np.array([1.0, 1.0, 0.5, 0.0]), np.array([0.0, 0.5, 1.0, 0.0]))
    assert rates == {
        "lemon": {"clips": 2, "before": 0.75, "after": 0.75},
        "yellow": {"clips": 1, "before": 1.0, "after": 0.0},
    }


def test_eval_config_refuses_empty_sets():
    from clear_sae.toyworld.sampling import EvalConfig

    with pytest.raises(ClearSaeError, match="heldout_clips must be at least 1"):
        EvalConfig(heldout_clips=0)
    with pytest.raises(ClearSaeError, match="removed_clips must be at least 0"):
        EvalConfig(removed_clips=-1)


def test_clip_noise_does_not_depend_on_batching():
    both = clip_noise([3, 4])
    assert clip_noise([4])[0].equal(both[1])
    assert not both[0].equal(both[1])


def test_evaluate_on_tiny_models(tiny_toy_generator, toy_library):
    from clear_sae.library import ConceptLibrary
    from clear_sae.toyworld.evaluation import evaluate
    from clear_sae.toyworld.report import format_results
    from clear_sae.toyworld.sampling import EvalConfig, load_toy_world

    world = load_toy_world(tiny_toy_generator)
    library = ConceptLibrary.load(toy_library)
    cfg = EvalConfig(
        clips=4, heldout_clips=3, nontarget_clips=4, removed_clips=2, steps=2, batch_size=3, progress=False
    )
    report = evaluate(world, library, ["red"], cfg=cfg, sweep=True)
    r = report["concepts"]["red"]
    assert r["rate_words_removed"]["clips"] == 2 and "removed" not in r["clips_resampled"]
    assert r["qualification"]["reachable_by_removal"] == (r["rate_words_removed"]["mean"] <= 0.10)
    assert r["axis"] == "colour" and r["layer"] == library.get("red").hook_point
    assert r["rate_target_before"]["clips"] == 4 and r["rate_heldout_after"]["clips"] == 3
    assert r["preservation_before"]["clips"] == 4
    by_word = r["rate_target_by_word"]
    assert set(by_word) <= {"red", "crimson"} and sum(w["clips"] for w in by_word.values()) == 4
    # Non-target clips that were not sampled again are the very same clips: no drift for them.
    assert r["nontarget_unchanged"] >= 4 - r["clips_resampled"]["nontarget"]
    assert r["clips_resampled"]["target"] >= 1  # the concept fires on the targets, so they change
    assert set(r["sweep"]) == set(library.get("red").layer_scores)
    assert [h for h, s in r["sweep"].items() if s.get("selected")] == [r["layer"]]
    table = format_results(report)
    assert "red" in table and "<- selected by CLEAR" in table and "no words" in table
    clips_after = r["clips_target_after"]
    assert clips_after["clips"] == 4 and clips_after["rendered"] == clips_after["outcomes"].count("1")
    assert f"{clips_after['rendered']} of 4 [" in table and "not met with intervals" in table  # 4 clips never bound 10%
    assert r["qualification"]["with_intervals"]["met"] is False
    missed = {**report, "concepts": {"red": {**r, "qualification": {**r["qualification"], "erased": False}}}}
    lines = [line for line in format_results(missed).splitlines() if "rate after by word:" in line]
    assert len(lines) == 1 and all(
        f"{w!r} {100 * v['after']:.1f}% ({v['clips']} clips)" in lines[0] for w, v in by_word.items()
    )
    assert (
        "rate_words_removed"
        not in evaluate(world, library, ["red"], cfg=replace(cfg, removed_clips=0))["concepts"]["red"]
    )
    # Same seeds, same figures.
    again = evaluate(world, library, ["red"], cfg=cfg)
    assert again["concepts"]["red"]["rate_target_after"] == r["rate_target_after"]


def _evaluate_args(library, generator, out) -> list[str]:
    """`clear-sae evaluate` on the tiny world, with the fewest clips each part takes."""
    return [
        "evaluate",
        "--library",
        str(library),
        "--generator",
        str(generator),
        "--out",
        str(out),
        "--clips",
        "2",
        "--heldout-clips",
        "1",
        "--nontarget-clips",
        "2",
        "--removed-clips",
        "1",
        "--steps",
        "1",
    ]


def test_cli_evaluate_writes_a_report(tiny_toy_generator, toy_library, tmp_path, capsys):
    from clear_sae.cli import main

    out = tmp_path / "eval.json"
    args = _evaluate_args(toy_library, tiny_toy_generator, out)
    assert main(args + ["--concept", "circle"]) == 0
    report = json.loads(out.read_text())
    assert report["format"] == "clear_sae.toy_evaluation" and list(report["concepts"]) == ["circle"]
    circle = report["concepts"]["circle"]
    assert circle["rate_words_removed"]["clips"] == 1
    assert set(circle["target_others_after"]["axes"]) == {"colour", "motion"}
    assert circle["strip"] == "eval_strips/circle.png" and (tmp_path / circle["strip"]).stat().st_size > 0
    assert len(circle["strip_rows"]) == 2 * (2 + 2)  # two target and two non-target clips, before and after
    assert "report ->" in capsys.readouterr().out
    protocol = report["protocol"]
    weights = weights_record(tiny_toy_generator, WEIGHTS_DIR / "detector")  # the shipped detector reads the clips
    assert protocol == {"seed": 1000, "split": "development", "final": False, "digest": protocol_digest()} | {
        "weights": weights
    }
    for judge in ("detector", "geometry"):  # every verdict needs both judges, each judge's own is kept
        assert set(circle["qualification"]["by_judge"][judge]) == {"counted", "erased", "preserved", "met"}
    assert circle["geometry"]["rate_target_before"]["clips"] == circle["rate_target_before"]["clips"]
    final = args + ["--concept", "circle", "--seed", "90001", "--final", "--reserved-clips", "2"]
    assert main(final) == 0  # an earlier report may be overwritten
    report = json.loads(out.read_text())
    assert report["protocol"]["split"] == "test"
    for judged in (report["concepts"]["circle"], report["concepts"]["circle"]["geometry"]):
        assert judged["rate_reserved_before"]["clips"] == judged["clips_reserved_after"]["clips"] == 2
    assert "reserved paraphrases (2 clips): detector" in capsys.readouterr().out


BAD_EVALUATE_RUNS = {
    "cut detector": (["--concept", "red", "--detector", "{cut_detector}"], "cannot load the toy detector"),
    "broken generator": (["--concept", "red", "--generator", "{broken_generator}"], "cannot load the toy generator"),
    "out is not a report": (None, "is not a toy evaluation"),
    "unknown concept": (["--concept", "nope"], "nope"),
    "attribute without value": (["--concept", "red", "--attribute", "red=colour"], "NAME=AXIS=VALUE"),
    "attribute not of the world": (["--concept", "red", "--attribute", "red=colour=dog"], "not a toy-world attribute"),
    "attribute of another concept": (
        ["--concept", "red", "--attribute", "rde=colour=red"],
        "names a concept this run does not take",
    ),
    "missing detector": (["--concept", "red", "--detector", "{tmp}/missing"], "detector"),
    "learning seed": (["--concept", "red", "--seed", "0"], "learned from"),
    "calibration seed": (["--concept", "red", "--seed", "600"], "calibration judged its rungs on"),
    "negative seed": (["--concept", "red", "--seed", "-3"], "negative"),
    "test seed outside the final run": (["--concept", "red", "--seed", "90000"], "test seed of the sealed protocol"),
    "final run on a development seed": (["--concept", "red", "--final"], "--final reads the sealed test seeds only"),
    "reserved paraphrases outside the final run": (
        ["--concept", "red", "--reserved-clips", "2"],
        "reserved paraphrases",
    ),
}
"""Bad `evaluate` runs and what their one-line error names; {placeholders} are folders the test makes."""


@pytest.mark.parametrize("case", list(BAD_EVALUATE_RUNS))
def test_cli_evaluate_refuses_bad_input_in_one_line_and_keeps_files(
    case, tiny_toy_generator, toy_library, tmp_path, capsys
):
    import shutil

    from clear_sae.cli import main
    from clear_sae.toyworld.sampling import WEIGHTS_DIR

    kept = tmp_path / "notes.txt"
    kept.write_text("keep me")
    cut_detector = shutil.copytree(WEIGHTS_DIR / "detector", tmp_path / "cut_detector")
    weights = cut_detector / "detector.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])  # as an interrupted copy leaves it
    broken_generator = shutil.copytree(tiny_toy_generator, tmp_path / "broken_generator")
    (broken_generator / "transformer" / "config.json").write_text("{ not json")
    extra, message = BAD_EVALUATE_RUNS[case]
    if extra is None:
        argv = ["evaluate", "--library", str(toy_library), "--out", str(kept), "--concept", "red"]
    else:
        folders = {"cut_detector": cut_detector, "broken_generator": broken_generator, "tmp": tmp_path}
        argv = _evaluate_args(toy_library, tiny_toy_generator, tmp_path / "eval.json")
        argv += [a.format(**folders) for a in extra]
    assert main(argv) == 3
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("clear-sae: error")]
    assert len(errors) == 1 and message in errors[0]
    assert kept.read_text() == "keep me"


SHIPPED_LIBRARY = Path(__file__).resolve().parents[2] / "dictionaries" / "minilm" / "concepts.json"
SHIPPED_CONCEPT = "fall"
"""A shipped toy concept that the README's evaluation shows CLEAR erasing."""


@pytest.mark.artifacts
def test_shipped_world_erasure_lowers_the_rate_and_keeps_nontarget_clips():
    """The real generator, detector and library entry: on a fixed seed set, erasing the concept lowers its
    detected rate, and a non-target prompt on which no concept latent fires gives the very same clip."""
    from clear_sae.library import ConceptLibrary
    from clear_sae.toyworld.evaluation import evaluate
    from clear_sae.toyworld.sampling import EvalConfig, load_toy_world

    library = ConceptLibrary.load(SHIPPED_LIBRARY)
    cfg = EvalConfig(clips=6, heldout_clips=2, nontarget_clips=6, progress=False)
    r = evaluate(load_toy_world(), library, [SHIPPED_CONCEPT], cfg=cfg)["concepts"][SHIPPED_CONCEPT]
    assert r["rate_target_before"]["mean"] >= 0.7
    assert r["rate_target_after"]["mean"] <= r["rate_target_before"]["mean"] - 0.3
    assert r["nontarget_unchanged"] >= 1


class CountingPipe:
    """A toy pipeline that records the number of clips in each batch it samples."""

    def __init__(self, pipe):
        self.pipe, self.batches = pipe, []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        self.batches.append(len(kwargs["latents"]))
        return self.pipe(**kwargs)


@pytest.mark.artifacts
def test_generation_judge_reads_the_shipped_world_and_is_rebuilt_from_its_settings():
    """The judge a toy concept's calibration uses: without hooks it finds the concept in the clips and no
    preservation change; with the shipped entry's clamp the concept mostly goes; an entry's recorded settings
    build the same judge again."""
    from clear_sae.library import ConceptLibrary
    from clear_sae.toyworld.evaluation import clamps_at
    from clear_sae.toyworld.judge import GenerationJudge, judge_from_settings
    from clear_sae.toyworld.sampling import Intervention, load_toy_world, sample_after

    world = load_toy_world()
    judge = GenerationJudge(world, "motion", SHIPPED_CONCEPT, clips=4, nontarget_clips=4)
    plain = judge({})
    assert plain.found >= 0.75 and plain.preservation_drop == 0.0 and plain.others_drop == 0.0
    erased = judge(clamps_at(ConceptLibrary.load(SHIPPED_LIBRARY), SHIPPED_CONCEPT))
    assert erased.found <= plain.found - 0.5
    # A rung that cannot pass (more found than `max_found`) is judged on its target clips alone.
    hopeless = GenerationJudge(world, "motion", SHIPPED_CONCEPT, clips=4, nontarget_clips=4, max_found=0.5)({})
    assert hopeless.found == plain.found and hopeless.preservation_drop is None and hopeless.others_drop == 0.0
    assert world.folders is not None and judge.settings()["weights"] == weights_record(*world.folders)
    # A negative prompt that leaves the motion alone re-samples every clip. Asked to give up above 10%, a judge
    # sampling 2 clips a batch stops after the first: the concept is in most clips. Its verdict is a lower bound, and
    # the batch it sampled is the one a full run samples.
    counting = CountingPipe(world.pipe)
    stopping = GenerationJudge(replace(world, pipe=counting), "motion", SHIPPED_CONCEPT, clips=4, nontarget_clips=4)
    stopping.cfg.batch_size = 2
    stopping({})  # samples the clips before erasure
    other_negative = Intervention(negative_prompt="a green triangle")
    counting.batches.clear()
    gave_up = stopping(other_negative, give_up_above=0.1)
    assert counting.batches == [2] and not gave_up.complete and gave_up.preservation_drop is None
    whole = stopping(other_negative)
    assert whole.complete and 0.1 < gave_up.found <= whole.found
    sets, cfg = {"target": stopping.before["target"]}, stopping.cfg
    full = sample_after(world, other_negative, sets, stopping.negative, cfg)["target"]
    part = sample_after(world, other_negative, sets, stopping.negative, cfg, stop=lambda *_: True)["target"]
    assert full.complete and full.sampled == 4 and not part.complete and part.sampled == 2
    assert np.array_equal(part.sampled_clips()[:2], full.sampled_clips()[:2])
    again = judge_from_settings(world, "motion", SHIPPED_CONCEPT, judge.settings())
    assert again is not None and again.settings() == judge.settings()
    assert judge_from_settings(world, "motion", SHIPPED_CONCEPT, {"name": "probe"}) is None
    with pytest.raises(ClearSaeError, match="at least one target and one non-target clip"):
        GenerationJudge(world, "motion", SHIPPED_CONCEPT, clips=0)


def test_cli_toy_concept_calibrates_on_clips_and_keeps_other_entries(
    minilm_dictionaries, minilm_library, tiny_toy_generator, tmp_path, capsys
):
    import shutil

    from clear_sae.cli import build_parser, main
    from clear_sae.library import ConceptLibrary
    from clear_sae.toyworld.concepts import JUDGE_CLIPS, PAPER_STRENGTH

    library = tmp_path / "concepts.json"
    shutil.copy(minilm_library, library)
    before = ConceptLibrary.load(library)
    for entry in before.concepts.values():  # the copy's entries still point at the test dictionaries
        entry.dictionary = before.relative_dictionary(minilm_dictionaries)
    before.save()
    args = ["toy-concept", "--dictionaries", str(minilm_dictionaries), "--library", str(library)]
    assert main(args + ["--concept", "red", "--judge-clips", "2", "--generator", str(tiny_toy_generator)]) == 0
    after = ConceptLibrary.load(library)
    assert set(after.concepts) == {"french_horn", "umbrella", "red"}
    assert after.get("umbrella") == before.get("umbrella")
    calibration = after.get("red").calibration
    assert calibration.judge["name"] == "generation" and calibration.judge["clips"] == 2
    assert re.search(
        r"^red .* latents: (passed|no rung passed; kept) at rung \d+ of \d+ tried, judge finds",
        capsys.readouterr().out,
        flags=re.MULTILINE,
    )
    assert main(args + ["--concept", "left", "--judge-clips", "0", "--paper"]) == 0  # the text-side probe judges
    both = ConceptLibrary.load(library)
    assert both.get("left").calibration.config["judge"] == "probe"
    paper = both.get("left-paper")  # beside the calibrated entry: the paper's layer at its one strength, no judge
    assert paper.calibration is None and paper.strength == PAPER_STRENGTH and paper.toy_attribute == "motion=left"
    assert paper.latents and paper.target_prompts == both.get("left").target_prompts
    assert build_parser().parse_args(args).judge_clips == JUDGE_CLIPS  # the shipped library's judge
    snapshot = library.read_bytes()
    assert main(args + ["--concept", "mauve"]) == 3
    assert "not a toy-world concept" in capsys.readouterr().err and library.read_bytes() == snapshot


def test_cli_toy_concept_learns_from_own_prompt_files_and_evaluate_reads_its_attribute(
    minilm_dictionaries, tiny_toy_generator, tmp_path, capsys
):
    from clear_sae.cli import main
    from clear_sae.library import ConceptLibrary

    colours = ["blue", "green", "yellow", "purple"]
    things = ["ball", "kite", "box", "leaf", "cube", "blob"]
    target = [f"a scarlet {thing} slides across the frame, shot {i}" for i in range(3) for thing in things]
    nontarget = [f"a {colours[i % 4]} {thing} slides across the frame, shot {i}" for i in range(3) for thing in things]
    (tmp_path / "red.txt").write_text("\n".join(target))
    (tmp_path / "other.txt").write_text("\n".join(nontarget))
    library = tmp_path / "mine.json"
    args = [
        "toy-concept",
        "--dictionaries",
        str(minilm_dictionaries),
        "--library",
        str(library),
        "--generator",
        str(tiny_toy_generator),
        "--judge-clips",
        "2",
        "--concept",
        "scarlet_things",
    ]
    own = ["--target", str(tmp_path / "red.txt"), "--nontarget", str(tmp_path / "other.txt")]
    assert main(args + ["--attribute", "scarlet_things=colour=red"] + own) == 0
    assert "from " + str(tmp_path / "red.txt") in capsys.readouterr().out
    entry = ConceptLibrary.load(library).get("scarlet_things")
    assert entry.target_prompts == target and entry.nontarget_prompts == nontarget  # the files, not the toy prompts
    assert entry.toy_attribute == "colour=red"
    assert entry.calibration.judge["name"] == "generation"

    out = tmp_path / "eval.json"  # no --concept, no --attribute: the entry says what it stands for
    assert (
        main(
            [
                "evaluate",
                "--library",
                str(library),
                "--generator",
                str(tiny_toy_generator),
                "--out",
                str(out),
                "--clips",
                "2",
                "--heldout-clips",
                "1",
                "--nontarget-clips",
                "1",
                "--removed-clips",
                "0",
                "--steps",
                "1",
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())["concepts"]["scarlet_things"]
    assert (result["axis"], result["value"]) == ("colour", "red")

    snapshot = library.read_bytes()
    bad_runs = [
        (args + own, "not a toy-world concept"),  # a name that is no attribute, with no --attribute
        (args + ["--attribute", "scarlet_things=colour=crimson"] + own, "not a toy-world attribute"),
        (args + ["--attribute", "scarlet_things=colour=red", "--target", str(tmp_path / "red.txt")], "together"),
        (args + ["--attribute", "scarlet_things=colour=red", "--concept", "red"] + own, "a single --concept"),
        (args + ["--attribute", "scarlet_thing=colour=red"] + own, "not a toy-world concept"),
        (
            args + ["--attribute", "scarlet_things=colour=red", "--attribute", "scarlet_thingz=colour=red"] + own,
            "names a concept this run does not take",
        ),
        (
            args
            + [
                "--attribute",
                "scarlet_things=colour=red",
                "--target",
                str(tmp_path / "none.txt"),
                "--nontarget",
                str(tmp_path / "other.txt"),
            ],
            "does not exist",
        ),
    ]
    for argv, message in bad_runs:
        assert main(argv) == 3
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("clear-sae: error")]
        assert len(errors) == 1 and message in errors[0], (argv, errors)
    assert library.read_bytes() == snapshot


def test_entry_attribute_prefers_what_is_given_then_what_the_entry_records_then_its_name():
    from types import SimpleNamespace

    from clear_sae.toyworld.concepts import entry_attribute

    recorded = SimpleNamespace(name="red_things", toy_attribute="colour=red")
    plain = SimpleNamespace(name="blue", toy_attribute=None)
    assert entry_attribute(recorded) == "colour=red"
    assert entry_attribute(recorded, "colour=green") == "colour=green"
    assert entry_attribute(plain) == "blue"


def test_strip_carries_each_rows_label_beside_unchanged_clips(tmp_path):
    from PIL import Image

    from clear_sae.toyworld.media import fit_lines, save_strip

    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8) for _ in range(4)]
    prompt = "a crimson horizontal bar drifts slowly to the left against a sunset gradient " * 3
    labels = [f"target {i // 2}: {'before' if i % 2 == 0 else 'after erasure'}\n{prompt}" for i in range(4)]
    bare = np.asarray(Image.open(save_strip(clips, tmp_path / "bare.png", scale=3)))
    shown = np.asarray(Image.open(save_strip(clips, tmp_path / "shown.png", scale=3, labels=labels, label_width=150)))
    assert shown.shape == (bare.shape[0], bare.shape[1] + 150, 3)  # larger by the label column only
    assert np.array_equal(shown[:, 150:], bare)  # the clips' pixels as they were
    row = bare.shape[0] // 4 + 1  # each clip's row, with its gap
    for k in range(4):
        column = shown[k * row : k * row + 8 * 3, :150]
        assert (column < 128).any(), k  # a label was drawn beside every row
    with pytest.raises(ValueError, match="3 labels for 4 clips"):
        save_strip(clips, tmp_path / "x.png", labels=labels[:3])

    def width(text: str) -> float:
        return len(text)  # one unit per character

    lines = fit_lines("before\n" + "word " * 40, 20, 3, width)
    assert lines[0] == "before" and len(lines) == 3 and all(len(line) <= 20 for line in lines)
    assert lines[-1].endswith("...")  # the rest of the prompt did not fit
    assert fit_lines("after erasure\nshort", 20, 3, width) == ["after erasure", "short"]
    assert fit_lines("x" * 30, 10, 2, width) == ["x" * 7 + "..."]  # a word wider than the line is cut


def test_the_reserved_slice_occurs_in_nothing_a_concept_is_learned_or_calibrated_from():
    """Every reserved word of a colour, shape or motion is absent from the demo's corpus (general captions and toy
    captions), every shipped prompt file, the toy learning and calibration prompts, and every training and held-out
    caption; and no reserved synonym holds another slice's naming word (the held-out "slides to the right" holds
    "right"; "roams eastward" must not)."""
    from clear_sae.cli.demo import PROMPTS_DIR, DemoConfig, demo_corpus
    from clear_sae.toyworld.captions import RESERVED_WORDS, naming_word, reserved_vocabulary
    from clear_sae.toyworld.protocol import CALIBRATION_SEED, LEARN_SEED

    reserved = reserved_vocabulary()
    assert len(reserved) >= 16

    def words_in(texts: list[str]) -> set[str]:
        return {w for text in texts for w in re.findall(r"[a-z]+", text.lower())}

    texts = demo_corpus(DemoConfig())
    texts += [line for path in sorted(PROMPTS_DIR.rglob("*.txt")) for line in path.read_text().splitlines()]
    texts += [line for path in sorted((Path(__file__).parents[2] / "examples").rglob("*.txt"))
              for line in path.read_text().splitlines()]  # fmt: skip
    for axis, values in WORDS_BY_AXIS.items():
        for value in values:
            for split, seed in (("train", LEARN_SEED), ("train", CALIBRATION_SEED), ("heldout", 1000)):
                targets, nontargets, _, _ = concept_pairs(axis, value, 200, split, seed)
                texts += targets + nontargets
    texts += toy_corpus(2000)
    assert not reserved & words_in(texts)
    for axis, table in WORDS_BY_AXIS.items():
        naming = {naming_word(s, v).lower() for v, synonyms in table.items() for s in synonyms}
        for value, synonyms in RESERVED_WORDS[axis].items():
            for word in (w.lower() for s in synonyms for w in s.split()):
                assert not any(n in word for n in naming), (value, word)


def test_reserved_captions_name_each_attribute_by_its_reserved_synonym_and_lose_it_without_words():
    from clear_sae.toyworld.captions import RESERVED_WORDS, caption, concept_word

    rng = np.random.default_rng(3)
    for _ in range(200):
        spec = ClipSpec(
            ToyObject(str(rng.choice(SHAPES)), str(rng.choice(COLOUR_NAMES)), str(rng.choice(MOTIONS))),
            str(rng.choice(["plain", "checker", "gradient"])),
        )
        text = caption(spec, rng, "reserved")
        for axis in ("colour", "shape", "motion"):
            value = getattr(spec.main, axis)
            assert concept_word(text, axis, value) == RESERVED_WORDS[axis][value][0]
            assert not _names(text, WORDS_BY_AXIS[axis][value])
            assert concept_word(without_words(text, axis, value), axis, value) is None
        assert RESERVED_WORDS["background"][spec.background][0] in text


def test_the_generator_draws_reserved_captions_only_when_asked_and_keeps_its_recipe_at_zero():
    """At rate 0 the training batch is the shipped recipe's, draw for draw; at rate 1 every caption is reserved."""
    from clear_sae.toyworld.captions import caption, reserved_vocabulary
    from clear_sae.toyworld.generator import caption_split, training_batch
    from clear_sae.toyworld.render import RenderConfig, random_clips

    rng = np.random.default_rng(5)
    specs, _ = random_clips(rng, 6, RenderConfig(), 0.25, 0.1)
    recipe = [caption(s, rng, "train") for s in specs]
    assert training_batch(np.random.default_rng(5), 6, RenderConfig(), 0.25, 0.1, 0.0)[0] == recipe
    reserved, _ = training_batch(np.random.default_rng(5), 6, RenderConfig(), 0.25, 0.1, 1.0)
    assert all(set(re.findall(r"[a-z]+", text.lower())) & reserved_vocabulary() for text in reserved)
    state = np.random.default_rng(9)
    before = state.bit_generator.state
    assert caption_split(state, 0.0) == "train" and state.bit_generator.state == before
    assert {caption_split(np.random.default_rng(s), 0.5) for s in range(20)} == {"train", "reserved"}


def test_keyword_captions_name_one_attribute_of_the_main_object_and_only_when_asked():
    """A keyword caption is the training synonyms of an attribute the clip shows, the negative-prompt baseline's
    form; an all-unnamed object has none, and at rate 0 the recipe's draws are untouched."""
    from clear_sae.toyworld.captions import keyword_caption, training_words
    from clear_sae.toyworld.generator import training_batch
    from clear_sae.toyworld.render import NEUTRAL, ClipSpec, RenderConfig, ToyObject

    spec = ClipSpec(ToyObject("circle", "red", "left"))
    drawn = {keyword_caption(spec, np.random.default_rng(s)) for s in range(30)}
    shown = (("shape", "circle"), ("colour", "red"), ("motion", "left"))
    assert drawn == {", ".join(training_words(*attribute)) for attribute in shown}
    assert keyword_caption(ClipSpec(ToyObject(**NEUTRAL)), np.random.default_rng(0)) is None
    plain = training_batch(np.random.default_rng(5), 8, RenderConfig(), 0.25, 0.1, 0.0)[0]
    assert training_batch(np.random.default_rng(5), 8, RenderConfig(), 0.25, 0.1, 0.0, 0.0)[0] == plain
    keywords = training_batch(np.random.default_rng(5), 8, RenderConfig(), 0.25, 0.1, 0.0, 1.0)[0]
    named = {", ".join(training_words(a, v)) for a, table in WORDS_BY_AXIS.items() for v in table}
    assert all(k in named for k in keywords)


def test_the_reserved_paraphrases_are_a_set_of_their_own_only_when_asked():
    """The reserved set speaks only the reserved slice's words, with noise no other set uses; none by default."""
    from clear_sae.toyworld.captions import reserved_vocabulary
    from clear_sae.toyworld.sampling import EvalConfig, prompt_sets

    assert "reserved" not in prompt_sets("colour", "red", EvalConfig(clips=3, heldout_clips=2, nontarget_clips=3))
    sets = prompt_sets("colour", "red", EvalConfig(clips=3, heldout_clips=2, nontarget_clips=3, reserved_clips=4))
    reserved = sets["reserved"]
    assert len(reserved.prompts) == 4 and all(s.main.colour == "red" for s in reserved.specs)
    assert all("vermilion" in p for p in reserved.prompts)
    assert not any(set(re.findall(r"[a-z]+", p.lower())) & reserved_vocabulary() for p in sets["target"].prompts)
    others = {seed for name, clip_set in sets.items() if name != "reserved" for seed in clip_set.noise_seeds}
    assert not others & set(reserved.noise_seeds)


def test_the_pipeline_switches_from_early_to_late_text_states_per_clip_at_its_own_step(tiny_toy_generator):
    from clear_sae.toyworld.sampling import clip_noise, encode, load_toy_world

    pipe = load_toy_world(tiny_toy_generator).pipe
    early, late = encode(pipe, ["a red disc", "a blue bar"]), encode(pipe, ["a green cross", "a yellow disc"])
    negative, noise = encode(pipe, ["", ""]), clip_noise([1, 2])

    def run(**extra):
        return pipe(prompt_embeds=extra.pop("embeds", early), negative_prompt_embeds=negative, latents=noise,
                    num_inference_steps=3, **extra)  # fmt: skip

    only_early, only_late = run(), run(embeds=late)
    assert not np.array_equal(only_early, only_late)
    never = run(late_prompt_embeds=late, switch_steps=torch.tensor([3, 3]))
    at_once = run(late_prompt_embeds=late, switch_steps=torch.tensor([0, 0]))
    assert np.array_equal(never, only_early) and np.array_equal(at_once, only_late)
    mixed = run(late_prompt_embeds=late, switch_steps=torch.tensor([3, 0]))
    assert np.array_equal(mixed[0], only_early[0]) and np.array_equal(mixed[1], only_late[1])
    midway = run(late_prompt_embeds=late, switch_steps=torch.tensor([1, 1]))
    assert not np.array_equal(midway, only_early) and not np.array_equal(midway, only_late)


def test_an_intervention_resamples_what_it_changes_and_only_that(tiny_toy_generator):
    """A changed guidance scale re-samples every clip; an embedding filter only the prompts it changes, with its
    early states on the first steps; hooks and negative prompt as before."""
    from clear_sae.toyworld.sampling import (
        EvalConfig,
        Intervention,
        load_toy_world,
        sample_after,
        sample_before,
        training_phrasing_sets,
    )

    world = load_toy_world(tiny_toy_generator)
    cfg = EvalConfig(clips=3, nontarget_clips=2, removed_clips=0, steps=2, batch_size=3, progress=False)
    negative, before = sample_before(world, training_phrasing_sets("colour", "red", cfg), cfg)

    def resampled(how):
        return {k: s.sampled for k, s in sample_after(world, how, before, negative, cfg).items()}

    assert resampled(Intervention()) == {"target": 0, "nontarget": 0}
    assert resampled(Intervention(guidance=cfg.guidance)) == {"target": 0, "nontarget": 0}
    assert resampled(Intervention(guidance=2 * cfg.guidance)) == {"target": 3, "nontarget": 2}

    def first_prompt_zeroed(embeds, steps, original):
        early = embeds.clone()
        early[0] = 0
        return early, embeds, torch.full((len(embeds),), steps)

    after = sample_after(world, Intervention(embed_filter=first_prompt_zeroed), before, negative, cfg)
    assert after["target"].sampled == 1 and after["nontarget"].sampled == 1
    assert np.array_equal(after["target"].sampled_clips()[1:], before["target"].sampled_clips()[1:])
    assert not np.array_equal(after["target"].sampled_clips()[0], before["target"].sampled_clips()[0])

    def late_of_second_changed(embeds, steps, original):  # early states as given, late ones changed, switched midway
        late = embeds.clone()
        late[1] = 0
        return embeds, late, torch.full((len(embeds),), steps // 2)

    after = sample_after(world, Intervention(embed_filter=late_of_second_changed), before, negative, cfg)
    assert after["target"].sampled == 1 and after["nontarget"].sampled == 1
    assert not np.array_equal(after["target"].sampled_clips()[1], before["target"].sampled_clips()[1])
    assert np.array_equal(after["target"].sampled_clips()[0], before["target"].sampled_clips()[0])
