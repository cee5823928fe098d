"""CLEAR, its published variant and the baselines, erasing the same toy-world concept from the same clips.

Every method is measured as `clear-sae evaluate` measures CLEAR: the clips before erasure are sampled once
per concept and shared by all methods; each method's clips after erasure come from the same prompts and
noise. A method is a set of forward hooks on the pipeline's text encoder (and, for the negative prompt, a
negative prompt), built from the concept's learning prompts (the toy world's seed-0 pairs):

- `clear`: the library's entry (reused dictionaries, the layer chosen by separability);
- `clear-joint`: the paper's own per-concept SAE and layer preferences (`clear_sae.joint`), trained here;
- `negative-prompt`: the concept's training words as the negative prompt under classifier-free guidance;
- `safree`: the SAFREE-style projection of the text encoder's output (`clear_sae.baselines`);
- `sae-first`, `sae-middle`, `sae-last`, `sae-random`: the SAE clamp at a fixed layer (random: drawn with the
  comparison's seed), with the concept's latents at that layer; `sae-all`: at every layer at once;
- `diff-means`: a difference-of-means direction clamped at the layer CLEAR selects, no SAE.

`seconds_build` is the wall time to build a method for the concept, training included (the reused
dictionaries themselves are shared by every concept and not counted).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clear_sae.errors import ClearSaeError
from clear_sae.toyworld.captions import WORDS_BY_AXIS
from clear_sae.toyworld.concepts import LEARN_PAIRS, LEARN_SEED, MAX_NONTARGET_RATE, attribute_of, concept_pairs
from clear_sae.toyworld.detector import detect
from clear_sae.toyworld.evaluation import (QUALIFYING_RATE, EvalConfig, ToyWorld, clamps_at, compare, concept_found,
                                           prompt_sets, sample_after, sample_before, sweep_latents)

if TYPE_CHECKING:
    from clear_sae.library import ConceptLibrary

METHODS = ("clear", "clear-joint", "negative-prompt", "safree", "sae-first", "sae-middle", "sae-last", "sae-random",
           "sae-all", "diff-means")


@dataclass
class Erasure:
    """One method made ready for one concept."""

    hooks: dict[str, Any] = field(default_factory=dict)
    """Forward hooks by hook point of the pipeline's text encoder."""
    negative_prompt: str = ""
    layer: str | None = None
    """Where it acts (`all` for every layer; None for the negative prompt)."""
    seconds: float = 0.0
    note: str = ""
    """Why the method could not be built for this concept (then `hooks` is empty and nothing is sampled)."""


def training_words(axis: str, value: str) -> list[str]:
    """The concept's synonyms that training captions use (the held-out one stays unseen)."""
    return WORDS_BY_AXIS[axis][value][:-1]


