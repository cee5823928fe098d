"""`clear-sae erase`: erase concepts from prompts and report, per prompt, what changed."""

from __future__ import annotations

import argparse
import json

from clear_sae.backbones import load_backbone_for
from clear_sae.cli.options import add_placement_options, log, number_type, placement_from
from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_write_text, check_not_an_input, check_overwrite, output_file, read_prompt_file
from clear_sae.library import ConceptLibrary, shipped_library
from clear_sae.measure import REPORT_FORMAT, erase_report

NAME = "erase"
HELP = "erase concepts from prompts and report what changed"


def add_library_option(p: argparse.ArgumentParser) -> None:
    """`--library`, defaulting to the shipped MiniLM library where there is one."""
    default = shipped_library()
    p.add_argument(
        "--library",
        default=None if default is None else str(default),
        required=default is None,
        help="concept library JSON (default: the shipped MiniLM library)",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The erase command's options."""
    add_library_option(p)
    p.add_argument("--concept", action="append", required=True, help="a concept to erase (repeatable)")
    p.add_argument("--prompts", required=True, help="UTF-8 file, one prompt per line")
    p.add_argument("--out", required=True, help="JSON report")
    p.add_argument("--model", default=None, help="defaults to the model recorded in the library")
    add_placement_options(p)
    p.add_argument(
        "--single-step",
        action="store_true",
        help="only the paper's decoder step h - gamma W_dec (f(h) m); the SAE may still read some concept "
        "activation afterwards (default: also push the concept pre-activations below zero)",
    )
    p.add_argument(
        "--batch-size",
        type=number_type(int, "positive"),
        default=32,
        help="prompts per forward pass (default: %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="overwrite --out even if it is not an earlier report")


def run(args: argparse.Namespace) -> None:
    """Erase, write the report and print its summary."""
    prompts = read_prompt_file(args.prompts)
    out = output_file(args.out, "--out")
    check_not_an_input(out, {"--library": args.library, "--prompts": args.prompts})
    check_overwrite(out, REPORT_FORMAT, args.force)
    library = ConceptLibrary.load(args.library)
    entries = [entry for name in args.concept for entry in library.parts(name)]
    for entry in entries:
        library.dictionary_path(entry)
    sources = {e.model_source for e in entries}
    if args.model is None and len(sources) > 1:
        raise ClearSaeError("the concepts come from different models; erase them separately or pass --model")
    backbone = load_backbone_for(args.model, sources.pop(), placement_from(args))
    report = erase_report(
        backbone, library, args.concept, prompts, batch_size=args.batch_size, exact=not args.single_step
    )
    atomic_write_text(out, json.dumps(report, indent=2))
    s = report["summary"]
    log.info(
        f"{s['n_prompts']} prompts; a concept latent fired on {s['n_fired']}, brought to zero on "
        f"{s['n_fired_cleared']} of them"
    )
    if s["mean_cosine_fired"] is not None:
        log.info(f"mean cosine of final embeddings where it fired: {s['mean_cosine_fired']:.4f}")
    if s["min_cosine_not_fired"] is not None:
        log.info(f"lowest cosine where it did not fire: {s['min_cosine_not_fired']:.6f}")
    log.info(f"report -> {out}")
