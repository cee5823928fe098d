"""Training on several processes: `clear-sae train` under torchrun against one process, side by side in one run.

Caches two MiniLM layers on the shipped corpus, then trains both TopK SAEs (d_sae 1,536, k 32, batch 512: the
demo's training work per layer, at half its width and twice its tokens) four ways, interleaved so that a machine
busy with other work slows each way alike:

- one process training both layers, with torch's default threads (all cores);
- the same with one thread: the work one rank does per layer, which says how much of the cores one process
  already uses (two ranks can at best halve the one-thread time);
- `torchrun --nproc-per-node 2 ... --distribute layers`: each rank trains one layer, one thread each (torchrun's
  default; two ranks of all-core threads would oversubscribe the cores);
- `torchrun --nproc-per-node 2 ... --distribute data`: both ranks train each layer, 256 tokens each per step;
- `torchrun --nproc-per-node 2` of two ranks that only join their process group and leave: the launcher's
  start-up and rendezvous with the ranks' own (Python and torch imported), the part of a torchrun way's time
  that is not training.

Every way is timed from the command's start to its end (process start-up and rendezvous included), and reports
the median and spread over `--repeats` and the ratio of each median to the one-process median.

    python benchmarks/distributed_training.py [--prompts 3000] [--tokens 204800] [--repeats 3]
        [--out benchmarks/distributed_training.json]
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

from _bench import ROOT, save, table

LAYERS = "text_encoder.blocks.2,text_encoder.blocks.4"
ONE_THREAD = "one process, one thread"
START_UP = "2 ranks, start-up only"


def cache_layers(n_prompts: int, folder: Path) -> Path:
    """An activation cache of the two layers on the first `n_prompts` shipped corpus captions."""
    prompts = folder / "prompts.txt"
    corpus = (ROOT / "clear_sae/data/prompts/corpus.txt").read_text().splitlines()
    prompts.write_text("\n".join(corpus[:n_prompts]) + "\n")
    out = folder / "cache.h5"
    command = [sys.executable, "-m", "clear_sae", "cache", "--model", "minilm", "--prompts", str(prompts)]
    # Chunks of 1,024 rows, so that even a small cache gives each data-parallel rank a part.
    subprocess.run(
        [*command, "--out", str(out), "--layers", LAYERS, "--chunk-rows", "1024"], check=True, env=environment()
    )
    return out


def environment(threads: int | None = None) -> dict[str, str]:
    """The environment of a timed command: offline, and `threads` torch threads where given."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def ways(cache: Path, out: Path, tokens: int) -> dict[str, list[str]]:
    """The command line of each way of training the two layers into `out`."""
    train = ["-m", "clear_sae", "train", "--cache", str(cache), "--out", str(out), "--layers", LAYERS, "--force"]
    recipe = ["--expansion", "4", "--k", "32", "--tokens", str(tokens)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return {
        "one process": [sys.executable, *train, *recipe, "--batch-size", "512"],
        ONE_THREAD: [sys.executable, *train, *recipe, "--batch-size", "512"],
        "2 ranks, a layer each": [*torchrun, *train, *recipe, "--batch-size", "512", "--distribute", "layers"],
        "2 ranks, data-parallel": [*torchrun, *train, *recipe, "--batch-size", "256", "--distribute", "data"],
        START_UP: [*torchrun, "--no-python", sys.executable, "-c", "from clear_sae.distributed import join; join()"],
    }


def timed(command: list[str], threads: int | None = None) -> float:
    """Seconds `command` takes from start to end (it must succeed), with `threads` torch threads where given."""
    start = time.perf_counter()
    done = subprocess.run(command, env=environment(threads), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=3000)
    p.add_argument("--tokens", type=int, default=204800, help="training tokens per layer")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks/distributed_training.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cache = cache_layers(args.prompts, folder)
        commands = ways(cache, folder / "d", args.tokens)
        seconds: dict[str, list[float]] = {name: [] for name in commands}
        for repeat in range(args.repeats):
            for name, command in commands.items():
                seconds[name].append(timed(command, 1 if name == ONE_THREAD else None))
                print(f"repeat {repeat + 1}: {name} {seconds[name][-1]:.1f} s", flush=True)
    alone = statistics.median(seconds["one process"])
    rows = [
        {
            "way": name,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "max_s": max(times),
            "ratio_to_one_process": statistics.median(times) / alone,
        }
        for name, times in seconds.items()
    ]
    print(table(rows, ["way", "median_s", "min_s", "max_s", "ratio_to_one_process"]))
    config = {"prompts": args.prompts, "tokens": args.tokens, "repeats": args.repeats, "layers": LAYERS.split(",")}
    save(args.out, {"config": config, "rows": rows, "seconds": seconds})


if __name__ == "__main__":
    main()
