"""SAFREE on prompt embeddings: its token-wise trigger, its projection inside the prompt's own span, and its
self-validating filter; built from a concept's words in context on the real MiniLM."""

from __future__ import annotations

import pytest
import torch

from clear_sae.compare.safree import Safree, build_safree, concept_subspace, word_token_positions
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
