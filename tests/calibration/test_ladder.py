"""Calibration: the ladder climbs from the mildest erasure and stops where the probe no longer finds the concept."""

from __future__ import annotations

import json
import zlib
from dataclasses import replace

import pytest
import torch

from clear_sae.calibration.judge import Verdict
from clear_sae.calibration.ladder import (
    CalibrationConfig,
    CalibrationStep,
    calibration_ladder,
    chosen_step,
    layers_to_try,
    learn_calibrated_concept,
    nontarget_rate_ladder,
    recorded_calibration,
)
from clear_sae.concepts import ConceptConfig, LayerProfile, split_pairs
from clear_sae.dictionary import Dictionaries
from clear_sae.library import CalibrationRecord, ConceptLibrary
from clear_sae.toyworld.concepts import concept_pairs


def test_the_ladder_starts_at_the_concepts_own_tolerance():
    cal = CalibrationConfig(wider_nontarget_rates=(0.4, 0.2))
    assert nontarget_rate_ladder(ConceptConfig(), cal) == [0.05, 0.2, 0.4]
    assert nontarget_rate_ladder(ConceptConfig(max_nontarget_rate=0.2), cal) == [0.2, 0.4]
    assert nontarget_rate_ladder(ConceptConfig(max_nontarget_rate=0.5), cal) == [0.5]


def test_chosen_step_is_the_least_found_and_the_mildest_on_ties():
    steps = [
        CalibrationStep(0.2, 1.0, "a", 3, 0.5),
        CalibrationStep(0.2, 2.0, "a", 3, 0.3),
        CalibrationStep(0.4, 1.0, "b", 5, 0.3),
        CalibrationStep(0.4, 2.0, "b", 5, 0.4),
    ]
    assert chosen_step(steps) is steps[1]


def test_a_rung_that_costs_non_targets_too_much_neither_passes_nor_is_kept_over_one_that_does_not():
    cal = CalibrationConfig(max_probe_rate=0.05, max_preservation_drop=0.03)
    harmful, mild = CalibrationStep(0.2, 8.0, "a", 3, 0.0, 0.06), CalibrationStep(0.2, 4.0, "a", 3, 0.2, 0.01)
    assert not cal.passes(harmful) and not cal.passes(mild)
    assert cal.passes(CalibrationStep(0.2, 4.0, "a", 3, 0.05, None))  # the probe does not measure preservation
    assert chosen_step([harmful, mild], cal) is mild
    assert (
        chosen_step([replace(harmful, preservation_drop=0.04), replace(mild, preservation_drop=0.05)], cal).strength
        == 8.0
    )  # none preserved: the least found
    # Breaking the target object (its other attributes fall by more than 10 points) fails too.
    assert not cal.passes(CalibrationStep(0.2, 16.0, "a", 3, 0.0, 0.0, 0.26))
    assert cal.passes(CalibrationStep(0.2, 16.0, "a", 3, 0.0, 0.0, 0.1))


def test_a_tie_in_what_the_judge_found_goes_to_the_rung_that_harmed_least():
    cal = CalibrationConfig(max_probe_rate=0.05)
    earlier_harmful = CalibrationStep(0.2, 8.0, "embed", 3, 0.14, 0.0, 0.091)
    later_harmless = CalibrationStep(0.2, 8.0, "blocks.1", 3, 0.14, 0.0, 0.0)
    assert chosen_step([earlier_harmful, later_harmless], cal) is later_harmless
    assert chosen_step([earlier_harmful, replace(later_harmless, probe_rate=0.15)], cal) is earlier_harmful
    # Equal harm (e.g. the probe, which measures none): the earliest tried.
    assert (
        chosen_step(
            [replace(earlier_harmful, others_drop=None), replace(later_harmless, others_drop=None)], cal
        ).hook_point
        == "embed"
    )


