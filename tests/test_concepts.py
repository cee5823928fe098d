"""Concept latents, separability scores and layer selection."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import replace

import pytest
import torch
from conftest import PROMPTS, make_entry, read_lines

from clear_sae.concepts import (
    SAMPLE_BATCH,
    ConceptConfig,
    PromptCodes,
    auroc,
    background_prompts,
    batch_codes,
    encode_prompts,
    format_table,
    learn_concept,
    most_firing_allowed,
    profile_layer,
    ranked_candidates,
    sample_fires,
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


def test_the_firing_limit_is_a_float32_share_compared_in_float64():
    for n in range(1, 81):
        for rate in (0.0, 0.05, 0.1, 0.2, 1 / 3, 0.4, 1.0):
            fires = torch.zeros(n, dtype=torch.bool)
            within = [not float(fires.index_fill(0, torch.arange(c), True).float().mean()) > rate for c in range(n + 1)]
            assert most_firing_allowed(n, rate) == max(c for c, ok in enumerate(within) if ok), (n, rate)
    assert most_firing_allowed(60, 0.1) == 5  # 6 of 60 in float32 lies a hair above 10%


def _reference_selection(target, nontarget, cfg, background):
    """The selection written plainly: candidates sorted by a Python sort on float keys, then taken greedily while
    each limit's float32 share stays within its rate."""
    target_rate, nontarget_rate = (target.peak > 0).float().mean(0), (nontarget.peak > 0).float().mean(0)
    quiet = background.float().mean(0) <= cfg.max_background_rate
    fires = (target_rate >= cfg.min_target_rate) & (target_rate > 0)
    candidates = torch.nonzero(fires & (nontarget_rate <= cfg.max_nontarget_rate) & quiet).squeeze(-1).tolist()
    energy = target.energy.sum(0)
    candidates.sort(key=lambda j: (-(float(target_rate[j]) - float(nontarget_rate[j])), -float(energy[j])))
    limits = [(nontarget.peak > 0, cfg.max_nontarget_rate), (background, cfg.max_background_rate)]
    unions, chosen = [torch.zeros(len(f), dtype=torch.bool) for f, _ in limits], []
    for latent in candidates:
        widened = [u | f[:, latent] for u, (f, _) in zip(unions, limits)]
        if any(float(w.float().mean()) > rate for w, (_, rate) in zip(widened, limits)):
            continue
        chosen.append(latent)
        unions = widened
        if len(chosen) == cfg.max_latents:
            break
    return candidates, sorted(chosen)


@pytest.mark.parametrize("seed", range(4))
def test_selection_matches_the_plain_reference_ties_included(seed):
    g = torch.Generator().manual_seed(seed)
    # Coarse values so that rates and energies tie often; sparse firing so that the limits bind.
    target = _codes((torch.randint(0, 3, (30, 200), generator=g) * (torch.rand(30, 200, generator=g) < 0.3)).tolist())
    nontarget = _codes((torch.rand(30, 200, generator=g) < 0.04).float().tolist())
    background = torch.rand(50, 200, generator=g) < 0.03
    cfg = ConceptConfig(min_target_rate=0.1, max_nontarget_rate=0.1, max_background_rate=0.1, max_latents=40)
    candidates, chosen = _reference_selection(target, nontarget, cfg, background)
    assert ranked_candidates(target, nontarget, cfg, background)[0] == candidates
    assert specific_and_shared(target, nontarget, cfg, background)[0] == chosen
    assert 0 < len(chosen) < len(candidates), "the limits bind"


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
            # no latents, no AUROC (it is also None where the fit split alone finds none)
            assert s["n_specific"] > 0 or s["auroc"] is None
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
    "auroc_at_chosen, counts, expected, learned",
    [
        (0.95, {"guitar": 40}, [], {}),
        (0.64, {"guitar": 40}, ["separates poorly at its chosen layer text_encoder.blocks.1: held-out AUROC 0.64"], {}),
        (None, {"guitar": 40}, ["too few prompt pairs to hold any out"], {}),
        (0.95, {"guitar": 4}, [r"its words 'guitar' \(4\) are in fewer than 5 of the 6000 captions"], {}),
        (0.95, {}, [r"its words 'guitar' \(0\)"], {}),
        (0.5, {}, ["separates poorly", r"'guitar' \(0\)"], {}),
        (0.95, None, [], {}),  # dictionaries trained before the manifest recorded their corpus: not checked
        (0.95, {"guitar": 40}, ["fire on only 40% of the target prompts"], {"coverage": 0.4}),
        (0.95, {"guitar": 40}, [], {"coverage": 0.9}),
        (0.95, {"guitar": 40}, ["no background captions were checked"], {"background": 0}),
        (0.95, {"guitar": 40}, [], {"background": 0, "max_background_rate": 1.0}),  # learned before the check
    ],
    ids=[
        "good",
        "poor-auroc",
        "unmeasured",
        "rare-word",
        "absent-word",
        "both",
        "no-vocabulary",
        "poor-coverage",
        "coverage-at-the-bar",
        "no-background",
        "learned-before-the-background-check",
    ],
)
def test_a_concept_that_does_not_separate_or_whose_words_are_rare_is_reported(
    auroc_at_chosen, counts, expected, learned
):
    from clear_sae.concepts import quality_warnings

    target = [f"a man playing a guitar on stage {i}" for i in range(10)]
    nontarget = [f"a man playing a violin on stage {i}" for i in range(10)]
    manifest = {} if counts is None else {"corpus": {"captions": 6000, "word_counts": counts}}
    entry = _learned(auroc_at_chosen, target, nontarget)
    if "coverage" in learned:
        entry.layer_scores[entry.hook_point]["coverage"] = learned["coverage"]
    selection = {k: v for k, v in learned.items() if k != "coverage"}
    entry.selection = replace(entry.selection, **selection)
    warnings = quality_warnings(entry, _Manifest(manifest))  # type: ignore[arg-type]
    assert len(warnings) == len(expected)
    for warning, pattern in zip(warnings, expected):
        assert re.search(pattern, warning) and warning.startswith("concept 'guitar'")


