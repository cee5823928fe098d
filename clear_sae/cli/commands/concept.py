"""`clear-sae concept`: find a concept's latents per layer, choose its layer, and add it to a library."""

from __future__ import annotations

import argparse
from typing import Any

from clear_sae.backbones import load_backbone_for
from clear_sae.calibration.ladder import (
    CalibrationConfig,
    chosen_step,
    format_ladder,
    learn_calibrated_concept_per_encoder,
)
from clear_sae.cli.options import add_fields, add_placement_options, config_from, log, placement_from
from clear_sae.compare.joint import JointConfig, joint_folder, learn_concept_joint
from clear_sae.concepts import (
    MIN_COVERAGE,
    MIN_HELDOUT_AUROC,
    SCORES,
    ConceptConfig,
    format_table,
    learn_concept_per_encoder,
    quality_warnings,
)
from clear_sae.dictionary import Dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.io import output_file, read_prompt_file
from clear_sae.library import ConceptLibrary, check_concept_name

NAME = "concept"
HELP = "find a concept's latents per layer, choose its layer, add it to a library"
CONCEPT_FIELDS = [
    "score",
    "strength",
    "min_target_rate",
    "max_nontarget_rate",
    "max_latents",
    "background",
    "max_background_rate",
    "holdout",
    "seed",
]
CALIBRATION_FIELDS = ["strengths", "wider_nontarget_rates", "max_probe_rate", "search_layers"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The concept command's options."""
    p.add_argument("--name", required=True, help="the concept's name in the library")
    p.add_argument("--target", required=True, help="prompts containing the concept")
    p.add_argument("--nontarget", required=True, help="the same prompts with the concept swapped out")
    p.add_argument("--library", required=True, help="concept library JSON (created if missing)")
    p.add_argument(
        "--dictionaries",
        default=None,
        help="the per-layer dictionaries to reuse (required unless --method clear-joint)",
    )
    p.add_argument(
        "--method",
        default="reuse",
        choices=["reuse", "clear-joint"],
        help="reuse: one shared dictionary per layer (fast); clear-joint: the paper's own per-concept SAE trained "
        "with layer preferences, saved beside the library (default: %(default)s)",
    )
    p.add_argument("--model", default=None, help="defaults to the model the dictionaries were trained on")
    add_placement_options(p)
    p.add_argument("--layers", default=None, help="restrict the candidate layers (names or indices)")
    add_fields(p, ConceptConfig, CONCEPT_FIELDS, choices={"score": SCORES})
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 3, library untouched) a concept that separates poorly at its chosen layer (held-out AUROC "
        f"below {MIN_HELDOUT_AUROC}, or unmeasured), whose latents fire on fewer than {MIN_COVERAGE:.0%}% of the "
        "targets or were checked against no background captions, whose words the dictionaries' corpus hardly "
        "holds, or whose calibration confirmed no erasure; without it these are warnings",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="climb the calibration ladder (below) until a probe on the final text states no longer finds the "
        "concept in held-out targets; overrides --strength",
    )
    ladder = p.add_argument_group("calibration ladder (with --calibrate)")
    add_fields(ladder, CalibrationConfig, CALIBRATION_FIELDS)
    joint = p.add_argument_group("clear-joint (with --method clear-joint)")
    add_fields(joint, JointConfig, ["rounds"], flags={"rounds": "--joint-rounds"})


