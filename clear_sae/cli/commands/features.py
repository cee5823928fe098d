"""`clear-sae features`: statistics of every latent over the whole cache, stored beside the dictionaries."""

from __future__ import annotations

import argparse

from clear_sae.backbones import load_backbone_for
from clear_sae.backbones.base import select_hook_points
from clear_sae.cache import ActivationCache
from clear_sae.cli.options import add_fields, add_placement_options, config_from, log, placement_from
from clear_sae.dictionary import Dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.features import FEATURES, FeatureConfig, compute_features

NAME = "features"
HELP = "every latent's density, histogram, top and sampled contexts, attribution (stored beside the dictionaries)"
FIELDS = ["top", "samples", "bins", "attribution", "chunk_rows"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The features command's options."""
    p.add_argument("--dictionaries", required=True, help="dictionary folder (the statistics go in its features/)")
    p.add_argument("--cache", required=True, help="the activation cache (.h5 file or folder of shards) to scan")
    p.add_argument("--layers", default="all", help="all, or comma-separated hook point names or indices")
    p.add_argument("--model", default=None, help="defaults to the model the dictionaries were trained on")
    add_placement_options(p)
    add_fields(p, FeatureConfig, FIELDS)
    p.add_argument("--force", action="store_true", help="recompute layers whose stored statistics are current")


def run(args: argparse.Namespace) -> None:
    """Compute the statistics of each chosen layer that has none current, and store them."""
    dictionaries = Dictionaries(args.dictionaries)
    cfg = config_from(FeatureConfig, args, FIELDS)
    with ActivationCache(args.cache) as cache:
        if dictionaries.backbone_id and cache.backbone_id != dictionaries.backbone_id:
            raise ClearSaeError(
                f"cache {args.cache} holds activations of {cache.backbone_id!r}, but the dictionaries were trained "
                f"on {dictionaries.backbone_id!r}; pass the cache they were trained on"
            )
        hooks = select_hook_points(args.layers, dictionaries.hook_points, f"dictionaries {dictionaries.root}")
        recorded = dictionaries.manifest.get("model_source") or dictionaries.backbone_id
        backbone = load_backbone_for(args.model, recorded, placement_from(args))
        done = compute_features(cache, dictionaries, hooks, backbone, cfg, force=args.force)
    for hook, state in done.items():
        log.info(f"{hook}: {state}")
    log.info(f"latent statistics of {len(hooks)} layers -> {dictionaries.root / FEATURES}")
