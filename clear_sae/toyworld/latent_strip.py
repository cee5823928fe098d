"""What one latent does to generated clips: toy-world clips sampled untouched, with the latent clamped off and with
it boosted, row by row, as a labelled strip (the latent page's counterpart in the toy world)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from clear_sae.erase import LatentBoost, LatentClamp, attach
from clear_sae.errors import ClearSaeError
from clear_sae.toyworld.concepts import toy_corpus
from clear_sae.toyworld.media import save_strip
from clear_sae.toyworld.sampling import EvalConfig, encode, sample

if TYPE_CHECKING:
    from clear_sae.dictionary import Dictionaries
    from clear_sae.toyworld.sampling import ToyWorld

CANDIDATES = 300
"""Toy captions searched for those on which a latent fires most, when no prompts are given."""


def firing_captions(dictionaries: "Dictionaries", backbone: Any, hook: str, latent: int, n: int) -> list[str]:
    """The `n` toy-world captions (of `CANDIDATES`) on which `latent` fires most at `hook` (the first ones where it
    fires on fewer)."""
    from clear_sae.concepts import encode_prompts

    captions = toy_corpus(CANDIDATES)
    peak = encode_prompts(backbone, dictionaries, captions, [hook])[hook].peak[:, latent]
    order = sorted(range(len(captions)), key=lambda i: (-float(peak[i]), i))
    return [captions[i] for i in order[:n]]


def latent_strip(
    world: "ToyWorld",
    dictionaries: "Dictionaries",
    hook: str,
    latent: int,
    prompts: list[str],
    out: str | Path,
    boost: float,
    cfg: EvalConfig = EvalConfig(progress=False),
) -> Path:
    """Sample one clip per prompt untouched, with `latent` of `hook`'s dictionary clamped to zero and with it set to
    `boost` on every token (the same noise each time), and save the rows (three per prompt) as a labelled strip."""
    if not prompts:
        raise ClearSaeError("no prompts to sample; pass a prompt file with at least one toy-world caption")
    sae = dictionaries.sae(hook)
    if not 0 <= latent < int(sae.cfg.d_sae):
        raise ClearSaeError(f"latent {latent} does not exist at {hook}; it has 0..{int(sae.cfg.d_sae) - 1}")
    seeds = [cfg.seed + i for i in range(len(prompts))]
    ways = {
        "untouched": {},
        "clamped": {hook: LatentClamp(sae, [latent])},
        f"boosted to {boost:g}": {hook: LatentBoost(sae, [latent], boost)},
    }
    negative = encode(world.pipe, [""])
    rows: dict[str, Any] = {}
    for name, hooks in ways.items():
        with attach(world.pipe, hooks):
            embeds = encode(world.pipe, prompts)
        rows[name] = sample(world.pipe, embeds, negative, seeds, cfg, name)
    clips, labels = [], []
    for i, prompt in enumerate(prompts):
        for name, sampled in rows.items():
            clips.append(sampled[i])
            labels.append(f"{name}\n{prompt}")
    return save_strip(clips, out, labels=labels)
