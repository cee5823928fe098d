"""Calibration: the weakest clamp that takes a concept out of the text encoder's output.

Clamping a concept's specific latents removes only what the dictionary puts in them. Where a concept also
lives in latents it shares with a close neighbour (blue with purple), or in the reconstruction error, the
final text states still carry it and a generator still draws it. Calibration checks this on the learning
prompts alone, with no generator: a logistic probe learns to tell the concept's targets from their twins
on the text encoder's pooled final states, and each candidate erasure, from the mildest to the strongest,
is applied to held-out targets until the probe no longer finds the concept in more than `max_probe_rate`
of them.

At each tolerance (`max_nontarget_rate`) the ladder tries each strength gamma, mildest first, and at each
strength the layers in the order of their separability score, best first. Only when no rung clears the probe
does it push the same latents further (a larger gamma), and only when no strength does, does it admit latents
that also fire on more of the non-targets (a wider tolerance), which is what can touch non-target prompts. So
the layer kept is the most separable one whose erasure the probe confirms, at the mildest strength and the
narrowest tolerance that have one; `search_layers=False` tries only the best-scoring layer, the paper's choice.

Who judges a rung is pluggable. The default judge is the probe, which needs no generator but is a proxy: it reads
mean-pooled states, the generator reads every token, and it passed rungs whose clips still showed the concept.
Where a generator and a detector are at hand (the toy world's `GenerationJudge`), a judge can instead generate a
few clips with the rung's erasure attached and count what the detector still finds, whether non-target clips
kept their attributes (`Verdict.preservation_drop`) and whether the target clips kept theirs on the other axes
(`Verdict.others_drop`); a rung then passes only if every bar is met.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from clear_sae.calibration.judge import Judge, ProbeJudge, Verdict
from clear_sae.concepts import (
    ConceptCodes,
    ConceptConfig,
    LayerProfile,
    concept_codes,
    for_each_encoder,
    learn_concept,
    profile_concept_at_rates,
    score_of,
    select_layer,
    split_pairs,
)
from clear_sae.config import SHARE, check_fields, check_value
from clear_sae.erase import LatentClamp
from clear_sae.errors import ClearSaeError, NoConceptLatentsError
from clear_sae.library import CalibrationRecord, CalibrationRung, ConceptEntry

if TYPE_CHECKING:
    import torch

    from clear_sae.backbones import Backbone
    from clear_sae.dictionary import Dictionaries


@dataclass
class CalibrationConfig:
    """The ladder of erasures tried, mildest first, and when to stop."""

    strengths: tuple[float, ...] = (1.0, 2.0, 4.0)
    """gamma values tried at each tolerance."""
    wider_nontarget_rates: tuple[float, ...] = (0.2, 0.4)
    """`max_nontarget_rate` values tried after the concept's own, those above it, in this order."""
    max_probe_rate: float = field(default=0.1, metadata=SHARE)
    """Stop at the first erasure after which the judge finds the concept in at most this share of its targets
    (the probe: held-out learning targets; a generation judge: frames of generated target clips)."""
    search_layers: bool = True
    """Try every layer with concept latents, best score first, before widening the tolerance (False: the
    best-scoring layer only)."""
    judge: str = "probe"
    """Who judges each rung: `probe` (built from the learning prompts) or the name of the judge passed to the
    ladder (the toy world's `generation`)."""
    max_preservation_drop: float = field(default=0.03, metadata=SHARE)
    """For a judge that measures preservation: the most a rung may lower non-target attribute agreement."""
    max_others_drop: float = field(default=0.10, metadata=SHARE)
    """For a judge that reads the target clips' other attributes: the most a rung may lower them (an erasure
    that breaks the object, not just the concept, fails here)."""

    def passes(self, step: "CalibrationStep") -> bool:
        """Whether a rung met the bars: the concept found rarely enough and, where measured, the rest kept."""
        return step.probe_rate <= self.max_probe_rate and self.preserves(step)

    def preserves(self, step: "CalibrationStep") -> bool:
        """Whether a rung kept non-targets within `max_preservation_drop` and the targets' other attributes
        within `max_others_drop` (each True where the judge did not measure it)."""
        return (step.preservation_drop is None or step.preservation_drop <= self.max_preservation_drop) and (
            step.others_drop is None or step.others_drop <= self.max_others_drop
        )

    def __post_init__(self) -> None:
        check_fields(self)
        for strength in self.strengths:
            try:
                check_value(strength, "strength")
            except ClearSaeError as err:
                raise ClearSaeError(f"CalibrationConfig.strengths {err}") from None


