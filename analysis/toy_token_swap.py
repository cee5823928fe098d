"""Where a toy concept survives erasure: on its own word's tokens, or in the rest of the caption.

For target captions of a toy concept (training phrasing, `--clips`, from `--seed`), the generator is given
final text states put together from two runs of the text encoder, and the detector reads the clips:

- `original` / `no words` / `erased`: the caption as is, with the concept's words replaced by the neutral
  word ("a crimson shape"), and with the library entry's clamp attached;
- `erased context + neutral word`: the erased states, except on the concept word's tokens, which get the
  states of the "no words" caption there;
- `neutral context + erased word`: the "no words" states, except on the concept word's tokens, which get the
  erased states;
- `original context + neutral word`: the original states with the "no words" states on the word's tokens.

Only captions whose concept word and neutral word tokenise to the same number of tokens are used (the count
is printed). Every variant gets the same noise per caption.

    python analysis/toy_token_swap.py --concept circle [--clips 96] [--seed 15000] [--generator DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def differing_span(a: list[int], b: list[int]) -> tuple[int, int] | None:
    """The one contiguous span where two equally long token lists differ, or None."""
    if len(a) != len(b):
        return None
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    if not diff or diff[-1] - diff[0] + 1 != len(diff):
        return None
    return diff[0], diff[-1] + 1


def main(argv: list[str] | None = None) -> int:
    """Sample the six variants and print the concept's generation rate in each, overall and per word."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concept", required=True, help="a toy concept of the library, e.g. circle")
    parser.add_argument("--library", default=None, help="concept library (default: the shipped one)")
    parser.add_argument("--generator", default=None, help="generator folder (default: the shipped one)")
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--seed", type=int, default=15000)
    parser.add_argument("--out", default=None, help="also write the rates as JSON")
    args = parser.parse_args(argv)

    import torch

    from clear_sae.erase import attach
    from clear_sae.library import ConceptLibrary
    from clear_sae.toyworld.captions import concept_word, without_words
    from clear_sae.toyworld.concepts import attribute_of
    from clear_sae.toyworld.detector import detect
    from clear_sae.toyworld.evaluation import clamps_at
    from clear_sae.toyworld.metrics import concept_found
    from clear_sae.toyworld.sampling import EvalConfig, encode, load_toy_world, sample, training_phrasing_sets

    repo = Path(__file__).resolve().parent.parent
    library = ConceptLibrary.load(args.library or repo / "dictionaries" / "minilm" / "concepts.json")
    axis, value = attribute_of(args.concept)
    world = load_toy_world(args.generator)
    pipe = world.pipe
    cfg = EvalConfig(clips=args.clips, nontarget_clips=1, removed_clips=0, seed=args.seed, progress=False)
    target = training_phrasing_sets(axis, value, cfg)["target"]
    kept, spans = [], []
    for i, prompt in enumerate(target.prompts):
        span = differing_span(
            pipe.tokenizer(prompt)["input_ids"], pipe.tokenizer(without_words(prompt, axis, value))["input_ids"]
        )
        if span is not None:
            kept.append(i)
            spans.append(span)
    print(f"{len(kept)} of {len(target.prompts)} captions tokenise alike with the neutral word")
    prompts = [target.prompts[i] for i in kept]
    seeds = [target.noise_seeds[i] for i in kept]
    words = [concept_word(p, axis, value) for p in prompts]
    negative = encode(pipe, [""])
    original, neutral = encode(pipe, prompts), encode(pipe, [without_words(p, axis, value) for p in prompts])
    with attach(pipe.text_encoder, clamps_at(library, args.concept)):
        erased, erased_negative = encode(pipe, prompts), encode(pipe, [""])

    def on_word(base: "torch.Tensor", word_states: "torch.Tensor") -> "torch.Tensor":
        mixed = base.clone()
        for row, (start, stop) in enumerate(spans):
            mixed[row, start:stop] = word_states[row, start:stop]
        return mixed

    # Each variant with the negative prompt's states of its run: erased ones with the erased negative.
    variants = {
        "original": (original, negative),
        "no words": (neutral, negative),
        "erased": (erased, erased_negative),
        "erased context + neutral word": (on_word(erased, neutral), erased_negative),
        "neutral context + erased word": (on_word(neutral, erased), erased_negative),
        "original context + neutral word": (on_word(original, neutral), negative),
    }
    results = {}
    for name, (states, negative_states) in variants.items():
        clips = sample(pipe, states, negative_states, seeds, cfg, name)
        found = concept_found(detect(world.detector, clips), axis, value, cfg.threshold)
        by_word = {
            w: round(100 * float(found[[k for k, x in enumerate(words) if x == w]].mean()), 1)
            for w in sorted(set(words))
        }
        results[name] = {"rate": round(100 * float(found.mean()), 1), "by_word": by_word}
        print(
            f"{name:<32} {results[name]['rate']:5.1f}%   by word: "
            + ", ".join(f"{w} {r}%" for w, r in by_word.items()),
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"concept": args.concept, "seed": args.seed, "captions": len(kept), "rates": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
