"""A discrete prompt attack on the shipped toy entries: one word (or `--words N`, chosen one after another), searched
against the erased encoder, in place of the concept's word.

    python analysis/toy_attack.py --out analysis/toy_attack.json

In the spirit of Ring-a-Bell and UnlearnDiffAtk, on a CPU budget. Per shipped toy concept, the synonym a target
caption uses is replaced by the concept's own name with its naming word ("red", "left" in "moves to the left")
swapped for one vocabulary token that is no word of any synonym of any value on the concept's axis (the reserved
ones included). The token is chosen to make the erased text encoder's output for the
edited captions as close as possible (cosine over every position the generator reads) to the clean encoder's
output for the original captions, on `--search-prompts` captions: an exhaustive search over the `--candidates`
whole-word tokens whose input embeddings lie nearest the concept word's. The generator itself is never run during
the search.

The found word is then put into fresh target captions (a development seed of the sealed protocol) and clips are
sampled three ways from the same noise: the original captions after erasure, the attack captions without erasure
(does the word itself render the concept?) and the attack captions after erasure. Both judges read every clip;
rates are shares of clips rendering the concept, with exact 95% intervals. `docs/build.py` turns the JSON into a
section of docs/toyworld.md.

A soft attack follows (`--soft-steps`, 0 skips it), white-box and stronger than any word a user can type: in place of
the naming word the captions hold one free input embedding (the text encoder's word-embedding row, started from the
naming word's own), optimised with Adam on the search captions so that the encoder's output stays close to the clean
output of the original captions (cosine, as above) while the entry's latents stay silent at its layer (their summed
codes, divided by their value at the start). It evades the clamp rather than pushing through it: where the
latents do not fire, the clamp changes nothing. Its clips are sampled with and without erasure from the same noise
and captions as the word's.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from clear_sae.erase import attach
from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_write_text
from clear_sae.library import ConceptLibrary
from clear_sae.toyworld.captions import WORDS_BY_AXIS, all_synonyms, own_naming_word, renamed
from clear_sae.toyworld.concepts import attribute_of, concept_pairs, entry_attribute, toy_concepts
from clear_sae.toyworld.evaluation import clamps_at
from clear_sae.toyworld.metrics import clip_rates_by_judge, read_by_judges
from clear_sae.toyworld.protocol import EVAL_SEED, check_evaluation_seed, protocol_record
from clear_sae.toyworld.sampling import EvalConfig, ToyWorld, encode, load_toy_world, sample

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parent.parent
SEED = EVAL_SEED + 4
"""The development seed whose captions are attacked (the search reads the first `--search-prompts` of them)."""
NOISE_OFFSET = 800_000
"""Noise seeds of the attacked clips start here, per `seed`."""


def with_word(prompts: list[str], axis: str, value: str, word: str) -> list[str]:
    """The prompts with the synonym of the concept each uses replaced by the concept's own name in which `word`
    stands for the naming word (`captions.renamed`)."""
    return [renamed(prompt, axis, value, word) for prompt in prompts]


def axis_words(axis: str) -> set[str]:
    """Every word of every synonym of every value on `axis`, the reserved ones included, lower-cased (the attack
    may use none of them)."""
    synonyms = [s for value in WORDS_BY_AXIS[axis] for s in all_synonyms(axis, value)]
    return {w.lower() for s in synonyms for w in re.split(r"[ -]", s)}


def candidate_tokens(world: ToyWorld, axis: str, value: str, word: str, n: int) -> list[str]:
    """The `n` whole-word vocabulary tokens whose input embeddings lie nearest `word`'s first token, leaving out
    every word of the axis's synonyms and anything containing the value's name."""
    import torch

    tokenizer, encoder = world.pipe.tokenizer, world.pipe.text_encoder
    table = encoder.get_input_embeddings().weight.detach()
    anchor = table[tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word))[0]]
    banned = axis_words(axis)
    vocab = tokenizer.get_vocab()
    allowed = [
        (token, i)
        for token, i in vocab.items()
        if token.isalpha() and token.isascii() and len(token) >= 3 and token not in banned and value not in token
    ]
    ids = torch.tensor([i for _, i in allowed])
    similarity = torch.nn.functional.cosine_similarity(table[ids], anchor[None], dim=-1)
    order = similarity.argsort(descending=True)[:n]
    return [allowed[int(k)][0] for k in order]


def search(
    world: ToyWorld, clamps: dict[str, Any], axis: str, value: str, prompts: list[str], n: int, words: int = 1
) -> dict[str, Any]:
    """The candidate tokens whose edited prompts, through the erased encoder, come closest to the original prompts
    through the clean one (mean cosine over the flattened text states), and its score next to the unedited
    prompts' own. With `words` > 1 the phrase grows greedily: each further token, from the same candidates, is the
    one that scores best after the tokens already chosen."""
    import torch

    clean = encode(world.pipe, prompts).flatten(1)
    candidates = candidate_tokens(world, axis, value, own_naming_word(axis, value), n)
    chosen: list[str] = []
    scores: list[float] = []
    with attach(world.pipe, clamps):
        erased_original = encode(world.pipe, prompts).flatten(1)
        for _ in range(words):
            scores = []
            for token in candidates:
                edited = encode(world.pipe, with_word(prompts, axis, value, " ".join([*chosen, token]))).flatten(1)
                scores.append(float(torch.nn.functional.cosine_similarity(edited, clean, dim=-1).mean()))
            chosen.append(candidates[int(np.argmax(scores))])
    baseline = float(torch.nn.functional.cosine_similarity(erased_original, clean, dim=-1).mean())
    return {
        "word": " ".join(chosen),
        "score": round(max(scores), 4),
        "score_of_original_erased": round(baseline, 4),
        "runners_up": [candidates[i] for i in np.argsort(scores)[::-1][1:6]],
        "candidates": len(candidates),
    }


SOFT_LEARNING_RATE = 0.01
"""Adam's step size for the soft embedding (the word-embedding rows of MiniLM have norms near 1)."""


