"""Generation rate before and after erasure in the toy world, as the paper measures it on real video models.

For one concept (an attribute value such as `red`), clips are generated from three prompt sets, each clip
from its own seeded noise so that a clip does not depend on its batch:

- target captions in the training phrasing and in the held-out paraphrases: the generation rate is the
  share of frames (clips, for a motion) in which the detector finds the concept; on the training-phrasing
  clips, how far the detector still reads the caption's other two attributes (`target_others_*`) shows
  whether an erasure changed the concept or broke the object;
- context-matched non-target captions: preservation is the share of the caption's colour, shape (per frame)
  and motion (per clip) that the detector reads back, averaged over the three axes; pixel drift is the mean
  absolute change of these clips between the two runs with the same noise.
- the target captions with the concept's words taken out (`without_words`), sampled once with the target
  clips' noise: the rate a perfect removal of the words would leave. The generator is trained to draw an
  unnamed attribute with its neutral value (a grey square standing still), which is none of the concepts,
  so this rate shows how well it learned that; no erasure that removes the concept can be expected to go
  below it.

The "after" run attaches the erasure hooks to the pipeline's text encoder, exactly as on a real pipeline.
A prompt whose text states (and the negative prompt's) come out of the erased encoder bit-for-bit unchanged
would give a bit-identical clip, so it is not sampled twice. Intervals are 95% bootstrap intervals over clips.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clear_sae.errors import ClearSaeError
from clear_sae.toyworld.captions import concept_word, without_words
from clear_sae.toyworld.concepts import (CALIBRATION_SEED, EVAL_SEED, LEARN_PAIRS, LEARN_SEED, attribute_of,
                                         concept_pairs, entry_attribute)
from clear_sae.toyworld.detector import COLOUR_NAMES, Detections, detect
from clear_sae.toyworld.render import MOTIONS, SHAPES, ClipSpec

if TYPE_CHECKING:
    import torch

    from clear_sae.calibrate import Verdict

    from clear_sae.library import ConceptLibrary

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
REFERENCE_SETS = ("removed",)
"""Sets sampled only once, without erasure."""
QUALIFYING_RATE = 0.7
"""A concept counts for the targets when its generation rate without erasure is at least this."""
TEXT_ENCODER_ID = "minilm"
"""The backbone id of the toy generator's text encoder (the embedded MiniLM)."""


