"""`clear-sae`: a thin command line over the library. Heavy packages are imported inside commands."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from clear_sae.backbones import load_backbone
from clear_sae.backbones.base import select_hook_points
from clear_sae.cache import ActivationCache, CacheConfig, write_cache
from clear_sae.calibration.ladder import (
    CalibrationConfig,
    chosen_step,
    format_ladder,
    learn_calibrated_concept,
    recorded_calibration,
    recorded_steps,
)
from clear_sae.cli.demo import DemoConfig, run_demo
from clear_sae.cli.report import FORMAT, InspectConfig, collect_report, write_report
from clear_sae.compare.joint import JointConfig, joint_folder, learn_concept_joint
from clear_sae.concepts import ConceptConfig, format_table, learn_concept
from clear_sae.dictionary import Dictionaries, TrainConfig, format_health_table, train_dictionaries
from clear_sae.errors import ClearSaeError, clear_interrupt, request_interrupt
from clear_sae.io import atomic_write_text, read_prompt_file
from clear_sae.library import ConceptLibrary
from clear_sae.measure import erase_report
from clear_sae.toyworld.concepts import CALIBRATION_SEED, attribute_of, is_toy_entry, toy_concepts
from clear_sae.toyworld.evaluation import evaluate
from clear_sae.toyworld.learn import learn_toy_concept
from clear_sae.toyworld.report import format_results
from clear_sae.toyworld.sampling import TEXT_ENCODER_ID, EvalConfig, load_toy_world


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    return _int_at_least(text, 1)


def count_int(text: str) -> int:
    """argparse type: an integer of at least 0 (a count where 0 means "none")."""
    return _int_at_least(text, 0)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (a learning rate, a clamp strength)."""
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {value:g}")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number of at least 0 (a guidance scale)."""
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value:g}")
    return value


def rate_float(text: str) -> float:
    """argparse type: a share between 0 and 1."""
    value = _finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1, not {value:g}")
    return value


