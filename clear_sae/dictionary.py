"""Per-layer dictionaries: build, train, save and load sae-lens SAEs, plus the folder's manifest.

A dictionary folder holds one sub-folder per hook point in sae-lens's on-disk format (`cfg.json` +
`sae_weights.safetensors`, loadable with `sae_lens.SAE.load_from_disk`) and a `manifest.json` beside
them with the training record of every layer.

Training normalises activations to a mean squared norm of `d_in` (so one learning rate fits every
layer) and folds that scale back into the weights before saving: the saved SAE reads raw activations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clear_sae import __version__
from clear_sae.backbones.hub import PREFIX, parse_hub_name
from clear_sae.config import (
    ABOVE_ZERO,
    AT_LEAST_ZERO,
    COUNT,
    POSITIVE,
    SHARE,
    check_fields,
    check_memory,
    is_count,
    usable_cores,
)
from clear_sae.distributed import ProcessGroup, join, rank_device
from clear_sae.errors import ClearSaeError, check_finite, check_interrupt
from clear_sae.io import atomic_write_text, corpus_vocabulary
from clear_sae.sae import checkpoint as checkpoints
from clear_sae.sae.trainer import (
    Checkpointing,
    TopKTrainConfig,
    check_step_loss,
    feed,
    lr_factor,
    resolve_kernel,
    to_inference_sae,
    train_topk,
)

if TYPE_CHECKING:
    import torch
    from sae_lens import SAE

    from clear_sae.cache import ActivationCache

log = logging.getLogger("clear_sae")

MANIFEST = "manifest.json"
WEIGHTS = "sae_weights.safetensors"
CONFIG = "cfg.json"
ARCHITECTURES = ("topk", "standard", "jumprelu")
SAVE_DTYPES = ("float32", "float16")
"""dtypes a dictionary's weights may be saved in."""
DISTRIBUTE = ("layers", "data")
"""How a run under torchrun splits its work over ranks (`TrainConfig.distribute`)."""
PROGRESS = "clear_sae_progress"
"""The sub-folder of a dictionary folder that holds an unfinished run's checkpoints and finished layers' records;
removed when the run completes."""
BACKGROUND_SAMPLE = 512
"""Training captions the manifest keeps as a sample: the background against which concept latents are checked
(more than `ConceptConfig.background`, so that enough remain once the captions naming a concept are left out)."""


