"""`clear-sae evaluate`: the generation rate before and after erasure in the toy video world."""

from __future__ import annotations

import argparse
import json

from clear_sae.cli.commands.erase import add_library_option
from clear_sae.cli.options import add_fields, config_from, log
from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_write_text, check_not_an_input, check_overwrite, output_file
from clear_sae.library import ConceptLibrary
from clear_sae.toyworld.concepts import attribute_map, check_attributes_used, is_toy_entry
from clear_sae.toyworld.evaluation import REPORT_FORMAT, evaluate
from clear_sae.toyworld.protocol import check_evaluation_seed, protocol_record
from clear_sae.toyworld.report import format_results
from clear_sae.toyworld.sampling import EvalConfig, load_toy_world

NAME = "evaluate"
HELP = "generation rate before/after erasure in the toy video world"
FIELDS = [
    "clips",
    "heldout_clips",
    "reserved_clips",
    "nontarget_clips",
    "removed_clips",
    "steps",
    "guidance",
    "seed",
    "batch_size",
    "threshold",
]


def add_attribute_option(p: argparse.ArgumentParser) -> None:
    """`--attribute NAME=AXIS=VALUE`, repeatable."""
    p.add_argument(
        "--attribute",
        action="append",
        help="NAME=AXIS=VALUE: what a concept stands for in the toy world when its name is not a colour, shape or "
        "motion (e.g. crimson=colour=red); repeatable",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The evaluate command's options."""
    add_library_option(p)
    p.add_argument(
        "--concept",
        action="append",
        help="a concept to evaluate (repeatable; default: every toy-world concept in the library, and every entry "
        "that records the attribute it stands for)",
    )
    add_attribute_option(p)
    p.add_argument("--out", required=True, help="JSON report (its image strips go in a folder beside it)")
    add_fields(p, EvalConfig, FIELDS)
    p.add_argument("--sweep", action="store_true", help="also erase at every layer in turn")
    p.add_argument("--single-step", action="store_true", help="the paper's decoder step only (see erase)")
    p.add_argument("--generator", default=None, help="generator folder (default: the shipped one)")
    p.add_argument("--detector", default=None, help="detector folder (default: the shipped one)")
    p.add_argument("--force", action="store_true", help="overwrite --out even if it is not an earlier evaluation")
    p.add_argument(
        "--final",
        action="store_true",
        help="the sealed protocol's final run: reads a test seed (which any other run is refused) and records the "
        "protocol's digest in the report",
    )


def run(args: argparse.Namespace) -> None:
    """Evaluate the concepts, write the report and print its table."""
    out = output_file(args.out, "--out")
    check_not_an_input(out, {"--library": args.library})
    check_overwrite(out, REPORT_FORMAT, args.force)
    library = ConceptLibrary.load(args.library)
    attributes = attribute_map(args.attribute or [])
    names = args.concept or [n for n, entry in library.concepts.items() if is_toy_entry(entry, attributes)]
    if not names:
        raise ClearSaeError(
            f"{args.library} holds no toy-world concept; name one with --concept (and map it with "
            "--attribute NAME=AXIS=VALUE if its name is not a colour, shape or motion)"
        )
    check_attributes_used(attributes, names)
    check_evaluation_seed(args.seed, final=args.final, reserved_clips=args.reserved_clips)
    cfg = config_from(EvalConfig, args, FIELDS)
    world = load_toy_world(args.generator, args.detector)
    strips = out.parent / f"{out.stem}_strips"
    report = evaluate(
        world, library, names, attributes, cfg, sweep=args.sweep, exact=not args.single_step, strips=strips
    )
    report["protocol"] = protocol_record(args.seed, args.final, world=world)
    atomic_write_text(out, json.dumps(report, indent=2))
    log.info(format_results(report))
    log.info(f"report -> {out}")