def _output_file(path: str | Path, what: str) -> Path:
    """A path to write a file to: refuse an existing directory up front, before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise ClearSaeError(f"{what} {path} is a directory; pass a file path")
    return path


def _cmd_cache(args: argparse.Namespace) -> None:

    prompts = read_prompt_file(args.prompts)
    out = _output_file(args.out, "--out")
    if out.exists() and not (args.resume or args.force):
        raise ClearSaeError(f"{out} already exists; pass --resume to continue it or --force to overwrite it")
    backbone = load_backbone(args.model)
    layers = backbone.resolve_layers(args.layers)
    write_cache(
        backbone,
        prompts,
        out,
        layers,
        CacheConfig(batch_size=args.batch_size, dtype=args.dtype),
        resume=args.resume,
        force=args.force,
        stop_after_batches=args.stop_after_batches,
    )

    with ActivationCache(out, allow_incomplete=True) as cache:
        state = "complete" if cache.complete else "incomplete (continue with --resume)"
        print(f"cached {len(layers)} hook points, {cache.n_rows(layers[0])} tokens at {layers[0]} -> {out} [{state}]")


def _cmd_train(args: argparse.Namespace) -> None:

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ClearSaeError(f"--out {args.out} is a file; pass a folder for the dictionaries")
    with ActivationCache(args.cache) as cache:
        layers = _cache_layers(cache, args.layers)
        cfg = TrainConfig(
            architecture=args.arch,
            expansion=args.expansion,
            k=args.k,
            tokens=args.tokens,
            seed=args.seed,
            batch_size=args.batch_size,
            lr=args.lr,
            save_dtype=args.save_dtype,
            kernel=args.kernel,
            device=args.device,
        )
        manifest = train_dictionaries(cache, args.out, layers, cfg, force=args.force)
    print(format_health_table(manifest, layers))
    print(f"dictionaries -> {args.out}")


def _cache_layers(cache: Any, spec: str | None) -> list[str]:

    return select_hook_points(spec, cache.hook_points, f"cache {cache.path}")


def _cmd_concept(args: argparse.Namespace) -> None:

    target = read_prompt_file(args.target)
    nontarget = read_prompt_file(args.nontarget)
    if args.method == "clear-joint":
        if args.calibrate:
            raise ClearSaeError(
                "--calibrate tunes an entry on the reused dictionaries; leave it out with "
                "--method clear-joint (or pass --strength)"
            )
        _concept_joint(args, target, nontarget)
        return
    if not args.dictionaries:
        raise ClearSaeError("--dictionaries is required (the reused dictionaries); or pass --method clear-joint")
    dictionaries = Dictionaries(args.dictionaries)
    library = ConceptLibrary.load(_output_file(args.library, "--library"), missing_ok=True)
    previous = library.concepts.get(args.name)
    backbone = _backbone_for(args.model, dictionaries.manifest.get("model_source") or dictionaries.backbone_id)
    layers = backbone.resolve_layers(args.layers) if args.layers else None
    if layers:
        for hook in layers:
            dictionaries.check_hook_point(hook)
    cfg = ConceptConfig(
        score=args.score,
        strength=args.strength,
        min_target_rate=args.min_target_rate,
        max_nontarget_rate=args.max_nontarget_rate,
        max_latents=args.max_latents,
    )
    if args.calibrate:
        cal = CalibrationConfig()
        entry, profiles, steps = learn_calibrated_concept(
            backbone, dictionaries, args.name, target, nontarget, cfg, cal, layers
        )
    else:
        entry, profiles = learn_concept(backbone, dictionaries, args.name, target, nontarget, cfg, layers)
    library.add(entry)
    library.save()
    print(f"concept {entry.name!r}: {len(target)} target, {len(nontarget)} non-target prompts")
    print(format_table(profiles, entry.hook_point, cfg.score))
    if args.calibrate:
        print("calibration (a probe on the final text states, held-out targets):")
        print(format_ladder(steps, cal))
    print(
        f"{_replaced_note(previous, args.name)}chosen layer: {entry.hook_point} ({len(entry.latents)} latents, "
        f"strength {entry.strength:g}) -> {library.path}"
    )


def _replaced_note(previous: Any, name: str) -> str:
    """The line that says a library entry of the same name was replaced ('' when there was none)."""
    if previous is None:
        return ""
    return (
        f"replaced the library's earlier entry {name!r} ({previous.hook_point}, {len(previous.latents)} latents, "
        f"strength {previous.strength:g}); pick another --name to keep both\n"
    )


def _concept_joint(args: argparse.Namespace, target: list[str], nontarget: list[str]) -> None:

    library = ConceptLibrary.load(_output_file(args.library, "--library"), missing_ok=True)
    previous = library.concepts.get(args.name)
    recorded = None
    if not args.dictionaries and not args.model:
        raise ClearSaeError("--method clear-joint trains its own SAE on a model: name it with --model (e.g. minilm)")
    if args.dictionaries:
        dictionaries = Dictionaries(args.dictionaries)
        recorded = dictionaries.manifest.get("model_source") or dictionaries.backbone_id
    backbone = _backbone_for(args.model, recorded)
    layers = backbone.resolve_layers(args.layers) if args.layers else None
    concept = ConceptConfig(
        strength=args.strength,
        min_target_rate=args.min_target_rate,
        max_nontarget_rate=args.max_nontarget_rate,
        max_latents=args.max_latents,
    )
    cfg = JointConfig(
        rounds=args.joint_rounds, warmup_rounds=min(JointConfig.warmup_rounds, args.joint_rounds - 1), concept=concept
    )
    folder = joint_folder(args.library, args.name)
    entry, result = learn_concept_joint(backbone, args.name, target, nontarget, folder, cfg, layers)
    library.add(entry)
    library.save()
    print(
        f"concept {entry.name!r} (clear-joint): {len(target)} target, {len(nontarget)} non-target prompts, "
        f"{result.seconds:.1f} s"
    )
    print(f"{'layer':<26} {'preference':>10} {'loss':>9}")
    for hook, pref in result.preferences.items():
        mark = "  <- chosen" if hook == entry.hook_point else ""
        print(f"{hook:<26} {pref:>10.4f} {result.separability_loss[hook]:>9.4f}{mark}")
    print(
        f"{_replaced_note(previous, args.name)}chosen layer: {entry.hook_point} ({len(entry.latents)} latents of "
        f"its own SAE in {folder}) -> {library.path}"
    )


def _backbone_for(model: str | None, recorded: str | None) -> Any:

    source = model or recorded
    if not source:
        raise ClearSaeError("cannot tell which model these dictionaries belong to; pass --model")
    return load_backbone(source)


def _cmd_erase(args: argparse.Namespace) -> None:

    prompts = read_prompt_file(args.prompts)
    out = _output_file(args.out, "--out")
    _check_not_an_input(out, {"--library": args.library, "--prompts": args.prompts})
    _check_report_path(out, args.force)
    library = ConceptLibrary.load(args.library)
    entries = [library.get(name) for name in args.concept]
    for entry in entries:
        library.dictionary_path(entry)
    sources = {e.model_source for e in entries}
    if args.model is None and len(sources) > 1:
        raise ClearSaeError("the concepts come from different models; erase them separately or pass --model")
    backbone = _backbone_for(args.model, sources.pop())
    report = erase_report(
        backbone, library, args.concept, prompts, batch_size=args.batch_size, exact=not args.single_step
    )
    atomic_write_text(out, json.dumps(report, indent=2))
    s = report["summary"]
    print(
        f"{s['n_prompts']} prompts; a concept latent fired on {s['n_fired']}, brought to zero on "
        f"{s['n_fired_cleared']} of them"
    )
    if s["mean_cosine_fired"] is not None:
        print(f"mean cosine of final embeddings where it fired: {s['mean_cosine_fired']:.4f}")
    if s["min_cosine_not_fired"] is not None:
        print(f"lowest cosine where it did not fire: {s['min_cosine_not_fired']:.6f}")
    print(f"report -> {out}")


def _check_not_an_input(out: Path, inputs: dict[str, Any]) -> None:
    """Refuse an --out that is one of the command's own input files, even with --force."""
    for option, path in inputs.items():
        if path is not None and Path(path).exists() and Path(path).resolve() == out.resolve():
            raise ClearSaeError(f"--out {out} is this command's {option} file; pick another --out")