def test_a_latent_that_fires_on_the_background_captions_is_not_taken_for_the_concept():
    """Latent 0 fires on every target and no non-target, like latent 1, but also on half of the background
    captions (a latent of the learning prompts' shared context): only latent 1 is the concept's."""
    target = _codes([[2.0, 1.0, 0.0]] * 4)
    nontarget = _codes([[0.0, 0.0, 0.0]] * 4)
    background = torch.tensor([[True, False, False], [False, False, False]] * 10)
    cfg = ConceptConfig(max_nontarget_rate=0.0, max_background_rate=0.05)
    assert specific_and_shared(target, nontarget, cfg)[0] == [0, 1]  # no background: both taken
    assert specific_and_shared(target, nontarget, cfg, background)[0] == [1]
    assert specific_and_shared(target, nontarget, replace(cfg, max_background_rate=0.5), background)[0] == [0, 1]


def test_latents_quiet_on_the_background_one_by_one_must_be_quiet_together():
    """Each of latents 0..3 fires on a distinct 2% of the background (within a 5% tolerance); two together fire on
    4%, three on 6%, so the selection stops at two."""
    target = _codes([[1.0, 1.0, 1.0, 1.0]] * 4)
    nontarget = _codes([[0.0] * 4] * 4)
    background = torch.tensor([[i == j for j in range(4)] for i in range(4)] + [[False] * 4] * 46)
    cfg = ConceptConfig(max_nontarget_rate=0.0, max_background_rate=0.05)
    assert len(specific_and_shared(target, nontarget, cfg, background)[0]) == 2


