"""The inspection report: where each concept lives, which latents carry it, how healthy the dictionaries are,
and what erasure changed; one self-contained HTML page (plotly.js inlined, no network) or the same data as JSON.

`collect_report` gathers the data; `render_html` puts it into the page template, whose script draws every
plot in the browser from that data, so the HTML stays small enough for 50 concepts x 24 layers. Latent
detail (histograms, top prompts) needs the prompts a concept was learned from, which the library keeps;
entries from older libraries show their scores only. The detail is computed once and kept beside the
dictionaries (`clear_sae.details`), so a report on an unchanged library reads it instead of recomputing.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from clear_sae import __version__
from clear_sae.backbones import load_backbone_for
from clear_sae.cache import ActivationCache
from clear_sae.config import POSITIVE, check_fields
from clear_sae.details import (
    DetailConfig,
    read_stored_detail,
    shown_per_prompt,
    stored_concept_detail,
    token_activations,
)
from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_write_text, read_json_file
from clear_sae.latent_pages import write_latent_pages

if TYPE_CHECKING:
    from clear_sae.backbones import Backbone
    from clear_sae.dictionary import Dictionaries
    from clear_sae.library import ConceptEntry, ConceptLibrary

FORMAT = "clear_sae.inspect_report"
TEMPLATE = Path(__file__).resolve().parents[1] / "data" / "report_template.html"


@dataclass
class InspectConfig(DetailConfig):
    """How much detail the report holds."""

    cache_tokens: int = field(default=50_000, metadata=POSITIVE)
    """With a cache: tokens read per layer when looking for the corpus prompts that excite a latent most."""

    def __post_init__(self) -> None:
        check_fields(self)


def dictionary_health(dictionaries: "Dictionaries") -> list[dict[str, Any]]:
    """Per layer, in model order: explained variance, L0, dead-latent fraction, tokens trained on, size."""
    rows = []
    for hook in dictionaries.hook_points:
        layer = dictionaries.layers[hook]
        rows.append(
            {
                "hook_point": hook,
                "explained_variance": layer.get("explained_variance"),
                "l0": layer.get("l0"),
                "dead_fraction": layer.get("dead_fraction"),
                "training_tokens": layer.get("training_tokens"),
                "d_sae": layer.get("d_sae"),
                "architecture": layer.get("architecture"),
            }
        )
    return rows


def concept_summary(entry: "ConceptEntry") -> dict[str, Any]:
    """What the library says of a concept: chosen layer, latents, and every stored score per layer."""
    return {
        "hook_point": entry.hook_point,
        "latents": list(entry.latents),
        "strength": entry.strength,
        "score": entry.score,
        "scores": entry.layer_scores,
        "n_target": entry.n_target,
        "n_nontarget": entry.n_nontarget,
        "has_prompts": bool(entry.target_prompts and entry.nontarget_prompts),
    }


def corpus_examples(
    cache_path: str | Path,
    backbone: "Backbone",
    dictionaries: "Dictionaries",
    wanted: dict[str, list[int]],
    cfg: InspectConfig,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Per layer, the cached corpus prompts that excite each wanted latent most (first `cache_tokens` rows); with
    `progress`, bars over the layers and the prompts' tokens."""
    import torch
    from tqdm.auto import tqdm

    out: dict[str, dict[str, Any]] = {}
    texts: dict[str, list[tuple[str, list[int]]]] = {}
    with ActivationCache(cache_path) as cache:
        if dictionaries.backbone_id and cache.backbone_id != dictionaries.backbone_id:
            raise ClearSaeError(
                f"cache {cache_path} holds activations of {cache.backbone_id!r}, but the dictionaries "
                f"were trained on {dictionaries.backbone_id!r}; pass the cache they were trained on"
            )
        corpus = cache.prompts()
        for hook in tqdm(
            [h for h in wanted if h in cache.hook_points and wanted[h]],
            desc="corpus examples",
            unit="layer",
            disable=not progress,
        ):
            n = min(cache.n_rows(hook), cfg.cache_tokens)
            acts = torch.from_numpy(cache.rows(hook, 0, n).astype(np.float32))
            owner = cache.prompt_index(hook, 0, n)
            if acts.shape[1] != int(dictionaries.layers[hook]["d_in"]):
                raise ClearSaeError(
                    f"dimension mismatch at {hook}: cache {cache_path} holds width {acts.shape[1]}, "
                    f"the dictionary reads {dictionaries.layers[hook]['d_in']}; pass the cache the "
                    "dictionaries were trained on"
                )
            latents = sorted(set(wanted[hook]))
            index = torch.tensor(latents, dtype=torch.long)
            sae = dictionaries.sae(hook)
            with torch.inference_mode():
                codes = torch.cat([sae.encode(acts[i : i + 4096])[:, index] for i in range(0, n, 4096)]).numpy()
            best: dict[int, list[tuple[int, float]]] = {}
            for col, latent in enumerate(latents):
                peak = np.zeros(len(corpus), np.float32)
                np.maximum.at(peak, owner, codes[:, col])
                order = np.argsort(-peak)[: cfg.top_prompts]
                best[latent] = [(int(p), float(peak[p])) for p in order if peak[p] > 0]
            chosen = sorted({p for pairs in best.values() for p, _ in pairs})
            position = {p: k for k, p in enumerate(chosen)}
            shown = shown_per_prompt(len(chosen), [(j, [position[p] for p, _ in best[j]]) for j in latents])
            texts[hook] = list(zip([corpus[p] for p in chosen], shown))
            out[hook] = {
                "tokens_scanned": n,
                "top": {str(j): [[position[p], round(v, 3)] for p, v in pairs] for j, pairs in best.items()},
            }
    for hook, prompts in token_activations(backbone, dictionaries, texts, cfg.batch_size, progress).items():
        out[hook]["prompts"] = prompts
    return out


