"""Learning a toy concept: its latents from the toy world's learning pairs, its layer, tolerance and strength from the
calibration ladder, judged by generated clips or by the text probe."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from clear_sae.backbones import load_backbone
from clear_sae.calibration.ladder import CalibrationConfig, learn_calibrated_concept
from clear_sae.compare.joint import JointConfig, learn_concept_joint
from clear_sae.concepts import ConceptCodes, ConceptConfig, learn_concept
from clear_sae.toyworld.concepts import (
    JUDGE_CLIPS,
    JUDGED_MAX_RATE,
    JUDGED_STRENGTHS,
    LEARN_PAIRS,
    MAX_NONTARGET_RATE,
    TOY_BACKGROUND,
    TOY_STRENGTH,
    attribute_of,
    concept_pairs,
)
from clear_sae.toyworld.judge import GenerationJudge


def learning_prompts(name: str, attribute: str | None = None) -> tuple[list[str], list[str]]:
    """The target and non-target prompts toy concept `name` (standing for `attribute`, default the name) is
    learned from: the attribute's `LEARN_PAIRS` learning pairs."""
    axis, value = attribute_of(attribute or name)
    target, nontarget = concept_pairs(axis, value, LEARN_PAIRS)[:2]
    return target, nontarget


def learn_toy_concept(
    backbone: Any,
    dictionaries: Any,
    name: str,
    seed: int = 0,
    world: Any = None,
    judge_clips: int = JUDGE_CLIPS,
    attribute: str | None = None,
    prompts: tuple[list[str], list[str]] | None = None,
    codes: ConceptCodes | None = None,
) -> Any:
    """Learn toy concept `name`, its layer, tolerance and strength calibrated (`clear_sae.calibration.ladder`);
    returns the entry, for `ConceptLibrary.add`. `attribute` (default: the name, e.g. `red`) is the colour, shape
    or motion it stands for, as `AXIS=VALUE`. Its latents come from `prompts` (target, non-target) when given,
    else from the attribute's `LEARN_PAIRS` learning pairs. With a toy `world` (and `judge_clips` > 0) each rung
    is judged by generating `judge_clips` target and non-target clips of the attribute (`GenerationJudge`) on
    the ladder `JUDGED_STRENGTHS`; otherwise by the text-side probe at `TOY_STRENGTH`. `codes`: those prompts
    already encoded (`encode_concept`)."""

    axis, value = attribute_of(attribute or name)
    target, nontarget = prompts or learning_prompts(name, attribute)
    cal, judge = CalibrationConfig(strengths=(TOY_STRENGTH,)), None
    if world is not None and judge_clips > 0:
        judge = GenerationJudge(world, axis, value, judge_clips, judge_clips, max_found=JUDGED_MAX_RATE)
        cal = CalibrationConfig(strengths=JUDGED_STRENGTHS, max_probe_rate=JUDGED_MAX_RATE, judge=judge.name)
    entry, _, _ = learn_calibrated_concept(
        backbone,
        dictionaries,
        name,
        target,
        nontarget,
        ConceptConfig(seed=seed, max_nontarget_rate=MAX_NONTARGET_RATE, background=TOY_BACKGROUND),
        cal,
        judge=judge,
        codes=codes,
    )
    if attribute:  # so that `clear-sae evaluate` knows what the entry stands for without being told again
        entry.toy_attribute = f"{axis}={value}"
    return entry


def learn_paper_concept(
    backbone: Any,
    dictionaries: Any,
    name: str,
    attribute: str | None = None,
    prompts: tuple[list[str], list[str]] | None = None,
    entry_name: str | None = None,
    strength: float | None = None,
) -> Any:
    """Toy concept `name` learned the paper's way on the reused dictionaries: its learning pairs (or `prompts`), the
    toy tolerance, the layer of highest separability, no calibration and no judge; returns the entry, named
    `entry_name` (default `name`) and with `strength` when given. An `attribute` (`AXIS=VALUE`) is recorded for
    `clear-sae evaluate`, as `learn_toy_concept` does."""
    target, nontarget = prompts or learning_prompts(name, attribute)
    cfg = ConceptConfig(max_nontarget_rate=MAX_NONTARGET_RATE, background=TOY_BACKGROUND)
    if strength is not None:
        cfg = replace(cfg, strength=strength)
    entry, _ = learn_concept(backbone, dictionaries, entry_name or name, target, nontarget, cfg)
    if attribute or entry_name:
        axis, value = attribute_of(attribute or name)
        entry.toy_attribute = f"{axis}={value}"
    return entry


def paper_library(names: list[str], dictionaries: Any, path: Any, backbone: Any = None) -> Any:
    """A library at `path` with each toy concept learned the paper's way (`learn_paper_concept`) on `dictionaries`
    (a `Dictionaries` or its folder), saved."""
    from clear_sae.dictionary import Dictionaries
    from clear_sae.library import ConceptLibrary

    backbone = backbone or load_backbone("minilm")
    dicts = dictionaries if isinstance(dictionaries, Dictionaries) else Dictionaries(dictionaries)
    library = ConceptLibrary(path)
    for name in names:
        library.add(learn_paper_concept(backbone, dicts, name))
    library.save()
    return library


def joint_config(rounds: int | None = None) -> JointConfig:
    """The published variant's training (`compare.joint`) with the toy tolerance; `rounds`, when given, fewer
    rounds than its own, for a quick run."""
    rule = ConceptConfig(max_nontarget_rate=MAX_NONTARGET_RATE, background=TOY_BACKGROUND)
    if rounds is None:
        return JointConfig(concept=rule)
    return JointConfig(concept=rule, rounds=rounds, warmup_rounds=min(JointConfig.warmup_rounds, rounds - 1))


def joint_library(names: list[str], work: Any, cfg: JointConfig, backbone: Any = None) -> Any:
    """Each toy concept learned the published way (its own SAE and layer preferences) from its learning pairs,
    kept in `work/joint_<rounds>_rounds/` so that a rerun with the same training reuses what is there."""
    from clear_sae.library import ConceptLibrary

    folder = Path(work) / f"joint_{cfg.rounds}_rounds"
    folder.mkdir(parents=True, exist_ok=True)
    library = ConceptLibrary.load(folder / "concepts.json", missing_ok=True)
    for name in names:
        if name in library.concepts:
            continue
        backbone = backbone or load_backbone("minilm")
        target, nontarget = learning_prompts(name)
        entry, _ = learn_concept_joint(backbone, name, target, nontarget, folder / name, cfg, progress=False)
        library.add(entry)
        library.save()
    return library
