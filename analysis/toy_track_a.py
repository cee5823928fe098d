"""Track A, the paper's protocol in the toy world: the separability-chosen layer, one global strength, no judge.

    python analysis/toy_track_a.py --out analysis/toy_track_a.json              # development seeds
    python analysis/toy_track_a.py --out FINAL.json --seed 90000 --final \
        --strength-from analysis/toy_track_a.json --clips 100 --nontarget-clips 100   # the sealed test, once

The shipped toy entries are calibrated: a ladder of layers, tolerances and strengths judged on generated clips
read by the detector. The paper's claim is simpler: the layer where a concept's latents separate best is where
erasure works. So, per toy concept, this learns an entry the paper's way on the shipped dictionaries: the
learning pairs, the toy tolerance, no background check, the layer of highest separability (energy), no
calibration and no judge. One strength serves every concept. It is tuned on a development seed (`--tune-seed`):
each strength of `--strengths` erases every concept at its chosen layer, and the strength under which the most
concepts meet the targets by both judges is kept (ties: the lower mean rate after, then the smaller strength). A
final run tunes nothing: it takes the strength a development run chose (`--strength-from`).

At that strength each concept is erased at its layer and at every other layer in turn (`clear-sae evaluate
--sweep`'s measurement), and both judges read every clip. Per concept the JSON records the rate after erasure at
each layer, the verdict with and without intervals (`metrics.interval_verdict`), the regret of the chosen layer
(its rate after minus the best layer's, the middle layer's and a seeded random layer's; a layer without latents
erases nothing), and McNemar's paired test of the chosen layer against the best one on the same clips. A second
rule picks a layer from the same sweep: clear-joint's (the published variant's layer preference, trained per concept
on its learning pairs, `learn.joint_library`), whose regret against the best layer is recorded beside the
separability argmax's. A final run may read the reserved paraphrases too (`--reserved-clips`): their rates at the
chosen layer are recorded per judge. `docs/build.py` turns the JSON into a section of docs/toyworld.md.

`--grid` measures the rest of the layer × strength grid instead and writes it to its own JSON: each concept erased
at every layer under each of `--strengths`, the clips before erasure sampled once per concept, each cell's rate
after erasure and preservation drop by both judges. It chooses nothing; on a test seed (with `--final`) it reports
the strengths a final run did not use, beside it:

    python analysis/toy_track_a.py --grid --out analysis/toy_track_a_grid_final.json --seed 90000 --final \
        --strength-from analysis/toy_track_a.json --strengths 1 2 8 --clips 20 --nontarget-clips 20 --heldout-clips 1
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_write_text, relative_to_folder, run_to_resume, without_option
from clear_sae.library import ConceptLibrary
from clear_sae.toyworld.concepts import attribute_of, entry_attribute, toy_concepts
from clear_sae.toyworld.evaluation import clamps_at, compare_erasures, evaluate, sweep_latents
from clear_sae.toyworld.learn import joint_config, joint_library, paper_library
from clear_sae.toyworld.metrics import bootstrap_ci, judge_verdict, reserved_reading
from clear_sae.toyworld.protocol import (
    EVAL_SEED,
    check_evaluation_seed,
    protocol_record,
    seed_split,
    weights_digest,
    weights_record,
)
from clear_sae.toyworld.sampling import WEIGHTS_DIR, EvalConfig, ToyWorld, load_toy_world
from clear_sae.toyworld.stats import mcnemar, outcomes_of

ROOT = Path(__file__).resolve().parent.parent
JUDGES = ("detector", "geometry")
STRENGTHS = (1.0, 2.0, 4.0, 8.0)
"""The strengths tuned over: the calibration ladder's, and 8."""
TUNE_SEED = EVAL_SEED + 1
"""The development seed the strength is tuned on (the sweep reports on `--seed`)."""


