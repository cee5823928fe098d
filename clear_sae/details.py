"""What the inspection report shows of a concept at every layer, computed once and kept beside the dictionaries.

Per layer: the concept's latents there (the library's at the chosen layer, recomputed with the entry's settings
elsewhere), the top ones by target energy with their firing rates, energy shares, activation histograms and the
learning prompts that excite them most, each prompt's tokens with the latent's activation on every token.

Computing this means running the concept's prompts through the backbone; learning has just done so, so it can
pass its `ConceptCodes` and the cost is one small pass over the top prompts. The result is stored as JSON in
the dictionaries' `details/` folder under a key that hashes everything it depends on (the entry's prompts,
latents and settings, the weights of every layer, the settings below), so a later report reads it instead of
recomputing, and a retrained layer or a relearned entry is never read stale.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clear_sae.concepts import (
    ConceptCodes,
    PromptCodes,
    background_at,
    concept_codes,
    entry_config,
    specific_and_shared,
)
from clear_sae.config import POSITIVE, check_fields
from clear_sae.dictionary import Dictionaries
from clear_sae.io import atomic_write_text, prompts_hash
from clear_sae.library import ConceptEntry

if TYPE_CHECKING:
    import torch

    from clear_sae.backbones import Backbone

DETAILS = "details"
"""The folder, inside a dictionary folder, that holds the stored details (one JSON file per key)."""
DETAIL_VERSION = 1
"""Part of every key: raised when what a detail holds changes, so older files are not read."""

log = logging.getLogger("clear_sae")


@dataclass
class DetailConfig:
    """How much detail the report holds of each concept."""

    top_latents: int = field(default=8, metadata=POSITIVE)
    """Concept latents shown per concept and layer: those carrying the most target energy."""
    top_prompts: int = field(default=3, metadata=POSITIVE)
    """Highest-activating prompts shown per latent (from the concept's prompts, and from the cache if given)."""
    bins: int = field(default=16, metadata=POSITIVE)
    """Bins of the activation histograms."""
    batch_size: int = field(default=64, metadata=POSITIVE)
    """Prompts per forward pass."""

    def __post_init__(self) -> None:
        check_fields(self)


def rounded(values: Any, digits: int = 3) -> list[float]:
    """Python floats rounded to `digits`; a tensor is turned into a list first (reading it element by element
    is slow)."""
    values = values.tolist() if hasattr(values, "tolist") else values
    return [round(float(v), digits) for v in values]


def histogram(target: "torch.Tensor", nontarget: "torch.Tensor", bins: int) -> dict[str, Any]:
    """Counts of the non-zero peak activations on target and non-target prompts over shared bin edges."""
    import torch

    fired_t, fired_n = target[target > 0], nontarget[nontarget > 0]
    top = float(torch.cat([fired_t, fired_n]).max()) if len(fired_t) + len(fired_n) else 1.0
    edges = torch.linspace(0, top, bins + 1)
    return {
        "edges": rounded(edges),
        "target": torch.histc(fired_t, bins, 0, top).int().tolist(),
        "nontarget": torch.histc(fired_n, bins, 0, top).int().tolist(),
    }


def latent_rows(latents: list[int], target: PromptCodes, nontarget: PromptCodes, cfg: DetailConfig) -> list[dict]:
    """The `top_latents` of `latents` by target energy, with rates, energy share, histograms and top prompts."""
    energy = target.energy.sum(0)
    total = float(energy.sum()) or 1.0
    shown = sorted(latents, key=lambda j: -float(energy[j]))[: cfg.top_latents]
    rows = []
    for j in shown:
        peak_t, peak_n = target.peak[:, j], nontarget.peak[:, j]
        ranked = sorted(
            [("target", i, v) for i, v in enumerate(peak_t.tolist())]
            + [("nontarget", i, v) for i, v in enumerate(peak_n.tolist())],
            key=lambda r: -r[2],
        )
        rows.append(
            {
                "id": int(j),
                "target_rate": round(float((peak_t > 0).float().mean()), 4),
                "nontarget_rate": round(float((peak_n > 0).float().mean()), 4),
                "energy_share": round(float(energy[j]) / total, 4),
                "histogram": histogram(peak_t, peak_n, cfg.bins),
                "top": [[source, i, round(v, 3)] for source, i, v in ranked[: cfg.top_prompts] if v > 0],
            }
        )
    return rows


def token_activations(
    backbone: "Backbone",
    dictionaries: Dictionaries,
    wanted: dict[str, list[tuple[str, list[int]]]],
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """For each hook point's (prompt, latents) pairs: the prompt's tokens and each of its latents' activation on
    every token (for highlighting). All prompts go through the backbone together, once (with `progress`, under a
    bar counting them); only the activations asked for are kept, so the result stays small."""
    import torch
    from tqdm.auto import tqdm

    hooks = [h for h, pairs in wanted.items() if any(latents for _, latents in pairs)]
    texts = sorted({text for h in hooks for text, _ in wanted[h]})
    columns = {h: sorted({j for _, latents in wanted[h] for j in latents}) for h in hooks}
    needed = {h: {text for text, _ in wanted[h]} for h in hooks}
    found: dict[str, dict[str, tuple[list[str], list[list[float]]]]] = {h: {} for h in hooks}
    bar = tqdm(total=len(texts), desc="highlighting tokens", unit="prompt", disable=not progress)
    for chunk, outputs in backbone.run_batched(texts, hooks, batch_size) if hooks else []:
        bar.update(len(chunk))
        for hook in hooks:
            # Only the prompts shown at this layer, and only their real tokens, are encoded.
            rows = [row for row, text in enumerate(chunk) if text in needed[hook]]
            if not rows:
                continue
            act = outputs[hook]
            index = torch.tensor(rows, device=act.acts.device)
            real = act.mask.to(act.acts.device)[index].bool()
            with torch.inference_mode():
                sae = dictionaries.sae(hook).to(act.acts.device)
                codes = sae.encode(act.acts[index][real].float())[:, torch.tensor(columns[hook])].cpu()
            start = 0
            for row, n in zip(rows, real.sum(1).tolist()):
                tokens = backbone.token_strings(chunk[row], hook)[:n]
                found[hook][chunk[row]] = (tokens, codes[start : start + n].T.tolist())
                start += n
    bar.close()
    out: dict[str, list[dict[str, Any]]] = {}
    for hook, pairs in wanted.items():
        column = {j: c for c, j in enumerate(columns.get(hook, []))}
        out[hook] = []
        for text, latents in pairs if hook in found else []:
            tokens, acts = found[hook][text]
            out[hook].append({"tokens": tokens, "acts": {str(j): rounded(acts[column[j]], 2) for j in latents}})
    return out


def shown_per_prompt(n_prompts: int, tops: list[tuple[int, list[int]]]) -> list[list[int]]:
    """For each of `n_prompts` prompts, the latents it is shown for, given each latent's (id, prompt indices), in
    the order of `tops`."""
    shown: list[list[int]] = [[] for _ in range(n_prompts)]
    for latent, indices in tops:
        for k in indices:
            shown[k].append(latent)
    return shown


def detail_hooks(dictionaries: Dictionaries, entry: ConceptEntry) -> list[str]:
    """The hook points a concept's detail covers: those with a dictionary and a stored score."""
    return [h for h in dictionaries.hook_points if h in entry.layer_scores] or [entry.hook_point]


def concept_detail(
    backbone: "Backbone",
    dictionaries: Dictionaries,
    entry: ConceptEntry,
    cfg: DetailConfig = DetailConfig(),
    codes: ConceptCodes | None = None,
) -> dict[str, dict[str, Any]]:
    """Per layer: the concept's latents there and the detail of the top ones, from the prompts the concept was
    learned from. `codes`, if given, are those prompts already encoded (as learning encoded them); otherwise
    they are encoded here."""
    hooks = detail_hooks(dictionaries, entry)
    concept_cfg = replace(entry_config(entry), batch_size=cfg.batch_size)
    if codes is not None and not all(h in codes.target and h in codes.nontarget for h in hooks):
        codes = None
    codes = concept_codes(
        backbone, dictionaries, entry.target_prompts, entry.nontarget_prompts, concept_cfg, hooks, codes
    )
    layers, wanted = {}, {}
    for hook in hooks:
        target, nontarget = codes.target[hook], codes.nontarget[hook]
        if hook == entry.hook_point:
            latents = list(entry.latents)
        else:
            latents, _ = specific_and_shared(target, nontarget, concept_cfg, background_at(codes, hook))
        rows = latent_rows(latents, target, nontarget, cfg)
        tops = sorted({(source, i) for r in rows for source, i, _ in r["top"]})
        position = {key: k for k, key in enumerate(tops)}
        for r in rows:
            r["top"] = [[position[(source, i)], source, value] for source, i, value in r["top"]]
        texts = [(entry.target_prompts if source == "target" else entry.nontarget_prompts)[i] for source, i in tops]
        shown = shown_per_prompt(len(texts), [(r["id"], [k for k, _, _ in r["top"]]) for r in rows])
        wanted[hook] = list(zip(texts, shown))
        layers[hook] = {"latents": latents, "shown": rows}
    for hook, prompts in token_activations(backbone, dictionaries, wanted, cfg.batch_size).items():
        layers[hook]["prompts"] = prompts
    return layers


def detail_key(dictionaries: Dictionaries, entry: ConceptEntry, cfg: DetailConfig) -> str:
    """A hash of everything a concept's detail depends on; it names the stored file."""
    hooks = detail_hooks(dictionaries, entry)
    inputs = {
        "version": DETAIL_VERSION,
        "backbone": [entry.backbone_id, entry.model_source],
        "hook_point": entry.hook_point,
        "latents": list(entry.latents),
        "selection": asdict(entry.selection),
        "target": prompts_hash(entry.target_prompts),
        "nontarget": prompts_hash(entry.nontarget_prompts),
        "weights": {h: dictionaries.fingerprint(h) for h in hooks},
        "shown": [cfg.top_latents, cfg.top_prompts, cfg.bins],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()[:24]


def detail_path(dictionaries: Dictionaries, entry: ConceptEntry, cfg: DetailConfig) -> Path:
    """Where the detail of this entry, on these dictionaries and with these settings, is stored."""
    return dictionaries.root / DETAILS / f"{detail_key(dictionaries, entry, cfg)}.json"


def read_stored_detail(dictionaries: Dictionaries, entry: ConceptEntry, cfg: DetailConfig) -> dict[str, Any] | None:
    """The detail stored for this entry, dictionaries and settings, or None if there is none (or it is
    unreadable: it is then recomputed and rewritten)."""
    try:
        data = json.loads(detail_path(dictionaries, entry, cfg).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def stored_concept_detail(
    backbone: "Backbone",
    dictionaries: Dictionaries,
    entry: ConceptEntry,
    cfg: DetailConfig = DetailConfig(),
    codes: ConceptCodes | None = None,
) -> dict[str, dict[str, Any]]:
    """`concept_detail`, read from the dictionaries' `details/` folder when an earlier run stored it, else
    computed and stored there (a folder that cannot be written, such as a read-only install, is only read)."""
    found = read_stored_detail(dictionaries, entry, cfg)
    if found is not None:
        return found
    detail = concept_detail(backbone, dictionaries, entry, cfg, codes)
    path = detail_path(dictionaries, entry, cfg)
    try:
        atomic_write_text(path, json.dumps(detail, separators=(",", ":")))
    except OSError as err:
        log.debug(f"not storing the detail of {entry.name!r} in {path.parent}: {err}")
    return detail