@dataclass
class TrainConfig:
    """How to train one SAE per hook point."""

    architecture: str = "topk"
    """topk (default), standard (ReLU + L1) or jumprelu."""
    expansion: int = field(default=4, metadata=POSITIVE)
    """d_sae = expansion * d_in."""
    k: int = field(default=32, metadata=POSITIVE)
    """Active latents per token (topk only)."""
    l1_coefficient: float = field(default=2.0, metadata=AT_LEAST_ZERO)
    """Sparsity penalty of the standard (ReLU) SAE, on normalised activations."""
    l0_coefficient: float = field(default=0.5, metadata=AT_LEAST_ZERO)
    """Sparsity penalty of the JumpReLU SAE."""
    tokens: int = field(default=200_000, metadata=POSITIVE)
    """Training tokens per layer (the cache is passed over again when it holds fewer)."""
    batch_size: int = field(default=512, metadata=POSITIVE)
    """Tokens per optimiser step."""
    lr: float = field(default=1e-3, metadata=ABOVE_ZERO)
    """Adam learning rate; decays linearly to lr/10 over the last 30% of steps."""
    seed: int = field(default=0, metadata=COUNT)
    """Seeds the weights and the data order; training is deterministic on CPU."""
    dead_window: float = field(default=0.25, metadata=SHARE)
    """A latent that fires on no token in this final share of training counts as dead."""
    save_dtype: str = "float32"
    """dtype of the saved weights (float16 halves the size)."""
    eval_tokens: int = field(default=8192, metadata=POSITIVE)
    """Tokens drawn across the cache to measure explained variance and L0."""
    kernel: str = "auto"
    """TopK training step: sparse, dense, autograd (the plain reference) or auto (sparse on CPU, dense on GPU)."""
    aux_coefficient: float = field(default=1.0, metadata=AT_LEAST_ZERO)
    """Weight of the TopK trainer's AuxK loss, which revives dead latents (sae-lens's default)."""
    device: str = "cpu"
    """Where the TopK trainer runs (cpu or cuda); the other architectures train on the CPU."""
    checkpoint_every: int = field(default=0, metadata=COUNT)
    """Save the TopK trainer's whole state every this many steps, so that `--resume` continues a layer mid-way
    (0: no checkpoints; an interrupted layer then starts again)."""
    distribute: str = "layers"
    """Under torchrun with several ranks: layers (each rank trains its share of the hook points) or data (all
    ranks train each layer together, each on its own part of the cache, `--batch-size` tokens per rank)."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.batch_size > self.tokens:  # a single step would already train on more tokens than asked
            raise ClearSaeError(
                f"--batch-size {self.batch_size} is more than --tokens {self.tokens}: a single step "
                "would train on more tokens than asked; lower --batch-size or raise --tokens"
            )
        if self.distribute not in DISTRIBUTE:
            raise ClearSaeError(f"unknown --distribute {self.distribute!r}; choose one of {', '.join(DISTRIBUTE)}")


@dataclass
class LayerRecord:
    """What the manifest records for one hook point."""

    hook_point: str
    folder: str
    d_in: int
    d_sae: int
    architecture: str
    training_tokens: int
    explained_variance: float
    l0: float
    dead_fraction: float
    input_scale: float
    extra: dict[str, Any] = field(default_factory=dict)


def _training_sae(cfg: TrainConfig, d_in: int, hook: str, backbone_id: str) -> Any:
    """A sae-lens training SAE for the architectures sae-lens trains here (TopK uses clear_sae.sae.trainer)."""
    from sae_lens import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig, StandardTrainingSAE, StandardTrainingSAEConfig

    common: dict[str, Any] = dict(d_in=d_in, d_sae=cfg.expansion * d_in, dtype="float32", device="cpu")
    if cfg.architecture == "standard":
        sae_cfg: Any = StandardTrainingSAEConfig(l1_coefficient=cfg.l1_coefficient, **common)
        sae: Any = StandardTrainingSAE(sae_cfg)
    elif cfg.architecture == "jumprelu":
        sae_cfg = JumpReLUTrainingSAEConfig(l0_coefficient=cfg.l0_coefficient, **common)
        sae = JumpReLUTrainingSAE(sae_cfg)
    else:
        raise ClearSaeError(f"unknown SAE architecture {cfg.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    sae.cfg.metadata.hook_name = hook
    sae.cfg.metadata.model_name = backbone_id
    return sae


def _coefficients(sae: Any, step: int) -> dict[str, float]:
    values = {}
    for name, coef in sae.get_coefficients().items():
        if isinstance(coef, float | int):
            values[name] = float(coef)
        else:
            warm = max(coef.warm_up_steps, 1)
            values[name] = coef.value * min(1.0, (step + 1) / warm)
    return values


def explained_variance(x: "torch.Tensor", recon: "torch.Tensor") -> float:
    """1 - residual variance / total variance, pooled over all tokens and dimensions."""
    residual = (x - recon).pow(2).sum()
    total = (x - x.mean(0, keepdim=True)).pow(2).sum()
    return float(1.0 - residual / total.clamp_min(1e-12))


@dataclass
class RunPlace:
    """Where a training run keeps its progress, what it is, and which ranks train with this process."""

    progress: Path
    """The folder of checkpoints and finished layers' records (`PROGRESS` inside the dictionary folder)."""
    key: dict[str, Any]
    """What the run is (`run_key`): a checkpoint or record of another run is not continued."""
    resume: bool = False
    group: ProcessGroup = field(default_factory=ProcessGroup)

    @property
    def data_parallel(self) -> bool:
        """Whether every rank trains each layer together with the others."""
        return self.key["data_ranks"] > 1

    @property
    def writes(self) -> bool:
        """Whether this rank saves what it trains: each rank its own layers, or the first rank in data-parallel
        training (where every rank holds the same SAE)."""
        return self.group.leads or not self.data_parallel

    def checkpoint(self, hook: str) -> Path:
        """The checkpoint file of `hook`."""
        return self.progress / f"{hook}.checkpoint.safetensors"

    def record(self, hook: str) -> Path:
        """The file where `hook`'s record waits until the run writes its manifest."""
        return self.progress / f"{hook}.record.json"


def _train_topk_layer(
    cache: "ActivationCache",
    hook: str,
    cfg: TrainConfig,
    scale: float,
    b_dec_init: "torch.Tensor",
    n_steps: int,
    dead_after: int,
    progress: bool,
    run: RunPlace,
) -> tuple[Any, float]:
    """Train a TopK SAE with clear_sae's trainer; returns the inference SAE (`to_inference_sae`) and the dead fraction.
    Continues from the layer's checkpoint when the run resumes, and saves one every `cfg.checkpoint_every` steps."""
    from tqdm.auto import tqdm

    topk_cfg = TopKTrainConfig(
        k=cfg.k, lr=cfg.lr, aux_coefficient=cfg.aux_coefficient, kernel=cfg.kernel, seed=cfg.seed
    )
    checkpoint, identity = run.checkpoint(hook), {"run": run.key, "hook_point": hook, "input_scale": scale}
    start, resuming = None, run.resume and checkpoint.is_file()
    if run.data_parallel:  # every rank must start from the same step: the first rank's view decides
        resuming = run.group.gather(resuming)[0]
    if resuming:
        start, record = checkpoints.load_checkpoint(checkpoint)
        checkpoints.check_same_run(checkpoint, record, identity)
    done = 0 if start is None else int(start["steps"])

    def save(steps: int, state: dict[str, "torch.Tensor"]) -> None:
        # Looked up on the module at each call, so that a test can stand in for it.
        checkpoints.save_checkpoint(checkpoint, state, {**identity, "steps": steps})

    def advance() -> None:
        check_interrupt()  # a SIGTERM from torchrun stops the rank between steps
        bar.update()

    group = run.group
    part = (group.rank, group.size) if run.data_parallel else (0, 1)
    batches = cache.iter_minibatches(
        hook, cfg.batch_size, n_steps * cfg.batch_size, seed=cfg.seed, skip_batches=done, part=part
    )
    bar = tqdm(
        total=n_steps,
        initial=done,
        desc=f"training {hook}",
        unit="step",
        disable=not (progress and run.writes),
        leave=False,
    )
    device = rank_device(cfg.device, group)
    result = train_topk(
        feed((batch * scale for batch in batches), device),
        cache.widths[hook],
        cfg.expansion * cache.widths[hook],
        n_steps,
        topk_cfg,
        b_dec_init=b_dec_init,
        dead_after=dead_after,
        dead_window=cfg.dead_window,
        device=device,
        on_step=lambda step, out: advance(),
        checkpointing=Checkpointing(cfg.checkpoint_every, save if run.writes else None, start),
        data_parallel=group if run.data_parallel else None,
    )
    bar.close()
    return to_inference_sae(result.params, cfg.k, hook, cache.backbone_id), result.dead_fraction