def run(args: argparse.Namespace) -> None:
    """Learn the concept into the library and print its per-layer table."""
    check_concept_name(args.name)
    target = read_prompt_file(args.target)
    nontarget = read_prompt_file(args.nontarget)
    if args.method == "clear-joint":
        if args.strict:
            raise ClearSaeError(
                "--strict checks an entry on the reused dictionaries; leave it out with --method clear-joint"
            )
        if args.calibrate:
            raise ClearSaeError(
                "--calibrate tunes an entry on the reused dictionaries; leave it out with "
                "--method clear-joint (or pass --strength)"
            )
        run_joint(args, target, nontarget)
        return
    if not args.dictionaries:
        raise ClearSaeError("--dictionaries is required (the reused dictionaries); or pass --method clear-joint")
    dictionaries = Dictionaries(args.dictionaries)
    library = ConceptLibrary.load(output_file(args.library, "--library"), missing_ok=True)
    previous = library.concepts.get(args.name)
    recorded = dictionaries.manifest.get("model_source") or dictionaries.backbone_id
    backbone = load_backbone_for(args.model, recorded, placement_from(args))
    layers = backbone.resolve_layers(args.layers) if args.layers else None
    for hook in layers or []:
        dictionaries.check_hook_point(hook)
    cfg = config_from(ConceptConfig, args, CONCEPT_FIELDS)
    cal = config_from(CalibrationConfig, args, CALIBRATION_FIELDS) if args.calibrate else None
    if cal is not None:
        learned = learn_calibrated_concept_per_encoder(
            backbone, dictionaries, args.name, target, nontarget, cfg, cal, layers
        )
    else:
        learned = [
            (entry, profiles, None)
            for entry, profiles in learn_concept_per_encoder(
                backbone, dictionaries, args.name, target, nontarget, cfg, layers
            )
        ]
    warnings = [w for entry, _, _ in learned for w in quality_warnings(entry, dictionaries)]
    log.info(f"concept {args.name!r}: {len(target)} target, {len(nontarget)} non-target prompts")
    for entry, profiles, steps in learned:
        if len(learned) > 1:
            log.info(f"{entry.name}: its own layer within {entry.hook_point.split('.', 1)[0]}")
        why = None
        if steps is not None and cal is not None:
            chosen = chosen_step(steps, cal)
            why = "confirmed by calibration" if cal.passes(chosen) else "calibration's best, not confirmed"
            if not cal.passes(chosen):
                warnings.append(
                    f"concept {entry.name!r}: no calibration rung met the bars; the kept one leaves the concept in "
                    f"{chosen.probe_rate:.0%} of held-out targets (the bar is {cal.max_probe_rate:.0%})"
                )
        log.info(format_table(profiles, entry.hook_point, cfg.score, why))
        if steps is not None and cal is not None:
            log.info("calibration (a probe on the final text states, held-out targets):")
            log.info(format_ladder(steps, cal))
    for warning in warnings:
        log.warning(f"warning: {warning}")
    if warnings and args.strict:
        raise ClearSaeError(
            f"--strict: concept {args.name!r} was not added to {library.path} ({len(warnings)} warning(s) above)"
        )
    library.replace_parts(args.name, [entry for entry, _, _ in learned])
    library.save()
    for entry, _, _ in learned:
        log.info(
            f"{replaced_note(previous, args.name)}chosen layer: {entry.hook_point} ({len(entry.latents)} latents, "
            f"strength {entry.strength:g}) -> {library.path}"
        )


def run_joint(args: argparse.Namespace, target: list[str], nontarget: list[str]) -> None:
    """The paper's own method: the concept's SAE and layer preferences, trained and saved beside the library."""
    library = ConceptLibrary.load(output_file(args.library, "--library"), missing_ok=True)
    previous = library.concepts.get(args.name)
    if not args.dictionaries and not args.model:
        raise ClearSaeError("--method clear-joint trains its own SAE on a model: name it with --model (e.g. minilm)")
    recorded = None
    if args.dictionaries:
        dictionaries = Dictionaries(args.dictionaries)
        recorded = dictionaries.manifest.get("model_source") or dictionaries.backbone_id
    backbone = load_backbone_for(args.model, recorded, placement_from(args))
    layers = backbone.resolve_layers(args.layers) if args.layers else None
    concept = config_from(ConceptConfig, args, [f for f in CONCEPT_FIELDS if f != "score"])
    cfg = JointConfig(
        rounds=args.rounds, warmup_rounds=min(JointConfig.warmup_rounds, args.rounds - 1), concept=concept
    )
    folder = joint_folder(args.library, args.name)
    entry, result = learn_concept_joint(backbone, args.name, target, nontarget, folder, cfg, layers)
    library.add(entry)
    library.save()
    log.info(
        f"concept {entry.name!r} (clear-joint): {len(target)} target, {len(nontarget)} non-target prompts, "
        f"{result.seconds:.1f} s"
    )
    lines = [f"{'layer':<26} {'preference':>10} {'loss':>9}"]
    for hook, pref in result.preferences.items():
        mark = "  <- chosen" if hook == entry.hook_point else ""
        lines.append(f"{hook:<26} {pref:>10.4f} {result.separability_loss[hook]:>9.4f}{mark}")
    log.info("\n".join(lines))
    log.info(
        f"{replaced_note(previous, args.name)}chosen layer: {entry.hook_point} ({len(entry.latents)} latents of "
        f"its own SAE in {folder}) -> {library.path}"
    )


def replaced_note(previous: Any, name: str) -> str:
    """The line that says a library entry of the same name was replaced ('' when there was none)."""
    if previous is None:
        return ""
    return (
        f"replaced the library's earlier entry {name!r} ({previous.hook_point}, {len(previous.latents)} latents, "
        f"strength {previous.strength:g}); pick another --name to keep both\n"
    )