def at_strength(library: ConceptLibrary, strength: float, folder: Path) -> ConceptLibrary:
    """The same entries (layers and latents) with every strength set to `strength`."""
    moved = ConceptLibrary(folder / f"paper_gamma_{strength:g}.json")
    for name in list(library.concepts):
        moved.add(replace(library.get(name), strength=strength))
    moved.save()
    return moved


def tune_strength(
    world: ToyWorld, library: ConceptLibrary, strengths: list[float], cfg: EvalConfig, folder: Path
) -> dict[str, Any]:
    """Erase every concept at its chosen layer under each strength on `cfg.seed` (a development seed; the clips
    before erasure are sampled once) and choose the strength that meets the targets for the most concepts."""
    per_strength: dict[str, dict[str, Any]] = {f"{s:g}": {"concepts": {}} for s in strengths}
    libraries = {f"{s:g}": at_strength(library, s, folder) for s in strengths}
    for name in list(library.concepts):
        axis, value = attribute_of(entry_attribute(library.get(name), None))
        erasures = {key: clamps_at(moved, name) for key, moved in libraries.items()}
        for key, figures in compare_erasures(world, axis, value, erasures, cfg).items():
            per_strength[key]["concepts"][name] = {
                "met_by_both": bool(figures["qualification"]["met"]),
                "detector_after": figures["rate_target_after"]["mean"],
                "geometry_after": figures["geometry"]["rate_target_after"]["mean"],
            }
    for row in per_strength.values():
        concepts = row["concepts"].values()
        row["met_by_both"] = sum(c["met_by_both"] for c in concepts)
        row["mean_rate_after"] = round(
            float(np.mean([(c["detector_after"] + c["geometry_after"]) / 2 for c in concepts])), 4
        )
    chosen = min(
        per_strength, key=lambda k: (-per_strength[k]["met_by_both"], per_strength[k]["mean_rate_after"], float(k))
    )
    return {
        "seed": cfg.seed,
        "protocol": protocol_record(cfg.seed, final=False),
        "clips": {"target": cfg.clips, "heldout": cfg.heldout_clips, "nontarget": cfg.nontarget_clips},
        "rule": "most concepts met by both judges; then the lower mean rate after; then the smaller strength",
        "strengths": per_strength,
        "chosen": float(chosen),
    }


def grid_cell(figures: dict[str, Any]) -> dict[str, Any]:
    """One erasure's rate after and preservation drop by each judge, and whether both judges' targets are met."""
    cell: dict[str, Any] = {"met_by_both": bool(figures["qualification"]["met"])}
    for judge in JUDGES:
        own = figures if judge == "detector" else figures["geometry"]
        cell[judge] = {
            "rate_after": own["rate_target_after"]["mean"],
            "preservation_drop": own["preservation_drop"]["mean"],
        }
    return cell


def concept_grid(
    world: ToyWorld, library: ConceptLibrary, libraries: dict[str, ConceptLibrary], name: str, cfg: EvalConfig
) -> dict[str, Any]:
    """Concept `name` erased at every layer (with that layer's latents) under each strength of `libraries` (the same
    entries, by strength), all from one sample of clips before erasure: the grid of `grid_cell`s by strength and
    layer, with the rates before erasure and each layer's latent count. A layer without latents erases nothing and
    has no cells."""
    entry = library.get(name)
    axis, value = attribute_of(entry_attribute(entry, None))
    layers = sweep_latents(library, name, axis, value)
    erasures = {
        f"{key}@{hook}": clamps_at(moved, name, hook, latents)
        for key, moved in libraries.items()
        for hook, latents in layers.items()
        if latents
    }
    figures = compare_erasures(world, axis, value, erasures, cfg)
    first = next(iter(figures.values()))
    return {
        "axis": axis,
        "layer": entry.hook_point,
        "latents": {hook: len(latents) for hook, latents in layers.items()},
        "rate_before": {
            judge: (first if judge == "detector" else first["geometry"])["rate_target_before"]["mean"]
            for judge in JUDGES
        },
        "grid": {
            key: {hook: grid_cell(figures[f"{key}@{hook}"]) for hook in layers if f"{key}@{hook}" in figures}
            for key in libraries
        },
    }