def test_a_judge_passed_to_the_ladder_decides_and_is_recorded(minilm, minilm_dictionaries, tmp_path):
    """A judge other than the probe decides every rung: the ladder climbs until it passes one (found and
    preservation both within their bars), the entry is that rung's, and the judge's settings are recorded."""
    from clear_sae.calibration.judge import Verdict
    from clear_sae.errors import ClearSaeError

    class StrictJudge:
        name = "strict"

        def __init__(self):
            self.calls: list[tuple[str, float]] = []

        def __call__(self, hooks):
            ((hook, clamp),) = hooks.items()
            gamma = float(clamp.gamma[0])
            self.calls.append((hook, gamma))
            # Erases only at gamma 8; the first layer tried at gamma 8 harms the non-targets.
            return Verdict(0.0 if gamma >= 8 else 0.5, 0.1 if len([c for c in self.calls if c[1] >= 8]) == 1 else 0.0)

        def settings(self):
            return {"name": self.name, "clips": 3}

    target, nontarget, _, _ = concept_pairs("shape", "bar", 40)
    cfg = ConceptConfig(max_nontarget_rate=0.2)
    cal = CalibrationConfig(strengths=(4.0, 8.0), judge="strict", max_probe_rate=0.05)
    library = ConceptLibrary(tmp_path / "lib.json")
    dictionaries = Dictionaries(minilm_dictionaries)
    judge = StrictJudge()
    entry, _, steps = learn_calibrated_concept(minilm, dictionaries, "bar", target, nontarget, cfg, cal, judge=judge)
    library.add(entry)
    assert [s.strength for s in steps if s.strength == 4.0] and all(s.probe_rate == 0.5 for s in steps[:-2])
    assert (steps[-2].strength, steps[-2].preservation_drop) == (8.0, 0.1) and steps[-1].preservation_drop == 0.0
    assert (entry.hook_point, entry.strength) == (steps[-1].hook_point, 8.0)
    # The entry is the rung after the harmful one (another layer, or the same at a wider tolerance).
    last, harmful = steps[-1], steps[-2]
    assert (entry.selection.max_nontarget_rate, entry.hook_point) == (last.max_nontarget_rate, last.hook_point)
    assert (last.max_nontarget_rate, last.hook_point) != (harmful.max_nontarget_rate, harmful.hook_point)
    assert entry.calibration.judge == {"name": "strict", "clips": 3}
    assert entry.calibration.config["judge"] == "strict"
    with pytest.raises(ClearSaeError, match="needs its generator: pass judge="):
        calibration_ladder(minilm, dictionaries, target, nontarget, cfg, cal)
    with pytest.raises(ClearSaeError, match="the judge passed is 'strict' but the calibration config names 'probe'"):
        calibration_ladder(minilm, dictionaries, target, nontarget, cfg, CalibrationConfig(), judge=judge)


def test_layers_are_tried_best_score_first_and_only_the_best_without_the_search():
    def profile(hook: str, energy: float, latents: list[int]) -> LayerProfile:
        return LayerProfile(hook, latents, len(latents), 0, energy, 0.0, None, 1.0)

    profiles = [profile("embed", 0.2, [1]), profile("b0", 0.5, []), profile("b1", 0.3, [2]), profile("b2", 0.3, [3])]
    assert [p.hook_point for p in layers_to_try(profiles, "energy", True)] == ["b1", "b2", "embed"]
    assert [p.hook_point for p in layers_to_try(profiles, "energy", False)] == ["b1"]
    assert layers_to_try([profile("b0", 0.5, [])], "energy", True) == []
    # A layer passed to learn_concept must have latents; the error names those that do.
    from clear_sae.concepts import learn_concept
    from clear_sae.errors import ClearSaeError

    with pytest.raises(ClearSaeError, match="'b0' has no concept-specific latents here; choose one of embed, b1, b2"):
        learn_concept(None, None, "x", ["a"], ["b"], profiles=profiles, layer="b0")


def test_entries_calibrated_before_the_layer_search_keep_the_best_layer_rule():
    steps = [CalibrationStep(0.2, 4.0, "a", 3, 0.0).record()]
    old = CalibrationRecord({"strengths": [4.0], "wider_nontarget_rates": [0.2, 0.4], "max_probe_rate": 0.1}, steps)
    assert recorded_calibration(old)[1].search_layers is False
    new = CalibrationRecord({**old.config, "search_layers": True}, steps)
    assert recorded_calibration(new) == (0.2, CalibrationConfig(strengths=(4.0,), search_layers=True))
    assert recorded_calibration(None) is None


