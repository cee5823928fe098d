"""Latent-clamp erasure on MiniLM, a tiny TransformerLens model and a tiny Wan pipeline."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import PROMPTS, read_lines, tiny_hooked_transformer, tiny_two_encoder_pipeline, tiny_wan_pipeline

from clear_sae.cache import ActivationCache, CacheConfig, write_cache
from clear_sae.concepts import ConceptConfig, learn_concept
from clear_sae.dictionary import Dictionaries, TrainConfig, train_dictionaries
from clear_sae.erase import LatentClamp, attach, erase_concepts, merge_clamps, resolve_concepts
from clear_sae.errors import ClearSaeError, ErasureNotAppliedWarning
from clear_sae.library import ConceptLibrary
from clear_sae.measure import erase_report

HORN_T = read_lines(PROMPTS / "concepts" / "french_horn.target.txt")
HORN_N = read_lines(PROMPTS / "concepts" / "french_horn.nontarget.txt")
UNRELATED = [
    "A quiet harbor at dawn with fishing boats, slow pan",
    "Two kids building a sandcastle, close-up",
    "Traffic on a rainy city street at night, film noir",
]


def _final(backbone, prompts):
    return backbone.run(prompts, [backbone.final_hook_point])[backbone.final_hook_point].acts


def test_report_zeroes_targets_and_leaves_quiet_prompts_bit_identical(minilm, minilm_library):
    library = ConceptLibrary.load(minilm_library)
    prompts = HORN_T[:12] + HORN_N[:12] + UNRELATED
    report = erase_report(minilm, library, ["french_horn"], prompts, progress=False)
    rows = report["prompts"]
    fired = [r for r in rows if r["fired"]]
    quiet = [r for r in rows if not r["fired"]]
    assert sum(r["fired"] for r in rows[:12]) >= 10  # the concept is found in most targets
    assert quiet, "some prompts should not trigger the concept"
    for r in fired:
        c = r["concepts"]["french_horn"]
        assert c["activation_before"] > 0 and c["activation_after"] == 0.0
        assert r["cosine_final"] < 1.0
    for r in quiet:
        assert r["cosine_final"] == 1.0
        assert r["concepts"]["french_horn"]["activation_after"] == 0.0
    # Bit for bit: the whole final hidden state of quiet prompts is unchanged.
    quiet_prompts = [r["prompt"] for r in quiet]
    clean = _final(minilm, quiet_prompts)
    with erase_concepts(minilm, library, ["french_horn"]):
        erased = _final(minilm, quiet_prompts)
    assert torch.equal(clean, erased)


def test_single_pass_is_the_paper_formula_and_reduces_activation(minilm, minilm_library):
    library = ConceptLibrary.load(minilm_library)
    (concept,) = resolve_concepts(library, ["french_horn"])
    hook = concept.entry.hook_point
    h = minilm.run(HORN_T[:8], [hook])[hook].acts
    clamp = LatentClamp(concept.sae, concept.entry.latents, 1.0, exact=False)
    edited = clamp.edit(h)
    codes = concept.sae.encode(h)[..., clamp.latents]
    expected = h - codes @ concept.sae.W_dec[clamp.latents]
    fired = (codes > 0).any(-1)
    assert torch.allclose(edited[fired], expected[fired], atol=1e-5)
    assert torch.equal(edited[~fired], h[~fired])
    assert clamp.concept_codes(edited).sum() < codes.sum()


def test_hooks_are_removed_on_exit_and_on_error(minilm, minilm_library):
    library = ConceptLibrary.load(minilm_library)
    before = _final(minilm, HORN_T[:4])
    hooks_before = {h: list(minilm.module(h)._forward_hooks) for h in minilm.hook_points}
    with erase_concepts(minilm, library, ["french_horn", "umbrella"]) as clamps:
        assert len(clamps) >= 1
        during = _final(minilm, HORN_T[:4])
    assert not torch.equal(before, during)
    with pytest.raises(RuntimeError, match="boom"):
        with erase_concepts(minilm, library, ["french_horn"]):
            raise RuntimeError("boom")
    # transformers keeps hooks of its own on the layers; ours must all be gone.
    assert {h: list(minilm.module(h)._forward_hooks) for h in minilm.hook_points} == hooks_before
    assert torch.equal(_final(minilm, HORN_T[:4]), before)


def test_two_concepts_are_erased_together(minilm, minilm_library):
    library = ConceptLibrary.load(minilm_library)
    umbrella = read_lines(PROMPTS / "concepts" / "umbrella.target.txt")[:6]
    report = erase_report(minilm, library, ["french_horn", "umbrella"], HORN_T[:6] + umbrella, progress=False)
    for row in report["prompts"]:
        for values in row["concepts"].values():
            assert values["activation_after"] == 0.0
    assert sum(r["concepts"]["umbrella"]["fired"] for r in report["prompts"][6:]) >= 4


def _train_and_learn(backbone, corpus, tmp_path, layers=None):
    write_cache(backbone, corpus, tmp_path / "c.h5", backbone.hook_points, CacheConfig(batch_size=64), progress=False)
    with ActivationCache(tmp_path / "c.h5") as cache:
        train_dictionaries(
            cache, tmp_path / "d", cfg=TrainConfig(expansion=4, k=8, tokens=20_480, batch_size=256), progress=False
        )
    library = ConceptLibrary(tmp_path / "lib.json")
    # Dictionaries of 20,480 tokens of a tiny random model can hold no latent that their own captions leave quiet,
    # so the background check is off: what these tests check is the clamp.
    cfg = ConceptConfig(background=0)
    dictionaries = Dictionaries(tmp_path / "d")
    entry, _ = learn_concept(backbone, dictionaries, "french_horn", HORN_T, HORN_N, cfg, hook_points=layers)
    library.add(entry)
    library.save()
    return library


def test_transformer_lens_model_clamp(minilm_tokenizer, small_corpus, tmp_path):
    from clear_sae.backbones.transformer_lens import TransformerLensBackbone

    model = tiny_hooked_transformer()
    backbone = TransformerLensBackbone(model, minilm_tokenizer)
    library = _train_and_learn(backbone, small_corpus, tmp_path)
    entry = library.get("french_horn")
    assert entry.hook_point.startswith("blocks.")
    report = erase_report(backbone, library, ["french_horn"], HORN_T[:20] + UNRELATED, progress=False)
    assert all(r["concepts"]["french_horn"]["activation_after"] == 0.0 for r in report["prompts"])
    fired = [r["prompt"] for r in report["prompts"] if r["fired"]]
    quiet = [r["prompt"] for r in report["prompts"] if not r["fired"]]
    assert fired and quiet

    def logits(prompt):
        return model(minilm_tokenizer([prompt], return_tensors="pt")["input_ids"])

    clean_fired, clean_quiet = logits(fired[0]), logits(quiet[0])
    with erase_concepts(model, library, ["french_horn"]) as clamps:  # attached to the bare HookedTransformer
        erased_fired, erased_quiet = logits(fired[0]), logits(quiet[0])
        assert clamps[entry.hook_point].tokens_edited > 0
    assert not torch.equal(clean_fired, erased_fired)
    assert torch.equal(clean_quiet, erased_quiet)
    assert torch.equal(logits(fired[0]), clean_fired)


def test_wan_pipeline_clamp_changes_prompt_embeddings_and_generates(minilm_tokenizer, small_corpus, tmp_path):
    from clear_sae.backbones.diffusers_pipeline import PipelineTextEncoders

    pipe = tiny_wan_pipeline(minilm_tokenizer)
    backbone = PipelineTextEncoders.from_pipeline(pipe, "tiny-wan")
    library = _train_and_learn(backbone, small_corpus, tmp_path)
    entry = library.get("french_horn")
    report = erase_report(backbone, library, ["french_horn"], HORN_T[:10] + UNRELATED, progress=False)
    fired = [r["prompt"] for r in report["prompts"] if r["fired"]]
    quiet = [r["prompt"] for r in report["prompts"] if not r["fired"]]
    assert fired and quiet

    def embeds(prompt):
        return pipe.encode_prompt(prompt, do_classifier_free_guidance=False, max_sequence_length=32)[0]

    with erase_concepts(pipe, library, ["french_horn"]) as clamps:
        erased_fired, erased_quiet = embeds(fired[0]), embeds(quiet[0])
        frames = pipe(
            prompt=fired[0],
            negative_prompt="",
            height=16,
            width=16,
            num_frames=9,
            num_inference_steps=2,
            guidance_scale=4.0,
            max_sequence_length=32,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
        ).frames
        assert clamps[entry.hook_point].tokens_edited > 0
    assert not torch.equal(embeds(fired[0]), erased_fired)
    assert torch.equal(embeds(quiet[0]), erased_quiet)
    assert frames.shape == (1, 9, 16, 16, 3) and frames.std() > 0
    clean = pipe(
        prompt=fired[0],
        negative_prompt="",
        height=16,
        width=16,
        num_frames=9,
        num_inference_steps=2,
        guidance_scale=4.0,
        max_sequence_length=32,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).frames
    assert not (clean == frames).all()

    # Precomputed embeddings skip the text encoder, so the clamp never runs: warned about, or refused when strict.
    clean_embeds = embeds(fired[0])
    blank = embeds("")
    generate = dict(height=16, width=16, num_frames=9, num_inference_steps=2, output_type="np")
    with pytest.warns(ErasureNotAppliedWarning, match=entry.hook_point):
        with erase_concepts(pipe, library, ["french_horn"]):
            pipe(prompt_embeds=clean_embeds, negative_prompt_embeds=blank, **generate)
    with pytest.raises(ClearSaeError, match="prompt_embeds"):
        with erase_concepts(pipe, library, ["french_horn"], strict=True):
            pipe(prompt_embeds=clean_embeds, negative_prompt_embeds=blank, **generate)
    # The README's way: encode inside the context and pass the erased embeddings on.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ErasureNotAppliedWarning)
        with erase_concepts(pipe, library, ["french_horn"], strict=True):
            inside = embeds(fired[0])
    assert torch.equal(inside, erased_fired)


def test_a_concept_on_two_text_encoders_gets_an_entry_in_each_and_erasure_reaches_both(
    minilm_tokenizer, small_corpus, tmp_path
):
    """Flux and SD3 read a prompt through two encoders: one layer for the whole pipeline would leave the concept in
    the other encoder's path, so each encoder gets its own entry (its layer chosen among its own hook points) and
    erasing the concept clamps them all."""
    from clear_sae.backbones.diffusers_pipeline import PipelineTextEncoders
    from clear_sae.concepts import learn_concept_per_encoder

    pipe = tiny_two_encoder_pipeline(minilm_tokenizer)
    backbone = PipelineTextEncoders.from_pipeline(pipe, "tiny-two")
    write_cache(backbone, small_corpus, tmp_path / "c.h5", backbone.hook_points, CacheConfig(64), progress=False)
    with ActivationCache(tmp_path / "c.h5") as cache:
        config = TrainConfig(expansion=8, k=8, tokens=40_960, batch_size=256)
        train_dictionaries(cache, tmp_path / "d", cfg=config, progress=False)
    dictionaries = Dictionaries(tmp_path / "d")
    # Tiny random encoders and dictionaries hold few concept latents: the bars are low so that both encoders have
    # some (this test is about the entries and the clamps, not about how well the latents separate).
    cfg = ConceptConfig(background=0, min_target_rate=0.3, max_nontarget_rate=0.3)
    learned = learn_concept_per_encoder(backbone, dictionaries, "french_horn", HORN_T, HORN_N, cfg)
    names = [entry.name for entry, _ in learned]
    assert names == ["french_horn@text_encoder", "french_horn@text_encoder_2"]
    for entry, profiles in learned:
        encoder = entry.name.split("@")[1]
        assert entry.hook_point.split(".")[0] == encoder
        assert {p.hook_point.split(".")[0] for p in profiles} == {encoder}  # chosen within its own encoder
    library = ConceptLibrary(tmp_path / "lib.json")
    library.add(make_single_entry(learned[0][0], "french_horn"))  # an earlier single-layer entry...
    library.save()
    library.replace_parts("french_horn", [entry for entry, _ in learned])
    library.save()
    library = ConceptLibrary.load(tmp_path / "lib.json")
    assert sorted(library.concepts) == names  # ...replaced by the parts, not kept beside them
    with erase_concepts(pipe, library, ["french_horn"]) as clamps:
        assert sorted(clamps) == sorted(entry.hook_point for entry, _ in learned)
        backbone.run(HORN_T[:6], [entry.hook_point for entry, _ in learned])
        assert all(clamp.tokens_edited > 0 for clamp in clamps.values())  # both encoders' paths are clamped
    report = erase_report(backbone, library, ["french_horn"], HORN_T[:6], progress=False)
    assert set(report["prompts"][0]["concepts"]) == set(names)


def make_single_entry(entry, name):
    """A copy of `entry` under the plain concept name, as a single-encoder learning would have stored it."""
    from dataclasses import replace

    return replace(entry, name=name)


def test_merge_clamps_unions_latents_at_one_hook(minilm_library):
    library = ConceptLibrary.load(minilm_library)
    concepts = resolve_concepts(library, ["french_horn", "umbrella"])
    clamps = merge_clamps(concepts)
    union = {}
    for c in concepts:
        union.setdefault(c.entry.hook_point, set()).update(c.entry.latents)
    assert {h: set(c.latents.tolist()) for h, c in clamps.items()} == union
    with attach(object(), {}) as attached:  # nothing to attach is fine
        assert attached == {}


@pytest.mark.parametrize("arch", ["topk", "topk-rescaled", "standard", "jumprelu"])
def test_exact_clamp_zeroes_concept_latents_even_on_untrained_saes(arch):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    if arch.startswith("topk"):
        sae = TopKSAE(TopKSAEConfig(d_in=16, d_sae=64, k=6, rescale_acts_by_decoder_norm=arch.endswith("rescaled")))
    elif arch == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=16, d_sae=64))
    else:
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=16, d_sae=64))
    with torch.no_grad():  # random weights with decoder rows that are far from the encoder's inverse
        for p in sae.parameters():
            p.normal_(0, 0.3)
        if hasattr(sae, "threshold"):
            sae.threshold.fill_(0.05)
    h = torch.randn(3, 40, 16)
    clamp = LatentClamp(sae, [1, 5, 9, 30], 1.0)
    before = clamp.concept_codes(h)
    fired = (before > 0).any(-1)
    assert fired.any() and (~fired).any()
    edited = clamp.edit(h)
    assert torch.equal(clamp.concept_codes(edited), torch.zeros_like(before))
    assert torch.equal(edited[~fired], h[~fired])
    single = LatentClamp(sae, [1, 5, 9, 30], 1.0, exact=False).edit(h)
    assert (clamp.concept_codes(single) > 0).any()  # what the exact step is there for


def test_clamp_refuses_a_module_of_another_width(minilm_library):
    (concept,) = resolve_concepts(ConceptLibrary.load(minilm_library), ["french_horn"])
    clamp = LatentClamp(concept.sae, concept.entry.latents)
    with pytest.raises(ClearSaeError, match="dimension mismatch"):
        clamp.edit(torch.zeros(2, 3, 32))


def test_an_entry_is_refused_on_a_retrained_layer_and_kept_on_its_own(minilm, minilm_library, tmp_path):
    """Retraining the entry's layer (`train --force --layers`) changes what its latent ids mean: erasure refuses,
    naming the entry and what to do; on the dictionaries it was learned on it erases as before."""
    import shutil
    from pathlib import Path

    from clear_sae.dictionary import WEIGHTS, Dictionaries
    from clear_sae.erase import concept_clamps, resolve_concepts
    from clear_sae.library import ConceptLibrary

    shutil.copytree(Path(minilm_library).parent, tmp_path / "library")
    original = ConceptLibrary.load(minilm_library)
    source = original.dictionary_path(original.get("umbrella"))
    shutil.copytree(source, tmp_path / "dicts")
    library = ConceptLibrary.load(tmp_path / "library" / "concepts.json")
    for entry in library.concepts.values():
        entry.dictionary = str(Path("..") / "dicts")
    entry = library.get("umbrella")
    assert entry.dictionary_fingerprint == Dictionaries(source).fingerprint(entry.hook_point)
    assert resolve_concepts(library, ["umbrella"]) and concept_clamps(library, entry)
    weights = Dictionaries(tmp_path / "dicts").folder(entry.hook_point) / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-2] + b"\x00\x01")  # another SAE at that layer
    for use in (lambda: resolve_concepts(library, ["umbrella"]), lambda: concept_clamps(library, entry)):
        with pytest.raises(ClearSaeError, match="entry 'umbrella' was learned on a different .* relearn it"):
            use()
    entry.dictionary_fingerprint = None  # an entry from before fingerprints: not checked
    assert resolve_concepts(library, ["umbrella"])


@pytest.mark.parametrize("strength", [float("nan"), float("inf"), 1e30, 0.0, -1.0])
def test_a_clamp_strength_that_erases_nothing_or_everything_is_refused(minilm_library, strength):
    (concept,) = resolve_concepts(ConceptLibrary.load(minilm_library), ["french_horn"])
    with pytest.raises(ClearSaeError, match="clamp strength must be .*; pass a strength such as 1"):
        LatentClamp(concept.sae, concept.entry.latents, strength)


def test_a_clamp_that_would_turn_finite_activations_infinite_says_so():
    """A dictionary with extreme decoder weights overflows float32 at any strength: an error, not NaN embeddings
    reported as an erasure."""
    from clear_sae.sae.plain import PlainConfig, PlainSAE

    g = torch.Generator().manual_seed(0)
    tensors = {
        "W_enc": torch.randn(16, 64, generator=g),
        "W_dec": torch.randn(64, 16, generator=g) * 1e37,
        "b_enc": torch.zeros(64),
        "b_dec": torch.zeros(16),
    }
    sae = PlainSAE(PlainConfig(d_in=16, d_sae=64, arch="standard"), tensors)
    clamp = LatentClamp(sae, list(range(64)), 100.0, exact=False)
    with pytest.raises(ClearSaeError, match="turned finite activations into NaN or infinity"):
        clamp.edit(torch.randn(2, 5, 16, generator=g))
    ordinary = PlainSAE(PlainConfig(d_in=16, d_sae=64, arch="standard"), {**tensors, "W_dec": tensors["W_dec"] / 1e37})
    h = torch.randn(1, 5, 16, generator=g)
    h[0, 0, 0] = float("inf")  # what the model already made non-finite is not the clamp's doing
    edited = LatentClamp(ordinary, list(range(64)), 1.0, exact=False).edit(h)
    assert edited is not None and edited[0, 1:].isfinite().all()


def test_padding_positions_are_never_edited_and_real_tokens_are(minilm, minilm_dictionaries):
    """A clamp on every latent fires on every position: the attention mask of the encoder's call keeps it off the
    padding of a short prompt batched with a long one (a pipeline that reads padded positions gets them as the
    encoder made them), while every real token is edited."""
    from clear_sae.dictionary import Dictionaries

    hook = "text_encoder.blocks.2"
    sae = Dictionaries(minilm_dictionaries).sae(hook)
    prompts = ["a cat", "a dog running along the beach at dusk while the waves roll in"]
    before = minilm.run(prompts, [hook])[hook]
    clamp = LatentClamp(sae, list(range(int(sae.cfg.d_sae))), 1.0)
    with attach(minilm, {hook: clamp}):
        after = minilm.run(prompts, [hook])[hook]
    padding = ~before.mask
    assert padding.any() and torch.equal(after.acts[padding], before.acts[padding])
    assert (after.acts[before.mask] != before.acts[before.mask]).any(-1).all()
    assert clamp.tokens_seen == int(before.mask.sum()) and clamp.mask is None  # forgotten once the call is over


def test_a_concept_learned_through_hunyuans_encoding_is_erased_in_both_encoders(
    minilm_tokenizer, small_corpus, tmp_path
):
    """HunyuanVideo reads a hidden state its Llama records with hooks of its own: a clamp at that very block
    (learning has run the model, so those hooks came first) still changes the embeddings the pipeline returns, and
    the CLIP part changes the pooled embedding."""
    from conftest import TINY_HUNYUAN_TEMPLATE, tiny_hunyuan_pipeline

    from clear_sae.backbones.diffusers_pipeline import PipelineEncoding
    from clear_sae.concepts import learn_concept_per_encoder

    pipe = tiny_hunyuan_pipeline(minilm_tokenizer)
    options = {"prompt_template": TINY_HUNYUAN_TEMPLATE}
    backbone = PipelineEncoding(pipe, "tiny-hunyuan", max_sequence_length=16, encode_options=options)
    # The Llama block whose output the pipeline reads; a CLIP block before the last, whose edits reach the
    # end-of-text token that CLIP pools (an edit of the last block reaches it only where a latent fires there).
    read = ["text_encoder.blocks.1", "text_encoder_2.blocks.0"]
    write_cache(backbone, small_corpus, tmp_path / "c.h5", read, CacheConfig(64), progress=False)
    with ActivationCache(tmp_path / "c.h5") as cache:
        train_dictionaries(cache, tmp_path / "d", cfg=TrainConfig(expansion=8, k=8, tokens=20_480), progress=False)
    cfg = ConceptConfig(background=0, min_target_rate=0.3, max_nontarget_rate=0.3)  # low bars: tiny random encoders
    learned = learn_concept_per_encoder(
        backbone, Dictionaries(tmp_path / "d"), "french_horn", HORN_T, HORN_N, cfg, read
    )
    library = ConceptLibrary(tmp_path / "lib.json")
    library.replace_parts("french_horn", [entry for entry, _ in learned])
    assert sorted(entry.hook_point for entry, _ in learned) == read

    def encode():
        with torch.no_grad():
            return pipe.encode_prompt(prompt=HORN_T[:6], max_sequence_length=16, **options)

    plain = encode()
    with erase_concepts(pipe, library, ["french_horn"], strict=True) as clamps:
        erased = encode()
    assert all(clamp.tokens_edited > 0 for clamp in clamps.values())
    embeds, pooled = (0, 1)
    assert not torch.equal(erased[embeds], plain[embeds]) and not torch.equal(erased[pooled], plain[pooled])


def test_padding_firing_counts_the_prompts_and_padding_positions_a_concepts_latents_fire_on(
    minilm_tokenizer, small_corpus, tmp_path
):
    """On CogVideoX's unmasked T5, `padding_firing` counts, for the chosen latents, the prompts firing on a real
    token, those firing on the padding the transformer reads, and the share of padding positions firing, as the
    dense codes of every position say."""
    from conftest import make_entry, tiny_cogvideox_pipeline, tiny_ltx_pipeline

    from clear_sae.backbones.diffusers_pipeline import PipelineEncoding
    from clear_sae.measure import padding_firing

    own = PipelineEncoding(tiny_cogvideox_pipeline(minilm_tokenizer), "tiny-cog", max_sequence_length=24)
    hook = "text_encoder.blocks.1"
    write_cache(own, small_corpus, tmp_path / "c.h5", [hook], CacheConfig(64), progress=False)
    with ActivationCache(tmp_path / "c.h5") as cache:
        train_dictionaries(cache, tmp_path / "d", cfg=TrainConfig(expansion=4, k=4, tokens=8192), progress=False)
    dictionaries = Dictionaries(tmp_path / "d")
    prompts = HORN_T[:10] + UNRELATED
    act = own.run(prompts, [hook])[hook]
    sae = dictionaries.sae(hook)
    with torch.no_grad():  # encoded as rows, as the measurement encodes them (one batch, one chunk)
        real_codes, padding_codes = (sae.encode(act.acts[where].float()) > 0 for where in (act.mask, act.padding))
    latents = padding_codes.sum(0).argsort(descending=True)[:3].tolist()  # the latents busiest on the padding
    real_fires, padding_fires = (codes[:, latents].any(-1) for codes in (real_codes, padding_codes))

    def prompts_with(fires, where):
        return len(set(where.nonzero()[:, 0][fires].tolist()))

    found = padding_firing(own, dictionaries, make_entry(hook_point=hook, latents=latents), prompts, len(prompts))
    assert found == {
        "prompts": len(prompts),
        "fires_on_real": prompts_with(real_fires, act.mask) / len(prompts),
        "fires_on_padding": prompts_with(padding_fires, act.padding) / len(prompts),
        "padding_positions": int(act.padding.sum()),
        "padding_positions_firing": int(padding_fires.sum()) / int(act.padding.sum()),
    }
    assert found["fires_on_padding"] > 0
    none = padding_firing(own, dictionaries, make_entry(hook_point=hook, latents=[]), prompts)
    assert none["fires_on_real"] == none["fires_on_padding"] == none["padding_positions_firing"] == 0

    ltx = PipelineEncoding(tiny_ltx_pipeline(minilm_tokenizer), "tiny-ltx", max_sequence_length=24)
    unread = padding_firing(ltx, dictionaries, make_entry(hook_point=hook, latents=latents), prompts)
    assert unread["fires_on_padding"] is None and unread["padding_positions"] == 0  # LTX hands on the mask