def strength_from(
    path: Path,
    names: list[str],
    dictionaries: str,
    weights: dict[str, str] | None = None,
    dictionaries_digest: str | None = None,
) -> float:
    """The strength a development run of this script chose for the same concepts and dictionaries (by path and, when
    given, by digest) and the same toy-world weights (when given), refusing a run that tuned on anything else."""
    try:
        data = json.loads(path.read_text())
        tuning, config = data["tuning"], data["config"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ClearSaeError(
            f"--strength-from {path}: not a Track A JSON with a tuning block ({error}); run this script on a "
            "development seed first"
        ) from None
    if tuning is None or seed_split(int(tuning["seed"])) != "development":
        raise ClearSaeError(f"--strength-from {path}: its strength was not tuned on a development seed")
    if weights is not None and data.get("protocol", {}).get("weights") != weights:
        raise ClearSaeError(
            f"--strength-from {path} was tuned on other toy-world weights than these; run the development run again"
        )
    same_dictionaries = config.get("dictionaries") == dictionaries and (
        dictionaries_digest is None or config.get("dictionaries_digest") == dictionaries_digest
    )
    if config.get("concepts") != names or not same_dictionaries:
        raise ClearSaeError(
            f"--strength-from {path} was tuned on other concepts or dictionaries; run the development run again "
            "with the concepts and dictionaries of this one"
        )
    return float(tuning["chosen"])


def judged(figures: dict[str, Any], judge: str) -> dict[str, Any]:
    """One judge's rate after erasure and its verdict, from `compare`'s figures."""
    own = figures if judge == "detector" else figures["geometry"]
    return {"rate_after": own["rate_target_after"]["mean"], "met": judge_verdict(own)["met"]}


def concept_row(result: dict[str, Any], rng: random.Random, joint_layer: str | None = None) -> dict[str, Any]:
    """The chosen layer's verdicts, every layer's rate after and preservation drop, the chosen layer's regrets, and
    McNemar's test of the chosen layer against the best one, per judge; with `joint_layer` (clear-joint's choice) its
    regret against the best layer too, and the reserved paraphrases' rates where they were read."""
    layers = {h: s for h, s in result["sweep"].items() if "rate_target_after" in s}
    hooks = list(result["sweep"])
    middle, drawn = hooks[len(hooks) // 2], rng.choice(hooks)
    row: dict[str, Any] = {"axis": result["axis"], "layer": result["layer"], "latents": result["latents"]}
    intervals = result["qualification"]["with_intervals"]["by_judge"]
    for judge in JUDGES:
        own = result if judge == "detector" else result["geometry"]
        before = own["rate_target_before"]["mean"]

        def after(hook: str, judge: str = judge, before: float = before) -> float:
            return judged(layers[hook], judge)["rate_after"] if hook in layers else before  # no latents: no erasure

        def kept_drop(hook: str, judge: str = judge) -> float:
            figures = layers.get(hook)
            if figures is None:
                return 0.0  # no latents: no erasure, so nothing lost
            return (figures if judge == "detector" else figures["geometry"])["preservation_drop"]["mean"]

        def outcomes(hook: str, judge: str = judge, own: dict[str, Any] = own) -> Any:
            figures = own if hook not in layers else layers[hook] if judge == "detector" else layers[hook]["geometry"]
            return outcomes_of(figures["clips_target_after" if hook in layers else "clips_target_before"]["outcomes"])

        chosen = judged(result, judge)
        best = min(hooks, key=after)
        clips_after = own["clips_target_after"]
        row[judge] = {
            "rate_before": before,
            "rate_after": chosen["rate_after"],
            "met": chosen["met"],
            "clip_rate_before": own["clips_target_before"]["rate"],
            "clip_rate_after": clips_after["rate"],
            "clip_rate_after_ci95": clips_after["ci95"],
            "preservation_drop_ci95": own["preservation_drop"]["ci95"],
            "met_with_intervals": intervals[judge]["met"],
            "per_layer": {hook: after(hook) for hook in hooks},
            "per_layer_preservation_drop": {hook: kept_drop(hook) for hook in hooks},
            "best_layer": best,
            "regret_vs_best": chosen["rate_after"] - after(best),
            "regret_vs_middle": chosen["rate_after"] - after(middle),
            "regret_vs_random": chosen["rate_after"] - after(drawn),
            "chosen_vs_best": mcnemar(outcomes(result["layer"]), outcomes(best)),
        }
        if joint_layer is not None:
            row[judge]["regret_joint_vs_best"] = after(joint_layer) - after(best)
        if "rate_reserved_before" in own:
            row[judge]["reserved"] = reserved_reading(own)
    row["middle_layer"], row["random_layer"], row["joint_layer"] = middle, drawn, joint_layer
    row["met_by_both"] = all(row[judge]["met"] for judge in JUDGES)
    row["met_by_both_with_intervals"] = all(row[judge]["met_with_intervals"] for judge in JUDGES)
    return row


def summarise(concepts: dict[str, Any], seed: int) -> dict[str, Any]:
    """Concepts met (by both judges, with and without intervals), and per judge the median and mean regret of the
    chosen layer (and of clear-joint's) with a bootstrap interval over concepts."""
    summary: dict[str, Any] = {
        "met_by_both": sum(c["met_by_both"] for c in concepts.values()),
        "met_by_both_with_intervals": sum(c["met_by_both_with_intervals"] for c in concepts.values()),
    }
    for judge in JUDGES:
        summary[judge] = {
            "met": sum(c[judge]["met"] for c in concepts.values()),
            "met_with_intervals": sum(c[judge]["met_with_intervals"] for c in concepts.values()),
        }
        for against in ("vs_best", "vs_middle", "vs_random", "joint_vs_best"):
            regrets = np.array([c[judge][f"regret_{against}"] for c in concepts.values()])
            summary[judge][f"regret_{against}"] = {
                "median": float(statistics.median(regrets)),
                "mean": float(regrets.mean()),
                "ci95": bootstrap_ci(regrets, seed=seed),
            }
    summary["joint_same_layer"] = sum(c["joint_layer"] == c["layer"] for c in concepts.values())
    return summary


def resumed(path: Path, fresh: dict[str, Any], given: float | None) -> dict[str, Any]:
    """The run at `path` that `fresh` continues (`--resume`, `io.run_to_resume`; its strength is set once tuned),
    refused when a development run's JSON gives another strength (`given`) than the one it ran at."""
    earlier = run_to_resume(path, fresh, "Track A", unset=("strength",))
    if earlier and given is not None and earlier["config"].get("strength") != given:
        raise ClearSaeError(
            f"--resume: {path} ran at strength {earlier['config'].get('strength')}, not the {given:g} that "
            "--strength-from gives; pass another --out, or leave out --resume to start again"
        )
    return earlier


def run_config(cfg: EvalConfig, args: argparse.Namespace, names: list[str], dictionaries: str) -> dict[str, Any]:
    """What a run's JSON records of its settings, the main run's and the grid's alike: the evaluation's, where its
    strength came from, the concepts, and the dictionaries by path and digest."""
    return {k: v for k, v in asdict(cfg).items() if k != "progress"} | {
        "strength_from": args.strength_from,
        "concepts": names,
        "dictionaries": dictionaries,
        "dictionaries_digest": weights_digest(args.dictionaries),
    }


def run_grid(
    args: argparse.Namespace,
    recorded: list[str],
    names: list[str],
    dictionaries: str,
    given: float | None,
    cfg: EvalConfig,
    world: ToyWorld,
) -> None:
    """`--grid`: every concept erased at every layer under each strength of `--strengths`, written to `--out`
    after each concept (a resumed run skips the concepts it finds)."""
    started = time.perf_counter()
    out: dict[str, Any] = {
        "format": "clear_sae.toy_track_a_grid",
        "command": ["python", "analysis/toy_track_a.py", *recorded],
        "config": run_config(cfg, args, names, dictionaries)
        | {"strengths": [float(s) for s in args.strengths], "strength_chosen": given},
        "protocol": protocol_record(args.seed, args.final, world=world),
        "concepts": {},
        "complete": False,
    }
    earlier = run_to_resume(Path(args.out), out, "Track A grid") if args.resume else {}
    spent = earlier.get("seconds", 0.0)
    out["concepts"] = {name: earlier["concepts"][name] for name in names if name in earlier.get("concepts", {})}
    with tempfile.TemporaryDirectory(prefix="clear_sae_track_a_grid_") as scratch:
        folder = Path(scratch)
        library = paper_library(names, Path(args.dictionaries), folder / "paper.json")
        libraries = {f"{s:g}": at_strength(library, s, folder) for s in args.strengths}
        for name in [n for n in names if n not in out["concepts"]]:
            out["concepts"][name] = concept_grid(world, library, libraries, name, cfg)
            out["seconds"] = round(spent + time.perf_counter() - started, 1)
            atomic_write_text(Path(args.out), json.dumps(out, indent=2) + "\n")
    out["concepts"] = {name: out["concepts"][name] for name in names}
    out["complete"], out["seconds"] = True, round(spent + time.perf_counter() - started, 1)
    atomic_write_text(Path(args.out), json.dumps(out, indent=2) + "\n")
    print(f"Track A's layer x strength grid ({len(names)} concepts, strengths {args.strengths}) -> {args.out}")


def main(argv: list[str] | None = None) -> None:
    """Learn the paper's entries, erase at every layer, and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON output")
    parser.add_argument("--dictionaries", default=str(ROOT / "dictionaries" / "minilm"))
    parser.add_argument("--concepts", nargs="+", default=None, help="toy concepts (default: all)")
    parser.add_argument("--strengths", type=float, nargs="+", default=list(STRENGTHS), help="strengths tuned over")
    parser.add_argument("--tune-seed", type=int, default=TUNE_SEED, help="the development seed tuning reads")
    parser.add_argument("--tune-clips", type=int, default=30, help="target clips per concept and strength in tuning")
    parser.add_argument("--tune-nontarget-clips", type=int, default=20)
    parser.add_argument(
        "--strength-from", default=None, help="a development run's JSON: take its strength, tune nothing"
    )
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--heldout-clips", type=int, default=5)
    parser.add_argument("--nontarget-clips", type=int, default=20)
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help="a development seed (a test seed with --final)")
    parser.add_argument("--final", action="store_true", help="the sealed protocol's final run, on a test seed")
    parser.add_argument(
        "--reserved-clips", type=int, default=0, help="target clips in the reserved paraphrases (a final run only)"
    )
    parser.add_argument("--joint-rounds", type=int, default=None, help="clear-joint training rounds (default: its own)")
    parser.add_argument("--work", default=None, help="a folder that keeps the clear-joint SAEs between runs")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out: keep its tuning and concepts, do the rest",
    )
    parser.add_argument(
        "--grid", action="store_true", help="measure every layer under each of --strengths instead (its own JSON)"
    )
    arguments = argv if argv is not None else sys.argv[1:]
    args = parser.parse_args(arguments)
    if args.grid and args.reserved_clips:
        raise ClearSaeError("--grid reads no reserved paraphrases: leave out --reserved-clips")
    check_evaluation_seed(args.seed, final=args.final, reserved_clips=args.reserved_clips)
    if args.final and args.strength_from is None:
        raise ClearSaeError("--final tunes nothing: pass --strength-from with a development run's JSON")
    if args.strength_from is None and seed_split(args.tune_seed) != "development":
        raise ClearSaeError(f"--tune-seed {args.tune_seed} is not a development seed; pick one of 1000..1099")
    names = args.concepts or toy_concepts()
    dictionaries = relative_to_folder(args.dictionaries, ROOT)
    shipped = weights_record(WEIGHTS_DIR / "generator", WEIGHTS_DIR / "detector")  # what load_toy_world loads
    given = None
    if args.strength_from is not None:
        given = strength_from(Path(args.strength_from), names, dictionaries, shipped, weights_digest(args.dictionaries))
    cfg = EvalConfig(
        clips=args.clips,
        heldout_clips=args.heldout_clips,
        reserved_clips=args.reserved_clips,
        nontarget_clips=args.nontarget_clips,
        removed_clips=0,
        seed=args.seed,
    )
    tune_cfg = replace(
        cfg,
        clips=args.tune_clips,
        heldout_clips=1,
        reserved_clips=0,
        nontarget_clips=args.tune_nontarget_clips,
        seed=args.tune_seed,
    )
    joint_cfg = joint_config(args.joint_rounds)
    started = time.perf_counter()
    world = load_toy_world()
    recorded = [a for a in without_option(arguments, "--work") if a != "--resume"]
    if args.grid:
        return run_grid(args, recorded, names, dictionaries, given, cfg, world)
    out: dict[str, Any] = {
        "format": "clear_sae.toy_track_a",
        "command": ["python", "analysis/toy_track_a.py", *recorded],
        "config": run_config(cfg, args, names, dictionaries) | {"joint_rounds": joint_cfg.rounds},
        "tuning": None,
        "protocol": protocol_record(args.seed, args.final, world=world),
        "concepts": {},
        "complete": False,
    }
    earlier = resumed(Path(args.out), out, given) if args.resume else {}
    spent = earlier.get("seconds", 0.0)
    with tempfile.TemporaryDirectory(prefix="clear_sae_track_a_") as scratch:
        folder = Path(scratch)
        library = paper_library(names, Path(args.dictionaries), folder / "paper.json")
        tuning = earlier.get("tuning")
        if given is None and tuning is None:
            tuning = tune_strength(world, library, args.strengths, tune_cfg, folder)
        strength = given if given is not None else float(tuning["chosen"])
        out["tuning"], out["config"]["strength"] = tuning, strength
        joint = joint_library(names, Path(args.work) if args.work else folder, joint_cfg)
        moved = at_strength(library, strength, folder)
        out["concepts"] = {name: earlier["concepts"][name] for name in names if name in earlier.get("concepts", {})}
        if out["concepts"]:
            out["summary"] = summarise(out["concepts"], args.seed)
        atomic_write_text(Path(args.out), json.dumps(out, indent=2) + "\n")  # the tuning, kept for a resumed run
        for name in [n for n in names if n not in out["concepts"]]:
            result = evaluate(world, moved, [name], cfg=cfg, sweep=True)["concepts"][name]
            # Seeded per concept, so that a resumed run draws the same random layer.
            row = concept_row(result, random.Random(f"{args.seed}:{name}"), joint.get(name).hook_point)
            out["concepts"] = {
                n: row if n == name else out["concepts"][n] for n in names if n in out["concepts"] or n == name
            }
            out["summary"] = summarise(out["concepts"], args.seed)
            out["seconds"] = round(spent + time.perf_counter() - started, 1)
            atomic_write_text(Path(args.out), json.dumps(out, indent=2) + "\n")
    out["summary"], out["complete"] = summarise(out["concepts"], args.seed), True
    out["seconds"] = round(spent + time.perf_counter() - started, 1)
    atomic_write_text(Path(args.out), json.dumps(out, indent=2) + "\n")
    summary = out["summary"]
    print(
        f"Track A (strength {strength:g}): met by both judges {summary['met_by_both']} of {len(out['concepts'])} "
        f"({summary['met_by_both_with_intervals']} with intervals); median regret against the best "
        f"layer {summary['detector']['regret_vs_best']['median']:.0%} (detector), "
        f"{summary['geometry']['regret_vs_best']['median']:.0%} (rules) -> {args.out}"
    )


if __name__ == "__main__":
    main()
