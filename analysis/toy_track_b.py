"""Track B, equal tuning: CLEAR and every baseline get the same ladder budget, the same judge and the same clips.

    python analysis/toy_track_b.py --out analysis/toy_track_b.json              # development seeds
    python analysis/toy_track_b.py --out FINAL.json --seed 90000 --final --clips 100 --nontarget-clips 100
    python analysis/toy_track_b.py --out analysis/toy_track_b_safree.json --methods safree-layer   # merged by
    python analysis/toy_track_b.py --out analysis/toy_track_b_esd.json --methods esd ...          # docs/build.py

Per toy concept, every method climbs a ladder of at most `--budget` rungs, mildest first, each rung judged by the
toy world's generation judge (the learned detector, `--judge-clips` target and non-target clips from the development
seed `--tune-seed`). A rung passes when the detector finds the concept in at most 10% of the target frames, the
non-targets keep their attributes within 3 points and the targets' other attributes within 10 (the calibration's
bars); the ladder stops at the first rung that passes, else keeps the rung the calibration's rule prefers
(`calibration.ladder.chosen_step`). Every method places itself by its own rule, with no judge, and its ladder is a
strength:

- `clear`: the paper's layer (the separability argmax on the reused dictionaries, the toy tolerance), gamma 1, 2,
  4, 8;
- `clear-joint`: the published variant's own SAE and layer preference (`compare.joint`), gamma 1, 2, 4, 8;
- `sae-middle`, `sae-all`: the reused dictionaries' clamp at the middle layer, and at every layer at once, with
  the concept's latents there, gamma 1, 2, 4, 8;
- `diff-means`: a difference-of-means direction at the layer where it separates the learning prompts best
  (`baselines.direction_separations`), removal strength 1, 2, 4, 8;
- `safree`: SAFREE on the prompt embeddings (`compare.safree`): the paper's trigger and filter first, then the
  filter on more steps, then every word token projected (`SAFREE_RUNGS`); it acts where the generator reads the
  text, so it has no layer to search;
- `safree-layer`: SAFREE's trigger and projection moved into the text encoder (`compare.safree.SafreeHook`), at the
  layer where its concept subspace separates the learning prompts best (`safree_separations`, no judge), the
  subspace spanned there, with the self-validating filter on the prompt embeddings with and without it; the same
  rungs as `safree`. It runs only when asked (`--methods safree-layer`), in a run of its own;
- `negative-prompt`: the concept's training words as the negative prompt, guidance 4, 6, 8, 12. The shipped
  generator is trained on such bare keyword lists in a tenth of its captions (`--keyword-rate 0.1`), so it knows
  what the negative prompt draws;
- `esd`: the generator's cross-attention fine-tuned away from the concept (`toyworld.esd`, ESD-x with eta 1 on the
  learning targets), 25, 50, 100, 200 steps in all, one run continued from rung to rung.

The chosen rung of every method then erases the concept on the evaluation seed (`--seed`, a development seed; a
test seed only with `--final`), all methods from the same prompts and noise, and both judges read every clip. Per
concept and method the JSON keeps the ladder, the chosen rung, each judge's rates with exact intervals, the
verdicts, and McNemar's paired test against CLEAR on the same clips; the summary counts the concepts each method
meets and, per judge, the mean paired difference of its rate after erasure from CLEAR's with a bootstrap interval
over concepts. `docs/build.py` turns it into a section of docs/toyworld.md. The JSON is rewritten after every
concept, so a long run can be read while it goes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clear_sae.backbones import load_backbone
from clear_sae.calibration.ladder import CalibrationConfig, CalibrationStep, chosen_step
from clear_sae.compare.baselines import direction_clamp, direction_separations
from clear_sae.compare.joint import JointConfig
from clear_sae.compare.safree import (
    SafreeHook,
    SelfValidatingFilter,
    build_safree,
    build_safree_at,
    safree_separations,
)
from clear_sae.concepts import latents_by_layer
from clear_sae.erase import concept_clamps
from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_write_text, relative_to_folder, run_to_resume, without_option
from clear_sae.library import ConceptLibrary
from clear_sae.toyworld.captions import training_words
from clear_sae.toyworld.concepts import attribute_of, toy_concepts
from clear_sae.toyworld.esd import EsdConfig, EsdTuner
from clear_sae.toyworld.evaluation import compare_erasures
from clear_sae.toyworld.judge import GenerationJudge
from clear_sae.toyworld.learn import joint_config, joint_library, learning_prompts, paper_library
from clear_sae.toyworld.metrics import bootstrap_ci, paired_reading
from clear_sae.toyworld.protocol import (
    DEVELOPMENT_SEEDS,
    EVAL_SEED,
    check_evaluation_seed,
    protocol_record,
    weights_digest,
)
from clear_sae.toyworld.sampling import EvalConfig, Intervention, ToyWorld, encode, load_toy_world

ROOT = Path(__file__).resolve().parent.parent
JUDGES = ("detector", "geometry")
METHODS = (
    "clear",
    "clear-joint",
    "sae-middle",
    "sae-all",
    "diff-means",
    "safree",
    "negative-prompt",
    "esd",
    "safree-layer",
)
BUDGET = 4
"""Judged rungs per method and concept."""
STRENGTHS = (1.0, 2.0, 4.0, 8.0)
GUIDANCES = (4.0, 6.0, 8.0, 12.0)
DEFAULT_METHODS = METHODS[:-2]
"""ESD, the costliest ladder, and SAFREE at a layer, added after the others were measured, run only when asked
(`--methods esd`, `--methods safree-layer`), each in a run of its own."""
ESD_STEPS = (25, 50, 100, 200)
"""ESD's rungs: fine-tuning steps in all, one run continued from rung to rung."""
SAFREE_RUNGS = ((0.01, 0.2), (0.01, 1.0), (0.01, 2.0), (-1.0, 2.0))
"""SAFREE's (trigger margin alpha, filter scale) rungs: the paper's, then more steps filtered (at 2 every step is, as
`sigmoid(1 - cos)` is at least one half), then its limit, alpha -1: every word token is a trigger, so every one is
projected off the concept subspace."""
TUNE_SEED = EVAL_SEED + 5
"""The development seed the ladders are judged on (no other analysis reads it)."""


