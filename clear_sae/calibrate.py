"""Calibration: the weakest clamp that takes a concept out of the text encoder's output.

Clamping a concept's specific latents removes only what the dictionary puts in them. Where a concept also
lives in latents it shares with a close neighbour (blue with purple), or in the reconstruction error, the
final text states still carry it and a generator still draws it. Calibration checks this on the learning
prompts alone, with no generator: a logistic probe learns to tell the concept's targets from their twins
on the text encoder's pooled final states, and each candidate erasure, from the mildest to the strongest,
is applied to held-out targets until the probe no longer finds the concept in more than `max_probe_rate`
of them.

At each tolerance (`max_nontarget_rate`) the ladder tries the layers in the order of their separability score,
best first, and at each layer raises the strength gamma (the same latents, pushed further). Only when no
layer clears the probe does it admit latents that also fire on more of the non-targets (a wider tolerance),
which is what can touch non-target prompts. So the layer kept is the most separable one whose erasure the
probe confirms, at the narrowest tolerance that has one; `search_layers=False` tries only the best-scoring
layer, the paper's choice. The probe is a proxy: it reads mean-pooled states, the generator reads every token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from clear_sae.concepts import (ConceptConfig, LayerProfile, learn_concept, profile_concept_at_rates, select_layer,
                                split_pairs)
from clear_sae.errors import ClearSaeError

if TYPE_CHECKING:
    from clear_sae.backbones import Backbone
    from clear_sae.dictionary import Dictionaries


@dataclass
class CalibrationConfig:
    """The ladder of erasures tried, mildest first, and when to stop."""

    strengths: tuple[float, ...] = (1.0, 2.0, 4.0)
    """gamma values tried at each tolerance."""
    wider_nontarget_rates: tuple[float, ...] = (0.2, 0.4)
    """`max_nontarget_rate` values tried after the concept's own, those above it, in this order."""
    max_probe_rate: float = 0.1
    """Stop at the first erasure after which the probe finds the concept in at most this share of held-out targets."""
    search_layers: bool = True
    """Try every layer with concept latents, best score first, before widening the tolerance (False: the
    best-scoring layer only)."""


@dataclass
class CalibrationStep:
    """One rung of the ladder: where and how it erased, and what the probe still found."""

    max_nontarget_rate: float
    strength: float
    hook_point: str
    n_latents: int
    probe_rate: float
    profiles: list[LayerProfile] = field(default_factory=list, repr=False)
    """The concept's profiles at every layer under this rung's tolerance."""

    def summary(self) -> dict[str, Any]:
        """The JSON form stored in the library's entry (profiles left out)."""
        return {k: v for k, v in asdict(self).items() if k != "profiles"}


def _probe_rate(backbone: "Backbone", dictionaries: "Dictionaries", probe: Any, profile: LayerProfile,
                strength: float, prompts: list[str]) -> float:
    """Share of `prompts` the probe still calls the concept with the profile's latents clamped at `strength`."""
    from clear_sae.erase import LatentClamp
    from clear_sae.evaluate import pooled_final_states

    clamp = LatentClamp(dictionaries.sae(profile.hook_point), profile.latents, float(strength))
    states = pooled_final_states(backbone, prompts, {profile.hook_point: clamp})
    return float((probe(states) > 0.5).float().mean())


def nontarget_rate_ladder(cfg: ConceptConfig, cal: CalibrationConfig) -> list[float]:
    """The concept's own `max_nontarget_rate`, then the calibration's wider ones."""
    return [cfg.max_nontarget_rate] + sorted(r for r in cal.wider_nontarget_rates if r > cfg.max_nontarget_rate)


