"""The TopK training step on a GPU, as a fraction of the card's own bf16 matmul rate (one short run).

Sized for one H100/H200 (width 4096, 65,536 latents, k 64, batch 8,192; about a minute). It measures

- the card's bf16 matmul rate on a large square GEMM and on the encoder's own shape;
- a full training step (gradients, Adam, decoder renormalisation; data already on the card) for each kernel:
  `dense` (clear_sae's GPU default), `sparse` (CSR products; cuSPARSE), and `autograd` under bf16 autocast
  (the plain PyTorch step);

and reports tokens/s and the step's rate counted as the issue counts it: the encoder's two GEMMs (forward and
weight gradient, 4 x batch x d_in x d_sae FLOPs per step) over the step time, as a fraction of the measured
rate. The fastest kernel is the one to pass as `--kernel` on that card.

    python benchmarks/gpu_training.py [--out benchmarks/gpu_training.json]
    python benchmarks/gpu_training.py --device cpu --d-in 64 --d-sae 512 --k 8 --batch 256   # a smoke run
"""

from __future__ import annotations

import argparse
from typing import Any

from _bench import ROOT, device_median, matmul_rate, save, table


def timed(fn: Any, device: str, repeats: int) -> float:
    """Median seconds of `fn()` on `device`, each call waited for (2 untimed calls first)."""
    return device_median(fn, device, repeats, warmup=2)


def step_seconds(kernel: str, args: argparse.Namespace, dtype: Any) -> float:
    """Median seconds of one full training step with `kernel`."""
    import torch

    from clear_sae.sae.trainer import TopKParams, TopKTrainConfig, apply_update, make_optimizer, step_grads

    p = TopKParams(args.d_in, args.d_sae, seed=0, device=args.device)
    optimizer = make_optimizer(p, 1e-4)
    x = torch.randn(args.batch, args.d_in, device=args.device)
    cfg = TopKTrainConfig(k=args.k)
    autocast = kernel == "autograd" and dtype != torch.float32

    def step() -> None:
        with torch.autocast(device_type=torch.device(args.device).type, dtype=dtype, enabled=autocast):
            step_grads(p, x, cfg, kernel=kernel, matmul_dtype=dtype)
        apply_update(p, optimizer)

    return timed(step, args.device, args.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--d-in", type=int, default=4096)
    parser.add_argument("--d-sae", type=int, default=65536)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per kernel (after 2 untimed)")
    parser.add_argument("--kernels", nargs="+", default=["dense", "sparse", "autograd"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/gpu_training.json"))
    args = parser.parse_args()

    import torch

    from clear_sae.sae.trainer import resolve_matmul_dtype

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA GPU here; run on a GPU machine, or pass --device cpu with small sizes for a smoke run"
        )
    dtype = resolve_matmul_dtype("auto", args.device)
    square = matmul_rate(8192, 8192, 8192, dtype, args.device) if args.device.startswith("cuda") else None
    encoder = matmul_rate(args.batch, args.d_in, args.d_sae, dtype, args.device)
    peak = max(square or 0.0, encoder)
    counted_flops = 4 * args.batch * args.d_in * args.d_sae
    rows = []
    for kernel in args.kernels:
        try:
            seconds = step_seconds(kernel, args, dtype)
        except (RuntimeError, NotImplementedError) as err:  # a sparse kernel this torch build lacks on the device
            rows.append({"kernel": kernel, "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"})
            continue
        rows.append(
            {
                "kernel": kernel,
                "step_ms": seconds * 1e3,
                "tokens_per_s": args.batch / seconds,
                "fraction_of_matmul_peak": counted_flops / seconds / peak,
            }
        )
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    rates = {
        "matmul_dtype": str(dtype).removeprefix("torch."),
        "square_gemm_tflops": square and square / 1e12,
        "encoder_gemm_tflops": encoder / 1e12,
        "peak_tflops_used": peak / 1e12,
    }
    print(table([rates], list(rates)))
    print(table(rows, ["kernel", "step_ms", "tokens_per_s", "fraction_of_matmul_peak", "error"]))
    timed_rows = [r for r in rows if "step_ms" in r]
    if timed_rows:
        best = min(timed_rows, key=lambda r: r["step_ms"])
        print(
            f"fastest here: --kernel {best['kernel']} ({best['fraction_of_matmul_peak']:.0%} of the measured "
            "matmul rate, counting the encoder's forward and weight-gradient GEMMs)"
        )
    save(args.out, {"config": {k: v for k, v in vars(args).items() if k != "out"}, "rates": rates, "kernels": rows})


if __name__ == "__main__":
    main()