def _train_sae_lens_layer(
    cache: "ActivationCache",
    hook: str,
    cfg: TrainConfig,
    scale: float,
    b_dec_init: "torch.Tensor",
    n_steps: int,
    dead_after: int,
    progress: bool,
    run: RunPlace,
) -> tuple[Any, float]:
    """Train a standard or JumpReLU SAE with sae-lens's training SAE classes; returns (inference SAE, dead fraction).
    It keeps no checkpoints (`check_distribution` refuses to ask for them) and trains on one rank."""

    import torch
    from sae_lens import SAE
    from sae_lens.saes.sae import TrainStepInput
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    sae = _training_sae(cfg, cache.widths[hook], hook, cache.backbone_id)
    with torch.no_grad():
        sae.b_dec.copy_(b_dec_init)
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, n_steps))
    tokens_since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    fired_late = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    late_from = int((1 - cfg.dead_window) * n_steps)

    batches = cache.iter_minibatches(hook, cfg.batch_size, n_steps * cfg.batch_size, seed=cfg.seed)
    bar = tqdm(batches, total=n_steps, desc=f"training {hook}", unit="step", disable=not progress, leave=False)
    sae.train()
    for step, batch in enumerate(bar):
        output = sae.training_forward_pass(
            TrainStepInput(
                sae_in=batch * scale,
                coefficients=_coefficients(sae, step),
                dead_neuron_mask=tokens_since_fired > dead_after,
                n_training_steps=step,
                is_logging_step=False,
            )
        )
        check_step_loss(step, float(output.loss.detach()), batch)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            fired = (output.feature_acts > 0).any(0)
            tokens_since_fired += len(batch)
            tokens_since_fired[fired] = 0
            if step >= late_from:
                fired_late |= fired
    bar.close()
    with tempfile.TemporaryDirectory() as tmp:
        sae.save_inference_model(tmp)
        inference = SAE.load_from_disk(tmp, device="cpu", dtype="float32")
    return inference, 1 - float(fired_late.float().mean())


def reconstruction_quality(sae: Any, x: "torch.Tensor") -> tuple[float, float]:
    """Explained variance and mean L0 of `sae` on the rows `x`."""
    import torch

    with torch.no_grad():
        codes = sae.encode(x)
        return explained_variance(x, sae.decode(codes)), float((codes > 0).sum(-1).float().mean())


def input_scale(sample: "torch.Tensor") -> float:
    """The factor that brings activations to a mean squared norm of d_in (what the trainers see)."""
    return math.sqrt(sample.shape[-1] / float(sample.pow(2).sum(-1).mean().clamp_min(1e-12)))


def check_training_sample(sample: "torch.Tensor", cache: "ActivationCache", hook: str) -> None:
    """Raise a one-line error for cached activations no SAE can learn from: non-finite ones (a float16 cache
    that overflowed), or one activation repeated in every row (a constant layer, whose variance is zero)."""
    check_finite(
        sample, f"cache {cache.path} at {hook}", "recreate it with `clear-sae cache ... --dtype float32 --force`"
    )
    if len(sample) < 2 or not bool((sample != sample[0]).any()):
        raise ClearSaeError(
            f"cache {cache.path} holds the same activation in every row at {hook}: there is nothing to learn; "
            "leave this hook point out of --layers"
        )


def check_layer_trainable(cache: "ActivationCache", hook: str, cfg: TrainConfig, ranks: int) -> None:
    """Raise a one-line error for a layer this run could not train (checked before anything is written): a k the
    dictionary cannot hold, activations no SAE can learn from, or too few rows for `ranks` data-parallel ranks."""
    import torch

    d_sae = cfg.expansion * cache.widths[hook]
    if cfg.architecture == "topk" and not 1 <= cfg.k <= d_sae:
        raise ClearSaeError(f"--k {cfg.k} does not fit the {d_sae} latents at {hook}; choose a --k from 1 to {d_sae}")
    check_training_sample(torch.from_numpy(cache.sample(hook, cfg.eval_tokens)), cache, hook)
    if ranks > 1:
        cache.check_parts(hook, ranks)


