"""Toy concept calibration on generated clips: the ladder with and without the judge stopping early, in one run.

A toy concept calibrated as the shipped library is (`clear-sae toy-concept NAME --judge-clips 48`) climbs a ladder
of erasures, each judged by sampling 48 target clips (and, where the targets pass, 48 non-targets). Once a rung
judged in full has kept the rest, a later rung whose clips already show the concept in more of the targets can
neither pass nor be chosen, so the generation judge stops it after the batch that makes this sure
(`clear_sae.calibration.ladder.decided_above`). For each concept, both ways are timed back to back on the shipped
dictionaries and toy world; the chosen rung must be the same.

    python benchmarks/calibration.py [--concepts circle purple] [--out benchmarks/calibration.json]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from _bench import ROOT, save, table


def calibrate(name: str, world: Any, stops_early: bool) -> dict[str, Any]:
    """Learn toy concept `name` on the shipped dictionaries as `clear-sae toy-concept NAME --judge-clips 48` does,
    the generation judge's early stop on or off; seconds, rungs and the chosen rung."""
    from clear_sae.backbones import load_backbone
    from clear_sae.calibration.ladder import chosen_step, recorded_calibration, recorded_steps
    from clear_sae.dictionary import Dictionaries
    from clear_sae.toyworld.concepts import JUDGE_CLIPS
    from clear_sae.toyworld.judge import GenerationJudge
    from clear_sae.toyworld.learn import learn_toy_concept

    backbone, dictionaries = load_backbone("minilm"), Dictionaries(ROOT / "dictionaries/minilm")
    GenerationJudge.stops_early = stops_early  # the one switch between the two ways
    try:
        start = time.perf_counter()
        entry = learn_toy_concept(backbone, dictionaries, name, 0, world, JUDGE_CLIPS)
        seconds = time.perf_counter() - start
    finally:
        GenerationJudge.stops_early = True
    recorded = recorded_calibration(entry.calibration)
    assert recorded is not None and entry.calibration is not None
    cal, steps = recorded[1], recorded_steps(entry.calibration)
    chosen = chosen_step(steps, cal)
    return {
        "concept": name,
        "judge_stops_early": stops_early,
        "seconds": seconds,
        "rungs": len(steps),
        "rungs_stopped": sum(not s.complete for s in steps),
        "passed": cal.passes(chosen),
        "chosen": [chosen.max_nontarget_rate, chosen.strength, chosen.hook_point, chosen.probe_rate],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", nargs="+", default=["circle", "purple"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/calibration.json"))
    args = parser.parse_args()

    from clear_sae.toyworld.sampling import load_toy_world

    world = load_toy_world()
    rows = []
    for name in args.concepts:
        full, early = calibrate(name, world, stops_early=False), calibrate(name, world, stops_early=True)
        if full["chosen"] != early["chosen"]:
            raise SystemExit(
                f"{name}: the early-stopping ladder chose {early['chosen']}, the full one {full['chosen']}"
            )
        early["time_vs_full"] = early["seconds"] / full["seconds"]
        rows += [full, early]
        print(table(rows[-2:], ["concept", "judge_stops_early", "seconds", "rungs", "rungs_stopped", "passed"]))
    save(args.out, {"config": {"concepts": args.concepts}, "runs": rows})


if __name__ == "__main__":
    main()
