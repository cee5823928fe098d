"""`clear-sae push`: upload a dictionary folder, with its concept library, to a Hugging Face Hub repository."""

from __future__ import annotations

import argparse

from clear_sae.cli.options import log

NAME = "push"
HELP = "upload a dictionary folder (with its concept library) to a Hub repository"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The push command's options."""
    p.add_argument("--dictionaries", required=True, help="dictionary folder (e.g. dictionaries/minilm)")
    p.add_argument("--repo", required=True, help="Hub model repository, owner/name (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")


def run(args: argparse.Namespace) -> None:
    """Check that every layer loads, then upload the folder."""
    from clear_sae.hub import push_dictionaries

    url = push_dictionaries(args.dictionaries, args.repo, private=args.private)
    log.info(f"pushed {args.dictionaries} -> {url}")