def train_layer(
    cache: "ActivationCache",
    hook: str,
    cfg: TrainConfig,
    out_folder: Path,
    progress: bool = True,
    run: RunPlace | None = None,
) -> LayerRecord:
    """Train one SAE on the cached activations at `hook`, save it to `out_folder`, and return its record.

    `run` says where checkpoints go and which ranks train together (default: a run of one process without
    checkpoints, in a `PROGRESS` folder beside `out_folder`)."""
    import torch

    run = run or RunPlace(out_folder.parent / PROGRESS, run_key(cache, [hook], cfg, ProcessGroup()))
    d_in = cache.widths[hook]
    sample = torch.from_numpy(cache.sample(hook, cfg.eval_tokens))
    check_training_sample(sample, cache, hook)
    scale = input_scale(sample)
    ranks = run.key["data_ranks"]
    n_steps = max(1, cfg.tokens // (cfg.batch_size * ranks))
    dead_after = max(cfg.tokens // 10, 4 * cfg.batch_size * ranks)
    train = _train_topk_layer if cfg.architecture == "topk" else _train_sae_lens_layer
    try:
        inference, dead_fraction = train(
            cache, hook, cfg, scale, (sample * scale).mean(0), n_steps, dead_after, progress, run
        )
    except ClearSaeError as err:
        raise ClearSaeError(f"training the SAE at {hook} on {cache.path}: {err}") from None

    inference.fold_activation_norm_scaling_factor(scale)
    for name, tensor in inference.state_dict().items():
        check_finite(tensor, f"the SAE trained at {hook} ({name})", "lower --lr and retrain")
    ev, l0 = reconstruction_quality(inference, sample)
    if run.writes:
        _save_layer(inference, cfg, out_folder)
    extra: dict[str, Any] = {}
    if cfg.architecture == "topk":
        extra = {"k": cfg.k, "trainer": "clear_sae.sae.trainer", "kernel": cfg.kernel}
    if ranks > 1:
        extra["data_parallel_ranks"] = ranks
    return LayerRecord(
        hook_point=hook,
        folder=out_folder.name,
        d_in=d_in,
        d_sae=cfg.expansion * d_in,
        architecture=cfg.architecture,
        training_tokens=n_steps * cfg.batch_size * ranks,
        explained_variance=round(ev, 5),
        l0=round(l0, 3),
        dead_fraction=round(dead_fraction, 5),
        input_scale=scale,
        extra=extra,
    )


def _save_layer(inference: Any, cfg: TrainConfig, out_folder: Path) -> None:
    """Save a trained SAE in `cfg.save_dtype` to `out_folder`, replacing what was there only once it is written."""
    import torch

    inference.cfg.dtype = cfg.save_dtype
    inference.to(dtype=getattr(torch, cfg.save_dtype))
    tmp = out_folder.with_name(out_folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    inference.save_model(tmp)
    if out_folder.exists():
        shutil.rmtree(out_folder)
    tmp.replace(out_folder)


def format_health_table(manifest: dict[str, Any], layers: list[str]) -> str:
    """Explained variance, L0, dead fraction and training tokens per layer, as a text table."""
    lines = [f"{'layer':<26} {'d_sae':>6} {'expl.var':>8} {'L0':>6} {'dead':>6} {'tokens':>8}"]
    for hook in layers:
        r = manifest["layers"][hook]
        lines.append(
            f"{hook:<26} {r['d_sae']:>6} {r['explained_variance']:>8.3f} {r['l0']:>6.1f} "
            f"{r['dead_fraction']:>6.3f} {r['training_tokens']:>8}"
        )
    return "\n".join(lines)


def hook_point_order(name: str) -> tuple:
    """Sort key putting hook points in model order: embeddings first, then blocks by number (2 before 10)."""

    first = 0 if name.endswith("embed") or name.endswith("hook_resid_pre") else 1
    parts = tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))
    return (first, parts)


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    """The manifest of a dictionary folder, or None where there is none (a folder of foreign SAEs)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ClearSaeError(f"{path} is not valid JSON ({err}); retrain with `clear-sae train --force`") from None
    if not isinstance(manifest, dict):
        raise ClearSaeError(f"{path} is not a dictionary manifest; retrain with `clear-sae train --force`")
    return manifest


def _check_device(cfg: TrainConfig) -> None:
    """Raise a one-line error for a training device this machine or architecture cannot use."""
    import torch

    resolve_kernel(cfg.kernel, "cpu")
    try:
        device = torch.device(cfg.device)
    except RuntimeError:
        raise ClearSaeError(f"unknown device {cfg.device!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ClearSaeError("--device cuda was asked for but this machine has no usable CUDA GPU; use --device cpu")
    if device.type != "cpu" and cfg.architecture != "topk":
        raise ClearSaeError(f"only topk SAEs train on {cfg.device}; train {cfg.architecture} with --device cpu")


def training_memory(cfg: TrainConfig, d_in: int) -> int:
    """Bytes that training one SAE on width `d_in` holds at its peak, roughly: the encoder and decoder with their
    gradients and Adam's two moments, a batch's pre-activations, codes and their gradients, and the shuffle buffer,
    batches and evaluation sample of activations."""
    d_sae = cfg.expansion * d_in
    floats = 8 * d_sae * d_in + 4 * cfg.batch_size * d_sae + (65536 + 2 * cfg.batch_size + 3 * cfg.eval_tokens) * d_in
    return 4 * floats


def corpus_record(prompts: list[str]) -> dict[str, Any]:
    """What the manifest records of the training corpus `prompts`: its size; per word, how many captions hold it
    (so that learning a concept can say when its words are rare in what the dictionaries saw); and a seeded
    sample of its captions, the background a concept's latents must stay quiet on
    (`clear_sae.concepts.background_prompts`)."""
    sample = random.Random(0).sample(prompts, min(BACKGROUND_SAMPLE, len(prompts)))
    return {"captions": len(prompts), "word_counts": corpus_vocabulary(prompts), "sample": sample}


def holds_dictionaries(folder: str | Path) -> bool:
    """Whether `folder` looks like a dictionary folder: a manifest, or sub-folders with an SAE config."""
    folder = Path(folder)
    return (folder / MANIFEST).is_file() or any(folder.glob(f"*/{CONFIG}"))


def run_key(cache: "ActivationCache", hook_points: list[str], cfg: TrainConfig, group: ProcessGroup) -> dict[str, Any]:
    """What a training run is, for resuming it: the recipe (all but how often it saves), the cache's prompts and the
    layout its rows are served from, the hook points, and how many ranks share each layer's batches (which changes
    the result; dealing out layers does not)."""
    recipe = {key: value for key, value in asdict(cfg).items() if key != "checkpoint_every"}
    return {
        "train_config": recipe,
        "cache_prompts_hash": cache.prompts_hash,
        "cache_layout": cache.layout(hook_points),
        "hook_points": hook_points,
        "data_ranks": data_ranks(cfg, group),
    }


def on_cpu(cfg: TrainConfig) -> bool:
    """Whether the run trains on the CPU (`cpu` or `cpu:N`)."""
    import torch

    return torch.device(cfg.device).type == "cpu"


def adopt_run_threads(manifest: dict[str, Any], cfg: TrainConfig) -> None:
    """On the CPU, continue an unfinished run with as many torch threads as its first rank started with (recorded
    in its manifest as `cpu_threads`), so that it ends bit for bit where an uninterrupted run ends: the count
    changes how a matmul splits its sums, and this process may have picked another (a busier machine, another
    launcher). A run started before the count was recorded continues with this process's count."""
    import torch

    recorded = manifest.get("cpu_threads")
    if not on_cpu(cfg) or not isinstance(recorded, int) or recorded == torch.get_num_threads():
        return
    say = log.warning if recorded > usable_cores() else log.info
    say(f"resuming with {recorded} torch thread(s), as the run started (this process had {torch.get_num_threads()})")
    torch.set_num_threads(recorded)


