"""What the toy world's generation judge says at every rung: a concept's latents at each non-target tolerance,
erased at each strength gamma and each layer, judged on clips.

For each concept the judge (`clear_sae.toyworld.evaluation.GenerationJudge`) samples `--clips` target and
`--nontarget-clips` non-target captions (training phrasing) from `--seed` once without erasure, then once per
rung with it, and reports the share of target frames (clips, for a motion) where the detector still finds the
concept, the fall in non-target attribute agreement, and the fall in the target clips' other attributes.
Pick a seed that neither the learning prompts (0), the calibration's judge (600) nor an evaluation you report
uses; the README's trial used 7000. Writes JSON and prints one line per rung.

    python analysis/toy_rung_trial.py --out rungs.json --concepts yellow,purple [--tolerances 0.1,0.2,0.4]
        [--strengths 4,8,16] [--layers embed,blocks.2] [--seed 7000] [--clips 24] [--nontarget-clips 12]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def floats(text: str) -> list[float]:
    """A comma-separated list of numbers."""
    return [float(part) for part in text.split(",") if part]


def trial(
    concepts: list[str],
    tolerances: list[float],
    strengths: list[float],
    layers: list[str] | None,
    seed: int,
    clips: int,
    nontarget_clips: int,
) -> dict[str, Any]:
    """Judge every rung of every concept; returns {concept: [rung, ...]}."""
    from clear_sae.backbones import load_backbone
    from clear_sae.concepts import ConceptConfig, profile_concept_at_rates
    from clear_sae.dictionary import Dictionaries
    from clear_sae.erase import LatentClamp
    from clear_sae.toyworld.concepts import LEARN_PAIRS, TOY_BACKGROUND, attribute_of, concept_pairs
    from clear_sae.toyworld.judge import GenerationJudge
    from clear_sae.toyworld.sampling import load_toy_world

    repo = Path(__file__).resolve().parent.parent
    backbone, world = load_backbone("minilm"), load_toy_world()
    dictionaries = Dictionaries(repo / "dictionaries" / "minilm")
    results: dict[str, Any] = {}
    for name in concepts:
        axis, value = attribute_of(name)
        target, nontarget, _, _ = concept_pairs(axis, value, LEARN_PAIRS)
        judge = GenerationJudge(world, axis, value, clips, nontarget_clips, seed=seed)
        profiles = profile_concept_at_rates(
            backbone, dictionaries, target, nontarget, ConceptConfig(background=TOY_BACKGROUND), tolerances
        )
        rows = []
        for tolerance, at_tolerance in profiles.items():
            for profile in at_tolerance:
                short = profile.hook_point.removeprefix("text_encoder.")
                if not profile.latents or (layers and short not in layers):
                    continue
                for gamma in strengths:
                    clamp = LatentClamp(dictionaries.sae(profile.hook_point), profile.latents, gamma)
                    verdict = judge({profile.hook_point: clamp})
                    rows.append(
                        {
                            "tolerance": tolerance,
                            "gamma": gamma,
                            "layer": profile.hook_point,
                            "latents": len(profile.latents),
                            "found": round(verdict.found, 4),
                            "preservation_drop": round(verdict.preservation_drop or 0.0, 4),
                            "others_drop": round(verdict.others_drop or 0.0, 4),
                        }
                    )
                    print(
                        f"{name:<8} tol {tolerance:.1f} gamma {gamma:>4g} {short:<9} "
                        f"latents {len(profile.latents):>2}  found {100 * verdict.found:5.1f}%  preservation drop "
                        f"{100 * (verdict.preservation_drop or 0.0):4.1f} pt  others drop "
                        f"{100 * (verdict.others_drop or 0.0):4.1f} pt",
                        flush=True,
                    )
        results[name] = rows
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the trial and write its JSON."""
    from clear_sae.calibration.ladder import CalibrationConfig, nontarget_rate_ladder
    from clear_sae.concepts import ConceptConfig
    from clear_sae.toyworld.concepts import MAX_NONTARGET_RATE, TOY_BACKGROUND

    toy_ladder = nontarget_rate_ladder(
        ConceptConfig(max_nontarget_rate=MAX_NONTARGET_RATE, background=TOY_BACKGROUND), CalibrationConfig()
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--concepts", required=True, help="comma-separated toy concepts")
    parser.add_argument(
        "--tolerances",
        type=floats,
        default=toy_ladder,
        help=f"comma-separated max_nontarget_rate values (default: the toy ladder's, {toy_ladder})",
    )
    parser.add_argument("--strengths", type=floats, default=[4.0, 8.0, 16.0])
    parser.add_argument("--layers", default=None, help="comma-separated short names (embed, blocks.2); default all")
    parser.add_argument("--seed", type=int, default=7000)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--nontarget-clips", type=int, default=12)
    args = parser.parse_args(argv)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    results = trial(
        args.concepts.split(","),
        args.tolerances,
        args.strengths,
        args.layers.split(",") if args.layers else None,
        args.seed,
        args.clips,
        args.nontarget_clips,
    )
    args.out.write_text(json.dumps({"config": config, "concepts": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
