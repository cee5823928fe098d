"""How faithfully a toy-world generator follows its captions, judged by the shipped detector.

Samples single-object clips from training-phrasing captions (or `--split heldout|reserved`; seeded) and reports
the share of frames whose detected colour and shape match the caption, and of clips whose detected motion matches, with
95% Wilson intervals. With `--neutral-clips N` it also samples N captions that leave one attribute
unnamed (colour, shape and motion in turn) and reports how often the detector finds no class of that
axis, i.e. how faithfully the neutral value (grey, square, still) is drawn, and, for the unnamed shape, which
shape the detector reads instead and under which motion. With `--nouns thing,item,zorp` it samples unnamed-shape
captions that call the object by each of those nouns instead of "shape" (a noun that names no shape is no shape
named, and erasing a shape's words leaves such a noun) and reports which shape is read. Writes JSON next to
printing it.

    python analysis/toy_generator_fidelity.py --generator runs/gen_trial [--step 2000] --clips 96
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def shapes_read_by_noun(sample: Any, detector: Any, nouns: list[str], clips: int, seed: int) -> dict[str, Any]:
    """Per noun, the share of frames read as the square (no shape) and as each shape, for single-object clips whose
    shape is unnamed and whose caption calls the object by that noun; every noun gets the same captions otherwise,
    and the same noise."""
    from clear_sae.toyworld.captions import caption
    from clear_sae.toyworld.detector import detect
    from clear_sae.toyworld.render import NEUTRAL, SHAPES, random_spec

    rng = np.random.default_rng([seed, 2])
    specs = [random_spec(rng, second_object_rate=0.0) for _ in range(clips)]
    unnamed = [replace(s, main=replace(s.main, shape=NEUTRAL["shape"])) for s in specs]
    out = {}
    for noun in nouns:
        texts = [caption(s, np.random.default_rng([seed, 3, i]), "train", noun) for i, s in enumerate(unnamed)]
        probs = detect(detector, sample(texts)).shape
        found = probs > 0.5
        square = probs.max(-1) <= 0.5
        out[noun] = {
            "square_frames": round(float(square.mean()), 4),
            "square_frames_ci95": [round(v, 4) for v in wilson(int(square.sum()), square.size)],
            "read_as": {name: round(float(found[..., i].mean()), 4) for i, name in enumerate(SHAPES)},
        }
        print(
            f"{noun:<10} square {100 * out[noun]['square_frames']:5.1f}%  read as "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in out[noun]["read_as"].items()),
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from clear_sae.toyworld.captions import caption
    from clear_sae.toyworld.detector import detect, load_detector
    from clear_sae.toyworld.generator import load_transformer, make_pipeline
    from clear_sae.toyworld.metrics import attribute_agreement
    from clear_sae.toyworld.render import NEUTRAL, SHAPES, random_spec

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", required=True, help="folder with transformer/ (or step_N/transformer/)")
    parser.add_argument("--step", type=int, default=None, help="use the checkpoint step_N instead of the final weights")
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split",
        choices=("train", "heldout", "reserved"),
        default="train",
        help="the caption slice whose fidelity is measured (reserved: the sealed test's paraphrases)",
    )
    parser.add_argument("--neutral-clips", type=int, default=48, help="clips with one attribute unnamed (0: none)")
    parser.add_argument(
        "--nouns",
        default="",
        help="comma-separated nouns that name no shape (e.g. thing,item,zorp): for each, unnamed-shape "
        "captions calling the object by that noun, and which shape the detector reads",
    )
    parser.add_argument("--noun-clips", type=int, default=96, help="clips per noun (the same captions and noise)")
    parser.add_argument("--out", default=None, help="JSON output (default: beside the weights)")
    args = parser.parse_args(argv)

    folder = Path(args.generator) / (f"step_{args.step}" if args.step else "")
    pipe = make_pipeline(load_transformer(folder))
    detector = load_detector(Path(__file__).resolve().parent.parent / "clear_sae" / "toyworld" / "weights" / "detector")
    rng = np.random.default_rng(args.seed)
    specs = [random_spec(rng, second_object_rate=0.0) for _ in range(args.clips)]
    prompts = [caption(s, rng, args.split) for s in specs]

    def sample(texts: list[str]) -> np.ndarray:
        return np.concatenate(
            [
                pipe(
                    texts[i : i + 16],
                    num_inference_steps=args.steps,
                    guidance_scale=args.guidance,
                    generator=torch.Generator().manual_seed(args.seed + i),
                )
                for i in range(0, len(texts), 16)
            ]
        )

    start = time.perf_counter()
    clips = sample(prompts)
    seconds = time.perf_counter() - start
    agreement = attribute_agreement(detect(detector, clips), specs)  # per clip: share of frames (0/1 for motion)
    frames = clips.shape[1]
    per_clip = {
        "colour_frames": (agreement["colour"], frames),
        "shape_frames": (agreement["shape"], frames),
        "motion_clips": (agreement["motion"], 1),
    }
    result = {
        "weights": str(folder),
        "split": args.split,
        "clips": len(specs),
        "sampling_steps": args.steps,
        "guidance": args.guidance,
        "seconds_per_clip": round(seconds / len(specs), 3),
    }
    for name, (shares, units) in per_clip.items():
        successes, total = int(round(float(shares.sum()) * units)), len(shares) * units
        result[name] = round(successes / total, 4)
        result[name + "_ci95"] = [round(v, 4) for v in wilson(successes, total)]
    if args.neutral_clips:
        axes = [("colour", "shape", "motion")[i % 3] for i in range(args.neutral_clips)]
        fresh = [random_spec(rng, second_object_rate=0.0) for _ in axes]
        unnamed = [replace(s, main=replace(s.main, **{axis: NEUTRAL[axis]})) for s, axis in zip(fresh, axes)]
        det = detect(detector, sample([caption(s, rng, "train") for s in unnamed]))
        for axis in ("colour", "shape", "motion"):
            rows = np.array([a == axis for a in axes])
            probs = getattr(det, axis)[rows]
            none_found = (probs.max(-1) <= 0.5).reshape(len(probs), -1)  # [clips, frames] or [clips, 1]
            successes, total = int(none_found.sum()), none_found.size
            key = f"neutral_{axis}_" + ("clips" if axis == "motion" else "frames")
            result[key] = round(successes / total, 4)
            result[key + "_ci95"] = [round(v, 4) for v in wilson(successes, total)]
            if axis == "shape":  # where an unnamed shape goes wrong: what is read, and under which motion
                found = probs > 0.5
                result["neutral_shape_read_as"] = {
                    name: round(float(found[..., i].mean()), 4) for i, name in enumerate(SHAPES)
                }
                motions = np.array([s.main.motion for s, a in zip(unnamed, axes) if a == axis])
                result["neutral_shape_not_square_by_motion"] = {
                    m: round(1 - float(none_found[motions == m].mean()), 4) for m in sorted(set(motions))
                }
    if args.nouns:
        result["unnamed_shape_by_noun"] = shapes_read_by_noun(
            sample, detector, args.nouns.split(","), args.noun_clips, args.seed
        )
    print(json.dumps(result, indent=2))
    out = Path(args.out) if args.out else folder / "fidelity.json"
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
