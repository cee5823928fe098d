"""How stable is the layer a concept is erased at, when the dictionaries are retrained with another seed?

    python analysis/layer_stability.py --out analysis/layer_stability.json --seeds 0 1 2

Caches MiniLM's hook points once on the demo's corpus, then for each seed trains the demo's dictionaries (the
demo's settings: `DemoConfig`) and learns on them every shipped text concept (`ConceptConfig` defaults with that
seed, the background check included) and every toy concept the paper's way (Track A's entries: the toy learning
pairs, tolerance and background, no calibration). It records the layer chosen, every layer's score and the number
of latents (a concept for which no layer holds latents that pass the selection is recorded with no layer).

A choice is a **tie** where the chosen layer's score equals the runner-up's or beats it by less than the seeds move
those scores (the larger of the two layers' sample standard deviations across seeds; a layer usable at one seed
only has none): retraining alone could swap them. The
rule that breaks it is the selection's own: the higher score at that seed, the earliest layer where two are equal
(`concepts.select_layer`). The JSON lists, per concept, the layer, runner-up, margin and tie at each seed and
whether every seed chose the same layer; `docs/build.py` turns it into docs/stability.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from clear_sae.backbones import load_backbone
from clear_sae.cache import ActivationCache, CacheConfig, write_cache
from clear_sae.cli.demo import PROMPTS_DIR, add_retraining_arguments, demo_corpus, retraining_settings
from clear_sae.concepts import ConceptConfig, learn_concept
from clear_sae.dictionary import Dictionaries, TrainConfig, train_dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_write_text, read_prompt_file
from clear_sae.toyworld.concepts import MAX_NONTARGET_RATE, TOY_BACKGROUND, toy_concepts
from clear_sae.toyworld.learn import learning_prompts

SCORE = "energy"
"""The score layers are chosen by (`ConceptConfig.score`'s default, the paper's)."""


def learn_run(backbone: Any, dictionaries: Dictionaries, name: str, prompts: tuple[list[str], list[str]],
              cfg: ConceptConfig) -> dict[str, Any]:  # fmt: skip
    """The layer chosen for one concept on one seed's dictionaries, its latents, and every layer's score."""
    try:
        entry, _ = learn_concept(backbone, dictionaries, name, *prompts, cfg)
    except ClearSaeError as err:  # no layer holds latents specific to it: recorded, not chosen
        return {"layer": None, "latents": 0, "scores": {}, "error": str(err)}
    usable = {hook: s[SCORE] for hook, s in entry.layer_scores.items() if s["n_specific"]}
    return {"layer": entry.hook_point, "latents": len(entry.latents), "scores": usable}


def with_ties(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One concept's runs with each choice's runner-up, margin and tie flag, and whether every seed agreed."""
    spread: dict[str, float] = {}
    for hook in {h for run in per_seed.values() for h in run["scores"]}:
        values = [run["scores"][hook] for run in per_seed.values() if hook in run["scores"]]
        spread[hook] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0  # sample spread: few seeds
    for run in per_seed.values():  # a run without a layer has no scores, so no runner-up and no tie
        ranked = sorted(run["scores"].items(), key=lambda kv: -kv[1])
        run["runner_up"] = ranked[1][0] if len(ranked) > 1 else None
        run["margin"] = round(ranked[0][1] - ranked[1][1], 6) if len(ranked) > 1 else None
        run["tie"] = bool(
            run["runner_up"] is not None
            and (run["margin"] == 0 or run["margin"] < max(spread[run["layer"]], spread[run["runner_up"]]))
        )
    layers = {run["layer"] for run in per_seed.values()}
    return {"seeds": per_seed, "same_layer": len(layers) == 1, "ties": sum(run["tie"] for run in per_seed.values())}


def main(argv: list[str] | None = None) -> None:
    """Run the measurement and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON output")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="dictionary training seeds")
    parser.add_argument("--toy-concepts", nargs="*", default=toy_concepts(), help="toy concepts (default: all)")
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
    unknown = sorted(set(args.toy_concepts) - set(toy_concepts()))
    if unknown:
        parser.error(f"no toy concept {', '.join(unknown)}; choose from {', '.join(toy_concepts())}")
    toy = {name: learning_prompts(name) for name in args.toy_concepts}
    toy_cfg = {"max_nontarget_rate": MAX_NONTARGET_RATE, "background": TOY_BACKGROUND}
    runs: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in [*names, *toy]}
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
                runs[name][str(seed)] = learn_run(backbone, dictionaries, name, prompts[name], ConceptConfig(seed=seed))
            for name, pairs in toy.items():
                runs[name][str(seed)] = learn_run(
                    backbone, dictionaries, name, pairs, ConceptConfig(seed=seed, **toy_cfg)
                )
            print(f"seed {seed}: " + ", ".join(f"{n} {runs[n][str(seed)]['layer']}" for n in runs), flush=True)
    concepts = {name: with_ties(per_seed) for name, per_seed in runs.items()}
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
            "toy_concepts": list(toy),
            "toy_max_nontarget_rate": MAX_NONTARGET_RATE,
            "score": SCORE,
        },
        "concepts": concepts,
        "stable": sorted(n for n, c in concepts.items() if c["same_layer"]),
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(args.out, json.dumps(report, indent=2))
    print(f"{len(report['stable'])} of {len(concepts)} concepts chose the same layer at every seed -> {args.out}")


if __name__ == "__main__":
    main()