def test_a_layer_profile_says_what_share_of_the_targets_its_latents_reach():
    target = _codes([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    nontarget = _codes([[0.0, 0.0]] * 4)
    profile = profile_layer("h", target, nontarget, ConceptConfig(min_target_rate=0.25, max_nontarget_rate=0.0))
    assert profile.latents == [0, 1] and profile.coverage == 0.5
    assert "covers" in format_table([profile], "h", "energy") and " 50%" in format_table([profile], "h", "energy")


class _Sample:
    """Dictionaries as `background_prompts` reads them: only the corpus sample."""

    def __init__(self, sample: list[str]) -> None:
        self.sample = sample

    def corpus_sample(self) -> list[str]:
        return self.sample


def test_the_background_leaves_out_every_caption_naming_the_concept_and_keeps_the_first_n_others():
    target = [f"a guitar on stage {i}" for i in range(10)]
    nontarget = [f"a violin on stage {i}" for i in range(10)]
    sample = ["two guitars by a fire", "a Guitar.", "a violin at night", "a red car", "a guitarist", "a dog"]
    dictionaries = _Sample(sample)
    assert background_prompts(dictionaries, target, nontarget, 10) == ["a violin at night", "a red car", "a dog"]
    assert background_prompts(dictionaries, target, nontarget, 2) == ["a violin at night", "a red car"]
    assert background_prompts(dictionaries, target, nontarget, 0) == []
    assert background_prompts(_Sample([]), target, nontarget, 10) == []
    # prompts in which no word marks the concept give no background rather than one that may hold the concept
    assert background_prompts(dictionaries, target, target, 10) == []


def test_learning_records_the_background_it_checked_and_its_latents_stay_quiet_on_it(minilm, minilm_dictionaries):
    dictionaries = Dictionaries(minilm_dictionaries)
    concept = PROMPTS / "concepts"
    target = read_lines(concept / "french_horn.target.txt")
    nontarget = read_lines(concept / "french_horn.nontarget.txt")
    background = background_prompts(dictionaries, target, nontarget, ConceptConfig().background)
    assert background and not any("horn" in c.lower() for c in background)
    entry, profiles = learn_concept(minilm, dictionaries, "french_horn", target, nontarget)
    assert entry.selection.background == len(background)
    # The sample is encoded in fixed batches: the same codes as encoding it afresh, whichever rows are asked for.
    sample = dictionaries.corpus_sample()
    hook = entry.hook_point
    everything = sample_fires(minilm, dictionaries, dictionaries.hook_points, list(range(len(sample))))[hook]
    fresh = encode_prompts(minilm, dictionaries, sample, [hook], SAMPLE_BATCH)[hook]
    assert torch.equal(everything, fresh.peak > 0)
    rows = [sample.index(c) for c in background]
    assert torch.equal(
        sample_fires(minilm, dictionaries, dictionaries.hook_points, rows[::-1])[hook], everything[rows[::-1]]
    )
    fired = everything[rows][:, entry.latents].any(-1).float().mean()
    kept = entry.selection.max_background_rate < 1  # the check kept, or the fallback taken and its firing recorded
    recorded = entry.layer_scores[entry.hook_point]["background_rate"]
    assert round(float(fired), 4) == recorded and (recorded <= 0.05 or not kept)
    chosen = next(p for p in profiles if p.hook_point == entry.hook_point)
    assert entry.layer_scores[entry.hook_point]["coverage"] == chosen.coverage > 0
    unchecked, _ = learn_concept(minilm, dictionaries, "french_horn", target, nontarget, ConceptConfig(background=0))
    assert unchecked.selection.background == 0


class _Folder:
    """Dictionaries as `profiles_with_fallback` reads them, for codes given: hook points and the corpus sample."""

    hook_points = ["h"]

    def corpus_sample(self) -> list[str]:
        return [f"a quiet street {i}" for i in range(20)]


@pytest.mark.parametrize("reach", [1, 4], ids=["check-covers-poorly", "check-covers-all"])
def test_a_concept_the_background_check_leaves_covered_poorly_is_learned_without_it(reach):
    """Latent 0 fires on every target and half the background (a context latent); latent 1 is quiet on the
    background and fires on `reach` of the 4 targets. With the check only latent 1 is the concept's: when it reaches
    every target the check stays, when it reaches one the concept is learned without the check, and its latents'
    firing on the background is measured for the warning."""
    from clear_sae.concepts import ConceptCodes, profiles_with_fallback

    target = [f"a guitar on a stage {i}" for i in range(4)]
    nontarget = [f"a violin on a stage {i}" for i in range(4)]
    peak_t = torch.tensor([[1.0, 1.0 if i < reach else 0.0] for i in range(4)])
    codes = ConceptCodes(
        {"h": PromptCodes(peak_t, peak_t.clone())},
        {"h": _codes([[0.0, 0.0]] * 4)},
        {"h": torch.tensor([[True, False], [False, False]] * 10)},
    )
    cfg = ConceptConfig(max_nontarget_rate=0.0, holdout=0.5)
    used, profiles = profiles_with_fallback(None, _Folder(), target, nontarget, cfg, codes=codes)  # type: ignore[arg-type]
    (profile,) = profiles
    if reach == 4:
        assert used == cfg and profile.latents == [1] and profile.coverage == 1.0 and profile.background_rate == 0.0
    else:
        assert used == replace(cfg, max_background_rate=1.0)
        assert profile.latents == [0, 1] and profile.coverage == 1.0 and profile.background_rate == 0.5


def test_latents_that_also_fire_on_the_background_are_reported():
    from clear_sae.concepts import quality_warnings

    target = [f"a man playing a guitar on stage {i}" for i in range(10)]
    nontarget = [f"a man playing a violin on stage {i}" for i in range(10)]
    manifest = _Manifest({"corpus": {"captions": 6000, "word_counts": {"guitar": 40}}})
    for rate, warned in ((0.5, True), (0.1, False), (None, False)):
        entry = _learned(0.95, target, nontarget)
        entry.layer_scores[entry.hook_point]["background_rate"] = rate
        warnings = quality_warnings(entry, manifest)  # type: ignore[arg-type]
        assert [bool(re.search("also fire on 50% of the 256 background captions", w)) for w in warnings] == (
            [True] if warned else []
        )


@pytest.mark.parametrize("arch", ["topk", "standard"])
def test_prompt_codes_read_real_tokens_only_a_chunk_at_a_time(monkeypatch, arch):
    """Peaks and energies per prompt equal those of the whole dense `[batch, tokens, d_sae]` codes with padding
    masked out, whether a chunk of rows holds many prompts or splits one; padding is never encoded."""
    from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    from clear_sae.backbones import Activations

    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=16, d_sae=64, k=6)) if arch == "topk" else StandardSAE(StandardSAEConfig(16, 64))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.3)
    lengths = [7, 3, 10, 1]
    mask = torch.arange(10)[None, :] < torch.tensor(lengths)[:, None]
    acts = torch.randn(4, 10, 16)
    dense = sae.encode(acts) * mask.unsqueeze(-1)
    want_peak = dense.amax(dim=1)
    want_energy = (dense * sae.W_dec.norm(dim=-1)).pow(2).sum(dim=1)
    acts[~mask] = 1e6  # padding the model filled with anything: it must play no part
    for chunk in (2048, 4, 1):
        monkeypatch.setattr("clear_sae.concepts.SCORE_CHUNK_ROWS", chunk)
        got = batch_codes(sae, Activations(acts, mask))
        # A chunk of another height may round the matrix product differently in the last bits, nothing more.
        assert torch.allclose(got.peak, want_peak, rtol=1e-5, atol=1e-6)
        assert torch.allclose(got.energy, want_energy, rtol=1e-5, atol=1e-6)