class ClimbingJudge:
    """A judge that builds a ladder which must climb: it finds the concept in `found` of the targets at every
    rung milder than `clears_at`, and in none from that strength on. It records the rungs it judged."""

    name = "climbing"

    def __init__(self, clears_at: float, found: float = 1 / 3):
        self.clears_at, self.found = clears_at, found
        self.judged: list[tuple[str, float]] = []

    def __call__(self, hooks):
        ((hook, clamp),) = hooks.items()
        gamma = float(clamp.gamma[0])
        self.judged.append((hook, gamma))
        return Verdict(0.0 if gamma >= self.clears_at else self.found)

    def settings(self):
        return {"name": self.name, "clears_at": self.clears_at}


def test_calibration_stops_at_the_first_rung_the_judge_clears_and_saves_that_rung(
    minilm, minilm_dictionaries, tmp_path
):
    """A judge that clears only gamma 4 makes 'bar' climb: every rung tried at gamma 1 and 2 (each layer with
    latents, best score first) fails, the first rung at gamma 4 passes and ends the ladder, and the saved entry
    and its recorded ladder are that rung's."""
    target, nontarget, _, _ = concept_pairs("shape", "bar", 60)
    cfg = ConceptConfig(max_nontarget_rate=0.2)
    cal = CalibrationConfig(judge=ClimbingJudge.name)
    assert cal.strengths == (1.0, 2.0, 4.0)
    dictionaries = Dictionaries(minilm_dictionaries)
    library = ConceptLibrary(tmp_path / "lib.json")
    judge = ClimbingJudge(clears_at=4.0)
    entry, _, steps = learn_calibrated_concept(minilm, dictionaries, "bar", target, nontarget, cfg, cal, judge=judge)
    library.add(entry)
    # The rungs, in the order the ladder must try them: at each tolerance, each strength from the mildest, and
    # at each strength the layers best score first; it stops at the first the judge clears.
    profiles = {s.max_nontarget_rate: s.profiles for s in steps}
    order = [
        (rate, strength, layer.hook_point)
        for rate in nontarget_rate_ladder(cfg, cal)
        if rate in profiles
        for strength in cal.strengths
        for layer in layers_to_try(profiles[rate], cfg.score, True)
    ]
    first_cleared = next(i for i, (_, strength, _) in enumerate(order) if strength >= 4.0)
    assert [(s.max_nontarget_rate, s.strength, s.hook_point) for s in steps] == order[: first_cleared + 1]
    assert judge.judged == [(hook, strength) for _, strength, hook in order[: first_cleared + 1]]
    assert len(steps) >= 3, "the ladder climbed through gamma 1 and 2 before it cleared"
    # Every rung before the chosen one left the concept in more than the bar's share; the last cleared it.
    assert all(s.probe_rate == round(1 / 3, 4) > cal.max_probe_rate for s in steps[:-1])
    assert steps[-1].probe_rate == 0.0 and cal.passes(steps[-1]) and not any(cal.passes(s) for s in steps[:-1])
    chosen = chosen_step(steps, cal)
    assert chosen is steps[-1]
    assert (entry.strength, entry.selection.max_nontarget_rate) == (chosen.strength, chosen.max_nontarget_rate)
    assert (entry.hook_point, len(entry.latents)) == (chosen.hook_point, chosen.n_latents)
    assert entry.strength == 4.0

    library.save()
    saved = json.loads((tmp_path / "lib.json").read_text())["concepts"]["bar"]["calibration"]
    assert [s["probe_rate"] for s in saved["steps"]] == [s.probe_rate for s in steps]
    assert [(s["strength"], s["hook_point"]) for s in saved["steps"]] == [(s.strength, s.hook_point) for s in steps]
    assert saved["judge"] == {"name": "climbing", "clears_at": 4.0} and saved["config"]["judge"] == "climbing"


