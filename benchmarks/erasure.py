"""Erasure costs: the latent clamp's share of toy-world generation time, and the time to add a new concept.

In one run:

- the shipped toy generator samples the same clips (same prompts, same noise, 20 steps with guidance) with and
  without the clamp of a shipped toy concept attached, alternating the two and which goes first, medians of
  `--repeats`; the clamp's own cost is also timed on the text encoder alone, where it runs;
- a concept the shipped library does not hold is learned on the shipped dictionaries (the in-process
  `learn_concept` call, which encodes its prompts at all 7 layers and scores them), and the whole
  `clear-sae concept` command is timed from process start, model and dictionary loading included.

    python benchmarks/erasure.py [--clips 16] [--repeats 4] [--out benchmarks/erasure.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import ROOT, median_seconds, save, table

CONCEPT = "blue"
NEW_CONCEPT = ("accordion", "an accordion", "a violin")


def generation_overhead(clips: int, repeats: int) -> dict[str, Any]:
    """Generation seconds with and without the clamp attached, and the clamp's cost on text encoding alone."""
    import torch

    from clear_sae.erase import erase_concepts
    from clear_sae.library import ConceptLibrary
    from clear_sae.toyworld.concepts import concept_pairs
    from clear_sae.toyworld.sampling import clip_noise, load_toy_world

    world = load_toy_world()
    library = ConceptLibrary.load(ROOT / "dictionaries/minilm/concepts.json")
    prompts, _, _, _ = concept_pairs("colour", CONCEPT, clips, seed=1234)
    noise = clip_noise(list(range(clips)))
    pipe = world.pipe

    def generate() -> Any:
        return pipe(prompt=prompts, latents=noise.clone(), num_inference_steps=20)

    generate()  # warm-up
    plain, clamped, edited = [], [], 0
    for i in range(repeats):
        for with_clamp in (False, True) if i % 2 == 0 else (True, False):  # alternate which goes first
            if not with_clamp:
                start = time.perf_counter()
                generate()
                plain.append(time.perf_counter() - start)
                continue
            with erase_concepts(pipe.text_encoder, library, [CONCEPT]) as clamps:
                start = time.perf_counter()
                generate()
                clamped.append(time.perf_counter() - start)
                edited = sum(c.tokens_edited for c in clamps.values())
    with torch.no_grad():
        encode_plain = median_seconds(lambda: pipe.encode_prompt(prompts), repeats=10)
        with erase_concepts(pipe.text_encoder, library, [CONCEPT]):
            encode_clamped = median_seconds(lambda: pipe.encode_prompt(prompts), repeats=10)
    plain_s, clamped_s = statistics.median(plain), statistics.median(clamped)
    clamp_cost = max(encode_clamped - encode_plain, 0.0)
    return {
        "concept": CONCEPT,
        "clips": clips,
        "generate_s": plain_s,
        "generate_with_clamp_s": clamped_s,
        "overhead_end_to_end": clamped_s / plain_s - 1,
        "encode_s": encode_plain,
        "encode_with_clamp_s": encode_clamped,
        "clamp_s": clamp_cost,
        "clamp_share_of_generation": clamp_cost / plain_s,
        "tokens_edited_last_run": edited,
    }


def new_concept_seconds() -> dict[str, Any]:
    """Seconds to add a concept the shipped library lacks: in process, and as the whole CLI command."""
    from clear_sae.backbones import load_backbone
    from clear_sae.concepts import ConceptConfig, learn_concept
    from clear_sae.dictionary import Dictionaries
    from clear_sae.library import ConceptLibrary

    name, target_word, nontarget_word = NEW_CONCEPT
    scenes = [
        "{} playing on a quiet street at dusk",
        "a close-up of {} on a wooden table",
        "a musician holds {} in a sunny park",
        "{} in a shop window, slow pan",
        "a child looks at {} at a fair",
        "an old photo of {} on a stage",
        "{} under soft studio light",
        "a band plays {} by the sea",
        "a street performer with {} in the rain",
        "{} lying on a bed, morning light",
    ] * 4
    target = [s.format(target_word) for s in scenes]
    nontarget = [s.format(nontarget_word) for s in scenes]
    backbone = load_backbone("minilm")
    dictionaries = Dictionaries(ROOT / "dictionaries/minilm")
    for hook in dictionaries.hook_points:
        dictionaries.sae(hook)
    with tempfile.TemporaryDirectory() as tmp:
        library = ConceptLibrary(Path(tmp) / "lib.json")
        learn_concept(backbone, dictionaries, "warmup", target[:4], nontarget[:4], ConceptConfig())
        start = time.perf_counter()
        entry, _ = learn_concept(backbone, dictionaries, name, target, nontarget, ConceptConfig())
        library.add(entry)
        in_process = time.perf_counter() - start
        files = Path(tmp)
        (files / "t.txt").write_text("\n".join(target))
        (files / "n.txt").write_text("\n".join(nontarget))
        command = [
            sys.executable,
            "-m",
            "clear_sae",
            "concept",
            "--dictionaries",
            str(ROOT / "dictionaries/minilm"),
            "--name",
            name,
            "--target",
            str(files / "t.txt"),
            "--nontarget",
            str(files / "n.txt"),
            "--library",
            str(files / "cli.json"),
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        cli = time.perf_counter() - start
    return {
        "concept": name,
        "prompt_pairs": len(target),
        "layer": entry.hook_point,
        "latents": len(entry.latents),
        "learn_concept_s": in_process,
        "cli_command_s": cli,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/erasure.json"))
    args = parser.parse_args()

    generation = generation_overhead(args.clips, args.repeats)
    print(
        table(
            [generation],
            [
                "concept",
                "clips",
                "generate_s",
                "generate_with_clamp_s",
                "overhead_end_to_end",
                "clamp_s",
                "clamp_share_of_generation",
            ],
        )
    )
    concept = new_concept_seconds()
    print(table([concept], list(concept)))
    save(
        args.out,
        {
            "config": {k: v for k, v in vars(args).items() if k != "out"},
            "generation": generation,
            "new_concept": concept,
        },
    )


if __name__ == "__main__":
    main()
