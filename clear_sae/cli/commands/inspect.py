"""`clear-sae inspect`: one self-contained HTML report of layers, latents, reuse, dictionary health and erasure."""

from __future__ import annotations

import argparse
from pathlib import Path

from clear_sae.cache import ActivationCache
from clear_sae.cli.commands.erase import add_library_option
from clear_sae.cli.options import add_fields, config_from, log
from clear_sae.cli.report import FORMAT, InspectConfig, add_latent_pages, collect_report, write_report
from clear_sae.dictionary import Dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.io import check_not_an_input, check_overwrite, output_file
from clear_sae.library import ConceptLibrary

NAME = "inspect"
HELP = "one self-contained HTML report: layers, latents, reuse, health, erasure"
FIELDS = ["top_latents", "top_prompts", "bins", "cache_tokens", "batch_size"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The inspect command's options."""
    add_library_option(p)
    p.add_argument("--dictionaries", default=None, help="dictionary folder (default: the one the library uses)")
    p.add_argument(
        "--cache",
        default=None,
        help="activation cache (.h5 file or folder of shards): also show the corpus prompts that excite each latent",
    )
    p.add_argument("--evaluation", default=None, help="a `clear-sae evaluate` report: show generation rates and clips")
    p.add_argument("--out", required=True, help="report.html (or .json with --format json)")
    p.add_argument("--format", choices=("html", "json"), default="html", help="what --out holds")
    add_fields(p, InspectConfig, FIELDS)
    p.add_argument(
        "--latent-pages",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write a page per latent beside the report where `clear-sae features` stored statistics",
    )
    p.add_argument("--force", action="store_true", help="overwrite --out even if it is not an earlier report")


def run(args: argparse.Namespace) -> None:
    """Collect the report's data and write it."""
    out = output_file(args.out, "--out")
    check_not_an_input(out, {"--library": args.library, "--cache": args.cache, "--evaluation": args.evaluation})
    check_overwrite(out, FORMAT, args.force, what="an earlier inspection report")
    library = ConceptLibrary.load(args.library)
    folder = args.dictionaries
    if folder is None:
        folders = {library.dictionary_path(e).resolve() for e in library.concepts.values()}
        if len(folders) != 1:
            raise ClearSaeError(f"{args.library} uses {len(folders)} dictionary folders; pick one with --dictionaries")
        folder = folders.pop()
    if args.cache is not None and Path(args.cache).is_dir():
        ActivationCache(args.cache).close()  # a folder of shards is a cache; any other folder is refused here
    for path, what in ((args.cache, "--cache"), (args.evaluation, "--evaluation")):
        sharded = what == "--cache" and path is not None and Path(path).is_dir()
        if path is not None and not Path(path).is_file() and not sharded:
            state = "is a directory" if Path(path).is_dir() else "does not exist"
            command = "cache" if what == "--cache" else "evaluate"
            raise ClearSaeError(f"{what} {path} {state}; pass the file `clear-sae {command}` wrote")
    cfg = config_from(InspectConfig, args, FIELDS)
    dictionaries = Dictionaries(folder)
    data = collect_report(dictionaries, library, args.cache, args.evaluation, cfg=cfg)
    pages = add_latent_pages(data, dictionaries, out) if args.format == "html" and args.latent_pages else None
    write_report(data, out, args.format)
    if pages is not None:
        log.info(f"a page for every latent with statistics (`clear-sae features`) -> {pages}")
    log.info(f"report ({len(data['concepts'])} concepts, {len(data['hook_points'])} layers) -> {out}")
