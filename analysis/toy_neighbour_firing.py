"""Which neighbours a toy concept's erasure touches: per library entry, the share of its non-target captions on
which its clamp fires, grouped by the value that replaced the concept.

A non-target caption is the target caption with the concept swapped for another value of its axis (purple for
blue, orange, ...), so each other value is a fifth of a colour's non-targets (a third of a shape's). The
selection's tolerance bounds how many non-targets a concept's latents fire on overall; this shows whether they
fire on one neighbour in particular (a latent that fires on every "blue" caption fires on only a fifth of
purple's non-targets). A caption counts as clamped when any of the entry's latents fires on any of its tokens at
the entry's layer, so the erasure edits it.

    python analysis/toy_neighbour_firing.py [--library dictionaries/minilm/concepts.json] [--concepts red,purple]
        [--pairs 200] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

SHIPPED_LIBRARY = Path(__file__).resolve().parent.parent / "dictionaries" / "minilm" / "concepts.json"


def prompts_clamped(backbone: Any, library: Any, name: str, prompts: list[str]) -> list[bool]:
    """Per prompt: whether any latent of library entry `name` fires on one of its tokens at the entry's layer."""
    from clear_sae.measure import peak_concept_activation
    from clear_sae.toyworld.evaluation import clamps_at

    ((hook, clamp),) = clamps_at(library, name).items()
    return (peak_concept_activation(clamp, backbone.run(prompts, [hook])[hook]) > 0).tolist()


def neighbour_firing(backbone: Any, library: Any, name: str, pairs: int, seed: int) -> dict[str, float]:
    """Share of the concept's non-target captions clamped, per value that replaced the concept (`all` for every
    non-target)."""
    from clear_sae.toyworld.concepts import attribute_of, concept_pairs, entry_attribute

    axis, value = attribute_of(entry_attribute(library.get(name)))
    _, nontarget, _, specs = concept_pairs(axis, value, pairs, seed=seed)
    clamped = prompts_clamped(backbone, library, name, nontarget)
    groups: dict[str, list[bool]] = {}
    for spec, fired in zip(specs, clamped):
        groups.setdefault(getattr(spec.main, axis), []).append(fired)
    shares = {"all": sum(clamped) / len(clamped)}
    shares.update({group: sum(fired) / len(fired) for group, fired in sorted(groups.items())})
    return shares


def main(argv: list[str] | None = None) -> int:
    """Print, per toy concept of the library, the share of its non-targets clamped, overall and per neighbour."""
    from clear_sae.toyworld.concepts import LEARN_PAIRS, toy_concepts
    from clear_sae.toyworld.protocol import LEARN_SEED

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", type=Path, default=SHIPPED_LIBRARY)
    parser.add_argument("--concepts", default=None, help="comma-separated toy concepts (default: every one it holds)")
    parser.add_argument("--pairs", type=int, default=LEARN_PAIRS, help="non-target captions per concept")
    parser.add_argument("--seed", type=int, default=LEARN_SEED, help="caption seed (0: the learning captions)")
    args = parser.parse_args(argv)

    from clear_sae.backbones import load_backbone
    from clear_sae.library import ConceptLibrary

    library = ConceptLibrary.load(args.library)
    names = args.concepts.split(",") if args.concepts else [c for c in toy_concepts() if c in library.concepts]
    backbone = load_backbone("minilm")
    for name in names:
        entry = library.get(name)
        shares = neighbour_firing(backbone, library, name, args.pairs, args.seed)
        worst = max((g for g in shares if g != "all"), key=lambda g: shares[g])
        groups = "  ".join(f"{g} {100 * v:.0f}%" for g, v in shares.items() if g != "all")
        layer, tolerance = entry.hook_point.removeprefix("text_encoder."), entry.selection.max_nontarget_rate
        print(
            f"{name:<9} {layer:<9} tol {tolerance}  clamped {100 * shares['all']:.1f}% of non-targets, most on "
            f"{worst} ({100 * shares[worst]:.0f}%):  {groups}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
