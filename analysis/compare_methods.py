"""CLEAR (reused dictionaries), CLEAR as published (clear-joint) and the baselines on the toy world's concepts.

For every concept (default: all 16) the clips before erasure are sampled once; a concept whose generation
rate without erasure is below 70% does not qualify and is listed, not erased. For the others every method
erases it in turn (`clear_sae/toyworld/comparison.py` says how each is built) and the same figures as
`clear-sae evaluate` are recorded. Writes `comparison.json`, `comparison.md` (the table) and
`comparison.html` (a plot of the rate after erasure against the preservation drop, plotly inlined).

The demo's MiniLM concepts (french_horn, dog, ...) have no generator to read them back, so for them every
method but the negative prompt is measured on the text encoder's output alone (`--demo-concepts`, default:
the shipped ones): a logistic probe trained on the concept's learning pairs says which of 20 fresh target
prompts still carry the concept, and the fresh non-targets give the probe's false alarms, the cosine of their
pooled final states with and without the method, and how many are untouched.

    python analysis/compare_methods.py --out analysis/comparison [--concepts blue,cross] [--clips 100]

`--append` adds this invocation's concepts and methods to the report already in `--out` (made with the same
figure-relevant options, which it checks); a method already in the report for a concept is replaced. So a
long comparison can be run in parts, and the methods that read a changed library can be rerun alone. Every
part's options, with a digest of the library it read, are kept in the JSON's `invocations`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


# Options that change the figures: a report can only be extended by a run that shares them.
_SHARED_OPTIONS = (
    "library",
    "generator",
    "weights",
    "clips",
    "heldout_clips",
    "nontarget_clips",
    "steps",
    "batch_size",
    "seed",
    "joint_rounds",
    "fresh_pairs",
)


def start_report(out: Path, options: dict[str, Any], append: bool) -> dict[str, Any]:
    """A new report, or with `append` the one already in `out` after checking it was made with the same options."""
    path = out / "comparison.json"
    if not append or not path.exists():
        return {
            "format": "clear_sae.method_comparison",
            "config": options,
            "invocations": [options],
            "concepts": {},
            "seconds": 0.0,
        }
    report = json.loads(path.read_text())
    if report.get("format") != "clear_sae.method_comparison":
        raise SystemExit(f"error: {path} is not a method comparison; choose another --out or drop --append")
    differing = [k for k in _SHARED_OPTIONS if report["config"].get(k) != options.get(k)]
    if differing:
        raise SystemExit(
            f"error: {path} was made with different {', '.join(differing)}; rerun with the same "
            f"options or write to a new --out"
        )
    report.setdefault("invocations", [report["config"]]).append(options)
    report.setdefault("seconds", 0.0)
    return report


def add_result(section: dict[str, Any], name: str, result: dict[str, Any]) -> None:
    """Put one concept's result in the report, merging its methods into those already there; the clips before
    erasure must be the ones the report has (the same world, prompts and noise)."""
    if name not in section:
        section[name] = result
        return
    known = section[name]
    if known.get("rate_target_before") != result.get("rate_target_before"):
        raise SystemExit(
            f"error: {name}'s clips before erasure differ from the report's (rate "
            f"{result.get('rate_target_before')} against {known.get('rate_target_before')}); the "
            f"generator or the evaluation changed, so write to a new --out"
        )
    known["methods"].update(result["methods"])


def markdown_table(report: dict[str, Any]) -> str:
    """One row per concept and method; concepts that do not qualify in one line each."""
    lines = [
        "| concept | method | layer | rate before | rate after | held-out before → after | preservation drop (pt) "
        "| drift | build s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    skipped = []
    for name, r in report["concepts"].items():
        if not r["qualifies"]:
            skipped.append(f"{name} ({_pct(r['rate_target_before'])}%)")
            continue
        for method, m in r["methods"].items():
            if "note" in m:
                lines.append(
                    f"| {name} | {method} | {m['layer']} | {_pct(r['rate_target_before'])} | {m['note']} "
                    f"| | | | {m['seconds_build']} |"
                )
                continue
            lines.append(
                f"| {name} | {method} | {m['layer'] or '-'} | {_pct(m['rate_target_before']['mean'])} | "
                f"**{_pct(m['rate_target_after']['mean'])}** | {_pct(m['rate_heldout_before']['mean'])} → "
                f"{_pct(m['rate_heldout_after']['mean'])} | {_pct(m['preservation_drop']['mean'])} | "
                f"{m['pixel_drift_nontarget']['mean']:.2f} | {m['seconds_build']} |"
            )
    if skipped:
        lines.append("")
        lines.append("Not qualifying (rate without erasure below 70%): " + ", ".join(skipped))
    if report.get("text_concepts"):
        lines += [
            "",
            "| concept (MiniLM, no generator) | method | layer | probe rate before | after | non-target "
            "false alarms | non-target cosine | non-targets untouched | build s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in report["text_concepts"].items():
            for method, m in r["methods"].items():
                if "note" in m:
                    lines.append(f"| {name} | {method} | {m['layer'] or '-'} | {m['note']} | | | | | |")
                    continue
                lines.append(
                    f"| {name} | {method} | {m['layer']} | {_pct(m['probe_rate_before'])} | "
                    f"**{_pct(m['probe_rate_after'])}** | {_pct(m['nontarget_probe_rate_after'])} | "
                    f"{m['nontarget_cosine']:.4f} | {m['nontarget_unchanged']}/{m['prompts']['nontarget']} | "
                    f"{m['seconds_build']} |"
                )
    return "\n".join(lines)


def summary_table(report: dict[str, Any]) -> str:
    """One row per method, one column per qualifying concept: the rate after erasure in %, the preservation
    drop in brackets where it is over 3 points, bold where the target is met (`evaluation.qualifies`); then the
    count met and the mean build time."""
    from clear_sae.toyworld.metrics import qualifies

    concepts = [name for name, r in report["concepts"].items() if r["qualifies"]]
    methods = list(dict.fromkeys(m for name in concepts for m in report["concepts"][name]["methods"]))
    lines = ["| method | " + " | ".join(concepts) + " | met | build s (mean) |", "|---" * (len(concepts) + 3) + "|"]
    for method in methods:
        cells, met, seconds = [], 0, []
        for name in concepts:
            row = report["concepts"][name]["methods"].get(method)
            if row is None:
                cells.append("")
                continue
            seconds.append(row["seconds_build"])
            if "note" in row:
                cells.append("no latents")
                continue
            text = f"{100 * row['rate_target_after']['mean']:.1f}"
            if row["preservation_drop"]["mean"] > 0.03:
                text += f" (−{100 * row['preservation_drop']['mean']:.1f})"
            if qualifies(row)["met"]:
                met += 1
                text = f"**{text}**"
            cells.append(text)
        mean_seconds = sum(seconds) / len(seconds) if seconds else 0.0
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {met} of {len(concepts)} | {mean_seconds:.1f} |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Rate after erasure against preservation drop, one colour per method, as a self-contained HTML page."""
    import plotly.graph_objects as go

    fig = go.Figure()
    by_method: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, r in report["concepts"].items():
        for method, m in r.get("methods", {}).items():
            if "note" not in m:
                by_method.setdefault(method, []).append((name, m))
    for method, rows in by_method.items():
        fig.add_trace(
            go.Scatter(
                x=[100 * m["preservation_drop"]["mean"] for _, m in rows],
                y=[100 * m["rate_target_after"]["mean"] for _, m in rows],
                mode="markers",
                name=method,
                text=[name for name, _ in rows],
                hovertemplate="%{text}: rate %{y:.1f}%, drop %{x:.1f} pt",
            )
        )
    fig.add_hline(y=10, line_dash="dot", annotation_text="10% target")
    fig.add_vline(x=3, line_dash="dot", annotation_text="3 pt")
    fig.update_layout(
        title="Toy world: generation rate after erasure vs. preservation drop",
        xaxis_title="preservation drop on non-targets (points)",
        yaxis_title="generation rate on targets after erasure (%)",
    )
    path.write_text(fig.to_html(include_plotlyjs=True, full_html=True))