class BatchedJudge:
    """A judge that reads a rung's targets in `batches` batches, like the generation judge: each rung has its own
    share found (0.2 to 0.9, above the bar: no rung passes) and non-target drop (some above the bar), drawn from its
    hook point and gamma. With `give_up_above` it stops after the first batch that makes the share surely higher,
    unless `stops_early` is False. It counts the batches it judged."""

    name = "batched"

    def __init__(self, stops_early: bool, batches: int = 4):
        self.stops_early, self.n_batches, self.batches = stops_early, batches, 0

    def __call__(self, hooks, give_up_above=None):
        ((hook, clamp),) = hooks.items()
        g = torch.Generator().manual_seed(zlib.crc32(f"{hook} {float(clamp.gamma[0])}".encode()))
        found, drop = round(0.2 + 0.7 * float(torch.rand((), generator=g)), 4), float(torch.rand((), generator=g)) / 10
        for batch in range(1, self.n_batches + 1):
            self.batches += 1
            lower_bound = round(found * batch / self.n_batches, 4)
            if give_up_above is not None and batch < self.n_batches and lower_bound > give_up_above:
                return Verdict(lower_bound, complete=False)
        return Verdict(found, round(drop, 4))

    def settings(self):
        return {"name": self.name}


def test_a_judge_that_stops_early_spares_batches_and_the_ladder_keeps_the_same_rung(minilm, minilm_dictionaries):
    """No rung passes, so the ladder is climbed to its end and the least-found rung that kept the rest is chosen.
    With early stopping the judge gives up on rungs already worse than a rung judged in full: fewer batches, the
    same chosen rung, and every stopped rung's lower bound above the chosen rung's share."""
    from clear_sae.calibration.ladder import format_ladder

    target, nontarget, _, _ = concept_pairs("shape", "bar", 60)
    cfg = ConceptConfig(max_nontarget_rate=0.2)
    cal = CalibrationConfig(judge=BatchedJudge.name)
    dictionaries = Dictionaries(minilm_dictionaries)
    runs = {}
    for stops in (False, True):
        judge = BatchedJudge(stops_early=stops)
        steps = calibration_ladder(minilm, dictionaries, target, nontarget, cfg, cal, judge=judge)
        runs[stops] = (steps, judge.batches)
    (full, full_batches), (early, early_batches) = runs[False], runs[True]
    assert [(s.hook_point, s.strength) for s in early] == [(s.hook_point, s.strength) for s in full]
    assert not any(cal.passes(s) for s in full) and len(full) >= 6
    assert any(not cal.preserves(s) for s in full), "the least-found rung must be one that kept the rest"
    stopped = [s for s in early if not s.complete]
    assert stopped and early_batches < full_batches and all(s.complete for s in full)
    chosen = chosen_step(early, cal)
    assert chosen.complete and (chosen.hook_point, chosen.strength, chosen.probe_rate) == (
        chosen_step(full, cal).hook_point,
        chosen_step(full, cal).strength,
        chosen_step(full, cal).probe_rate,
    )
    for s, whole in zip(early, full):
        if not s.complete:
            assert whole.probe_rate >= s.probe_rate > chosen.probe_rate and s.preservation_drop is None
        else:
            assert s.summary() == whole.summary()
    table = format_ladder(early, cal)
    assert f">={100 * stopped[0].probe_rate:.1f}%" in table and "stopped once that rung could neither pass" in table
    assert "stopped once" not in format_ladder(full, cal)


