"""SAE training speed and quality: clear_sae's TopK trainer against sae-lens's `SAETrainer`, in the same run.

Caches one MiniLM layer on the shipped corpus, then trains the same TopK SAE (d_in 384, d_sae 6144, k 32,
batch 512, Adam 1e-3 with a linear decay over the last 30% of steps, seed 0) on the same minibatch stream
with

- clear_sae's trainer, fast path (`sparse` kernel, the CPU default),
- clear_sae's trainer, plain fallback (`autograd` kernel: the same loss, dense, differentiated by autograd),
- sae-lens's `SAETrainer` with its `TopKTrainingSAE`,

and reports tokens/s, the ratio to sae-lens, and explained variance and L0 on the same 8,192 cached tokens,
so speed is never bought with quality. The roofline is the machine's own float32 matmul rate, measured on the
encoder's GEMM shape: the fast path's only dense work is that one GEMM per step. With `--scaling` it also
times a step at 1x to 32x expansion. It also times AuxK's share of a step in its two layouts (`auxk_layouts`).

    python benchmarks/training.py [--tokens 204800] [--scaling] [--out benchmarks/training.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from _bench import ROOT, median_seconds, save, table

HOOK = "text_encoder.blocks.3"


def cached_layer(n_prompts: int, folder: Path) -> Any:
    """An activation cache of MiniLM's block 3 on the first `n_prompts` shipped corpus captions."""
    from clear_sae.backbones import load_backbone
    from clear_sae.cache import ActivationCache, write_cache
    from clear_sae.io import read_prompt_file

    prompts = read_prompt_file(ROOT / "clear_sae/data/prompts/corpus.txt")[:n_prompts]
    path = write_cache(load_backbone("minilm"), prompts, folder / "cache.h5", [HOOK])
    return ActivationCache(path)


def batches(cache: Any, batch: int, tokens: int, scale: float, seed: int = 0) -> Iterator[Any]:
    """The normalised minibatch stream every trainer consumes."""
    return (b * scale for b in cache.iter_minibatches(HOOK, batch, tokens, seed=seed))


def quality(sae: Any, sample: Any) -> dict[str, float]:
    """Explained variance and L0 of a SAE on `sample` (normalised activations)."""
    from clear_sae.dictionary import reconstruction_quality

    ev, l0 = reconstruction_quality(sae, sample)
    return {"explained_variance": ev, "l0": l0}