def data_ranks(cfg: TrainConfig, group: ProcessGroup) -> int:
    """How many ranks share each layer's batches: all of them in data-parallel training, else one."""
    return group.size if cfg.distribute == "data" else 1


def check_distribution(cfg: TrainConfig, group: ProcessGroup) -> None:
    """Raise a one-line error for checkpoints or data-parallel training asked of an architecture sae-lens trains."""
    ranks = data_ranks(cfg, group)
    if cfg.batch_size * ranks > cfg.tokens:
        raise ClearSaeError(
            f"{ranks} ranks of --batch-size {cfg.batch_size} take more than --tokens {cfg.tokens} in a single step; "
            "lower --batch-size or raise --tokens"
        )
    if cfg.architecture == "topk":
        return
    if cfg.checkpoint_every:
        raise ClearSaeError(f"--checkpoint-every is for topk SAEs; train {cfg.architecture} without it")
    if cfg.distribute == "data" and not group.alone:
        raise ClearSaeError(f"--distribute data is for topk SAEs; train {cfg.architecture} with --distribute layers")


def _check_resumable(out: Path, manifest: dict[str, Any] | None, key: dict[str, Any]) -> None:
    """Raise a one-line error unless `out` holds an unfinished run that `key` describes."""
    if manifest is None or manifest.get("complete") is not False:
        state = "holds no training run" if manifest is None else "holds a finished training run"
        raise ClearSaeError(f"nothing to resume: {out} {state}; train without --resume")
    if manifest.get("run") != key:
        differs = [name for name in key if (manifest.get("run") or {}).get(name) != key[name]]
        raise ClearSaeError(
            f"cannot resume {out}: it was started with another {', '.join(differs) or 'run'}; rerun with the "
            "arguments it was started with, or pass --force to start over"
        )


def _check_out(
    cache: "ActivationCache", out: Path, hook_points: list[str], force: bool, resume: bool, key: dict[str, Any]
) -> dict[str, Any] | None:
    """Check what `out` already holds against this run (reading only) and return its manifest (None: none yet)."""
    manifest = read_manifest(out)
    if resume:
        _check_resumable(out, manifest, key)
    elif manifest is not None:
        if manifest.get("backbone_id") != cache.backbone_id:
            raise ClearSaeError(
                f"{out} holds dictionaries of backbone {manifest.get('backbone_id')!r} but cache "
                f"{cache.path} is from {cache.backbone_id!r}; choose another --out"
            )
        for hook in hook_points:
            old = manifest["layers"].get(hook)
            if old is not None and int(old["d_in"]) != cache.widths[hook]:
                raise ClearSaeError(
                    f"dimension mismatch at {hook}: {out} reads width {old['d_in']}, the cache "
                    f"holds width {cache.widths[hook]}; choose another --out"
                )
        if not force:
            raise ClearSaeError(
                f"{out} already holds dictionaries; pass --force to retrain the chosen layers, or choose another --out"
            )
    return manifest


