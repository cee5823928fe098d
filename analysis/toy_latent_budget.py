"""Which latents a toy concept's selection takes, and which its non-target budget leaves out, word by word.

`clear_sae.concepts.specific_and_shared` takes the candidate latents greedily, most contrastive first, as long
as together they fire on at most `max_nontarget_rate` of the non-targets. A concept named by two words in its
learning prompts ("circle" and "disc") can spend that budget on the latents of the more frequent word. This
script runs the selection at one layer and prints, per candidate in the order it considers them, whether it was
taken, the non-target rate of the union taken so far, and the share of each word's prompts it fires on.

    python analysis/toy_latent_budget.py --concept circle --layer blocks.1 [--tolerance 0.1] [--rows 25]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the selection and print one line per candidate latent."""
    from clear_sae.toyworld.concepts import MAX_NONTARGET_RATE, TOY_BACKGROUND

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concept", required=True, help="a toy concept, e.g. circle")
    parser.add_argument("--layer", required=True, help="short hook point name: embed, blocks.0, ...")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=MAX_NONTARGET_RATE,
        help=f"max_nontarget_rate (default: the toy world's first rung, {MAX_NONTARGET_RATE})",
    )
    parser.add_argument("--rows", type=int, default=25, help="candidates printed, best first")
    args = parser.parse_args(argv)

    import torch

    from clear_sae.backbones import load_backbone
    from clear_sae.concepts import ConceptConfig, encode_prompts, ranked_candidates, specific_and_shared
    from clear_sae.dictionary import Dictionaries
    from clear_sae.toyworld.captions import concept_word
    from clear_sae.toyworld.concepts import LEARN_PAIRS, attribute_of, concept_pairs

    axis, value = attribute_of(args.concept)
    hook = f"text_encoder.{args.layer}"
    target, nontarget, _, _ = concept_pairs(axis, value, LEARN_PAIRS)
    backbone = load_backbone("minilm")
    dictionaries = Dictionaries(Path(__file__).resolve().parent.parent / "dictionaries" / "minilm")
    codes_t = encode_prompts(backbone, dictionaries, target, [hook])[hook]
    codes_n = encode_prompts(backbone, dictionaries, nontarget, [hook])[hook]
    cfg = ConceptConfig(max_nontarget_rate=args.tolerance, background=TOY_BACKGROUND)
    taken, _ = specific_and_shared(codes_t, codes_n, cfg)  # the selection itself, not a replay of it
    candidates, _ = ranked_candidates(codes_t, codes_n, cfg)  # in the order it considers them
    fires_t, fires_n = codes_t.peak > 0, codes_n.peak > 0
    target_rate, nontarget_rate = fires_t.float().mean(0), fires_n.float().mean(0)
    words = [concept_word(p, axis, value) for p in target]
    rows_of = {w: torch.tensor([x == w for x in words]) for w in sorted(set(words))}
    print(
        "share of target prompts per word: "
        + ", ".join(f"{w!r} {float(r.float().mean()):.2f}" for w, r in rows_of.items())
    )
    energy = codes_t.energy.sum(0)
    union = torch.zeros(len(nontarget), dtype=torch.bool)
    for latent in candidates[: args.rows]:
        if latent in taken:
            union |= fires_n[:, latent]
        per_word = ", ".join(f"{w!r} {float(fires_t[r, latent].float().mean()):.2f}" for w, r in rows_of.items())
        print(
            f"latent {latent:5d}  {'taken' if latent in taken else 'left '}  fires on targets "
            f"{float(target_rate[latent]):.2f}, non-targets {float(nontarget_rate[latent]):.2f}, union of those "
            f"taken so far {float(union.float().mean()):.2f}; energy {float(energy[latent]):7.1f}; by word: {per_word}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
