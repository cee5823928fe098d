"""`clear-sae demo`: the whole pipeline on the embedded MiniLM default and the toy video world."""

from __future__ import annotations

import argparse
import dataclasses

from clear_sae.cli import demo
from clear_sae.cli.options import add_fields, config_from

NAME = "demo"
HELP = "the whole pipeline on the embedded MiniLM default"
FIELDS = [f.name for f in dataclasses.fields(demo.DemoConfig)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The demo command's options: every field of `DemoConfig`."""
    add_fields(p, demo.DemoConfig, FIELDS)


def run(args: argparse.Namespace) -> None:
    """Run the demo."""
    demo.run_demo(config_from(demo.DemoConfig, args, FIELDS))
