"""How a toy-world evaluation is shown: the printed table and the before/after image strips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clear_sae.toyworld.media import save_gif, save_strip
from clear_sae.toyworld.sampling import ClipSet

STRIP_PAIRS = {"target": 4, "nontarget": 2}
"""Clips per set shown in a concept's image strip, each as a before row and an after row."""


def save_concept_strip(before: dict[str, ClipSet], after: dict[str, ClipSet], path: Path) -> list[str]:
    """A PNG of a few clips before and after erasure (rows alternate, each labelled in the image with before /
    after erasure and its prompt) and a GIF of the first target clip (before | after) beside it; returns the PNG
    rows' labels."""

    clips, labels, drawn = [], [], []
    for name, n in STRIP_PAIRS.items():
        for i in range(min(n, len(before[name].prompts))):
            clips += [before[name].sampled_clips()[i], after[name].sampled_clips()[i]]
            labels += [f"{name} {i}: {before[name].prompts[i]} | before", f"{name} {i}: after erasure"]
            drawn += [f"{name} {i}: {when}\n{before[name].prompts[i]}" for when in ("before", "after erasure")]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_strip(clips, path, labels=drawn)
    save_gif([before["target"].sampled_clips()[0], after["target"].sampled_clips()[0]], path.with_suffix(".gif"))
    return labels


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:5.1f}"


def format_results(report: dict[str, Any]) -> str:
    """The printed table: one row per concept (and per layer of a sweep)."""
    header = (
        f"{'concept':<10} {'axis':<7} {'layer':<22} {'rate before':>11} {'after':>6} {'no words':>8} "
        f"{'held-out':>8} {'after':>6} {'others':>6} {'after':>6} {'preserv.':>8} {'after':>6} {'drift':>6} "
        f"{'clips':>5} {'s':>5}  verdict"
    )
    lines = [header]

    def row(concept: str, axis: str, layer: str, r: dict[str, Any], verdict: str, seconds: str) -> str:
        return (
            f"{concept:<10} {axis:<7} {layer:<22} {_pct(r['rate_target_before']['mean']):>11} "
            f"{_pct(r['rate_target_after']['mean']):>6} "
            f"{_pct(r.get('rate_words_removed', {}).get('mean')):>8} {_pct(r['rate_heldout_before']['mean']):>8} "
            f"{_pct(r['rate_heldout_after']['mean']):>6} "
            f"{_pct(r.get('target_others_before', {}).get('mean')):>6} "
            f"{_pct(r.get('target_others_after', {}).get('mean')):>6} {_pct(r['preservation_before']['mean']):>8} "
            f"{_pct(r['preservation_after']['mean']):>6} {r['pixel_drift_nontarget']['mean']:>6.2f} "
            f"{r['rate_target_before']['clips']:>5} {seconds:>5}  {verdict}"
        )

    for name, r in report["concepts"].items():
        q = r["qualification"]
        verdict = (
            "met"
            if q["met"]
            else "not met: "
            + ", ".join(
                w
                for w, bad in (
                    ("rate before < 70%", not q["counted"]),
                    ("rate after > 10%", not q["erased"]),
                    ("preservation fell > 3 pt", not q["preserved"]),
                )
                if bad
            )
        )
        if not q["erased"] and q.get("reachable_by_removal") is False:
            verdict += " (even without its words: above 10%)"
        verdict += judges_line(r) + intervals_line(r)
        lines.append(row(name, r["axis"], r["layer"], r, verdict, f"{r['seconds']:.0f}"))
        if "rate_reserved_before" in r:
            lines.append(f"{'':<10} {reserved_line(r)}")
        if not q["erased"] and r.get("rate_target_by_word"):
            lines.append(
                f"{'':<10} rate after by word: "
                + ", ".join(
                    f"{word!r} {_pct(w['after']).strip()}% ({w['clips']} clips)"
                    for word, w in sorted(r["rate_target_by_word"].items(), key=lambda kv: -kv[1]["after"])
                )
            )
        for hook, s in r.get("sweep", {}).items():
            if "rate_target_after" not in s:
                lines.append(f"{'':<10} {'':<7} {hook:<22} {s['note']}")
                continue
            lines.append(row("", "", hook, s, "<- selected by CLEAR" if s["selected"] else "", ""))
    totals = report["totals"]
    lines.append(
        f"{len(totals['met'])} of {len(totals['counted'])} counted concepts (rate before >= 70%) met the "
        f"targets (rate after <= 10%, preservation drop <= 3 pt); axes: {', '.join(totals['axes_met']) or '-'}"
    )
    lines.append(
        "'no words': the rate from the same target prompts and noise with the concept's words taken out, "
        "what the generator draws for an unnamed attribute, which a removal cannot be expected to beat"
    )
    lines.append(
        "'others': on the target clips, the detector's agreement with the caption on the two other axes "
        "(a colour's shape and motion): an erasure that breaks the object, not just the concept, lowers it"
    )
    lines.append(
        "The rates shown are the learned detector's; a verdict needs the rule-based judge too, whose rates follow "
        "it ('rules: before -> after, met or not'); 'with intervals': at least 70% of clips before, the exact 95% "
        "upper bound of the clip rate after at most 10% and the bootstrap one of the preservation drop at most "
        "3 pt, by both judges"
    )
    return "\n".join(lines)


def judges_line(result: dict[str, Any]) -> str:
    """The rule-based judge's rate before and after and its own verdict, for a concept's row ('' if absent)."""
    second = result.get("geometry")
    verdicts = result["qualification"].get("by_judge")
    if second is None or verdicts is None:
        return ""
    rates = (
        f"{_pct(second['rate_target_before']['mean']).strip()}% -> {_pct(second['rate_target_after']['mean']).strip()}%"
    )
    return f"; rules: {rates}, {'met' if verdicts['geometry']['met'] else 'not met'}"


def intervals_line(result: dict[str, Any]) -> str:
    """The share of target clips still rendering the concept after erasure with its exact 95% interval, and the
    verdict with intervals (`metrics.interval_verdict`), for a concept's row ('' if absent)."""
    clips, with_intervals = result.get("clips_target_after"), result["qualification"].get("with_intervals")
    if clips is None or with_intervals is None:
        return ""
    low, high = clips["ci95"]
    return (
        f"; clips rendering it after: {clips['rendered']} of {clips['clips']} [{_pct(low).strip()}, "
        f"{_pct(high).strip()}]%, {'met' if with_intervals['met'] else 'not met'} with intervals"
    )


def reserved_line(result: dict[str, Any]) -> str:
    """The rate before and after erasure on the reserved paraphrases (a final run's), by each judge."""
    rates = [
        f"{who} {_pct(r['rate_reserved_before']['mean']).strip()}% -> {_pct(r['rate_reserved_after']['mean']).strip()}%"
        for who, r in (("detector", result), ("rules", result.get("geometry")))
        if r is not None
    ]
    return f"reserved paraphrases ({result['rate_reserved_before']['clips']} clips): " + ", ".join(rates)