def main(argv: list[str] | None = None) -> int:
    from clear_sae.backbones import load_backbone
    from clear_sae.cli.demo import shipped_concepts
    from clear_sae.compare.text import compare_text_concept
    from clear_sae.corpus import CONCEPTS, concept_prompts
    from clear_sae.io import relative_to_folder
    from clear_sae.library import ConceptLibrary
    from clear_sae.toyworld.comparison import METHODS, compare_concept
    from clear_sae.toyworld.concepts import toy_concepts
    from clear_sae.toyworld.protocol import weights_record
    from clear_sae.toyworld.sampling import EvalConfig, load_toy_world

    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for comparison.json/.md/.html")
    parser.add_argument("--concepts", default=",".join(toy_concepts()))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--library", default=str(root / "dictionaries" / "minilm" / "concepts.json"))
    parser.add_argument("--generator", default=None, help="toy generator folder (default: the shipped one)")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--heldout-clips", type=int, default=50)
    parser.add_argument("--nontarget-clips", type=int, default=50)
    parser.add_argument("--steps", type=int, default=EvalConfig.steps)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0, help="draws the random layer of sae-random")
    parser.add_argument("--joint-rounds", type=int, default=None, help="clear-joint training rounds (default: its own)")
    parser.add_argument(
        "--demo-concepts",
        default=None,
        help="MiniLM concepts measured on the text side (default: the shipped ones; '' for none)",
    )
    parser.add_argument("--fresh-pairs", type=int, default=20, help="fresh prompt pairs per MiniLM concept")
    parser.add_argument(
        "--append",
        action="store_true",
        help="add to the comparison.json already in --out (same options) instead of replacing it",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="only rewrite comparison.md and .html from the comparison.json in --out; run nothing",
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.render:
        return render(Path(args.out))

    cfg = EvalConfig(
        clips=args.clips,
        heldout_clips=args.heldout_clips,
        nontarget_clips=args.nontarget_clips,
        removed_clips=0,
        steps=args.steps,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    joint_cfg = None
    if args.joint_rounds:
        from clear_sae.compare.joint import JointConfig

        joint_cfg = JointConfig(
            rounds=args.joint_rounds, warmup_rounds=min(JointConfig.warmup_rounds, args.joint_rounds - 1)
        )
    world = load_toy_world(args.generator)
    library = ConceptLibrary.load(args.library)
    methods = [m for m in args.methods.split(",") if m]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = {k: v for k, v in vars(args).items() if k not in ("out", "append", "render", "quiet")}
    options["library"] = relative_to_folder(args.library, root)
    options["library_sha256"] = hashlib.sha256(Path(args.library).read_bytes()).hexdigest()[:16]
    options["weights"] = weights_record(*world.folders) if world.folders else None
    report = start_report(out, options, args.append)
    seconds_before = report["seconds"]
    started = time.perf_counter()
    for name in [c for c in args.concepts.split(",") if c]:
        if not args.quiet:
            print(f"[{name}]", flush=True)
        add_result(
            report["concepts"],
            name,
            compare_concept(world, library, name, methods, cfg, seed=args.seed, joint_cfg=joint_cfg),
        )
        (out / "comparison.json").write_text(json.dumps(report, indent=2))  # kept up to date as it goes
    demo = shipped_concepts() if args.demo_concepts is None else [c for c in args.demo_concepts.split(",") if c]
    if demo:
        report.setdefault("text_concepts", {})
        backbone = load_backbone("minilm")
        for name in demo:
            if not args.quiet:
                print(f"[{name}] (text side)", flush=True)
            entry = library.get(name)
            fresh_target, fresh_nontarget = concept_prompts(name, n=args.fresh_pairs, seed=1000)
            keywords = CONCEPTS[name].phrases if name in CONCEPTS else [name.replace("_", " ")]
            add_result(
                report["text_concepts"],
                name,
                compare_text_concept(
                    backbone,
                    library,
                    name,
                    methods,
                    entry.target_prompts,
                    entry.nontarget_prompts,
                    fresh_target,
                    fresh_nontarget,
                    keywords,
                    args.seed,
                    joint_cfg,
                ),
            )
            (out / "comparison.json").write_text(json.dumps(report, indent=2))
    # Milliseconds, so that a part too quick to show at a tenth of a second still adds to the total.
    report["seconds"] = round(seconds_before + time.perf_counter() - started, 3)
    (out / "comparison.json").write_text(json.dumps(report, indent=2))
    return render(out)


def render(out: Path) -> int:
    """Write `comparison.md` (the summary and the full table) and `comparison.html` from `comparison.json`."""
    path = out / "comparison.json"
    if not path.exists():
        raise SystemExit(f"error: {path} does not exist; run the comparison first (without --render)")
    report = json.loads(path.read_text())
    table = markdown_table(report)
    if any(r["qualifies"] for r in report["concepts"].values()):
        table = (
            "Rate after erasure (%) on training-phrasing targets; preservation drop over 3 points in brackets; "
            "**bold**: at most 10% with preservation within 3 points.\n\n" + summary_table(report) + "\n\n" + table
        )
    (out / "comparison.md").write_text(table + "\n")
    plot(report, out / "comparison.html")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