def _check_report_path(out: Path, force: bool, fmt: str = "clear_sae.erase_report") -> None:
    """Refuse to overwrite anything but an earlier report of the same kind (a cache, say) without --force."""
    if not out.exists() or force:
        return
    try:
        with out.open("rb") as f:
            looks_like_json = f.read(1) == b"{"
        previous = json.loads(out.read_text(encoding="utf-8")) if looks_like_json else None
        if isinstance(previous, dict) and previous.get("format") == fmt:
            return
    except (UnicodeDecodeError, json.JSONDecodeError, OSError):
        pass
    kind = fmt.removeprefix("clear_sae.").replace("_", " ")
    article = "an" if kind[0] in "aeiou" else "a"
    raise ClearSaeError(f"{out} exists and is not {article} {kind}; choose another --out or pass --force")


def _attribute_map(pairs: list[str]) -> dict[str, str]:
    """`--attribute NAME=AXIS=VALUE` options as {library name: "AXIS=VALUE"}."""
    mapping = {}
    for pair in pairs:
        name, sep, attribute = pair.partition("=")
        if not sep or "=" not in attribute:
            raise ClearSaeError(f"--attribute {pair!r} should read NAME=AXIS=VALUE, e.g. crimson=colour=red")
        mapping[name] = attribute
    return mapping


def _check_attributes_used(attributes: dict[str, str], names: list[str]) -> None:
    """Refuse an --attribute for a concept this run does not touch: most likely a typo in its NAME."""
    unused = [name for name in attributes if name not in names]
    if unused:
        raise ClearSaeError(
            f"--attribute {unused[0]}=... names a concept this run does not take ({', '.join(names)}); "
            f"check the spelling, or add --concept {unused[0]}"
        )