@dataclass
class CalibrationStep(CalibrationRung):
    """One rung of the ladder as it is climbed: the rung the library records, with the concept's profiles at every
    layer under the rung's tolerance."""

    profiles: list[LayerProfile] = field(default_factory=list, repr=False)
    """The concept's profiles at every layer under this rung's tolerance."""

    def summary(self) -> dict[str, Any]:
        """The JSON form stored in the library's entry (profiles left out)."""
        return {k: v for k, v in asdict(self).items() if k != "profiles"}

    def record(self) -> CalibrationRung:
        """The rung as the library's entry records it (profiles left out)."""
        return CalibrationRung(**self.summary())


def nontarget_rate_ladder(cfg: ConceptConfig, cal: CalibrationConfig) -> list[float]:
    """The concept's own `max_nontarget_rate`, then the calibration's wider ones."""
    return [cfg.max_nontarget_rate] + sorted(r for r in cal.wider_nontarget_rates if r > cfg.max_nontarget_rate)


def calibration_ladder(
    backbone: "Backbone",
    dictionaries: "Dictionaries",
    target: list[str],
    nontarget: list[str],
    cfg: ConceptConfig,
    cal: CalibrationConfig,
    hook_points: list[str] | None = None,
    judge: Judge | None = None,
    codes: ConceptCodes | None = None,
) -> list[CalibrationStep]:
    """Climb the ladder until a rung passes `judge` (default: a probe trained on the fit split of the learning
    pairs, reading the held-out targets). Returns every rung tried. `codes`: the prompts already encoded."""

    fit_t, fit_n, held_t, _ = split_pairs(len(target), len(nontarget), cfg.holdout, cfg.seed)
    hook_points = hook_points or dictionaries.hook_points
    codes = concept_codes(backbone, dictionaries, target, nontarget, cfg, hook_points, codes)
    if judge is None:
        if cal.judge != ProbeJudge.name:
            raise ClearSaeError(
                f"this calibration is judged by {cal.judge!r}, which needs its generator: pass "
                "judge= (the toy world's GenerationJudge), or calibrate with the probe"
            )
        if not held_t:
            raise ClearSaeError(
                f"calibration needs held-out targets: pass at least 4 target prompts "
                f"(got {len(target)}), or leave out --calibrate"
            )
        final = encoder_final_hook(backbone, hook_points)
        judge = ProbeJudge(
            backbone,
            [target[i] for i in fit_t],
            [nontarget[i] for i in fit_n],
            [target[i] for i in held_t],
            cfg.seed,
            final,
            fit_states(codes, final, fit_t, fit_n),
        )
    elif getattr(judge, "name", None) != cal.judge:
        raise ClearSaeError(
            f"the judge passed is {getattr(judge, 'name', judge)!r} but the calibration config names "
            f"{cal.judge!r}; set CalibrationConfig(judge=...) to match"
        )
    rates = nontarget_rate_ladder(cfg, cal)
    # All pairs, as `learn_concept` uses them, so the rung chosen is the entry saved. The held-out targets thus
    # helped pick the latents; only the probe has never seen them.
    profiles = profile_concept_at_rates(backbone, dictionaries, target, nontarget, cfg, rates, hook_points, codes)
    steps = []
    for rate in rates:
        for strength in cal.strengths:
            for layer in layers_to_try(profiles[rate], cfg.score, cal.search_layers):
                clamp = LatentClamp(dictionaries.sae(layer.hook_point), layer.latents, float(strength))
                verdict = judge_rung(judge, {layer.hook_point: clamp}, decided_above(steps, cal))
                # Rounded as stored, so that 6 of 60 (0.1 in float32 is a hair above 0.1) meets a 10% bar.
                drop, others = (
                    None if v is None else round(v, 4) for v in (verdict.preservation_drop, verdict.others_drop)
                )
                steps.append(
                    CalibrationStep(
                        rate,
                        float(strength),
                        layer.hook_point,
                        len(layer.latents),
                        round(verdict.found, 4),
                        drop,
                        others,
                        verdict.complete,
                        profiles[rate],
                    )
                )
                if cal.passes(steps[-1]):
                    return steps
    return steps


