"""`clear-sae toy-concept`: learn toy-world concepts on existing dictionaries, calibrated on generated clips."""

from __future__ import annotations

import argparse
import time

from clear_sae.backbones import load_backbone_for
from clear_sae.calibration.ladder import chosen_step, recorded_calibration, recorded_steps
from clear_sae.cli.commands.evaluate import add_attribute_option
from clear_sae.cli.options import log, number_type
from clear_sae.dictionary import Dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.io import output_file, read_prompt_file
from clear_sae.library import ConceptLibrary
from clear_sae.toyworld.concepts import (
    JUDGE_CLIPS,
    PAPER_STRENGTH,
    PAPER_SUFFIX,
    attribute_map,
    check_toy_names,
    toy_concepts,
)
from clear_sae.toyworld.learn import learn_paper_concept, learn_toy_concept
from clear_sae.toyworld.sampling import TEXT_ENCODER_ID, load_toy_world

NAME = "toy-concept"
HELP = "learn toy-world concepts on existing dictionaries, their layer, strength and tolerance calibrated on clips"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The toy-concept command's options."""
    p.add_argument("--dictionaries", required=True, help="MiniLM dictionary folder (e.g. dictionaries/minilm)")
    p.add_argument("--library", required=True, help="concept library JSON (created if missing; other entries kept)")
    p.add_argument("--concept", action="append", help="a toy concept, e.g. yellow (repeatable; default: all)")
    add_attribute_option(p)
    p.add_argument(
        "--target",
        help="your own target prompts for the one --concept (default: the toy world's learning prompts); the judge "
        "still generates the attribute's own captions",
    )
    p.add_argument("--nontarget", help="your own non-target prompts, with --target")
    p.add_argument(
        "--judge-clips",
        type=number_type(int, "count"),
        default=JUDGE_CLIPS,
        help="target and non-target clips the generation judge samples per rung, as for the shipped library; 0: "
        "the text-side probe judges (default: %(default)s)",
    )
    p.add_argument("--generator", default=None, help="toy generator folder (default: the shipped one)")
    p.add_argument(
        "--paper",
        action="store_true",
        help=f"also keep each concept's paper entry, NAME{PAPER_SUFFIX}: the layer of highest separability at gamma "
        f"{PAPER_STRENGTH:g}, no calibration and no judge",
    )


def run(args: argparse.Namespace) -> None:
    """Learn each toy concept, saving the library after every one."""
    names = args.concept or toy_concepts()
    attributes = attribute_map(args.attribute or [])
    check_toy_names(names, attributes)  # before anything is loaded
    prompts = None
    if args.target or args.nontarget:
        if not (args.target and args.nontarget):
            raise ClearSaeError("own prompts need both files: pass --target and --nontarget together")
        if not args.concept or len(args.concept) != 1:
            raise ClearSaeError("--target and --nontarget learn one concept: name it with a single --concept")
        prompts = read_prompt_file(args.target), read_prompt_file(args.nontarget)
    dictionaries = Dictionaries(args.dictionaries)
    library = ConceptLibrary.load(output_file(args.library, "--library"), missing_ok=True)
    backbone = load_backbone_for(None, dictionaries.manifest.get("model_source") or dictionaries.backbone_id)
    if backbone.backbone_id != TEXT_ENCODER_ID:
        raise ClearSaeError(
            f"{args.dictionaries} was trained on {backbone.backbone_id!r}, but the toy world's text "
            f"encoder is {TEXT_ENCODER_ID!r}; pass MiniLM's dictionaries (dictionaries/minilm)"
        )
    world = load_toy_world(args.generator) if args.judge_clips > 0 else None
    judge = f"a generation judge on {args.judge_clips} clips" if world else "the text-side probe"
    source = f"{args.target} against {args.nontarget}" if prompts else "the toy world's learning prompts"
    plural = "" if len(names) == 1 else "s"
    log.info(
        f"learning {len(names)} toy concept{plural} on {args.dictionaries} from {source}, each rung judged by {judge}"
    )
    for name in names:
        started = time.perf_counter()
        entry = learn_toy_concept(
            backbone,
            dictionaries,
            name,
            world=world,
            judge_clips=args.judge_clips,
            attribute=attributes.get(name),
            prompts=prompts,
        )
        library.add(entry)
        if args.paper:
            paper = learn_paper_concept(
                backbone,
                dictionaries,
                name,
                attributes.get(name),
                prompts,
                entry_name=f"{name}{PAPER_SUFFIX}",
                strength=PAPER_STRENGTH,
            )
            library.add(paper)
            log.info(f"{paper.name:<9} {paper.hook_point:<22} gamma {paper.strength:g}: the paper's layer, no judge")
        library.save()  # after every concept, so that an interrupted run keeps what it learned
        recorded = recorded_calibration(entry.calibration)
        assert recorded is not None and entry.calibration is not None  # a toy concept is always calibrated
        _, cal = recorded
        steps = recorded_steps(entry.calibration)
        kept = chosen_step(steps, cal)
        verdict = "passed" if cal.passes(kept) else "no rung passed; kept"
        log.info(
            f"{name:<9} {entry.hook_point:<22} gamma {entry.strength:g}, tolerance "
            f"{entry.selection.max_nontarget_rate:g}, {len(entry.latents)} latents: {verdict} at rung "
            f"{steps.index(kept) + 1} of {len(steps)} tried, judge finds {100 * kept.probe_rate:.1f}% "
            f"({time.perf_counter() - started:.0f} s)"
        )
    log.info(f"library -> {library.path}")
