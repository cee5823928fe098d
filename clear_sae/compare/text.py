"""The text-side comparison: every method erasing one library concept, measured on the text encoder's output alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clear_sae.calibration.probe import train_concept_probe
from clear_sae.compare.methods import build_erasure, check_methods
from clear_sae.concepts import latents_by_layer
from clear_sae.measure import cosine, pooled_final_states

if TYPE_CHECKING:
    from clear_sae.backbones import Backbone
    from clear_sae.library import ConceptLibrary


def text_erasure_figures(
    backbone: "Backbone", probe: Any, hooks: dict[str, Any], target: list[str], nontarget: list[str]
) -> dict[str, Any]:
    """What a method's hooks do to fresh prompts, read from the text encoder's output alone (no generator):
    the share of target prompts a concept probe still recognises, before and after; for the non-targets, the
    probe's false alarms, the mean cosine of their pooled final states with and without the hooks, and how
    many come out bit-for-bit unchanged."""
    import torch

    t_before, n_before = pooled_final_states(backbone, target), pooled_final_states(backbone, nontarget)
    t_after = pooled_final_states(backbone, target, hooks)
    n_after = pooled_final_states(backbone, nontarget, hooks)
    cosines = [cosine(a, b) for a, b in zip(n_before, n_after)]
    return {
        "probe_rate_before": round(float((probe(t_before) > 0.5).double().mean()), 4),
        "probe_rate_after": round(float((probe(t_after) > 0.5).double().mean()), 4),
        "nontarget_probe_rate_after": round(float((probe(n_after) > 0.5).double().mean()), 4),
        "nontarget_cosine": round(sum(cosines) / len(cosines), 6),
        "nontarget_unchanged": int(sum(bool(torch.equal(a, b)) for a, b in zip(n_before, n_after))),
        "prompts": {"target": len(target), "nontarget": len(nontarget)},
    }


def compare_text_concept(
    backbone: "Backbone",
    library: "ConceptLibrary",
    name: str,
    methods: list[str],
    target: list[str],
    nontarget: list[str],
    fresh_target: list[str],
    fresh_nontarget: list[str],
    keywords: list[str],
    seed: int = 0,
    joint_cfg: Any = None,
) -> dict[str, Any]:
    """Every method (bar the negative prompt, which needs a generator) erasing library concept `name`, each
    built from the learning prompts and measured by `text_erasure_figures` on the fresh ones."""

    check_methods(methods)
    probe = train_concept_probe(
        pooled_final_states(backbone, target), pooled_final_states(backbone, nontarget), seed=seed
    )
    layers = latents_by_layer(backbone, library, name, target, nontarget)
    rows: dict[str, Any] = {}
    for method in methods:
        if method == "negative-prompt":
            rows[method] = {"layer": None, "note": "needs a generator"}
            continue
        erasure = build_erasure(method, backbone, library, name, target, nontarget, keywords, layers, seed, joint_cfg)
        row: dict[str, Any] = {"layer": erasure.layer, "seconds_build": erasure.seconds}
        rows[method] = row | (
            {"note": erasure.note}
            if erasure.note
            else text_erasure_figures(backbone, probe, erasure.hooks, fresh_target, fresh_nontarget)
        )
    return {"concept": name, "methods": rows}