def calibration_ladder(backbone: "Backbone", dictionaries: "Dictionaries", target: list[str], nontarget: list[str],
                       cfg: ConceptConfig, cal: CalibrationConfig,
                       hook_points: list[str] | None = None) -> list[CalibrationStep]:
    """Climb the ladder; the probe is trained on the fit split of the learning pairs and reads the held-out
    targets. Returns every rung tried."""
    from clear_sae.evaluate import pooled_final_states, train_concept_probe

    fit_t, fit_n, held_t, _ = split_pairs(len(target), len(nontarget), cfg.holdout, cfg.seed)
    if not held_t:
        raise ClearSaeError(f"calibration needs held-out targets: pass at least 4 target prompts "
                            f"(got {len(target)}), or leave out --calibrate")
    fit_target, fit_nontarget = [target[i] for i in fit_t], [nontarget[i] for i in fit_n]
    held_target = [target[i] for i in held_t]
    probe = train_concept_probe(pooled_final_states(backbone, fit_target),
                                pooled_final_states(backbone, fit_nontarget), seed=cfg.seed)
    rates = nontarget_rate_ladder(cfg, cal)
    # All pairs, as `learn_concept` uses them, so the rung chosen is the entry saved. The held-out targets thus
    # helped pick the latents; only the probe has never seen them.
    profiles = profile_concept_at_rates(backbone, dictionaries, target, nontarget, cfg, rates, hook_points)
    steps = []
    for rate in rates:
        for layer in layers_to_try(profiles[rate], cfg.score, cal.search_layers):
            for strength in cal.strengths:
                # Rounded as stored, so that 6 of 60 (0.1 in float32 is a hair above 0.1) meets a 10% bar.
                found = round(_probe_rate(backbone, dictionaries, probe, layer, strength, held_target), 4)
                steps.append(CalibrationStep(rate, float(strength), layer.hook_point, len(layer.latents), found,
                                             profiles[rate]))
                if found <= cal.max_probe_rate:
                    return steps
    return steps


def layers_to_try(profiles: list[LayerProfile], score: str, search_layers: bool) -> list[LayerProfile]:
    """The layers with concept latents, best score first (the earliest on ties, as `select_layer` breaks them);
    only the best one unless `search_layers`."""
    usable = [p for p in profiles if p.latents]
    if not usable:
        return []
    if not search_layers:
        return [select_layer(profiles, score)]
    return sorted(usable, key=lambda p: -(getattr(p, score) if getattr(p, score) is not None else -1.0))


def chosen_step(steps: list[CalibrationStep]) -> CalibrationStep:
    """The last rung if it met the bar, else the rung where the probe found the concept least (mildest on ties)."""
    return min(steps, key=lambda s: (s.probe_rate, steps.index(s)))


def learn_calibrated_concept(backbone: "Backbone", dictionaries: "Dictionaries", name: str, target: list[str],
                             nontarget: list[str], library: Any, cfg: ConceptConfig = ConceptConfig(),
                             cal: CalibrationConfig = CalibrationConfig(),
                             hook_points: list[str] | None = None
                             ) -> tuple[Any, list[LayerProfile], list[CalibrationStep]]:
    """`learn_concept` with the tolerance and strength the calibration ladder chose, learned from all pairs;
    the ladder is recorded in the entry's settings under `calibration`."""
    steps = calibration_ladder(backbone, dictionaries, target, nontarget, cfg, cal, hook_points)
    if not steps:
        raise ClearSaeError("no layer has concept-specific latents at any tolerance of the calibration ladder; add "
                            "more target prompts or use non-targets closer in context")
    step = chosen_step(steps)
    chosen_cfg = replace(cfg, max_nontarget_rate=step.max_nontarget_rate, strength=step.strength)
    entry, profiles = learn_concept(backbone, dictionaries, name, target, nontarget, library, chosen_cfg, hook_points,
                                    step.profiles, layer=step.hook_point)
    entry.settings["calibration"] = {"config": asdict(cal), "steps": [s.summary() for s in steps]}
    return entry, profiles, steps


def recorded_calibration(settings: dict[str, Any]) -> tuple[float, CalibrationConfig] | None:
    """The first tolerance and the ladder a library entry was calibrated with (None if it was not)."""
    recorded = settings.get("calibration")
    if not recorded:
        return None
    config = {"search_layers": False, **recorded["config"]}  # entries calibrated before the layer search
    cal = CalibrationConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    return recorded["steps"][0]["max_nontarget_rate"], cal


def format_ladder(steps: list[CalibrationStep], max_probe_rate: float) -> str:
    """The ladder as a table, the chosen rung marked."""
    chosen = chosen_step(steps)
    lines = [f"{'max non-target rate':>19} {'gamma':>6} {'layer':<26} {'latents':>7} {'probe finds':>11}"]
    for s in steps:
        mark = "  <- chosen" if s is chosen else ""
        lines.append(f"{s.max_nontarget_rate:>19.2f} {s.strength:>6g} {s.hook_point:<26} {s.n_latents:>7} "
                     f"{100 * s.probe_rate:>10.1f}%{mark}")
    if chosen.probe_rate > max_probe_rate:
        lines.append(f"no rung took the probe to {100 * max_probe_rate:.0f}% or below; kept the one it found least")
    return "\n".join(lines)