def test_the_probe_judges_the_ladder_and_reads_the_chosen_rung_as_recorded(minilm, minilm_dictionaries, tmp_path):
    """The default judge, the probe: it finds 'bar' in the held-out targets without erasure; the ladder it
    judges stops at the first rung it clears (or tries them all); and with the saved entry's clamp it finds the
    concept in the share recorded for the chosen rung (rounded as stored)."""
    from clear_sae.calibration.probe import train_concept_probe
    from clear_sae.erase import LatentClamp
    from clear_sae.measure import pooled_final_states

    target, nontarget, _, _ = concept_pairs("shape", "bar", 60)
    cfg = ConceptConfig(max_nontarget_rate=0.2)
    cal = CalibrationConfig()
    dictionaries = Dictionaries(minilm_dictionaries)
    library = ConceptLibrary(tmp_path / "lib.json")
    entry, _, steps = learn_calibrated_concept(minilm, dictionaries, "bar", target, nontarget, cfg, cal)
    library.add(entry)
    assert steps and all(s.probe_rate > cal.max_probe_rate for s in steps[:-1])
    rates = {s.max_nontarget_rate: s.profiles for s in steps}
    every_rung = sum(len([p for p in profiles if p.latents]) for profiles in rates.values()) * len(cal.strengths)
    assert steps[-1].probe_rate <= cal.max_probe_rate or len(steps) == every_rung
    chosen = chosen_step(steps)
    assert (entry.strength, entry.selection.max_nontarget_rate) == (chosen.strength, chosen.max_nontarget_rate)
    assert (entry.hook_point, len(entry.latents)) == (chosen.hook_point, chosen.n_latents)

    # The probe that judged the rungs does find the concept without erasure.
    fit_t, fit_n, held_t, _ = split_pairs(len(target), len(nontarget), cfg.holdout, cfg.seed)
    probe = train_concept_probe(
        pooled_final_states(minilm, [target[i] for i in fit_t]),
        pooled_final_states(minilm, [nontarget[i] for i in fit_n]),
    )
    held = [target[i] for i in held_t]
    assert float((probe(pooled_final_states(minilm, held)) > 0.5).float().mean()) >= 0.9
    clamp = LatentClamp(dictionaries.sae(entry.hook_point), entry.latents, entry.strength)
    after = float((probe(pooled_final_states(minilm, held, {entry.hook_point: clamp})) > 0.5).float().mean())
    assert round(after, 4) == chosen.probe_rate  # the ladder stores the probe's share rounded to 4 places

    library.save()
    saved = json.loads((tmp_path / "lib.json").read_text())["concepts"]["bar"]["calibration"]
    assert [s["probe_rate"] for s in saved["steps"]] == [s.probe_rate for s in steps]


def test_cli_calibrate_prints_the_ladder_and_refuses_clear_joint(minilm_dictionaries, tmp_path, capsys):
    from clear_sae.cli import main

    target, nontarget, _, _ = concept_pairs("motion", "fall", 40)
    (tmp_path / "t.txt").write_text("\n".join(target))
    (tmp_path / "n.txt").write_text("\n".join(nontarget))
    args = [
        "concept",
        "--name",
        "fall",
        "--target",
        str(tmp_path / "t.txt"),
        "--nontarget",
        str(tmp_path / "n.txt"),
        "--library",
        str(tmp_path / "lib.json"),
        "--calibrate",
        "--max-nontarget-rate",
        "0.2",
    ]
    assert main(args + ["--dictionaries", str(minilm_dictionaries)]) == 0
    out = capsys.readouterr().out
    entry = ConceptLibrary.load(tmp_path / "lib.json").get("fall")
    assert "probe finds" in out and "<- chosen" in out and f"strength {entry.strength:g}" in out
    assert entry.calibration is not None
    assert main(args + ["--method", "clear-joint", "--model", "minilm"]) == 3
    assert "--calibrate tunes an entry on the reused dictionaries" in capsys.readouterr().err


def test_calibration_needs_held_out_targets(minilm, minilm_dictionaries):
    from clear_sae.errors import ClearSaeError

    with pytest.raises(ClearSaeError, match="needs held-out targets"):
        calibration_ladder(
            minilm,
            Dictionaries(minilm_dictionaries),
            ["a red bar"] * 3,
            ["a red disc"] * 3,
            ConceptConfig(),
            CalibrationConfig(),
        )


