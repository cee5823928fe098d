"""How well do concepts the project has never seen separate on the shipped dictionaries, and where does erasure fire?

    python analysis/heldout_concepts.py --out analysis/heldout_concepts.json
    python analysis/heldout_concepts.py --out dev.json --group dev     # the development concepts only

Each concept is a word that no file of the project names: not the dictionaries' training corpus (the shipped
manifest's vocabulary), the shipped prompt files, nor the corpus and caption generators (the script refuses a word
they name). Each is learned, as a user would with `clear-sae concept`, from 40 target prompts and their 40 twins
with the word swapped for a neighbour: a same-kind neighbour for the fine-grained concepts (a mandolin against a
guitar, a violin...), an unrelated object for the coarse ones. The erasure is then checked on 20 fresh prompt pairs
in other templates: the share of fresh targets on which a concept latent fires on a real token at the chosen layer
(the clamp edits them) and the share of fresh non-targets on which one fires (it edits those too). The target the
issue sets: held-out AUROC >= 0.9, firing on >= 90% of fresh targets and <= 10% of fresh non-targets.
Three concepts the corpus does hold (guitar, dog, umbrella) are measured the same way, as controls.

Every concept is learned twice: as `clear-sae concept` learns it by default, with the selection's background check
(`ConceptConfig.background`), which falls back to no check where the check leaves the targets covered poorly; and
without the check (`--background 0`, the selection before it existed), so the JSON shows the check's effect.
The concepts come in two groups of unseen words: `dev`, on which the check's settings were chosen, and `heldout`,
measured with the chosen settings and left out of the choice. `docs/build.py` turns the JSON into
docs/heldout.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

from clear_sae.backbones import load_backbone
from clear_sae.concepts import MIN_COVERAGE, MIN_HELDOUT_AUROC, ConceptConfig, learn_concept, quality_warnings
from clear_sae.dictionary import Dictionaries
from clear_sae.io import atomic_write_text, relative_to_folder

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "dictionaries" / "minilm"
PROJECT_TEXT = [
    ROOT / "clear_sae" / "data" / "prompts",
    ROOT / "clear_sae" / "corpus.py",
    ROOT / "clear_sae" / "vocabulary.py",
    ROOT / "clear_sae" / "toyworld" / "captions.py",
]

CONCEPTS = {
    # word: (kind, the neighbours its non-target twins name)
    "mandolin": ("fine", ["guitar", "violin", "cello", "harp"]),
    "harmonica": ("fine", ["flute", "trumpet", "clarinet", "saxophone"]),
    "beaver": ("fine", ["otter", "squirrel", "rabbit", "fox"]),
    "walrus": ("fine", ["seal", "dolphin", "penguin", "whale"]),
    "toucan": ("fine", ["parrot", "peacock", "flamingo", "pigeon"]),
    "forklift": ("fine", ["tractor", "truck", "bus", "van"]),
    "croissant": ("fine", ["donut", "muffin", "sandwich", "cookie"]),
    "tornado": ("fine", ["rainbow", "sunset", "fog", "snowfall"]),
    "kettle": ("coarse", ["bicycle", "horse", "tree", "umbrella"]),
    "telescope": ("coarse", ["dog", "car", "chair", "flower"]),
    "snowman": ("coarse", ["bus", "cat", "table", "lamp"]),
}
DEV = {
    # development concepts: unseen words too, on which the selection's settings were chosen
    "tambourine": ("fine", ["piano", "drum", "trumpet", "violin"]),
    "ostrich": ("fine", ["parrot", "owl", "eagle", "swan"]),
    "hamster": ("fine", ["hedgehog", "squirrel", "rabbit", "koala"]),
    "lobster": ("fine", ["dolphin", "whale", "seal", "otter"]),
    "ambulance": ("fine", ["truck", "bus", "van", "taxi"]),
    "skateboard": ("fine", ["motorcycle", "bicycle", "tractor", "taxi"]),
    "blizzard": ("fine", ["snowfall", "sunset", "rain", "storm"]),
    "pelican": ("fine", ["swan", "duck", "eagle", "owl"]),
    "gorilla": ("fine", ["lion", "tiger", "elephant", "bear"]),
    "submarine": ("fine", ["boat", "sailboat", "yacht", "kayak"]),
    "hurricane": ("fine", ["snowfall", "sunset", "rain", "fog"]),
    "limousine": ("fine", ["jeep", "taxi", "bus", "van"]),
    "rhino": ("fine", ["elephant", "giraffe", "zebra", "lion"]),
    "crocodile": ("fine", ["otter", "seal", "dolphin", "swan"]),
    "microscope": ("coarse", ["dog", "car", "tree", "chair"]),
    "anchor": ("coarse", ["horse", "bus", "lamp", "flower"]),
    "pumpkin": ("coarse", ["bicycle", "cat", "table", "umbrella"]),
    "cupcake": ("coarse", ["dog", "car", "lamp", "horse"]),
    "ladder": ("coarse", ["cat", "car", "horse", "lamp"]),
    "vase": ("coarse", ["dog", "bus", "tree", "bicycle"]),
}
CONTROLS = {
    # words the project does name (the corpus holds them), measured the same way for comparison
    "guitar": ("seen", ["violin", "cello", "harp", "flute"]),
    "dog": ("seen", ["cat", "horse", "rabbit", "fox"]),
    "umbrella": ("seen", ["bicycle", "chair", "lamp", "tree"]),
}
LEARNING_TEMPLATES = [
    "{a} in the middle of a quiet street",
    "a close-up shot of {a}",
    "{a} seen from far away at sunset",
    "a slow pan across {a} in soft light",
    "{a} on display in a small museum",
    "a cartoon drawing of {a}",
    "{a} beside a wooden fence",
    "a blurry video of {a} in the rain",
    "a child pointing at {a}",
    "{a} in a snowy landscape",
]
FRESH_TEMPLATES = [
    "an old film reel showing {a}",
    "{a} next to a red door",
    "a wide shot of {a} under a grey sky",
    "a painting of {a} hanging in a hallway",
    "a handheld video of {a} at dawn",
]


def with_article(word: str) -> str:
    """`word` after "a" or "an"."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def prompt_pairs(word: str, neighbours: list[str], templates: list[str]) -> tuple[list[str], list[str]]:
    """Targets naming `word` in every template, and their twins naming each neighbour in turn."""
    target, nontarget = [], []
    for template in templates:
        for neighbour in neighbours:
            target.append(template.format(a=with_article(word)))
            nontarget.append(template.format(a=with_article(neighbour)))
    return target, nontarget


