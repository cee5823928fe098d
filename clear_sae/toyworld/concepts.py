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
from clear_sae.toyworld.protocol import LEARN_SEED
from clear_sae.toyworld.render import COLOURS, MOTIONS, SHAPES, ClipSpec, random_spec

ATTRIBUTES: dict[str, tuple[str, ...]] = {"colour": tuple(COLOURS), "shape": SHAPES, "motion": MOTIONS}
"""The axes the detector reads, and their values; every value is a concept of the same name."""
LEARN_PAIRS = 200
"""Prompt pairs a toy concept is learned from."""
MAX_NONTARGET_RATE = 0.1
"""`ConceptConfig.max_nontarget_rate` for toy concepts, the first rung of their calibration (then the wider
`CalibrationConfig.wider_nontarget_rates`). Non-targets here differ from targets in one word only, so a latent of
a neighbouring value fires on a good share of them; a narrow first tolerance keeps such shared latents out, and
the ladder widens only where no rung passes (docs/decisions/0004-calibration-judge.md)."""
TOY_BACKGROUND = 0
"""`ConceptConfig.background` for toy concepts: none, the background check is left off. Its settings were chosen
on text concepts measured on fresh prompt templates (docs/heldout.md); toy concepts are calibrated on generated
clips by the judge instead, and the toy world's figures were measured without the check, which would need its own
trial there."""
TOY_STRENGTH = 4.0
"""gamma of a toy concept calibrated without a generator (the probe judges; `JUDGED_STRENGTHS` is the
generation judge's ladder). The probe reads pooled text states and accepts weaker erasures than the clips
need, so the probe-judged ladder starts at this single, stronger gamma."""
PAPER_STRENGTH = 4.0
"""gamma of a toy concept learned the paper's way (`learn.learn_paper_concept`): the one strength for every concept
that Track A (`analysis/toy_track_a.py`) tunes on a development seed."""
PAPER_SUFFIX = "-paper"
"""The name of a toy concept's paper entry is the concept's name and this (`red-paper` beside the calibrated
`red`)."""
JUDGED_STRENGTHS = (4.0, 8.0, 16.0)
"""gamma values a generation-judged calibration tries, each at every layer; the judge's check of the targets'
other attributes rejects a rung strong enough to break the objects (docs/decisions/0004-calibration-judge.md)."""
JUDGED_MAX_RATE = 0.05
"""The generation judge's bar: half the evaluation's 10%, as it reads only `JUDGE_CLIPS` clips."""
JUDGE_CLIPS = 48
"""Target clips, and as many non-target clips, a generation judge samples per rung. The ladder keeps the first
rung the judge passes, so a judge that reads few clips passes rungs on lucky draws; this many keeps that rare
at the judge's bar `JUDGED_MAX_RATE`."""


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


def attribute_map(pairs: list[str]) -> dict[str, str]:
    """`NAME=AXIS=VALUE` mappings (what a concept named otherwise stands for) as {name: "AXIS=VALUE"}."""
    mapping = {}
    for pair in pairs:
        name, sep, attribute = pair.partition("=")
        if not sep or "=" not in attribute:
            raise ClearSaeError(f"--attribute {pair!r} should read NAME=AXIS=VALUE, e.g. crimson=colour=red")
        mapping[name] = attribute
    return mapping


def check_attributes_used(attributes: dict[str, str], names: list[str]) -> None:
    """Refuse a mapping for a concept this run does not take: most likely a typo in its NAME."""
    unused = [name for name in attributes if name not in names]
    if unused:
        raise ClearSaeError(
            f"--attribute {unused[0]}=... names a concept this run does not take ({', '.join(names)}); "
            f"check the spelling, or add --concept {unused[0]}"
        )


def check_toy_names(names: list[str], attributes: dict[str, str]) -> None:
    """Refuse, before anything is loaded, a concept that is no toy attribute and is not mapped to one, a mapping
    for a concept not taken, and a mapping to an attribute that does not exist."""
    unknown = [name for name in names if name not in toy_concepts() and name not in attributes]
    if unknown:
        raise ClearSaeError(
            f"--concept {unknown[0]!r} is not a toy-world concept; name one of "
            f"{', '.join(toy_concepts())}, or map it with --attribute {unknown[0]}=AXIS=VALUE"
        )
    check_attributes_used(attributes, names)
    for attribute in attributes.values():
        attribute_of(attribute)
