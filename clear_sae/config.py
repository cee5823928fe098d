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
import textwrap
from functools import cache
from typing import Any

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
STRENGTH = {CHECK: "strength"}
"""A clamp strength gamma: above 0 and at most `MAX_STRENGTH`."""
MAX_STRENGTH = 100.0
"""The largest clamp strength: gamma 1 removes the concept latents' decoded contribution once, and the calibration
ladder climbs to 4; far larger values push the residual stream to magnitudes no model produces, and in float32
to infinity."""


def check_value(value: Any, check: str) -> Any:
    """`value` if it lies in the range named by `check`; otherwise a `ClearSaeError` saying what it must be."""
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
            check_value(value, check)
        except ClearSaeError as err:
            raise ClearSaeError(f"{type(config).__name__}.{f.name} {err}") from None


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
