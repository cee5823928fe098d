"""CLEAR, its published variant and the baselines, erasing the same toy-world concept from the same clips.

Every method (`clear_sae.compare.methods`) is measured as `clear-sae evaluate` measures CLEAR: the clips before
erasure are sampled once per concept and shared by all methods; each method's clips after erasure come from
the same prompts and noise. Methods are built from the concept's learning prompts (the toy world's seed-0
pairs) and its training words (the held-out synonym stays unseen).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from clear_sae.backbones import load_backbone_for
from clear_sae.compare.methods import METHODS, build_erasure, check_methods
from clear_sae.concepts import latents_by_layer
from clear_sae.toyworld.captions import training_words
from clear_sae.toyworld.concepts import LEARN_PAIRS, attribute_of, concept_pairs, entry_attribute
from clear_sae.toyworld.detector import detect
from clear_sae.toyworld.judge import judge_from_settings
from clear_sae.toyworld.metrics import QUALIFYING_RATE, compare, concept_found
from clear_sae.toyworld.protocol import LEARN_SEED
from clear_sae.toyworld.sampling import EvalConfig, ToyWorld, prompt_sets, sample_after, sample_before

if TYPE_CHECKING:
    from clear_sae.library import ConceptLibrary

__all__ = ["METHODS", "compare_concept"]


def compare_concept(
    world: ToyWorld,
    library: "ConceptLibrary",
    name: str,
    methods: list[str] | tuple[str, ...] = METHODS,
    cfg: EvalConfig = EvalConfig(),
    attribute: str | None = None,
    seed: int = 0,
    joint_cfg: Any = None,
    qualifying_rate: float = QUALIFYING_RATE,
) -> dict[str, Any]:
    """Sample the concept's clips once without erasure, then once per method with it; one result per method.

    A concept whose generation rate without erasure is below `qualifying_rate` is reported but not erased."""

    entry = library.concepts.get(name)  # a concept may be compared by methods that need no entry
    axis, value = attribute_of(entry_attribute(entry, attribute) if entry is not None else attribute or name)
    check_methods(methods)
    started = time.perf_counter()
    negative, before = sample_before(world, prompt_sets(axis, value, cfg), cfg)
    rate_before = float(
        concept_found(detect(world.detector, before["target"].sampled_clips()), axis, value, cfg.threshold).mean()
    )
    result: dict[str, Any] = {
        "concept": name,
        "axis": axis,
        "value": value,
        "rate_target_before": round(rate_before, 4),
        "qualifies": rate_before >= qualifying_rate,
        "methods": {},
        "seconds_before": round(time.perf_counter() - started, 1),
    }
    if not result["qualifies"]:
        return result
    backbone = load_backbone_for(None, library.get(name).model_source)
    target, nontarget, _, _ = concept_pairs(axis, value, LEARN_PAIRS, "train", LEARN_SEED)
    layers = latents_by_layer(backbone, library, name, target, nontarget)
    calibration = library.get(name).calibration
    judge = judge_from_settings(world, axis, value, calibration.judge if calibration else None)
    for method in methods:
        erasure = build_erasure(
            method,
            backbone,
            library,
            name,
            target,
            nontarget,
            training_words(axis, value),
            layers,
            seed,
            joint_cfg,
            judge,
        )
        row: dict[str, Any] = {"layer": erasure.layer, "seconds_build": erasure.seconds}
        if erasure.note:
            result["methods"][method] = row | {"note": erasure.note}
            continue
        sampled = time.perf_counter()
        after = sample_after(world, erasure.hooks, before, negative, cfg, erasure.negative_prompt)
        row["seconds_sample"] = round(time.perf_counter() - sampled, 1)
        result["methods"][method] = row | compare(world, axis, value, before, after, cfg)
    return result
