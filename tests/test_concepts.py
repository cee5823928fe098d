"""Concept latents, separability scores and layer selection."""

from __future__ import annotations

import hashlib
import json
import math
import re

import pytest
import torch
from conftest import PROMPTS, make_entry, read_lines

from clear_sae.concepts import (
    ConceptConfig,
    PromptCodes,
    auroc,
    learn_concept,
    profile_layer,
    select_layer,
    specific_and_shared,
)
from clear_sae.dictionary import Dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.library import ConceptLibrary


def _codes(peak: list[list[float]]) -> PromptCodes:
    p = torch.tensor(peak)
    return PromptCodes(peak=p, energy=p.pow(2))


def test_auroc_counts_pairs_and_ties():
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auroc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert auroc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5
    assert auroc(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])) == 0.5


def test_planted_concept_latent_is_specific_and_shared_energy_is_counted():
    # latent 0 fires on every target only; latent 1 fires everywhere; latent 2 on one target only.
    target = _codes([[2.0, 1.0, 0.0], [2.0, 1.0, 3.0], [2.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
    nontarget = _codes([[0.0, 1.0, 0.0]] * 4)
    cfg = ConceptConfig(min_target_rate=0.5, max_nontarget_rate=0.0, holdout=0.5)
    latents, shared = specific_and_shared(target, nontarget, cfg)
    assert latents == [0]
    assert shared.tolist() == [False, True, False]
    profile = profile_layer("layer", target, nontarget, cfg)
    s_spe, s_uni = 4 * 4.0, 4 * 1.0
    assert profile.loss == pytest.approx(math.log1p(s_uni / s_spe), rel=1e-5)
    assert profile.energy == pytest.approx(s_spe / (s_spe + s_uni), rel=1e-5)
    assert profile.auroc == 1.0


def test_latents_that_add_up_to_a_common_one_are_not_all_taken():
    # Each of latents 0..3 fires on one distinct non-target (25% each); together they'd fire on all.
    target = _codes([[1.0, 1.0, 1.0, 1.0]] * 4)
    nontarget = _codes([[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)])
    latents, _ = specific_and_shared(target, nontarget, ConceptConfig(max_nontarget_rate=0.25))
    assert len(latents) == 1


def test_select_layer_is_the_argmax_and_refuses_empty_layers():
    strong = profile_layer("b", _codes([[5.0, 0.1]] * 4), _codes([[0.0, 0.1]] * 4), ConceptConfig())
    weak = profile_layer("a", _codes([[1.0, 3.0]] * 4), _codes([[0.0, 3.0]] * 4), ConceptConfig())
    assert select_layer([weak, strong], "energy").hook_point == "b"
    none = profile_layer("c", _codes([[1.0]] * 4), _codes([[1.0]] * 4), ConceptConfig())
    with pytest.raises(ClearSaeError, match="no layer has concept-specific latents"):
        select_layer([none], "energy")


def test_library_entry_records_scores_and_picks_their_argmax(minilm_library):
    data = json.loads(minilm_library.read_text())
    assert data["format"] == "clear_sae.concept_library"
    for name in ("french_horn", "umbrella"):
        entry = data["concepts"][name]
        scores = {h: s["energy"] for h, s in entry["layer_scores"].items()}
        assert len(scores) == 7
        assert entry["hook_point"] == max(scores, key=scores.get)
        assert entry["latents"] and entry["strength"] == 1.0
        for s in entry["layer_scores"].values():
            assert (s["auroc"] is None) == (s["n_specific"] == 0)
            assert s["auroc"] is None or 0.0 <= s["auroc"] <= 1.0
            assert s["n_specific"] > 0 or s["energy"] == 0.0
        assert entry["n_target"] == entry["n_nontarget"] == 60
        assert (minilm_library.parent / entry["dictionary"]).resolve().is_dir()


def test_adding_a_concept_trains_nothing(minilm, minilm_dictionaries, minilm_library, tmp_path):
    def digest() -> str:
        h = hashlib.sha256()
        for path in sorted(minilm_dictionaries.rglob("*")):
            if path.is_file():
                h.update(path.read_bytes())
        return h.hexdigest()

    before = digest()
    library = ConceptLibrary.load(minilm_library)
    copy = ConceptLibrary(tmp_path / "lib.json", dict(library.concepts))
    entry, profiles = learn_concept(
        minilm,
        Dictionaries(minilm_dictionaries),
        "snow",
        read_lines(PROMPTS / "concepts" / "snow.target.txt"),
        read_lines(PROMPTS / "concepts" / "snow.nontarget.txt"),
        ConceptConfig(score="auroc"),
    )
    copy.add(entry)
    copy.save()
    assert digest() == before
    reloaded = ConceptLibrary.load(tmp_path / "lib.json")
    assert set(reloaded.concepts) == {"french_horn", "umbrella", "snow"}
    usable = [p for p in profiles if p.auroc is not None]
    assert entry.hook_point == max(usable, key=lambda p: p.auroc).hook_point
    assert entry.score == "auroc"


def test_empty_prompt_lists_are_refused(minilm, minilm_dictionaries):
    with pytest.raises(ClearSaeError, match="target prompt list is empty"):
        learn_concept(minilm, Dictionaries(minilm_dictionaries), "x", [], ["a"])
    with pytest.raises(ClearSaeError, match="non-target prompt list is empty"):
        learn_concept(minilm, Dictionaries(minilm_dictionaries), "x", ["a"], [])


def test_at_min_target_rate_zero_a_latent_silent_on_every_target_is_never_chosen():
    """`--min-target-rate 0` once admitted latents that fire on no target (and on no non-target): now a latent must
    fire on at least one target whatever the rate."""
    peak_t = torch.zeros(4, 6)
    peak_t[:, 0] = 1.0  # fires on every target
    peak_t[1, 3] = 0.5  # on one target
    peak_n = torch.zeros(4, 6)
    target, nontarget = PromptCodes(peak_t, peak_t.clone()), PromptCodes(peak_n, peak_n.clone())
    chosen, shared = specific_and_shared(target, nontarget, ConceptConfig(min_target_rate=0.0, max_nontarget_rate=0.0))
    assert chosen == [0, 3] and not shared.any()
    chosen, _ = specific_and_shared(target, nontarget, ConceptConfig(min_target_rate=0.5, max_nontarget_rate=0.0))
    assert chosen == [0]


def _learned(auroc_at_chosen, target, nontarget):
    return make_entry(
        name="guitar",
        hook_point="text_encoder.blocks.1",
        layer_scores={"text_encoder.blocks.1": {"auroc": auroc_at_chosen}, "text_encoder.blocks.2": {"auroc": 0.99}},
        target_prompts=target,
        nontarget_prompts=nontarget,
    )


class _Manifest:
    """Dictionaries as `quality_warnings` reads them: only the manifest."""

    def __init__(self, manifest: dict) -> None:
        self.manifest = manifest


def test_the_words_that_mark_a_concept_are_those_its_targets_share_and_its_non_targets_lack():
    from clear_sae.concepts import concept_words

    target = [f"a man playing a guitar on stage {i}" for i in range(10)] + ["a guitar-shaped cake"]
    nontarget = [f"a man playing a violin on stage {i}" for i in range(10)] + ["a cake"]
    assert concept_words(target, nontarget) == ["guitar"]


@pytest.mark.parametrize(
    "auroc_at_chosen, counts, expected",
    [
        (0.95, {"guitar": 40}, []),
        (0.64, {"guitar": 40}, ["separates poorly at its chosen layer text_encoder.blocks.1: held-out AUROC 0.64"]),
        (None, {"guitar": 40}, ["too few prompt pairs to hold any out"]),
        (0.95, {"guitar": 4}, [r"its words 'guitar' \(4\) are in fewer than 5 of the 6000 captions"]),
        (0.95, {}, [r"its words 'guitar' \(0\)"]),
        (0.5, {}, ["separates poorly", r"'guitar' \(0\)"]),
        (0.95, None, []),  # dictionaries trained before the manifest recorded their corpus: not checked
    ],
    ids=["good", "poor-auroc", "unmeasured", "rare-word", "absent-word", "both", "no-vocabulary"],
)
def test_a_concept_that_does_not_separate_or_whose_words_are_rare_is_reported(auroc_at_chosen, counts, expected):
    from clear_sae.concepts import quality_warnings

    target = [f"a man playing a guitar on stage {i}" for i in range(10)]
    nontarget = [f"a man playing a violin on stage {i}" for i in range(10)]
    manifest = {} if counts is None else {"corpus": {"captions": 6000, "word_counts": counts}}
    warnings = quality_warnings(_learned(auroc_at_chosen, target, nontarget), _Manifest(manifest))  # type: ignore[arg-type]
    assert len(warnings) == len(expected)
    for warning, pattern in zip(warnings, expected):
        assert re.search(pattern, warning) and warning.startswith("concept 'guitar'")
