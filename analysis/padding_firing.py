"""Do concept latents fire on the padding a pipeline's transformer reads?

    python analysis/padding_firing.py --out analysis/padding_firing.json

CogVideoX, Flux and SD3 pad their T5 prompt to `max_sequence_length` and run the encoder without a mask, so every
padding position's state depends on the prompt and the transformer reads it; an erasure edits those positions
wherever a concept latent fires there. No such encoder ships with clear_sae, so this reads the embedded MiniLM
as CogVideoX reads T5: MiniLM inside a `CogVideoXPipeline`'s text side, prompts padded to
`--max-sequence-length` with no mask. It caches the demo's corpus through that encoding (`PipelineEncoding`,
real tokens only), trains the demo's dictionaries on it, learns every shipped text concept through it
(`ConceptConfig` defaults, chosen on real tokens), and records, for the concept's targets and non-targets, the
share of prompts whose concept latents fire on a real token, the share whose latents fire on the padding, and
the share of padding positions on which one fires. `docs/build.py` turns the JSON into docs/padding.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from clear_sae.backbones import load_backbone
from clear_sae.backbones.diffusers_pipeline import PipelineEncoding
from clear_sae.cache import ActivationCache, CacheConfig, write_cache
from clear_sae.cli.demo import PROMPTS_DIR, add_retraining_arguments, demo_corpus, retraining_settings
from clear_sae.concepts import ConceptConfig, learn_concept
from clear_sae.dictionary import Dictionaries, TrainConfig, train_dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_write_text, read_prompt_file
from clear_sae.measure import padding_firing


def minilm_as_cogvideox(max_sequence_length: int) -> PipelineEncoding:
    """MiniLM read the way CogVideoX reads its T5: padded to `max_sequence_length`, no attention mask."""
    from diffusers import CogVideoXPipeline

    minilm = load_backbone("minilm")
    pipe = CogVideoXPipeline(
        tokenizer=minilm.tokenizer,  # type: ignore[attr-defined]
        text_encoder=minilm.model,  # type: ignore[attr-defined]
        vae=None,
        transformer=None,
        scheduler=None,
    )
    return PipelineEncoding(pipe, f"minilm-as-cogvideox:{max_sequence_length}", max_sequence_length)


def main(argv: list[str] | None = None) -> None:
    """Run the measurement and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON output")
    parser.add_argument("--max-sequence-length", type=int, default=64, help="the length prompts are padded to")
    add_retraining_arguments(parser)
    args = parser.parse_args(argv)
    demo, names = retraining_settings(parser, args)
    started = time.perf_counter()
    corpus = demo_corpus(demo)
    backbone = minilm_as_cogvideox(args.max_sequence_length)
    print(f"padding read: {backbone.padding_read}", flush=True)
    concepts: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="clear_sae_padding_") as scratch:
        cache_path, folder = Path(scratch) / "cache.h5", Path(scratch) / "dictionaries"
        write_cache(backbone, corpus, cache_path, backbone.hook_points, CacheConfig(batch_size=64))
        train = TrainConfig(
            expansion=demo.expansion, k=demo.k, tokens=demo.tokens, batch_size=demo.batch_size, save_dtype="float16"
        )
        with ActivationCache(cache_path) as cache:
            train_dictionaries(cache, folder, backbone.hook_points, train)
        dictionaries = Dictionaries(folder)
        for name in names:
            target = read_prompt_file(PROMPTS_DIR / "concepts" / f"{name}.target.txt")
            nontarget = read_prompt_file(PROMPTS_DIR / "concepts" / f"{name}.nontarget.txt")
            try:
                entry, _ = learn_concept(backbone, dictionaries, name, target, nontarget, ConceptConfig())
            except ClearSaeError as err:  # no layer holds latents specific to it: recorded, not measured
                concepts[name] = {"layer": None, "error": str(err)}
                continue
            concepts[name] = {
                "layer": entry.hook_point,
                "latents": len(entry.latents),
                "target": padding_firing(backbone, dictionaries, entry, target),
                "nontarget": padding_firing(backbone, dictionaries, entry, nontarget),
            }
            row = concepts[name]
            print(
                f"{name}: {entry.hook_point}, targets firing on padding {row['target']['fires_on_padding']:.0%}, "
                f"non-targets {row['nontarget']['fires_on_padding']:.0%}",
                flush=True,
            )
    report = {
        "format": "clear_sae.padding_firing",
        "command": ["python", "analysis/padding_firing.py", *(argv if argv is not None else sys.argv[1:])],
        "settings": {
            "encoding": "MiniLM inside CogVideoXPipeline's text side: padded to max_sequence_length, no mask",
            "max_sequence_length": args.max_sequence_length,
            "padding_read": backbone.padding_read,
            "tokens": demo.tokens,
            "expansion": demo.expansion,
            "k": demo.k,
            "corpus_prompts": len(corpus),
            "concepts": names,
        },
        "concepts": concepts,
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(args.out, json.dumps(report, indent=2))
    measured = [c for c in concepts.values() if c["layer"]]
    firing = sum(c["target"]["fires_on_padding"] > 0 for c in measured)
    print(f"{firing} of {len(measured)} concepts' latents fire on the padding of some target -> {args.out}")


if __name__ == "__main__":
    main()
