"""Harder prompts for the shipped toy entries: the target beside its nearest neighbour, in both objects of a caption,
on the object named second, and misspelled.

    python analysis/toy_hard_prompts.py --out analysis/toy_hard_prompts.json

The evaluation's prompts name one object in the training phrasing. Four harder sets, per shipped toy concept, on
a development seed of the sealed protocol:

- **beside its neighbour**: two-object captions, the target on one object and the concept's nearest neighbour on
  the same axis on the other ("a red disc rises while an orange bar falls"). The neighbour is the other value
  whose word the text encoder places closest (cosine of MiniLM's mean-pooled states). Erasure should take the
  target out and leave the neighbour: the neighbour's rate before minus after is the collateral damage.
- **in both objects**: two-object captions naming the concept on both objects, which differ in the rest ("a red
  disc rises while a red bar falls"): a composition the learning prompts never show, with the concept's words
  twice. Erasure should take the concept out of both.
- **second in the caption**: two-object captions with the concept on the object named second only, the first
  object carrying another value of the same axis ("a blue bar falls while a red disc rises"): the concept bound to
  an object later in a longer caption than any learning prompt. Erasure should take it out there too.
- **misspelled**: single-object target captions whose synonym of the concept is replaced by the concept's own
  name with two letters of its naming word swapped ("a crimson disc" to "a rde disc", "drifts left" to "moves to
  the lfet"), so that no correctly spelled synonym is left. A misspelling the generator still renders but the
  erasure misses is a way around it.

Both judges read every clip; rates are shares of clips rendering the value (more than half the frames for a
colour or shape), with exact 95% intervals. `docs/build.py` turns the JSON into a section of docs/toyworld.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clear_sae.backbones import load_backbone
from clear_sae.io import atomic_write_text
from clear_sae.library import ConceptLibrary
from clear_sae.measure import pooled_final_states
from clear_sae.toyworld.captions import WORDS_BY_AXIS, caption, own_naming_word, renamed
from clear_sae.toyworld.concepts import ATTRIBUTES, attribute_of, concept_pairs, entry_attribute, toy_concepts
from clear_sae.toyworld.evaluation import clamps_at
from clear_sae.toyworld.metrics import clip_rates_by_judge, read_by_judges
from clear_sae.toyworld.protocol import EVAL_SEED, check_evaluation_seed, protocol_record
from clear_sae.toyworld.render import ClipSpec, random_spec
from clear_sae.toyworld.sampling import ClipSet, EvalConfig, ToyWorld, load_toy_world, sample_after, sample_before

ROOT = Path(__file__).resolve().parent.parent
SEED = EVAL_SEED + 3
"""The development seed read by default (no other published figure reads it)."""
NOISE_OFFSET = 700_000
"""Noise seeds of these sets start here (past the evaluation sets' offsets), per `seed`."""


def nearest_neighbours() -> dict[str, str]:
    """Each toy value's nearest other value on its axis, by the cosine of MiniLM's mean-pooled states of the first
    synonym of each."""
    backbone = load_backbone("minilm")
    neighbours = {}
    for axis, values in ATTRIBUTES.items():
        states = pooled_final_states(backbone, [WORDS_BY_AXIS[axis][v][0] for v in values])
        unit = states / states.norm(dim=-1, keepdim=True)
        similarity = (unit @ unit.T).fill_diagonal_(-2.0)
        for i, value in enumerate(values):
            neighbours[value] = values[int(similarity[i].argmax())]
    return neighbours


def misspelled(word: str) -> str:
    """`word` with two letters swapped: the second and third (the last two in a word of three letters or fewer)."""
    if len(word) < 2:
        return word
    j = 1 if len(word) >= 4 else len(word) - 2
    return word[:j] + word[j + 1] + word[j] + word[j + 2 :]


def misspelling(axis: str, value: str) -> str:
    """The value's own name (its first synonym) with its naming word misspelled: "rde", "moves to the lfet"."""
    return renamed(WORDS_BY_AXIS[axis][value][0], axis, value, misspelled(own_naming_word(axis, value)))


def beside_neighbour(axis: str, value: str, neighbour: str, n: int, seed: int) -> ClipSet:
    """`n` two-object captions: the target value on the first object, the neighbour on the second."""
    rng = np.random.default_rng([seed, 1, list(ATTRIBUTES).index(axis), ATTRIBUTES[axis].index(value)])
    specs, prompts = [], []
    for _ in range(n):
        main, second = random_spec(rng, second_object_rate=0.0).main, random_spec(rng, second_object_rate=0.0).main
        spec = ClipSpec(replace(main, **{axis: value}), str(rng.choice(["plain", "checker", "gradient"])))
        spec = replace(spec, second=replace(second, **{axis: neighbour}))
        specs.append(spec)
        prompts.append(caption(spec, rng, "train"))
    return ClipSet(prompts, specs, noise_seeds(seed, 0, n))


def two_object_set(
    axis: str, value: str, n: int, seed: int, stream: int, first_value: Callable[[np.random.Generator], str]
) -> ClipSet:
    """`n` two-object captions, the first object with the value `first_value` draws on `axis`, the second with
    `value`, the two apart in shape or colour (as `random_spec` keeps them); random stream `stream`, noise seeds
    from `stream * n`."""
    rng = np.random.default_rng([seed, stream, list(ATTRIBUTES).index(axis), ATTRIBUTES[axis].index(value)])
    specs, prompts = [], []
    for _ in range(n):
        first = replace(random_spec(rng, second_object_rate=0.0).main, **{axis: first_value(rng)})
        second = first
        while second.shape == first.shape and second.colour == first.colour:
            second = replace(random_spec(rng, second_object_rate=0.0).main, **{axis: value})
        spec = ClipSpec(first, str(rng.choice(["plain", "checker", "gradient"])), second)
        specs.append(spec)
        prompts.append(caption(spec, rng, "train"))
    return ClipSet(prompts, specs, noise_seeds(seed, stream * n, n))


def in_both_objects(axis: str, value: str, n: int, seed: int) -> ClipSet:
    """`n` two-object captions with the target value on both objects, which differ in shape or colour."""
    return two_object_set(axis, value, n, seed, 2, lambda rng: value)


def second_in_caption(axis: str, value: str, n: int, seed: int) -> ClipSet:
    """`n` two-object captions with the target value on the object named second only; the first object takes
    another value of the axis, and the two differ in shape or colour."""
    others = [v for v in ATTRIBUTES[axis] if v != value]
    return two_object_set(axis, value, n, seed, 3, lambda rng: str(rng.choice(others)))


def misspelled_targets(axis: str, value: str, n: int, seed: int) -> ClipSet:
    """`n` single-object target captions (training phrasing) naming the concept by its misspelled name instead of
    the synonym they used (`misspelling`)."""
    targets, _, specs, _ = concept_pairs(axis, value, n, "train", seed)
    word = misspelled(own_naming_word(axis, value))
    return ClipSet([renamed(p, axis, value, word) for p in targets], specs, noise_seeds(seed, n, n))


def noise_seeds(seed: int, start: int, n: int) -> list[int]:
    """Noise seeds of these sets, apart from every evaluation set's."""
    return [seed * 1_000_003 + NOISE_OFFSET + start + i for i in range(n)]


def concept_row(
    world: ToyWorld, library: ConceptLibrary, name: str, neighbours: dict[str, str], cfg: EvalConfig
) -> dict[str, Any]:
    """One concept's four sets before and after erasure, read by both judges."""
    axis, value = attribute_of(entry_attribute(library.get(name)))
    neighbour = neighbours[value]
    sets = {
        "beside_neighbour": beside_neighbour(axis, value, neighbour, cfg.clips, cfg.seed),
        "in_both_objects": in_both_objects(axis, value, cfg.clips, cfg.seed),
        "second_in_caption": second_in_caption(axis, value, cfg.clips, cfg.seed),
        "misspelled": misspelled_targets(axis, value, cfg.clips, cfg.seed),
    }
    negative, before = sample_before(world, sets, cfg)
    after = sample_after(world, clamps_at(library, name), before, negative, cfg)
    row: dict[str, Any] = {
        "axis": axis,
        "neighbour": neighbour,
        "misspelling": misspelling(axis, value),
    }
    for set_name in sets:
        seen = {
            when: read_by_judges(world, clips[set_name].sampled_clips())
            for when, clips in (("before", before), ("after", after))
        }
        row[set_name] = {
            "examples": before[set_name].prompts[:2],
            "target": {when: clip_rates_by_judge(det, axis, value, cfg.threshold) for when, det in seen.items()},
        }
        if set_name == "beside_neighbour":
            row[set_name]["neighbour"] = {
                when: clip_rates_by_judge(det, axis, neighbour, cfg.threshold) for when, det in seen.items()
            }
    return row


def main(argv: list[str] | None = None) -> None:
    """Sample the sets for every shipped toy concept, before and after erasure, and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON output")
    parser.add_argument("--library", default=str(ROOT / "dictionaries" / "minilm" / "concepts.json"))
    parser.add_argument("--concepts", nargs="+", default=None, help="toy concepts (default: all)")
    parser.add_argument("--clips", type=int, default=30, help="clips per set and concept")
    parser.add_argument("--seed", type=int, default=SEED, help="a development seed of the sealed protocol")
    args = parser.parse_args(argv)
    check_evaluation_seed(args.seed)
    library = ConceptLibrary.load(args.library)
    names = args.concepts or toy_concepts()
    cfg = EvalConfig(clips=args.clips, seed=args.seed)
    started = time.perf_counter()
    world, neighbours = load_toy_world(), nearest_neighbours()
    concepts = {name: concept_row(world, library, name, neighbours, cfg) for name in names}
    report = {
        "format": "clear_sae.toy_hard_prompts",
        "command": ["python", "analysis/toy_hard_prompts.py", *(argv if argv is not None else sys.argv[1:])],
        "config": {"clips": args.clips, "steps": cfg.steps, "guidance": cfg.guidance},
        "protocol": protocol_record(args.seed, final=False, world=world),
        "neighbours": neighbours,
        "concepts": concepts,
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"{len(concepts)} toy concepts read on four harder sets -> {args.out}")


if __name__ == "__main__":
    main()
