"""The text encoders of a diffusers pipeline (Wan 2.x, CogVideoX, Flux, SD3) as one backbone.

Every text encoder the pipeline holds (`text_encoder`, `text_encoder_2`, `text_encoder_3`) contributes
its hook points under its own attribute name, so Flux and SD3 expose both/all encoders with distinct
names. Only the text encoders are loaded from a folder; the DiT and the VAE are never touched.

`PipelineTextEncoders` runs each encoder on its own, padded to the batch's longest prompt and masked.
`PipelineEncoding` wraps a live pipeline and runs its own `encode_prompt`, so that what is cached, learned from
and measured is what the pipeline's transformer reads at inference: its tokenization, its
`max_sequence_length`, its padding and its mask, or the absence of one (CogVideoX, LTX-Video, SD3 and Flux pad T5's
input to the full length and pass no mask, so every real token also attends to the padding).
"""

from __future__ import annotations

import inspect
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from clear_sae.backbones.base import (
    Activations,
    Backbone,
    attention_mask_of,
    first_tensor,
    folder_fingerprint,
    replace_first_tensor,
)
from clear_sae.backbones.hf_text import HFTextEncoder, load_hf_text_encoder
from clear_sae.errors import ClearSaeError

log = logging.getLogger("clear_sae")

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

    def subfolder(self, hook_point: str) -> str | None:
        """The pipeline's component (and subfolder) that holds `hook_point`: `text_encoder`, `text_encoder_2`..."""
        self._encoder_for(hook_point)
        return hook_point.split(".", 1)[0]

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
    """Load only the text encoders and tokenizers of a pipeline saved with `save_pretrained`, and run them through
    the pipeline's own `encode_prompt` (`PipelineEncoding`; its transformer, VAE and scheduler are not loaded).
    Where diffusers cannot build the pipeline class from its text side alone, each encoder runs on its own, and
    a warning says so."""
    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text())
    names = [name for name in ENCODER_NAMES if index.get(name) and index[name][0] is not None]
    if not names:
        raise ClearSaeError(f"pipeline folder {folder} lists no text encoder in model_index.json")
    fingerprint = folder_fingerprint(*(folder / n for n in names))
    backbone_id = f"pipeline:{folder.resolve().name}:{fingerprint}"
    encoders = {
        name: load_hf_text_encoder(folder / name, folder / _tokenizer_name(name), prefix=name, backbone_id=backbone_id)
        for name in names
    }
    pipeline = text_side_pipeline(str(index.get("_class_name", "")), encoders)
    if pipeline is None:
        log.warning(
            f"diffusers cannot build {index.get('_class_name')!r} from its text encoders alone: each encoder of "
            f"{folder} runs on its own, padded to the batch's longest prompt, which may not be how the pipeline pads"
        )
        return PipelineTextEncoders(encoders, backbone_id)
    # Another id than the encoders-alone reading: its activations differ wherever the pipeline pads differently.
    return PipelineEncoding(pipeline, f"pipeline-encoding:{folder.resolve().name}:{fingerprint}")


def text_side_pipeline(class_name: str, encoders: dict[str, HFTextEncoder]) -> Any | None:
    """The diffusers pipeline class `class_name` built from these text encoders and their tokenizers, every other
    component None (enough for `encode_prompt`); None where diffusers has no such class or it will not build."""
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if not isinstance(cls, type):
        return None
    components: dict[str, Any] = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        encoder = encoders.get(name.replace("tokenizer", "text_encoder"))
        if name in encoders:
            components[name] = encoders[name].model
        elif name.startswith("tokenizer") and encoder is not None:
            components[name] = encoder.tokenizer
        elif parameter.default is inspect.Parameter.empty:
            components[name] = None
    try:
        pipeline = cls(**components)
    except Exception:  # a pipeline whose constructor reads a component it was not given
        return None
    return pipeline if callable(getattr(pipeline, "encode_prompt", None)) else None