def _new_manifest(
    cache: "ActivationCache",
    found: dict[str, Any] | None,
    hook_points: list[str],
    cfg: TrainConfig,
    key: dict[str, Any],
) -> dict[str, Any]:
    """The manifest a new run starts from: `found` (what the folder held, its other layers kept) updated for this run,
    marked unfinished. The records of the layers this run trains go at once: were it interrupted after replacing a
    layer's weights, the old record must not be left to describe them. For the same reason, the layers an
    interrupted earlier run was training are left out unless this run trains them again (with a warning).
    """
    import torch

    manifest = found or {"format": "clear_sae.dictionaries", "backbone_id": cache.backbone_id, "layers": {}}
    dropped = set(hook_points)
    if found is not None and found.get("complete") is False:
        for hook in found.get("training") or []:
            if hook not in hook_points:
                log.warning(f"{hook} is left out of the dictionaries: an interrupted run was training it; retrain it")
                dropped.add(hook)
    manifest["layers"] = {hook: record for hook, record in manifest["layers"].items() if hook not in dropped}
    manifest.update(
        {
            "model_source": cache.model_source,
            "hub_model": hub_model_record(cache.model_source),
            "hook_modules": {
                **manifest.get("hook_modules", {}),
                **{h: cache.hook_modules[h] for h in hook_points if h in cache.hook_modules},
            },
            "cache_prompts_hash": cache.prompts_hash,
            "cache": str(cache.path),
            "package_version": __version__,
            "train_config": asdict(cfg),
            "corpus": corpus_record(cache.prompts()),
            # Marked unfinished before the first layer and finished after the last, so an interrupted run never loads.
            "complete": False,
            "training": list(hook_points),
            "run": key,
            "cpu_threads": torch.get_num_threads() if on_cpu(cfg) else None,
        }
    )
    return manifest


def _finished_layers(run: RunPlace, hook_points: list[str]) -> dict[str, dict[str, Any]]:
    """The records of the layers this run has finished (a new run starts from an emptied progress folder)."""
    finished = {}
    for hook in hook_points:
        path = run.record(hook)
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("run") == run.key:
                finished[hook] = saved["record"]
    return finished


def train_dictionaries(
    cache: "ActivationCache",
    out: str | Path,
    hook_points: list[str] | None = None,
    cfg: TrainConfig = TrainConfig(),
    force: bool = False,
    progress: bool = True,
    resume: bool = False,
    group: ProcessGroup | None = None,
) -> dict[str, Any]:
    """Train one SAE per hook point of `cache` into the folder `out` and write its manifest.

    Under torchrun with several ranks (`group`, joined from the environment by default), the ranks deal out the
    hook points (`cfg.distribute` layers) or train each one together (data). `resume` continues an interrupted run
    of the same arguments: finished layers are kept, the others continue from their last checkpoint.
    """
    out = Path(out)
    group = group or join(cfg.device)
    hook_points = hook_points or cache.hook_points
    for hook in hook_points:
        cache.check_hook_point(hook)
    if cfg.architecture not in ARCHITECTURES:
        raise ClearSaeError(f"unknown SAE architecture {cfg.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    _check_device(cfg)
    check_distribution(cfg, group)
    for hook in hook_points:  # on every rank, before any rank writes or waits for the others
        check_layer_trainable(cache, hook, cfg, data_ranks(cfg, group))
    widest = max(hook_points, key=lambda hook: cache.widths[hook])
    if cfg.device == "cpu":
        check_memory(
            training_memory(cfg, cache.widths[widest]),
            f"training an SAE of {cfg.expansion * cache.widths[widest]:,} latents at {widest} in batches of "
            f"{cfg.batch_size:,}",
            "lower --expansion or --batch-size",
        )
    run = RunPlace(out / PROGRESS, run_key(cache, hook_points, cfg, group), resume, group)
    # Every rank checks (reading only) before any rank writes, so a refused run is refused on all of them.
    found = _check_out(cache, out, hook_points, force, resume, run.key)
    if resume and found is not None:
        adopt_run_threads(found, cfg)
    group.barrier()
    manifest: dict[str, Any] = {}
    if group.leads:
        manifest = found if resume and found is not None else _new_manifest(cache, found, hook_points, cfg, run.key)
        if not resume:
            shutil.rmtree(run.progress, ignore_errors=True)
        run.progress.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))
    # The first rank says which layers are finished, before any rank trains: ranks that looked for themselves could
    # see a layer another rank has just finished, and deal out the rest differently.
    finished = group.gather(sorted(_finished_layers(run, hook_points)) if group.leads else None)[0]
    pending = [hook for hook in hook_points if hook not in finished]
    for hook in pending if run.data_parallel else group.share(pending):
        record = train_layer(cache, hook, cfg, out / hook, progress=progress, run=run)
        if run.writes:
            atomic_write_text(run.record(hook), json.dumps({"run": run.key, "record": asdict(record)}))
            run.checkpoint(hook).unlink(missing_ok=True)
    group.barrier()
    if group.leads:
        _finish_manifest(out, manifest, run, hook_points, cache)
    group.barrier()
    return json.loads((out / MANIFEST).read_text())