def test_each_text_encoder_of_a_pipeline_climbs_its_own_ladder(minilm_tokenizer, small_corpus, tmp_path, monkeypatch):
    """On a pipeline with two text encoders, calibration gives one entry per encoder, each ladder trying only its
    encoder's layers and judged by a probe on that encoder's own output (not on the other encoder's)."""
    from conftest import PROMPTS, read_lines, tiny_two_encoder_pipeline

    from clear_sae.backbones.diffusers_pipeline import PipelineTextEncoders
    from clear_sae.cache import ActivationCache, CacheConfig, write_cache
    from clear_sae.calibration import ladder
    from clear_sae.calibration.ladder import learn_calibrated_concept_per_encoder
    from clear_sae.dictionary import TrainConfig, train_dictionaries

    backbone = PipelineTextEncoders.from_pipeline(tiny_two_encoder_pipeline(minilm_tokenizer), "tiny-two")
    write_cache(backbone, small_corpus, tmp_path / "c.h5", backbone.hook_points, CacheConfig(64), progress=False)
    with ActivationCache(tmp_path / "c.h5") as cache:
        config = TrainConfig(expansion=8, k=8, tokens=20_480, batch_size=256)
        train_dictionaries(cache, tmp_path / "d", cfg=config, progress=False)
    read: list[str] = []

    class RecordingProbe(ladder.ProbeJudge):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            read.append(self.final_hook)

    monkeypatch.setattr(ladder, "ProbeJudge", RecordingProbe)
    target = read_lines(PROMPTS / "concepts" / "french_horn.target.txt")
    nontarget = read_lines(PROMPTS / "concepts" / "french_horn.nontarget.txt")
    cfg = ConceptConfig(background=0, min_target_rate=0.3, max_nontarget_rate=0.3)  # tiny random encoders
    cal = ladder.CalibrationConfig(strengths=(1.0,), wider_nontarget_rates=())
    learned = learn_calibrated_concept_per_encoder(
        backbone, Dictionaries(tmp_path / "d"), "french_horn", target, nontarget, cfg, cal
    )
    assert [entry.name for entry, _, _ in learned] == ["french_horn@text_encoder", "french_horn@text_encoder_2"]
    assert read == ["text_encoder.blocks.1", "text_encoder_2.blocks.2"]  # each encoder's own last block
    for entry, _, steps in learned:
        encoder = entry.name.split("@")[1]
        assert {step.hook_point.split(".")[0] for step in steps} == {encoder}
        assert entry.calibration is not None and len(entry.calibration.steps) == len(steps)
    # Dictionaries on one encoder only: its entry keeps the plain name, and the probe reads that encoder's output.
    with ActivationCache(tmp_path / "c.h5") as cache:
        clip_only = ["text_encoder.blocks.0", "text_encoder.blocks.1"]
        train_dictionaries(cache, tmp_path / "clip", clip_only, config, progress=False)
    ((entry, _, _),) = learn_calibrated_concept_per_encoder(
        backbone, Dictionaries(tmp_path / "clip"), "french_horn", target, nontarget, cfg, cal
    )
    assert entry.name == "french_horn" and read[-1] == "text_encoder.blocks.1"


def test_the_probe_reads_the_fit_states_learning_computed_as_it_would_compute_them(minilm, minilm_dictionaries):
    from clear_sae.calibration.ladder import encoder_final_hook, fit_states
    from clear_sae.concepts import encode_concept
    from clear_sae.measure import pooled_final_states

    target, nontarget = concept_pairs("colour", "red", 24)[:2]
    dictionaries = Dictionaries(minilm_dictionaries)
    codes = encode_concept(minilm, dictionaries, target, nontarget)
    fit_t, fit_n, _, _ = split_pairs(len(target), len(nontarget), 0.25, 0)
    final = encoder_final_hook(minilm, dictionaries.hook_points)
    states = fit_states(codes, final, fit_t, fit_n)
    assert states is not None and final == minilm.final_hook_point
    for given, prompts in zip(states, ([target[i] for i in fit_t], [nontarget[i] for i in fit_n])):
        assert given.shape == (len(prompts), 384)
        torch.testing.assert_close(given, pooled_final_states(minilm, prompts, final_hook=final), rtol=1e-5, atol=1e-5)
    assert fit_states(codes, "text_encoder_2.blocks.0", fit_t, fit_n) is None  # a layer the codes do not hold
