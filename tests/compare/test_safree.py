"""SAFREE on prompt embeddings: its token-wise trigger, its projection inside the prompt's own span, and its
self-validating filter; built from a concept's words in context on the real MiniLM."""

from __future__ import annotations

import pytest
import torch

from clear_sae.compare.safree import (
    Safree,
    SafreeHook,
    SelfValidatingFilter,
    build_safree,
    build_safree_at,
    concept_subspace,
    safree_separations,
    word_token_positions,
)
from clear_sae.errors import ClearSaeError

WIDTH = 8


def prompt(concept_token: bool = True) -> torch.Tensor:
    """Ten positions: a start marker, three words, an end marker, then zero padding. With `concept_token` the middle
    word lies mostly in the concept subspace (the first axis); without, the three words are alike."""
    e = torch.eye(WIDTH)
    words = [e[1] + e[2], 3 * e[0] + e[5], e[1] + e[3]] if concept_token else [e[1] + e[2], e[1] + e[5], e[1] + e[3]]
    states = torch.zeros(10, WIDTH)
    states[0], states[4] = e[1], e[4]
    states[1:4] = torch.stack(words)
    return states


def concept_filter(alpha: float = 0.01, scale: float = 0.2) -> Safree:
    return Safree(torch.eye(WIDTH)[:, :1], alpha, scale)


def test_the_token_whose_removal_takes_the_prompt_farthest_from_the_concept_is_the_only_trigger():
    states = prompt()
    real = states.abs().sum(-1) > 0
    flagged = concept_filter().triggers(states, real)
    assert flagged.tolist() == [False, False, True] + [False] * 7
    # The start and end markers are pooled but never flagged, however far they pull.
    assert not concept_filter(alpha=-1.0).triggers(states, real)[[0, 4]].any()


def test_a_trigger_is_moved_off_the_concept_and_back_into_the_prompts_span_the_rest_bit_for_bit():
    states = prompt()
    real = states.abs().sum(-1) > 0
    safree = concept_filter()
    flagged = safree.triggers(states, real)
    projected = safree.project(states, real, flagged)
    # Back in the span of the prompt's own tokens (its own state among them), so some of the concept returns, but
    # far less than it had.
    coefficients = torch.linalg.lstsq(states[real].T, projected[2][:, None]).solution
    assert torch.allclose(states[real].T @ coefficients, projected[2][:, None], atol=1e-5)
    assert abs(float(projected[2] @ safree.basis)) < 0.5 * float(states[2] @ safree.basis)
    assert torch.equal(projected[~flagged], states[~flagged])


def test_the_filter_conditions_early_steps_only_and_none_when_no_token_triggers():
    embeds = torch.stack([prompt(), prompt(concept_token=False)])
    early, late, counts = concept_filter(scale=0.2)(embeds, steps=10)
    # The paper's constant filters 2 steps of 10 times sigmoid(1 - cos), between 1/2 and 0.73: 1 step here.
    assert counts.tolist()[0] == 1 and torch.equal(late, embeds)
    assert not torch.equal(early[0], embeds[0]) and torch.equal(early[0, 5:], embeds[0, 5:])  # padding stays zero
    _, _, every_step = concept_filter(scale=2.0)(embeds, steps=10)
    assert every_step[0] == 10
    # Words alike: leaving any one out keeps the prompt as far from the concept, so none triggers.
    assert counts[1] == 0 and torch.equal(early[1], embeds[1])


def test_the_subspace_comes_from_the_concepts_words_in_context(tiny_toy_generator):
    from clear_sae.toyworld.sampling import encode, load_toy_world

    pipe = load_toy_world(tiny_toy_generator).pipe
    target = ["a red disc moves left", "a crimson square rises", "a blue bar falls"]
    safree = build_safree(pipe.tokenizer, lambda p: encode(pipe, p), ["red", "crimson", "scarlet"], target)
    assert safree.basis.shape == (384, 2)  # scarlet is in no target prompt
    ids = pipe.tokenizer(target[0], padding="max_length", max_length=32)["input_ids"]
    red = word_token_positions(ids, pipe.tokenizer("red", add_special_tokens=False)["input_ids"])
    in_context = encode(pipe, target[:1])[0, red].mean(0)
    inside = (in_context @ safree.basis) @ safree.basis.T
    assert torch.allclose(inside, in_context, atol=1e-4)
    with pytest.raises(ClearSaeError, match="at least one concept word"):
        concept_subspace([])
    with pytest.raises(ClearSaeError, match="words and target prompts"):
        build_safree(pipe.tokenizer, lambda p: encode(pipe, p), [" "], target)


def test_at_a_layer_the_hook_filters_each_prompts_real_tokens_and_leaves_its_padding_bit_for_bit():
    """Inside the text encoder padding is not zero: the hook reads the call's mask, so padding is neither pooled,
    flagged nor projected, whatever it holds."""
    clean = prompt()
    padded = clean.clone()
    padded[5:] = 7 * torch.eye(WIDTH)[0]  # padding that lies in the concept subspace, so it would pull if pooled
    mask = torch.tensor([[1] * 5 + [0] * 5, [1] * 5 + [0] * 5])
    hook = SafreeHook(concept_filter())
    hook.read_mask(None, (), {"attention_mask": mask})
    out, rest = hook(None, None, (torch.stack([padded, padded]), "rest"))
    real = mask[0].bool()
    expected = concept_filter().filter_prompt(clean, real)
    assert rest == "rest" and not torch.equal(expected[:5], clean[:5])  # a trigger was projected
    assert torch.equal(out[0, :5], expected[:5]) and torch.equal(out[1], out[0])
    assert torch.equal(out[0, 5:], padded[5:])
    hook.forget_mask(None, None, None)
    assert hook.mask is None


