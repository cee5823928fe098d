"""Sampling clips in the toy world: the evaluation config, the prompt sets and their noise, and sampling
before and after erasure (a prompt whose text states come out of the erased encoder unchanged is not sampled twice)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from clear_sae.config import AT_LEAST_ZERO, COUNT, MAX_CLIPS, MAX_SAMPLING_STEPS, POSITIVE, SHARE, at_most, check_fields
from clear_sae.erase import attach
from clear_sae.toyworld.captions import without_words
from clear_sae.toyworld.concepts import concept_pairs
from clear_sae.toyworld.detector import load_detector
from clear_sae.toyworld.generator import load_generator
from clear_sae.toyworld.protocol import EVAL_SEED
from clear_sae.toyworld.render import ClipSpec

if TYPE_CHECKING:
    import torch


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


REFERENCE_SETS = ("removed",)
"""Sets sampled only once, without erasure."""


TEXT_ENCODER_ID = "minilm"
"""The backbone id of the toy generator's text encoder (the embedded MiniLM)."""


@dataclass
class EvalConfig:
    """How many clips, and how they are sampled."""

    clips: int = field(default=100, metadata=at_most(MAX_CLIPS, POSITIVE))
    """Target prompts in the training phrasing (each sampled before and after erasure)."""
    heldout_clips: int = field(default=50, metadata=at_most(MAX_CLIPS, POSITIVE))
    """Target prompts in the held-out paraphrases."""
    reserved_clips: int = field(default=0, metadata=at_most(MAX_CLIPS, COUNT))
    """Target prompts in the reserved slice's paraphrases (`captions.RESERVED_WORDS`), which only a final run of
    the sealed protocol reads (`protocol.check_evaluation_seed`); 0, the default, samples none."""
    nontarget_clips: int = field(default=50, metadata=at_most(MAX_CLIPS, POSITIVE))
    """Context-matched non-target prompts, for preservation and pixel drift."""
    removed_clips: int = field(default=50, metadata=at_most(MAX_CLIPS, COUNT))
    """Target prompts sampled again with the concept's words removed, the reference a removal can reach (0 skips;
    at most `clips` are used)."""
    steps: int = field(default=6, metadata=at_most(MAX_SAMPLING_STEPS, POSITIVE))
    """Euler sampling steps (`analysis/toy_generator_fidelity.py` measures fidelity per step count)."""
    guidance: float = field(default=4.0, metadata=AT_LEAST_ZERO)
    """Classifier-free guidance scale."""
    batch_size: int = field(default=25, metadata=at_most(MAX_CLIPS, POSITIVE))
    """Clips sampled together."""
    threshold: float = field(default=0.5, metadata=SHARE)
    """Detector probability above which a concept counts as found."""
    seed: int = EVAL_SEED
    """Seeds the evaluation prompts and the noise (`check_evaluation_seed` says which seeds a run may use)."""
    progress: bool = True

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class ToyWorld:
    """A toy-world generator pipeline and the detector that reads its clips."""

    pipe: Any
    detector: Any
    folders: tuple[Path, Path] | None = None
    """The generator's and the detector's folders, when loaded from disk (a report names their weights by them)."""


def load_toy_world(generator: str | Path | None = None, detector: str | Path | None = None) -> ToyWorld:
    """The shipped generator and detector, or those in the given folders."""
    generator_folder = Path(generator or WEIGHTS_DIR / "generator")
    detector_folder = Path(detector or WEIGHTS_DIR / "detector")
    detector_model = load_detector(detector_folder)  # the cheaper check first
    return ToyWorld(load_generator(generator_folder), detector_model, (generator_folder, detector_folder))


@dataclass
class ClipSet:
    """Prompts, what each should show, their text states, and the clips sampled from them."""

    prompts: list[str]
    specs: list[ClipSpec]
    noise_seeds: list[int]
    embeds: "torch.Tensor | None" = None
    clips: np.ndarray | None = None
    sampled: int = 0
    """How many clips were actually sampled (the rest were reused unchanged)."""
    complete: bool = True
    """False where `sample_after` stopped early (its `stop`): clips not re-sampled yet still hold those before."""

    def sampled_clips(self) -> np.ndarray:
        """The clips, `[n, frames, size, size, 3]` uint8; the set must have been sampled."""
        assert self.clips is not None, "this clip set has not been sampled yet"
        return self.clips


EmbedFilter = Callable[["torch.Tensor", int, "torch.Tensor"], tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]]
"""A filter of the prompt embeddings the generator reads: given them (under the intervention's hooks), the number of
sampling steps and the embeddings without the intervention, the embeddings for the early steps, those for the late
steps, and per prompt how many steps are early (SAFREE's shape)."""


