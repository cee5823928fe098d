"""`clear-sae export`: every latent's statistics in the batch JSON that Neuronpedia ingests (SAEDashboard's form)."""

from __future__ import annotations

import argparse

from clear_sae.backbones.base import select_hook_points
from clear_sae.cli.options import add_fields, config_from, log
from clear_sae.dictionary import Dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.export import ExportConfig, export_neuronpedia
from clear_sae.io import output_folder

NAME = "export"
HELP = "the latent statistics as Neuronpedia batch JSON (run `clear-sae features` first)"
FIELDS = ["model_id", "sae_set", "per_batch", "intervals", "per_interval"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The export command's options."""
    p.add_argument("--dictionaries", required=True, help="dictionary folder whose features/ to export")
    p.add_argument("--out", required=True, help="folder for the export (one subfolder per layer)")
    p.add_argument("--layers", default="all", help="all, or comma-separated hook point names or indices")
    add_fields(p, ExportConfig, FIELDS)
    p.add_argument("--force", action="store_true", help="write into --out even if it already holds files")


def run(args: argparse.Namespace) -> None:
    """Check the output folder, then export each chosen layer."""
    dictionaries = Dictionaries(args.dictionaries)
    out = output_folder(args.out, "--out")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise ClearSaeError(f"--out {out} already holds files; choose an empty folder or pass --force to write into it")
    hooks = select_hook_points(args.layers, dictionaries.hook_points, f"dictionaries {dictionaries.root}")
    folders = export_neuronpedia(dictionaries, hooks, out, config_from(ExportConfig, args, FIELDS))
    log.info(f"Neuronpedia batches of {len(folders)} layers -> {out}")
