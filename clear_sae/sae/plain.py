"""sae-lens's inference SAEs (TopK, standard ReLU, JumpReLU), read from their folders without importing sae-lens.

`import sae_lens` costs about 4.5 s on top of torch on the 2-core CPU, more than learning a concept on the
shipped dictionaries (0.3 s). Most commands only need a dictionary's encoder and decoder, so a folder whose
`cfg.json` asks for nothing beyond the plain forward pass loads as a `PlainSAE`: the same tensors and the
same arithmetic as sae-lens's classes (tests/test_dictionary.py checks the codes bit for bit), and the
attributes clear_sae uses (`W_enc`, `W_dec`, `b_enc`, `b_dec`, `threshold`, `cfg`, `encode`, `decode`).
Anything else (activation normalisation, reshaping, other architectures) loads through sae-lens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

ARCHITECTURES = ("topk", "standard", "jumprelu")
WEIGHTS_FILE, CONFIG_FILE = "sae_weights.safetensors", "cfg.json"
"""The files of a sae-lens SAE folder (`clear_sae.dictionary` names them too, as WEIGHTS and CONFIG)."""
PARAMETERS = {
    "topk": {"W_enc", "W_dec", "b_enc", "b_dec"},
    "standard": {"W_enc", "W_dec", "b_enc", "b_dec"},
    "jumprelu": {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"},
}


@dataclass
class PlainConfig:
    """The fields of a sae-lens `cfg.json` that the plain forward pass reads."""

    d_in: int
    d_sae: int
    arch: str
    k: int | None = None
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    reshape_activations: str = "none"
    rescale_acts_by_decoder_norm: bool = False
    dtype: str = "float32"
    metadata: dict[str, Any] = field(default_factory=dict)

    def architecture(self) -> str:
        """The architecture name, as sae-lens's config reports it."""
        return self.arch

    def to_dict(self) -> dict[str, Any]:
        """The `cfg.json` sae-lens writes for a TopK SAE of this config (`PlainSAE.save_model`)."""
        if self.arch != "topk":
            raise ValueError(f"only TopK SAEs are saved without sae-lens, not {self.arch!r}")
        return {
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "dtype": self.dtype,
            "device": "cpu",
            "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "normalize_activations": self.normalize_activations,
            "reshape_activations": self.reshape_activations,
            "metadata": self.metadata,
            "k": self.k,
            "rescale_acts_by_decoder_norm": self.rescale_acts_by_decoder_norm,
            "architecture": self.arch,
        }


def sae_lens_metadata(hook: str, model_name: str) -> dict[str, str]:
    """The `metadata` of a `cfg.json` as the installed sae-lens writes it for a new SAE (its version read from the
    package's metadata, without importing it)."""
    installed = version("sae-lens")
    return {
        "sae_lens_version": installed,
        "sae_lens_training_version": installed,
        "hook_name": hook,
        "model_name": model_name,
    }


def plain_config(cfg: dict[str, Any]) -> PlainConfig | None:
    """The plain reading of a `cfg.json`, or None when the SAE needs sae-lens's own class."""
    arch = cfg.get("architecture")
    if arch not in ARCHITECTURES:
        return None
    if cfg.get("normalize_activations", "none") != "none" or cfg.get("reshape_activations", "none") != "none":
        return None
    if arch == "topk" and (cfg.get("rescale_acts_by_decoder_norm") or not isinstance(cfg.get("k"), int)):
        return None
    if cfg.get("hook_head_index") is not None or (cfg.get("metadata") or {}).get("hook_head_index") is not None:
        return None
    return PlainConfig(
        d_in=int(cfg["d_in"]),
        d_sae=int(cfg["d_sae"]),
        arch=arch,
        k=cfg.get("k"),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        metadata=dict(cfg.get("metadata") or {}),
    )


class PlainSAE(torch.nn.Module):
    """The inference forward pass of a sae-lens TopK, ReLU or JumpReLU SAE, in float32."""

    # Registered as parameters in __init__, by name (`threshold` for JumpReLU only).
    W_enc: torch.Tensor
    W_dec: torch.Tensor
    b_enc: torch.Tensor
    b_dec: torch.Tensor
    threshold: torch.Tensor

    def __init__(self, cfg: PlainConfig, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.cfg = cfg
        for name in sorted(PARAMETERS[cfg.arch]):
            self.register_parameter(name, torch.nn.Parameter(tensors[name].float(), requires_grad=False))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations `[..., d_sae]` of inputs `[..., d_in]`."""
        sae_in = x.to(torch.float32) - self.b_dec * self.cfg.apply_b_dec_to_input
        hidden_pre = sae_in @ self.W_enc + self.b_enc
        if self.cfg.arch == "topk":
            assert self.cfg.k is not None, "a TopK SAE's config has k"
            values, ids = torch.topk(hidden_pre, k=self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(hidden_pre).scatter_(-1, ids, values.relu())
        acts = hidden_pre.relu()
        if self.cfg.arch == "jumprelu":
            acts = acts * (hidden_pre > self.threshold).to(acts.dtype)
        return acts

    def encode_fired(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The non-zero entries of `encode(x)` for inputs `[rows, d_in]`, as (row, latent, value), rows ascending: a
        TopK SAE's straight from its top-k, without the dense `[rows, d_sae]` matrix."""
        if self.cfg.arch != "topk":
            return nonzero_codes(self.encode(x))
        sae_in = x.to(torch.float32) - self.b_dec * self.cfg.apply_b_dec_to_input
        values, ids = torch.topk(sae_in @ self.W_enc + self.b_enc, k=int(self.cfg.k or 0), dim=-1, sorted=False)
        row = torch.arange(len(x), device=x.device).repeat_interleave(ids.shape[1])
        values, ids = values.reshape(-1), ids.reshape(-1)
        fired = values > 0
        return row[fired], ids[fired], values[fired]

    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scale: float) -> None:
        """Fold the factor the inputs were scaled by in training into the weights, as sae-lens does: the SAE then
        reads and writes unscaled activations."""
        self.W_enc.mul_(scale)
        self.W_dec.div_(scale)
        self.b_dec.div_(scale)

    def save_model(self, folder: Path) -> None:
        """Write `folder/cfg.json` and `folder/sae_weights.safetensors` as sae-lens's `save_model` writes them, in the
        parameters' dtype (set `cfg.dtype` to match), so that `sae_lens.SAE.load_from_disk` reads the folder."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({name: t.detach().contiguous() for name, t in self.state_dict().items()}, folder / WEIGHTS_FILE)
        (folder / CONFIG_FILE).write_text(json.dumps(self.cfg.to_dict()))

    def decode(self, feature_acts: torch.Tensor) -> torch.Tensor:
        """Reconstruction `[..., d_in]` from latent activations."""
        return feature_acts @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x))."""
        return self.decode(self.encode(x))


