"""Latent statistics over a whole activation cache: what every latent of a dictionary is, not only the concepts'.

For each layer, streamed over the cache in chunks of rows (memory bounded by the dictionary's width, the settings
and two int32 columns of the cache, not by its rows' width), every latent gets:

- its firing density (the share of the cache's token rows on which it is non-zero), its largest and mean
  activation, and a histogram of its non-zero activations over `(0, max]`;
- its top activating tokens, and a sample of the tokens it fires on, drawn uniformly: the sample keeps the
  firing tokens with the smallest pseudo-random key of (row, latent), so it does not depend on the chunking
  and a brute-force search finds the same rows; a page sorts the sample into quantile buckets, showing the
  latent's typical firing beside its extremes, as SAEDashboard's intervals do;
- for the prompt of each of those tokens, the latent's activation on every token of that prompt;
- attribution, where the backbone exposes its input embeddings: the vocabulary tokens whose embeddings align
  most (and least) with the latent's encoder direction (what makes it fire, read directly) and with its
  decoder direction (what it writes), the text encoder's analogue of logit attribution.

Two passes read the cache: the first counts and selects, the second (each latent's maximum now known) bins the
histogram and reads the selected prompts' activations.

Stored beside the dictionaries, per layer: `features/<hook>.safetensors` (the arrays below) and
`features/<hook>.json` (the key, the settings, and the tokens of every prompt and vocabulary entry the arrays
point to). The key hashes the SAE's weights, the cache's prompts and rows, and the settings, so a report never
reads statistics of other weights or another corpus.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from clear_sae.config import POSITIVE, check_fields
from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_save_tensors, atomic_write_text

if TYPE_CHECKING:
    import torch

    from clear_sae.backbones import Backbone
    from clear_sae.cache import ActivationCache
    from clear_sae.dictionary import Dictionaries

FEATURES = "features"
"""The folder, inside a dictionary folder, that holds the statistics (two files per layer)."""
FEATURES_VERSION = 2
"""Part of every key: raised when what the files hold changes, so older files are not read."""
RECORD = "clear_sae.features"
"""The safetensors metadata key holding the key of the statistics (matched against the JSON's)."""


@dataclass
class FeatureConfig:
    """What the statistics keep of each latent."""

    top: int = field(default=10, metadata=POSITIVE)
    """Top activating tokens kept per latent."""
    samples: int = field(default=30, metadata=POSITIVE)
    """Firing tokens sampled uniformly per latent (shown in quantile buckets)."""
    bins: int = field(default=24, metadata=POSITIVE)
    """Bins of each latent's activation histogram over (0, max]."""
    attribution: int = field(default=10, metadata=POSITIVE)
    """Vocabulary tokens kept per direction (encoder, decoder) and sign."""
    chunk_rows: int = field(default=4096, metadata=POSITIVE)
    """Cache rows encoded together."""
    merge_at: int = field(default=1 << 21, metadata=POSITIVE)
    """Candidate tokens buffered before they are merged into the kept ones (bounds memory)."""
    reuse_codes_mb: int = field(default=1024, metadata=POSITIVE)
    """The first pass keeps a layer's non-zero codes for the second when they fit in this many MiB (12 bytes
    each: two int32 indices and a float32); otherwise the second pass encodes the cache again."""

    def __post_init__(self) -> None:
        check_fields(self)

    def kept(self) -> dict[str, int]:
        """The settings the stored statistics depend on (chunking and buffering change nothing they hold)."""
        return {"top": self.top, "samples": self.samples, "bins": self.bins, "attribution": self.attribution}


def sample_key(rows: np.ndarray, latents: np.ndarray) -> np.ndarray:
    """A pseudo-random number in [0, 1) fixed by each (row, latent) pair (the splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) * np.uint64(1 << 24) + latents.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class BestPerLatent:
    """The `n` tokens with the highest score per latent over a stream of candidates that arrive in row order (ties
    go to the earlier row). Candidates are buffered and merged `merge_at` at a time; once a latent holds `n`, only
    candidates scoring above its `n`-th are buffered at all."""

    def __init__(self, d_sae: int, n: int, merge_at: int) -> None:
        self.d_sae, self.n, self.merge_at = d_sae, n, merge_at
        self.threshold = np.full(d_sae, -np.inf)
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64), np.zeros(0, np.float32))
        self.kept = empty
        self.pending: list[tuple[np.ndarray, ...]] = []
        self.pending_size = 0

    def offer(self, latents: np.ndarray, scores: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
        """Consider candidates (latent, score, row, activation), their rows after every row offered before."""
        better = scores > self.threshold[latents]
        if not better.any():
            return
        self.pending.append((latents[better], scores[better], rows[better], values[better]))
        self.pending_size += int(better.sum())
        if self.pending_size >= self.merge_at:
            self._merge()

    def _merge(self) -> None:
        if not self.pending:
            return
        latents, scores, rows, values = (np.concatenate(parts) for parts in zip(self.kept, *self.pending))
        self.pending, self.pending_size = [], 0
        order = np.lexsort((rows, -scores, latents))
        latents, scores, rows, values = latents[order], scores[order], rows[order], values[order]
        rank = np.arange(len(latents)) - np.searchsorted(latents, latents, side="left")
        keep = rank < self.n
        self.kept = (latents[keep], scores[keep], rows[keep], values[keep])
        last = rank == self.n - 1
        self.threshold[latents[last]] = scores[last]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """`[d_sae, n]` rows (-1 where a latent fired on fewer tokens) and their activations (0 there), best first."""
        self._merge()
        latents, _, rows, values = self.kept
        slot = np.arange(len(latents)) - np.searchsorted(latents, latents, side="left")
        out_rows = np.full((self.d_sae, self.n), -1, np.int64)
        out_values = np.zeros((self.d_sae, self.n), np.float32)
        out_rows[latents, slot] = rows
        out_values[latents, slot] = values
        return out_rows, out_values


def encode_rows(sae: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zero codes of `rows` (float32 `[n, d_in]`) as (row within `rows`, latent, activation) triples."""
    import torch

    from clear_sae.sae.plain import fired_codes

    with torch.inference_mode():
        row, latent, values = fired_codes(sae, torch.from_numpy(rows))
    return row.int().numpy(), latent.int().numpy(), values.float().numpy()


Codes = tuple[int, int, np.ndarray, np.ndarray, np.ndarray]
"""One chunk's non-zero codes: its first row, its row count, and (row within the chunk, latent, activation)."""


def chunk_codes(cache: "ActivationCache", hook: str, sae: Any, chunk_rows: int) -> Iterator[Codes]:
    """Encode the cache's rows at `hook` a chunk at a time, in order."""
    for start in range(0, cache.n_rows(hook), chunk_rows):
        block = cache.rows(hook, start, start + chunk_rows)
        yield (start, len(block), *encode_rows(sae, block))


class CodesMemory:
    """The chunks of codes one pass encoded, kept for the next while they fit in `budget` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget, self.size = budget, 0
        self.chunks: list[Codes] | None = []
        """None once the codes outgrew the budget."""

    def remember(self, chunks: Iterable[Codes]) -> Iterator[Codes]:
        """Pass `chunks` on, keeping them while they fit."""
        for chunk in chunks:
            if self.chunks is not None:
                self.size += 12 * len(chunk[2])
                if self.size > self.budget:
                    self.chunks = None
                else:
                    self.chunks.append(chunk)
            yield chunk


def first_pass(chunks: Iterable[Codes], d_sae: int, cfg: FeatureConfig, bar: Any) -> dict[str, np.ndarray]:
    """Firing counts and sums, the top tokens and the uniform sample of every latent."""
    fires = np.zeros(d_sae, np.int64)
    total = np.zeros(d_sae, np.float64)
    top = BestPerLatent(d_sae, cfg.top, cfg.merge_at)
    sample = BestPerLatent(d_sae, cfg.samples, cfg.merge_at)
    for start, n, row, latent, value in chunks:
        row = row.astype(np.int64) + start
        fires += np.bincount(latent, minlength=d_sae)
        total += np.bincount(latent, weights=value, minlength=d_sae)
        top.offer(latent, value.astype(np.float64), row, value)
        sample.offer(latent, -sample_key(row, latent), row, value)
        bar.update(n)
    top_rows, top_values = top.result()
    sample_rows, sample_values = sample.result()
    return {
        "fires": fires,
        "mean": np.where(fires > 0, total / np.maximum(fires, 1), 0.0).astype(np.float32),
        "top_rows": top_rows,
        "top_values": top_values,
        "sample_rows": sample_rows,
        "sample_values": sample_values,
    }


def second_pass(
    chunks: Iterable[Codes],
    owners: tuple[np.ndarray, np.ndarray],
    d_sae: int,
    cfg: FeatureConfig,
    maximum: np.ndarray,
    wanted: np.ndarray,
    n_prompts: int,
    bar: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The histogram of every latent over (0, its max], and each wanted (latent, prompt) context's activations:
    `wanted` holds the sorted keys latent * n_prompts + prompt, `owners` every row's prompt and position. Returns
    the histogram `[d_sae, bins]` and, per activation found in a wanted context, its context (index into
    `wanted`), position and value, sorted by context and position."""
    hist = np.zeros(d_sae * cfg.bins, np.int64)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start, n, row, latent, value in chunks:
        scale = maximum[latent]
        which = np.minimum((value / np.where(scale > 0, scale, 1.0) * cfg.bins).astype(np.int64), cfg.bins - 1)
        hist += np.bincount(latent.astype(np.int64) * cfg.bins + which, minlength=d_sae * cfg.bins)
        key = latent.astype(np.int64) * n_prompts + owners[0][start + row]
        slot = np.minimum(np.searchsorted(wanted, key), max(len(wanted) - 1, 0))
        hit = wanted[slot] == key if len(wanted) else np.zeros(len(key), bool)
        if hit.any():
            found.append((slot[hit], owners[1][start + row[hit]], value[hit]))
        bar.update(n)
    parts = list(zip(*found)) or [[np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]]
    context, position, value = (np.concatenate(p) for p in parts)
    order = np.lexsort((position, context))
    return hist.reshape(d_sae, cfg.bins), context[order], position[order], value[order]


def input_embeddings(backbone: "Backbone", hook: str) -> "torch.Tensor | None":
    """The input token embeddings `[vocab, d_model]` of the model that holds `hook`, or None where the backbone
    does not expose them or their width is not the hook point's."""
    model = backbone.encoder_model(hook)
    getter = getattr(model, "get_input_embeddings", None)
    weight = getattr(getter(), "weight", None) if callable(getter) else getattr(model, "W_E", None)
    if weight is None or weight.ndim != 2 or int(weight.shape[1]) != backbone.d_model(hook):
        return None
    return weight.detach().float().cpu()


def attribution(sae: Any, embeddings: "torch.Tensor", n: int, bins: int, chunk: int = 1024) -> dict[str, np.ndarray]:
    """Per latent, the `n` vocabulary tokens whose embedding has the largest and the smallest dot product with its
    encoder direction (`enc_pos`, `enc_neg`) and with its decoder direction (`dec_pos`, `dec_neg`): ids and
    values, `[d_sae, n]` each; and `dec_hist`, the histogram of the decoder direction's dot products with the
    whole vocabulary over `bins` equal bins from its smallest to its largest (the logit histogram's analogue)."""
    import torch

    out: dict[str, list[np.ndarray]] = {}
    directions = {"enc": sae.W_enc.detach().float(), "dec": sae.W_dec.detach().float().T}
    n = min(n, int(embeddings.shape[0]))
    with torch.inference_mode():
        for name, weight in directions.items():
            for start in range(0, int(weight.shape[1]), chunk):
                scores = (embeddings @ weight[:, start : start + chunk].cpu()).T
                for sign, largest in (("pos", True), ("neg", False)):
                    values, ids = scores.topk(n, dim=1, largest=largest)
                    out.setdefault(f"{name}_{sign}_ids", []).append(ids.numpy())
                    out.setdefault(f"{name}_{sign}_values", []).append(values.numpy())
                if name == "dec":
                    out.setdefault("dec_hist", []).append(row_histograms(scores, bins))
    return {key: np.concatenate(parts) for key, parts in out.items()}


def row_histograms(scores: "torch.Tensor", bins: int) -> np.ndarray:
    """Each row's histogram over `bins` equal bins from its smallest to its largest value, `[rows, bins]`."""
    import torch

    low, high = scores.min(1, keepdim=True).values, scores.max(1, keepdim=True).values
    width = (high - low).clamp_min(1e-12)
    which = ((scores - low) / width * bins).long().clamp_(0, bins - 1)
    which += torch.arange(len(scores))[:, None] * bins
    return torch.bincount(which.reshape(-1), minlength=len(scores) * bins).reshape(len(scores), bins).numpy()


def feature_key(dictionaries: "Dictionaries", hook: str, cache: "ActivationCache", cfg: FeatureConfig) -> str:
    """A hash of everything a layer's statistics depend on: the SAE's weights, the cache's prompts and rows at
    `hook`, and the settings kept."""
    inputs = {
        "version": FEATURES_VERSION,
        "weights": dictionaries.fingerprint(hook),
        "prompts": cache.prompts_hash,
        "rows": cache.n_rows(hook),
        "backbone": cache.backbone_id,
        "settings": cfg.kept(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()[:24]


def feature_paths(dictionaries: "Dictionaries", hook: str) -> tuple[Path, Path]:
    """The arrays' and the record's file of `hook`'s statistics."""
    folder = dictionaries.root / FEATURES
    return folder / f"{hook}.safetensors", folder / f"{hook}.json"


def context_tokens(
    backbone: "Backbone", hook: str, prompts: list[str], ids: np.ndarray, memo: dict[tuple[str, int], list[str]]
) -> dict[str, list[str]]:
    """The tokens of each prompt in `ids`, as the model reads them at `hook` (`memo` keeps them across the layers
    of one encoder)."""
    encoder = hook.split(".", 1)[0]
    tokens = {}
    for i in ids.tolist():
        if (encoder, i) not in memo:
            memo[(encoder, i)] = backbone.token_strings(prompts[i], hook)
        tokens[str(i)] = memo[(encoder, i)]
    return tokens


def compute_layer_features(
    cache: "ActivationCache",
    dictionaries: "Dictionaries",
    hook: str,
    backbone: "Backbone",
    cfg: FeatureConfig = FeatureConfig(),
    memo: dict[tuple[str, int], list[str]] | None = None,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The statistics of every latent of `hook`'s dictionary over the whole cache: the arrays and the record that
    `save_layer_features` stores (with `progress`, a bar over both passes' rows)."""
    from tqdm.auto import tqdm

    cache.check_hook_point(hook)
    sae = dictionaries.sae(hook)
    d_sae, d_in = int(sae.W_enc.shape[1]), int(sae.W_enc.shape[0])
    if cache.widths[hook] != d_in:
        raise ClearSaeError(
            f"dimension mismatch at {hook}: cache {cache.path} holds width {cache.widths[hook]}, the dictionary "
            f"reads {d_in}; pass the cache the dictionaries were trained on"
        )
    n_rows = cache.n_rows(hook)
    if n_rows == 0:
        raise ClearSaeError(f"cache {cache.path} holds no rows at {hook}; cache some prompts first")
    prompts = cache.prompts()
    # every row's prompt and position, as two int32 columns (8 bytes a row, far less than the row itself)
    owners = (cache.prompt_index(hook).astype(np.int32), cache.positions(hook).astype(np.int32))
    bar = tqdm(total=2 * n_rows, desc=f"latent statistics {hook}", unit="row", disable=not progress, leave=False)
    memory = CodesMemory(cfg.reuse_codes_mb << 20)
    arrays = first_pass(memory.remember(chunk_codes(cache, hook, sae, cfg.chunk_rows)), d_sae, cfg, bar)
    arrays["max"] = arrays["top_values"][:, 0].copy()
    for name in ("top", "sample"):
        rows = arrays[f"{name}_rows"]
        arrays[f"{name}_prompt"] = np.where(rows >= 0, owners[0][rows], -1)
        arrays[f"{name}_position"] = np.where(rows >= 0, owners[1][rows], -1)
    latent_of = np.repeat(np.arange(d_sae, dtype=np.int64), cfg.top + cfg.samples).reshape(d_sae, -1)
    chosen = np.concatenate([arrays["top_prompt"], arrays["sample_prompt"]], axis=1)
    wanted = np.unique(latent_of[chosen >= 0] * len(prompts) + chosen[chosen >= 0])
    hist, context, position, value = second_pass(
        memory.chunks if memory.chunks is not None else chunk_codes(cache, hook, sae, cfg.chunk_rows),
        owners,
        d_sae,
        cfg,
        arrays["max"],
        wanted,
        len(prompts),
        bar,
    )
    memory.chunks = None
    bar.close()
    arrays["hist"] = hist
    arrays["context_latent"], arrays["context_prompt"] = wanted // len(prompts), wanted % len(prompts)
    arrays["context_start"] = np.searchsorted(context, np.arange(len(wanted) + 1)).astype(np.int64)
    arrays["context_position"], arrays["context_value"] = position, value
    record: dict[str, Any] = {
        "hook_point": hook,
        "weights": dictionaries.fingerprint(hook),
        "rows": n_rows,
        "prompts_total": len(prompts),
        "d_sae": d_sae,
        "settings": cfg.kept(),
        "prompts": context_tokens(
            backbone, hook, prompts, np.unique(arrays["context_prompt"]), {} if memo is None else memo
        ),
    }
    check_positions(record["prompts"], arrays, hook)
    embeddings = input_embeddings(backbone, hook)
    if embeddings is not None:
        arrays.update(attribution(sae, embeddings, cfg.attribution, cfg.bins))
        ids = np.unique(np.concatenate([arrays[k].reshape(-1) for k in arrays if k.endswith("_ids")]))
        record["vocabulary"] = dict(zip(map(str, ids.tolist()), backbone.vocabulary_tokens(ids.tolist(), hook)))
    return arrays, record


def check_positions(tokens: dict[str, list[str]], arrays: dict[str, np.ndarray], hook: str) -> None:
    """Raise a one-line error where a cached token position lies past the tokens the backbone gives its prompt
    (a cache written by another tokenizer or truncation than the backbone's)."""
    lengths = np.array([len(tokens[str(int(p))]) for p in arrays["context_prompt"]], np.int64)
    per_activation = np.repeat(lengths, np.diff(arrays["context_start"]))
    bad = np.nonzero(arrays["context_position"] >= per_activation)[0]
    if len(bad):
        context = int(np.searchsorted(arrays["context_start"], bad[0], side="right")) - 1
        prompt = int(arrays["context_prompt"][context])
        raise ClearSaeError(
            f"the cache holds token {int(arrays['context_position'][bad[0]])} of prompt {prompt} at {hook}, but the "
            f"model's tokenizer gives it {int(lengths[context])} tokens; pass --model with the model the cache was "
            "written with"
        )


def save_layer_features(
    dictionaries: "Dictionaries", hook: str, key: str, arrays: dict[str, np.ndarray], record: dict[str, Any]
) -> Path:
    """Store a layer's statistics beside the dictionaries (arrays first, then the record naming them by key);
    returns the record's path."""
    import torch

    tensors_path, record_path = feature_paths(dictionaries, hook)
    atomic_save_tensors(
        tensors_path, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, {RECORD: key}
    )
    atomic_write_text(record_path, json.dumps({"format": RECORD, "key": key, **record}, separators=(",", ":")))
    return record_path


@dataclass
class LayerFeatures:
    """A layer's stored statistics: the arrays (numpy) and the record."""

    arrays: dict[str, np.ndarray]
    record: dict[str, Any]
    _keys: np.ndarray | None = field(default=None, repr=False)

    @property
    def d_sae(self) -> int:
        """Latents of the layer's dictionary."""
        return int(self.record["d_sae"])

    def context(self, latent: int, prompt: int) -> dict[str, Any]:
        """The tokens of `prompt` and the latent's activation on each (0 where it does not fire)."""
        if self._keys is None:  # the contexts are sorted by latent, then prompt
            self._keys = self.arrays["context_latent"] * (1 << 32) + self.arrays["context_prompt"]
        i = int(np.searchsorted(self._keys, latent * (1 << 32) + prompt))
        tokens = self.record["prompts"][str(prompt)]
        acts = [0.0] * len(tokens)
        lo, hi = int(self.arrays["context_start"][i]), int(self.arrays["context_start"][i + 1])
        for position, value in zip(self.arrays["context_position"][lo:hi], self.arrays["context_value"][lo:hi]):
            if position < len(acts):
                acts[int(position)] = float(value)
        return {"prompt": prompt, "tokens": tokens, "acts": acts}

    def latent(self, j: int) -> dict[str, Any]:
        """Everything stored of latent `j`, in plain Python values (what a page and an export show)."""
        if not 0 <= j < self.d_sae:
            raise ClearSaeError(f"latent {j} does not exist at {self.record['hook_point']}; it has 0..{self.d_sae - 1}")
        a = self.arrays

        def examples(name: str) -> list[dict[str, Any]]:
            found = []
            columns = (a[f"{name}_prompt"][j], a[f"{name}_position"][j], a[f"{name}_values"][j])
            for prompt, position, value in zip(*columns):
                if prompt >= 0:
                    found.append({**self.context(j, int(prompt)), "position": int(position), "value": float(value)})
            return found

        page: dict[str, Any] = {
            "hook_point": self.record["hook_point"],
            "latent": j,
            "density": float(a["fires"][j]) / max(int(self.record["rows"]), 1),
            "fires": int(a["fires"][j]),
            "max": float(a["max"][j]),
            "mean": float(a["mean"][j]),
            "hist": {"max": float(a["max"][j]), "counts": a["hist"][j].tolist()},
            "top": examples("top"),
            "samples": sorted(examples("sample"), key=lambda e: -e["value"]),
        }
        vocabulary = self.record.get("vocabulary")
        if vocabulary is not None:
            for name in ("enc_pos", "enc_neg", "dec_pos", "dec_neg"):
                pairs = zip(a[f"{name}_ids"][j], a[f"{name}_values"][j])
                page[name] = [[vocabulary[str(int(i))], round(float(v), 4)] for i, v in pairs]
            low, high = float(a["dec_neg_values"][j, 0]), float(a["dec_pos_values"][j, 0])
            page["dec_hist"] = {"min": low, "max": high, "counts": a["dec_hist"][j].tolist()}
        return page


def load_layer_features(
    dictionaries: "Dictionaries", hook: str, key: str | None = None, weights: str | None = None
) -> LayerFeatures | None:
    """The statistics stored for `hook`, or None where there are none, they are unreadable, or they were computed
    otherwise: with `key`, on other weights, another cache or other settings; with `weights` (a fingerprint), on
    other weights."""
    from safetensors import SafetensorError, safe_open

    tensors_path, record_path = feature_paths(dictionaries, hook)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        with safe_open(str(tensors_path), framework="np") as f:
            if (f.metadata() or {}).get(RECORD) != record.get("key"):
                return None  # the arrays and the record were written by different runs
            arrays = {name: f.get_tensor(name) for name in f.keys()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError):
        return None
    if key is not None and record.get("key") != key:
        return None
    if weights is not None and record.get("weights") != weights:
        return None
    return LayerFeatures(arrays, record)


def stored_key(dictionaries: "Dictionaries", hook: str) -> str | None:
    """The key of the statistics stored for `hook` where both files carry it (None otherwise), read without the
    arrays."""
    from safetensors import SafetensorError, safe_open

    tensors_path, record_path = feature_paths(dictionaries, hook)
    try:
        key = json.loads(record_path.read_text(encoding="utf-8")).get("key")
        with safe_open(str(tensors_path), framework="np") as f:
            return key if (f.metadata() or {}).get(RECORD) == key else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError, AttributeError):
        return None


def compute_features(
    cache: "ActivationCache",
    dictionaries: "Dictionaries",
    hooks: list[str],
    backbone: "Backbone",
    cfg: FeatureConfig = FeatureConfig(),
    force: bool = False,
    progress: bool = True,
) -> dict[str, str]:
    """Compute and store the statistics of every layer in `hooks` over the whole cache, keeping a layer whose
    stored statistics are current (unless `force`); returns what was done per layer (`computed` or `current`)."""
    from tqdm.auto import tqdm

    for hook in hooks:
        dictionaries.check_hook_point(hook)
        cache.check_hook_point(hook)
    done, memo = {}, {}
    for hook in tqdm(hooks, desc="latent statistics", unit="layer", disable=not progress):
        key = feature_key(dictionaries, hook, cache, cfg)
        if not force and stored_key(dictionaries, hook) == key:
            done[hook] = "current"
            continue
        arrays, record = compute_layer_features(cache, dictionaries, hook, backbone, cfg, memo, progress)
        save_layer_features(dictionaries, hook, key, arrays, record)
        done[hook] = "computed"
    return done