@dataclass
class Rung:
    """One candidate erasure of a method's ladder."""

    where: str
    """Where it acts: a hook point, `all`, `prompt embeddings` or `negative prompt`."""
    strength: float
    """Its strength: gamma, the removal strength, SAFREE's filter scale or the guidance scale."""
    intervention: Callable[[], Intervention]
    """Builds it (only when the ladder reaches it)."""
    setting: dict[str, float] | None = None
    """What else defines it (SAFREE's trigger margin)."""


@dataclass
class Context:
    """What every concept's ladders are built from."""

    world: ToyWorld
    backbone: Any
    paper: ConceptLibrary
    work: Path
    """Where the clear-joint SAEs are kept (`joint_library`)."""
    joint: JointConfig
    esd_steps: tuple[int, ...] = ESD_STEPS
    layers: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    """Per concept, its latents at every layer of the reused dictionaries (found once)."""


def gamma_rungs(library: ConceptLibrary, entries: list[Any], where: str) -> list[Rung]:
    """The clamp of `entries` (one per layer) at each of `STRENGTHS`."""

    def at(strength: float) -> Callable[[], Intervention]:
        def build() -> Intervention:
            hooks: dict[str, Any] = {}
            for entry in entries:
                hooks.update(concept_clamps(library, replace(entry, strength=strength)))
            return Intervention(hooks)

        return build

    return [Rung(where, s, at(s)) for s in STRENGTHS] if entries else []


