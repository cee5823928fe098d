"""What the config dataclasses say about their fields: the docstring under each field and the range it must lie in.

A field's range is declared once, in its dataclass, as `field(default=..., metadata=POSITIVE)` (or `COUNT`,
`SHARE`, `ABOVE_ZERO`, `AT_LEAST_ZERO`, `STRENGTH`); `check_fields` enforces it when the config is built, and the
CLI, whose flags are generated from the same fields, refuses a value out of range before any work starts.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import numbers
import os
import textwrap
import time
from functools import cache
from pathlib import Path
from typing import Any, MutableMapping

from clear_sae.errors import ClearSaeError

CHECK = "check"
"""The metadata key of a field's range."""
POSITIVE = {CHECK: "positive"}
"""An integer of at least 1 (a batch size, a token budget)."""
COUNT = {CHECK: "count"}
"""An integer of at least 0, where 0 means none."""
ABOVE_ZERO = {CHECK: "above_zero"}
"""A finite number above 0 (a learning rate, a clamp strength)."""
AT_LEAST_ZERO = {CHECK: "at_least_zero"}
"""A finite number of at least 0 (a guidance scale)."""
SHARE = {CHECK: "share"}
"""A finite number between 0 and 1."""
MAXIMUM = "maximum"
"""The metadata key of a field's largest value: a limit that keeps one run within a machine's reach (a billion
sampling steps would allocate tens of GB before the first one ran)."""
MAX_PROMPT_BATCH = 4096
"""The most prompts one forward pass may take (a batch of 4,096 prompts of 128 tokens through a 4,096-wide model
is 8 GiB per hook point)."""
MAX_CLIPS = 10_000
"""The most clips one toy-world prompt set may hold (each keeps its noise and frames in memory, about 120 KB)."""
MAX_SAMPLING_STEPS = 1000
"""The most denoising steps per clip (the toy world samples with 6; the scheduler allocates every step up front)."""
STRENGTH = {CHECK: "strength"}
"""A clamp strength gamma: above 0 and at most `MAX_STRENGTH`."""
MAX_STRENGTH = 100.0
"""The largest clamp strength: gamma 1 removes the concept latents' decoded contribution once, and the calibration
ladder climbs to 4; far larger values push the residual stream to magnitudes no model produces, and in float32
to infinity."""


def is_count(value: Any, minimum: int = 0) -> bool:
    """Whether `value` is an integer (a Python or numpy one, not a bool) of at least `minimum`: for numbers read
    from files, where a check must answer rather than raise."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= minimum


def at_most(limit: int | float, check: dict[str, str]) -> dict[str, Any]:
    """Field metadata: the range `check` (e.g. `POSITIVE`) and at most `limit`."""
    return {**check, MAXIMUM: limit}


def check_value(value: Any, check: str, maximum: int | float | None = None) -> Any:
    """`value` if it lies in the range named by `check` and is at most `maximum`; otherwise a `ClearSaeError`
    saying what it must be."""
    value = _check_range(value, check)
    if maximum is not None and value > maximum:
        raise ClearSaeError(f"must be at most {maximum:,}, not {value:,}")
    return value


def _check_range(value: Any, check: str) -> Any:
    """`value` if it lies in the range named by `check`."""
    if check in ("positive", "count"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ClearSaeError(f"{value!r} is not an integer")
        minimum = 1 if check == "positive" else 0
        if value < minimum:
            raise ClearSaeError(f"must be at least {minimum}, not {value}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ClearSaeError(f"{value!r} is not a number")
    if not math.isfinite(value):
        raise ClearSaeError(f"must be a finite number, not {value}")
    if check == "above_zero" and value <= 0:
        raise ClearSaeError(f"must be above 0, not {value:g}")
    if check == "at_least_zero" and value < 0:
        raise ClearSaeError(f"must be at least 0, not {value:g}")
    if check == "share" and not 0 <= value <= 1:
        raise ClearSaeError(f"must be a share between 0 and 1, not {value:g}")
    if check == "strength" and not 0 < value <= MAX_STRENGTH:
        raise ClearSaeError(f"must be a strength above 0 and at most {MAX_STRENGTH:g}, not {value:g}")
    return value


def check_fields(config: Any) -> None:
    """Raise a one-line error naming the first field of a config dataclass whose value is out of its range."""
    for f in dataclasses.fields(config):
        check = f.metadata.get(CHECK)
        value = getattr(config, f.name)
        if check is None or value is None:
            continue
        try:
            check_value(value, check, f.metadata.get(MAXIMUM))
        except ClearSaeError as err:
            raise ClearSaeError(f"{type(config).__name__}.{f.name} {err}") from None


def available_memory() -> int | None:
    """Bytes of memory this machine can give a new allocation now (MemAvailable), or None where it cannot tell."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed: int, what: str, fix: str) -> None:
    """Raise a one-line error, before the work starts, when `what` needs more memory (`needed` bytes, an estimate)
    than the machine has available; `fix` says which setting to lower."""
    available = available_memory()
    if available is not None and needed > available:
        raise ClearSaeError(f"{what} needs about {_gib(needed)} of memory and {_gib(available)} is available; {fix}")


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""The environment variables that set torch's intra-op threads when torch is imported."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat; None where there is none."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(window: float = 0.2) -> float | None:
    """How many of the machine's cores other processes keep busy now: the busy share of all CPU time over `window`
    seconds (this process sleeps meanwhile) times the number of CPUs; None where the OS does not tell."""
    before = _cpu_times()
    time.sleep(window)
    after = _cpu_times()
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def threads_for(cores: int, busy: float) -> int:
    """Intra-op threads that fit: one per core other work leaves free (a core counts as free when less than half of
    it is busy), at least one."""
    return max(1, min(cores, math.floor(cores - busy + 0.5)))


def fit_threads(environ: "MutableMapping[str, str] | None" = None) -> tuple[int, float] | None:
    """Set torch's threads (through `THREAD_VARIABLES`, read when torch is imported) to the cores other work leaves
    free, so that a run on a busy machine does not oversubscribe it: torch otherwise takes every core, and its
    threads then wait on each other. Returns (threads, busy cores) when it set them; None when the user set them,
    the machine is quiet or the OS does not tell."""
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    if any(name in env for name in THREAD_VARIABLES):
        return None
    cores, busy = usable_cores(), busy_cores()
    threads = cores if busy is None else threads_for(cores, busy)
    if busy is None or threads >= cores:
        return None
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    return threads, busy


def _gib(n: int) -> str:
    """`n` bytes in GiB, rounded for a message."""
    return f"{n / 2**30:,.1f} GiB"


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of dataclass `cls`, on one line (fields without one are absent)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body  # type: ignore[attr-defined]
        for node, after in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs
