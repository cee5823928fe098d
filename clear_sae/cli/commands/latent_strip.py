"""`clear-sae latent-strip`: toy-world clips untouched, with one latent clamped off and with it boosted."""

from __future__ import annotations

import argparse

from clear_sae.backbones import load_backbone
from clear_sae.cli.options import log
from clear_sae.config import MAX_SAMPLING_STEPS
from clear_sae.dictionary import Dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.features import load_layer_features
from clear_sae.io import output_file, read_prompt_file
from clear_sae.toyworld.latent_strip import firing_captions, latent_strip
from clear_sae.toyworld.sampling import EvalConfig, load_toy_world

NAME = "latent-strip"
HELP = "toy-world clips untouched, with one latent clamped off and boosted (a PNG strip)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The latent-strip command's options."""
    p.add_argument("--dictionaries", required=True, help="MiniLM dictionary folder (the toy world's text encoder)")
    p.add_argument("--latent", required=True, help="HOOK/ID, as a latent page names it: text_encoder.blocks.2/5")
    p.add_argument("--prompts", default=None, help="toy-world captions (default: those it fires on most)")
    p.add_argument("--clips", type=int, default=3, help="captions sampled when --prompts is not given")
    p.add_argument("--boost", type=float, default=None, help="activation set (default: its max over the cache)")
    p.add_argument("--steps", type=int, default=EvalConfig.steps, help="sampling steps")
    p.add_argument("--generator", default=None, help="generator folder (default: the shipped one)")
    p.add_argument("--out", required=True, help="PNG strip")


def run(args: argparse.Namespace) -> None:
    """Sample the three rows per caption and save the strip."""
    out = output_file(args.out, "--out")
    hook, _, number = args.latent.rpartition("/")
    if not hook or not number.isdigit():
        raise ClearSaeError(f"--latent {args.latent!r} is not HOOK/ID; pass e.g. text_encoder.blocks.2/5")
    latent = int(number)
    dictionaries = Dictionaries(args.dictionaries)
    dictionaries.check_hook_point(hook)
    d_sae = int(dictionaries.layers[hook]["d_sae"])
    if not 0 <= latent < d_sae:
        raise ClearSaeError(f"latent {latent} does not exist at {hook}; it has 0..{d_sae - 1}")
    for flag, value, limit in (("--clips", args.clips, 1000), ("--steps", args.steps, MAX_SAMPLING_STEPS)):
        if not 1 <= value <= limit:
            raise ClearSaeError(f"{flag} must be between 1 and {limit}, not {value}")
    boost = args.boost
    if boost is None:
        stats = load_layer_features(dictionaries, hook, weights=dictionaries.fingerprint(hook))
        if stats is None:
            raise ClearSaeError(
                f"no latent statistics for {hook}: pass --boost, or run `clear-sae features` to boost to the max"
            )
        boost = float(stats.arrays["max"][latent])
    world = load_toy_world(args.generator)
    if args.prompts:
        prompts = read_prompt_file(args.prompts)
    else:
        prompts = firing_captions(dictionaries, load_backbone("minilm"), hook, latent, args.clips)
    cfg = EvalConfig(steps=args.steps, progress=False)
    path = latent_strip(world, dictionaries, hook, latent, prompts, out, boost, cfg)
    log.info(f"{len(prompts)} captions x (untouched, clamped, boosted to {boost:g}) -> {path}")