@dataclass
class Intervention:
    """Everything an erasure may change when a clip is sampled: forward hooks on the text encoder, the negative
    prompt, the guidance scale, a filter of the prompt embeddings, and the generator's weights."""

    hooks: dict[str, Any] = field(default_factory=dict)
    negative_prompt: str = ""
    guidance: float | None = None
    """The classifier-free guidance scale (None: the evaluation's)."""
    embed_filter: EmbedFilter | None = None
    transformer: Any = None
    """A fine-tuned transformer that replaces the pipeline's while sampling (None: the pipeline's own)."""


def clip_noise(seeds: list[int], frames: int = 8, size: int = 32) -> "torch.Tensor":
    """One initial noise tensor per seed, `[n, 3, frames, size, size]`, independent of batching."""
    import torch

    return torch.stack(
        [torch.randn((3, frames, size, size), generator=torch.Generator().manual_seed(s)) for s in seeds]
    )


def encode(pipe: Any, prompts: list[str], batch_size: int = 64) -> "torch.Tensor":
    """The pipeline's text states for `prompts` (with whatever hooks are attached to its text encoder)."""
    import torch

    with torch.no_grad():
        return torch.cat([pipe.encode_prompt(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)])


def sample(
    pipe: Any,
    embeds: "torch.Tensor",
    negative: "torch.Tensor",
    seeds: list[int],
    cfg: EvalConfig,
    desc: str,
    late: "tuple[torch.Tensor, torch.Tensor] | None" = None,
    stop: Callable[[np.ndarray], bool] | None = None,
) -> np.ndarray:
    """Clips for the given text states, each from its own seeded noise; uint8 `[n, frames, size, size, 3]`.
    `late`: the text states for the late steps and, per prompt, the number of early steps (`EmbedFilter`).
    `stop`: called with the clips sampled so far after each batch but the last; True ends sampling there (fewer
    clips are returned)."""
    from tqdm.auto import tqdm

    out: list[np.ndarray] = []
    for i in tqdm(range(0, len(seeds), cfg.batch_size), desc=desc, unit="batch", disable=not cfg.progress, leave=False):
        if out and stop is not None and stop(np.concatenate(out)):
            break
        rows = slice(i, i + cfg.batch_size)
        n = len(seeds[rows])
        switching = {} if late is None else {"late_prompt_embeds": late[0][rows], "switch_steps": late[1][rows]}
        out.append(
            pipe(
                prompt_embeds=embeds[rows],
                negative_prompt_embeds=negative.expand(n, -1, -1),
                latents=clip_noise(seeds[rows]),
                num_inference_steps=cfg.steps,
                guidance_scale=cfg.guidance,
                **switching,
            )
        )
    return np.concatenate(out) if out else np.zeros((0, 8, 32, 32, 3), np.uint8)


def sample_before(
    world: ToyWorld, sets: dict[str, ClipSet], cfg: EvalConfig
) -> tuple["torch.Tensor", dict[str, ClipSet]]:
    """Sample every set without erasure; returns the negative prompt's text states and the sets, filled in."""
    negative = encode(world.pipe, [""])
    for name, clip_set in sets.items():
        clip_set.embeds = encode(world.pipe, clip_set.prompts)
        clip_set.clips = sample(world.pipe, clip_set.embeds, negative, clip_set.noise_seeds, cfg, f"{name} before")
        clip_set.sampled = len(clip_set.prompts)
    return negative, sets


@contextmanager
def swapped_transformer(pipe: Any, transformer: Any) -> Iterator[None]:
    """While the context is open, `pipe` samples with `transformer` (nothing changes when it is None)."""
    if transformer is None:
        yield
        return
    own = pipe.transformer
    pipe.transformer = transformer
    try:
        yield
    finally:
        pipe.transformer = own