def decided_above(steps: list[CalibrationStep], cal: CalibrationConfig) -> float | None:
    """The share of targets above which a rung can neither pass nor be chosen (`chosen_step`): above the bar and
    above a rung already judged in full that kept the rest; None while there is no such rung."""
    kept = [s.probe_rate for s in steps if s.complete and cal.preserves(s)]
    return max(cal.max_probe_rate, min(kept)) if kept else None


def judge_rung(judge: Judge, hooks: dict[str, Any], give_up_above: float | None) -> Verdict:
    """A rung's verdict; a judge that `stops_early` may stop once the concept is surely found in more than
    `give_up_above` of its targets (an incomplete verdict, whose rung is then never chosen)."""
    if give_up_above is not None and getattr(judge, "stops_early", False):
        return judge(hooks, give_up_above=give_up_above)
    return judge(hooks)


def fit_states(
    codes: ConceptCodes, hook: str, fit_t: list[int], fit_n: list[int]
) -> "tuple[torch.Tensor, torch.Tensor] | None":
    """The fit targets' and non-targets' pooled states at `hook`, where the concept's codes hold them."""
    target, nontarget = codes.target.get(hook), codes.nontarget.get(hook)
    if target is None or nontarget is None or target.pooled is None or nontarget.pooled is None:
        return None
    return target.pooled[fit_t], nontarget.pooled[fit_n]


def encoder_final_hook(backbone: "Backbone", hook_points: list[str] | None) -> str:
    """The state a probe reads to judge an erasure at `hook_points`: the last hook point of their text encoder
    when they lie in one encoder of several (each encoder of Flux or SD3 is calibrated on its own output), else the
    backbone's final hook point."""
    encoders = {hook.split(".", 1)[0] for hook in hook_points or []}
    if len(encoders) != 1:
        return backbone.final_hook_point
    own = [hook for hook in backbone.hook_points if hook.split(".", 1)[0] in encoders]
    return own[-1] if own else backbone.final_hook_point


def layers_to_try(profiles: list[LayerProfile], score: str, search_layers: bool) -> list[LayerProfile]:
    """The layers with concept latents, best score first (the earliest on ties, as `select_layer` breaks them);
    only the best one unless `search_layers`."""
    usable = [p for p in profiles if p.latents]
    if not usable:
        return []
    if not search_layers:
        return [select_layer(profiles, score)]
    return sorted(usable, key=lambda p: -score_of(p, score))


def chosen_step(steps: list[CalibrationStep], cal: CalibrationConfig = CalibrationConfig()) -> CalibrationStep:
    """The last rung if it met the bars, else, of the rungs that kept the rest (`CalibrationConfig.preserves`;
    all, if none did), the one where the judge found the concept least; on ties the one that harmed least
    (`harm_of`), then the earliest tried. A rung the judge stopped early (`decided_above`) is never the one: its
    lower bound already exceeds a complete rung's rate."""
    return min(steps, key=lambda s: (not cal.preserves(s), s.probe_rate, harm_of(s), steps.index(s)))


def harm_of(step: CalibrationStep) -> float:
    """How far a rung lowered what it should keep: the non-targets' agreement plus the targets' other
    attributes (each 0 where the judge does not measure it)."""
    return (step.preservation_drop or 0.0) + (step.others_drop or 0.0)


