"""The backbone interface: named hook points, and a batch of prompts in, residual streams out."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from clear_sae.errors import ClearSaeError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class Activations:
    """The residual stream at one hook point for a batch of prompts."""

    acts: "torch.Tensor"
    """`[batch, seq, d]` activations, padding positions included."""
    mask: "torch.Tensor"
    """`[batch, seq]` bool, True on real tokens; padding is never to be used."""
    padding: "torch.Tensor | None" = None
    """`[batch, seq]` bool, True on padding positions that the pipeline's transformer reads (an encoder run
    without a mask, its padded states handed on: CogVideoX, Flux, SD3); None where no padding is read."""


MODEL_DTYPES = ("float32", "bfloat16", "float16")
"""Precisions a backbone's models can run in."""


@dataclass
class Placement:
    """Where a backbone's models run and in which precision (`Backbone.place`)."""

    device: str = "cpu"
    """Device the model runs on: cpu, cuda, cuda:N or mps."""
    model_dtype: str = "float32"
    """Precision of the model's weights and activations: float32, bfloat16 or float16."""

    def check(self) -> None:
        """Raise a one-line error if the dtype is not one of MODEL_DTYPES or the device is not present."""
        if self.model_dtype not in MODEL_DTYPES:
            raise ClearSaeError(f"unsupported model dtype {self.model_dtype!r}; pass one of {', '.join(MODEL_DTYPES)}")
        resolve_device(self.device)


def resolve_device(name: str) -> "torch.device":
    """The torch device `name` names, refused with a one-line error when it is malformed or not present."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ClearSaeError(f"unknown device {name!r}; pass cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ClearSaeError(f"device {name!r} asked for, but CUDA is not available here; pass --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ClearSaeError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ClearSaeError(f"device {name!r} asked for, but MPS is not available here; pass --device cpu")
    return device


def model_device(model: "nn.Module") -> "torch.device":
    """The device of a model's first parameter: where its inputs go (cpu for a model without parameters; a model
    offloaded by accelerate moves its inputs on to the execution device itself)."""
    import torch

    first = next(iter(model.parameters()), None)
    return torch.device("cpu") if first is None else first.device


def folder_fingerprint(*folders: str | Path) -> str:
    """A short hash of the config files and weights in `folders`: two models saved in folders of the same
    name get different ids unless their weights are the same. Reads at most 2 MiB per weight file."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(Path(folder).iterdir()):
            if path.suffix == ".json" and path.name.startswith("config"):
                digest.update(path.read_bytes())
            elif path.suffix == ".safetensors":
                size = path.stat().st_size
                digest.update(str(size).encode())
                with path.open("rb") as f:
                    digest.update(f.read(1 << 20))
                    f.seek(max(0, size - (1 << 20)))
                    digest.update(f.read(1 << 20))
    return digest.hexdigest()[:10]


def first_tensor(output: Any) -> "torch.Tensor":
    """The residual stream inside a module's output: the tensor itself or the first item of a tuple."""
    return output[0] if isinstance(output, (tuple, list)) else output


def attention_mask_of(args: tuple, kwargs: dict[str, Any]) -> "torch.Tensor | None":
    """The attention mask in a Hugging Face model's forward call: the `attention_mask` keyword, or the second
    positional argument (`model(input_ids, attention_mask)`, as Wan's pipeline calls its encoder); None if absent."""
    mask = kwargs.get("attention_mask")
    if mask is None and len(args) >= 2 and hasattr(args[1], "shape"):
        mask = args[1]
    return mask


def replace_first_tensor(output: Any, new: "torch.Tensor") -> Any:
    """`output` with its residual-stream tensor replaced by `new`, keeping its container type."""
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    return new