def _cmd_evaluate(args: argparse.Namespace) -> None:

    out = _output_file(args.out, "--out")
    _check_not_an_input(out, {"--library": args.library})
    _check_report_path(out, args.force, "clear_sae.toy_evaluation")
    library = ConceptLibrary.load(args.library)
    attributes = _attribute_map(args.attribute or [])
    names = args.concept or [n for n, entry in library.concepts.items() if is_toy_entry(entry, attributes)]
    if not names:
        raise ClearSaeError(
            f"{args.library} holds no toy-world concept; name one with --concept (and map it with "
            "--attribute NAME=AXIS=VALUE if its name is not a colour, shape or motion)"
        )
    _check_attributes_used(attributes, names)
    if args.seed is not None and args.seed < 0:
        raise ClearSaeError(f"--seed {args.seed} is negative; pass a seed of 0 or more (the default is 1000)")
    if args.seed == 0:
        raise ClearSaeError(
            "--seed 0 would evaluate on the very prompts toy concepts are learned from; pick another "
            "seed (the default is 1000)"
        )
    if args.seed == CALIBRATION_SEED:
        raise ClearSaeError(
            f"--seed {CALIBRATION_SEED} would evaluate on the very prompts and noise the toy "
            "concepts' calibration judged its rungs on; pick another seed (the default is 1000)"
        )
    given = {
        "clips": args.clips,
        "heldout_clips": args.heldout_clips,
        "nontarget_clips": args.nontarget_clips,
        "removed_clips": args.removed_clips,
        "steps": args.steps,
        "guidance": args.guidance,
        "seed": args.seed,
    }
    cfg = EvalConfig(**{k: v for k, v in given.items() if v is not None})
    world = load_toy_world(args.generator, args.detector)
    strips = out.parent / f"{out.stem}_strips"
    report = evaluate(
        world, library, names, attributes, cfg, sweep=args.sweep, exact=not args.single_step, strips=strips
    )
    atomic_write_text(out, json.dumps(report, indent=2))
    print(format_results(report))
    print(f"report -> {out}")


