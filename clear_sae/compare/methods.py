"""Every erasure method of the comparison, built for one concept as forward hooks (and a negative prompt).

- `clear`: the library's concept on its reused dictionaries, learned afresh from the same prompts so that
  its time is the concept's own cost (with the library's settings, and its calibration ladder if it was
  calibrated, this reproduces the entry);
- `clear-joint`: the paper's own per-concept SAE and layer preferences (`clear_sae.compare.joint`), trained here,
  with the concept's rule for specific latents before any calibration, and gamma 1;
- `negative-prompt`: the concept's words as the negative prompt under classifier-free guidance (no hook;
  only a generator can use it);
- `safree`: the SAFREE-style projection of the text encoder's output (`clear_sae.compare.baselines`);
- `sae-first`, `sae-middle`, `sae-last`, `sae-random`: the SAE clamp at a fixed layer (random: drawn with
  the comparison's seed) with the concept's latents at that layer; `sae-all`: at every layer at once;
- `diff-means`: a difference-of-means direction clamped at the layer CLEAR selects, no SAE.

`Erasure.seconds` is the wall time to build a method for the concept, training included (the reused
dictionaries are shared by every concept and not counted).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clear_sae.calibration.ladder import learn_calibrated_concept, recorded_calibration
from clear_sae.compare.baselines import direction_clamp, subspace_projection
from clear_sae.compare.joint import JointConfig, learn_concept_joint
from clear_sae.concepts import concept_settings, learn_concept
from clear_sae.dictionary import Dictionaries
from clear_sae.erase import concept_clamps, merge_clamps, resolve_concepts
from clear_sae.errors import ClearSaeError
from clear_sae.library import ConceptLibrary

if TYPE_CHECKING:
    from clear_sae.backbones import Backbone

METHODS = (
    "clear",
    "clear-joint",
    "negative-prompt",
    "safree",
    "sae-first",
    "sae-middle",
    "sae-last",
    "sae-random",
    "sae-all",
    "diff-means",
)


@dataclass
class Erasure:
    """One method made ready for one concept."""

    hooks: dict[str, Any] = field(default_factory=dict)
    """Forward hooks by hook point of the text encoder."""
    negative_prompt: str = ""
    layer: str | None = None
    """Where it acts (`all` for every layer; None for the negative prompt)."""
    seconds: float = 0.0
    note: str = ""
    """Why the method could not be built for this concept (then nothing is erased)."""


def build_erasure(
    method: str,
    backbone: "Backbone",
    library: "ConceptLibrary",
    name: str,
    target: list[str],
    nontarget: list[str],
    keywords: list[str],
    layers: dict[str, list[int]],
    seed: int = 0,
    joint_cfg: Any = None,
    judge: Any = None,
) -> Erasure:
    """Build `method` for library concept `name` from its learning prompts; `keywords` are the concept's words
    (for the negative prompt and the SAFREE subspace) and `layers` its latents at every layer
    (`latents_by_layer`), in the backbone's order. `judge` climbs `clear`'s calibration again for an entry
    calibrated with a judge other than the probe (`clear_sae.calibration.ladder`)."""

    started = time.perf_counter()
    entry = library.get(name)
    hooks = list(layers)
    if method == "clear":
        scratch = ConceptLibrary(library.path)  # never saved; only resolves the dictionary's relative path
        dictionaries = Dictionaries(library.dictionary_path(entry))
        settings = replace(concept_settings(library, name), strength=entry.strength)
        calibration = recorded_calibration(entry.calibration)
        if calibration:  # climb the ladder again, so that its cost is counted
            first_rate, cal = calibration
            fresh, _, _ = learn_calibrated_concept(
                backbone,
                dictionaries,
                name,
                target,
                nontarget,
                replace(settings, max_nontarget_rate=first_rate),
                cal,
                judge=judge,
            )
        else:
            fresh, _ = learn_concept(backbone, dictionaries, name, target, nontarget, settings)
        erasure = Erasure(concept_clamps(scratch, scratch.add(fresh)), layer=fresh.hook_point)
    elif method == "clear-joint":
        # The concept's own rule for specific and shared latents, whatever training schedule `joint_cfg` sets;
        # as published, so without the calibration of the reused-dictionary entry (gamma 1, the first tolerance).
        rule = concept_settings(library, name)
        calibration = recorded_calibration(entry.calibration)
        if calibration:
            rule = replace(rule, max_nontarget_rate=calibration[0])
        cfg = replace(joint_cfg or JointConfig(), concept=rule)
        with tempfile.TemporaryDirectory(prefix="clear_joint_") as scratch_dir:  # the SAE is loaded before it goes
            joint_library = ConceptLibrary(Path(scratch_dir) / "concepts.json")
            joint_entry, _ = learn_concept_joint(
                backbone, name, target, nontarget, Path(scratch_dir) / "sae", cfg, hooks, progress=False
            )
            joint_library.add(joint_entry)
            erasure = Erasure(merge_clamps(resolve_concepts(joint_library, [name])), layer=joint_entry.hook_point)
    elif method == "negative-prompt":
        erasure = Erasure(negative_prompt=", ".join(keywords))
    elif method == "safree":
        erasure = Erasure({hooks[-1]: subspace_projection(backbone, hooks[-1], keywords, nontarget)}, layer=hooks[-1])
    elif method in ("sae-first", "sae-middle", "sae-last", "sae-random"):
        index = {
            "sae-first": 0,
            "sae-middle": len(hooks) // 2,
            "sae-last": len(hooks) - 1,
            "sae-random": int(np.random.default_rng(seed).integers(len(hooks))),
        }[method]
        hook = hooks[index]
        if layers[hook]:
            moved = replace(entry, hook_point=hook, latents=layers[hook])
            erasure = Erasure(concept_clamps(library, moved), layer=hook)
        else:
            erasure = Erasure(layer=hook, note="no concept-specific latents at this layer")
    elif method == "sae-all":
        all_hooks: dict[str, Any] = {}
        for hook, latents in layers.items():
            if latents:
                all_hooks.update(concept_clamps(library, replace(entry, hook_point=hook, latents=latents)))
        erasure = Erasure(all_hooks, layer="all")
    elif method == "diff-means":
        erasure = Erasure(
            {entry.hook_point: direction_clamp(backbone, entry.hook_point, target, nontarget)}, layer=entry.hook_point
        )
    else:
        raise ClearSaeError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    erasure.seconds = round(time.perf_counter() - started, 2)
    return erasure


def check_methods(methods: list[str] | tuple[str, ...]) -> None:
    """Raise a one-line error for a method name that does not exist."""
    for method in methods:
        if method not in METHODS:
            raise ClearSaeError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