def test_attached_to_a_pipeline_the_layer_hook_sees_each_calls_mask_and_changes_the_embeddings(tiny_toy_generator):
    from clear_sae.erase import attach
    from clear_sae.toyworld.sampling import encode, load_toy_world

    pipe = load_toy_world(tiny_toy_generator).pipe
    prompts = ["a red disc moves left", "a crimson square rises slowly on a dark background"]
    seen = []

    class Recording(SafreeHook):
        def __call__(self, module, inputs, output):
            seen.append(self.mask.clone())
            return super().__call__(module, inputs, output)

    layer = pipe.text_encoder.encoder.layer[1]
    outputs = []
    capture = layer.register_forward_hook(lambda m, i, o: outputs.append(o[0] if isinstance(o, tuple) else o))
    hook = Recording(Safree(torch.eye(384)[:, :4], alpha=-1.0))  # every word token projected
    try:
        with attach(pipe, {"text_encoder.blocks.1": hook}):
            edited = encode(pipe, prompts)
        original = encode(pipe, prompts)
    finally:
        capture.remove()
    expected_mask = pipe.tokenizer(prompts, padding="max_length", max_length=32, return_tensors="pt")["attention_mask"]
    assert len(seen) == 1 and torch.equal(seen[0], expected_mask) and hook.mask is None
    assert not torch.equal(edited, original)
    # At the layer itself (where padding is not zero) the padding positions leave the hook as they came.
    pad = expected_mask == 0
    assert not torch.equal(outputs[0][~pad], outputs[1][~pad]) and torch.equal(outputs[0][pad], outputs[1][pad])
    hook.read_mask(None, (), {"attention_mask": expected_mask[:1]})
    with pytest.raises(ClearSaeError, match=r"attention mask of shape \(1, 32\)"):
        hook(None, None, outputs[1])


def test_a_layer_hook_that_finds_no_trigger_resamples_no_clip(tiny_toy_generator):
    """Through the sampler: where no token triggers, the embeddings under the hook equal those without, the filter
    schedules no step and nothing is sampled again."""
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
    quiet = SafreeHook(Safree(torch.eye(384)[:, :4], alpha=1e9))  # no token pulls that far
    how = Intervention(hooks={"text_encoder.blocks.1": quiet}, embed_filter=SelfValidatingFilter(2.0))
    after = sample_after(world, how, before, negative, cfg)
    assert {name: s.sampled for name, s in after.items()} == {"target": 0, "nontarget": 0}
    loud = SafreeHook(Safree(torch.eye(384)[:, :4], alpha=-1.0))  # every word token projected
    how = Intervention(hooks={"text_encoder.blocks.1": loud}, embed_filter=SelfValidatingFilter(2.0))
    assert {name: s.sampled for name, s in sample_after(world, how, before, negative, cfg).items()} == {
        "target": 3,
        "nontarget": 2,
    }


def test_the_self_validating_filter_after_a_layer_hook_schedules_as_the_papers_filter_does():
    """Given the same edit, the filter that compares the embeddings with and without a hook chooses the steps and
    embeddings the paper's filter on the embeddings chooses; an unedited prompt is not filtered."""
    original = torch.stack([prompt(), prompt(concept_token=False)])
    paper = concept_filter(scale=0.6)
    early, late, counts = paper(original, steps=10)
    edited = torch.stack([paper.filter_prompt(s, s.abs().sum(-1) > 0) for s in original])
    layer_early, layer_late, layer_counts = SelfValidatingFilter(0.6)(edited, 10, original)
    assert counts.tolist() == layer_counts.tolist() and counts[0] > 0 and counts[1] == 0
    assert torch.equal(layer_early, early) and torch.equal(layer_late, original) and torch.equal(late, original)
    with pytest.raises(ClearSaeError, match="without the SAFREE hook"):
        SelfValidatingFilter()(edited, 10)


def test_safree_chooses_its_layer_by_how_well_its_subspace_there_separates_the_prompts():
    from clear_sae.backbones import load_backbone

    backbone = load_backbone("minilm")
    target = [f"a red {shape} {motion}" for shape in ("disc", "bar", "square") for motion in ("rises", "falls")]
    nontarget = [p.replace("red", "blue") for p in target]
    scores = safree_separations(backbone, backbone.hook_points, ["red", "crimson"], target, nontarget)
    assert list(scores) == backbone.hook_points
    # The target prompts' red token lies in the subspace spanned by red in context; the blue ones' tokens do not.
    assert all(score > 1 for score in scores.values())
    same = safree_separations(backbone, backbone.hook_points, ["red", "crimson"], target, target)
    assert all(score == 0 for score in same.values())  # the same prompts on both sides: no gap
    with pytest.raises(ClearSaeError, match="at least one concept word"):
        safree_separations(backbone, backbone.hook_points, ["scarlet"], target, nontarget)
    with pytest.raises(ClearSaeError, match="non-target prompts"):
        safree_separations(backbone, backbone.hook_points, ["red"], target, [])
    at_layer = build_safree_at(backbone, "text_encoder.blocks.2", ["red", "crimson"], target, alpha=0.5)
    assert at_layer.basis.shape == (384, 1) and at_layer.alpha == 0.5  # crimson is in no target prompt
    # Its one direction is red's mean state at that layer over the target prompts ("[CLS] a red ...": position 2).
    red = backbone.run(target, ["text_encoder.blocks.2"])["text_encoder.blocks.2"].acts[:, 2].mean(0)
    assert abs(float(torch.nn.functional.cosine_similarity(red, at_layer.basis[:, 0], dim=0))) > 0.9999