def learn_calibrated_concept(
    backbone: "Backbone",
    dictionaries: "Dictionaries",
    name: str,
    target: list[str],
    nontarget: list[str],
    cfg: ConceptConfig = ConceptConfig(),
    cal: CalibrationConfig = CalibrationConfig(),
    hook_points: list[str] | None = None,
    judge: Judge | None = None,
    codes: ConceptCodes | None = None,
) -> tuple[ConceptEntry, list[LayerProfile], list[CalibrationStep]]:
    """`learn_concept` with the tolerance and strength the calibration ladder chose, learned from all pairs;
    the ladder (and the judge's settings, when one is passed) is recorded in the entry's `calibration`.
    `codes`: the prompts already encoded (`encode_concept`)."""
    steps = calibration_ladder(backbone, dictionaries, target, nontarget, cfg, cal, hook_points, judge, codes)
    if not steps:
        raise NoConceptLatentsError(
            "no layer has concept-specific latents at any tolerance of the calibration ladder; add "
            "more target prompts or use non-targets closer in context"
        )
    step = chosen_step(steps, cal)
    chosen_cfg = replace(cfg, max_nontarget_rate=step.max_nontarget_rate, strength=step.strength)
    entry, profiles = learn_concept(
        backbone,
        dictionaries,
        name,
        target,
        nontarget,
        chosen_cfg,
        hook_points,
        step.profiles,
        layer=step.hook_point,
    )
    judged_by = judge.settings() if judge is not None else None  # type: ignore[attr-defined]
    entry.calibration = CalibrationRecord(asdict(cal), [s.record() for s in steps], judged_by)
    return entry, profiles, steps


def learn_calibrated_concept_per_encoder(
    backbone: "Backbone",
    dictionaries: "Dictionaries",
    name: str,
    target: list[str],
    nontarget: list[str],
    cfg: ConceptConfig = ConceptConfig(),
    cal: CalibrationConfig = CalibrationConfig(),
    hook_points: list[str] | None = None,
) -> list[tuple[ConceptEntry, list[LayerProfile], list[CalibrationStep]]]:
    """`learn_calibrated_concept` within each text encoder (as `learn_concept_per_encoder` learns): on Flux or SD3
    each encoder's entry climbs its own ladder, its probe reading that encoder's last hook point."""

    def learn(group: list[str] | None) -> tuple[ConceptEntry, list[LayerProfile], list[CalibrationStep]]:
        return learn_calibrated_concept(backbone, dictionaries, name, target, nontarget, cfg, cal, group)

    return for_each_encoder(name, hook_points or dictionaries.hook_points, learn, hook_points)


def recorded_calibration(recorded: CalibrationRecord | None) -> tuple[float, CalibrationConfig] | None:
    """The first tolerance and the ladder a library entry was calibrated with, from its `calibration` (None if
    it was not calibrated)."""
    if not recorded:
        return None
    config = {"search_layers": False, **recorded.config}  # entries calibrated before the layer search
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    cal = CalibrationConfig(**fields)
    return recorded.steps[0].max_nontarget_rate, cal


def recorded_steps(recorded: CalibrationRecord) -> list[CalibrationStep]:
    """The rungs a library entry's calibration tried, in order (without their profiles)."""
    return [CalibrationStep(**asdict(rung)) for rung in recorded.steps]


def format_ladder(steps: list[CalibrationStep], cal: CalibrationConfig) -> str:
    """The ladder as a table, the chosen rung marked."""
    chosen = chosen_step(steps, cal)
    columns = [
        (name, label)
        for name, label in (("preservation_drop", "non-target drop"), ("others_drop", "others drop"))
        if any(getattr(s, name) is not None for s in steps)
    ]
    lines = [
        f"{'max non-target rate':>19} {'gamma':>6} {'layer':<26} {'latents':>7} {cal.judge + ' finds':>16}"
        + "".join(f" {label:>15}" for _, label in columns)
    ]
    for s in steps:
        mark = "  <- chosen" if s is chosen else ""
        extra = "".join(
            f" {'-':>15}" if getattr(s, name) is None else f" {100 * getattr(s, name):>12.1f} pt" for name, _ in columns
        )
        found = f"{100 * s.probe_rate:.1f}%" if s.complete else f">={100 * s.probe_rate:.1f}%"
        lines.append(
            f"{s.max_nontarget_rate:>19.2f} {s.strength:>6g} {s.hook_point:<26} {s.n_latents:>7} "
            f"{found:>16}{extra}{mark}"
        )
    if not all(s.complete for s in steps):
        lines.append(
            f">=: the {cal.judge} stopped once that rung could neither pass nor beat the best rung judged in full"
        )
    if not cal.passes(chosen):
        lines.append(
            f"no rung met the bars (the {cal.judge} finding the concept in at most "
            f"{100 * cal.max_probe_rate:g}%, the rest kept); kept the one it found least"
        )
    return "\n".join(lines)
