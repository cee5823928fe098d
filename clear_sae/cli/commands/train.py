"""`clear-sae train`: train one SAE per hook point of a cache."""

from __future__ import annotations

import argparse

from clear_sae.backbones.base import select_hook_points
from clear_sae.cache import ActivationCache
from clear_sae.cli.options import add_fields, config_from, log
from clear_sae.dictionary import (
    ARCHITECTURES,
    DISTRIBUTE,
    SAVE_DTYPES,
    TrainConfig,
    format_health_table,
    train_dictionaries,
)
from clear_sae.distributed import join
from clear_sae.io import output_folder
from clear_sae.sae.trainer import KERNELS

NAME = "train"
HELP = "train one SAE per hook point of a cache"
FIELDS = [
    "architecture",
    "expansion",
    "k",
    "tokens",
    "batch_size",
    "lr",
    "seed",
    "l1_coefficient",
    "l0_coefficient",
    "dead_window",
    "aux_coefficient",
    "eval_tokens",
    "save_dtype",
    "kernel",
    "device",
    "checkpoint_every",
    "distribute",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The train command's options."""
    p.add_argument(
        "--cache",
        required=True,
        help="the activation cache to train on (an .h5 file, or the folder of shards torchrun wrote)",
    )
    p.add_argument("--out", required=True, help="dictionary folder (one sub-folder per hook point)")
    p.add_argument("--layers", default="all", help="all, or comma-separated hook point names or indices")
    add_fields(
        p,
        TrainConfig,
        FIELDS,
        flags={"architecture": "--arch"},
        choices={"architecture": ARCHITECTURES, "save_dtype": SAVE_DTYPES, "kernel": KERNELS, "distribute": DISTRIBUTE},
    )
    p.add_argument("--force", action="store_true", help="retrain into a folder that already holds dictionaries")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run of the same arguments: finished layers are kept, the others continue "
        "from their last checkpoint (see --checkpoint-every)",
    )


def run(args: argparse.Namespace) -> None:
    """Train the dictionaries and print their health."""
    output_folder(args.out, "--out")
    with ActivationCache(args.cache) as cache:
        layers = select_hook_points(args.layers, cache.hook_points, f"cache {cache.path}")
        cfg = config_from(TrainConfig, args, FIELDS)
        group = join(cfg.device)
        manifest = train_dictionaries(cache, args.out, layers, cfg, args.force, resume=args.resume, group=group)
    if group.leads:
        log.info(format_health_table(manifest, layers))
        log.info(f"dictionaries -> {args.out}")
