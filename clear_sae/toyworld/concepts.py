"""Toy-world concepts: one attribute value (a colour, a shape or a motion) and the prompts that carry it.

A concept's targets are captions of random single-object clips with that attribute value; its
non-targets are the same clips with the value swapped for another one and the same words drawn for
everything else, so the pair differs only in the concept. Prompts for learning a concept and for
evaluating it come from different seeds, and evaluation can also use the held-out paraphrases.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Container

import numpy as np

from clear_sae.errors import ClearSaeError
from clear_sae.toyworld.captions import caption
from clear_sae.toyworld.render import COLOURS, MOTIONS, SHAPES, ClipSpec, random_spec

ATTRIBUTES: dict[str, tuple[str, ...]] = {"colour": tuple(COLOURS), "shape": SHAPES, "motion": MOTIONS}
"""The axes the detector reads, and their values; every value is a concept of the same name."""
LEARN_SEED = 0
"""Seed of the prompts a concept is learned from (the library's)."""
EVAL_SEED = 1_000
"""Seed of the evaluation prompts, so they never coincide with the learning prompts."""
CALIBRATION_SEED = 600
"""Seed of the prompts and noise a `GenerationJudge` generates from while a toy concept is calibrated: neither
the learning prompts nor any seed the README's evaluations use."""
LEARN_PAIRS = 200
"""Prompt pairs a toy concept is learned from."""
MAX_NONTARGET_RATE = 0.1
"""`ConceptConfig.max_nontarget_rate` for toy concepts, the first rung of their calibration (then 0.2 and 0.4,
`CalibrationConfig.wider_nontarget_rates`). Non-targets here differ from targets in one word only, so a latent
of a colour's neighbourhood fires on a good share of them; at the default 0.05 blue kept 89% of its generation
rate after erasure, at 0.2 it kept 25% (a trial of 8 clips each on an early generator). The ladder started at
0.2 until purple's entry there took latent 1053 of blocks.4, which fires on every purple caption and on 54% of
the blue non-targets (nearly all that say "blue", almost none that say "cobalt"): a fifth of the non-targets
are blue, so 0.2 admits a latent shared with one whole neighbour. That entry cost 3.5-3.9 points of
preservation at fresh seeds, and 7 of the 9 non-target clips it changed at seed 16000 were blue. At 0.1 the
latent stays out, and purple at blocks.2, gamma 16, still left 0.0% at the judge's seed with nothing lost
(`analysis/toy_rung_trial.py`, README)."""
TOY_STRENGTH = 4.0
"""gamma of a toy concept calibrated without a generator (the probe judges; see `JUDGED_STRENGTHS` for the
generation judge's ladder). With the full ladder (gamma 1, 2, 4) the probe on pooled text states passed gamma 1
for blue, orange and yellow whose clips still showed the concept in 26%, 25% and 13% of frames. In a trial on a
seed of its own (5000, 20 clips per concept) at tolerance 0.2, gamma 4 brought 10 of 16 concepts to 10% or
below, gamma 1 brought 4 (README)."""
JUDGED_STRENGTHS = (4.0, 8.0, 16.0)
"""gamma values a generation-judged calibration tries, each at every layer. Where gamma 4 left purple and yellow
in the clips at every layer of their first tolerance, gamma 8 and 16 took yellow out (3.1% at embed, 1.6% at
blocks.2); gamma 16 at embed also broke the objects, which the judge's others check rejects (a trial of 24
clips on seed 7000, `analysis/toy_rung_trial.py`, README)."""
JUDGED_MAX_RATE = 0.05
"""The generation judge's bar: half the evaluation's 10%, as it reads only `JUDGE_CLIPS` clips."""
JUDGE_CLIPS = 48
"""Target clips, and as many non-target clips, a generation judge samples per rung. The ladder keeps the first
rung the judge passes, so a judge that reads too few clips passes a rung on a lucky draw: with 24, yellow's
embed rung at gamma 8 passed at 4.2% and then left 10.9-14.2% at fresh seeds. With 48 the judge found 9.6%
there and went on to blocks.0 at gamma 16 (README)."""


def toy_concepts() -> list[str]:
    """Every toy-world concept name, axis by axis."""
    return [value for values in ATTRIBUTES.values() for value in values]


def attribute_of(name: str) -> tuple[str, str]:
    """The (axis, value) a concept name stands for: `red`, or explicitly `colour=red`."""
    if "=" in name:
        axis, value = (part.strip() for part in name.split("=", 1))
        if axis in ATTRIBUTES and value in ATTRIBUTES[axis]:
            return axis, value
    for axis, values in ATTRIBUTES.items():
        if name in values:
            return axis, name
    known = "; ".join(f"{axis}: {', '.join(values)}" for axis, values in ATTRIBUTES.items())
    raise ClearSaeError(
        f"{name!r} is not a toy-world attribute; name one of {known} (or map a library concept to "
        "one with --attribute NAME=AXIS=VALUE)"
    )


def with_value(spec: ClipSpec, axis: str, value: str) -> ClipSpec:
    """`spec` with its main object's attribute `axis` set to `value`."""
    return replace(spec, main=replace(spec.main, **{axis: value}))


def concept_pairs(
    axis: str, value: str, n: int, split: str = "train", seed: int = LEARN_SEED
) -> tuple[list[str], list[str], list[ClipSpec], list[ClipSpec]]:
    """`n` context-matched pairs: target captions, non-target captions, and the clip specs behind them.

    Both captions of a pair are drawn with the same random stream, so they use the same template and the
    same synonyms for everything but the concept.
    """
    rng = np.random.default_rng([seed, sorted(ATTRIBUTES).index(axis), ATTRIBUTES[axis].index(value)])
    others = [v for v in ATTRIBUTES[axis] if v != value]
    targets, nontargets, target_specs, nontarget_specs = [], [], [], []
    for _ in range(n):
        base = random_spec(rng, second_object_rate=0.0)
        target = with_value(base, axis, value)
        nontarget = with_value(base, axis, str(rng.choice(others)))
        words_seed = int(rng.integers(1 << 31))
        targets.append(caption(target, np.random.default_rng(words_seed), split))
        nontargets.append(caption(nontarget, np.random.default_rng(words_seed), split))
        target_specs.append(target)
        nontarget_specs.append(nontarget)
    return targets, nontargets, target_specs, nontarget_specs


def toy_corpus(n: int, seed: int = 7) -> list[str]:
    """`n` training-phrasing captions of random clips (a quarter with two objects), for dictionary training."""
    rng = np.random.default_rng(seed)
    return [caption(random_spec(rng), rng, "train") for _ in range(n)]


def entry_attribute(entry: Any, given: str | None = None) -> str:
    """What a library entry stands for in the toy world: `given` (`AXIS=VALUE`), else the attribute recorded
    when it was learned with one (`toy_attribute`), else its name (`red`)."""
    return given or entry.toy_attribute or entry.name


def is_toy_entry(entry: Any, attributes: Container[str] = ()) -> bool:
    """Whether a library entry is a toy-world concept: named after a toy attribute (`red`), named in
    `attributes` (the names a user mapped to one), or learned with a recorded `toy_attribute`."""
    return entry.name in toy_concepts() or entry.name in attributes or entry.toy_attribute is not None
