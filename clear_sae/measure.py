"""What erasure did: concept-latent activation before and after, and drift of the final embedding."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clear_sae.concepts import SCORE_CHUNK_ROWS, mean_pooled
from clear_sae.erase import LatentClamp, attach, merge_clamps, resolve_concepts
from clear_sae.errors import ClearSaeError

if TYPE_CHECKING:
    import torch

    from clear_sae.backbones import Activations, Backbone
    from clear_sae.dictionary import Dictionaries
    from clear_sae.library import ConceptEntry, ConceptLibrary


REPORT_FORMAT = "clear_sae.erase_report"
"""The `format` of the JSON report `erase_report` returns."""


def cosine(a: "torch.Tensor", b: "torch.Tensor") -> float:
    """Cosine similarity; exactly 1.0 when the two vectors are bit-for-bit equal."""
    import torch

    if torch.equal(a, b):
        return 1.0
    value = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0)
    return float(value.clamp(-1.0, 1.0))


def peak_concept_activation(clamp: LatentClamp, act: "Activations") -> "torch.Tensor":
    """Per prompt: the largest summed concept-latent activation over its real tokens."""
    total = clamp.concept_codes(act.acts).sum(-1) * act.mask
    return total.amax(dim=1)


def erase_report(
    backbone: "Backbone",
    library: "ConceptLibrary",
    names: list[str],
    prompts: list[str],
    batch_size: int = 32,
    exact: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Run `prompts` with and without the named concepts erased and report, per prompt, the concept-latent
    activation before and after at each concept's layer, whether any concept latent fired, and the cosine
    similarity of the mean-pooled final-layer embeddings."""
    from tqdm.auto import tqdm

    concepts = resolve_concepts(library, names)
    for c in concepts:
        if c.entry.backbone_id != backbone.backbone_id:
            raise ClearSaeError(
                f"concept {c.entry.name!r} was learned on backbone {c.entry.backbone_id!r}, but the "
                f"model is {backbone.backbone_id!r}; erase with the model it was learned on "
                f"(--model {c.entry.model_source}) or rebuild the concept for this model"
            )
        backbone.check_hook_points([c.entry.hook_point])
    # Measuring uses one clamp per concept, so each concept reports its own latents only.
    meters = {c.entry.name: merge_clamps([c], exact=False)[c.entry.hook_point] for c in concepts}
    clamps = merge_clamps(concepts, exact)
    hooks = list(dict.fromkeys([c.entry.hook_point for c in concepts] + [backbone.final_hook_point]))
    rows: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="erasing", unit="batch", disable=not progress):
        batch = prompts[start : start + batch_size]
        clean = backbone.run(batch, hooks)
        with attach(backbone, clamps):
            erased = backbone.run(batch, hooks)
        final_clean = mean_pooled(clean[backbone.final_hook_point])
        final_erased = mean_pooled(erased[backbone.final_hook_point])
        per_concept = {}
        for c in concepts:
            hook, meter = c.entry.hook_point, meters[c.entry.name]
            before = peak_concept_activation(meter, clean[hook])
            after = peak_concept_activation(meter, erased[hook])
            per_concept[c.entry.name] = (before, after)
        for i, prompt in enumerate(batch):
            entry: dict[str, Any] = {"prompt": prompt, "concepts": {}}
            for name, (before, after) in per_concept.items():
                entry["concepts"][name] = {
                    "activation_before": float(before[i]),
                    "activation_after": float(after[i]),
                    "fired": bool(before[i] > 0),
                }
            entry["fired"] = any(v["fired"] for v in entry["concepts"].values())
            entry["cosine_final"] = cosine(final_clean[i], final_erased[i])
            rows.append(entry)
    fired = [r for r in rows if r["fired"]]
    quiet = [r for r in rows if not r["fired"]]
    summary = {
        "n_prompts": len(rows),
        "n_fired": len(fired),
        "n_fired_cleared": sum(all(v["activation_after"] <= 0 for v in r["concepts"].values()) for r in fired),
        "mean_cosine_fired": sum(r["cosine_final"] for r in fired) / len(fired) if fired else None,
        "min_cosine_not_fired": min((r["cosine_final"] for r in quiet), default=None),
    }
    return {
        "format": REPORT_FORMAT,
        "concepts": {
            c.entry.name: {"hook_point": c.entry.hook_point, "latents": c.entry.latents, "strength": c.entry.strength}
            for c in concepts
        },
        "backbone_id": backbone.backbone_id,
        "final_hook_point": backbone.final_hook_point,
        "exact": exact,
        "summary": summary,
        "prompts": rows,
    }


def pooled_final_states(
    backbone: "Backbone",
    prompts: list[str],
    hooks: dict[str, Any] | None = None,
    batch_size: int = 32,
    final_hook: str | None = None,
) -> "torch.Tensor":
    """Mean-pooled final-layer states `[n, d]` (float64) of `prompts`, with `hooks` attached while they run;
    `final_hook`: the state read (default: the backbone's final hook point)."""
    import torch

    final_hook = final_hook or backbone.final_hook_point
    parts = []
    with attach(backbone, hooks or {}):
        for _, out in backbone.run_batched(prompts, [final_hook], batch_size):
            parts.append(mean_pooled(out[final_hook]))
    return torch.cat(parts)


def padding_firing(
    backbone: "Backbone", dictionaries: "Dictionaries", entry: "ConceptEntry", prompts: list[str], batch_size: int = 32
) -> dict[str, float | int | None]:
    """Where a concept's latents fire on `prompts` at its hook point: on real tokens, and on the padding positions
    the pipeline's transformer reads (`Activations.padding`), which an erasure edits too wherever a latent fires.
    Gives the share of prompts with a latent firing on a real token (`fires_on_real`), on the padding
    (`fires_on_padding`, None where the pipeline reads no padding), the padding positions seen, and the share of
    them on which a latent fires."""
    import torch

    hook = entry.hook_point
    sae = dictionaries.sae(hook)
    prompts_firing = {"real": 0, "padding": 0}
    positions = firing = 0
    read_padding = False
    for _, out in backbone.run_batched(prompts, [hook], batch_size):
        act = out[hook]
        for kind, where in (("real", act.mask), ("padding", act.padding)):
            if where is None:
                continue
            fires = rows_firing(sae, act.acts[where.to(act.acts.device)], entry.latents)
            prompts_firing[kind] += len(torch.unique(where.nonzero()[:, 0].cpu()[fires]))
            if kind == "padding":
                positions, firing, read_padding = positions + len(fires), firing + int(fires.sum()), True
    return {
        "prompts": len(prompts),
        "fires_on_real": prompts_firing["real"] / len(prompts),
        "fires_on_padding": prompts_firing["padding"] / len(prompts) if read_padding else None,
        "padding_positions": positions,
        "padding_positions_firing": firing / positions if positions else None,
    }


def rows_firing(sae: Any, rows: "torch.Tensor", latents: list[int]) -> "torch.Tensor":
    """`[n]` bool on the CPU: whether any of `latents` fires on each of `rows` (encoded a chunk at a time)."""
    import torch

    sae = sae.to(rows.device)
    chosen = torch.tensor(latents, dtype=torch.long, device=rows.device)
    fires = torch.zeros(len(rows), dtype=torch.bool)
    with torch.inference_mode():
        for start in range(0, len(rows), SCORE_CHUNK_ROWS):
            codes = sae.encode(rows[start : start + SCORE_CHUNK_ROWS].float())[:, chosen]
            fires[start : start + len(codes)] = (codes > 0).any(-1).cpu()
    return fires
