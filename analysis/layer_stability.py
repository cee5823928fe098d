"""How stable is the layer a text concept is erased at, when the dictionaries are retrained with another seed?

    python analysis/layer_stability.py --out analysis/layer_stability.json --seeds 0 1 2

Caches MiniLM's hook points once on the demo's corpus, then for each seed trains the demo's dictionaries (the
demo's settings: `DemoConfig`) and learns every shipped text concept on them (`ConceptConfig` defaults with that
seed, the background check included), and records the layer chosen, its score and the number of latents (a
concept for which no layer holds latents that pass the selection is recorded with no layer). The JSON lists, per
concept, the layer at each seed and whether every seed chose the same one; `docs/build.py` turns it into
docs/stability.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from clear_sae.backbones import load_backbone
from clear_sae.cache import ActivationCache, CacheConfig, write_cache
from clear_sae.cli.demo import PROMPTS_DIR, add_retraining_arguments, demo_corpus, retraining_settings
from clear_sae.concepts import ConceptConfig, learn_concept
from clear_sae.dictionary import Dictionaries, TrainConfig, train_dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_write_text, read_prompt_file


def main(argv: list[str] | None = None) -> None:
    """Run the measurement and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON output")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="dictionary training seeds")
    add_retraining_arguments(parser)
    args = parser.parse_args(argv)
    demo, names = retraining_settings(parser, args)
    started = time.perf_counter()
    corpus = demo_corpus(demo)
    backbone = load_backbone("minilm")
    prompts = {
        name: (
            read_prompt_file(PROMPTS_DIR / "concepts" / f"{name}.target.txt"),
            read_prompt_file(PROMPTS_DIR / "concepts" / f"{name}.nontarget.txt"),
        )
        for name in names
    }
    runs: dict[str, dict[str, dict[str, object]]] = {name: {} for name in names}
    with tempfile.TemporaryDirectory(prefix="clear_sae_stability_") as scratch:
        cache_path = Path(scratch) / "cache.h5"
        write_cache(backbone, corpus, cache_path, backbone.hook_points, CacheConfig(batch_size=64))
        for seed in args.seeds:
            folder = Path(scratch) / f"seed{seed}"
            cfg = TrainConfig(
                expansion=demo.expansion,
                k=demo.k,
                tokens=demo.tokens,
                seed=seed,
                batch_size=demo.batch_size,
                save_dtype="float16",  # as the demo saves them
            )
            with ActivationCache(cache_path) as cache:
                train_dictionaries(cache, folder, backbone.hook_points, cfg, force=True)
            dictionaries = Dictionaries(folder)
            for name in names:
                target, nontarget = prompts[name]
                try:
                    entry, _ = learn_concept(backbone, dictionaries, name, target, nontarget, ConceptConfig(seed=seed))
                except ClearSaeError as err:  # no layer holds latents specific to it: recorded, not chosen
                    runs[name][str(seed)] = {"layer": None, "latents": 0, "energy": None, "error": str(err)}
                    continue
                runs[name][str(seed)] = {
                    "layer": entry.hook_point,
                    "latents": len(entry.latents),
                    "energy": round(float(entry.layer_scores[entry.hook_point]["energy"]), 6),
                }
            print(f"seed {seed}: " + ", ".join(f"{n} {runs[n][str(seed)]['layer']}" for n in names), flush=True)
    concepts = {
        name: {"seeds": per_seed, "same_layer": len({r["layer"] for r in per_seed.values()}) == 1}
        for name, per_seed in runs.items()
    }
    report = {
        "format": "clear_sae.layer_stability",
        "command": ["python", "analysis/layer_stability.py", *(argv if argv is not None else sys.argv[1:])],
        "settings": {
            "seeds": args.seeds,
            "tokens": demo.tokens,
            "expansion": demo.expansion,
            "k": demo.k,
            "batch_size": demo.batch_size,
            "corpus_prompts": len(corpus),
            "background": ConceptConfig.background,
            "max_background_rate": ConceptConfig.max_background_rate,
            "concepts": names,
        },
        "concepts": concepts,
        "stable": sorted(n for n, c in concepts.items() if c["same_layer"]),
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(args.out, json.dumps(report, indent=2))
    print(f"{len(report['stable'])} of {len(names)} concepts chose the same layer at every seed -> {args.out}")


if __name__ == "__main__":
    main()