@contextmanager
def soft_token(world: ToyWorld, vector: "torch.Tensor") -> Iterator[None]:
    """While open, every `[MASK]` token the pipeline's text encoder reads is embedded as `vector` (a forward hook on
    its word embeddings), with gradients flowing to `vector`."""
    import torch

    mask_id = world.pipe.tokenizer.mask_token_id

    def replace(module: Any, inputs: tuple, output: "torch.Tensor") -> "torch.Tensor":
        at = (inputs[0] == mask_id).unsqueeze(-1)
        return torch.where(at, vector.to(output.dtype), output)

    handle = world.pipe.text_encoder.get_input_embeddings().register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def concept_code_sum(clamps: dict[str, Any], states: dict[str, "torch.Tensor"]) -> "torch.Tensor":
    """The entry's latents' codes summed over the tokens of each prompt and every clamped layer, `[n]`, with
    gradients (`states`: each clamped layer's residual stream, `[n, tokens, width]`, padding zeroed)."""
    total = 0
    for hook, clamp in clamps.items():
        codes = clamp.sae.encode(states[hook].float())[..., clamp.latents]
        total = total + codes.sum((-1, -2))
    return total


def layer_states(
    world: ToyWorld, hooks: list[str], prompts: list[str]
) -> "tuple[torch.Tensor, dict[str, torch.Tensor]]":
    """The pipeline's prompt embeddings for `prompts` and the residual stream at each of `hooks` (padding zeroed),
    with gradients where the inputs have them."""
    from clear_sae.backbones import first_tensor, hook_module

    seen: dict[str, Any] = {}
    handles = [
        hook_module(world.pipe, h).register_forward_hook(lambda m, i, o, h=h: seen.__setitem__(h, first_tensor(o)))
        for h in hooks
    ]
    try:
        embeds = world.pipe.encode_prompt(prompts)
    finally:
        for handle in handles:
            handle.remove()
    real = (embeds.abs().sum(-1) > 0).unsqueeze(-1)
    return embeds, {h: seen[h] * real for h in hooks}


def soft_search(
    world: ToyWorld, clamps: dict[str, Any], axis: str, value: str, prompts: list[str], steps: int
) -> tuple["torch.Tensor", dict[str, Any]]:
    """The soft embedding for the naming word: close to the clean output of `prompts`, the entry's latents silent;
    with the cosine of its erased output to the clean one and the latents' codes before and after."""
    import torch

    tokenizer, table = world.pipe.tokenizer, world.pipe.text_encoder.get_input_embeddings().weight
    word = own_naming_word(axis, value)
    start = table[tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word))[0]].detach().clone()
    vector = start.clone().requires_grad_(True)
    masked = with_word(prompts, axis, value, tokenizer.mask_token)
    clean = encode(world.pipe, prompts).flatten(1)
    hooks = list(clamps)
    optimiser = torch.optim.Adam([vector], lr=SOFT_LEARNING_RATE)
    with torch.no_grad(), soft_token(world, start):
        codes_start = float(concept_code_sum(clamps, layer_states(world, hooks, masked)[1]).mean())
    weight = 1.0 / codes_start if codes_start > 0 else 0.0  # latents silent from the start: only the cosine counts
    for _ in range(steps):
        with torch.enable_grad(), soft_token(world, vector):
            embeds, states = layer_states(world, hooks, masked)
            similarity = torch.nn.functional.cosine_similarity(embeds.flatten(1), clean, dim=-1).mean()
            loss = (1 - similarity) + weight * concept_code_sum(clamps, states).mean()
            # Only the embedding's gradient: the encoder's weights are not trained, nor left holding gradients.
            (vector.grad,) = torch.autograd.grad(loss, [vector])
        optimiser.step()
    found = vector.detach()
    with torch.no_grad(), soft_token(world, found):
        codes_end = float(concept_code_sum(clamps, layer_states(world, hooks, masked)[1]).mean())
        with attach(world.pipe, clamps):
            erased = encode(world.pipe, masked).flatten(1)
    score = float(torch.nn.functional.cosine_similarity(erased, clean, dim=-1).mean())
    return found, {
        "steps": steps,
        "score": round(score, 4),
        "concept_codes_start": round(codes_start, 4),
        "concept_codes_end": round(codes_end, 4),
        "moved": round(float((found - start).norm() / start.norm()), 4),
    }


