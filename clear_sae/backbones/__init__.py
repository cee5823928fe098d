"""Backbones expose a model's residual stream at stable, named hook points.

`load_backbone` maps a name (`minilm`) or a local folder to a loader; `hook_module` finds the module
behind a hook point on a backbone, a bare text encoder, a diffusers pipeline or a TransformerLens model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from clear_sae.backbones.base import (
    MODEL_DTYPES,
    Activations,
    Backbone,
    Placement,
    attention_mask_of,
    first_tensor,
    replace_first_tensor,
)
from clear_sae.backbones.diffusers_pipeline import load_pipeline_text_encoders
from clear_sae.backbones.hf_text import load_hf_text_encoder, load_minilm, text_encoder_module
from clear_sae.backbones.hub import PREFIX, download_text_side, hub_source, parse_hub_name
from clear_sae.backbones.transformer_lens import CONFIG_FILE, load_transformer_lens
from clear_sae.errors import ClearSaeError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "Activations",
    "Backbone",
    "BUILTIN",
    "attention_mask_of",
    "encoder_of",
    "first_tensor",
    "hook_module",
    "load_backbone",
    "MODEL_DTYPES",
    "Placement",
    "replace_first_tensor",
]


def _minilm() -> Backbone:

    return load_minilm()


BUILTIN: dict[str, Callable[[], Backbone]] = {"minilm": _minilm}
"""Backbones available by name, with no folder: the embedded default."""


def load_backbone(model: str | Path, placement: Placement | None = None) -> Backbone:
    """Load a backbone by registered name or from a local folder (HF text encoder, diffusers pipeline,
    TransformerLens), on `placement`'s device and in its precision (default: the CPU in float32)."""
    name = str(model)
    if placement is not None:  # a bad device or dtype is refused before the model is read
        placement.check()
    hub = parse_hub_name(name) if name not in BUILTIN else None
    if hub is not None:
        folder, commit = download_text_side(*hub)
        backbone = _load(str(folder))
        backbone.source = hub_source(hub[0], commit)
    else:
        backbone = _load(name)
        backbone.source = name if name in BUILTIN else str(Path(name).resolve())
    if placement is not None and placement != Placement():
        backbone.place(placement)
    return backbone


def load_backbone_for(model: str | Path | None, recorded: str | None, placement: Placement | None = None) -> Backbone:
    """The backbone `model` names, else the one a cache, dictionary or library recorded (`recorded`): a built-in
    name or the absolute folder `load_backbone` wrote there; a relative path in a file (which would resolve
    against wherever the command runs) is refused."""
    if model:
        return load_backbone(model, placement)
    if not recorded:
        raise ClearSaeError("cannot tell which model these dictionaries belong to; pass --model")
    if recorded not in BUILTIN and not Path(recorded).is_absolute() and not recorded.startswith(PREFIX):
        raise ClearSaeError(
            f"the recorded model {recorded!r} is neither a built-in name ({', '.join(BUILTIN)}), an absolute "
            "folder nor a Hub id; pass the model with --model"
        )
    return load_backbone(recorded, placement)


def _load(name: str) -> Backbone:
    if name in BUILTIN:
        return BUILTIN[name]()
    folder = Path(name)
    if not folder.is_dir():
        raise ClearSaeError(
            f"unknown model {name!r}: not a built-in name ({', '.join(BUILTIN)}), an existing folder nor a Hub "
            "id; pass minilm, a local folder saved with save_pretrained, or owner/name"
        )
    if (folder / "model_index.json").is_file():
        return load_pipeline_text_encoders(folder)

    if (folder / CONFIG_FILE).is_file():
        return load_transformer_lens(folder)
    if (folder / "config.json").is_file():
        return load_hf_text_encoder(folder)
    raise ClearSaeError(
        f"{folder} is not a model folder: it has no config.json (text encoder), model_index.json (diffusers "
        f"pipeline) or {CONFIG_FILE} (TransformerLens); save the model with save_pretrained"
    )


def encoder_of(target: Any, hook_point: str) -> "nn.Module | None":
    """The text encoder behind `hook_point` whose forward call carries the attention mask (see `hook_module` for the
    targets); None for a HookedTransformer, which takes no mask."""
    if isinstance(target, Backbone):
        return target.encoder_model(hook_point)
    if isinstance(getattr(target, "hook_dict", None), dict):
        return None
    prefix = hook_point.partition(".")[0]
    owner = getattr(target, prefix, None)
    if owner is None and prefix == "text_encoder":
        owner = target  # a bare text encoder
    return owner if owner is not None and hasattr(owner, "config") else None


def hook_module(target: Any, hook_point: str) -> "nn.Module":
    """The module behind `hook_point` on a Backbone, a diffusers pipeline, a HF text encoder or a HookedTransformer."""
    if isinstance(target, Backbone):
        return target.module(hook_point)
    hook_dict = getattr(target, "hook_dict", None)
    if isinstance(hook_dict, dict) and hook_point in hook_dict:
        return hook_dict[hook_point]
    prefix, _, local = hook_point.partition(".")
    owner = getattr(target, prefix, None)  # a pipeline's text_encoder[_N]
    if owner is None and prefix == "text_encoder":
        owner = target  # a bare text encoder
    if owner is not None and hasattr(owner, "config"):
        return text_encoder_module(owner, local)
    raise ClearSaeError(
        f"cannot find hook point {hook_point!r} on {type(target).__name__}; pass a clear_sae Backbone, a diffusers "
        "pipeline, a Hugging Face text encoder or a HookedTransformer that has it"
    )
