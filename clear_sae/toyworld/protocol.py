"""The toy world's sealed protocol: which seeds each kind of run may read, and a digest that names the protocol.

A figure is honest only if nothing that shaped it read the clips it is measured on. The toy world's prompts and
noise are drawn from seeds, so the protocol is a partition of the seeds:

- **learning** (`LEARN_SEED`): the prompt pairs a toy concept is learned from;
- **calibration** (`CALIBRATION_SEED`): the prompts and noise a judged calibration generates from;
- **development** (`DEVELOPMENT_SEEDS`, `EVAL_SEED` the default): every evaluation made while the method, its
  settings or a page is being worked on; any seed outside the other sets counts as development too;
- **test** (`TEST_SEEDS`): read once, by a final run (`--final`) after every choice is fixed; any other run that
  asks for one is refused.

The caption split is part of the protocol: training captions use every template and synonym but the last ones of
each list, which are held out, and a reserved slice of synonyms and templates is set aside for the test (only a
final run reads it, `EvalConfig.reserved_clips`): none of its concept words occurs in the dictionaries' corpus, the
learning prompts or calibration (`captions.py`). A final run writes `protocol_record(...)` into its JSON: the split
it read and the digest of this declaration, so two final runs can be told to share a protocol or not.

What this module does not do: it cannot tell a second final run from the first (reading the test once is the
user's rule, which every final report's record makes visible), the digest covers the seeds and the caption split
only (not the generator's or the detector's weights, nor the judges' thresholds), and the seeds are checked by
the command line and the analysis scripts (`check_evaluation_seed`), not by `evaluation.evaluate` itself. The
weights a run sampled and judged with are named in its record beside the digest (`weights_record`), so a page
can tell a figure measured on other weights than those shipped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from clear_sae.errors import ClearSaeError
from clear_sae.toyworld import captions

LEARN_SEED = 0
"""Seed of the prompts a concept is learned from (the library's)."""
CALIBRATION_SEED = 600
"""Seed of the prompts and noise a `GenerationJudge` generates from while a toy concept is calibrated."""
DEVELOPMENT_SEEDS = range(1_000, 1_100)
"""Seeds of the evaluations made while developing; the shipped comparison and the demo read `EVAL_SEED`."""
EVAL_SEED = DEVELOPMENT_SEEDS[0]
"""The default evaluation seed: a development seed."""
TEST_SEEDS = range(90_000, 90_100)
"""Seeds only a final run reads (`--final`)."""
VERSION = 1
"""Raised whenever the declaration changes in a way the digest does not see."""


def seed_split(seed: int) -> str:
    """Which part of the protocol `seed` belongs to: learning, calibration, test or development."""
    if seed == LEARN_SEED:
        return "learning"
    if seed == CALIBRATION_SEED:
        return "calibration"
    return "test" if seed in TEST_SEEDS else "development"


def check_evaluation_seed(seed: int, final: bool = False, reserved_clips: int = 0) -> None:
    """Refuse an evaluation seed that would read prompts a toy concept was learned or calibrated on, a test seed
    outside a final run, a final run on anything but a test seed, and reserved-slice clips outside a final run."""
    if reserved_clips > 0 and not final:
        raise ClearSaeError(
            f"--reserved-clips {reserved_clips} would read the reserved paraphrases, which only the final run of the "
            "sealed protocol reads; leave it at 0 while developing, or pass --final with a test seed"
        )
    if seed < 0:
        raise ClearSaeError(f"--seed {seed} is negative; pass a seed of 0 or more (the default is {EVAL_SEED})")
    split = seed_split(seed)
    if split == "learning":
        raise ClearSaeError(
            f"--seed {seed} would evaluate on the very prompts toy concepts are learned from; pick another "
            f"seed (the default is {EVAL_SEED})"
        )
    if split == "calibration":
        raise ClearSaeError(
            f"--seed {seed} would evaluate on the very prompts and noise the toy concepts' calibration judged its "
            f"rungs on; pick another seed (the default is {EVAL_SEED})"
        )
    if split == "test" and not final:
        raise ClearSaeError(
            f"--seed {seed} is a test seed of the sealed protocol ({_span(TEST_SEEDS)}), read only by the final run; "
            f"develop on {_span(DEVELOPMENT_SEEDS)}, or pass --final once every choice is fixed"
        )
    if final and split != "test":
        raise ClearSaeError(
            f"--final reads the sealed test seeds only; pass --seed from {_span(TEST_SEEDS)} (got {seed})"
        )


def _span(seeds: range) -> str:
    return f"{seeds.start}..{seeds.stop - 1}"


def declaration() -> dict[str, Any]:
    """Everything the protocol fixes: the seed sets and the caption split (templates and synonyms held out, and the
    reserved slice)."""
    tables = {
        "colour": captions.COLOUR_WORDS,
        "shape": captions.SHAPE_WORDS,
        "motion": captions.MOTION_WORDS,
        "background": captions.BACKGROUND_WORDS,
    }
    return {
        "version": VERSION,
        "learn_seed": LEARN_SEED,
        "calibration_seed": CALIBRATION_SEED,
        "development_seeds": [DEVELOPMENT_SEEDS.start, DEVELOPMENT_SEEDS.stop],
        "test_seeds": [TEST_SEEDS.start, TEST_SEEDS.stop],
        "templates": {"one_object": captions.ONE_OBJECT_TEMPLATES, "two_object": captions.TWO_OBJECT_TEMPLATES},
        "heldout_templates": captions.HELDOUT_TEMPLATES,
        "synonyms": tables,
        "reserved": {
            "synonyms": captions.RESERVED_WORDS,
            "one_object_templates": captions.RESERVED_ONE_OBJECT_TEMPLATES,
            "two_object_templates": captions.RESERVED_TWO_OBJECT_TEMPLATES,
        },
    }


def protocol_digest() -> str:
    """A short hash of `declaration()`: equal for two runs under the same protocol."""
    text = json.dumps(declaration(), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def protocol_record(seed: int, final: bool, world: Any = None) -> dict[str, Any]:
    """What a report states of the protocol it ran under: the seed, its split, whether it is the final run, the
    protocol's digest, and (given the `ToyWorld` it ran on) the digests of the generator's and detector's weights."""
    record: dict[str, Any] = {"seed": seed, "split": seed_split(seed), "final": final, "digest": protocol_digest()}
    if world is not None and world.folders is not None:
        record["weights"] = weights_record(*world.folders)
    return record


WEIGHT_FILES = ("*.safetensors", "config.json", "detector.json")
"""What `weights_digest` reads: the tensors and the configs that build the models around them (not the generator's
recipe or any measurement written beside the weights)."""


def weights_digest(folder: str | Path) -> str:
    """A short hash of the weights and model configs under `folder` (`WEIGHT_FILES`, names and contents): equal for
    the same models."""
    digest = hashlib.sha256()
    folder = Path(folder)
    for path in sorted({p for pattern in WEIGHT_FILES for p in folder.rglob(pattern)}):
        digest.update(path.relative_to(folder).as_posix().encode("utf-8"))
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def weights_record(generator: str | Path, detector: str | Path) -> dict[str, str]:
    """The digests of a toy world's generator and detector weights (`weights_digest`)."""
    return {"generator": weights_digest(generator), "detector": weights_digest(detector)}