def _finish_manifest(
    out: Path, manifest: dict[str, Any], run: RunPlace, hook_points: list[str], cache: "ActivationCache"
) -> None:
    """Gather every layer's record into the manifest, mark it finished, and drop the run's progress folder."""
    finished = _finished_layers(run, hook_points)
    missing = [hook for hook in hook_points if hook not in finished]
    if missing:
        raise ClearSaeError(
            f"no rank saved {', '.join(missing)} in {out}; rerun the same `clear-sae train ... --resume` to finish it"
        )
    manifest["layers"].update(finished)
    manifest["hook_points"] = [h for h in cache.hook_points if h in manifest["layers"]]
    manifest["complete"] = True
    for key in ("training", "run", "cpu_threads"):
        manifest.pop(key, None)
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))
    shutil.rmtree(run.progress, ignore_errors=True)


def hub_model_record(source: str) -> dict[str, str | None] | None:
    """The Hub id and revision of a model recorded as `hf://owner/name@revision`; None for any other source."""
    parsed = parse_hub_name(source) if source.startswith(PREFIX) else None
    return None if parsed is None else {"repo_id": parsed[0], "revision": parsed[1]}


def weights_file(folder: Path) -> Path:
    """The weights of an SAE folder: sae-lens's `sae_weights.safetensors`, or a sparsify folder's `sae.safetensors`."""
    from clear_sae.sae.plain import SPARSIFY_WEIGHTS

    if not (folder / WEIGHTS).is_file() and (folder / SPARSIFY_WEIGHTS).is_file():
        return folder / SPARSIFY_WEIGHTS
    if not (folder / WEIGHTS).is_file():
        raise ClearSaeError(f"dictionary folder {folder} has no {WEIGHTS}; retrain it with `clear-sae train`")
    return folder / WEIGHTS


def load_sae(folder: str | Path) -> "SAE":
    """Load one SAE folder (ours, any sae-lens SAE saved with `save_model`, or a sparsify TopK SAE saved with
    `save_to_disk`) as float32 on CPU.

    Plain TopK, ReLU and JumpReLU folders and sparsify folders load as `clear_sae.sae.plain.PlainSAE` (same
    arithmetic, no sae-lens import); anything else through `sae_lens.SAE.load_from_disk`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ClearSaeError(f"dictionary folder {folder} does not exist; train it with `clear-sae train`")
    weights = weights_file(folder)
    if not (folder / CONFIG).is_file():
        raise ClearSaeError(f"dictionary folder {folder} has no {CONFIG}; retrain it with `clear-sae train`")
    try:
        from clear_sae.sae.plain import load_plain_sae, load_sparsify_sae

        cfg = json.loads((folder / CONFIG).read_text())
        if weights.name != WEIGHTS:
            sae = load_sparsify_sae(folder, cfg)
        else:
            _check_sae_config(cfg)
            sae = load_plain_sae(folder, cfg) if isinstance(cfg, dict) else None
        if sae is None:
            from sae_lens import SAE

            sae = SAE.load_from_disk(folder, device="cpu", dtype="float32")
    except Exception as err:  # sae-lens raises many kinds for a malformed folder
        raise ClearSaeError(
            f"cannot load the SAE in {folder} ({type(err).__name__}: {err}); retrain it with `clear-sae train`"
        ) from None
    for name, tensor in sae.state_dict().items():
        check_finite(tensor, f"the SAE in {folder} ({name})", "retrain it with `clear-sae train ... --force`")
    return sae.eval()  # pyright: ignore[reportReturnType]  (a PlainSAE reads like a sae-lens SAE)


def _check_sae_config(cfg: Any) -> None:
    """Raise ValueError for a `cfg.json` whose sizes cannot describe an SAE (the caller makes it one line)."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{CONFIG} is not a JSON object")
    for key in ("d_in", "d_sae"):
        if not is_count(cfg.get(key), 1):
            raise ValueError(f"{key} must be a positive integer, not {cfg.get(key)!r}")
    k, d_sae = cfg.get("k"), cfg["d_sae"]
    if cfg.get("architecture") == "topk" and not (is_count(k, 1) and k <= d_sae):
        raise ValueError(f"k must be an integer between 1 and d_sae ({d_sae}), not {k!r}")


