"""Concept latents per layer from contrasting prompts, separability scores, and layer selection.

For every hook point with a dictionary: encode target prompts (with the concept) and context-matched
non-target prompts (the concept swapped out). Latents that fire on the non-targets form the shared set;
latents that fire on enough targets and (almost) no non-targets are concept-specific, chosen so that
together they still fire on (almost) no non-target. Scores:

- energy (the paper's): S_spe / (S_spe + S_uni), with S the energy `sum (f_j * |W_dec_j|)^2` of the
  target tokens carried by the specific (S_spe) or shared (S_uni) latents. It equals
  `exp(-loss)` for the paper's loss `log(1 + S_uni / (S_spe + eps))`, so its argmax is the loss's argmin.
- auroc: specific latents found on a fit split, then the AUROC of their summed peak activation
  separating held-out targets from held-out non-targets.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clear_sae.config import COUNT, MAX_PROMPT_BATCH, POSITIVE, SHARE, STRENGTH, at_most, check_fields
from clear_sae.dictionary import Dictionaries
from clear_sae.errors import ClearSaeError, NoConceptLatentsError
from clear_sae.io import prompts_hash, words_of
from clear_sae.library import METHOD, ConceptEntry, SelectionSettings, check_concept_name, part_name

if TYPE_CHECKING:
    import torch

    from clear_sae.backbones import Activations, Backbone
    from clear_sae.library import ConceptLibrary

SCORES = ("energy", "auroc")
EPS = 1e-8
MIN_HELDOUT_AUROC = 0.9
"""The held-out AUROC at the chosen layer below which a concept is reported as not separating: its latents then
tell held-out targets from their non-targets no better than 9 times in 10, so erasure misses targets and fires on
non-targets."""
MIN_COVERAGE = 0.9
"""The share of target prompts the chosen latents must fire on: below it, a concept is reported as covered
poorly, since erasure then leaves it in the targets on which none fires."""
MAX_BACKGROUND_FIRING = 0.1
"""The share of the background captions the chosen latents may fire on before a concept is reported as erasing
beyond itself: erasure edits those unrelated prompts too."""
RARE_WORD_CAPTIONS = 5
"""A concept word in fewer of the dictionaries' training captions than this is reported as rare: the dictionaries
can hardly hold a latent for it."""


@dataclass
class ConceptConfig:
    """How concept latents are found and the layer chosen."""

    min_target_rate: float = field(default=0.1, metadata=SHARE)
    """A specific latent fires on at least this share of target prompts."""
    max_nontarget_rate: float = field(default=0.05, metadata=SHARE)
    """A latent firing on more than this share of non-target prompts is shared, never specific. The
    paper's description counts any firing on a non-target; a small tolerance keeps one stray prompt
    from vetoing a latent that fires on nearly every target."""
    max_latents: int = field(default=32, metadata=POSITIVE)
    """Keep at most this many specific latents."""
    background: int = field(default=256, metadata=COUNT)
    """Captions of the dictionaries' training corpus (the sample their manifest records, less those naming the
    concept's words) on which concept latents must stay quiet: the learning prompts share a few contexts, and a
    latent of one of those contexts would otherwise be taken for the concept's. 0 (or dictionaries whose
    manifest records no sample) skips this check."""
    max_background_rate: float = field(default=0.05, metadata=SHARE)
    """A latent firing on more than this share of the background captions is not specific, and the chosen
    latents together fire on at most this share of them."""
    score: str = "energy"
    """The score the layer is chosen by: energy (the paper's) or auroc."""
    holdout: float = field(default=0.3, metadata=SHARE)
    """Share of prompt pairs held out for the AUROC score."""
    strength: float = field(default=1.0, metadata=STRENGTH)
    """gamma in h' = h - gamma * W_dec (f(h) * mask)."""
    seed: int = field(default=0, metadata=COUNT)
    """Seeds the fit/held-out split."""
    batch_size: int = field(default=64, metadata=at_most(MAX_PROMPT_BATCH, POSITIVE))
    """Prompts per forward pass."""

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class PromptCodes:
    """Per prompt and latent: the peak activation over real tokens and the decoded energy summed over them."""

    peak: "torch.Tensor"
    energy: "torch.Tensor"
    pooled: "torch.Tensor | None" = None
    """Per prompt, the residual stream averaged over its real tokens (float64, `[n, d]`; what a probe reads at the
    final hook point), where the codes were computed from the activations."""


@dataclass
class ConceptCodes:
    """A concept's target and non-target prompts encoded at every hook point: computed once, read by learning,
    calibration and the report's detail alike."""

    target: dict[str, PromptCodes]
    nontarget: dict[str, PromptCodes]
    background: dict[str, "torch.Tensor"] | None = None
    """Whether each latent fires on each background caption (`background_prompts`; boolean, caption by latent),
    where there are any."""

    def check(self, hook_points: list[str], n_target: int, n_nontarget: int, n_background: int = 0) -> None:
        """Raise a one-line error unless these codes cover `hook_points` for this many prompts (and, where any
        background captions were encoded, `n_background` of them)."""
        background = self.background if n_background > 0 else None
        for hook in hook_points:
            if (
                hook not in self.target
                or hook not in self.nontarget
                or (background is not None and hook not in background)
            ):
                raise ClearSaeError(f"the concept's codes hold no layer {hook!r}; encode it with encode_concept")
            if background is not None and len(background[hook]) != n_background:
                raise ClearSaeError(
                    f"the concept's codes at {hook} hold {len(background[hook])} background captions, "
                    f"not {n_background}; encode these prompts with concept_codes"
                )
            if len(self.target[hook].peak) != n_target or len(self.nontarget[hook].peak) != n_nontarget:
                raise ClearSaeError(
                    f"the concept's codes at {hook} are of {len(self.target[hook].peak)} target and "
                    f"{len(self.nontarget[hook].peak)} non-target prompts, not {n_target} and {n_nontarget}; "
                    "encode these prompts with encode_concept"
                )


@dataclass
class LayerProfile:
    """A concept at one hook point."""

    hook_point: str
    latents: list[int]
    n_specific: int
    n_shared: int
    energy: float
    loss: float
    auroc: float | None
    coverage: float
    """Share of the target prompts on which a chosen latent fires: the targets erasure reaches."""
    background_rate: float | None = None
    """Share of the background captions on which a chosen latent fires (None where none were encoded)."""

    def scores(self) -> dict[str, Any]:
        """The JSON form stored in the library (latent ids left out)."""
        data = asdict(self)
        data.pop("latents")
        data.pop("hook_point")
        return data


SCORE_CHUNK_ROWS = 2048
"""Real tokens encoded together when scoring prompts: the dense codes of one chunk are 2,048 x d_sae floats (512 MiB
at 65,536 latents), whatever the batch and its padding."""


def mean_pooled(act: "Activations") -> "torch.Tensor":
    """Mean over real tokens, in float64: `[batch, d]`."""
    mask = act.mask.unsqueeze(-1).double()
    return (act.acts.double() * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def batch_codes(sae: Any, act: "Activations") -> PromptCodes:
    """Peak activation and decoded energy per prompt and latent of one batch's activations at one hook point: only
    the real tokens are encoded, a chunk of rows at a time, on the device the activations are on; the result is on
    the CPU."""
    import torch

    from clear_sae.sae.plain import fired_codes

    real = act.mask.bool()
    rows, prompt_of_row = act.acts[real], real.nonzero()[:, 0]
    sae = sae.to(rows.device)
    with torch.inference_mode():
        peak = torch.zeros(real.shape[0], int(sae.cfg.d_sae), device=rows.device)
        energy = torch.zeros_like(peak)
        dec_norm = sae.W_dec.norm(dim=-1).float()
        d_sae = peak.shape[1]
        for start in range(0, rows.shape[0], SCORE_CHUNK_ROWS):
            row, latent, fired = fired_codes(sae, rows[start : start + SCORE_CHUNK_ROWS].float())
            which = prompt_of_row[start : start + SCORE_CHUNK_ROWS]
            # Only the latents that fire are accumulated (at most k of d_sae per token for a TopK SAE), in row
            # order, as a dense accumulation adds them: codes are never negative, so the zeros left out change
            # nothing.
            slot = which[row] * d_sae + latent
            peak.view(-1).scatter_reduce_(0, slot, fired, "amax")
            energy.view(-1).index_add_(0, slot, (fired * dec_norm[latent]).pow(2))
    return PromptCodes(peak.cpu(), energy.cpu(), mean_pooled(act).cpu())


def encode_prompts(
    backbone: "Backbone", dictionaries: "Dictionaries", prompts: list[str], hook_points: list[str], batch_size: int = 64
) -> dict[str, PromptCodes]:
    """Run `prompts` once through the backbone and encode every layer with its dictionary."""
    import torch

    parts: dict[str, list[PromptCodes]] = {h: [] for h in hook_points}
    for _, outputs in backbone.run_batched(prompts, hook_points, batch_size):
        for hook in hook_points:
            parts[hook].append(batch_codes(dictionaries.sae(hook), outputs[hook]))
    return {
        h: PromptCodes(
            torch.cat([p.peak for p in parts[h]]),
            torch.cat([p.energy for p in parts[h]]),
            torch.cat([p.pooled for p in parts[h] if p.pooled is not None]),
        )
        for h in hook_points
    }


def auroc(positive: "torch.Tensor", negative: "torch.Tensor") -> float:
    """Area under the ROC curve: the chance a positive outscores a negative (ties count half)."""
    greater = (positive[:, None] > negative[None, :]).float().mean()
    ties = (positive[:, None] == negative[None, :]).float().mean()
    return float(greater + 0.5 * ties)


def ranked_candidates(
    target: PromptCodes, nontarget: PromptCodes, cfg: ConceptConfig, background: "torch.Tensor | None" = None
) -> tuple[list[int], "torch.Tensor"]:
    """The candidate latent ids in the order the selection considers them, and the boolean shared mask.

    Candidates fire on at least `min_target_rate` of targets (and on one at least), are not shared (they fire
    on at most `max_nontarget_rate` of non-targets) and fire on at most `max_background_rate` of the background
    captions (`background`: whether each latent fires on each), if given; the most contrastive come first (target
    rate minus non-target rate, then target energy).
    """
    import torch

    target_rate, nontarget_rate = (target.peak > 0).float().mean(0), (nontarget.peak > 0).float().mean(0)
    shared = nontarget_rate > cfg.max_nontarget_rate
    # Firing on at least one target is required even at min_target_rate 0: a latent silent on every target is
    # no concept latent at all.
    fires = (target_rate >= cfg.min_target_rate) & (target_rate > 0)
    quiet = torch.ones_like(fires)
    if background is not None and len(background):
        quiet = background.float().mean(0) <= cfg.max_background_rate
    candidates = torch.nonzero(fires & ~shared & quiet).squeeze(-1)
    # Sorted on float64 keys, stably, so ties keep ascending ids: the order a Python sort on float() keys gives.
    contrast = target_rate[candidates].double() - nontarget_rate[candidates].double()
    energy = target.energy.sum(0)[candidates].double()
    order = np.lexsort((-energy.numpy(), -contrast.numpy()))
    return candidates[torch.from_numpy(order)].tolist(), shared


def specific_and_shared(
    target: PromptCodes, nontarget: PromptCodes, cfg: ConceptConfig, background: "torch.Tensor | None" = None
) -> tuple[list[int], "torch.Tensor"]:
    """Concept-specific latent ids (sorted, at most `max_latents`) and the boolean shared mask.

    The `ranked_candidates` are taken greedily in their order, skipping any that would make the chosen latents
    together fire on more than `max_nontarget_rate` of the non-target prompts (or more than `max_background_rate`
    of the `background` captions): a set of individually rare latents must not add up to a common one.
    """
    candidates, shared = ranked_candidates(target, nontarget, cfg, background)
    limits = [(nontarget.peak > 0, cfg.max_nontarget_rate)]
    if background is not None and len(background):
        limits.append((background, cfg.max_background_rate))
    # Per limit: each candidate's firing as a numpy column, the prompts on which a chosen latent fires so far, and
    # the most prompts allowed.
    columns = [fires[:, candidates].numpy().T for fires, _ in limits]
    unions = [np.zeros(len(fires), dtype=bool) for fires, _ in limits]
    allowed = [most_firing_allowed(len(fires), rate) for fires, rate in limits]
    chosen: list[int] = []
    for n, latent in enumerate(candidates):
        widened = [union | column[n] for union, column in zip(unions, columns)]
        if any(int(w.sum()) > most for w, most in zip(widened, allowed)):
            continue
        chosen.append(latent)
        unions = widened
        if len(chosen) == cfg.max_latents:
            break
    return sorted(chosen), shared


def most_firing_allowed(n: int, rate: float) -> int:
    """The most of `n` prompts a latent set may fire on without firing on more than `rate` of them, the share
    computed as a float32 mean of a boolean tensor (as the rates are everywhere), so that 6 of 60 is not within
    10%: float32's 0.1 lies a hair above it."""
    import torch

    shares = torch.arange(n + 1, dtype=torch.float32) / n
    return int((shares.double() <= rate).sum()) - 1


def split_pairs(
    n_target: int, n_nontarget: int, holdout: float, seed: int
) -> tuple[list[int], list[int], list[int], list[int]]:
    """Fit and held-out row indices (targets, non-targets, held-out targets, held-out non-targets); equal-sized
    lists are treated as context-matched pairs and split together."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    if n_target == n_nontarget:  # context-matched pairs stay together
        order = torch.randperm(n_target, generator=gen).tolist()
        k = max(1, round(holdout * n_target)) if n_target >= 4 else 0
        return order[k:], order[k:], order[:k], order[:k]
    t_order = torch.randperm(n_target, generator=gen).tolist()
    n_order = torch.randperm(n_nontarget, generator=gen).tolist()
    kt = max(1, round(holdout * n_target)) if n_target >= 4 else 0
    kn = max(1, round(holdout * n_nontarget)) if n_nontarget >= 4 else 0
    return t_order[kt:], n_order[kn:], t_order[:kt], n_order[:kn]


def _subset(codes: PromptCodes, rows: list[int]) -> PromptCodes:
    return PromptCodes(codes.peak[rows], codes.energy[rows], None if codes.pooled is None else codes.pooled[rows])


def profile_layer(
    hook: str,
    target: PromptCodes,
    nontarget: PromptCodes,
    cfg: ConceptConfig,
    background: "torch.Tensor | None" = None,
) -> LayerProfile:
    """Specific and shared latents of one layer (quiet on the `background` captions, if given) and its
    separability scores."""
    latents, shared = specific_and_shared(target, nontarget, cfg, background)
    energy = target.energy.sum(0)
    s_spe = float(energy[latents].sum()) if latents else 0.0
    s_uni = float(energy[shared].sum())
    loss = math.log1p(s_uni / (s_spe + EPS))
    fit_t, fit_n, held_t, held_n = split_pairs(len(target.peak), len(nontarget.peak), cfg.holdout, cfg.seed)
    score_auroc = None  # a layer without concept latents has no AUROC to speak of (and is never chosen)
    if held_t and held_n and latents:
        fit_latents, _ = specific_and_shared(_subset(target, fit_t), _subset(nontarget, fit_n), cfg, background)
        if fit_latents:
            pos = target.peak[held_t][:, fit_latents].sum(-1)
            neg = nontarget.peak[held_n][:, fit_latents].sum(-1)
            score_auroc = round(auroc(pos, neg), 5)
    return LayerProfile(
        hook_point=hook,
        latents=latents,
        n_specific=len(latents),
        n_shared=int(shared.sum()),
        energy=round(math.exp(-loss), 6) if latents else 0.0,
        loss=round(loss, 6),
        auroc=score_auroc,
        coverage=round(float((target.peak[:, latents] > 0).any(-1).float().mean()), 4) if latents else 0.0,
        background_rate=None
        if background is None or not len(background)
        else round(float(background[:, latents].any(-1).float().mean()), 4),
    )


def score_of(profile: LayerProfile, score: str) -> float:
    """The profile's value of `score`, -1 where it was not computed (so such a layer ranks last)."""
    value = getattr(profile, score)
    return value if value is not None else -1.0


def select_layer(profiles: list[LayerProfile], score: str) -> LayerProfile:
    """The profile with the highest score (the earliest layer on ties); layers without latents never win."""
    if score not in SCORES:
        raise ClearSaeError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
    usable = [p for p in profiles if p.latents]
    if not usable:
        raise NoConceptLatentsError(
            "no layer has concept-specific latents: every latent that fires on the targets also fires on the "
            "non-targets or on the background captions; add more target prompts, use non-targets closer in context, "
            "or use dictionaries trained on a corpus that holds the concept"
        )
    return max(usable, key=lambda p: score_of(p, score))


def _profile_at(profiles: list[LayerProfile], layer: str) -> LayerProfile:
    """The profile of hook point `layer`, which must have concept latents."""
    for p in profiles:
        if p.hook_point == layer and p.latents:
            return p
    raise ClearSaeError(
        f"layer {layer!r} has no concept-specific latents here; choose one of "
        f"{', '.join(p.hook_point for p in profiles if p.latents)}"
    )


def background_rows(dictionaries: "Dictionaries", target: list[str], nontarget: list[str], n: int) -> list[int]:
    """Positions in the dictionaries' recorded corpus sample of up to `n` captions that name none of the concept's
    words (nor a word starting with one, such as a plural): the background its latents must stay quiet on."""
    marks = tuple(concept_words(target, nontarget))
    if n == 0 or not marks:
        return []
    sample = dictionaries.corpus_sample()
    return [i for i, c in enumerate(sample) if not any(w.startswith(marks) for w in words_of(c))][:n]


def background_prompts(dictionaries: "Dictionaries", target: list[str], nontarget: list[str], n: int) -> list[str]:
    """The captions at `background_rows`."""
    sample = dictionaries.corpus_sample()
    return [sample[i] for i in background_rows(dictionaries, target, nontarget, n)]


SAMPLE_BATCH = 64
"""Captions per forward pass when the corpus sample is encoded: always the same batches of the sample, so that its
codes never depend on the batch size a caller chose nor on which captions a concept needs."""
_SAMPLE_FIRES: dict[tuple[Any, ...], dict[int, dict[str, "torch.Tensor"]]] = {}
SAMPLE_CACHE = 8
"""Encoded corpus samples kept per process (one per backbone, dictionaries and layers)."""


def sample_fires(
    backbone: "Backbone", dictionaries: "Dictionaries", hook_points: list[str], rows: list[int]
) -> dict[str, "torch.Tensor"]:
    """Per hook point, whether each latent fires on the captions at `rows` of the dictionaries' corpus sample
    (boolean, caption by latent). The sample is encoded in fixed batches of `SAMPLE_BATCH`, each batch once per
    process for a backbone, these dictionaries' weights and these layers, and only when a row in it is asked for:
    every concept reads the same codes, whichever came first."""
    import torch

    sample = dictionaries.corpus_sample()
    key = (
        backbone.backbone_id,
        backbone.source,
        prompts_hash(sample),
        tuple((h, dictionaries.fingerprint(h)) for h in hook_points),
    )
    if key not in _SAMPLE_FIRES:
        while len(_SAMPLE_FIRES) >= SAMPLE_CACHE:
            _SAMPLE_FIRES.pop(next(iter(_SAMPLE_FIRES)))
        _SAMPLE_FIRES[key] = {}
    batches = _SAMPLE_FIRES[key]
    for batch in sorted({row // SAMPLE_BATCH for row in rows} - set(batches)):
        captions = sample[batch * SAMPLE_BATCH : (batch + 1) * SAMPLE_BATCH]
        codes = encode_prompts(backbone, dictionaries, captions, hook_points, SAMPLE_BATCH)
        batches[batch] = {h: codes[h].peak > 0 for h in hook_points}
    return {h: torch.stack([batches[row // SAMPLE_BATCH][h][row % SAMPLE_BATCH] for row in rows]) for h in hook_points}


def encode_concept(
    backbone: "Backbone",
    dictionaries: "Dictionaries",
    target: list[str],
    nontarget: list[str],
    hook_points: list[str] | None = None,
    batch_size: int = 64,
) -> ConceptCodes:
    """Check a concept's prompts, backbone and layers, and encode both prompt lists at every hook point (default:
    every layer with a dictionary)."""
    if not target:
        raise ClearSaeError("the target prompt list is empty; pass prompts that contain the concept")
    if not nontarget:
        raise ClearSaeError("the non-target prompt list is empty; pass the same prompts with the concept swapped out")
    hook_points = hook_points or dictionaries.hook_points
    dictionaries.check_backbone(backbone.backbone_id, {})
    backbone.check_hook_points(hook_points)
    dictionaries.check_backbone(backbone.backbone_id, {h: backbone.d_model(h) for h in hook_points})
    return ConceptCodes(
        encode_prompts(backbone, dictionaries, target, hook_points, batch_size),
        encode_prompts(backbone, dictionaries, nontarget, hook_points, batch_size),
    )


def concept_codes(
    backbone: "Backbone",
    dictionaries: "Dictionaries",
    target: list[str],
    nontarget: list[str],
    cfg: ConceptConfig,
    hook_points: list[str],
    codes: ConceptCodes | None = None,
) -> ConceptCodes:
    """The concept's prompts encoded at `hook_points` (`codes` where given, else encoded here) with its background
    under `cfg` (`background_rows` of `sample_fires`; kept from `codes` where they hold one of that size)."""
    if codes is None:
        codes = encode_concept(backbone, dictionaries, target, nontarget, hook_points, cfg.batch_size)
    rows = background_rows(dictionaries, target, nontarget, cfg.background)
    background = None
    given = codes.background
    if rows and given is not None and all(len(given.get(h, ())) == len(rows) for h in hook_points):
        background = given  # as an earlier call of this function gave them
    elif rows:
        background = sample_fires(backbone, dictionaries, hook_points, rows)
    codes = replace(codes, background=background)
    codes.check(hook_points, len(target), len(nontarget), len(rows))
    return codes


def background_at(codes: ConceptCodes, hook: str) -> "torch.Tensor | None":
    """Whether each latent fires on each background caption at `hook`, or None where there is no background."""
    return None if codes.background is None else codes.background[hook]


def profile_concept(
    backbone: "Backbone",
    dictionaries: "Dictionaries",
    target: list[str],
    nontarget: list[str],
    cfg: ConceptConfig = ConceptConfig(),
    hook_points: list[str] | None = None,
    codes: ConceptCodes | None = None,
) -> list[LayerProfile]:
    """Profile a concept at every hook point that has a dictionary (`codes`: the prompts already encoded)."""
    return profile_concept_at_rates(
        backbone, dictionaries, target, nontarget, cfg, [cfg.max_nontarget_rate], hook_points, codes
    )[cfg.max_nontarget_rate]


def profile_concept_at_rates(
    backbone: "Backbone",
    dictionaries: "Dictionaries",
    target: list[str],
    nontarget: list[str],
    cfg: ConceptConfig,
    max_nontarget_rates: list[float],
    hook_points: list[str] | None = None,
    codes: ConceptCodes | None = None,
) -> dict[float, list[LayerProfile]]:
    """`profile_concept` at several `max_nontarget_rate` values, the prompts encoded once (or `codes`, if given,
    read: `encode_concept` of these prompts; their background is added here)."""
    hook_points = hook_points or dictionaries.hook_points
    codes = concept_codes(backbone, dictionaries, target, nontarget, cfg, hook_points, codes)
    return {
        rate: [
            profile_layer(
                h, codes.target[h], codes.nontarget[h], replace(cfg, max_nontarget_rate=rate), background_at(codes, h)
            )
            for h in hook_points
        ]
        for rate in max_nontarget_rates
    }


def format_table(profiles: list[LayerProfile], chosen: str, score: str, why: str | None = None) -> str:
    """The per-layer scores as a small text table, the chosen layer marked; scores are printed at the
    precision they are stored and compared at, so a mark "max" is the argmax of what is shown. `why` says why
    a layer other than the best-scoring one was chosen (default: "chosen by calibration")."""
    usable = [p for p in profiles if p.latents]
    best = select_layer(profiles, score).hook_point if usable else None
    why = f"max {score}" if chosen == best else (why or "chosen by calibration")
    lines = [f"{'layer':<26} {'energy':>9} {'loss':>9} {'auroc':>7} {'specific':>8} {'shared':>7} {'covers':>6}"]
    for p in profiles:
        mark = f"  <- chosen ({why})" if p.hook_point == chosen else ""
        auroc_text = f"{p.auroc:.5f}" if p.auroc is not None else "-"
        lines.append(
            f"{p.hook_point:<26} {p.energy:>9.6f} {p.loss:>9.4f} {auroc_text:>7} {p.n_specific:>8} "
            f"{p.n_shared:>7} {p.coverage:>6.0%}{mark}"
        )
    return "\n".join(lines)


def profiles_with_fallback(
    backbone: "Backbone",
    dictionaries: "Dictionaries",
    target: list[str],
    nontarget: list[str],
    cfg: ConceptConfig,
    hook_points: list[str] | None = None,
    codes: ConceptCodes | None = None,
) -> tuple[ConceptConfig, list[LayerProfile]]:
    """The concept's profiles under `cfg`, and `cfg` itself; but where the background check leaves no layer whose
    latents reach `MIN_COVERAGE` of the targets, the profiles without the check (`max_background_rate` 1: the
    background is still measured, nothing is vetoed by it) and that config. Erasure then reaches the targets as
    before the check, and `quality_warnings` reports how much of the background it also edits."""
    hook_points = hook_points or dictionaries.hook_points
    codes = concept_codes(backbone, dictionaries, target, nontarget, cfg, hook_points, codes)
    profiles = profile_concept(backbone, dictionaries, target, nontarget, cfg, hook_points, codes)
    usable = [p for p in profiles if p.latents]
    if codes.background is None or cfg.max_background_rate >= 1:
        return cfg, profiles
    if usable and select_layer(profiles, cfg.score).coverage >= MIN_COVERAGE:
        return cfg, profiles
    unchecked = replace(cfg, max_background_rate=1.0)
    return unchecked, profile_concept(backbone, dictionaries, target, nontarget, unchecked, hook_points, codes)


def learn_concept(
    backbone: "Backbone",
    dictionaries: "Dictionaries",
    name: str,
    target: list[str],
    nontarget: list[str],
    cfg: ConceptConfig = ConceptConfig(),
    hook_points: list[str] | None = None,
    profiles: list[LayerProfile] | None = None,
    layer: str | None = None,
    codes: ConceptCodes | None = None,
) -> tuple[ConceptEntry, list[LayerProfile]]:
    """Profile a concept at every layer and pick the layer; returns the entry (its `dictionary` the
    dictionaries' absolute folder, for `ConceptLibrary.add`) and the profiles.

    Trains nothing: the dictionaries are reused as they are. `profiles`, if given, are this concept's
    profiles under `cfg`, already computed; `codes`, if given, the prompts already encoded (`encode_concept`).
    `layer`, if given, is used instead of the best-scoring one (calibration passes the layer its judge accepted).
    Without `profiles` and `layer`, a concept that the background check leaves covered poorly is learned without
    the check (`profiles_with_fallback`); the entry's selection settings say which.
    """

    if not name.strip():
        raise ClearSaeError("the concept name is empty; pass --name NAME")
    check_concept_name(name)
    if cfg.score not in SCORES:
        raise ClearSaeError(f"unknown score {cfg.score!r}; choose one of {', '.join(SCORES)}")
    if profiles is None and layer is None:
        cfg, profiles = profiles_with_fallback(backbone, dictionaries, target, nontarget, cfg, hook_points, codes)
    elif profiles is None:
        profiles = profile_concept(backbone, dictionaries, target, nontarget, cfg, hook_points, codes)
    chosen = select_layer(profiles, cfg.score) if layer is None else _profile_at(profiles, layer)
    entry = ConceptEntry(
        name=name,
        hook_point=chosen.hook_point,
        latents=chosen.latents,
        strength=cfg.strength,
        dictionary=str(Path(dictionaries.root).resolve()),
        backbone_id=backbone.backbone_id,
        model_source=backbone.source or backbone.backbone_id,
        score=cfg.score,
        layer_scores={p.hook_point: p.scores() for p in profiles},
        target_hash=prompts_hash(target),
        nontarget_hash=prompts_hash(nontarget),
        n_target=len(target),
        n_nontarget=len(nontarget),
        selection=selection_settings(
            replace(cfg, background=len(background_rows(dictionaries, target, nontarget, cfg.background)))
        ),
        dictionary_fingerprint=dictionaries.fingerprint(chosen.hook_point),
        target_prompts=list(target),
        nontarget_prompts=list(nontarget),
    )
    return entry, profiles


def encoder_groups(hook_points: list[str]) -> dict[str, list[str]]:
    """Hook points grouped by the text encoder they belong to (the name before the first dot), in order."""
    groups: dict[str, list[str]] = {}
    for hook in hook_points:
        groups.setdefault(hook.split(".", 1)[0], []).append(hook)
    return groups


def learn_concept_per_encoder(
    backbone: "Backbone",
    dictionaries: "Dictionaries",
    name: str,
    target: list[str],
    nontarget: list[str],
    cfg: ConceptConfig = ConceptConfig(),
    hook_points: list[str] | None = None,
) -> list[tuple[ConceptEntry, list[LayerProfile]]]:
    """`learn_concept` within each text encoder: with several (Flux, SD3), one entry per encoder whose dictionaries
    hold latents for the concept, named `name@encoder` and with its layer chosen among that encoder's hook points,
    so that erasure reaches every path the prompt takes; with one encoder, the single entry `learn_concept` gives.
    Encoders without concept latents are left out; none at all is a one-line error."""

    def learn(group: list[str] | None) -> tuple[ConceptEntry, list[LayerProfile]]:
        return learn_concept(backbone, dictionaries, name, target, nontarget, cfg, group)

    return for_each_encoder(name, hook_points or dictionaries.hook_points, learn, hook_points)


def for_each_encoder(
    name: str, candidates: list[str], learn: Callable[[list[str] | None], tuple[Any, ...]], asked: list[str] | None
) -> list[Any]:
    """Run `learn` on each text encoder's share of `candidates` and name each result's entry (its first item)
    `name@encoder`; with one encoder, `learn(asked)` alone, the entry keeping `name`. An encoder without concept
    latents is left out; none at all is a one-line error."""
    groups = encoder_groups(candidates)
    if len(groups) < 2:
        return [learn(asked)]
    learned, missing = [], []
    for encoder, group in groups.items():
        try:
            result = learn(group)
        except NoConceptLatentsError:
            missing.append(encoder)
            continue
        result[0].name = part_name(name, encoder)
        learned.append(result)
    if not learned:
        raise ClearSaeError(
            f"no text encoder ({', '.join(missing)}) has concept-specific latents for {name!r}; add more target "
            "prompts, use non-targets closer in context, or use dictionaries trained on a corpus that holds the concept"
        )
    return learned


def selection_settings(cfg: ConceptConfig) -> SelectionSettings:
    """What an entry records of the `ConceptConfig` it was learned with."""
    recorded = asdict(cfg)
    return SelectionSettings(**{f.name: recorded[f.name] for f in fields(SelectionSettings)})


def entry_config(entry: ConceptEntry) -> ConceptConfig:
    """The `ConceptConfig` an entry was learned with (strength and batch size at their defaults)."""
    return ConceptConfig(**asdict(entry.selection))


def concept_settings(library: "ConceptLibrary", name: str) -> ConceptConfig:
    """The `ConceptConfig` the library's entry was learned with."""
    return entry_config(library.get(name))


def latents_by_layer(
    backbone: "Backbone", library: "ConceptLibrary", name: str, target: list[str], nontarget: list[str]
) -> dict[str, list[int]]:
    """The concept's specific latents at every layer of its dictionaries, from these prompts and its settings."""

    dictionaries = Dictionaries(library.dictionary_path(library.get(name)))
    profiles = profile_concept(backbone, dictionaries, target, nontarget, concept_settings(library, name))
    return {p.hook_point: p.latents for p in profiles}


def concept_words(target: list[str], nontarget: list[str]) -> list[str]:
    """The words that mark the concept: in at least a fifth of the targets and at most a twentieth of the
    non-targets (for context-matched pairs, the swapped words), most frequent in the targets first."""
    in_target = Counter(w for p in target for w in words_of(p))
    in_nontarget = Counter(w for p in nontarget for w in words_of(p))
    marked = [w for w, n in in_target.items() if n >= 0.2 * len(target) and in_nontarget[w] <= 0.05 * len(nontarget)]
    return sorted(marked, key=lambda w: (-in_target[w], w))


def quality_warnings(entry: ConceptEntry, dictionaries: Dictionaries) -> list[str]:
    """What makes a learned concept unreliable, one line each (none for a concept that separates well): a
    held-out AUROC at the chosen layer below `MIN_HELDOUT_AUROC` (or none measured), latents that fire on fewer
    than `MIN_COVERAGE` of the targets, no background captions to check the latents against, and concept words
    that the dictionaries' training corpus hardly holds (where the manifest records its vocabulary)."""
    warnings = []
    scores = entry.layer_scores.get(entry.hook_point, {})
    auroc_at, coverage, background_rate = scores.get("auroc"), scores.get("coverage"), scores.get("background_rate")
    if auroc_at is None:
        warnings.append(
            f"concept {entry.name!r}: too few prompt pairs to hold any out (at least 4 of each are needed), so how "
            "well it separates is not measured; add prompts"
        )
    elif auroc_at < MIN_HELDOUT_AUROC:
        warnings.append(
            f"concept {entry.name!r} separates poorly at its chosen layer {entry.hook_point}: held-out AUROC "
            f"{auroc_at:.2f}, below {MIN_HELDOUT_AUROC}, so erasure will miss targets and fire on non-targets; "
            "use non-targets that differ from the targets only in the concept, more prompts, or dictionaries "
            "trained on a corpus that holds the concept"
        )
    if isinstance(coverage, (int, float)) and coverage < MIN_COVERAGE:
        warnings.append(
            f"concept {entry.name!r}: its latents at {entry.hook_point} fire on only {coverage:.0%} of the target "
            f"prompts (below {MIN_COVERAGE:.0%}), so erasure leaves the concept in the others; pass --layers with a "
            "layer the table shows covering more, or use dictionaries trained on a corpus that holds the concept"
        )
    if isinstance(background_rate, (int, float)) and background_rate > MAX_BACKGROUND_FIRING:
        warnings.append(
            f"concept {entry.name!r}: its latents at {entry.hook_point} also fire on {background_rate:.0%} of the "
            f"{entry.selection.background} background captions that do not name it (above "
            f"{MAX_BACKGROUND_FIRING:.0%}), so erasure will also edit unrelated prompts; no layer holds latents "
            "that reach the targets and stay quiet there: use dictionaries trained on a corpus that holds the concept"
        )
    if entry.method == METHOD and entry.selection.background == 0 and entry.selection.max_background_rate < 1:
        warnings.append(
            f"concept {entry.name!r}: no background captions were checked (--background 0, a manifest that "
            "records no corpus sample, or prompts in which no word marks the concept), so latents of the prompts' "
            "shared contexts may be taken for the concept's and erasure may fire on unrelated prompts; retrain the "
            "dictionaries with `clear-sae train`, or use non-targets that differ from the targets in the concept"
        )
    corpus = dictionaries.manifest.get("corpus")
    if isinstance(corpus, dict) and isinstance(corpus.get("word_counts"), dict):
        counts = corpus["word_counts"]
        rare = [
            w
            for w in concept_words(entry.target_prompts, entry.nontarget_prompts)
            if counts.get(w, 0) < RARE_WORD_CAPTIONS
        ]
        if rare:
            shown = ", ".join(f"{w!r} ({counts.get(w, 0)})" for w in rare[:5])
            warnings.append(
                f"concept {entry.name!r}: its words {shown} are in fewer than {RARE_WORD_CAPTIONS} of the "
                f"{corpus.get('captions', '?')} captions the dictionaries were trained on, which can hardly hold a "
                "latent for them; train dictionaries on a corpus that holds the concept"
            )
    return warnings