def named_by_the_project(word: str, vocabulary: dict[str, int]) -> bool:
    """Whether the dictionaries' training corpus, a shipped prompt file or a prompt generator names `word`."""
    if vocabulary.get(word, 0) > 0:
        return True
    pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
    files = [p for root in PROJECT_TEXT for p in ([root] if root.is_file() else sorted(root.rglob("*.txt")))]
    return any(pattern.search(p.read_text(encoding="utf-8")) for p in files)


def firing_rate(backbone, sae, hook: str, latents: list[int], prompts: list[str]) -> float:
    """Share of `prompts` on which one of `latents` fires on a real token at `hook`."""
    import torch

    fired = 0
    with torch.no_grad():
        for _, outputs in backbone.run_batched(prompts, [hook], batch_size=64):
            act = outputs[hook]
            codes = sae.encode(act.acts.float())[..., latents]
            fired += int((((codes > 0).any(-1)) & act.mask).any(-1).sum())
    return fired / len(prompts)


GROUPS = {"heldout": CONCEPTS, "seen": CONTROLS, "dev": DEV}
"""The concept groups, in the order they are measured and shown."""


def measure_concept(backbone, dictionaries, name: str, neighbours: list[str], cfg: ConceptConfig) -> dict:
    """Learn `name` against `neighbours` under `cfg` and measure where its latents fire on fresh prompts."""
    target, nontarget = prompt_pairs(name, neighbours, LEARNING_TEMPLATES)
    entry, _ = learn_concept(backbone, dictionaries, name, target, nontarget, cfg)
    fresh_target, fresh_nontarget = prompt_pairs(name, neighbours, FRESH_TEMPLATES)
    sae = dictionaries.sae(entry.hook_point)
    scores = entry.layer_scores[entry.hook_point]
    auroc = scores["auroc"]
    fires_target = firing_rate(backbone, sae, entry.hook_point, entry.latents, fresh_target)
    fires_nontarget = firing_rate(backbone, sae, entry.hook_point, entry.latents, fresh_nontarget)
    return {
        "layer": entry.hook_point,
        "latents": len(entry.latents),
        "background_captions": entry.selection.background,
        "check_kept": entry.selection.background > 0 and entry.selection.max_background_rate < 1,
        "fires_on_background": scores.get("background_rate"),
        "heldout_auroc": auroc,
        "coverage": scores["coverage"],
        "fires_on_fresh_targets": round(fires_target, 4),
        "fires_on_fresh_nontargets": round(fires_nontarget, 4),
        "meets_target": auroc is not None
        and auroc >= MIN_HELDOUT_AUROC
        and fires_target >= 0.9
        and fires_nontarget <= 0.1,
        "warnings": quality_warnings(entry, dictionaries),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the measurement and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON output")
    parser.add_argument("--dictionaries", default=str(SHIPPED), help="dictionary folder (default: the shipped one)")
    parser.add_argument(
        "--group", choices=[*GROUPS, "all"], default="all", help="the concepts to measure (default: all groups)"
    )
    parser.add_argument("--concepts", nargs="+", default=None, help="only these concepts (of any group)")
    parser.add_argument(
        "--min-target-rate", type=float, default=ConceptConfig.min_target_rate, help="ConceptConfig.min_target_rate"
    )
    parser.add_argument(
        "--max-background-rate",
        type=float,
        default=ConceptConfig.max_background_rate,
        help="ConceptConfig.max_background_rate",
    )
    args = parser.parse_args(argv)
    cfg = ConceptConfig(min_target_rate=args.min_target_rate, max_background_rate=args.max_background_rate)
    without_check = replace(cfg, background=0)
    groups = list(GROUPS) if args.group == "all" else [args.group]
    known = {name: group for group, concepts in GROUPS.items() for name in concepts}
    unknown = sorted(set(args.concepts or []) - set(known))
    if unknown:
        parser.error(f"no such concept {', '.join(unknown)}; choose from {', '.join(known)}")
    chosen = (
        [(known[name], name) for name in args.concepts]
        if args.concepts
        else [(group, name) for group in groups for name in GROUPS[group]]
    )
    dictionaries = Dictionaries(args.dictionaries)
    vocabulary = (dictionaries.manifest.get("corpus") or {}).get("word_counts") or {}
    unseen = [name for group in ("heldout", "dev") for name in GROUPS[group]]
    named = [name for name in unseen if named_by_the_project(name, vocabulary)]
    if named:
        parser.error(f"{', '.join(named)} is named by the project's own files: not a held-out concept")

    started = time.perf_counter()
    backbone = load_backbone("minilm")
    results = {}
    for group, name in chosen:
        kind, neighbours = GROUPS[group][name]
        results[name] = {"group": group, "kind": kind, "neighbours": neighbours}
        for label, settings in (("with_check", cfg), ("without_check", without_check)):
            measured = measure_concept(backbone, dictionaries, name, neighbours, settings)
            results[name][label] = measured
            print(
                f"{group:<8} {name:<10} {label:<14} {measured['layer']:<22} auroc {measured['heldout_auroc']} "
                f"covers {measured['coverage']:.0%} fresh targets {measured['fires_on_fresh_targets']:.0%} "
                f"fresh non-targets {measured['fires_on_fresh_nontargets']:.0%}",
                file=sys.stderr,
            )
    flags = "" if args.group == "all" else f" --group {args.group}"
    flags += "" if args.concepts is None else " --concepts " + " ".join(args.concepts)
    if cfg.min_target_rate != ConceptConfig.min_target_rate:
        flags += f" --min-target-rate {cfg.min_target_rate:g}"
    if cfg.max_background_rate != ConceptConfig.max_background_rate:
        flags += f" --max-background-rate {cfg.max_background_rate:g}"
    data = {
        "command": "python analysis/heldout_concepts.py --out analysis/heldout_concepts.json" + flags,
        "dictionaries": relative_to_folder(args.dictionaries, ROOT),
        "settings": {
            "learning_pairs": len(LEARNING_TEMPLATES) * 4,
            "fresh_pairs": len(FRESH_TEMPLATES) * 4,
            "min_heldout_auroc": MIN_HELDOUT_AUROC,
            "min_coverage": MIN_COVERAGE,
            "min_target_rate": cfg.min_target_rate,
            "max_nontarget_rate": cfg.max_nontarget_rate,
            "background": cfg.background,
            "max_background_rate": cfg.max_background_rate,
            "corpus_captions": (dictionaries.manifest.get("corpus") or {}).get("captions"),
        },
        "concepts": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(args.out, json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