def run_clear_sae(cache: Any, scale: float, args: argparse.Namespace, kernel: str, sample: Any) -> dict[str, Any]:
    """Train with clear_sae's trainer (its data path included: the cache's shuffle buffer, read as `feed` does)."""
    from clear_sae.sae.trainer import TopKTrainConfig, feed, to_inference_sae, train_topk

    n_steps = args.tokens // args.batch
    start = time.perf_counter()
    result = train_topk(
        feed(batches(cache, args.batch, args.tokens, scale), "cpu"),
        384,
        args.d_sae,
        n_steps,
        TopKTrainConfig(k=args.k, kernel=kernel),
        b_dec_init=sample.mean(0),
        dead_after=max(args.tokens // 10, 4 * args.batch),
    )
    seconds = time.perf_counter() - start
    return {
        "trainer": f"clear_sae ({kernel})",
        "seconds": seconds,
        "tokens_per_s": result.tokens / seconds,
        "dead_fraction": result.dead_fraction,
        **quality(to_inference_sae(result.params, args.k, HOOK, "minilm"), sample),
    }


def run_sae_lens(cache: Any, scale: float, args: argparse.Namespace, sample: Any) -> dict[str, Any]:
    """Train with sae-lens's own trainer on the same stream and recipe."""
    import torch
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    n_steps = args.tokens // args.batch
    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=384, d_sae=args.d_sae, k=args.k, dtype="float32", device="cpu"))
    with torch.no_grad():
        sae.b_dec.copy_(sample.mean(0))
    cfg = SAETrainerConfig(
        total_training_samples=n_steps * args.batch,
        train_batch_size_samples=args.batch,
        lr=1e-3,
        lr_end=1e-3,
        lr_decay_steps=int(0.3 * n_steps),
        device="cpu",
        dead_feature_window=max(args.tokens // 10, 4 * args.batch) // args.batch,
    )
    start = time.perf_counter()
    trainer = SAETrainer(cfg, sae, batches(cache, args.batch, args.tokens, scale))
    trainer.fit()
    seconds = time.perf_counter() - start
    return {
        "trainer": "sae-lens SAETrainer",
        "seconds": seconds,
        "tokens_per_s": n_steps * args.batch / seconds,
        "dead_fraction": float(trainer.dead_neurons.float().mean()),
        **quality(sae.eval(), sample),
    }


def matmul_roofline(batch: int, d_in: int, d_sae: int) -> dict[str, float]:
    """The machine's float32 GEMM rate on the encoder's shape, and the tokens/s of a step that did only it."""
    import torch

    x, w, b = torch.randn(batch, d_in), torch.randn(d_sae, d_in), torch.zeros(d_sae)
    seconds = median_seconds(lambda: torch.addmm(b, x, w.T), repeats=20, warmup=3)
    return {
        "gemm_ms": seconds * 1e3,
        "gflops": 2 * batch * d_in * d_sae / seconds / 1e9,
        "tokens_per_s_encoder_gemm_only": batch / seconds,
        "tokens_per_s_six_dense_gemms": batch / (6 * seconds),
    }


def step_scaling(sample: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Seconds per training step at expansion 1x..32x for each kernel and for sae-lens's step: which kernel is
    fastest where the benchmark runs is what `--kernel auto` should pick there."""
    import torch
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    from clear_sae.sae.trainer import TopKParams, TopKTrainConfig, apply_update, make_optimizer, step_grads

    x = sample[: args.batch]
    rows = []
    for expansion in args.expansions:
        d_sae, k = 384 * expansion, min(args.k, 384 * expansion)
        row: dict[str, Any] = {"expansion": expansion, "d_sae": d_sae}
        for kernel in ("sparse", "dense", "autograd"):
            p = TopKParams(384, d_sae)
            optimizer = make_optimizer(p, 1e-3)

            def step() -> None:
                step_grads(p, x, TopKTrainConfig(k=k), kernel=kernel)
                apply_update(p, optimizer)

            row[f"{kernel}_ms"] = median_seconds(step, repeats=args.scaling_repeats) * 1e3
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=384, d_sae=d_sae, k=k, dtype="float32", device="cpu"))
        optimizer = torch.optim.Adam(sae.parameters(), lr=1e-3)

        def sae_lens_step() -> None:
            out = sae.training_forward_pass(
                TrainStepInput(
                    sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0, is_logging_step=False
                )
            )
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()

        row["sae_lens_ms"] = median_seconds(sae_lens_step, repeats=args.scaling_repeats) * 1e3
        row["speedup_vs_sae_lens"] = row["sae_lens_ms"] / row["sparse_ms"]
        row["fastest_kernel"] = min(("sparse", "dense", "autograd"), key=lambda name: row[f"{name}_ms"])
        rows.append(row)
    print(table(rows, list(rows[0])))
    return rows


def auxk_layouts(sample: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Milliseconds of AuxK's share of a step (its codes built, decoded and backpropagated) with the dead latents'
    codes held as the sparse kernel holds the main codes (CSR) and as a dense matrix over the dead latents alone
    (`_SubsetCodes`), at several numbers of dead latents, the two interleaved: where the dense layout stops paying
    is what `SUBSET_WIDTH` should be."""
    import torch

    from clear_sae.sae.trainer import SUBSET_WIDTH, TopKParams, _backprop_codes, _Codes, _dead_topk, _SubsetCodes

    x = sample[: args.batch]
    p = TopKParams(384, args.d_sae)
    k_aux = 384 // 2
    with torch.no_grad():
        norms = p.dec.norm(dim=1)
        unit, centred = p.dec / norms[:, None], x - p.b_dec
        pre = (centred @ p.enc.T + p.b_enc) * norms
    residual = torch.randn_like(x)
    rows = []
    for width in (0.5, 1, 2, 4, 8, 12, 16):
        dead = torch.zeros(args.d_sae, dtype=torch.bool)
        dead[torch.randperm(args.d_sae, generator=torch.Generator().manual_seed(0))[: int(width * k_aux)]] = True
        selection = _dead_topk(pre, dead, 384)
        assert selection is not None

        def aux_part(layout: str) -> None:
            if layout == "csr":
                codes: Any = _Codes(selection.ids, selection.top, args.d_sae, "sparse")
            else:
                codes = _SubsetCodes(selection.columns, selection.which, selection.top)
            grads = {name: torch.zeros_like(t) for name, t in (("enc", p.enc), ("unit", p.dec), ("b_enc", p.b_enc))}
            grads["norm"] = torch.zeros_like(norms)
            error = codes.times(unit) + residual
            _backprop_codes(codes, selection.top, error, unit, norms, centred, grads, gate=False)

        times: dict[str, list[float]] = {"csr": [], "subset": []}
        for _ in range(args.scaling_repeats):
            for layout in times:
                times[layout].append(median_seconds(lambda: aux_part(layout), repeats=3) * 1e3)
        csr, subset = (sorted(t)[len(t) // 2] for t in times.values())
        rows.append(
            {
                "dead": int(dead.sum()),
                "dead_per_k_aux": width,
                "csr_ms": csr,
                "subset_ms": subset,
                "subset_vs_csr": csr / subset,
                "trainer_uses": "subset" if width <= SUBSET_WIDTH else "csr",
            }
        )
    print(table(rows, list(rows[0])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=204_800, help="training tokens per trainer")
    parser.add_argument("--d-sae", type=int, default=6144)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--prompts", type=int, default=6000, help="corpus captions to cache (about 15 tokens each)")
    parser.add_argument("--scaling", action="store_true", help="also time a step at 1x..32x expansion")
    parser.add_argument("--expansions", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--scaling-repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/training.json"))
    args = parser.parse_args()

    import torch

    from clear_sae.dictionary import input_scale

    with tempfile.TemporaryDirectory() as tmp:
        cache = cached_layer(args.prompts, Path(tmp))
        raw = torch.from_numpy(cache.sample(HOOK, 8192))
        scale = input_scale(raw)
        sample = raw * scale
        print(
            f"{cache.n_rows(HOOK)} cached tokens at {HOOK}; training {args.tokens} tokens per trainer "
            f"(d_sae {args.d_sae}, k {args.k}, batch {args.batch})",
            flush=True,
        )
        runs = [
            run_sae_lens(cache, scale, args, sample),
            run_clear_sae(cache, scale, args, "sparse", sample),
            run_clear_sae(cache, scale, args, "autograd", sample),
        ]
        reference = runs[0]["tokens_per_s"]
        roofline = matmul_roofline(args.batch, 384, args.d_sae)
        for run in runs:
            run["vs_sae_lens"] = run["tokens_per_s"] / reference
            run["of_encoder_gemm_roofline"] = run["tokens_per_s"] / roofline["tokens_per_s_encoder_gemm_only"]
        print(
            table(
                runs,
                [
                    "trainer",
                    "tokens_per_s",
                    "vs_sae_lens",
                    "of_encoder_gemm_roofline",
                    "explained_variance",
                    "l0",
                    "dead_fraction",
                    "seconds",
                ],
            )
        )
        print(
            f"float32 matmul on the encoder's shape: {roofline['gflops']:.1f} GFLOP/s "
            f"({roofline['tokens_per_s_encoder_gemm_only']:,.0f} tokens/s if a step were that one GEMM)"
        )
        scaling = step_scaling(sample, args) if args.scaling else []
        auxk = auxk_layouts(sample, args)
        cache.close()
    save(
        args.out,
        {
            "config": {k: v for k, v in vars(args).items() if k != "out"},
            "runs": runs,
            "roofline": roofline,
            "scaling": scaling,
            "auxk_layouts": auxk,
        },
    )


if __name__ == "__main__":
    main()
