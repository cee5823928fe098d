"""The comparison baselines: a difference-of-means direction clamp and a SAFREE-style subspace projection."""

from __future__ import annotations

import pytest
import torch

from clear_sae.compare.baselines import (
    DirectionClamp,
    SubspaceProjection,
    direction_clamp,
    direction_separations,
    subspace_projection,
)
from clear_sae.erase import attach
from clear_sae.errors import ClearSaeError

COLOURS = ("red", "green", "yellow", "purple", "orange")
OBJECTS = ("car", "kite", "umbrella", "door", "boat", "balloon", "bicycle", "house")
TARGET = [f"a blue {o} in the {p}" for o in OBJECTS for p in ("park", "street", "rain")]
NONTARGET = [f"a {c} {o} in the {p}" for o, c in zip(OBJECTS * 3, COLOURS * 5) for p in ("park",)] + [
    f"a {c} {o} in the street" for o, c in zip(OBJECTS, reversed(COLOURS * 2))
]
FINAL = "text_encoder.blocks.5"


def _final_states(backbone, prompts, hooks=None):
    with attach(backbone, hooks or {}):
        act = backbone.run(prompts, [FINAL])[FINAL]
    return act.acts, act.mask


def test_direction_clamp_caps_the_concept_direction_and_leaves_most_non_target_tokens_alone(minilm):
    clamp = direction_clamp(minilm, FINAL, TARGET, NONTARGET)
    before, mask = _final_states(minilm, TARGET[:6])
    after, _ = _final_states(minilm, TARGET[:6], {FINAL: clamp})
    proj_before, proj_after = before[mask] @ clamp.direction, after[mask] @ clamp.direction
    assert proj_before.max() > clamp.ceiling + 1  # the concept shows on some target tokens
    assert proj_after.max() <= clamp.ceiling + 1e-4
    # Only the direction's component changed.
    delta = (after - before)[mask]
    assert torch.allclose(
        delta - (delta @ clamp.direction)[:, None] * clamp.direction, torch.zeros_like(delta), atol=1e-4
    )
    kept_n, mask_n = _final_states(minilm, NONTARGET)
    edited_n, _ = _final_states(minilm, NONTARGET, {FINAL: clamp})
    unchanged = (kept_n == edited_n).all(-1)[mask_n].float().mean()
    assert unchanged >= 0.9


def test_subspace_projection_removes_the_keywords_subspace_from_trigger_tokens_only(minilm):
    projection = subspace_projection(minilm, FINAL, ["blue", "cobalt"], NONTARGET)
    assert projection.basis.shape == (384, 2)
    before, mask = _final_states(minilm, TARGET[:6])
    after, _ = _final_states(minilm, TARGET[:6], {FINAL: projection})
    share_before = projection.share_in_subspace(before[mask])
    share_after = projection.share_in_subspace(after[mask])
    triggered = share_before > projection.trigger
    assert triggered.any() and not triggered.all()
    assert share_after[triggered].max() < 1e-4
    assert torch.equal(after[mask][~triggered], before[mask][~triggered])
    kept_n, mask_n = _final_states(minilm, NONTARGET)
    edited_n, _ = _final_states(minilm, NONTARGET, {FINAL: projection})
    assert (kept_n == edited_n).all(-1)[mask_n].float().mean() >= 0.9


def test_baselines_refuse_what_they_cannot_build():
    with pytest.raises(ClearSaeError, match="direction is zero"):
        DirectionClamp(torch.zeros(8), 0.0)
    with pytest.raises(ClearSaeError, match="at least one keyword"):
        SubspaceProjection(torch.zeros(0, 8), 0.5)
    clamp = DirectionClamp(torch.ones(8), 0.0)
    with pytest.raises(ClearSaeError, match="dimension mismatch"):
        clamp.edit(torch.ones(2, 3, 16))


def test_a_removal_strength_pushes_the_projection_below_the_ceiling_by_that_many_excesses():
    direction = torch.zeros(4)
    direction[0] = 2.0
    capped, mirrored = DirectionClamp(direction, 1.0), DirectionClamp(direction, 1.0).with_strength(2.0)
    tokens = torch.tensor([[3.0, 1.0, 0.0, 0.0], [0.5, 2.0, 0.0, 0.0]])
    assert capped.edit(tokens)[0].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert mirrored.edit(tokens)[0].tolist() == [-1.0, 1.0, 0.0, 0.0]
    assert mirrored.edit(tokens)[1].tolist() == tokens[1].tolist()  # below the ceiling: untouched
    assert mirrored.ceiling == capped.ceiling and torch.equal(mirrored.direction, capped.direction)


def test_direction_separation_scores_every_layer_and_is_zero_without_a_difference(minilm):
    hooks = minilm.hook_points
    scores = direction_separations(minilm, hooks, TARGET, NONTARGET)
    assert list(scores) == hooks and max(scores.values()) > 2  # blue prompts stand apart at some layer
    same = direction_separations(minilm, hooks[-1:], TARGET, TARGET)
    assert same[hooks[-1]] == 0.0