class Dictionaries:
    """A folder of per-layer SAEs, loaded lazily by hook point."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ClearSaeError(f"dictionary folder {self.root} does not exist; train one with `clear-sae train`")
        manifest = read_manifest(self.root)
        if manifest is None:
            manifest = self._manifest_from_folders()
        if not isinstance(manifest.get("layers"), dict):
            raise ClearSaeError(f"{self.root / MANIFEST} lists no layers; retrain with `clear-sae train --force`")
        if manifest.get("complete") is False:  # manifests from before the marker have none: they were finished
            layers = ", ".join(manifest.get("training", [])) or "its layers"
            raise ClearSaeError(
                f"{self.root} holds an unfinished training run (of {layers}): it was interrupted; rerun the "
                "same `clear-sae train ... --resume` to finish it (or --force to start it over)"
            )
        self.manifest = manifest
        self.backbone_id: str | None = manifest.get("backbone_id")
        self.layers: dict[str, dict[str, Any]] = manifest["layers"]
        self._loaded: dict[str, SAE] = {}
        self._fingerprints: dict[str, str] = {}

    def _manifest_from_folders(self) -> dict[str, Any]:
        """Describe a folder of sae-lens SAEs that has no manifest (SAEs trained elsewhere)."""
        layers, model = {}, None
        from clear_sae.sae.plain import SPARSIFY_WEIGHTS, sparsify_width

        for cfg_path in sorted(self.root.glob(f"*/{CONFIG}")):
            cfg = json.loads(cfg_path.read_text())
            metadata = cfg.get("metadata") or {}
            hook = metadata.get("hook_name") or cfg.get("hook_name") or cfg_path.parent.name
            sparsify = not (cfg_path.parent / WEIGHTS).is_file() and (cfg_path.parent / SPARSIFY_WEIGHTS).is_file()
            layers[hook] = {
                "hook_point": hook,
                "folder": cfg_path.parent.name,
                "d_in": cfg["d_in"],
                "d_sae": sparsify_width(cfg) if sparsify else cfg["d_sae"],
                "architecture": "topk" if sparsify else cfg.get("architecture"),
            }
            model = metadata.get("model_name") or model
        if not layers:
            raise ClearSaeError(
                f"{self.root} holds no {MANIFEST} and no SAE folders with {CONFIG}; "
                "train dictionaries with `clear-sae train`"
            )
        # Foreign SAEs name their model their own way: record it, but check only widths against ours.
        return {
            "backbone_id": None,
            "model_name": model,
            "layers": layers,
            "hook_points": sorted(layers, key=hook_point_order),
        }

    @property
    def hook_points(self) -> list[str]:
        """Hook points with a trained SAE, in backbone order where the manifest records it."""
        return list(self.manifest.get("hook_points") or self.layers)

    def corpus_sample(self) -> list[str]:
        """The sample of training captions the manifest records (`corpus_record`); empty for dictionaries trained
        before it was recorded or elsewhere. A malformed sample is a one-line error."""
        corpus = self.manifest.get("corpus")
        sample = corpus.get("sample", []) if isinstance(corpus, dict) else []
        if not isinstance(sample, list) or not all(isinstance(c, str) for c in sample):
            raise ClearSaeError(
                f"{self.root / MANIFEST} records a corpus sample that is not a list of captions; retrain with "
                "`clear-sae train --force`"
            )
        return sample

    def check_hook_point(self, hook: str) -> None:
        """Raise a one-line error if there is no SAE for `hook`."""
        if hook not in self.layers:
            raise ClearSaeError(f"no dictionary for layer {hook!r} in {self.root}; it has {', '.join(self.layers)}")

    def folder(self, hook: str) -> Path:
        """The SAE folder of `hook`, which must lie inside the dictionary folder."""
        self.check_hook_point(hook)
        folder = self.root / str(self.layers[hook].get("folder"))
        if not folder.resolve().is_relative_to(self.root.resolve()) or folder.resolve() == self.root.resolve():
            raise ClearSaeError(
                f"{self.root / MANIFEST} places layer {hook!r} in {self.layers[hook].get('folder')!r}, outside its "
                "own folder; retrain with `clear-sae train --force`"
            )
        return folder

    def sae(self, hook: str) -> "SAE":
        """The SAE of `hook`, loaded once."""
        if hook not in self._loaded:
            self._loaded[hook] = load_sae(self.folder(hook))
        return self._loaded[hook]

    def fingerprint(self, hook: str) -> str:
        """A short hash of the SAE weights of `hook` (read once): it changes whenever the layer is retrained."""
        if hook not in self._fingerprints:
            digest = hashlib.sha256()
            with open(weights_file(self.folder(hook)), "rb") as weights:
                for block in iter(lambda: weights.read(1 << 20), b""):
                    digest.update(block)
            self._fingerprints[hook] = digest.hexdigest()[:16]
        return self._fingerprints[hook]

    def check_backbone(self, backbone_id: str, widths: dict[str, int]) -> None:
        """Raise a one-line error if these dictionaries were not trained on this backbone and width."""
        if self.backbone_id and self.backbone_id != backbone_id:
            source = self.manifest.get("model_source") or self.backbone_id
            raise ClearSaeError(
                f"dictionaries in {self.root} were trained on backbone {self.backbone_id!r}, not "
                f"{backbone_id!r}; use --model {source} or train dictionaries for this model"
            )
        for hook, width in widths.items():
            if hook in self.layers and int(self.layers[hook]["d_in"]) != int(width):
                raise ClearSaeError(
                    f"dimension mismatch at {hook}: the dictionary reads width "
                    f"{self.layers[hook]['d_in']}, the model gives {width}; retrain for this model"
                )
