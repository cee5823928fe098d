"""Activation caching and reading: the cache's overhead over the bare forward pass, and the reader against the trainer.

In one run, on the shipped corpus and MiniLM's 7 hook points:

- the bare forward pass (`Backbone.run`, which keeps the hooked tensors without copying them) against
  `write_cache` on the same prompts with the same batch size, back to back (alternating which goes first),
  5 times: the median ratio is the overhead of storing fp16 rows in HDF5;
- the shuffling minibatch reader (`ActivationCache.iter_minibatches`, 512-token batches) against the rate at
  which the TopK trainer consumes tokens at 1,536 latents (expansion 4) and at 6,144 latents; and the
  trainer fed from the cache, directly and through a `prefetch` thread, against the same trainer fed the same
  batches from memory, which is what the data path costs;
- caching time against the number of prompts.

    python benchmarks/caching.py [--prompts 3000] [--pairs 5] [--out benchmarks/caching.json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import ROOT, save, table


def time_forward(backbone: Any, prompts: list[str], hooks: list[str], batch: int) -> float:
    """Seconds for the backbone's forward pass over `prompts`, hooks attached, nothing stored."""
    start = time.perf_counter()
    for i in range(0, len(prompts), batch):
        backbone.run(prompts[i : i + batch], hooks)
    return time.perf_counter() - start


def time_cache(backbone: Any, prompts: list[str], hooks: list[str], batch: int, path: Path) -> float:
    """Seconds for `write_cache` over the same prompts (a fresh file)."""
    from clear_sae.cache import CacheConfig, write_cache

    start = time.perf_counter()
    write_cache(backbone, prompts, path, hooks, CacheConfig(batch_size=batch), force=True, progress=False)
    return time.perf_counter() - start


def reader_tokens_per_s(cache: Any, hook: str, tokens: int) -> float:
    """Tokens/s of the shuffling reader alone (fp16 rows read, converted to float32 and shuffled)."""
    start = time.perf_counter()
    served = sum(len(b) for b in cache.iter_minibatches(hook, 512, tokens, seed=0))
    return served / (time.perf_counter() - start)


def trainer_tokens_per_s(cache: Any, hook: str, d_sae: int, steps: int, source: str) -> float:
    """Tokens/s of the TopK trainer (sparse kernel) fed the same batches from `memory` (read beforehand, not
    timed), straight from the cache (`direct`, what `feed` does on a CPU) or through a `prefetch` thread."""
    from clear_sae.sae.trainer import TopKTrainConfig, prefetch, train_topk

    stream = cache.iter_minibatches(hook, 512, steps * 512, seed=0)
    batches = {"memory": lambda: iter(list(stream)), "direct": lambda: stream, "prefetch": lambda: prefetch(stream)}[
        source
    ]()
    result = train_topk(
        batches, cache.widths[hook], d_sae, steps, TopKTrainConfig(k=32, kernel="sparse"), dead_after=10**9
    )
    return result.tokens / result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=3000, help="shipped corpus captions to cache")
    parser.add_argument("--pairs", type=int, default=5, help="forward / cache runs, back to back")
    parser.add_argument("--batch", type=int, default=64, help="prompts per forward pass")
    parser.add_argument(
        "--scaling",
        type=int,
        nargs="+",
        default=[500, 1000, 2000, 4000],
        help="prompt counts for the caching-time curve",
    )
    parser.add_argument(
        "--train-steps", type=int, default=390, help="steps per trainer run (390 steps of 512 = 200k tokens)"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks/caching.json"))
    args = parser.parse_args()

    from clear_sae.backbones import load_backbone
    from clear_sae.cache import ActivationCache
    from clear_sae.io import read_prompt_file

    backbone = load_backbone("minilm")
    hooks = backbone.hook_points
    prompts = read_prompt_file(ROOT / "clear_sae/data/prompts/corpus.txt")[: args.prompts]
    time_forward(backbone, prompts[: args.batch], hooks, args.batch)  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.h5"
        # Run the two back to back, `--pairs` times, so that drift in the machine's speed hits both alike, and
        # keep the median of the pairs' ratios.
        pairs = []
        for i in range(args.pairs):
            # Alternate which of the two goes first, so that neither always runs on a cooler or warmer machine.
            if i % 2 == 0:
                forward = time_forward(backbone, prompts, hooks, args.batch)
                cached = time_cache(backbone, prompts, hooks, args.batch, path)
            else:
                cached = time_cache(backbone, prompts, hooks, args.batch, path)
                forward = time_forward(backbone, prompts, hooks, args.batch)
            pairs.append((forward, cached))
        ratios = sorted(cache / forward for forward, cache in pairs)
        caching = {
            "prompts": len(prompts),
            "hook_points": len(hooks),
            "forward_s": statistics.median(f for f, _ in pairs),
            "cache_s": statistics.median(c for _, c in pairs),
            "overhead": ratios[len(ratios) // 2] - 1,
            "overhead_min": ratios[0] - 1,
            "overhead_max": ratios[-1] - 1,
            "file_mb": path.stat().st_size / 2**20,
        }
        print(table([caching], list(caching)))

        with ActivationCache(path) as cache:
            hook = hooks[3]
            tokens = min(cache.n_rows(hook) * 2, 400_000)
            reading = [
                {
                    "what": "reader (shuffled 512-token batches)",
                    "tokens_per_s": reader_tokens_per_s(cache, hook, tokens),
                }
            ]
            for d_sae in (1536, 6144):
                memory = trainer_tokens_per_s(cache, hook, d_sae, args.train_steps, "memory")
                reading.append({"what": f"trainer d_sae {d_sae}, from memory", "tokens_per_s": memory})
                for source, label in (
                    ("direct", "read directly (the CPU default)"),
                    ("prefetch", "via a prefetch thread"),
                ):
                    fed = trainer_tokens_per_s(cache, hook, d_sae, args.train_steps, source)
                    reading.append(
                        {
                            "what": f"trainer d_sae {d_sae}, from the cache, {label}",
                            "tokens_per_s": fed,
                            "vs_memory": fed / memory,
                        }
                    )
            for row in reading[1:]:
                row["reader_headroom"] = reading[0]["tokens_per_s"] / row["tokens_per_s"]
        print(table(reading, ["what", "tokens_per_s", "reader_headroom", "vs_memory"]))

        growth = []
        for n in args.scaling:
            seconds = time_cache(backbone, prompts[:n], hooks, args.batch, Path(tmp) / f"c{n}.h5")
            growth.append({"prompts": n, "seconds": seconds, "prompts_per_s": n / seconds})
        print(table(growth, ["prompts", "seconds", "prompts_per_s"]))
    save(
        args.out,
        {
            "config": {k: v for k, v in vars(args).items() if k != "out"},
            "caching": caching,
            "reading": reading,
            "growth": growth,
        },
    )


if __name__ == "__main__":
    main()
