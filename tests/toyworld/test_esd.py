"""The fine-tuning baseline: ESD-x on the toy generator's cross-attention, continued from rung to rung."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clear_sae.errors import ClearSaeError


def test_esd_trains_only_the_cross_attention_of_a_copy_and_continues_where_it_stopped(tiny_toy_generator):
    from clear_sae.toyworld.esd import EsdConfig, EsdTuner
    from clear_sae.toyworld.sampling import load_toy_world

    pipe = load_toy_world(tiny_toy_generator).pipe
    original = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    tuner = EsdTuner(pipe, ["a red disc rises", "a crimson bar falls"], EsdConfig(lr=1e-2, batch_clips=2,
                     source_clips=2), steps=2)  # fmt: skip
    first = tuner.train_to(2)
    assert tuner.steps_done == 2 and not any(p.requires_grad for p in first.parameters())
    tuned = first.state_dict()
    changed = {k for k in tuned if not torch.equal(tuned[k], original[k])}
    assert changed and all("attn2" in k for k in changed)
    assert all(torch.equal(v, original[k]) for k, v in pipe.transformer.state_dict().items())  # the pipeline's own
    later = tuner.train_to(3).state_dict()
    assert tuner.steps_done == 3 and any(not torch.equal(later[k], tuned[k]) for k in changed)
    with pytest.raises(ClearSaeError, match="already at 3 steps"):
        tuner.train_to(1)
    with pytest.raises(ClearSaeError, match="target prompts"):
        EsdTuner(pipe, [])
    with pytest.raises(ClearSaeError, match="no parameter"):
        EsdTuner(pipe, ["a red disc"], EsdConfig(trained="nowhere", source_clips=1), steps=1)


def test_a_fine_tuned_transformer_resamples_every_clip_and_is_swapped_back(tiny_toy_generator):
    from clear_sae.toyworld.esd import EsdConfig, EsdTuner
    from clear_sae.toyworld.sampling import (
        EvalConfig,
        Intervention,
        load_toy_world,
        sample_after,
        sample_before,
        training_phrasing_sets,
    )

    world = load_toy_world(tiny_toy_generator)
    own = world.pipe.transformer
    cfg = EvalConfig(clips=2, nontarget_clips=2, removed_clips=0, steps=2, batch_size=2, progress=False)
    negative, before = sample_before(world, training_phrasing_sets("colour", "red", cfg), cfg)
    tuned = EsdTuner(world.pipe, before["target"].prompts, EsdConfig(lr=1e-2, batch_clips=2, source_clips=2),
                     steps=2).train_to(2)  # fmt: skip
    after = sample_after(world, Intervention(transformer=tuned), before, negative, cfg)
    assert world.pipe.transformer is own
    assert after["target"].sampled == 2 and after["nontarget"].sampled == 2
    assert not np.array_equal(after["target"].sampled_clips(), before["target"].sampled_clips())
