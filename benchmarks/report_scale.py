"""How the inspection report scales: file size and load time in headless Chromium for N concepts x L layers.

Builds report data of the real shape (top latents with histograms and token-highlighted prompts for every
concept at every layer, the corpus's top prompts for each of those latents, an overlap matrix per layer,
dictionary health) from seeded random numbers, renders it
with the real template, and times Chromium from start until the page's script has drawn its plots. The small
case (2 concepts x 7 layers) is measured in the same run as the reference.

    python benchmarks/report_scale.py --concepts 50 --layers 24 [--out benchmarks/report_scale.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _bench import chromium_dump, find_chromium

WORDS = "a red horn plays over the quiet harbour at dusk while gulls circle".split()


def synthetic_layer(rng: np.random.Generator, top_latents: int, top_prompts: int, bins: int) -> dict:
    """One concept at one layer: its latents and the detail of the top ones."""
    latents = sorted(int(x) for x in rng.choice(6144, size=int(rng.integers(4, 30)), replace=False))
    shown = latents[:top_latents]
    prompts = [synthetic_prompt(rng, str(j)) for j in shown for _ in range(top_prompts)]
    rows = [
        {
            "id": j,
            "target_rate": 0.9,
            "nontarget_rate": 0.05,
            "energy_share": 0.1,
            "histogram": {
                "edges": [round(float(x), 3) for x in np.linspace(0, 3, bins + 1)],
                "target": rng.integers(0, 40, bins).tolist(),
                "nontarget": rng.integers(0, 5, bins).tolist(),
            },
            "top": [[i * top_prompts + k, "target", 2.5] for k in range(top_prompts)],
        }
        for i, j in enumerate(shown)
    ]
    return {"latents": latents, "shown": rows, "prompts": prompts}


def synthetic_prompt(rng: np.random.Generator, latent: str) -> dict:
    """A top prompt: its tokens and one latent's activation on each (the report keeps only the shown latent's)."""
    tokens = [str(t) for t in rng.choice(WORDS, size=int(rng.integers(8, 25)))]
    return {"tokens": tokens, "acts": {latent: [round(float(v), 2) for v in rng.random(len(tokens))]}}


def synthetic_corpus(rng: np.random.Generator, concepts: dict, hooks: list[str], top_prompts: int) -> dict:
    """Per layer, the top corpus prompts of every latent any concept shows there."""
    corpus = {}
    for h in hooks:
        latents = sorted({str(r["id"]) for c in concepts.values() for r in c["layers"][h]["shown"]})
        prompts = [synthetic_prompt(rng, j) for j in latents for _ in range(top_prompts)]
        top = {j: [[i * top_prompts + k, 3.0] for k in range(top_prompts)] for i, j in enumerate(latents)}
        corpus[h] = {"tokens_scanned": 50_000, "prompts": prompts, "top": top}
    return corpus


def synthetic_report(
    n_concepts: int, n_layers: int, top_latents: int = 8, top_prompts: int = 3, bins: int = 16, seed: int = 0
) -> dict:
    """Report data with the structure `collect_report` produces, filled with seeded random values."""
    rng = np.random.default_rng(seed)
    hooks = ["text_encoder.embed"] + [f"text_encoder.blocks.{i}" for i in range(n_layers - 1)]
    names = [f"concept_{i:02d}" for i in range(n_concepts)]
    concepts = {}
    for name in names:
        chosen = hooks[int(rng.integers(n_layers))]
        scores = {
            h: {
                "n_specific": int(rng.integers(1, 30)),
                "n_shared": int(rng.integers(100, 900)),
                "energy": round(float(rng.random()), 6),
                "loss": round(float(rng.random() * 3), 6),
                "auroc": round(float(rng.random()), 5),
            }
            for h in hooks
        }
        layers = {h: synthetic_layer(rng, top_latents, top_prompts, bins) for h in hooks}
        concepts[name] = {
            "hook_point": chosen,
            "latents": layers[chosen]["latents"],
            "strength": 1.0,
            "score": "energy",
            "scores": scores,
            "n_target": 200,
            "n_nontarget": 200,
            "has_prompts": True,
            "layers": layers,
        }
    overlap = {
        h: {
            "concepts": names,
            "sizes": [len(concepts[n]["layers"][h]["latents"]) for n in names],
            "shared": rng.integers(0, 4, (n_concepts, n_concepts)).tolist(),
        }
        for h in hooks
    }
    health = [
        {
            "hook_point": h,
            "explained_variance": 0.9,
            "l0": 64.0,
            "dead_fraction": 0.01,
            "training_tokens": 1_000_000,
            "d_sae": 65536,
            "architecture": "topk",
        }
        for h in hooks
    ]
    return {
        "format": "clear_sae.inspect_report",
        "package_version": "synthetic",
        "dictionaries": "(synthetic)",
        "backbone_id": "synthetic",
        "library": "(synthetic)",
        "settings": {},
        "health": health,
        "hook_points": hooks,
        "concepts": concepts,
        "overlap": overlap,
        "corpus": synthetic_corpus(rng, concepts, hooks, top_prompts),
        "cache": "(synthetic)",
    }


def load_seconds(chromium: str, page: Path) -> tuple[float, bool]:
    """Wall time of headless Chromium loading `page` until its DOM is dumped, and whether the script finished."""
    seconds, dom = chromium_dump(chromium, page.as_uri())
    return seconds, 'data-ready="1"' in dom


def measure(chromium: str, n_concepts: int, n_layers: int, repeats: int) -> dict:
    """Size, write time and median load time of one synthetic report."""
    from clear_sae.cli.report import render_html

    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        started = time.perf_counter()
        page.write_text(render_html(synthetic_report(n_concepts, n_layers)), encoding="utf-8")
        written = time.perf_counter() - started
        loads = [load_seconds(chromium, page) for _ in range(repeats)]
        return {
            "concepts": n_concepts,
            "layers": n_layers,
            "html_mb": round(page.stat().st_size / 2**20, 2),
            "write_seconds": round(written, 2),
            "load_seconds_median": round(sorted(s for s, _ in loads)[len(loads) // 2], 2),
            "script_finished": all(ok for _, ok in loads),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concepts", type=int, default=50)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/report_scale.json")
    args = parser.parse_args()
    chromium = find_chromium()
    rows = [measure(chromium, 2, 7, args.repeats), measure(chromium, args.concepts, args.layers, args.repeats)]
    for r in rows:
        print(
            f"{r['concepts']:>3} concepts x {r['layers']:>2} layers: {r['html_mb']:6.2f} MB, written in "
            f"{r['write_seconds']:.2f} s, loaded and drawn in {r['load_seconds_median']:.2f} s "
            f"(median of {args.repeats}; script finished: {r['script_finished']})"
        )
    small, large = rows
    print(
        f"ratio {large['concepts']}x{large['layers']} / {small['concepts']}x{small['layers']}: size "
        f"{large['html_mb'] / small['html_mb']:.1f}x, load time "
        f"{large['load_seconds_median'] / small['load_seconds_median']:.1f}x"
    )
    Path(args.out).write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
