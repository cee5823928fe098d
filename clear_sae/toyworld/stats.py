"""Statistics for judged clips: exact intervals on clip rates and paired tests between two runs on the same clips.

A rate measured on n clips is a binomial proportion, so its interval is Clopper–Pearson's exact one: unlike a
percentile bootstrap it does not collapse to [0, 0] when no clip renders the concept (0 of 100 gives [0, 3.6%]).
Two erasures sampled from the same prompts and noise are compared clip by clip: McNemar's exact test reads only
the clips on which they disagree.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LEVEL = 0.95
"""Confidence level of every interval."""


def clopper_pearson(rendered: int, clips: int, level: float = LEVEL) -> list[float]:
    """The exact two-sided interval on a rate of `rendered` out of `clips`, to 4 decimals rounded outwards (NaN
    bounds for no clips)."""
    from scipy.stats import beta

    if clips <= 0:
        return [float("nan"), float("nan")]
    tail = (1.0 - level) / 2
    low = 0.0 if rendered == 0 else float(beta.ppf(tail, rendered, clips - rendered + 1))
    high = 1.0 if rendered == clips else float(beta.ppf(1 - tail, rendered + 1, clips - rendered))
    # Rounded outwards, so that a stored bound never claims more certainty than the exact one.
    return [math.floor(low * 1e4) / 1e4, math.ceil(high * 1e4) / 1e4]


def outcome_string(outcomes: np.ndarray) -> str:
    """Per-clip yes/no outcomes as a compact string of 0s and 1s (kept in reports for paired comparisons)."""
    return "".join("1" if o else "0" for o in np.asarray(outcomes, dtype=bool))


def outcomes_of(text: str) -> np.ndarray:
    """The boolean outcomes `outcome_string` wrote."""
    return np.array([c == "1" for c in text], dtype=bool)


def clip_rate(outcomes: np.ndarray) -> dict[str, Any]:
    """The share of clips with a yes outcome, its exact interval, the counts, and the outcomes themselves."""
    outcomes = np.asarray(outcomes, dtype=bool)
    yes, n = int(outcomes.sum()), int(outcomes.size)
    return {
        "rate": round(yes / n, 4) if n else None,
        "ci95": clopper_pearson(yes, n),
        "rendered": yes,
        "clips": n,
        "outcomes": outcome_string(outcomes),
    }


def mcnemar(first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test of two runs' yes/no outcomes on the same clips: how many clips only the first or
    only the second said yes to, and the two-sided p-value of that split under "the runs do not differ"."""
    from scipy.stats import binomtest

    first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if first.shape != second.shape:
        raise ValueError(f"paired outcomes differ in length ({first.size} and {second.size}); pair the same clips")
    only_first, only_second = int((first & ~second).sum()), int((second & ~first).sum())
    discordant = only_first + only_second
    p_value = 1.0 if discordant == 0 else float(binomtest(only_first, discordant, 0.5).pvalue)
    return {"only_first": only_first, "only_second": only_second, "p_value": round(p_value, 4)}
