"""Shared helpers of the benchmark scripts: timing, the machine's description, a text table and the JSON record."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout without installing
    sys.path.insert(0, str(ROOT))


def median_seconds(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synchronise(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def device_median(fn: Callable[[], Any], device: str, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `fn()` on `device` over `repeats` calls after `warmup` untimed ones, each call waited
    for."""
    return median_seconds(lambda: (fn(), synchronise(device)), repeats=repeats, warmup=warmup)


def matmul_rate(m: int, k: int, n: int, dtype: Any, device: str, repeats: int = 10) -> float:
    """FLOP/s of an `[m, k] @ [k, n]` GEMM in `dtype` on `device` (the median of `repeats` calls after 2 untimed
    ones)."""
    import torch

    a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
    return 2 * m * k * n / device_median(lambda: a @ b, device, repeats, warmup=2)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """`rows` as a fixed-width text table of `columns` (floats to 3 significant digits)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1e3 else f"{value:,.0f}"
        return str(value)

    cells = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Write the benchmark record as JSON, with the machine it ran on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    print(f"wrote {path}")


def find_chromium() -> str:
    """Debian's chromium, or an exit naming how to install it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs chromium (apt-get install chromium)")
    return chromium


def chromium_dump(chromium: str, url: str) -> tuple[float, str]:
    """Wall time of headless Chromium from start until it dumps the DOM of `url` (in a fresh profile), and the DOM."""
    with tempfile.TemporaryDirectory() as profile:
        args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        args += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
        args += [f"--user-data-dir={profile}", "--dump-dom", url]
        start = time.perf_counter()
        dom = subprocess.run(args, capture_output=True, text=True, timeout=300).stdout
        return time.perf_counter() - start, dom
