"""Export of the latent statistics (`clear_sae.features`) in the batch JSON that SAEDashboard's Neuronpedia runner
writes and Neuronpedia's converters read, so a user can upload their dictionaries' features.

One folder per layer, `<model_id>_<sae_set>_<hook point>_<d_sae>/`, holding `batch-N.json` files of
`per_batch` features each and a `run_settings.json`. Each batch is `{"model_id", "layer", "sae_set",
"sae_id_suffix", "features"}`; each feature carries the keys those converters look up. What clear_sae measures
fills them as follows:

- `frac_nonzero`: the firing density over the cache's token rows;
- `freq_hist_data_bar_values` / `_heights`: the activation histogram's bin midpoints and counts;
- `pos_str` / `pos_values`, `neg_str` / `neg_values`: the tokens whose input embeddings align most and least with
  the latent's decoder direction (a text encoder has no unembedding, so this stands where a language model's
  logit effects would), and `logits_hist_data_bar_*` that alignment's histogram over the whole vocabulary;
- `neuron_alignment_*`: the residual dimensions with the largest decoder weights (value and share of the L1 norm);
- `layer`: the hook point's position among the dictionaries' hook points (with `text_encoder.embed` first,
  `text_encoder.blocks.3` is layer 4);
- `activations`: the top examples (`bin_min` -1, `bin_max` the latent's max, `bin_contains` -1), then the sampled
  ones grouped by equal intervals of (0, max], highest first, each with its bounds and the share of the cache's
  tokens whose activation falls in it (from the histogram, so the intervals follow its bins);
- the correlation tables are left empty: clear_sae does not compute them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clear_sae.config import POSITIVE, check_fields
from clear_sae.details import rounded
from clear_sae.errors import ClearSaeError
from clear_sae.features import LayerFeatures, load_layer_features
from clear_sae.io import atomic_write_text

if TYPE_CHECKING:
    from clear_sae.dictionary import Dictionaries


BATCH_KEYS = ("model_id", "layer", "sae_set", "sae_id_suffix", "features")
"""The keys of a batch file."""
FEATURE_KEYS = (
    "feature_index",
    "neuron_alignment_indices",
    "neuron_alignment_values",
    "neuron_alignment_l1",
    "correlated_neurons_indices",
    "correlated_neurons_l1",
    "correlated_neurons_pearson",
    "correlated_features_indices",
    "correlated_features_l1",
    "correlated_features_pearson",
    "neg_str",
    "neg_values",
    "pos_str",
    "pos_values",
    "frac_nonzero",
    "freq_hist_data_bar_values",
    "freq_hist_data_bar_heights",
    "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values",
    "n_prompts_total",
    "n_tokens_in_prompt",
    "dataset",
    "activations",
    "decoder_weights_dist",
    "vector",
)
"""The keys of a feature, as SAEDashboard's `NeuronpediaDashboardFeature` takes them (it refuses any other)."""
DIGITS = 5
"""Decimal places of the exported floats (the runner's)."""
ACTIVATION_KEYS = ("bin_min", "bin_max", "bin_contains", "tokens", "values", "qualifying_token_index")
"""The keys of an activation example, as its `NeuronpediaDashboardActivation` takes them."""


@dataclass
class ExportConfig:
    """What the export names and how it splits the features."""

    model_id: str = ""
    """Neuronpedia's model id (default: the dictionaries' backbone id)."""
    sae_set: str = "clear-sae"
    """Neuronpedia's SAE set name."""
    per_batch: int = field(default=128, metadata=POSITIVE)
    """Features per batch file (SAEDashboard's default)."""
    intervals: int = field(default=4, metadata=POSITIVE)
    """Equal intervals of (0, max] the sampled examples are grouped in; it must divide the histogram's bins."""
    per_interval: int = field(default=5, metadata=POSITIVE)
    """Sampled examples exported per interval, at most."""
    alignment: int = field(default=3, metadata=POSITIVE)
    """Residual dimensions listed in `neuron_alignment_*`."""

    def __post_init__(self) -> None:
        check_fields(self)


def neuron_alignment(decoder_row: np.ndarray, n: int) -> dict[str, list]:
    """The `n` residual dimensions with the largest absolute decoder weight, their weights and L1 shares."""
    order = np.argsort(-np.abs(decoder_row), kind="stable")[:n]
    l1 = float(np.abs(decoder_row).sum()) or 1.0
    return {
        "neuron_alignment_indices": order.tolist(),
        "neuron_alignment_values": rounded(decoder_row[order], DIGITS),
        "neuron_alignment_l1": rounded(decoder_row[order] / l1, DIGITS),
    }


def bar_midpoints(low: float, high: float, bins: int) -> list[float]:
    """The midpoints of `bins` equal bins from `low` to `high`."""
    edges = np.linspace(low, high, bins + 1)
    return rounded((edges[:-1] + edges[1:]) / 2, DIGITS)


def activation(example: dict[str, Any], low: float, high: float, contains: float) -> dict[str, Any]:
    """One example in the runner's form: the prompt's tokens, the latent's activation on each, the token chosen."""
    return {
        "bin_min": round(low, 5),
        "bin_max": round(high, 5),
        "bin_contains": round(contains, 5),
        "tokens": example["tokens"],
        "values": rounded(example["acts"], 4),
        "qualifying_token_index": int(example["position"]),
    }