class Backbone(ABC):
    """A model whose residual stream can be read and edited at stable, named hook points."""

    backbone_id: str
    """Identifies the model in caches, dictionaries and libraries (e.g. `minilm`)."""
    source: str = ""
    """What `--model` loads it from again: a built-in name or an absolute folder path."""

    @property
    @abstractmethod
    def hook_points(self) -> list[str]:
        """All hook point names, from the input embedding to the last block."""

    @abstractmethod
    def module(self, hook_point: str) -> "nn.Module":
        """The module whose output (or the output's first item) is the residual stream at `hook_point`."""

    @abstractmethod
    def d_model(self, hook_point: str) -> int:
        """Width of the residual stream at `hook_point`."""

    def models(self) -> list["nn.Module"]:
        """Every model the backbone runs (what `place` moves)."""
        raise NotImplementedError(f"{type(self).__name__} does not list its models")

    def place(self, placement: Placement) -> None:
        """Move the models to `placement`'s device and precision; each batch of tokens follows its model."""
        import torch

        placement.check()
        device, dtype = resolve_device(placement.device), getattr(torch, placement.model_dtype)
        for model in self.models():
            model.to(device=device, dtype=dtype)

    def module_path(self, hook_point: str) -> str:
        """The dotted name of `hook_point`'s module inside its model as saved (`encoder.block.3` for a T5 encoder),
        so that other tools can hook the same module."""
        target = self.module(hook_point)
        for model in self.models():
            for name, module in model.named_modules():
                if module is target:
                    return name
        raise ClearSaeError(f"the module of {hook_point} is in none of {self.backbone_id}'s models")

    def subfolder(self, hook_point: str) -> str | None:
        """The pipeline subfolder holding `hook_point`'s model (`text_encoder_2`); None for a model on its own."""
        return None

    def encoder_model(self, hook_point: str) -> "nn.Module | None":
        """The model whose forward call receives the attention mask of `hook_point`'s positions (None where the
        model takes none, as a HookedTransformer)."""
        return None

    @abstractmethod
    def _forward(self, prompts: list[str], hook_points: list[str]) -> dict[str, "torch.Tensor"]:
        """Run the model on `prompts`; return the attention mask for every requested hook point."""

    def token_strings(self, prompt: str, hook_point: str) -> list[str]:
        """The tokens of `prompt` as the model reads them at `hook_point`, one string per position of `run`."""
        tokenizer, max_length = self._tokenizer_for(hook_point)
        ids = tokenizer([prompt], truncation=True, max_length=max_length)["input_ids"][0]
        return [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]

    def vocabulary_tokens(self, ids: list[int], hook_point: str) -> list[str]:
        """The strings of token `ids` in the vocabulary of the tokenizer behind `hook_point`."""
        tokenizer, _ = self._tokenizer_for(hook_point)
        return [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]

    def tokenizer_for(self, hook_point: str) -> Any:
        """The (Hugging Face) tokenizer behind `hook_point`."""
        return self._tokenizer_for(hook_point)[0]

    def _tokenizer_for(self, hook_point: str) -> tuple[Any, int]:
        """The tokenizer behind `hook_point` and the length it truncates to."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its tokenizer")

    def check_hook_points(self, hook_points: list[str]) -> None:
        """Raise a one-line error naming the valid choices if any of `hook_points` is unknown."""
        known = set(self.hook_points)
        unknown = [h for h in hook_points if h not in known]
        if unknown:
            raise unknown_layer(unknown[0], self.hook_points, f"backbone {self.backbone_id}")

    @property
    def final_hook_point(self) -> str:
        """The last hook point: its mean-pooled output serves as the prompt embedding."""
        return self.hook_points[-1]

    def run(self, prompts: list[str], hook_points: list[str]) -> dict[str, Activations]:
        """Run `prompts` through the model and return the residual stream at each of `hook_points` (the prompts run
        in the groups `length_groups` makes; the result is the batch's, in order, padded as the mask says)."""
        groups = self.length_groups(prompts)
        if len(groups) <= 1:
            return self._run_together(prompts, hook_points)
        parts = [(group, self._run_together([prompts[i] for i in group], hook_points)) for group in groups]
        return merge_groups(parts, len(prompts), hook_points)

    def length_groups(self, prompts: list[str]) -> list[list[int]]:
        """The prompts' indices in the groups `run` runs together: here all at once (a backbone that pads every
        prompt to the same length gains nothing from grouping)."""
        return [list(range(len(prompts)))]

    def _run_together(self, prompts: list[str], hook_points: list[str]) -> dict[str, Activations]:
        """Run `prompts` as one batch and return the residual stream at each of `hook_points`."""
        import torch

        self.check_hook_points(hook_points)
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for name in hook_points:

            def capture(_module: Any, _inputs: Any, output: Any, name: str = name) -> None:
                captured[name] = first_tensor(output).detach()

            handles.append(self.module(name).register_forward_hook(capture))
        try:
            with torch.inference_mode():
                masks = self._forward(prompts, hook_points)
        finally:
            for handle in handles:
                handle.remove()
        return {name: Activations(captured[name], masks[name]) for name in hook_points}

    def run_batched(
        self, prompts: list[str], hook_points: list[str], batch_size: int = 32, desc: str | None = None
    ) -> Iterator[tuple[list[str], dict[str, Activations]]]:
        """Run `prompts` in batches of `batch_size`, yielding each batch with its residual stream at `hook_points`
        (as `run` returns it); with `desc`, a progress bar of that name counts the batches."""
        from tqdm.auto import tqdm

        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc=desc, unit="batch", disable=desc is None, leave=False):
            batch = prompts[start : start + batch_size]
            yield batch, self.run(batch, hook_points)

    def resolve_layers(self, spec: str | None) -> list[str]:
        """Turn a `--layers` value (`all`, or comma-separated names or indices) into hook point names."""
        return select_hook_points(spec, self.hook_points, f"backbone {self.backbone_id}")


