"""Which lever strengthens CLEAR's erasure on the reused dictionaries: strength gamma, non-target tolerance, or both.

For each toy concept the clips before erasure are sampled once (prompts and noise of `--seed`, by default 5000,
which neither the learning prompts, seed 0, nor `clear-sae evaluate`, seed 1000, use), then the concept is
erased five ways and the same figures as `clear-sae evaluate` are read:

- `base`, `gamma2`, `gamma4`: the concept's latents at tolerance 0.2 (the toy world's first rung when this table
  was made; it is now 0.1), at their layer, with gamma 1, 2 and 4;
- `nt0.4_g2`, `nt0.4_g4`: the latents found at tolerance 0.4 and the layer chosen there, gamma 2 and 4.

The latents are learned here from the concept's learning pairs, so the result does not depend on how the
library's entries were calibrated. Writes JSON and prints a markdown table (rate after erasure in %,
preservation drops over 3 points noted).

    python analysis/toy_erasure_levers.py --out levers.json [--concepts red,blue] [--clips 20] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

VARIANTS = {
    "base": (0.2, 1.0),
    "gamma2": (0.2, 2.0),
    "gamma4": (0.2, 4.0),
    "nt0.4_g2": (0.4, 2.0),
    "nt0.4_g4": (0.4, 4.0),
}
"""Variant name: (max_nontarget_rate, gamma)."""


def markdown(results: dict[str, Any]) -> str:
    """One row per concept, one column per variant, and how many concepts each variant brings to the target."""
    lines = ["| concept | " + " | ".join(VARIANTS) + " |", "|---|" + "---|" * len(VARIANTS)]
    met = {v: 0 for v in VARIANTS}
    for name, row in results["concepts"].items():
        cells = []
        for variant in VARIANTS:
            r = row[variant]
            cell = f"{100 * r['rate_after']:.1f}"
            if r["preservation_drop"] > 0.03:
                cell += f" (preservation −{100 * r['preservation_drop']:.1f})"
            cells.append(cell)
            met[variant] += int(r["rate_after"] <= 0.10 and r["preservation_drop"] <= 0.03)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **at most 10%, preservation kept** | " + " | ".join(str(met[v]) for v in VARIANTS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the trial and write its JSON."""
    from clear_sae.backbones import load_backbone
    from clear_sae.concepts import ConceptConfig, profile_concept_at_rates, select_layer
    from clear_sae.dictionary import Dictionaries
    from clear_sae.erase import concept_clamps
    from clear_sae.library import ConceptLibrary
    from clear_sae.toyworld.concepts import LEARN_PAIRS, TOY_BACKGROUND, attribute_of, concept_pairs, toy_concepts
    from clear_sae.toyworld.metrics import compare
    from clear_sae.toyworld.sampling import EvalConfig, load_toy_world, prompt_sets, sample_after, sample_before

    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON output")
    parser.add_argument("--concepts", default=",".join(toy_concepts()))
    parser.add_argument("--library", default=str(root / "dictionaries" / "minilm" / "concepts.json"))
    parser.add_argument("--generator", default=None, help="toy generator folder (default: the shipped one)")
    parser.add_argument("--clips", type=int, default=20, help="target and non-target clips per concept")
    parser.add_argument("--seed", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: EvalConfig.steps)")
    args = parser.parse_args(argv)

    world = load_toy_world(args.generator)
    library = ConceptLibrary.load(args.library)
    cfg = EvalConfig(
        clips=args.clips,
        heldout_clips=1,
        nontarget_clips=args.clips,
        removed_clips=0,
        seed=args.seed,
        steps=args.steps or EvalConfig.steps,
        progress=False,
    )
    backbone = load_backbone("minilm")
    results: dict[str, Any] = {"config": vars(args), "concepts": {}}
    for name in [c for c in args.concepts.split(",") if c]:
        entry = library.get(name)
        axis, value = attribute_of(name)
        negative, before = sample_before(world, prompt_sets(axis, value, cfg), cfg)
        target, nontarget, _, _ = concept_pairs(axis, value, LEARN_PAIRS)
        rates = sorted({rate for rate, _ in VARIANTS.values()})
        profiles = profile_concept_at_rates(
            backbone,
            Dictionaries(library.dictionary_path(entry)),
            target,
            nontarget,
            ConceptConfig(background=TOY_BACKGROUND),
            rates,
        )
        row = {}
        for variant, (rate, gamma) in VARIANTS.items():
            chosen = select_layer(profiles[rate], "energy")
            moved = replace(entry, hook_point=chosen.hook_point, latents=chosen.latents, strength=gamma)
            after = sample_after(world, concept_clamps(library, moved), before, negative, cfg)
            r = compare(world, axis, value, before, after, cfg)
            row[variant] = {
                "layer": chosen.hook_point,
                "latents": len(chosen.latents),
                "rate_before": r["rate_target_before"]["mean"],
                "rate_after": r["rate_target_after"]["mean"],
                "preservation_drop": r["preservation_drop"]["mean"],
                "drift": r["pixel_drift_nontarget"]["mean"],
            }
        results["concepts"][name] = row
        print(name, {v: round(100 * row[v]["rate_after"], 1) for v in VARIANTS}, flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2))  # kept up to date as it goes
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