def nonzero_codes(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-zero entries of dense codes `[rows, d_sae]` as (row, latent, value), row-major."""
    row, latent = codes.nonzero(as_tuple=True)
    return row, latent, codes[row, latent]


def fired_codes(sae: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-zero codes of inputs `x` `[rows, d_in]` as (row, latent, value), rows ascending: from
    `PlainSAE.encode_fired`, or from any other SAE's dense `encode`."""
    if isinstance(sae, PlainSAE):
        return sae.encode_fired(x)
    return nonzero_codes(sae.encode(x))


def load_plain_sae(folder: Path, cfg: dict[str, Any]) -> PlainSAE | None:
    """A `PlainSAE` from `folder`, or None when its config or tensors need sae-lens's own class."""
    from safetensors.torch import load_file

    plain = plain_config(cfg)
    if plain is None:
        return None
    tensors = load_file(str(folder / WEIGHTS_FILE), device="cpu")
    if set(tensors) != PARAMETERS[plain.arch]:
        return None
    shapes = {
        "W_enc": (plain.d_in, plain.d_sae),
        "W_dec": (plain.d_sae, plain.d_in),
        "b_enc": (plain.d_sae,),
        "b_dec": (plain.d_in,),
        "threshold": (plain.d_sae,),
    }
    if any(tuple(t.shape) != shapes[name] for name, t in tensors.items()):
        return None
    return PlainSAE(plain, tensors).eval()


SPARSIFY_WEIGHTS = "sae.safetensors"
"""The weights file of a sparsify SAE folder (beside its `cfg.json`)."""
SPARSIFY_TENSORS = {"encoder.weight", "encoder.bias", "W_dec", "b_dec"}


def sparsify_width(cfg: dict[str, Any]) -> int:
    """The number of latents a sparsify `cfg.json` describes: `num_latents`, or `expansion_factor` x `d_in`."""
    return int(cfg.get("num_latents") or 0) or int(cfg.get("expansion_factor", 32)) * int(cfg["d_in"])


def load_sparsify_sae(folder: Path, cfg: dict[str, Any]) -> PlainSAE:
    """A sparsify SAE folder (`cfg.json` + `sae.safetensors`, as `SparseCoder.save_to_disk` writes them) as the
    TopK SAE it is. sparsify encodes `topk(relu((x - b_dec) @ encoder.weight.T + encoder.bias))` and decodes
    `acts @ W_dec + b_dec`: sae-lens's TopK arithmetic with `W_enc = encoder.weight.T`. Raises ValueError for a
    sparse coder that is not such an SAE (a transcoder, a skip connection, another activation, other tensors)."""
    from safetensors.torch import load_file

    if not isinstance(cfg, dict) or not (isinstance(cfg.get("d_in"), int) and cfg["d_in"] >= 1):
        raise ValueError(f"{folder / 'cfg.json'} does not give d_in as a positive integer")
    if cfg.get("transcode"):
        raise ValueError("it is a transcoder, which predicts another module's output, not an SAE of its input")
    if cfg.get("skip_connection"):
        raise ValueError("it has a skip connection, which a latent clamp cannot account for")
    if cfg.get("activation", "topk") != "topk":
        raise ValueError(f"its activation is {cfg.get('activation')!r}; only topk sparse coders load")
    d_in, d_sae, k = int(cfg["d_in"]), sparsify_width(cfg), cfg.get("k")
    if not isinstance(k, int) or not 1 <= k <= d_sae:
        raise ValueError(f"k must be an integer between 1 and the {d_sae} latents, not {k!r}")
    tensors = load_file(str(folder / SPARSIFY_WEIGHTS), device="cpu")
    if set(tensors) != SPARSIFY_TENSORS:
        raise ValueError(f"{SPARSIFY_WEIGHTS} holds {sorted(tensors)}, not a sparsify SAE's {sorted(SPARSIFY_TENSORS)}")
    shapes = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensors[name].shape)}, the config says {shape}")
    plain = PlainConfig(d_in=d_in, d_sae=d_sae, arch="topk", k=k, metadata={"format": "sparsify"})
    weights = {
        "W_enc": tensors["encoder.weight"].T.contiguous(),
        "b_enc": tensors["encoder.bias"],
        "W_dec": tensors["W_dec"],
        "b_dec": tensors["b_dec"],
    }
    return PlainSAE(plain, weights).eval()