@dataclass
class EvalConfig:
    """How many clips, and how they are sampled."""

    clips: int = 100
    """Target prompts in the training phrasing (each sampled before and after erasure)."""
    heldout_clips: int = 50
    """Target prompts in the held-out paraphrases."""
    nontarget_clips: int = 50
    """Context-matched non-target prompts, for preservation and pixel drift."""
    removed_clips: int = 50
    """Target prompts sampled again with the concept's words removed, the reference a removal can reach (0 skips;
    at most `clips` are used)."""
    steps: int = 6
    """Euler sampling steps: fidelity at 6 steps is that at 10 and 20 (README), with 6 of 10's transformer passes."""
    guidance: float = 4.0
    """Classifier-free guidance scale."""
    batch_size: int = 25
    """Clips sampled together."""
    threshold: float = 0.5
    """Detector probability above which a concept counts as found."""
    seed: int = EVAL_SEED
    """Seeds the evaluation prompts and the noise."""
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("clips", "heldout_clips", "nontarget_clips", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ClearSaeError(f"EvalConfig.{name} must be at least 1, not {getattr(self, name)}")
        if self.removed_clips < 0:
            raise ClearSaeError(f"EvalConfig.removed_clips must be 0 (skip) or more, not {self.removed_clips}")


@dataclass
class ToyWorld:
    """A toy-world generator pipeline and the detector that reads its clips."""

    pipe: Any
    detector: Any


def load_toy_world(generator: str | Path | None = None, detector: str | Path | None = None) -> ToyWorld:
    """The shipped generator and detector, or those in the given folders."""
    from clear_sae.toyworld.detector import load_detector
    from clear_sae.toyworld.generator import load_generator

    detector_model = load_detector(detector or WEIGHTS_DIR / "detector")  # the cheaper check first
    return ToyWorld(load_generator(generator or WEIGHTS_DIR / "generator"), detector_model)


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


def clip_noise(seeds: list[int], frames: int = 8, size: int = 32) -> "torch.Tensor":
    """One initial noise tensor per seed, `[n, 3, frames, size, size]`, independent of batching."""
    import torch

    return torch.stack([torch.randn((3, frames, size, size), generator=torch.Generator().manual_seed(s))
                        for s in seeds])


def encode(pipe: Any, prompts: list[str], batch_size: int = 64) -> "torch.Tensor":
    """The pipeline's text states for `prompts` (with whatever hooks are attached to its text encoder)."""
    import torch

    with torch.no_grad():
        return torch.cat([pipe.encode_prompt(prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)])


def sample(pipe: Any, embeds: "torch.Tensor", negative: "torch.Tensor", seeds: list[int], cfg: EvalConfig,
           desc: str) -> np.ndarray:
    """Clips for the given text states, each from its own seeded noise; uint8 `[n, frames, size, size, 3]`."""
    from tqdm.auto import tqdm

    out = []
    for i in tqdm(range(0, len(seeds), cfg.batch_size), desc=desc, unit="batch", disable=not cfg.progress,
                  leave=False):
        rows = slice(i, i + cfg.batch_size)
        n = len(seeds[rows])
        out.append(pipe(prompt_embeds=embeds[rows], negative_prompt_embeds=negative.expand(n, -1, -1),
                        latents=clip_noise(seeds[rows]), num_inference_steps=cfg.steps,
                        guidance_scale=cfg.guidance))
    return np.concatenate(out) if out else np.zeros((0, 8, 32, 32, 3), np.uint8)


def sample_before(world: ToyWorld, sets: dict[str, ClipSet], cfg: EvalConfig) -> tuple["torch.Tensor", dict[str, ClipSet]]:
    """Sample every set without erasure; returns the negative prompt's text states and the sets, filled in."""
    negative = encode(world.pipe, [""])
    for name, clip_set in sets.items():
        clip_set.embeds = encode(world.pipe, clip_set.prompts)
        clip_set.clips = sample(world.pipe, clip_set.embeds, negative, clip_set.noise_seeds, cfg, f"{name} before")
        clip_set.sampled = len(clip_set.prompts)
    return negative, sets


def sample_after(world: ToyWorld, clamps: dict[str, Any], before: dict[str, ClipSet], negative_before: "torch.Tensor",
                 cfg: EvalConfig, negative_prompt: str = "") -> dict[str, ClipSet]:
    """Sample every set with the clamps (forward hooks by hook point) attached and `negative_prompt` as the
    negative prompt, re-sampling only prompts whose text states (or the negative prompt's) changed."""
    import torch

    from clear_sae.erase import attach

    after = {}
    with attach(world.pipe, clamps):
        negative = encode(world.pipe, [negative_prompt])
        negative_same = negative.shape == negative_before.shape and torch.equal(negative, negative_before)
        for name, old in before.items():
            if name in REFERENCE_SETS:
                continue
            embeds = encode(world.pipe, old.prompts)
            changed = [i for i in range(len(old.prompts))
                       if not (negative_same and torch.equal(embeds[i], old.embeds[i]))]
            clips = old.clips.copy()
            if changed:
                clips[changed] = sample(world.pipe, embeds[changed], negative, [old.noise_seeds[i] for i in changed],
                                        cfg, f"{name} after")
            after[name] = ClipSet(old.prompts, old.specs, old.noise_seeds, embeds, clips, len(changed))
    return after


class GenerationJudge:
    """A calibration judge (`clear_sae.calibrate`) that looks at clips: it samples `clips` target and
    `nontarget_clips` non-target captions of the concept from `seed` (training phrasing) once without erasure,
    then, for each rung, again with the rung's hooks attached, and reports the share of target frames (clips,
    for a motion) in which the detector still finds the concept, the fall in non-target preservation, and the
    fall in the target clips' other attributes (`other_attributes_kept`).
    With `max_found`, a rung whose targets still show the concept in more than that share cannot pass, so its
    non-target clips are not sampled (preservation not measured)."""

    name = "generation"

    def __init__(self, world: ToyWorld, axis: str, value: str, clips: int = 24, nontarget_clips: int = 24,
                 seed: int = CALIBRATION_SEED, steps: int = 6, guidance: float = 4.0,
                 max_found: float | None = None) -> None:
        if clips < 1 or nontarget_clips < 1:
            raise ClearSaeError(f"a generation judge needs at least one target and one non-target clip, "
                                f"not {clips} and {nontarget_clips}")
        self.world, self.axis, self.value = world, axis, value
        self.cfg = EvalConfig(clips=clips, nontarget_clips=nontarget_clips, removed_clips=0, steps=steps,
                              guidance=guidance, seed=seed, progress=False)
        self.max_found = max_found
        self.before: dict[str, ClipSet] | None = None
        self.negative: "torch.Tensor | None" = None
        self.others_before = 0.0
        """Mean agreement of the target clips' other attributes without erasure."""
        self.kept_before = np.zeros(0)
        """Per non-target clip, its preservation without erasure."""

    def __call__(self, hooks: dict[str, Any]) -> "Verdict":
        from clear_sae.calibrate import Verdict

        if self.before is None:  # sampled and read at the first rung, once
            self.negative, self.before = sample_before(
                self.world, training_phrasing_sets(self.axis, self.value, self.cfg), self.cfg)
            target, nontarget = self.before["target"], self.before["nontarget"]
            self.others_before = _rounded_mean(
                _others_per_clip(detect(self.world.detector, target.clips), target.specs, self.axis))
            self.kept_before, _ = preservation(detect(self.world.detector, nontarget.clips), nontarget.specs)
        assert self.before is not None and self.negative is not None
        target = sample_after(self.world, hooks, {"target": self.before["target"]}, self.negative, self.cfg)["target"]
        det = detect(self.world.detector, target.clips)
        found = float(concept_found(det, self.axis, self.value, self.cfg.threshold).mean())
        others_drop = self.others_before - _rounded_mean(_others_per_clip(det, target.specs, self.axis))
        if self.max_found is not None and round(found, 4) > self.max_found:
            return Verdict(found, others_drop=others_drop)
        nontarget = sample_after(self.world, hooks, {"nontarget": self.before["nontarget"]}, self.negative,
                                 self.cfg)["nontarget"]
        kept_after, _ = preservation(detect(self.world.detector, nontarget.clips), nontarget.specs)
        return Verdict(found, float((self.kept_before - kept_after).mean()), others_drop)

    def settings(self) -> dict[str, Any]:
        """What the entry records of this judge (enough to build it again with `judge_from_settings`)."""
        return {"name": self.name, "clips": self.cfg.clips, "nontarget_clips": self.cfg.nontarget_clips,
                "seed": self.cfg.seed, "steps": self.cfg.steps, "guidance": self.cfg.guidance,
                "max_found": self.max_found}


def judge_from_settings(world: ToyWorld, axis: str, value: str,
                        settings: dict[str, Any] | None) -> GenerationJudge | None:
    """The generation judge an entry's calibration recorded (None if it was judged by the probe)."""
    if not settings or settings.get("name") != GenerationJudge.name:
        return None
    return GenerationJudge(world, axis, value, **{k: v for k, v in settings.items() if k != "name"})


def concept_found(det: Detections, axis: str, value: str, threshold: float) -> np.ndarray:
    """Per clip: the share of frames in which the detector finds the colour or shape (1/0 for a motion)."""
    if axis == "motion":
        return (det.motion[:, MOTIONS.index(value)] > threshold).astype(np.float64)
    probs = det.colour[..., COLOUR_NAMES.index(value)] if axis == "colour" else det.shape[..., SHAPES.index(value)]
    return (probs > threshold).mean(axis=1)


def attribute_agreement(det: Detections, specs: list[ClipSpec]) -> dict[str, np.ndarray]:
    """Per clip and axis: the share of frames whose strongest colour / shape is the caption's, and whether the
    strongest motion is the caption's (single-object captions)."""
    colour = np.array([COLOUR_NAMES.index(s.main.colour) for s in specs])
    shape = np.array([SHAPES.index(s.main.shape) for s in specs])
    motion = np.array([MOTIONS.index(s.main.motion) for s in specs])
    return {"colour": (det.colour.argmax(-1) == colour[:, None]).mean(1),
            "shape": (det.shape.argmax(-1) == shape[:, None]).mean(1),
            "motion": (det.motion.argmax(-1) == motion).astype(np.float64)}


def bootstrap_ci(values: np.ndarray, seed: int = 0, resamples: int = 2000) -> list[float]:
    """95% percentile bootstrap interval of the mean, resampling clips."""
    if len(values) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(1)
    return [round(float(np.quantile(means, 0.025)), 4), round(float(np.quantile(means, 0.975)), 4)]


def _rounded_mean(values: np.ndarray) -> float:
    """The mean as reports store it (4 decimals)."""
    return round(float(values.mean()), 4)


def summary(values: np.ndarray) -> dict[str, Any]:
    """Mean, 95% interval and count."""
    return {"mean": _rounded_mean(values) if len(values) else None, "ci95": bootstrap_ci(values),
            "clips": int(len(values))}


def _others_per_clip(det: Detections, specs: list[ClipSpec], axis: str,
                     per_axis: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Per clip, the agreement on the two axes other than `axis`, averaged."""
    per_axis = attribute_agreement(det, specs) if per_axis is None else per_axis
    return np.mean([v for a, v in per_axis.items() if a != axis], axis=0)


def other_attributes_kept(det: Detections, specs: list[ClipSpec], axis: str) -> dict[str, Any]:
    """On target clips: how far the detector still reads the caption's attributes on the two axes the concept is
    not on (a shape's colour and motion), per clip averaged over those axes; an erasure that breaks the object
    rather than changing the one attribute lowers it."""
    per_axis = attribute_agreement(det, specs)
    return summary(_others_per_clip(det, specs, axis, per_axis)) | {
        "axes": {a: round(float(v.mean()), 4) for a, v in per_axis.items() if a != axis}}


def preservation(det: Detections, specs: list[ClipSpec]) -> tuple[np.ndarray, dict[str, float]]:
    """Per clip the mean agreement over the three axes, and each axis's mean."""
    per_axis = attribute_agreement(det, specs)
    return np.mean(list(per_axis.values()), axis=0), {k: round(float(v.mean()), 4) for k, v in per_axis.items()}


def training_phrasing_sets(axis: str, value: str, cfg: EvalConfig) -> dict[str, ClipSet]:
    """The `cfg.clips` target and `cfg.nontarget_clips` context-matched non-target captions of a concept in the
    training phrasing, from `cfg.seed`, each with its own noise seed."""
    targets, nontargets, target_specs, nontarget_specs = concept_pairs(
        axis, value, max(cfg.clips, cfg.nontarget_clips), "train", cfg.seed)
    base = cfg.seed * 1_000_003
    return {"target": ClipSet(targets[:cfg.clips], target_specs[:cfg.clips], [base + i for i in range(cfg.clips)]),
            "nontarget": ClipSet(nontargets[:cfg.nontarget_clips], nontarget_specs[:cfg.nontarget_clips],
                                 [base + 400_000 + i for i in range(cfg.nontarget_clips)])}


def prompt_sets(axis: str, value: str, cfg: EvalConfig) -> dict[str, ClipSet]:
    """The evaluation sets of a concept, from the evaluation seed (never the learning prompts): target,
    heldout, nontarget, and (unless `removed_clips` is 0) the word-removed reference."""
    sets = training_phrasing_sets(axis, value, cfg)
    heldout, _, heldout_specs, _ = concept_pairs(axis, value, cfg.heldout_clips, "heldout", cfg.seed + 1)
    base = cfg.seed * 1_000_003
    sets["heldout"] = ClipSet(heldout, heldout_specs, [base + 200_000 + i for i in range(cfg.heldout_clips)])
    if cfg.removed_clips:
        # Paired with the first target clips: the same caption bar the words, the same noise.
        target = sets["target"]
        kept = range(min(cfg.removed_clips, cfg.clips))
        sets["removed"] = ClipSet([without_words(target.prompts[i], axis, value) for i in kept],
                                  [target.specs[i] for i in kept], [target.noise_seeds[i] for i in kept])
    return {k: sets[k] for k in ("target", "heldout", "nontarget", "removed") if k in sets}


def compare(world: ToyWorld, axis: str, value: str, before: dict[str, ClipSet], after: dict[str, ClipSet],
            cfg: EvalConfig) -> dict[str, Any]:
    """The figures for one erasure: generation rates, preservation and drift, with intervals."""
    det_before = {k: detect(world.detector, s.clips) for k, s in before.items()}
    det_after = {k: detect(world.detector, s.clips) for k, s in after.items()}
    result: dict[str, Any] = {}
    for name in ("target", "heldout"):
        found_before = concept_found(det_before[name], axis, value, cfg.threshold)
        found_after = concept_found(det_after[name], axis, value, cfg.threshold)
        result[f"rate_{name}_before"], result[f"rate_{name}_after"] = summary(found_before), summary(found_after)
        if name == "target":
            result["rate_target_by_word"] = rates_by_word(before[name].prompts, axis, value, found_before, found_after)
    if "removed" in det_before:
        result["rate_words_removed"] = summary(concept_found(det_before["removed"], axis, value, cfg.threshold))
    for when, det in (("before", det_before["target"]), ("after", det_after["target"])):
        result[f"target_others_{when}"] = other_attributes_kept(det, before["target"].specs, axis)
    specs = before["nontarget"].specs
    kept_before, axes_before = preservation(det_before["nontarget"], specs)
    kept_after, axes_after = preservation(det_after["nontarget"], specs)
    result["preservation_before"] = summary(kept_before) | {"axes": axes_before}
    result["preservation_after"] = summary(kept_after) | {"axes": axes_after}
    result["preservation_drop"] = summary(kept_before - kept_after)
    drift = np.abs(after["nontarget"].clips.astype(np.float64) - before["nontarget"].clips).mean(axis=(1, 2, 3, 4))
    result["pixel_drift_nontarget"] = summary(drift)
    result["nontarget_unchanged"] = int((drift == 0).sum())
    result["clips_resampled"] = {k: s.sampled for k, s in after.items()}
    return result


def rates_by_word(prompts: list[str], axis: str, value: str, found_before: np.ndarray,
                  found_after: np.ndarray) -> dict[str, dict[str, Any]]:
    """The generation rate before and after erasure for each synonym of the concept the prompts use (a latent
    set that misses one phrasing shows here: erasure can take out "yellow" and leave "lemon")."""
    words = np.array([concept_word(p, axis, value) or "" for p in prompts])
    by_word = {}
    for word in sorted(set(words) - {""}):
        rows = words == word
        by_word[word] = {"clips": int(rows.sum()), "before": _rounded_mean(found_before[rows]),
                         "after": _rounded_mean(found_after[rows])}
    return by_word


def qualifies(result: dict[str, Any]) -> dict[str, Any]:
    """Whether the concept counts (rate before at least 70%), whether erasure met the targets, and whether
    removing the concept's words from the prompts would itself reach the 10% target (None if not measured)."""
    rate_before = result["rate_target_before"]["mean"]
    counted = rate_before is not None and rate_before >= QUALIFYING_RATE
    erased = result["rate_target_after"]["mean"] <= 0.10
    kept = result["preservation_drop"]["mean"] <= 0.03
    removed = result.get("rate_words_removed", {}).get("mean")
    return {"counted": counted, "erased": bool(erased), "preserved": bool(kept),
            "met": bool(counted and erased and kept),
            "reachable_by_removal": None if removed is None else bool(removed <= 0.10)}


def clamps_at(library: "ConceptLibrary", name: str, hook_point: str | None = None,
              latents: list[int] | None = None, exact: bool = True) -> dict[str, Any]:
    """The clamps that erase library concept `name`, optionally moved to another layer with other latents."""
    from dataclasses import replace

    from clear_sae.methods import concept_clamps

    entry = library.get(name)
    if hook_point is not None and hook_point != entry.hook_point:
        entry = replace(entry, hook_point=hook_point, latents=list(latents or []))
    return concept_clamps(library, entry, exact)


def sweep_latents(library: "ConceptLibrary", name: str, axis: str, value: str) -> dict[str, list[int]]:
    """The concept's latents at every layer of its dictionaries, found from the toy world's learning prompts."""
    from clear_sae.backbones import load_backbone
    from clear_sae.methods import latents_by_layer

    entry = library.get(name)
    target, nontarget, _, _ = concept_pairs(axis, value, LEARN_PAIRS, "train", LEARN_SEED)
    layers = latents_by_layer(load_backbone(entry.model_source), library, name, target, nontarget)
    return {hook: (entry.latents if hook == entry.hook_point else latents) for hook, latents in layers.items()}


STRIP_PAIRS = {"target": 4, "nontarget": 2}
"""Clips per set shown in a concept's image strip, each as a before row and an after row."""


def save_concept_strip(before: dict[str, ClipSet], after: dict[str, ClipSet], path: Path) -> list[str]:
    """A PNG of a few clips before and after erasure (rows alternate) and a GIF of the first target clip
    (before | after) beside it; returns the PNG rows' labels."""
    from clear_sae.toyworld.media import save_gif, save_strip

    clips, labels = [], []
    for name, n in STRIP_PAIRS.items():
        for i in range(min(n, len(before[name].prompts))):
            clips += [before[name].clips[i], after[name].clips[i]]
            labels += [f"{name} {i}: {before[name].prompts[i]} | before", f"{name} {i}: after erasure"]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_strip(clips, path)
    save_gif([before["target"].clips[0], after["target"].clips[0]], path.with_suffix(".gif"))
    return labels


def evaluate_concept(world: ToyWorld, library: "ConceptLibrary", name: str, attribute: str | None = None,
                     cfg: EvalConfig = EvalConfig(), sweep: bool = False, exact: bool = True,
                     strip: Path | None = None) -> dict[str, Any]:
    """Erase library concept `name` in the toy world and measure it; `attribute` (default: the name) says
    which colour, shape or motion it is. With `sweep`, also erase it at every layer in turn; with `strip`,
    save a PNG of a few clips before and after there."""
    entry = library.get(name)
    axis, value = attribute_of(entry_attribute(entry, attribute))
    started = time.perf_counter()
    negative, before = sample_before(world, prompt_sets(axis, value, cfg), cfg)
    after = sample_after(world, clamps_at(library, name, exact=exact), before, negative, cfg)
    result = {"concept": name, "axis": axis, "value": value, "layer": entry.hook_point,
              "latents": len(entry.latents)} | compare(world, axis, value, before, after, cfg)
    result["qualification"] = qualifies(result)
    if strip is not None:  # paths relative to the report's folder, which holds the strips' folder
        result["strip_rows"] = save_concept_strip(before, after, strip)
        result["strip"] = f"{strip.parent.name}/{strip.name}"
        result["gif"] = f"{strip.parent.name}/{strip.with_suffix('.gif').name}"
    result["seconds"] = round(time.perf_counter() - started, 1)
    if sweep:
        per_layer = {}
        for hook, latents in sweep_latents(library, name, axis, value).items():
            if not latents:
                per_layer[hook] = {"latents": 0, "note": "no concept-specific latents at this layer"}
                continue
            moved = sample_after(world, clamps_at(library, name, hook, latents, exact), before, negative, cfg)
            per_layer[hook] = {"latents": len(latents), "selected": hook == entry.hook_point} | compare(
                world, axis, value, before, moved, cfg)
        result["sweep"] = per_layer
    return result


def evaluate(world: ToyWorld, library: "ConceptLibrary", names: list[str], attributes: dict[str, str] | None = None,
             cfg: EvalConfig = EvalConfig(), sweep: bool = False, exact: bool = True,
             strips: Path | None = None) -> dict[str, Any]:
    """Evaluate each named concept on its own (one erasure at a time); the JSON `clear-sae evaluate` writes.
    With `strips`, each concept's before/after image strip is saved in that folder (`strips/NAME.png`)."""
    attributes = attributes or {}
    for name in names:  # fail before any sampling on a name the library or the toy world does not know
        entry = library.get(name)
        attribute_of(entry_attribute(entry, attributes.get(name)))
        if entry.backbone_id != TEXT_ENCODER_ID:
            raise ClearSaeError(f"concept {name!r} was learned on {entry.backbone_id!r}, but the toy world's text "
                                f"encoder is {TEXT_ENCODER_ID!r}; learn it with `clear-sae concept` on MiniLM's "
                                "dictionaries")
    results = {}
    for i, name in enumerate(names, 1):
        if cfg.progress:
            print(f"[{i}/{len(names)}] {name}", flush=True)
        safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "concept"  # never outside the folder
        strip = None if strips is None else Path(strips) / f"{safe_name}.png"
        results[name] = evaluate_concept(world, library, name, attributes.get(name), cfg, sweep, exact, strip)
    met = [n for n, r in results.items() if r["qualification"]["met"]]
    counted = [n for n, r in results.items() if r["qualification"]["counted"]]
    return {"format": "clear_sae.toy_evaluation", "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
            "exact": exact, "library": str(library.path), "concepts": results,
            "totals": {"evaluated": len(results), "counted": counted, "met": met,
                       "axes_met": sorted({results[n]["axis"] for n in met})}}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:5.1f}"


def format_results(report: dict[str, Any]) -> str:
    """The printed table: one row per concept (and per layer of a sweep)."""
    header = (f"{'concept':<10} {'axis':<7} {'layer':<22} {'rate before':>11} {'after':>6} {'no words':>8} "
              f"{'held-out':>8} {'after':>6} {'others':>6} {'after':>6} {'preserv.':>8} {'after':>6} {'drift':>6} "
              f"{'clips':>5} {'s':>5}  verdict")
    lines = [header]

    def row(concept: str, axis: str, layer: str, r: dict[str, Any], verdict: str, seconds: str) -> str:
        return (f"{concept:<10} {axis:<7} {layer:<22} {_pct(r['rate_target_before']['mean']):>11} "
                f"{_pct(r['rate_target_after']['mean']):>6} "
                f"{_pct(r.get('rate_words_removed', {}).get('mean')):>8} {_pct(r['rate_heldout_before']['mean']):>8} "
                f"{_pct(r['rate_heldout_after']['mean']):>6} "
                f"{_pct(r.get('target_others_before', {}).get('mean')):>6} "
                f"{_pct(r.get('target_others_after', {}).get('mean')):>6} {_pct(r['preservation_before']['mean']):>8} "
                f"{_pct(r['preservation_after']['mean']):>6} {r['pixel_drift_nontarget']['mean']:>6.2f} "
                f"{r['rate_target_before']['clips']:>5} {seconds:>5}  {verdict}")

    for name, r in report["concepts"].items():
        q = r["qualification"]
        verdict = ("met" if q["met"] else "not met: " + ", ".join(
            w for w, bad in (("rate before < 70%", not q["counted"]), ("rate after > 10%", not q["erased"]),
                             ("preservation fell > 3 pt", not q["preserved"])) if bad))
        if not q["erased"] and q.get("reachable_by_removal") is False:
            verdict += " (even without its words: above 10%)"
        lines.append(row(name, r["axis"], r["layer"], r, verdict, f"{r['seconds']:.0f}"))
        if not q["erased"] and r.get("rate_target_by_word"):
            lines.append(f"{'':<10} rate after by word: " + ", ".join(
                f"{word!r} {_pct(w['after']).strip()}% ({w['clips']} clips)"
                for word, w in sorted(r["rate_target_by_word"].items(), key=lambda kv: -kv[1]["after"])))
        for hook, s in r.get("sweep", {}).items():
            if "rate_target_after" not in s:
                lines.append(f"{'':<10} {'':<7} {hook:<22} {s['note']}")
                continue
            lines.append(row("", "", hook, s, "<- selected by CLEAR" if s["selected"] else "", ""))
    totals = report["totals"]
    lines.append(f"{len(totals['met'])} of {len(totals['counted'])} counted concepts (rate before >= 70%) met the "
                 f"targets (rate after <= 10%, preservation drop <= 3 pt); axes: {', '.join(totals['axes_met']) or '-'}")
    lines.append("'no words': the rate from the same target prompts and noise with the concept's words taken out, "
                 "what the generator draws for an unnamed attribute, which a removal cannot be expected to beat")
    lines.append("'others': on the target clips, the detector's agreement with the caption on the two other axes "
                 "(a colour's shape and motion): an erasure that breaks the object, not just the concept, lowers it")
    return "\n".join(lines)