def method_rungs(method: str, ctx: Context, name: str) -> list[Rung]:
    """The ladder of `method` for toy concept `name`, mildest first (empty when the method has nothing to erase)."""
    axis, value = attribute_of(name)
    target, nontarget = learning_prompts(name)
    words = training_words(axis, value)
    if method == "clear":
        entry = ctx.paper.get(name)
        return gamma_rungs(ctx.paper, [entry], entry.hook_point)
    if method == "clear-joint":
        joint = joint_library([name], ctx.work, ctx.joint)
        entry = joint.get(name)
        return gamma_rungs(joint, [entry], entry.hook_point)
    if method in ("sae-middle", "sae-all"):
        entry = ctx.paper.get(name)
        if name not in ctx.layers:
            ctx.layers[name] = latents_by_layer(ctx.backbone, ctx.paper, name, target, nontarget)
        layers = ctx.layers[name]
        hooks = list(layers)
        chosen = [hooks[len(hooks) // 2]] if method == "sae-middle" else hooks
        entries = [replace(entry, hook_point=h, latents=layers[h]) for h in chosen if layers[h]]
        return gamma_rungs(ctx.paper, entries, chosen[0] if method == "sae-middle" else "all")
    if method == "diff-means":
        separations = direction_separations(ctx.backbone, ctx.backbone.hook_points, target, nontarget)
        hook = max(separations, key=lambda h: separations[h])
        clamp = direction_clamp(ctx.backbone, hook, target, nontarget)

        def removal(strength: float) -> Callable[[], Intervention]:
            return lambda: Intervention({hook: clamp.with_strength(strength)})

        return [Rung(hook, s, removal(s)) for s in STRENGTHS]
    if method == "safree":
        pipe = ctx.world.pipe

        def safree(alpha: float, scale: float) -> Callable[[], Intervention]:
            return lambda: Intervention(
                embed_filter=build_safree(pipe.tokenizer, lambda p: encode(pipe, p), words, target, alpha, scale)
            )

        return [Rung("prompt embeddings", s, safree(a, s), {"alpha": a}) for a, s in SAFREE_RUNGS]
    if method == "safree-layer":
        separations = safree_separations(ctx.backbone, ctx.backbone.hook_points, words, target, nontarget)
        hook = max(separations, key=lambda h: separations[h])

        def safree_at(alpha: float, scale: float) -> Callable[[], Intervention]:
            return lambda: Intervention(
                hooks={hook: SafreeHook(build_safree_at(ctx.backbone, hook, words, target, alpha, scale))},
                embed_filter=SelfValidatingFilter(scale),
            )

        return [Rung(hook, s, safree_at(a, s), {"alpha": a}) for a, s in SAFREE_RUNGS]
    if method == "negative-prompt":
        negative = ", ".join(words)
        return [
            Rung("negative prompt", g, lambda g=g: Intervention(negative_prompt=negative, guidance=g))
            for g in GUIDANCES
        ]
    if method == "esd":
        tuners: list[EsdTuner] = []  # made at the first rung, continued at the next

        def fine_tuned(steps: int) -> Callable[[], Intervention]:
            def build() -> Intervention:
                if not tuners:
                    tuners.append(EsdTuner(ctx.world.pipe, target, EsdConfig()))
                return Intervention(transformer=tuners[0].train_to(steps))

            return build

        return [Rung("generator weights", float(s), fine_tuned(s)) for s in ctx.esd_steps]
    raise ValueError(f"unknown method {method!r}; pick from {', '.join(METHODS)}")


def climb(
    judge: Callable[[Intervention], Any], rungs: list[Rung], budget: int, cal: CalibrationConfig
) -> tuple[list[dict[str, Any]], int, Intervention]:
    """Judge at most `budget` rungs in order, stopping at the first that passes; every rung judged, the index of the
    one kept, and its erasure."""
    steps: list[CalibrationStep] = []
    built: list[Intervention] = []
    for rung in rungs[:budget]:
        built.append(rung.intervention())
        verdict = judge(built[-1])
        drop, others = (None if v is None else round(v, 4) for v in (verdict.preservation_drop, verdict.others_drop))
        steps.append(CalibrationStep(0.0, rung.strength, rung.where, 0, round(verdict.found, 4), drop, others))
        if cal.passes(steps[-1]):
            break
    chosen = steps.index(chosen_step(steps, cal))
    judged = [
        {
            "where": s.hook_point,
            "strength": s.strength,
            "found": s.probe_rate,
            "preservation_drop": s.preservation_drop,
            "others_drop": s.others_drop,
            "passed": cal.passes(s),
        }
        | (rungs[i].setting or {})
        for i, s in enumerate(steps)
    ]
    return judged, chosen, built[chosen]


def concept_result(
    ctx: Context, name: str, methods: list[str], args: argparse.Namespace, cfg: EvalConfig
) -> dict[str, Any]:
    """Every method's ladder and its chosen rung's figures on the evaluation seed, for one concept."""
    axis, value = attribute_of(name)
    cal = CalibrationConfig()
    judge = GenerationJudge(
        ctx.world, axis, value, args.judge_clips, args.judge_clips, seed=args.tune_seed, max_found=cal.max_probe_rate
    )
    ladders, chosen, notes = {}, {}, {}
    for method in methods:
        started = time.perf_counter()
        rungs = method_rungs(method, ctx, name)
        if not rungs:
            notes[method] = "no concept-specific latents where this method acts"
            continue
        steps, index, chosen[method] = climb(judge, rungs, args.budget, cal)
        ladders[method] = {"rungs": steps, "chosen": index, "seconds": round(time.perf_counter() - started, 1)}
    figures = compare_erasures(ctx.world, axis, value, chosen, cfg)
    rows: dict[str, Any] = {}
    for method in methods:
        if method in notes:
            rows[method] = {"note": notes[method]}
            continue
        own = figures[method]
        rows[method] = {"ladder": ladders[method]} | {
            judge_name: paired_reading(own, judge_name, figures.get("clear"), "against_clear") for judge_name in JUDGES
        }
        rows[method]["met_by_both"] = bool(own["qualification"]["met"])
        rows[method]["met_by_both_with_intervals"] = bool(own["qualification"]["with_intervals"]["met"])
        rows[method]["counted"] = bool(own["qualification"]["counted"])
    return {"axis": axis, "methods": rows}


def summarise(concepts: dict[str, Any], methods: list[str], seed: int) -> dict[str, Any]:
    """Per method: concepts met (by both judges, with and without intervals) and, per judge, the paired difference of
    its rate after erasure from CLEAR's (positive: CLEAR erased more), with a bootstrap interval over concepts."""
    summary: dict[str, Any] = {}
    for method in methods:
        rows = [c["methods"][method] for c in concepts.values() if "note" not in c["methods"][method]]
        entry: dict[str, Any] = {
            "concepts": len(rows),
            "met_by_both": sum(r["met_by_both"] for r in rows),
            "met_by_both_with_intervals": sum(r["met_by_both_with_intervals"] for r in rows),
        }
        for judge in JUDGES:
            pairs = [
                (c["methods"][method][judge]["rate_after"], c["methods"]["clear"][judge]["rate_after"])
                for c in concepts.values()
                if "note" not in c["methods"][method]
                and "clear" in c["methods"]
                and "note" not in c["methods"]["clear"]
            ]
            gaps = np.array([m - c for m, c in pairs])
            entry[judge] = {
                "met": sum(r[judge]["met"] for r in rows),
                "met_with_intervals": sum(r[judge]["met_with_intervals"] for r in rows),
                "mean_rate_after": round(float(np.mean([r[judge]["rate_after"] for r in rows])), 4) if rows else None,
                "mean_reserved_rate_after": (
                    round(float(np.mean([r[judge]["reserved"]["rate_after"] for r in rows])), 4)
                    if rows and all("reserved" in r[judge] for r in rows)
                    else None
                ),
                "gap_to_clear": {
                    "mean": round(float(gaps.mean()), 4) if len(gaps) else None,
                    "ci95": bootstrap_ci(gaps, seed=seed) if len(gaps) else None,
                    "concepts": len(gaps),
                },
            }
        summary[method] = entry
    return summary


def main(argv: list[str] | None = None) -> None:
    """Climb every method's ladder for every concept, evaluate the chosen rungs, and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON output")
    parser.add_argument("--dictionaries", default=str(ROOT / "dictionaries" / "minilm"))
    parser.add_argument("--concepts", nargs="+", default=None, help="toy concepts (default: all)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    parser.add_argument("--budget", type=int, default=BUDGET, help="judged rungs per method and concept")
    parser.add_argument("--judge-clips", type=int, default=16, help="target and non-target clips per judged rung")
    parser.add_argument("--tune-seed", type=int, default=TUNE_SEED, help="the development seed the ladders read")
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--heldout-clips", type=int, default=5)
    parser.add_argument("--nontarget-clips", type=int, default=20)
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help="a development seed (a test seed with --final)")
    parser.add_argument("--final", action="store_true", help="the sealed protocol's final run, on a test seed")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out: keep its concepts, measure the rest"
    )
    parser.add_argument(
        "--reserved-clips", type=int, default=0, help="target clips in the reserved paraphrases (a final run only)"
    )
    parser.add_argument("--work", default=None, help="a folder that keeps the clear-joint SAEs between runs")
    parser.add_argument("--esd-steps", type=int, nargs="+", default=list(ESD_STEPS), help="ESD's rungs, in steps")
    parser.add_argument("--joint-rounds", type=int, default=None, help="clear-joint training rounds (default: its own)")
    arguments = argv if argv is not None else sys.argv[1:]
    args = parser.parse_args(arguments)
    check_evaluation_seed(args.seed, final=args.final, reserved_clips=args.reserved_clips)
    if args.tune_seed not in DEVELOPMENT_SEEDS or args.tune_seed == args.seed:
        raise ClearSaeError(
            f"--tune-seed {args.tune_seed} is not a development seed other than --seed; pick one of 1000..1099 "
            "that the evaluation does not read"
        )
    if args.budget < 1:
        raise ClearSaeError(f"--budget {args.budget}: every method needs at least one judged rung; pass 1 or more")
    if args.judge_clips < 1:
        raise ClearSaeError(f"--judge-clips {args.judge_clips}: the judge needs at least one clip; pass 1 or more")
    if any(s < 1 for s in args.esd_steps) or list(args.esd_steps) != sorted(set(args.esd_steps)):
        raise ClearSaeError(f"--esd-steps {args.esd_steps}: pass positive step counts in increasing order")
    names = args.concepts or toy_concepts()
    methods = ["clear"] + [m for m in args.methods if m != "clear"]  # every method is paired with CLEAR
    cfg = EvalConfig(
        clips=args.clips,
        heldout_clips=args.heldout_clips,
        reserved_clips=args.reserved_clips,
        nontarget_clips=args.nontarget_clips,
        removed_clips=0,
        seed=args.seed,
        progress=False,
    )
    started = time.perf_counter()
    world, backbone = load_toy_world(), load_backbone("minilm")
    recorded = [a for a in without_option(arguments, "--work") if a != "--resume"]
    out: dict[str, Any] = {
        "format": "clear_sae.toy_track_b",
        "command": ["python", "analysis/toy_track_b.py", *recorded],
        "config": {k: v for k, v in asdict(cfg).items() if k != "progress"}
        | {
            "methods": methods,
            "concepts": names,
            "budget": args.budget,
            "joint_rounds": joint_config(args.joint_rounds).rounds,
            "esd_steps": args.esd_steps,
            "judge_clips": args.judge_clips,
            "tune_seed": args.tune_seed,
            "strengths": list(STRENGTHS),
            "guidances": list(GUIDANCES),
            "safree_rungs": [list(r) for r in SAFREE_RUNGS],
            "dictionaries": relative_to_folder(args.dictionaries, ROOT),
            "dictionaries_digest": weights_digest(args.dictionaries),
        },
        "protocol": protocol_record(args.seed, args.final, world=world),
        "concepts": {},
        "complete": False,
    }
    earlier = run_to_resume(args.out, out, "Track B") if args.resume else {}
    out["concepts"] = {name: earlier["concepts"][name] for name in names if name in earlier.get("concepts", {})}
    spent = earlier.get("seconds", 0.0)
    with tempfile.TemporaryDirectory(prefix="clear_sae_track_b_") as scratch:
        work = Path(args.work) if args.work else Path(scratch)
        paper = paper_library(names, Path(args.dictionaries), Path(scratch) / "paper.json", backbone)
        ctx = Context(world, backbone, paper, work, joint_config(args.joint_rounds), tuple(args.esd_steps))
        from tqdm.auto import tqdm

        for name in tqdm([n for n in names if n not in out["concepts"]], desc="toy concepts", unit="concept"):
            out["concepts"][name] = concept_result(ctx, name, methods, args, cfg)
            out["concepts"] = {n: out["concepts"][n] for n in names if n in out["concepts"]}  # in the given order
            out["summary"] = summarise(out["concepts"], methods, args.seed)
            out["seconds"] = round(spent + time.perf_counter() - started, 1)
            atomic_write_text(Path(args.out), json.dumps(out, indent=2) + "\n")
    out["complete"] = True
    out["summary"] = summarise(out["concepts"], methods, args.seed)
    out["seconds"] = round(spent + time.perf_counter() - started, 1)
    atomic_write_text(Path(args.out), json.dumps(out, indent=2) + "\n")
    for method, row in out["summary"].items():
        gap = row["detector"]["gap_to_clear"]
        print(
            f"{method:>16}: met by both {row['met_by_both']}/{row['concepts']} "
            f"({row['met_by_both_with_intervals']} with intervals); rate after minus CLEAR's (detector) {gap['mean']}"
        )


if __name__ == "__main__":
    main()
