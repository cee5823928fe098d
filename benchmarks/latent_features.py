"""Latent statistics and latent pages at scale.

1. Statistics (`clear-sae features`) over every row of a demo cache, all 7 layers, against the bare encoding pass
   they cannot do without (every row encoded once by its layer's SAE) in the same run: the ratio is what the two
   passes, the selection and the bookkeeping cost on top of it.
2. Latent pages opened in headless Chromium: the time from Chromium's start until a latent's page is drawn, and
   until a search by a word has read every layer's word index, for 7 layers x 1,536 latents and for 24 layers x
   65,536 latents, measured in the same run. The pages are synthetic, of the shape `clear_sae.latent_pages`
   writes (10 top and 30 sampled contexts of 20 tokens per latent, 3 words per latent in the index). The viewer
   reads `index.js`, the word index of each layer a search covers, and the one data file of the latent shown;
   the large case writes every word index but only the data files it opens (all of them would be about 9 GB).

    python benchmarks/latent_features.py --demo clear_sae_demo [--out benchmarks/latent_features.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _bench import chromium_dump, find_chromium, machine

WORDS = [f"w{i}" for i in range(5000)]


def statistics_seconds(demo: Path) -> dict:
    """Seconds of the statistics of every layer of the demo's dictionaries over its whole cache (recomputed), and
    of one bare encoding pass over the same rows."""
    from clear_sae.backbones import load_backbone
    from clear_sae.cache import ActivationCache
    from clear_sae.dictionary import Dictionaries
    from clear_sae.features import FeatureConfig, chunk_codes, compute_features

    dictionaries = Dictionaries(demo / "dictionaries")
    backbone = load_backbone("minilm")
    hooks = dictionaries.hook_points
    with ActivationCache(demo / "cache.h5") as cache:
        rows = sum(cache.n_rows(h) for h in hooks)
        started = time.perf_counter()
        for hook in hooks:
            for _ in chunk_codes(cache, hook, dictionaries.sae(hook), FeatureConfig.chunk_rows):
                pass
        bare = time.perf_counter() - started
        started = time.perf_counter()
        compute_features(cache, dictionaries, hooks, backbone, force=True)
        full = time.perf_counter() - started
    return {
        "layers": len(hooks),
        "rows": rows,
        "d_sae": int(dictionaries.sae(hooks[0]).W_enc.shape[1]),
        "statistics_seconds": round(full, 1),
        "bare_encoding_seconds": round(bare, 1),
        "ratio": round(full / bare, 2),
    }


def synthetic_example(rng: np.random.Generator, prompts: dict, base: int) -> list:
    """One context of a latent: a prompt of 20 tokens (added to `prompts`), its chosen token, value and firings."""
    prompt = base + int(rng.integers(0, 1_000_000))
    prompts[str(prompt)] = [str(w) for w in rng.choice(WORDS, 20)]
    fired = sorted({int(i) for i in rng.integers(0, 20, 3)})
    acts = [[i, round(float(rng.random() * 3), 3)] for i in fired]
    return [prompt, fired[0], round(float(rng.random() * 3), 3), acts]


def synthetic_chunk(rng: np.random.Generator, start: int, n: int) -> dict:
    """A data file's contents: `n` latents from `start`, each with its statistics and 40 contexts."""
    latents, prompts = {}, {}
    for j in range(start, start + n):
        latents[str(j)] = {
            "density": float(rng.random() * 0.01),
            "fires": int(rng.integers(1, 10_000)),
            "max": 3.0,
            "mean": 1.0,
            "hist": rng.integers(0, 100, 24).tolist(),
            "top": [synthetic_example(rng, prompts, j) for _ in range(10)],
            "samples": [synthetic_example(rng, prompts, j) for _ in range(30)],
            "enc_pos": [[str(w), 0.1] for w in rng.choice(WORDS, 10)],
            "enc_neg": [[str(w), -0.1] for w in rng.choice(WORDS, 10)],
            "dec_pos": [[str(w), 0.1] for w in rng.choice(WORDS, 10)],
            "dec_neg": [[str(w), -0.1] for w in rng.choice(WORDS, 10)],
            "dec_hist": {"min": -0.2, "max": 0.2, "counts": rng.integers(0, 5000, 24).tolist()},
        }
    return {"latents": latents, "prompts": prompts}