def interval_examples(page: dict[str, Any], rows: int, cfg: ExportConfig) -> list[dict[str, Any]]:
    """The sampled examples grouped by equal intervals of (0, max], highest interval first, at most
    `per_interval` each, with each interval's share of all token rows."""
    counts, top = page["hist"]["counts"], page["max"]
    bins = len(counts)
    if bins % cfg.intervals:
        raise ClearSaeError(
            f"--intervals {cfg.intervals} does not divide the statistics' {bins} histogram bins; pass a divisor"
        )
    step = bins // cfg.intervals
    out = []
    for k in reversed(range(cfg.intervals)):
        low, high = top * k / cfg.intervals, top * (k + 1) / cfg.intervals
        inside = [
            e for e in page["samples"] if min(int(e["value"] / top * bins) if top > 0 else 0, bins - 1) // step == k
        ]
        contains = sum(counts[k * step : (k + 1) * step]) / max(rows, 1)
        out += [activation(e, low, high, contains) for e in inside[: cfg.per_interval]]
    return out


def neuronpedia_feature(stats: LayerFeatures, j: int, decoder_row: np.ndarray, cfg: ExportConfig) -> dict[str, Any]:
    """Latent `j` as one feature of a batch file."""
    page = stats.latent(j)
    counts = page["hist"]["counts"]
    feature: dict[str, Any] = {
        "feature_index": j,
        **neuron_alignment(decoder_row, cfg.alignment),
        "correlated_neurons_indices": [],
        "correlated_neurons_l1": [],
        "correlated_neurons_pearson": [],
        "correlated_features_indices": [],
        "correlated_features_l1": [],
        "correlated_features_pearson": [],
        "neg_str": [t for t, _ in page.get("dec_neg", [])],
        "neg_values": rounded([v for _, v in page.get("dec_neg", [])], DIGITS),
        "pos_str": [t for t, _ in page.get("dec_pos", [])],
        "pos_values": rounded([v for _, v in page.get("dec_pos", [])], DIGITS),
        "frac_nonzero": round(page["density"], 8),
        "freq_hist_data_bar_values": bar_midpoints(0.0, page["max"], len(counts)),
        "freq_hist_data_bar_heights": counts,
        "logits_hist_data_bar_heights": [],
        "logits_hist_data_bar_values": [],
        "n_prompts_total": int(stats.record["prompts_total"]),
        "n_tokens_in_prompt": max((len(e["tokens"]) for e in page["top"] + page["samples"]), default=0),
        "dataset": "",
        "activations": [activation(e, -1.0, page["max"], -1.0) for e in page["top"]]
        + interval_examples(page, int(stats.record["rows"]), cfg),
        "decoder_weights_dist": [],
        "vector": [],
    }
    if "dec_hist" in page:
        hist = page["dec_hist"]
        feature["logits_hist_data_bar_heights"] = hist["counts"]
        feature["logits_hist_data_bar_values"] = bar_midpoints(hist["min"], hist["max"], len(hist["counts"]))
    return feature


def layer_folder(out: Path, cfg: ExportConfig, hook: str, d_sae: int) -> Path:
    """The runner's folder name for one layer."""
    return out / f"{cfg.model_id}_{cfg.sae_set}_{hook}_{d_sae}"


def export_neuronpedia(
    dictionaries: "Dictionaries", hooks: list[str], out: str | Path, cfg: ExportConfig = ExportConfig()
) -> list[Path]:
    """Write every latent of `hooks` in Neuronpedia's batch format under `out`; returns the layer folders. Each
    layer needs its current statistics (`clear-sae features`)."""
    from tqdm.auto import tqdm

    out = Path(out)
    if not cfg.model_id:
        cfg = replace(cfg, model_id=dictionaries.backbone_id or "model")
    stats = {}
    for hook in hooks:
        dictionaries.check_hook_point(hook)
        found = load_layer_features(dictionaries, hook, weights=dictionaries.fingerprint(hook))
        if found is None:
            raise ClearSaeError(
                f"no current latent statistics for {hook} in {dictionaries.root}; compute them with "
                f"`clear-sae features --dictionaries {dictionaries.root} --cache CACHE`"
            )
        bins = len(found.arrays["hist"][0]) if found.d_sae else cfg.intervals
        if bins % cfg.intervals:
            raise ClearSaeError(
                f"--intervals {cfg.intervals} does not divide the {bins} histogram bins of {hook}'s statistics; "
                "pass a divisor"
            )
        stats[hook] = found
    folders = []
    for hook, found in stats.items():
        folder = layer_folder(out, cfg, hook, found.d_sae)
        for earlier in folder.glob("batch-*.json"):  # an earlier export's batches (--force) would be read too
            earlier.unlink()
        decoder = dictionaries.sae(hook).W_dec.detach().float().numpy()
        layer = dictionaries.hook_points.index(hook)
        settings = {**asdict(cfg), "hook_point": hook, "statistics": found.record["settings"]}
        atomic_write_text(folder / "run_settings.json", json.dumps(settings, indent=2))
        starts = range(0, found.d_sae, cfg.per_batch)
        for n, start in enumerate(tqdm(starts, desc=f"export {hook}", unit="batch", leave=False)):
            batch = {
                "model_id": cfg.model_id,
                "layer": layer,
                "sae_set": cfg.sae_set,
                "sae_id_suffix": None,
                "features": [
                    neuronpedia_feature(found, j, decoder[j], cfg)
                    for j in range(start, min(start + cfg.per_batch, found.d_sae))
                ],
            }
            atomic_write_text(folder / f"batch-{n}.json", json.dumps(batch, separators=(",", ":")))
        folders.append(folder)
    return folders