LENGTH_GROUP = 16
"""Prompts a backbone that pads a batch to its longest prompt runs together: a batch is run in groups of this many
prompts of similar token counts, so that short prompts are not padded to a long one's length (on 2 cores, a
quarter fewer padded positions and a fifth less time on the demo's captions than batches of 64 as they come)."""


def groups_by_length(lengths: list[int], size: int = LENGTH_GROUP) -> list[list[int]]:
    """Indices sorted by length (then position), cut into groups of `size`."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + size] for i in range(0, len(order), size)]


def merge_groups(
    parts: list[tuple[list[int], dict[str, Activations]]], n: int, hook_points: list[str]
) -> dict[str, Activations]:
    """One batch's activations from those of its groups (each with the batch indices of its prompts), in the
    batch's order: a group shorter than the longest is padded with zeros (and its mask with False)."""
    import torch

    merged = {}
    for hook in hook_points:
        pieces = [(group, found[hook]) for group, found in parts]
        first = pieces[0][1].acts
        length = max(a.acts.shape[1] for _, a in pieces)
        acts = torch.zeros((n, length, *first.shape[2:]), dtype=first.dtype, device=first.device)
        mask = torch.zeros((n, length), dtype=torch.bool, device=pieces[0][1].mask.device)
        padding = None
        for group, a in pieces:
            index = torch.tensor(group, device=acts.device)
            acts[index, : a.acts.shape[1]] = a.acts
            mask[index.to(mask.device), : a.mask.shape[1]] = a.mask.bool()
            if a.padding is not None:
                padding = torch.zeros_like(mask) if padding is None else padding
                padding[index.to(mask.device), : a.padding.shape[1]] = a.padding.bool()
        merged[hook] = Activations(acts, mask, padding)
    return merged


def unknown_layer(name: str, available: list[str], owner: str) -> ClearSaeError:
    """The one-line error for a layer name that `owner` does not have."""
    return ClearSaeError(
        f"unknown layer {name!r} for {owner}; choose from {', '.join(available)} "
        f"(or their indices 0..{len(available) - 1})"
    )


def select_hook_points(spec: str | None, available: list[str], owner: str) -> list[str]:
    """Parse a `--layers` value against `available`: `all`, or comma-separated names or indices (negative
    indices count from the end). `owner` names what holds the hook points, for the error message."""
    if spec is None or spec.strip() in ("", "all"):
        return list(available)
    if not spec.replace(",", "").strip():
        raise ClearSaeError(f"--layers {spec!r} names no layer; pass all, or names or indices such as 0,3,-1")
    chosen = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        if item.lstrip("-").isdigit():
            index = int(item)
            if not -len(available) <= index < len(available):
                raise ClearSaeError(
                    f"unknown layer index {index} for {owner}; it has hook points "
                    f"0..{len(available) - 1}: {', '.join(available)}"
                )
            item = available[index]
        elif item not in available:
            raise unknown_layer(item, available, owner)
        chosen.append(item)
    return list(dict.fromkeys(chosen))