def latent_overlap(concepts: dict[str, dict[str, Any]], hooks: list[str]) -> dict[str, dict[str, Any]]:
    """Per layer, how many concept latents each pair of concepts shares (the dictionary's reuse made visible)."""
    overlap = {}
    for hook in hooks:
        sets = {}
        for name, c in concepts.items():
            layer = c.get("layers", {}).get(hook)
            if layer is not None:
                sets[name] = set(layer["latents"])
            elif c["hook_point"] == hook:
                sets[name] = set(c["latents"])
        names = [n for n in sets if sets[n]]
        if not names:
            continue
        overlap[hook] = {
            "concepts": names,
            "sizes": [len(sets[n]) for n in names],
            "shared": [[len(sets[a] & sets[b]) for b in names] for a in names],
        }
    return overlap


def relative_scores(concepts: dict[str, dict[str, Any]], hooks: list[str]) -> dict[str, dict[str, list[Any]]]:
    """Per score and concept, its value at each layer divided by the concept's largest value of that score (None
    where a layer has no score): the heatmap's colours, so that a concept scoring 0.0001-0.03 is told apart
    layer by layer beside one scoring 0.14. The raw values stay in `concepts[name]["scores"]`."""
    names = sorted({k for c in concepts.values() for s in c["scores"].values() for k in s if not k.startswith("n_")})
    out: dict[str, dict[str, list[Any]]] = {}
    for score in names:
        out[score] = {}
        for name, c in concepts.items():
            row = [(c["scores"].get(h) or {}).get(score) for h in hooks]
            top = max((abs(v) for v in row if v is not None), default=0.0)
            out[score][name] = [None if v is None else round(v / top, 4) if top > 0 else 0.0 for v in row]
    return out


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def contained_strip(report: Path, strip: Any) -> bytes | None:
    """The bytes of an evaluation report's PNG strip, named relative to the report's folder; None where there is
    none. A strip path that leaves that folder, or a file that is not a PNG, is refused with a one-line error:
    the report embeds the file, so it must never embed another one."""
    if not strip:
        return None
    folder = report.parent.resolve()
    file = (folder / str(strip)).resolve()
    if not file.is_relative_to(folder):
        raise ClearSaeError(
            f"{report} names the strip {strip!r}, outside its own folder; pass the evaluation report as "
            "`clear-sae evaluate` wrote it, beside its evaluation_strips/"
        )
    if not file.is_file():
        return None
    data = file.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ClearSaeError(f"{report} names the strip {strip!r}, which is not a PNG; rerun `clear-sae evaluate`")
    return data


def evaluation_summary(path: str | Path) -> dict[str, Any]:
    """The figures of a `clear-sae evaluate` report, per concept and method, with its image strips inlined."""

    path = Path(path)
    fix = "pass the JSON that `clear-sae evaluate` wrote"
    report = read_json_file(path, "evaluation report", fix)
    if not isinstance(report, dict) or report.get("format") != "clear_sae.toy_evaluation":
        raise ClearSaeError(f"{path} is JSON but not an evaluation report; {fix}")
    keys = (
        "rate_target_before",
        "rate_target_after",
        "rate_heldout_before",
        "rate_heldout_after",
        "rate_words_removed",
        "preservation_before",
        "preservation_after",
        "pixel_drift_nontarget",
    )

    def figures(r: dict[str, Any]) -> dict[str, Any]:
        return {k: (r.get(k) or {}).get("mean") for k in keys} | {"clips": r["rate_target_before"]["clips"]}

    concepts = {}
    for name, r in report.get("concepts", {}).items():
        methods = [{"method": f"CLEAR ({r['layer']})", "layer": r["layer"], "selected": True} | figures(r)]
        for hook, s in r.get("sweep", {}).items():
            if "rate_target_after" in s and hook != r["layer"]:
                methods.append({"method": f"clamp at {hook}", "layer": hook, "selected": False} | figures(s))
        item: dict[str, Any] = {
            "axis": r.get("axis"),
            "layer": r["layer"],
            "methods": methods,
            "qualification": r.get("qualification", {}),
        }
        strip = contained_strip(path, r.get("strip"))
        if strip is not None:
            item["strip"] = "data:image/png;base64," + base64.b64encode(strip).decode("ascii")
            item["strip_rows"] = [str(row) for row in r.get("strip_rows", [])]
        concepts[name] = item
    return {"source": str(path), "config": report.get("config", {}), "concepts": concepts}


