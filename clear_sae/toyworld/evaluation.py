"""Generation rate before and after erasure in the toy world, as the paper measures it on real video models.

For one concept (an attribute value such as `red`), clips are generated from three prompt sets, each clip
from its own seeded noise so that a clip does not depend on its batch:

- target captions in the training phrasing and in the held-out paraphrases: the generation rate is the
  share of frames (clips, for a motion) in which the detector finds the concept; on the training-phrasing
  clips, how far the detector still reads the caption's other two attributes (`target_others_*`) shows
  whether an erasure changed the concept or broke the object;
- context-matched non-target captions: preservation is the share of the caption's colour, shape (per frame)
  and motion (per clip) that the detector reads back, averaged over the three axes; pixel drift is the mean
  absolute change of these clips between the two runs with the same noise.
- the target captions with the concept's words taken out (`without_words`), sampled once with the target
  clips' noise: the rate a perfect removal of the words would leave. The generator is trained to draw an
  unnamed attribute with its neutral value (a grey square standing still), which is none of the concepts,
  so this rate shows how well it learned that; no erasure that removes the concept can be expected to go
  below it.

The "after" run attaches the erasure hooks to the pipeline's text encoder, exactly as on a real pipeline.
A prompt whose text states (and the negative prompt's) come out of the erased encoder bit-for-bit unchanged
would give a bit-identical clip, so it is not sampled twice. Intervals are 95% bootstrap intervals over clips.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clear_sae.backbones import load_backbone_for
from clear_sae.concepts import latents_by_layer
from clear_sae.erase import concept_clamps
from clear_sae.errors import ClearSaeError
from clear_sae.toyworld.concepts import LEARN_PAIRS, attribute_of, concept_pairs, entry_attribute
from clear_sae.toyworld.metrics import compare, qualifies
from clear_sae.toyworld.protocol import LEARN_SEED
from clear_sae.toyworld.report import save_concept_strip
from clear_sae.toyworld.sampling import (
    TEXT_ENCODER_ID,
    EvalConfig,
    Intervention,
    ToyWorld,
    prompt_sets,
    sample_after,
    sample_before,
)

if TYPE_CHECKING:
    from clear_sae.library import ConceptLibrary


REPORT_FORMAT = "clear_sae.toy_evaluation"
"""The `format` of the JSON report `evaluate` returns."""


def clamps_at(
    library: "ConceptLibrary",
    name: str,
    hook_point: str | None = None,
    latents: list[int] | None = None,
    exact: bool = True,
) -> dict[str, Any]:
    """The clamps that erase library concept `name`, optionally moved to another layer with other latents."""

    entry = library.get(name)
    if hook_point is not None and hook_point != entry.hook_point:
        entry = replace(entry, hook_point=hook_point, latents=list(latents or []))
    return concept_clamps(library, entry, exact)


def sweep_latents(library: "ConceptLibrary", name: str, axis: str, value: str) -> dict[str, list[int]]:
    """The concept's latents at every layer of its dictionaries, found from the toy world's learning prompts."""

    entry = library.get(name)
    target, nontarget, _, _ = concept_pairs(axis, value, LEARN_PAIRS, "train", LEARN_SEED)
    layers = latents_by_layer(load_backbone_for(None, entry.model_source), library, name, target, nontarget)
    return {hook: (entry.latents if hook == entry.hook_point else latents) for hook, latents in layers.items()}


def evaluate_concept(
    world: ToyWorld,
    library: "ConceptLibrary",
    name: str,
    attribute: str | None = None,
    cfg: EvalConfig = EvalConfig(),
    sweep: bool = False,
    exact: bool = True,
    strip: Path | None = None,
) -> dict[str, Any]:
    """Erase library concept `name` in the toy world and measure it; `attribute` (default: the name) says
    which colour, shape or motion it is. With `sweep`, also erase it at every layer in turn; with `strip`,
    save a PNG of a few clips before and after there."""
    entry = library.get(name)
    axis, value = attribute_of(entry_attribute(entry, attribute))
    started = time.perf_counter()
    negative, before = sample_before(world, prompt_sets(axis, value, cfg), cfg)
    after = sample_after(world, clamps_at(library, name, exact=exact), before, negative, cfg)
    result = {
        "concept": name,
        "axis": axis,
        "value": value,
        "layer": entry.hook_point,
        "latents": len(entry.latents),
    } | compare(world, axis, value, before, after, cfg)
    result["qualification"] = qualifies(result)
    if strip is not None:  # paths relative to the report's folder, which holds the strips' folder
        result["strip_rows"] = save_concept_strip(before, after, strip)
        result["strip"] = f"{strip.parent.name}/{strip.name}"
        result["gif"] = f"{strip.parent.name}/{strip.with_suffix('.gif').name}"
    result["seconds"] = round(time.perf_counter() - started, 1)
    if sweep:
        per_layer = {}
        for hook, latents in sweep_latents(library, name, axis, value).items():
            if not latents:
                per_layer[hook] = {"latents": 0, "note": "no concept-specific latents at this layer"}
                continue
            moved = sample_after(world, clamps_at(library, name, hook, latents, exact), before, negative, cfg)
            per_layer[hook] = {"latents": len(latents), "selected": hook == entry.hook_point} | compare(
                world, axis, value, before, moved, cfg
            )
        result["sweep"] = per_layer
    return result


def compare_erasures(
    world: ToyWorld,
    axis: str,
    value: str,
    erasures: "dict[str, dict[str, Any] | Intervention]",
    cfg: EvalConfig = EvalConfig(),
) -> dict[str, dict[str, Any]]:
    """Sample a concept's evaluation sets once before erasure and once under each of several erasures (clamps by
    hook point, or an `Intervention`, by name), all from the same prompts and noise, and read each with both judges:
    `compare`'s figures with `qualifies`' verdict, by name. Clip outcomes are paired across the erasures."""
    negative, before = sample_before(world, prompt_sets(axis, value, cfg), cfg)
    figures = {}
    for name, clamps in erasures.items():
        after = sample_after(world, clamps, before, negative, cfg)
        figures[name] = compare(world, axis, value, before, after, cfg)
        figures[name]["qualification"] = qualifies(figures[name])
    return figures


def evaluate(
    world: ToyWorld,
    library: "ConceptLibrary",
    names: list[str],
    attributes: dict[str, str] | None = None,
    cfg: EvalConfig = EvalConfig(),
    sweep: bool = False,
    exact: bool = True,
    strips: Path | None = None,
) -> dict[str, Any]:
    """Evaluate each named concept on its own (one erasure at a time); the JSON `clear-sae evaluate` writes.
    With `strips`, each concept's before/after image strip is saved in that folder (`strips/NAME.png`)."""
    attributes = attributes or {}
    for name in names:  # fail before any sampling on a name the library or the toy world does not know
        entry = library.get(name)
        attribute_of(entry_attribute(entry, attributes.get(name)))
        if entry.backbone_id != TEXT_ENCODER_ID:
            raise ClearSaeError(
                f"concept {name!r} was learned on {entry.backbone_id!r}, but the toy world's text "
                f"encoder is {TEXT_ENCODER_ID!r}; learn it with `clear-sae concept` on MiniLM's "
                "dictionaries"
            )
    from tqdm.auto import tqdm

    results = {}
    bar = tqdm(names, desc="toy concepts evaluated", unit="concept", disable=not cfg.progress)
    for name in bar:
        bar.set_postfix_str(name)  # the sampling batches show their own bar below this one
        safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "concept"  # never outside the folder
        strip = None if strips is None else Path(strips) / f"{safe_name}.png"
        results[name] = evaluate_concept(world, library, name, attributes.get(name), cfg, sweep, exact, strip)
    met = [n for n, r in results.items() if r["qualification"]["met"]]
    counted = [n for n, r in results.items() if r["qualification"]["counted"]]
    return {
        "format": REPORT_FORMAT,
        "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
        "exact": exact,
        "library": str(library.path),
        "concepts": results,
        "totals": {
            "evaluated": len(results),
            "counted": counted,
            "met": met,
            "axes_met": sorted({results[n]["axis"] for n in met}),
        },
    }