def write_synthetic_pages(folder: Path, n_layers: int, d_sae: int, shown: tuple[int, int], all_chunks: bool) -> str:
    """Synthetic latent pages in `folder`: the index, every layer's word index, and the data files (all of them, or
    only that of latent `shown` = (layer, latent)); returns a word that the index holds."""
    from clear_sae.latent_pages import CHUNK, TEMPLATE, script

    rng = np.random.default_rng(0)
    layers = []
    for position in range(n_layers):
        hook = f"text_encoder.blocks.{position}"
        words: dict[str, list[int]] = {}
        for j, chosen in enumerate(rng.choice(len(WORDS), (d_sae, 3))):
            for w in chosen:
                words.setdefault(WORDS[int(w)], []).append(j)
        (folder / f"L{position}-words.js").write_text(script("words", f"L{position}-words", words))
        chunks = range(0, d_sae, CHUNK) if all_chunks else [shown[1] // CHUNK * CHUNK] if position == shown[0] else []
        for start in chunks:
            name = f"L{position}-{start // CHUNK}"
            (folder / f"{name}.js").write_text(script("chunk", name, synthetic_chunk(rng, start, CHUNK)))
        layers.append({"hook": hook, "file": f"L{position}", "d_sae": d_sae, "rows": 10**7, "chunk": CHUNK})
    (folder / "index.js").write_text(script("index", "index", {"title": "synthetic", "layers": layers, "settings": {}}))
    shutil.copy(TEMPLATE, folder / "index.html")
    return WORDS[0]


def chromium_seconds(chromium: str, url: str, done: str) -> tuple[float, bool]:
    """Wall time of headless Chromium from start until it dumps the page at `url`, and whether `done` is in it."""
    seconds, dom = chromium_dump(chromium, url)
    return seconds, done in dom


def pages_seconds(chromium: str, n_layers: int, d_sae: int, repeats: int) -> dict:
    """Median seconds until a latent page is drawn and until a search has read every layer, for one size."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shown = (n_layers - 1, d_sae - 1)
        started = time.perf_counter()
        word = write_synthetic_pages(folder, n_layers, d_sae, shown, all_chunks=d_sae * n_layers <= 20_000)
        written = time.perf_counter() - started
        page = f"{(folder / 'index.html').as_uri()}#text_encoder.blocks.{shown[0]}/{shown[1]}"
        search = f"{(folder / 'index.html').as_uri()}?find={word}"
        opened = [chromium_seconds(chromium, page, f"latent {shown[1]}</h2>") for _ in range(repeats)]
        found = [chromium_seconds(chromium, search, "<b>text_encoder.blocks.0</b>") for _ in range(repeats)]
        size = sum(p.stat().st_size for p in folder.iterdir())
    return {
        "layers": n_layers,
        "d_sae": d_sae,
        "written_mb": round(size / 2**20, 1),
        "write_seconds": round(written, 1),
        "page_seconds_median": round(statistics.median(s for s, _ in opened), 2),
        "search_seconds_median": round(statistics.median(s for s, _ in found), 2),
        "page_drawn": all(ok for _, ok in opened),
        "search_found": all(ok for _, ok in found),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", default="clear_sae_demo", help="a finished `clear-sae demo` folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/latent_features.json")
    args = parser.parse_args()
    chromium = find_chromium()
    demo = Path(args.demo)
    if not (demo / "cache.h5").is_file() or not (demo / "dictionaries").is_dir():
        raise SystemExit(f"{demo} holds no finished demo (cache.h5 and dictionaries/); run `clear-sae demo` first")
    stats = statistics_seconds(demo)
    print(
        f"statistics of {stats['layers']} layers x {stats['d_sae']} latents over {stats['rows']:,} cached rows: "
        f"{stats['statistics_seconds']} s; one bare encoding pass {stats['bare_encoding_seconds']} s "
        f"(ratio {stats['ratio']})"
    )
    pages = [pages_seconds(chromium, 7, 1536, args.repeats), pages_seconds(chromium, 24, 65536, args.repeats)]
    for p in pages:
        print(
            f"{p['layers']} layers x {p['d_sae']:,} latents: page drawn in {p['page_seconds_median']} s, search over "
            f"every layer in {p['search_seconds_median']} s (median of {args.repeats}; {p['written_mb']} MB written)"
        )
    small, large = pages
    ratio = round(large["page_seconds_median"] / small["page_seconds_median"], 2)
    print(f"page time, large / small: {ratio}")
    record = {"machine": machine(), "command": f"python benchmarks/latent_features.py --demo {args.demo}"}
    record.update(statistics=stats, pages=pages, page_ratio=ratio)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