def collect_report(
    dictionaries: "Dictionaries",
    library: "ConceptLibrary",
    cache: str | Path | None = None,
    evaluation: str | Path | None = None,
    backbone: "Backbone | None" = None,
    cfg: InspectConfig = InspectConfig(),
    progress: bool = True,
) -> dict[str, Any]:
    """Everything the report shows, as plain JSON-ready data."""
    from tqdm.auto import tqdm

    root = dictionaries.root.resolve()
    entries = [e for e in library.concepts.values() if library.dictionary_path(e).resolve() == root]
    if not entries:
        raise ClearSaeError(
            f"no concept in {library.path} uses the dictionaries in {dictionaries.root}; pass the "
            "library built on them (or add a concept with `clear-sae concept`)"
        )
    # Read the evaluation and open the cache before the slow part, so that a wrong file fails at once.
    evaluation_data = evaluation_summary(evaluation) if evaluation is not None else None
    if cache is not None:
        ActivationCache(cache).close()
    concepts = {e.name: concept_summary(e) for e in entries}
    detailed = [e for e in entries if concepts[e.name]["has_prompts"]]
    stored = {e.name: read_stored_detail(dictionaries, e, cfg) for e in detailed}
    # The model is loaded only for what is not stored (an unchanged library's report reads, it does not encode).
    needs_model = cache is not None or any(found is None for found in stored.values())
    if detailed and needs_model and backbone is None:
        backbone = load_backbone_for(None, detailed[0].model_source)
    if detailed and backbone is not None:
        widths = {h: backbone.d_model(h) for h in dictionaries.hook_points if h in backbone.hook_points}
        dictionaries.check_backbone(backbone.backbone_id, widths)
    for entry in tqdm(detailed, desc="concept latents", unit="concept", disable=not progress):
        found = stored[entry.name]
        if found is None:
            assert backbone is not None
            found = stored_concept_detail(backbone, dictionaries, entry, cfg)
        concepts[entry.name]["layers"] = found
    data: dict[str, Any] = {
        "format": FORMAT,
        "package_version": __version__,
        "dictionaries": str(dictionaries.root),
        "backbone_id": dictionaries.backbone_id,
        "library": str(library.path),
        "settings": asdict(cfg),
        "health": dictionary_health(dictionaries),
        "hook_points": dictionaries.hook_points,
        "concepts": concepts,
        "overlap": latent_overlap(concepts, dictionaries.hook_points),
        "relative_scores": relative_scores(concepts, dictionaries.hook_points),
    }
    if cache is not None and detailed and backbone is not None:
        wanted: dict[str, list[int]] = {}
        for c in concepts.values():
            for hook, layer in c.get("layers", {}).items():
                wanted.setdefault(hook, []).extend(r["id"] for r in layer["shown"])
        data["corpus"] = corpus_examples(cache, backbone, dictionaries, wanted, cfg, progress)
        data["cache"] = str(cache)
    if evaluation_data is not None:
        data["evaluation"] = evaluation_data
    return data


def render_html(data: dict[str, Any]) -> str:
    """The self-contained page: the template, plotly.js inlined, and the report data as embedded JSON."""
    from plotly.offline import get_plotlyjs

    # "<" only occurs inside JSON strings, where \u003c means the same: no prompt can end the script early.
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    title = f"clear_sae report: {len(data['concepts'])} concepts, {len(data['hook_points'])} layers"
    page = TEMPLATE.read_text(encoding="utf-8").replace("<!--TITLE-->", title)
    return page.replace("/*PLOTLY_JS*/", get_plotlyjs()).replace("/*REPORT_DATA*/", payload)


def add_latent_pages(data: dict[str, Any], dictionaries: "Dictionaries", out: Path) -> Path | None:
    """Write the latent pages (`clear_sae.latent_pages`) beside the report `out`, in `<its name>_latents/`, when
    the dictionaries have current latent statistics, and link the report's latents to them; returns the pages'
    viewer, or None where there are no statistics."""
    pages = write_latent_pages(dictionaries, out.with_name(f"{out.stem}_latents"), title=str(data.get("dictionaries")))
    if pages is not None:
        data["latent_pages"] = f"{quote(pages.parent.name)}/{pages.name}"  # a link: '#' or '%' in a name quoted
    return pages


def write_report(data: dict[str, Any], out: str | Path, fmt: str = "html") -> Path:
    """Write the report as HTML or JSON (atomically, so an existing file survives a failure)."""

    if fmt not in ("html", "json"):
        raise ClearSaeError(f"unknown report format {fmt!r}; use html or json")
    text = render_html(data) if fmt == "html" else json.dumps(data, indent=1)
    atomic_write_text(Path(out), text)
    return Path(out)
