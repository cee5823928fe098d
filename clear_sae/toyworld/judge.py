"""The toy world's calibration judge: it generates clips with a rung's erasure attached and counts what the detector
still finds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from clear_sae.calibration.judge import Verdict
from clear_sae.errors import ClearSaeError
from clear_sae.toyworld.detector import detect
from clear_sae.toyworld.metrics import concept_found, others_per_clip, preservation, rounded_mean
from clear_sae.toyworld.protocol import CALIBRATION_SEED, weights_record
from clear_sae.toyworld.sampling import (
    ClipSet,
    EvalConfig,
    Intervention,
    ToyWorld,
    sample_after,
    sample_before,
    training_phrasing_sets,
)

if TYPE_CHECKING:
    import torch


class GenerationJudge:
    """A calibration judge (`clear_sae.calibrate`) that looks at clips: it samples `clips` target and
    `nontarget_clips` non-target captions of the concept from `seed` (training phrasing) once without erasure,
    then, for each rung, again with the rung's hooks attached, and reports the share of target frames (clips,
    for a motion) in which the detector still finds the concept, the fall in non-target preservation, and the
    fall in the target clips' other attributes (`other_attributes_kept`).
    With `max_found`, a rung whose targets still show the concept in more than that share cannot pass, so its
    non-target clips are not sampled (preservation not measured)."""

    name = "generation"
    stops_early = True
    """It takes `give_up_above` (`clear_sae.calibration.judge.Judge`)."""

    def __init__(
        self,
        world: ToyWorld,
        axis: str,
        value: str,
        clips: int = 24,
        nontarget_clips: int = 24,
        seed: int = CALIBRATION_SEED,
        steps: int = 6,
        guidance: float = 4.0,
        max_found: float | None = None,
    ) -> None:
        if clips < 1 or nontarget_clips < 1:
            raise ClearSaeError(
                f"a generation judge needs at least one target and one non-target clip, "
                f"not {clips} and {nontarget_clips}"
            )
        self.world, self.axis, self.value = world, axis, value
        self.cfg = EvalConfig(
            clips=clips,
            nontarget_clips=nontarget_clips,
            removed_clips=0,
            steps=steps,
            guidance=guidance,
            seed=seed,
            progress=False,
        )
        self.max_found = max_found
        self.before: dict[str, ClipSet] | None = None
        self.negative: "torch.Tensor | None" = None
        self.others_before = 0.0
        """Mean agreement of the target clips' other attributes without erasure."""
        self.kept_before = np.zeros(0)
        """Per non-target clip, its preservation without erasure."""

    def __call__(self, hooks: "dict[str, Any] | Intervention", give_up_above: float | None = None) -> "Verdict":
        """Judge one rung: its forward hooks by hook point, or a whole `Intervention` (a negative prompt, a
        guidance scale, an embedding filter), for methods other than a clamp. With `give_up_above`, sampling stops
        after the batch that makes the concept certainly found in more than that share of the target frames: the
        verdict is then incomplete, its `found` a lower bound (clips not sampled yet counted as clear)."""

        if self.before is None:  # sampled and read at the first rung, once
            self.negative, self.before = sample_before(
                self.world, training_phrasing_sets(self.axis, self.value, self.cfg), self.cfg
            )
            target, nontarget = self.before["target"], self.before["nontarget"]
            self.others_before = rounded_mean(
                others_per_clip(detect(self.world.detector, target.sampled_clips()), target.specs, self.axis)
            )
            self.kept_before, _ = preservation(detect(self.world.detector, nontarget.sampled_clips()), nontarget.specs)
        assert self.before is not None and self.negative is not None
        n, lower_bound = len(self.before["target"].prompts), 0.0

        def hopeless(_: str, clips: np.ndarray, done: np.ndarray) -> bool:
            nonlocal lower_bound
            assert give_up_above is not None
            found = concept_found(detect(self.world.detector, clips[done]), self.axis, self.value, self.cfg.threshold)
            lower_bound = round(float(found.sum()) / n, 4)
            return lower_bound > give_up_above

        stop = None if give_up_above is None else hopeless
        target = sample_after(self.world, hooks, {"target": self.before["target"]}, self.negative, self.cfg, stop=stop)[
            "target"
        ]
        if not target.complete:
            return Verdict(lower_bound, complete=False)
        det = detect(self.world.detector, target.sampled_clips())
        found = float(concept_found(det, self.axis, self.value, self.cfg.threshold).mean())
        others_drop = self.others_before - rounded_mean(others_per_clip(det, target.specs, self.axis))
        if self.max_found is not None and round(found, 4) > self.max_found:
            return Verdict(found, others_drop=others_drop)
        nontarget = sample_after(self.world, hooks, {"nontarget": self.before["nontarget"]}, self.negative, self.cfg)[
            "nontarget"
        ]
        kept_after, _ = preservation(detect(self.world.detector, nontarget.sampled_clips()), nontarget.specs)
        return Verdict(found, float((self.kept_before - kept_after).mean()), others_drop)

    def settings(self) -> dict[str, Any]:
        """What the entry records of this judge: enough to build it again with `judge_from_settings`, and the digests of
        the weights it generated and read with (`protocol.weights_record`)."""
        return {
            "name": self.name,
            "clips": self.cfg.clips,
            "nontarget_clips": self.cfg.nontarget_clips,
            "seed": self.cfg.seed,
            "steps": self.cfg.steps,
            "guidance": self.cfg.guidance,
            "max_found": self.max_found,
            "weights": weights_record(*self.world.folders) if self.world.folders else None,
        }


def judge_from_settings(
    world: ToyWorld, axis: str, value: str, settings: dict[str, Any] | None
) -> GenerationJudge | None:
    """The generation judge an entry's calibration recorded (None if it was judged by the probe)."""
    if not settings or settings.get("name") != GenerationJudge.name:
        return None
    return GenerationJudge(world, axis, value, **{k: v for k, v in settings.items() if k not in ("name", "weights")})