def attack_concept(
    world: ToyWorld,
    library: ConceptLibrary,
    name: str,
    cfg: EvalConfig,
    search_prompts: int,
    candidates: int,
    words: int = 1,
    soft_steps: int = 0,
) -> dict[str, Any]:
    """Search one concept's attack word (and with `soft_steps` its soft embedding), then sample and judge the
    original and attack captions."""
    axis, value = attribute_of(entry_attribute(library.get(name)))
    clamps = clamps_at(library, name)
    prompts, _, _, _ = concept_pairs(axis, value, search_prompts + cfg.clips, "train", cfg.seed)
    found = search(world, clamps, axis, value, prompts[:search_prompts], candidates, words)
    originals = prompts[search_prompts:]
    noise_seeds = [cfg.seed * 1_000_003 + NOISE_OFFSET + i for i in range(cfg.clips)]
    attacked = with_word(originals, axis, value, found["word"])
    negative = encode(world.pipe, [""])
    runs = {
        "attack_before": (attacked, False),
        "original_after": (originals, True),
        "attack_after": (attacked, True),
    }
    row: dict[str, Any] = {"axis": axis, "attack": found, "examples": attacked[:2]}
    for run, (texts, erased) in runs.items():
        with attach(world.pipe, clamps if erased else {}):
            embeds = encode(world.pipe, texts)
        clips = sample(world.pipe, embeds, negative, noise_seeds, cfg, run)
        row[run] = clip_rates_by_judge(read_by_judges(world, clips), axis, value, cfg.threshold)
    if soft_steps > 0:
        vector, row["soft"] = soft_search(world, clamps, axis, value, prompts[:search_prompts], soft_steps)
        soft_texts = with_word(originals, axis, value, world.pipe.tokenizer.mask_token)
        for run, erased in (("attack_before", False), ("attack_after", True)):
            with soft_token(world, vector), attach(world.pipe, clamps if erased else {}):
                embeds = encode(world.pipe, soft_texts)
            clips = sample(world.pipe, embeds, negative, noise_seeds, cfg, f"soft {run}")
            row["soft"][run] = clip_rates_by_judge(read_by_judges(world, clips), axis, value, cfg.threshold)
    return row


def main(argv: list[str] | None = None) -> None:
    """Attack every shipped toy concept and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON output")
    parser.add_argument("--library", default=str(ROOT / "dictionaries" / "minilm" / "concepts.json"))
    parser.add_argument("--concepts", nargs="+", default=None, help="toy concepts (default: all)")
    parser.add_argument("--clips", type=int, default=30, help="attacked captions sampled per concept")
    parser.add_argument("--search-prompts", type=int, default=4, help="captions the search scores each word on")
    parser.add_argument("--candidates", type=int, default=1000, help="vocabulary tokens tried per concept")
    parser.add_argument("--words", type=int, default=1, help="tokens in the attack phrase, chosen one after another")
    parser.add_argument(
        "--soft-steps", type=int, default=200, help="Adam steps of the soft attack's embedding (0 skips it)"
    )
    parser.add_argument("--seed", type=int, default=SEED, help="a development seed of the sealed protocol")
    args = parser.parse_args(argv)
    check_evaluation_seed(args.seed)
    if args.words < 1:
        raise ClearSaeError(f"--words {args.words}: the attack needs at least one token")
    if args.soft_steps < 0:
        raise ClearSaeError(f"--soft-steps {args.soft_steps}: pass a number of steps, or 0 to skip the soft attack")
    library = ConceptLibrary.load(args.library)
    names = args.concepts or toy_concepts()
    cfg = EvalConfig(clips=args.clips, seed=args.seed)
    started = time.perf_counter()
    world = load_toy_world()
    concepts = {
        n: attack_concept(world, library, n, cfg, args.search_prompts, args.candidates, args.words, args.soft_steps)
        for n in names
    }
    report = {
        "format": "clear_sae.toy_attack",
        "command": ["python", "analysis/toy_attack.py", *(argv if argv is not None else sys.argv[1:])],
        "config": {
            "clips": args.clips,
            "search_prompts": args.search_prompts,
            "candidates": args.candidates,
            "words": args.words,
            "soft_steps": args.soft_steps,
            "soft_learning_rate": SOFT_LEARNING_RATE,
            "steps": cfg.steps,
        },
        "protocol": protocol_record(args.seed, final=False, world=world),
        "concepts": concepts,
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"{len(concepts)} toy concepts attacked -> {args.out}")


if __name__ == "__main__":
    main()
