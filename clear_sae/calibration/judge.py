"""What a calibration judge is: it reads a rung's erasure and says what is left of the concept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from clear_sae.calibration.probe import train_concept_probe
from clear_sae.measure import pooled_final_states

if TYPE_CHECKING:
    import torch

    from clear_sae.backbones import Backbone


@dataclass
class Verdict:
    """What a judge found after one rung's erasure."""

    found: float
    """Share of the judge's targets in which the concept is still found."""
    preservation_drop: float | None = None
    """How far the erasure lowered non-target agreement (None: not measured)."""
    others_drop: float | None = None
    """How far it lowered the target clips' other attributes (None: not measured)."""
    complete: bool = True
    """False where the judge stopped once the concept was surely found in more than it was asked to look for
    (`give_up_above`): `found` is then a lower bound and nothing else is measured."""


Judge = Callable[..., Verdict]
"""A rung's judge: given the rung's forward hooks by hook point, say what is left of the concept. It has a
`name` (recorded as `CalibrationConfig.judge`) and a `settings()` dict recorded in the entry. A judge whose
`stops_early` is True also takes `give_up_above`: it may stop, with an incomplete verdict, once the concept is
surely found in more than that share of its targets."""


class ProbeJudge:
    """The default judge: a logistic probe trained on the fit split of the learning pairs reads the held-out
    targets' pooled final states with the rung's hooks attached."""

    name = "probe"

    def __init__(
        self,
        backbone: "Backbone",
        fit_target: list[str],
        fit_nontarget: list[str],
        held_target: list[str],
        seed: int = 0,
        final_hook: str | None = None,
        fit_states: "tuple[torch.Tensor, torch.Tensor] | None" = None,
    ) -> None:
        """`final_hook`: the state the probe reads (default: the backbone's final hook point; on a pipeline with
        several text encoders, the last of the encoder being calibrated). `fit_states`: the fit targets' and
        non-targets' pooled states there, where learning has computed them already."""
        self.backbone, self.held_target = backbone, held_target
        self.final_hook = final_hook or backbone.final_hook_point
        if fit_states is None:
            fit_states = (
                pooled_final_states(backbone, fit_target, final_hook=self.final_hook),
                pooled_final_states(backbone, fit_nontarget, final_hook=self.final_hook),
            )
        self.probe = train_concept_probe(*fit_states, seed=seed)

    def __call__(self, hooks: dict[str, Any]) -> Verdict:

        states = pooled_final_states(self.backbone, self.held_target, hooks, final_hook=self.final_hook)
        return Verdict(float((self.probe(states) > 0.5).float().mean()))

    def settings(self) -> dict[str, Any]:
        """What the entry records of this judge."""
        return {"name": self.name, "held_out_targets": len(self.held_target), "reads": self.final_hook}