def sample_after(
    world: ToyWorld,
    clamps: "dict[str, Any] | Intervention",
    before: dict[str, ClipSet],
    negative_before: "torch.Tensor",
    cfg: EvalConfig,
    negative_prompt: str = "",
    stop: Callable[[str, np.ndarray, np.ndarray], bool] | None = None,
) -> dict[str, ClipSet]:
    """Sample every set with the clamps (forward hooks by hook point) attached and `negative_prompt` as the
    negative prompt, or under an `Intervention`, re-sampling only prompts whose text states (or the negative
    prompt's) changed; a changed guidance scale or transformer re-samples every prompt. `stop(name, clips, done)`
    is asked between batches, with the set's clips and which of them are final (reused or re-sampled); True leaves
    that set incomplete (`ClipSet.complete`), the batches sampled no differently from a full run."""
    import torch

    how = clamps if isinstance(clamps, Intervention) else Intervention(clamps, negative_prompt)
    guided = cfg if how.guidance is None else replace(cfg, guidance=how.guidance)
    after = {}
    with attach(world.pipe, how.hooks), swapped_transformer(world.pipe, how.transformer):
        negative = encode(world.pipe, [how.negative_prompt])
        same_sampler = guided.guidance == cfg.guidance and how.transformer is None
        negative_same = (
            same_sampler and negative.shape == negative_before.shape and torch.equal(negative, negative_before)
        )
        for name, old in before.items():
            if name in REFERENCE_SETS:
                continue
            embeds, embeds_before = encode(world.pipe, old.prompts), old.embeds
            assert embeds_before is not None, "a set is encoded when it is first sampled"
            late = None
            if how.embed_filter is not None:
                embeds, *late = how.embed_filter(embeds, cfg.steps, embeds_before)
            changed = [
                i
                for i in range(len(old.prompts))
                if not (
                    negative_same
                    and torch.equal(embeds[i], embeds_before[i])
                    and (late is None or torch.equal(late[0][i], embeds_before[i]))
                )
            ]
            clips = old.sampled_clips().copy()
            done = np.ones(len(old.prompts), dtype=bool)
            done[changed] = False

            def stop_here(partial: np.ndarray, name: str = name) -> bool:
                assert stop is not None
                clips[changed[: len(partial)]] = partial
                done[changed[: len(partial)]] = True
                return stop(name, clips, done)

            sampled = 0
            if changed:
                seeds = [old.noise_seeds[i] for i in changed]
                switching = None if late is None else (late[0][changed], late[1][changed])
                new = sample(
                    world.pipe,
                    embeds[changed],
                    negative,
                    seeds,
                    guided,
                    f"{name} after",
                    switching,
                    None if stop is None else stop_here,
                )
                sampled = len(new)
                clips[changed[:sampled]] = new
            after[name] = ClipSet(
                old.prompts, old.specs, old.noise_seeds, embeds, clips, sampled, complete=sampled == len(changed)
            )
    return after


def training_phrasing_sets(axis: str, value: str, cfg: EvalConfig) -> dict[str, ClipSet]:
    """The `cfg.clips` target and `cfg.nontarget_clips` context-matched non-target captions of a concept in the
    training phrasing, from `cfg.seed`, each with its own noise seed."""
    targets, nontargets, target_specs, nontarget_specs = concept_pairs(
        axis, value, max(cfg.clips, cfg.nontarget_clips), "train", cfg.seed
    )
    base = cfg.seed * 1_000_003
    return {
        "target": ClipSet(targets[: cfg.clips], target_specs[: cfg.clips], [base + i for i in range(cfg.clips)]),
        "nontarget": ClipSet(
            nontargets[: cfg.nontarget_clips],
            nontarget_specs[: cfg.nontarget_clips],
            [base + 400_000 + i for i in range(cfg.nontarget_clips)],
        ),
    }


def prompt_sets(axis: str, value: str, cfg: EvalConfig) -> dict[str, ClipSet]:
    """The evaluation sets of a concept, from the evaluation seed (never the learning prompts): target,
    heldout, nontarget, the reserved paraphrases when `reserved_clips` asks for them, and (unless `removed_clips`
    is 0) the word-removed reference."""
    sets = training_phrasing_sets(axis, value, cfg)
    heldout, _, heldout_specs, _ = concept_pairs(axis, value, cfg.heldout_clips, "heldout", cfg.seed + 1)
    base = cfg.seed * 1_000_003
    sets["heldout"] = ClipSet(heldout, heldout_specs, [base + 200_000 + i for i in range(cfg.heldout_clips)])
    if cfg.reserved_clips:
        reserved, _, reserved_specs, _ = concept_pairs(axis, value, cfg.reserved_clips, "reserved", cfg.seed + 2)
        sets["reserved"] = ClipSet(reserved, reserved_specs, [base + 300_000 + i for i in range(cfg.reserved_clips)])
    if cfg.removed_clips:
        # Paired with the first target clips: the same caption bar the words, the same noise.
        target = sets["target"]
        kept = range(min(cfg.removed_clips, cfg.clips))
        sets["removed"] = ClipSet(
            [without_words(target.prompts[i], axis, value) for i in kept],
            [target.specs[i] for i in kept],
            [target.noise_seeds[i] for i in kept],
        )
    return {k: sets[k] for k in ("target", "heldout", "reserved", "nontarget", "removed") if k in sets}