def _cmd_toy_concept(args: argparse.Namespace) -> None:

    names = args.concept or toy_concepts()
    attributes = _attribute_map(args.attribute or [])
    unknown = [name for name in names if name not in toy_concepts() and name not in attributes]
    if unknown:  # before anything is loaded
        raise ClearSaeError(
            f"--concept {unknown[0]!r} is not a toy-world concept; name one of "
            f"{', '.join(toy_concepts())}, or map it with --attribute {unknown[0]}=AXIS=VALUE"
        )
    _check_attributes_used(attributes, names)
    for attribute in attributes.values():
        attribute_of(attribute)  # a typo in AXIS=VALUE fails here, not after the first concept
    prompts = None
    if args.target or args.nontarget:
        if not (args.target and args.nontarget):
            raise ClearSaeError("own prompts need both files: pass --target and --nontarget together")
        if not args.concept or len(args.concept) != 1:
            raise ClearSaeError("--target and --nontarget learn one concept: name it with a single --concept")
        prompts = read_prompt_file(args.target), read_prompt_file(args.nontarget)
    dictionaries = Dictionaries(args.dictionaries)
    library = ConceptLibrary.load(_output_file(args.library, "--library"), missing_ok=True)
    backbone = _backbone_for(None, dictionaries.manifest.get("model_source") or dictionaries.backbone_id)
    if backbone.backbone_id != TEXT_ENCODER_ID:
        raise ClearSaeError(
            f"{args.dictionaries} was trained on {backbone.backbone_id!r}, but the toy world's text "
            f"encoder is {TEXT_ENCODER_ID!r}; pass MiniLM's dictionaries (dictionaries/minilm)"
        )
    world = load_toy_world(args.generator) if args.judge_clips > 0 else None
    judge = f"a generation judge on {args.judge_clips} clips" if world else "the text-side probe"
    source = f"{args.target} against {args.nontarget}" if prompts else "the toy world's learning prompts"
    print(
        f"learning {len(names)} toy concept{'' if len(names) == 1 else 's'} on {args.dictionaries} from {source}, "
        f"each rung judged by {judge}"
    )
    for name in names:
        started = time.perf_counter()
        entry = learn_toy_concept(
            backbone,
            dictionaries,
            name,
            world=world,
            judge_clips=args.judge_clips,
            attribute=attributes.get(name),
            prompts=prompts,
        )
        library.add(entry)
        library.save()  # after every concept, so that an interrupted run keeps what it learned
        _, cal = recorded_calibration(entry.calibration)
        steps = recorded_steps(entry.calibration)
        kept = chosen_step(steps, cal)
        verdict = "passed" if cal.passes(kept) else "no rung passed; kept"
        print(
            f"{name:<9} {entry.hook_point:<22} gamma {entry.strength:g}, tolerance "
            f"{entry.selection.max_nontarget_rate:g}, {len(entry.latents)} latents: {verdict} at rung "
            f"{steps.index(kept) + 1} of {len(steps)} tried, judge finds {100 * kept.probe_rate:.1f}% "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    print(f"library -> {library.path}")


def _cmd_inspect(args: argparse.Namespace) -> None:

    out = _output_file(args.out, "--out")
    _check_not_an_input(out, {"--library": args.library, "--cache": args.cache, "--evaluation": args.evaluation})
    if out.exists() and not args.force:
        with out.open("rb") as f:
            earlier_report = FORMAT.encode() in f.read(4096)  # the HTML's meta tag, the JSON's first key
        if not earlier_report:
            raise ClearSaeError(
                f"{out} exists and is not an earlier inspection report; pick another --out or pass --force"
            )
    library = ConceptLibrary.load(args.library)
    if args.dictionaries is None:
        folders = {library.dictionary_path(e).resolve() for e in library.concepts.values()}
        if len(folders) != 1:
            raise ClearSaeError(f"{args.library} uses {len(folders)} dictionary folders; pick one with --dictionaries")
        args.dictionaries = folders.pop()
    for path, what in ((args.cache, "--cache"), (args.evaluation, "--evaluation")):
        if path is not None and not Path(path).is_file():
            state = "is a directory" if Path(path).is_dir() else "does not exist"
            raise ClearSaeError(
                f"{what} {path} {state}; pass the file `clear-sae {'cache' if what == '--cache' else 'evaluate'}` wrote"
            )
    cfg = InspectConfig(top_latents=args.top_latents, cache_tokens=args.cache_tokens)
    data = collect_report(Dictionaries(args.dictionaries), library, args.cache, args.evaluation, cfg=cfg)
    write_report(data, out, args.format)
    print(f"report ({len(data['concepts'])} concepts, {len(data['hook_points'])} layers) -> {out}")


def _cmd_demo(args: argparse.Namespace) -> None:

    run_demo(
        DemoConfig(
            out=Path(args.out),
            tokens=args.tokens,
            expansion=args.expansion,
            k=args.k,
            batch_size=args.batch_size,
            toy_clips=args.toy_clips,
            judge_clips=args.judge_clips,
            generator=Path(args.generator) if args.generator else None,
            force=args.force,
        )
    )


def _default_library() -> str | None:
    path = Path(__file__).resolve().parents[2] / "dictionaries" / "minilm" / "concepts.json"
    return str(path) if path.is_file() else None


def _one_line(message: str) -> str:
    """`message` on one line: line breaks (from a quoted library error) become spaces, other spacing is kept."""
    return re.sub(r"[ \t]*\n\s*", " ", message.strip())


def build_parser() -> argparse.ArgumentParser:
    """The `clear-sae` argument parser."""
    parser = argparse.ArgumentParser(prog="clear-sae", description=__doc__.split("\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("cache", help="run prompts through a model and store its residual stream in HDF5")
    p.add_argument("--model", required=True, help="minilm, or a local folder (HF text encoder, diffusers pipeline)")
    p.add_argument("--prompts", required=True, help="UTF-8 file, one prompt per line")
    p.add_argument("--out", required=True, help="the .h5 cache to write")
    p.add_argument("--layers", default="all", help="all, or comma-separated hook point names or indices")
    p.add_argument("--batch-size", type=positive_int, default=64, help="prompts per forward pass")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="storage dtype")
    p.add_argument("--resume", action="store_true", help="continue an interrupted cache")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--stop-after-batches", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_cache)

    p = sub.add_parser("train", help="train one SAE per hook point of a cache")
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True, help="dictionary folder (one sub-folder per hook point)")
    p.add_argument("--layers", default="all")
    p.add_argument("--arch", default="topk", choices=["topk", "standard", "jumprelu"])
    p.add_argument("--expansion", type=positive_int, default=4, help="d_sae = expansion * d_in")
    p.add_argument("--k", type=positive_int, default=32, help="active latents per token (topk)")
    p.add_argument("--tokens", type=positive_int, default=200_000, help="training tokens per layer")
    p.add_argument("--batch-size", type=positive_int, default=512, help="tokens per step")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-dtype", default="float32", choices=["float32", "float16"])
    p.add_argument(
        "--kernel",
        default="auto",
        choices=["auto", "sparse", "dense", "autograd"],
        help="topk training step: sparse (CPU default), dense (GPU default) or autograd (plain reference)",
    )
    p.add_argument("--device", default="cpu", help="where topk training runs: cpu or cuda (bf16 GEMMs on a GPU)")
    p.add_argument("--force", action="store_true", help="retrain into a folder that already holds dictionaries")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("concept", help="find a concept's latents per layer, choose its layer, add it to a library")
    p.add_argument(
        "--dictionaries",
        default=None,
        help="the per-layer dictionaries to reuse (required unless --method clear-joint)",
    )
    p.add_argument(
        "--method",
        default="reuse",
        choices=["reuse", "clear-joint"],
        help="reuse: one shared dictionary per layer (fast, the default); clear-joint: the paper's own "
        "per-concept SAE trained with layer preferences (its SAE is saved beside the library)",
    )
    p.add_argument("--joint-rounds", type=positive_int, default=20, help="clear-joint: training rounds")
    p.add_argument("--name", required=True)
    p.add_argument("--target", required=True, help="prompts containing the concept")
    p.add_argument("--nontarget", required=True, help="the same prompts with the concept swapped out")
    p.add_argument("--library", required=True, help="concept library JSON (created if missing)")
    p.add_argument("--model", default=None, help="defaults to the model the dictionaries were trained on")
    p.add_argument("--layers", default=None, help="restrict the candidate layers")
    p.add_argument("--score", default="energy", choices=["energy", "auroc"])
    p.add_argument("--strength", type=positive_float, default=1.0, help="gamma of the clamp")
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="at strength 1, 2, 4 in turn, try the layers best score first, then the same at "
        "non-target tolerance 0.2 and 0.4, until a probe on the final text states no longer finds "
        "the concept in held-out targets (overrides --strength)",
    )
    p.add_argument("--min-target-rate", type=rate_float, default=0.1)
    p.add_argument("--max-nontarget-rate", type=rate_float, default=0.05)
    p.add_argument("--max-latents", type=positive_int, default=32)
    p.set_defaults(func=_cmd_concept)

    p = sub.add_parser("erase", help="erase concepts from prompts and report what changed")
    default_library = _default_library()
    p.add_argument(
        "--library",
        default=default_library,
        required=default_library is None,
        help="concept library JSON (default: the shipped MiniLM library)",
    )
    p.add_argument("--concept", action="append", required=True, help="a concept to erase (repeatable)")
    p.add_argument("--prompts", required=True)
    p.add_argument("--out", required=True, help="JSON report")
    p.add_argument("--model", default=None, help="defaults to the model recorded in the library")
    p.add_argument(
        "--single-step",
        action="store_true",
        help="only the paper's decoder step h - gamma W_dec (f(h) m); the SAE may still read some "
        "concept activation afterwards (default: also push the concept pre-activations below zero)",
    )
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--force", action="store_true", help="overwrite --out even if it is not an earlier report")
    p.set_defaults(func=_cmd_erase)

    p = sub.add_parser("evaluate", help="generation rate before/after erasure in the toy video world")
    p.add_argument(
        "--library",
        default=default_library,
        required=default_library is None,
        help="concept library JSON (default: the shipped MiniLM library)",
    )
    p.add_argument(
        "--concept",
        action="append",
        help="a concept to evaluate (repeatable; default: every toy-world "
        "concept in the library, and every entry that records the attribute it stands for)",
    )
    p.add_argument(
        "--attribute",
        action="append",
        help="NAME=AXIS=VALUE: what a library concept stands for in the "
        "toy world when its name is not a colour, shape or motion (e.g. crimson=colour=red)",
    )
    p.add_argument("--out", required=True, help="JSON report")
    p.add_argument("--clips", type=positive_int, help="target prompts in the training phrasing (default 100)")
    p.add_argument("--heldout-clips", type=positive_int, help="target prompts in held-out paraphrases (default 50)")
    p.add_argument("--nontarget-clips", type=positive_int, help="non-target prompts, for preservation (default 50)")
    p.add_argument(
        "--removed-clips",
        type=count_int,
        help="target prompts sampled again with the concept's words "
        "taken out, the reference a removal can reach (default 50, 0 skips; more than --clips reads "
        "--clips)",
    )
    p.add_argument("--steps", type=positive_int, help="sampling steps (default: EvalConfig.steps)")
    p.add_argument("--guidance", type=nonnegative_float, help="classifier-free guidance scale (default 4)")
    p.add_argument("--seed", type=int, help="seeds the evaluation prompts and noise (default 1000)")
    p.add_argument("--sweep", action="store_true", help="also erase at every layer in turn")
    p.add_argument("--single-step", action="store_true", help="the paper's decoder step only (see erase)")
    p.add_argument("--generator", default=None, help="generator folder (default: the shipped one)")
    p.add_argument("--detector", default=None, help="detector folder (default: the shipped one)")
    p.add_argument("--force", action="store_true", help="overwrite --out even if it is not an earlier evaluation")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "toy-concept",
        help="learn toy-world concepts on existing dictionaries, their layer, "
        "strength and tolerance calibrated on generated clips",
    )
    p.add_argument("--dictionaries", required=True, help="MiniLM dictionary folder (e.g. dictionaries/minilm)")
    p.add_argument("--library", required=True, help="concept library JSON (created if missing; other entries kept)")
    p.add_argument("--concept", action="append", help="a toy concept, e.g. yellow (repeatable; default: all 16)")
    p.add_argument(
        "--attribute",
        action="append",
        help="NAME=AXIS=VALUE: what a --concept stands for when its name is not a colour, shape or motion "
        "(e.g. crimson_things=colour=red)",
    )
    p.add_argument(
        "--target",
        help="your own target prompts for the one --concept (default: the toy world's "
        "learning prompts); the judge still generates the attribute's own captions",
    )
    p.add_argument("--nontarget", help="your own non-target prompts, with --target")
    p.add_argument(
        "--judge-clips",
        type=count_int,
        default=48,
        help="target and non-target clips the generation judge samples per rung (default 48, as the "
        "shipped library; 0: the text-side probe judges)",
    )
    p.add_argument("--generator", default=None, help="toy generator folder (default: the shipped one)")
    p.set_defaults(func=_cmd_toy_concept)

    p = sub.add_parser("inspect", help="one self-contained HTML report: layers, latents, reuse, health, erasure")
    p.add_argument(
        "--library",
        default=default_library,
        required=default_library is None,
        help="concept library JSON (default: the shipped MiniLM library)",
    )
    p.add_argument("--dictionaries", default=None, help="dictionary folder (default: the one the library uses)")
    p.add_argument(
        "--cache", default=None, help="activation cache: also show the corpus prompts that excite each latent most"
    )
    p.add_argument("--evaluation", default=None, help="a `clear-sae evaluate` report: show generation rates and clips")
    p.add_argument("--out", required=True, help="report.html (or .json with --format json)")
    p.add_argument("--format", choices=("html", "json"), default="html")
    p.add_argument("--top-latents", type=positive_int, default=8, help="latents shown per concept and layer")
    p.add_argument(
        "--cache-tokens", type=positive_int, default=50_000, help="cached tokens read per layer for corpus examples"
    )
    p.add_argument("--force", action="store_true", help="overwrite --out even if it is not an earlier report")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("demo", help="the whole pipeline on the embedded MiniLM default")
    p.add_argument("--out", default="clear_sae_demo", help="working folder")
    p.add_argument("--tokens", type=positive_int, default=200_000, help="training tokens per layer")
    p.add_argument("--expansion", type=positive_int, default=4)
    p.add_argument("--k", type=positive_int, default=32)
    p.add_argument("--batch-size", type=positive_int, default=512, help="training tokens per step")
    p.add_argument(
        "--toy-clips", type=count_int, default=8, help="toy-world clips per showcased concept (0 skips them)"
    )
    p.add_argument("--generator", default=None, help="toy generator folder (default: the shipped one)")
    p.add_argument(
        "--judge-clips",
        type=count_int,
        default=0,
        help="clips the toy generator samples to judge each calibration rung of a toy concept (48, as the "
        "shipped library's, takes about 10 more minutes; default 0: the text-side probe judges)",
    )
    p.add_argument(
        "--force", action="store_true", help="work in --out even if it holds files that no earlier demo wrote"
    )
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `clear-sae`; returns the exit status."""
    args = build_parser().parse_args(argv)
    clear_interrupt()
    signal.signal(signal.SIGTERM, request_interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an ignored SIGINT (background job) stays so
        signal.signal(signal.SIGINT, request_interrupt)
    try:
        args.func(args)
    except ClearSaeError as err:
        print(f"clear-sae: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; continue it with the same command and --resume" if args.command == "cache" else ""
        print(f"clear-sae: interrupted; what was already written is kept{hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
