"""The shipped toy concepts erased and read by two judges: the learned detector and the rule-based one.

    python analysis/toy_two_judges.py --out analysis/toy_two_judges.json

The shipped library's toy entries were calibrated on clips read by the learned detector, so a rate that detector
reports after erasure may be tuned to it. This evaluates every shipped toy concept (`clear-sae evaluate`'s
measurement, on a development seed of the sealed protocol, no image strips) and keeps, per concept, the rates and
preservation each judge reads and each judge's verdict, and the rule-based judge's accuracy on fresh renders;
`docs/build.py` turns the JSON into a section of
docs/toyworld.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from clear_sae.io import relative_to_folder
from clear_sae.library import ConceptLibrary
from clear_sae.toyworld.concepts import toy_concepts
from clear_sae.toyworld.evaluation import evaluate
from clear_sae.toyworld.geometry import accuracy
from clear_sae.toyworld.protocol import EVAL_SEED, check_evaluation_seed, protocol_record
from clear_sae.toyworld.sampling import EvalConfig, load_toy_world

ROOT = Path(__file__).resolve().parent.parent
JUDGED = ("rate_target_before", "rate_target_after", "rate_heldout_before", "rate_heldout_after", "preservation_drop")
"""The figures kept from each judge."""


def main(argv: list[str] | None = None) -> None:
    """Run the evaluation and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON output")
    parser.add_argument("--library", default=str(ROOT / "dictionaries" / "minilm" / "concepts.json"))
    parser.add_argument("--concepts", nargs="+", default=None, help="toy concepts (default: all)")
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--heldout-clips", type=int, default=20)
    parser.add_argument("--nontarget-clips", type=int, default=30)
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help="a development seed of the sealed protocol")
    parser.add_argument("--generator", default=None, help="toy generator folder (default: the shipped one)")
    args = parser.parse_args(argv)
    check_evaluation_seed(args.seed)
    names = args.concepts or toy_concepts()
    cfg = EvalConfig(
        clips=args.clips,
        heldout_clips=args.heldout_clips,
        nontarget_clips=args.nontarget_clips,
        removed_clips=0,
        seed=args.seed,
    )
    started = time.perf_counter()
    world = load_toy_world(args.generator)
    report = evaluate(world, ConceptLibrary.load(args.library), names, cfg=cfg)
    concepts = {}
    for name, result in report["concepts"].items():
        verdicts = result["qualification"]["by_judge"]
        concepts[name] = {
            "axis": result["axis"],
            "layer": result["layer"],
            "detector": {key: result[key]["mean"] for key in JUDGED} | verdicts["detector"],
            "geometry": {key: result["geometry"][key]["mean"] for key in JUDGED} | verdicts["geometry"],
            "met_by_both": result["qualification"]["met"],
        }
    out = {
        "format": "clear_sae.toy_two_judges",
        "command": ["python", "analysis/toy_two_judges.py", *(argv if argv is not None else sys.argv[1:])],
        "config": report["config"],
        "protocol": protocol_record(args.seed, final=False, world=world),
        "library": relative_to_folder(args.library, ROOT),
        "concepts": concepts,
        "geometry_accuracy": accuracy(n_clips=300),
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    both = sum(c["met_by_both"] for c in concepts.values())
    detector = sum(c["detector"]["met"] for c in concepts.values())
    print(f"met by the detector: {detector} of {len(concepts)}; by both judges: {both} -> {args.out}")


if __name__ == "__main__":
    main()
