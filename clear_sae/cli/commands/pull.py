"""`clear-sae pull`: download a dictionary folder, with its concept library, from a Hugging Face Hub repository."""

from __future__ import annotations

import argparse

from clear_sae.cli.options import log

NAME = "pull"
HELP = "download a dictionary folder (with its concept library) from a Hub repository"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The pull command's options."""
    p.add_argument("--repo", required=True, help="Hub model repository, owner/name")
    p.add_argument("--out", required=True, help="local dictionary folder to create")
    p.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    p.add_argument("--force", action="store_true", help="replace an existing dictionary folder")


def run(args: argparse.Namespace) -> None:
    """Download the folder, check that it loads, and put it in place."""
    from clear_sae.hub import pull_dictionaries

    out = pull_dictionaries(args.repo, args.out, revision=args.revision, force=args.force)
    log.info(f"pulled {args.repo} -> {out}")
