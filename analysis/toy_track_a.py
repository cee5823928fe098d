"""Track A, the paper's protocol in the toy world: the separability-chosen layer, one global strength, no judge.

    python analysis/toy_track_a.py --out analysis/toy_track_a.json            # a development seed
    python analysis/toy_track_a.py --out FINAL.json --seed 90000 --final      # the sealed test, once

The shipped toy entries are calibrated: a ladder of layers, tolerances and strengths judged on generated clips
read by the detector. The paper's claim is simpler: the layer where a concept's latents separate best is where
erasure works. So, per toy concept, this learns an entry the paper's way on the shipped dictionaries: the
learning pairs, the toy tolerance, no background check, the layer of highest separability (energy), the same
strength for every concept (`--strength`, the paper's gamma = 1 by default), no calibration and no judge. It then
erases the concept at its layer and at every other layer in turn (`clear-sae evaluate --sweep`'s measurement) and
reads every clip with both judges. Per concept it records the rate after erasure at each layer, and the regret of
the chosen layer: its rate after minus the best layer's, the middle layer's and a seeded random layer's (a layer
without latents erases nothing). `docs/build.py` turns the JSON into a section of docs/toyworld.md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from clear_sae.backbones import load_backbone
from clear_sae.concepts import ConceptConfig, learn_concept
from clear_sae.dictionary import Dictionaries
from clear_sae.library import ConceptLibrary
from clear_sae.toyworld.concepts import MAX_NONTARGET_RATE, TOY_BACKGROUND, toy_concepts
from clear_sae.toyworld.evaluation import evaluate
from clear_sae.toyworld.learn import learning_prompts
from clear_sae.toyworld.metrics import bootstrap_ci, judge_verdict
from clear_sae.toyworld.protocol import EVAL_SEED, check_evaluation_seed, protocol_record
from clear_sae.toyworld.sampling import EvalConfig, load_toy_world

ROOT = Path(__file__).resolve().parent.parent
JUDGES = ("detector", "geometry")


def paper_library(names: list[str], dictionaries: Path, strength: float, folder: Path) -> ConceptLibrary:
    """Each toy concept learned the paper's way (separability argmax, `strength`, no calibration), in a library."""
    backbone, dicts = load_backbone("minilm"), Dictionaries(dictionaries)
    library = ConceptLibrary(folder / "paper.json")
    for name in names:
        target, nontarget = learning_prompts(name)
        cfg = ConceptConfig(max_nontarget_rate=MAX_NONTARGET_RATE, background=TOY_BACKGROUND, strength=strength)
        entry, _ = learn_concept(backbone, dicts, name, target, nontarget, cfg)
        library.add(entry)
    library.save()
    return library


def judged(figures: dict[str, Any], judge: str) -> dict[str, Any]:
    """One judge's rate after erasure and its verdict, from `compare`'s figures."""
    own = figures if judge == "detector" else figures["geometry"]
    return {"rate_after": own["rate_target_after"]["mean"], "met": judge_verdict(own)["met"]}


def concept_row(result: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The chosen layer's verdicts, every layer's rate after, and the chosen layer's regrets, per judge."""
    layers = {h: s for h, s in result["sweep"].items() if "rate_target_after" in s}
    hooks = list(result["sweep"])
    middle, drawn = hooks[len(hooks) // 2], rng.choice(hooks)
    row: dict[str, Any] = {"axis": result["axis"], "layer": result["layer"], "latents": result["latents"]}
    for judge in JUDGES:
        before = (result if judge == "detector" else result["geometry"])["rate_target_before"]["mean"]

        def after(hook: str, judge: str = judge, before: float = before) -> float:
            return judged(layers[hook], judge)["rate_after"] if hook in layers else before  # no latents: no erasure

        chosen = judged(result, judge)
        best = min(hooks, key=after)
        row[judge] = {
            "rate_before": before,
            "rate_after": chosen["rate_after"],
            "met": chosen["met"],
            "per_layer": {hook: after(hook) for hook in hooks},
            "best_layer": best,
            "regret_vs_best": chosen["rate_after"] - after(best),
            "regret_vs_middle": chosen["rate_after"] - after(middle),
            "regret_vs_random": chosen["rate_after"] - after(drawn),
        }
    row["middle_layer"], row["random_layer"] = middle, drawn
    row["met_by_both"] = all(row[judge]["met"] for judge in JUDGES)
    return row


def main(argv: list[str] | None = None) -> None:
    """Learn the paper's entries, erase at every layer, and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON output")
    parser.add_argument("--dictionaries", default=str(ROOT / "dictionaries" / "minilm"))
    parser.add_argument("--concepts", nargs="+", default=None, help="toy concepts (default: all)")
    parser.add_argument("--strength", type=float, default=1.0, help="gamma, the same for every concept")
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--heldout-clips", type=int, default=5)
    parser.add_argument("--nontarget-clips", type=int, default=10)
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help="a development seed (a test seed with --final)")
    parser.add_argument("--final", action="store_true", help="the sealed protocol's final run, on a test seed")
    args = parser.parse_args(argv)
    check_evaluation_seed(args.seed, final=args.final)
    names = args.concepts or toy_concepts()
    cfg = EvalConfig(
        clips=args.clips,
        heldout_clips=args.heldout_clips,
        nontarget_clips=args.nontarget_clips,
        removed_clips=0,
        seed=args.seed,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clear_sae_track_a_") as scratch:
        library = paper_library(names, Path(args.dictionaries), args.strength, Path(scratch))
        report = evaluate(load_toy_world(), library, names, cfg=cfg, sweep=True)
    rng = random.Random(args.seed)
    concepts = {name: concept_row(result, rng) for name, result in report["concepts"].items()}
    summary: dict[str, Any] = {"met_by_both": sum(c["met_by_both"] for c in concepts.values())}
    for judge in JUDGES:
        summary[judge] = {"met": sum(c[judge]["met"] for c in concepts.values())}
        for against in ("best", "middle", "random"):
            regrets = np.array([c[judge][f"regret_vs_{against}"] for c in concepts.values()])
            summary[judge][f"regret_vs_{against}"] = {
                "median": float(statistics.median(regrets)),
                "mean": float(regrets.mean()),
                "ci95": bootstrap_ci(regrets, seed=args.seed),
            }
    out = {
        "format": "clear_sae.toy_track_a",
        "command": ["python", "analysis/toy_track_a.py", *(argv if argv is not None else sys.argv[1:])],
        "config": report["config"] | {"strength": args.strength},
        "protocol": protocol_record(args.seed, args.final),
        "concepts": concepts,
        "summary": summary,
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"Track A: met by both judges {summary['met_by_both']} of {len(concepts)}; median regret against the best "
        f"layer {summary['detector']['regret_vs_best']['median']:.0%} (detector), "
        f"{summary['geometry']['regret_vs_best']['median']:.0%} (rules) -> {args.out}"
    )


if __name__ == "__main__":
    main()