def test_prompt_codes_accumulate_only_firing_latents_and_match_a_dense_reading(monkeypatch):
    """Peaks and decoded energies per prompt and latent, over real tokens only, chunk after chunk: the same as the
    plain dense reading of every code (up to the last bits of the encoder's product, taken over other shapes)."""
    import clear_sae.concepts as concepts
    from clear_sae.backbones.base import Activations
    from clear_sae.concepts import batch_codes

    class TinySAE:
        """ReLU codes of a random encoder, most of them zero; decoder rows of unequal norms."""

        def __init__(self) -> None:
            g = torch.Generator().manual_seed(0)
            self.W_enc = torch.randn(8, 40, generator=g)
            self.b_enc = torch.full((40,), -2.0)
            self.W_dec = torch.randn(40, 8, generator=g) * torch.linspace(0.5, 2.0, 40)[:, None]
            self.cfg = type("cfg", (), {"d_sae": 40})()

        def to(self, device: object) -> "TinySAE":
            return self

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return (x @ self.W_enc + self.b_enc).relu()

    monkeypatch.setattr(concepts, "SCORE_CHUNK_ROWS", 7)  # several chunks, one prompt split across two
    sae = TinySAE()
    acts = torch.randn(3, 9, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[0, :9], mask[1, :2], mask[2, :6] = True, True, True
    got = batch_codes(sae, Activations(acts, mask))
    codes = sae.encode(acts)
    assert 0.5 < float((codes[mask] == 0).float().mean()) < 0.99, "mostly quiet latents, some firing"
    norms = sae.W_dec.norm(dim=-1)
    for p in range(3):
        real = codes[p][mask[p]]
        assert torch.allclose(got.peak[p], real.max(0).values, rtol=1e-5, atol=1e-5)
        assert torch.allclose(got.energy[p], ((real * norms) ** 2).sum(0), rtol=1e-5, atol=1e-5)