def build_erasure(method: str, world: ToyWorld, library: "ConceptLibrary", name: str, axis: str, value: str,
                  latents_by_layer: dict[str, list[int]], seed: int = 0, joint_cfg: Any = None) -> Erasure:
    """Build `method` for concept `name`; `latents_by_layer` is the concept's latents at every layer."""
    from clear_sae.backbones import load_backbone
    from clear_sae.baselines import direction_clamp, subspace_projection
    from clear_sae.erase import merge_clamps, resolve_concepts

    started = time.perf_counter()
    entry = library.get(name)
    hooks_in_order = list(latents_by_layer)
    target, nontarget, _, _ = concept_pairs(axis, value, LEARN_PAIRS, "train", LEARN_SEED)
    erasure = Erasure()
    if method == "clear":
        # Learned afresh on the library's dictionaries so that the time is the concept's own cost; for a toy
        # concept of the shipped library this reproduces its entry.
        from clear_sae.dictionary import Dictionaries
        from clear_sae.library import ConceptLibrary
        from clear_sae.toyworld.concepts import learn_toy_concept

        dictionaries = Dictionaries(library.dictionary_path(entry))
        fresh_library = ConceptLibrary(library.path.with_name("comparison_scratch.json"))
        fresh = learn_toy_concept(load_backbone(entry.model_source), dictionaries, f"{axis}={value}", fresh_library)
        fresh_library.concepts[name] = fresh
        erasure = Erasure(clamps_at(fresh_library, name), layer=fresh.hook_point)
    elif method == "clear-joint":
        from clear_sae.concepts import ConceptConfig
        from clear_sae.joint import JointConfig, learn_concept_joint
        from clear_sae.library import ConceptLibrary

        cfg = joint_cfg or JointConfig(concept=ConceptConfig(max_nontarget_rate=MAX_NONTARGET_RATE))
        with tempfile.TemporaryDirectory(prefix="clear_joint_") as scratch:  # the SAE is loaded before it goes
            joint_library = ConceptLibrary(Path(scratch) / "concepts.json")
            joint_entry, _ = learn_concept_joint(load_backbone(entry.model_source), name, target, nontarget,
                                                 joint_library, Path(scratch) / "sae", cfg, hooks_in_order,
                                                 progress=False)
            erasure = Erasure(merge_clamps(resolve_concepts(joint_library, [name])), layer=joint_entry.hook_point)
    elif method == "negative-prompt":
        erasure = Erasure(negative_prompt=", ".join(training_words(axis, value)))
    elif method == "safree":
        last = hooks_in_order[-1]
        projection = subspace_projection(load_backbone(entry.model_source), last, training_words(axis, value),
                                         nontarget)
        erasure = Erasure({last: projection}, layer=last)
    elif method in ("sae-first", "sae-middle", "sae-last", "sae-random"):
        index = {"sae-first": 0, "sae-middle": len(hooks_in_order) // 2, "sae-last": len(hooks_in_order) - 1,
                 "sae-random": int(np.random.default_rng(seed).integers(len(hooks_in_order)))}[method]
        hook = hooks_in_order[index]
        if latents_by_layer[hook]:
            erasure = Erasure(clamps_at(library, name, hook, latents_by_layer[hook]), layer=hook)
        else:
            erasure = Erasure(layer=hook, note="no concept-specific latents at this layer")
    elif method == "sae-all":
        hooks = {}
        for hook, latents in latents_by_layer.items():
            if latents:
                hooks.update(clamps_at(library, name, hook, latents))
        erasure = Erasure(hooks, layer="all")
    elif method == "diff-means":
        clamp = direction_clamp(load_backbone(entry.model_source), entry.hook_point, target, nontarget)
        erasure = Erasure({entry.hook_point: clamp}, layer=entry.hook_point)
    else:
        raise ClearSaeError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    erasure.seconds = round(time.perf_counter() - started, 2)
    return erasure


def compare_concept(world: ToyWorld, library: "ConceptLibrary", name: str, methods: list[str] | tuple[str, ...] = METHODS,
                    cfg: EvalConfig = EvalConfig(), attribute: str | None = None, seed: int = 0,
                    joint_cfg: Any = None, qualifying_rate: float = QUALIFYING_RATE) -> dict[str, Any]:
    """Sample the concept's clips once without erasure, then once per method with it; one result per method.

    A concept whose generation rate without erasure is below `qualifying_rate` is reported but not erased."""
    axis, value = attribute_of(attribute or name)
    for method in methods:
        if method not in METHODS:
            raise ClearSaeError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    started = time.perf_counter()
    negative, before = sample_before(world, prompt_sets(axis, value, cfg), cfg)
    rate_before = float(concept_found(detect(world.detector, before["target"].clips), axis, value,
                                      cfg.threshold).mean())
    result: dict[str, Any] = {"concept": name, "axis": axis, "value": value, "rate_target_before": round(rate_before, 4),
                              "qualifies": rate_before >= qualifying_rate, "methods": {},
                              "seconds_before": round(time.perf_counter() - started, 1)}
    if not result["qualifies"]:
        return result
    latents_by_layer = sweep_latents(library, name, axis, value)
    for method in methods:
        erasure = build_erasure(method, world, library, name, axis, value, latents_by_layer, seed, joint_cfg)
        row: dict[str, Any] = {"layer": erasure.layer, "seconds_build": erasure.seconds}
        if erasure.note:
            result["methods"][method] = row | {"note": erasure.note}
            continue
        sampled = time.perf_counter()
        after = sample_after(world, erasure.hooks, before, negative, cfg, erasure.negative_prompt)
        row["seconds_sample"] = round(time.perf_counter() - sampled, 1)
        result["methods"][method] = row | compare(world, axis, value, before, after, cfg)
    return result
