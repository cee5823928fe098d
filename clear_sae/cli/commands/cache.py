"""`clear-sae cache`: run prompts through a model and store its residual stream in HDF5."""

from __future__ import annotations

import argparse

from clear_sae.backbones import load_backbone
from clear_sae.cache import DTYPES, INDEX, ActivationCache, CacheConfig, write_cache
from clear_sae.cli.options import add_fields, add_placement_options, config_from, log, placement_from
from clear_sae.distributed import join, launched_ranks, rank_device
from clear_sae.errors import ClearSaeError
from clear_sae.io import check_not_an_input, output_file, output_folder, read_prompt_file

NAME = "cache"
HELP = "run prompts through a model and store its residual stream in HDF5"
FIELDS = ["batch_size", "dtype", "chunk_rows", "padding"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The cache command's options."""
    p.add_argument(
        "--model",
        required=True,
        help="minilm, a local folder (HF text encoder, diffusers pipeline) or a Hub id (owner/name[@revision])",
    )
    p.add_argument("--prompts", required=True, help="UTF-8 file, one prompt per line")
    p.add_argument("--out", required=True, help="the .h5 cache to write (under torchrun: a folder of shards)")
    p.add_argument("--layers", default="all", help="all, or comma-separated hook point names or indices")
    add_fields(p, CacheConfig, FIELDS, choices={"dtype": DTYPES})
    add_placement_options(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted cache")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--stop-after-batches", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> None:
    """Write the cache, or continue it with --resume."""
    prompts = read_prompt_file(args.prompts)
    sharded = launched_ranks() > 1  # under torchrun, every rank writes a shard of the folder --out
    out = output_folder(args.out, "--out") if sharded else output_file(args.out, "--out")
    check_not_an_input(out, {"--prompts": args.prompts})
    if out.exists() and not sharded and not (args.resume or args.force):
        raise ClearSaeError(f"{out} already exists; pass --resume to continue it or --force to overwrite it")
    cfg = config_from(CacheConfig, args, FIELDS)
    group = join()
    placement = placement_from(args)
    placement.device = rank_device(placement.device, group)  # under torchrun, each rank on its own GPU
    backbone = load_backbone(args.model, placement)
    layers = backbone.resolve_layers(args.layers)
    write_cache(
        backbone,
        prompts,
        out,
        layers,
        cfg,
        resume=args.resume,
        force=args.force,
        stop_after_batches=args.stop_after_batches,
        group=group,
    )
    if not group.leads:
        return
    if sharded and not (out / INDEX).is_file():
        log.info(f"cached a shard per rank -> {out} [incomplete (continue with --resume)]")
        return
    with ActivationCache(out, allow_incomplete=True) as cache:
        state = "complete" if cache.complete else "incomplete (continue with --resume)"
        padded = f" and {cache.n_padding_rows(layers[0])} padding positions it reads" if cfg.padding else ""
        log.info(
            f"cached {len(layers)} hook points, {cache.n_rows(layers[0])} tokens at {layers[0]}{padded} -> {out} "
            f"[{state}]"
        )