def real_positions(
    args: tuple, kwargs: dict[str, Any], pad_token_id: int | None, end_token_id: int | None = None
) -> "torch.Tensor":
    """Which positions of a text encoder's call are real tokens: its attention mask where it is given one, else
    every position before the trailing run of padding ids (a pipeline that passes no mask still pads on the
    right). Where padding and end-of-text share an id (`end_token_id`, as CLIP-L's tokenizer has it), the first
    id of that run is the end-of-text token, which CLIP pools at, and counts as real."""
    import torch

    mask = attention_mask_of(args, kwargs)
    if mask is not None:
        return mask.bool()
    ids = kwargs.get("input_ids", args[0] if args else None)
    if not isinstance(ids, torch.Tensor):
        raise ClearSaeError("the pipeline called its text encoder without input ids; clear_sae cannot tell its tokens")
    if pad_token_id is None:
        return torch.ones_like(ids, dtype=torch.bool)
    position = torch.arange(ids.shape[-1], device=ids.device)
    last_real = torch.where(ids != pad_token_id, position, -1).amax(dim=-1, keepdim=True)
    if end_token_id is not None and end_token_id == pad_token_id:
        last_real = last_real + 1
    return position <= last_real


def end_token_id(tokenizer: Any) -> int | None:
    """The id that closes a prompt: the tokenizer's end-of-text (eos) token, else its separator (BERT's [SEP])."""
    for name in ("eos_token_id", "sep_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return None


class PipelineEncoding(PipelineTextEncoders):
    """The text encoders of a live diffusers pipeline, run through the pipeline's own `encode_prompt` (one batch of
    prompts, no classifier-free guidance), so every hook point sees the activations of inference.

    The positions a hook point's rows belong to are the real tokens of the encoder's call (`real_positions`):
    caches, dictionaries and concept statistics read only those, while at inference the clamp also edits padding
    positions on which concept latents fire wherever the pipeline passes its encoder no mask."""

    def __init__(
        self,
        pipeline: Any,
        backbone_id: str = "pipeline",
        max_sequence_length: int | None = None,
        encode_options: dict[str, Any] | None = None,
    ) -> None:
        encoders = PipelineTextEncoders.from_pipeline(pipeline, backbone_id).encoders
        super().__init__(encoders, backbone_id)
        if not callable(getattr(pipeline, "encode_prompt", None)):
            raise ClearSaeError(
                f"{type(pipeline).__name__} has no encode_prompt method; use PipelineTextEncoders to run its text "
                "encoders on their own"
            )
        self.pipeline = pipeline
        self.max_sequence_length = max_sequence_length
        self.encode_options = dict(encode_options or {})
        """Further `encode_prompt` arguments, as the user passes them to `pipe(...)` (e.g. `prompt_template`)."""
        self._unread: list[str] | None = None
        self._padding_read: dict[str, bool] | None = None
        self._template_prefix: dict[str, int] = {}

    def encode_kwargs(self, prompts: list[str]) -> dict[str, Any]:
        """The arguments `encode_prompt` is called with: the prompts, no classifier-free guidance, the
        `max_sequence_length` given (else the pipeline's default), each only where the pipeline takes it, and the
        `encode_options`. A second or third prompt that the pipeline requires (SD3's `prompt_2`, `prompt_3`) is
        None, which makes the pipeline reuse the first."""
        parameters = inspect.signature(self.pipeline.encode_prompt).parameters
        kwargs: dict[str, Any] = {"prompt": prompts}
        for name, parameter in parameters.items():
            if name.startswith("prompt_") and name[7:].isdigit() and parameter.default is inspect.Parameter.empty:
                kwargs[name] = None
        if "do_classifier_free_guidance" in parameters:
            kwargs["do_classifier_free_guidance"] = False
        if self.max_sequence_length is not None and "max_sequence_length" in parameters:
            kwargs["max_sequence_length"] = self.max_sequence_length
        return {**kwargs, **self.encode_options}

    def prompt_template(self, prefix: str) -> dict[str, Any] | None:
        """The template encoder `prefix`'s prompts are wrapped in (HunyuanVideo's `prompt_template`, as given in
        `encode_options` or the pipeline's default); None where the pipeline has none for that encoder."""
        parameters = inspect.signature(self.pipeline.encode_prompt).parameters
        if prefix != "text_encoder" or "prompt_template" not in parameters:
            return None
        template = self.encode_options.get("prompt_template", parameters["prompt_template"].default)
        return template if isinstance(template, dict) and "template" in template else None

    def template_prefix(self, prefix: str) -> int:
        """How many leading positions of encoder `prefix`'s input are the pipeline's prompt template rather than
        the prompt (HunyuanVideo wraps each prompt in a system template for its LLM and crops the template's
        positions before the transformer reads the states); 0 for a pipeline without a template. Found once."""
        if prefix not in self._template_prefix:
            template = self.prompt_template(prefix)
            if template is None:
                length = 0
            elif template.get("crop_start") is not None:
                length = int(template["crop_start"])
            else:  # as HunyuanVideo measures it: the template tokenized alone, less its placeholder and end of turn
                ids = self.encoders[prefix].tokenizer(template["template"], padding="max_length", return_tensors="pt")
                length = int(ids["input_ids"].shape[-1]) - 2
            self._template_prefix[prefix] = length
        return self._template_prefix[prefix]

    def token_strings(self, prompt: str, hook_point: str) -> list[str]:
        """The prompt's tokens at `hook_point`'s real positions: inside the pipeline's template where it has one."""
        prefix = hook_point.split(".", 1)[0]
        template, skip = self.prompt_template(prefix), self.template_prefix(prefix)
        if template is None or not skip:
            return super().token_strings(prompt, hook_point)
        tokenizer = self.encoders[prefix].tokenizer
        ids = tokenizer([template["template"].format(prompt)])["input_ids"][0][skip:]
        return [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]

    @property
    def hook_points(self) -> list[str]:
        """Hook points of every text encoder whose output reaches what the pipeline reads."""
        unread = set(self.unread_hook_points)
        return [name for name in super().hook_points if name not in unread]

    @property
    def unread_hook_points(self) -> list[str]:
        """The blocks past the hidden state the pipeline reads from each encoder (HunyuanVideo reads its LLM's
        third-last layer; SD3 reads CLIP's penultimate one but also its pooled output, so all of CLIP counts).
        Clamping there would change nothing the transformer sees, so they are no hook points of this backbone.
        Found once: each encoder's blocks, from the last, are shifted until `encode_prompt`'s output changes."""
        if self._unread is None:
            self._probe()
        assert self._unread is not None
        return self._unread

    def _probe(self) -> None:
        """Find, in one pass over a one-word prompt, the blocks the pipeline never reads (`unread_hook_points`)
        and the encoders whose padding it reads (`padding_read`)."""
        import torch

        kwargs = self.encode_kwargs(["a"])
        calls: dict[str, tuple[torch.Tensor, bool]] = {}
        unread: list[str] = []
        read: dict[str, bool] = {}
        with torch.inference_mode():
            with self._recording(calls):
                baseline = _tensors_in(self.pipeline.encode_prompt(**kwargs))
            for prefix, encoder in self.encoders.items():
                if prefix not in calls:
                    raise self._not_run(prefix)
                found = []
                for hook in reversed(encoder.hook_points[1:]):  # the embedding is always read
                    if self._output_changes(encoder.module(hook), kwargs, baseline):
                        break
                    found.append(hook)
                unread.extend(reversed(found))
                blocks = [h for h in encoder.hook_points[1:] if h not in found]
                real, masked = calls[prefix]
                read[prefix] = not (masked or bool(real.all()) or _hands_on_a_mask(baseline, real.shape)) and any(
                    self._output_changes(encoder.module(hook), kwargs, baseline, ~real) for hook in reversed(blocks)
                )
        self._unread, self._padding_read = unread, read

    def _output_changes(
        self, module: "nn.Module", kwargs: dict[str, Any], baseline: list["torch.Tensor"], where: Any = None
    ) -> bool:
        """Whether `encode_prompt(**kwargs)` returns anything else than `baseline` once `module`'s output is
        shifted (by a fixed random vector, at the `[batch, seq]` positions `where`, else everywhere)."""
        import torch

        def shift(_module: Any, _inputs: Any, output: Any) -> Any:
            states = first_tensor(output)
            # A different shift per channel: an equal one would be taken out again by the next LayerNorm.
            step = torch.randn(states.shape[-1], generator=torch.Generator().manual_seed(0)).to(states.device)
            if where is not None:
                step = where[..., None].to(states.device) * step
            return replace_first_tensor(output, states + step.to(states.dtype))

        handle = module.register_forward_hook(shift, prepend=True)  # ahead of transformers' recording, as a clamp
        try:
            shifted = _tensors_in(self.pipeline.encode_prompt(**kwargs))
        finally:
            handle.remove()
        return any(not torch.equal(a, b) for a, b in zip(baseline, shifted))

    @property
    def padding_read(self) -> dict[str, bool]:
        """Per text encoder, whether the pipeline's transformer reads the states at its padding positions: the
        encoder runs without an attention mask (so those states depend on the prompt), `encode_prompt` hands on
        no mask of the encoder's length, and shifting the padding positions of one of the encoder's blocks changes
        what `encode_prompt` returns. True for CogVideoX's and Flux's T5 and SD3's encoders; False for Wan (it
        masks the encoder and zeroes the padding), LTX-Video (it hands its transformer the mask) and a CLIP read
        only through its pooled end-of-text state (Flux, HunyuanVideo). Found once, on a one-word prompt."""
        if self._padding_read is None:
            self._probe()
        assert self._padding_read is not None
        return self._padding_read

    def run(self, prompts: list[str], hook_points: list[str]) -> dict[str, Activations]:
        """As `Backbone.run`; where the pipeline reads an encoder's padding (`padding_read`), its activations also
        flag those positions (`Activations.padding`)."""
        out = super().run(prompts, hook_points)
        for hook, acts in out.items():
            if self.padding_read[hook.split(".", 1)[0]]:
                acts.padding = ~acts.mask
        return out

    @contextmanager
    def _recording(self, calls: dict[str, tuple["torch.Tensor", bool]]) -> Iterator[None]:
        """While open, each encoder's call is recorded in `calls`: its real positions and whether it had a mask."""
        handles = []
        for prefix, encoder in self.encoders.items():
            pad, end = getattr(encoder.tokenizer, "pad_token_id", None), end_token_id(encoder.tokenizer)

            def remember(
                _module: Any, args: tuple, kwargs: dict[str, Any], prefix: str = prefix, pad: Any = pad, end: Any = end
            ):
                if prefix in calls:
                    raise ClearSaeError(
                        f"{type(self.pipeline).__name__}.encode_prompt ran {prefix} more than once for one batch; "
                        "clear_sae reads one call per encoder: use PipelineTextEncoders for this pipeline"
                    )
                calls[prefix] = (real_positions(args, kwargs, pad, end), attention_mask_of(args, kwargs) is not None)

            handles.append(encoder.model.register_forward_pre_hook(remember, with_kwargs=True))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def check_hook_points(self, hook_points: list[str]) -> None:
        """As `Backbone.check_hook_points`, and a block past the hidden state the pipeline reads is named as such."""
        unread_hooks = set(self.unread_hook_points)
        unread = [h for h in hook_points if h in unread_hooks]
        if unread:
            encoder = unread[0].split(".", 1)[0]
            last = [h for h in self.hook_points if h.startswith(f"{encoder}.")][-1]
            raise ClearSaeError(
                f"{unread[0]} lies past the hidden state {type(self.pipeline).__name__} reads from {encoder} (its "
                f"last read hook point is {last}): clamping there would change nothing; choose up to {last}"
            )
        super().check_hook_points(hook_points)

    def _not_run(self, prefix: str) -> ClearSaeError:
        """The one-line error for an encoder that `encode_prompt` did not call."""
        return ClearSaeError(
            f"{type(self.pipeline).__name__}.encode_prompt did not run {prefix}; clear_sae cannot read its hook "
            "points through this pipeline's encoding: use PipelineTextEncoders"
        )

    def _forward(self, prompts: list[str], hook_points: list[str]) -> dict[str, "torch.Tensor"]:
        calls: dict[str, tuple[torch.Tensor, bool]] = {}
        with self._recording(calls):
            self.pipeline.encode_prompt(**self.encode_kwargs(prompts))
        masks = {}
        for hook in hook_points:
            prefix = hook.split(".", 1)[0]
            if prefix not in calls:
                raise self._not_run(prefix)
            masks[hook] = calls[prefix][0].clone()
            masks[hook][:, : self.template_prefix(prefix)] = False
        return masks


def _hands_on_a_mask(outputs: list["torch.Tensor"], shape: tuple[int, ...]) -> bool:
    """Whether `encode_prompt` returned an attention mask of an encoder call's `[batch, seq]` shape (a pipeline
    that passes its transformer the mask, as LTX-Video does, keeps the transformer off the padding)."""
    return any(t.dim() == 2 and tuple(t.shape) == tuple(shape) and not t.is_floating_point() for t in outputs)


def _tensors_in(output: Any) -> list["torch.Tensor"]:
    """Every tensor in `encode_prompt`'s output (a tensor, or nested tuples and lists holding tensors and None)."""
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors_in(item)]
    return [output] if hasattr(output, "shape") else []
