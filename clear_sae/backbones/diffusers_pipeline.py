"""The text encoders of a diffusers pipeline (Wan 2.x, CogVideoX, Flux, SD3) as one backbone.

Every text encoder the pipeline holds (`text_encoder`, `text_encoder_2`, `text_encoder_3`) contributes
its hook points under its own attribute name, so Flux and SD3 expose both/all encoders with distinct
names. Only the text encoders are loaded from a folder; the DiT and the VAE are never touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clear_sae.backbones.base import Backbone, folder_fingerprint
from clear_sae.backbones.hf_text import HFTextEncoder, load_hf_text_encoder
from clear_sae.errors import ClearSaeError

if TYPE_CHECKING:
    import torch
    from torch import nn

ENCODER_NAMES = ("text_encoder", "text_encoder_2", "text_encoder_3")


def _tokenizer_name(encoder_name: str) -> str:
    return encoder_name.replace("text_encoder", "tokenizer")


class PipelineTextEncoders(Backbone):
    """The text encoders of one diffusers pipeline, addressed by `text_encoder[_N].{embed,blocks.i}`."""

    def __init__(self, encoders: dict[str, HFTextEncoder], backbone_id: str) -> None:
        if not encoders:
            raise ClearSaeError(f"pipeline {backbone_id} has no text encoder to hook")
        self.encoders = encoders
        self.backbone_id = backbone_id

    @classmethod
    def from_pipeline(cls, pipeline: Any, backbone_id: str = "pipeline") -> "PipelineTextEncoders":
        """Wrap the text encoders of a pipeline object already in memory."""
        encoders = {}
        for name in ENCODER_NAMES:
            model, tokenizer = getattr(pipeline, name, None), getattr(pipeline, _tokenizer_name(name), None)
            if model is not None and tokenizer is not None:
                encoders[name] = HFTextEncoder(model, tokenizer, backbone_id, prefix=name)
        return cls(encoders, backbone_id)

    @property
    def hook_points(self) -> list[str]:
        """Hook points of every text encoder, encoder by encoder."""
        return [name for encoder in self.encoders.values() for name in encoder.hook_points]

    def _encoder_for(self, hook_point: str) -> HFTextEncoder:
        prefix = hook_point.split(".", 1)[0]
        if prefix not in self.encoders:
            self.check_hook_points([hook_point])
        return self.encoders[prefix]

    def _tokenizer_for(self, hook_point: str) -> tuple[Any, int]:
        return self._encoder_for(hook_point)._tokenizer_for(hook_point)

    def module(self, hook_point: str) -> "nn.Module":
        """The block (or embedding) of the right text encoder."""
        return self._encoder_for(hook_point).module(hook_point)

    def d_model(self, hook_point: str) -> int:
        """Width of the text encoder that owns `hook_point`."""
        return self._encoder_for(hook_point).d_model(hook_point)

    def models(self) -> list["nn.Module"]:
        """Every text encoder of the pipeline."""
        return [encoder.model for encoder in self.encoders.values()]

    def encoder_model(self, hook_point: str) -> "nn.Module":
        """The text encoder that owns `hook_point`."""
        return self._encoder_for(hook_point).encoder_model(hook_point)

    def _forward(self, prompts: list[str], hook_points: list[str]) -> dict[str, "torch.Tensor"]:
        masks: dict[str, torch.Tensor] = {}
        for prefix, encoder in self.encoders.items():
            wanted = [h for h in hook_points if h.split(".", 1)[0] == prefix]
            if wanted:
                masks.update(encoder._forward(prompts, wanted))
        return masks


def load_pipeline_text_encoders(folder: str | Path) -> PipelineTextEncoders:
    """Load only the text encoders and tokenizers of a pipeline saved with `save_pretrained`."""
    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text())
    names = [name for name in ENCODER_NAMES if index.get(name) and index[name][0] is not None]
    if not names:
        raise ClearSaeError(f"pipeline folder {folder} lists no text encoder in model_index.json")
    backbone_id = f"pipeline:{folder.resolve().name}:{folder_fingerprint(*(folder / n for n in names))}"
    encoders = {
        name: load_hf_text_encoder(folder / name, folder / _tokenizer_name(name), prefix=name, backbone_id=backbone_id)
        for name in names
    }
    return PipelineTextEncoders(encoders, backbone_id)
