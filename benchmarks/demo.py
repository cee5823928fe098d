"""The demo's time, stage by stage: `clear-sae demo` run as a user runs it, in a fresh process, against its budget.

Each repeat runs `clear-sae demo --out DIR --force` in a new process on a fresh folder and reads the stage times
the demo writes to its `summary.json`; the wall time also counts the process start and imports. It also reports the
median time to learn a text concept (the first one aside, which encodes the background captions for all) and a toy
concept, as the demo learns them (stored detail for the report included). The budget: 180 s on a quiet 2-core
machine. Hosts of one kind differ in speed, so before each run it also measures the host's float32 GEMM rate at the
shape of the demo's SAE encoder step (512 tokens x 384 x 3,072 latents), with torch's threads as the demo gets them:
a slower host shows there, not only in the demo's time.

    python benchmarks/demo.py [--repeats 2] [--out benchmarks/demo.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import ROOT, matmul_rate, save, table

BUDGET_S = 180.0
STAGES = ["cache", "train", "concepts", "erase", "toy world", "report"]
ENCODER_GEMM = (512, 384, 3072)
"""The demo's SAE encoder GEMM: a training batch of tokens, MiniLM's width, expansion 8."""


def host_gflops() -> float:
    """The host's float32 GEMM rate at `ENCODER_GEMM`, in GFLOP/s (median of 50 calls)."""
    import torch

    return matmul_rate(*ENCODER_GEMM, torch.float32, "cpu", repeats=50) / 1e9


def run_once(folder: Path) -> dict[str, Any]:
    """One demo in a new process; its wall time and the stage times from its summary."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "clear_sae", "demo", "--out", str(folder), "--force"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"clear-sae demo failed:\n{done.stderr[-3000:]}")
    summary = json.loads((folder / "summary.json").read_text())
    stages, toy = summary["stage_seconds"], toy_names(summary)
    per_concept = summary["concept_seconds"]
    text = [s for name, s in list(per_concept.items())[1:] if name not in toy]  # the first pays the warm-up
    return {
        "wall_s": wall,
        "demo_s": summary["seconds"],
        **{name: stages[str(i + 1)] for i, name in enumerate(STAGES)},
        "text_concept_median_s": statistics.median(text),
        "toy_concept_median_s": statistics.median(s for name, s in per_concept.items() if name in toy),
    }


def toy_names(summary: dict[str, Any]) -> set[str]:
    """The toy concepts among those the demo learned."""
    from clear_sae.toyworld.concepts import toy_concepts

    return set(toy_concepts()) & set(summary["concept_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/demo.json"))
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeats):
        gflops = host_gflops()
        with tempfile.TemporaryDirectory() as tmp:
            runs.append({**run_once(Path(tmp) / "demo"), "host_gemm_gflops": round(gflops, 1)})
        print(table(runs[-1:], list(runs[-1])), flush=True)
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    print(f"median wall time {median['wall_s']:.0f} s against a budget of {BUDGET_S:.0f} s")
    config = {"repeats": args.repeats, "encoder_gemm": list(ENCODER_GEMM)}
    save(args.out, {"config": config, "budget_s": BUDGET_S, "runs": runs, "median": median})


if __name__ == "__main__":
    main()
