"""TransformerLens models: hook points are TransformerLens's own `blocks.{i}.hook_resid_post` names.

`blocks.0.hook_resid_pre` (embeddings, before block 0) comes first, then every block's
`hook_resid_post`. TransformerLens's HookPoints are plain modules, so the same forward hooks work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clear_sae.backbones.base import Backbone, folder_fingerprint, model_device
from clear_sae.errors import ClearSaeError

if TYPE_CHECKING:
    import torch
    from torch import nn

CONFIG_FILE = "hooked_transformer.json"


class TransformerLensBackbone(Backbone):
    """A `HookedTransformer` and a tokenizer (its own, or one passed in for models built from config)."""

    def __init__(self, model: Any, tokenizer: Any = None, backbone_id: str = "transformer_lens") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        if self.tokenizer is None:
            raise ClearSaeError("the TransformerLens model has no tokenizer; pass one to TransformerLensBackbone")
        self.backbone_id = backbone_id
        n_layers = model.cfg.n_layers
        self._names = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]

    @property
    def hook_points(self) -> list[str]:
        """`blocks.0.hook_resid_pre`, then `blocks.{i}.hook_resid_post` for every block."""
        return list(self._names)

    def module(self, hook_point: str) -> "nn.Module":
        """TransformerLens's HookPoint module of that name."""
        self.check_hook_points([hook_point])
        return self.model.hook_dict[hook_point]

    def _tokenizer_for(self, hook_point: str) -> tuple[Any, int]:
        return self.tokenizer, int(self.model.cfg.n_ctx)

    def models(self) -> list["nn.Module"]:
        """The HookedTransformer."""
        return [self.model]

    def d_model(self, hook_point: str) -> int:
        """The model's `d_model`."""
        self.check_hook_points([hook_point])
        return int(self.model.cfg.d_model)

    def _forward(self, prompts: list[str], hook_points: list[str]) -> dict[str, "torch.Tensor"]:
        batch = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.model.cfg.n_ctx, return_tensors="pt"
        )
        device = model_device(self.model)
        # Prompts are right-padded and the model is causal, so real tokens never see padding.
        self.model(batch["input_ids"].to(device), return_type=None)
        mask = batch["attention_mask"].bool()
        return {name: mask for name in hook_points}


def save_transformer_lens(model: Any, tokenizer: Any, folder: str | Path) -> None:
    """Save a HookedTransformer as `hooked_transformer.json` + `model.safetensors` + tokenizer files."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in model.cfg.to_dict().items() if isinstance(v, (int, float, str, bool, type(None)))}
    (folder / CONFIG_FILE).write_text(json.dumps(cfg, indent=1))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    tokenizer.save_pretrained(str(folder))


def load_transformer_lens(folder: str | Path) -> TransformerLensBackbone:
    """Load a model saved by `save_transformer_lens` (safetensors only) from a local folder."""
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    folder = Path(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ClearSaeError(f"{folder} has no model.safetensors; save the model with save_transformer_lens")
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    known = HookedTransformerConfig.__dataclass_fields__
    model = HookedTransformer(HookedTransformerConfig(**{k: v for k, v in cfg.items() if k in known}))
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise ClearSaeError(
            f"{weights} does not match {CONFIG_FILE} ({first}); save the model again with save_transformer_lens"
        ) from None
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    fingerprint = folder_fingerprint(folder)
    return TransformerLensBackbone(model, tokenizer, backbone_id=f"tl:{folder.resolve().name}:{fingerprint}")
