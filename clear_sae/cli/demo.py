"""`clear-sae demo`: the whole CLEAR pipeline on the embedded MiniLM text encoder, in a few minutes on a CPU.

Caches MiniLM's 7 hook points on the shipped caption corpus mixed with toy-world captions, trains one TopK
SAE per hook point, builds a concept library for every shipped and toy-world concept (dictionaries reused),
prints the per-layer separability tables with the chosen layers, shows erasure's effect on fresh prompts,
generates toy-world clips with and without erasure (PNG strips and GIFs), and saves a plot.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clear_sae.backbones import load_backbone
from clear_sae.cache import ActivationCache, CacheConfig, write_cache
from clear_sae.cli.report import InspectConfig, collect_report, write_report
from clear_sae.concepts import ConceptConfig, concept_codes, learn_concept
from clear_sae.config import COUNT, MAX_CLIPS, POSITIVE, at_most, check_fields, usable_cores
from clear_sae.corpus import concept_prompts
from clear_sae.details import stored_concept_detail
from clear_sae.dictionary import Dictionaries, TrainConfig, format_health_table, train_dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_write_text, output_folder, read_prompt_file
from clear_sae.library import ConceptLibrary
from clear_sae.measure import erase_report
from clear_sae.toyworld.concepts import TOY_BACKGROUND, toy_concepts, toy_corpus
from clear_sae.toyworld.evaluation import evaluate
from clear_sae.toyworld.generator import is_generator_folder
from clear_sae.toyworld.learn import learn_toy_concept, learning_prompts
from clear_sae.toyworld.report import format_results
from clear_sae.toyworld.sampling import WEIGHTS_DIR, EvalConfig, load_toy_world

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "data" / "prompts"
STAGES = 6
TOY_SHOWCASE = ("blue", "cross", "red")
"""Toy concepts whose clips the demo shows before and after erasure: the two the evaluation shows erasing best
and one it leaves in place."""


@dataclass
class DemoConfig:
    """Settings of the demo run."""

    out: Path = Path("clear_sae_demo")
    """Working folder: cache.h5, dictionaries/ (with concepts.json), erase_report.json, toy/, report.html."""
    tokens: int = field(default=100_000, metadata=POSITIVE)
    """Training tokens per layer."""
    expansion: int = field(default=8, metadata=POSITIVE)
    """d_sae = expansion * 384. Width 8 on 100,000 tokens is the setting docs/breadth.md chose within the demo's
    budget: twice the latents on half the tokens, for the same training work as width 4 on 200,000."""
    k: int = field(default=32, metadata=POSITIVE)
    """Active latents per token."""
    batch_size: int = field(default=512, metadata=POSITIVE)
    """Training tokens per step."""
    heldout_prompts: int = field(default=20, metadata=POSITIVE)
    """Fresh prompt pairs per concept (another seed than the library's) for the erasure check."""
    seed: int = field(default=0, metadata=COUNT)
    """Seeds dictionary training, concept learning and (offset by 1000) the fresh prompt pairs."""
    corpus_size: int | None = None
    """Use only the first N captions (for quick checks); None uses the whole corpus."""
    toy_captions: int = field(default=3000, metadata=COUNT)
    """Toy-world captions mixed into the corpus, so the dictionaries also know the toy world's words."""
    toy_clips: int = field(default=8, metadata=at_most(MAX_CLIPS, COUNT))
    """Target clips per showcased toy concept, sampled before and after erasure (0 skips the toy world)."""
    report_cache_tokens: int = field(default=20_000, metadata=POSITIVE)
    """Cached tokens per layer the report searches for each latent's top corpus prompts."""
    generator: Path | None = None
    """Toy generator folder (default: the shipped weights)."""
    judge_clips: int = field(default=0, metadata=at_most(MAX_CLIPS, COUNT))
    """Target and non-target clips the toy generator samples to judge each rung of a toy concept's calibration
    (`GenerationJudge`; 48, as `clear-sae toy-concept` judges the shipped library's toy entries, makes the demo
    about 14 minutes rather than 5); 0, or no toy generator, leaves the judging to the text-side probe."""
    force: bool = False
    """Work in `out` even if it holds files that no earlier demo wrote (the demo overwrites what it writes)."""
    concepts: tuple[str, ...] | None = None
    """Learn only these concepts (shipped text concepts and toy-world names); None learns every one."""

    def __post_init__(self) -> None:
        check_fields(self)


def shipped_concepts() -> list[str]:
    """Names of the concepts whose prompt files ship with the package."""
    return sorted(p.name[: -len(".target.txt")] for p in (PROMPTS_DIR / "concepts").glob("*.target.txt"))


def demo_corpus(cfg: DemoConfig) -> list[str]:
    """The captions the demo caches: the shipped corpus (its first `corpus_size`) and `toy_captions` toy ones."""
    return read_prompt_file(PROMPTS_DIR / "corpus.txt")[: cfg.corpus_size] + toy_corpus(cfg.toy_captions)


def add_retraining_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of an analysis script that retrains the demo's dictionaries and relearns its text concepts:
    `--tokens`, `--corpus-size`, `--toy-captions` and `--concepts`."""
    parser.add_argument("--tokens", type=int, default=DemoConfig.tokens, help="training tokens per layer")
    parser.add_argument("--corpus-size", type=int, default=None, help="first N corpus captions (default: all)")
    parser.add_argument("--toy-captions", type=int, default=DemoConfig.toy_captions, help="toy captions mixed in")
    parser.add_argument("--concepts", nargs="+", default=None, help="shipped text concepts (default: all)")


def retraining_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[DemoConfig, list[str]]:
    """The demo's settings those options give and the shipped text concepts they name (all by default); an unknown
    concept is a usage error."""
    names = args.concepts or shipped_concepts()
    unknown = sorted(set(names) - set(shipped_concepts()))
    if unknown:
        parser.error(f"no shipped text concept {', '.join(unknown)}; choose from {', '.join(shipped_concepts())}")
    return DemoConfig(tokens=args.tokens, corpus_size=args.corpus_size, toy_captions=args.toy_captions), names


def chosen_concepts(cfg: DemoConfig) -> tuple[list[str], list[str]]:
    """The shipped text concepts and toy concepts the demo learns: all, or those `cfg.concepts` names (a
    one-line error for a name that is neither, or when no prompt files ship)."""
    text, toys = shipped_concepts(), toy_concepts()
    if not text:
        raise ClearSaeError(f"no concept prompt files under {PROMPTS_DIR}; reinstall clear_sae")
    if cfg.concepts is None:
        return text, toys
    unknown = sorted(set(cfg.concepts) - set(text) - set(toys))
    if unknown or not cfg.concepts:
        raise ClearSaeError(
            f"--concepts names {', '.join(unknown) or 'nothing'}: choose from the shipped text concepts "
            f"({', '.join(text)}) and the toy concepts ({', '.join(toys)}), or leave --concepts out"
        )
    return [n for n in text if n in cfg.concepts], [n for n in toys if n in cfg.concepts]


def _stage(number: int, text: str, starts: list[float]) -> None:
    """Announce a stage and note when it began (for the per-stage times in summary.json)."""
    starts.append(time.perf_counter())
    print(f"\n== {number}/{STAGES} {text}", flush=True)


def stage_titles(
    cfg: DemoConfig, n_hooks: int, n_captions: int, text_names: list[str], toy_names: list[str]
) -> list[str]:
    """What each of the demo's stages does, with the counts it works on, as its header announces it."""
    n = len(text_names) + len(toy_names)
    showcase = [name for name in TOY_SHOWCASE if name in toy_names]
    judged = f", each toy concept's layer judged on {cfg.judge_clips} generated clips" if cfg.judge_clips else ""
    toy = (
        f"toy video world: evaluating the erasure of {', '.join(showcase)} on {cfg.toy_clips} target clips each, "
        "sampled with and without erasure (PNG strips and GIFs)"
        if cfg.toy_clips > 0 and showcase
        else "toy video world: skipped" + (" (--toy-clips 0)" if cfg.toy_clips <= 0 else " (no toy concept learned)")
    )
    return [
        f"caching MiniLM's {n_hooks} hook points on {n_captions} captions",
        f"training {n_hooks} TopK SAEs (d_sae {cfg.expansion * 384}, k {cfg.k}, {cfg.tokens} tokens each)",
        f"learning {n} concepts ({len(text_names)} text, {len(toy_names)} toy): per concept, its latents and "
        f"separability at every layer, one dictionary per layer reused by all{judged}",
        f"erasing each of the {len(text_names)} text concepts on {cfg.heldout_prompts} fresh target/non-target "
        "pairs (not in the library's prompts)",
        toy,
        f"writing the inspection report: latents of {n} concepts at every layer, top corpus prompts from "
        f"{cfg.report_cache_tokens} cached tokens per layer",
    ]


def stage_seconds(starts: list[float], end: float) -> dict[str, float]:
    """Seconds spent in each stage, numbered from 1, the last one ending at `end`."""
    return {str(n): round(stop - start, 1) for n, (start, stop) in enumerate(zip(starts, starts[1:] + [end]), 1)}


def separability_matrix(library: Any, names: list[str], hook_points: list[str]) -> str:
    """Energy score per layer (rows) and concept (columns); the chosen layer of each concept starred."""
    width = max(10, *(len(n) + 1 for n in names))
    lines = [f"{'layer':<22}" + "".join(f"{n:>{width}}" for n in names)]
    for hook in hook_points:
        cells = []
        for name in names:
            entry = library.get(name)
            value = entry.layer_scores[hook]["energy"]
            cells.append(f"{value:.4f}{'*' if entry.hook_point == hook else ' '}".rjust(width))
        lines.append(f"{hook:<22}" + "".join(cells))
    lines.append(
        "(energy = S_spe / (S_spe + S_uni) = exp(-paper loss); * = chosen layer: the argmax, or for a "
        "calibrated concept the best-scoring layer whose erasure its judge accepted at the mildest strength "
        "that had one, or where none was accepted, the rung where it found the concept least)"
    )
    return "\n".join(lines)


def erasure_summary(report: dict[str, Any], name: str, n_target: int) -> dict[str, Any]:
    """Per concept: how many held-out target prompts fired and were cleared, and the final-embedding cosines."""
    rows = report["prompts"]
    target, nontarget = rows[:n_target], rows[n_target:]

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    fired = [r for r in target if r["concepts"][name]["fired"]]
    return {
        "target_fired": len(fired),
        "target_total": len(target),
        "target_cleared": sum(r["concepts"][name]["activation_after"] <= 0 for r in fired),
        "target_cosine": mean([r["cosine_final"] for r in target]),
        "nontarget_fired": sum(r["fired"] for r in nontarget),
        "nontarget_total": len(nontarget),
        "nontarget_cosine": mean([r["cosine_final"] for r in nontarget]),
    }


def load_demo_world(cfg: DemoConfig) -> Any:
    """The toy world the demo generates with (`cfg.generator`, default the shipped one), or None with a note
    when there is no generator there."""

    generator = cfg.generator or WEIGHTS_DIR / "generator"
    if not is_generator_folder(generator):
        print(f"no toy generator at {generator}; train one with `python -m clear_sae.toyworld.generator`")
        return None
    return load_toy_world(generator)


def toy_showcase(library: Any, folder: Path, cfg: DemoConfig, world: Any) -> dict[str, Any]:
    """Evaluate the showcased concepts on a few clips each (`cfg.toy_clips` target prompts) with the same code as
    `clear-sae evaluate`: writes `folder/evaluation.json` and, per concept, a PNG strip (rows alternate before /
    after erasure) and a GIF (before | after) in `folder/evaluation_strips/`; returns each concept's figures."""

    if world is None:
        return {}
    names = [n for n in TOY_SHOWCASE if n in library.concepts]
    if not names:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    n = cfg.toy_clips
    eval_cfg = EvalConfig(
        clips=n, heldout_clips=max(1, n // 4), nontarget_clips=max(2, n // 2), removed_clips=n, progress=True
    )
    report = evaluate(world, library, names, cfg=eval_cfg, strips=folder / "evaluation_strips")
    atomic_write_text(folder / "evaluation.json", json.dumps(report, indent=2))
    print(format_results(report))
    return {
        name: {
            "layer": r["layer"],
            "rate_before": r["rate_target_before"]["mean"],
            "rate_after": r["rate_target_after"]["mean"],
            "rate_words_removed": r.get("rate_words_removed", {}).get("mean"),
            "clips": n,
            "strip": str(folder / r["strip"]),
            "gif": str(folder / r["gif"]),
        }
        for name, r in report["concepts"].items()
    }


MARKER = ".clear_sae_demo"
"""The file that marks a folder as the demo's own, so that a rerun may overwrite it."""


def claim_folder(out: Path, force: bool = False) -> None:
    """Make `out` the demo's working folder, refusing (unless `force`) one that holds files no demo wrote:
    the demo replaces its cache, dictionaries and library there."""
    output_folder(out, "--out")
    earlier = (out / MARKER).is_file() or (out / "summary.json").is_file()  # the latter: a demo before the marker
    if out.is_dir() and any(out.iterdir()) and not earlier and not force:
        raise ClearSaeError(
            f"{out} holds files that no earlier demo wrote, and the demo would overwrite its cache, "
            "dictionaries and library there; choose another --out or pass --force"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by `clear-sae demo`; a rerun works here again and overwrites what it wrote\n")


def run_demo(cfg: DemoConfig = DemoConfig()) -> dict[str, Any]:
    """Run the demo end to end and return its summary (also written to `out/summary.json`)."""
    import torch
    from tqdm.auto import tqdm

    started = time.perf_counter()
    stage_starts: list[float] = []
    out = cfg.out
    # Settings that would fail a later stage fail here, before anything is written.
    if cfg.generator is not None and not is_generator_folder(cfg.generator):  # asked for, so not skipped
        raise ClearSaeError(
            f"--generator {cfg.generator} holds no transformer/ folder; pass a toy generator folder "
            "(`python -m clear_sae.toyworld.generator --out DIR` trains one) or leave --generator out"
        )
    train_cfg = TrainConfig(
        expansion=cfg.expansion,
        k=cfg.k,
        tokens=cfg.tokens,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        save_dtype="float16",
    )  # its checks run here
    names, toys = chosen_concepts(cfg)
    claim_folder(out, cfg.force)
    corpus = demo_corpus(cfg)
    backbone = load_backbone("minilm")
    hooks = backbone.hook_points
    print(
        f"clear-sae demo in {out}: torch {torch.__version__} on {torch.get_num_threads()} CPU threads of "
        f"{usable_cores()} cores (OMP_NUM_THREADS sets them; on a busy machine clear-sae takes the free cores only)",
        flush=True,
    )
    titles = stage_titles(cfg, len(hooks), len(corpus), names, toys)

    _stage(1, titles[0], stage_starts)
    cache_path = out / "cache.h5"
    try:
        write_cache(backbone, corpus, cache_path, hooks, CacheConfig(batch_size=64), resume=cache_path.exists())
    except ClearSaeError:  # an old cache from other settings: this folder is the demo's own
        write_cache(backbone, corpus, cache_path, hooks, CacheConfig(batch_size=64), force=True)

    _stage(2, titles[1], stage_starts)
    dict_dir = out / "dictionaries"
    with ActivationCache(cache_path) as cache:
        manifest = train_dictionaries(cache, dict_dir, hooks, train_cfg, force=True)
    print(format_health_table(manifest, hooks))

    _stage(3, titles[2], stage_starts)
    library_path = dict_dir / "concepts.json"
    library_path.unlink(missing_ok=True)  # an earlier run's entries name latents of the dictionaries just replaced
    library = ConceptLibrary(library_path)
    dictionaries = Dictionaries(dict_dir)
    report_cfg = InspectConfig(cache_tokens=cfg.report_cache_tokens)
    concept_seconds = {}
    world = load_demo_world(cfg) if cfg.toy_clips > 0 or cfg.judge_clips > 0 else None
    bar = tqdm(total=len(names) + len(toys), desc="learning concepts", unit="concept")

    def learn(name: str, target: list[str], nontarget: list[str], toy: bool) -> bool:
        """Learn one concept into the library and store what the report shows of it, the prompts encoded once."""
        t0 = time.perf_counter()
        try:
            selection = ConceptConfig(seed=cfg.seed, background=TOY_BACKGROUND if toy else ConceptConfig.background)
            codes = concept_codes(backbone, dictionaries, target, nontarget, selection, hooks)
            if toy:
                entry = learn_toy_concept(backbone, dictionaries, name, cfg.seed, world, cfg.judge_clips, codes=codes)
            else:
                entry = learn_concept(backbone, dictionaries, name, target, nontarget, selection, codes=codes)[0]
        except ClearSaeError as err:
            tqdm.write(f"skipping {'toy concept ' if toy else ''}{name}: {err}")
            return False
        finally:
            bar.update()
        library.add(entry)
        stored_concept_detail(backbone, dictionaries, entry, report_cfg, codes)
        concept_seconds[name] = round(time.perf_counter() - t0, 2)
        return True

    for name in names:
        bar.set_postfix_str(name)
        target = read_prompt_file(PROMPTS_DIR / "concepts" / f"{name}.target.txt")
        nontarget = read_prompt_file(PROMPTS_DIR / "concepts" / f"{name}.nontarget.txt")
        learn(name, target, nontarget, toy=False)
    toy_names = []
    for name in toys:
        bar.set_postfix_str(f"toy {name}" + (", judged by generation" if world and cfg.judge_clips else ""))
        if learn(name, *learning_prompts(name), toy=True):
            toy_names.append(name)
    bar.close()
    library.save()
    names = [n for n in names if n in library.concepts]
    print(separability_matrix(library, names, hooks))
    print(separability_matrix(library, toy_names, hooks))
    titles = stage_titles(cfg, len(hooks), len(corpus), names, toy_names)  # the concepts actually learned

    _stage(4, titles[3], stage_starts)
    print(
        f"{'concept':<15} {'layer':<22} {'latents':>7} {'target fired':>12} {'cleared':>7} {'target cos':>10} "
        f"{'non-t fired':>11} {'non-t cos':>9}"
    )
    erasure = {}
    reports = {}
    bar = tqdm(names, desc="erasing", unit="concept")
    for name in bar:
        bar.set_postfix_str(name)
        target, nontarget = concept_prompts(name, n=cfg.heldout_prompts, seed=cfg.seed + 1000)
        # One bar for the stage (this one), not one per concept: the table's rows print between its updates.
        report = erase_report(backbone, library, [name], target + nontarget, progress=False)
        reports[name] = report
        s = erasure[name] = erasure_summary(report, name, len(target))
        entry = library.get(name)
        tqdm.write(
            f"{name:<15} {entry.hook_point:<22} {len(entry.latents):>7} "
            f"{s['target_fired']:>6}/{s['target_total']:<5} {s['target_cleared']:>7} {s['target_cosine']:>10.4f} "
            f"{s['nontarget_fired']:>5}/{s['nontarget_total']:<5} {s['nontarget_cosine']:>9.4f}"
        )
    atomic_write_text(out / "erase_report.json", json.dumps(reports, indent=1))

    _stage(5, titles[4], stage_starts)
    toy = toy_showcase(library, out / "toy", cfg, world) if cfg.toy_clips > 0 else {}

    _stage(6, titles[5], stage_starts)
    report_path = out / "report.html"
    evaluation = out / "toy" / "evaluation.json" if toy else None
    data = collect_report(
        dictionaries,
        library,
        cache=cache_path,
        evaluation=evaluation,
        backbone=backbone,
        cfg=report_cfg,
    )
    write_report(data, report_path)
    elapsed = time.perf_counter() - started
    summary = {
        "seconds": round(elapsed, 1),
        "stage_seconds": stage_seconds(stage_starts, time.perf_counter()),
        "concept_seconds": concept_seconds,
        "erasure": erasure,
        "chosen_layers": {n: library.get(n).hook_point for n in names + toy_names},
        "toy_world": toy,
        "dictionaries": {h: manifest["layers"][h] for h in hooks},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(f"inspection report -> {report_path} (open it in a browser; it needs no network)")
    print(f"library -> {library_path}; dictionaries -> {dict_dir}; erase report -> {out / 'erase_report.json'}")
    print(f"demo finished in {elapsed:.0f} s")
    return summary
