"""CLEAR as published ("clear-joint"): per concept, one SAE trained together with a preference over layers.

The suite's default reuses one dictionary per layer for every concept (`concepts.py`). The paper instead
learns, for each concept, a single SAE and a preference over the layers, alternating two phases:

(a) with the preferences fixed, train the SAE on the preference-weighted reconstruction and sparsity loss
    over every layer's activations;
(b) with the SAE fixed, update the preferences on the separability loss `log(1 + S_uni / (S_spe + eps))`
    of each layer (S_spe and S_uni as in `concepts.py`: the target energy carried by the specific and by the
    shared latents, now of the concept's own SAE).

The preferences are logits relaxed with Gumbel-softmax at a temperature annealed over the rounds; the layer is
their argmax, and erasure clamps the concept's specific latents of its own SAE at that layer, exactly as for
the reused dictionaries. The secondary description leaves these choices open; each is a `JointConfig` field:

- the SAE is a ReLU SAE with an L1 penalty on its codes weighted by the decoder norms (the paper's kind);
- one SAE reads every layer, so each layer's activations are first scaled to a mean squared norm of d_in
  (`dictionary.input_scale`) lest the widest-norm layer dominate the reconstruction; the chosen layer's
  scale is folded into the exported SAE, which then reads raw activations;
- the training tokens are every real token of the target and non-target prompts;
- phase (a) draws fresh Gumbel weights every step and does not differentiate through them; phase (b)
  takes plain gradient steps on the logits for the separability loss under Gumbel-softmax weights;
- the first `warmup_rounds` rounds train the SAE alone, with uniform preferences;
- the temperature falls geometrically from `tau_start` to `tau_end` over the rounds; the logits start at 0.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clear_sae.concepts import EPS, ConceptConfig, PromptCodes, selection_settings, specific_and_shared
from clear_sae.config import ABOVE_ZERO, AT_LEAST_ZERO, COUNT, POSITIVE, check_fields
from clear_sae.dictionary import CONFIG, MANIFEST, WEIGHTS, input_scale
from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_write_text, prompts_hash
from clear_sae.library import ConceptEntry, check_concept_name

if TYPE_CHECKING:
    import torch

    from clear_sae.backbones import Backbone

METHOD = "clear-joint"


@dataclass
class JointConfig:
    """The joint SAE and layer-preference training of one concept."""

    expansion: int = field(default=4, metadata=POSITIVE)
    """SAE width as a multiple of the layer width."""
    l1_coefficient: float = field(default=5.0, metadata=AT_LEAST_ZERO)
    """Weight of the L1 penalty (codes times decoder norms, summed over latents, averaged over tokens), relative
    to the mean squared error summed over the d_in dimensions of scaled activations."""
    rounds: int = field(default=20, metadata=POSITIVE)
    """Alternations of phase (a) and phase (b)."""
    warmup_rounds: int = field(default=8, metadata=COUNT)
    """Rounds of phase (a) alone, with uniform preferences, before the first phase (b): the separability of an
    SAE fresh from its random initialisation says nothing about the layers."""
    sae_steps: int = field(default=40, metadata=POSITIVE)
    """Adam steps on the SAE per round."""
    preference_steps: int = field(default=5, metadata=POSITIVE)
    """Adam steps on the layer logits per round."""
    batch_tokens: int = field(default=256, metadata=POSITIVE)
    """Tokens per layer in each SAE step."""
    sae_lr: float = field(default=1e-3, metadata=ABOVE_ZERO)
    """Adam learning rate of the SAE."""
    preference_lr: float = field(default=0.5, metadata=ABOVE_ZERO)
    """Step size of plain gradient descent on the layer logits."""
    tau_start: float = field(default=1.0, metadata=ABOVE_ZERO)
    """Gumbel-softmax temperature of the layer preferences at the first round; it falls geometrically."""
    tau_end: float = field(default=0.1, metadata=ABOVE_ZERO)
    """... annealed to this at the last round."""
    concept: ConceptConfig = field(default_factory=lambda: ConceptConfig(max_nontarget_rate=0.05, background=0))
    """How specific and shared latents are told apart: the same rule as for the reused dictionaries, less the
    background check (the paper has none, and the joint SAE is trained on the concept's prompts alone)."""
    seed: int = field(default=0, metadata=COUNT)
    """Seeds the SAE's initial weights, the token batches and the Gumbel noise."""

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class LayerActivations:
    """One layer's token activations for the target and non-target prompts (padded, with masks)."""

    target: "torch.Tensor"
    target_mask: "torch.Tensor"
    nontarget: "torch.Tensor"
    nontarget_mask: "torch.Tensor"

    def tokens(self) -> "torch.Tensor":
        """Every real token of both prompt sets, `[n_tokens, d]`."""
        import torch

        return torch.cat([self.target[self.target_mask], self.nontarget[self.nontarget_mask]])


@dataclass
class JointResult:
    """What the joint training found: the layer, the concept's latents there, and its history."""

    hook_point: str
    latents: list[int]
    preferences: dict[str, float]
    """Softmax of the final logits, per hook point."""
    separability_loss: dict[str, float]
    """Per hook point, the paper's loss with the final SAE."""
    history: list[dict[str, float]]
    """Per round: the temperature and the preference of every layer at the round's end."""
    sae: Any
    """The SAE in the chosen layer's units (`PlainSAE`, architecture standard)."""
    seconds: float


def _init_sae(d_in: int, d_sae: int, gen: "torch.Generator") -> dict[str, "torch.Tensor"]:
    import torch

    w_dec = torch.randn(d_sae, d_in, generator=gen)
    w_dec = 0.1 * w_dec / w_dec.norm(dim=1, keepdim=True)
    params = {"W_dec": w_dec, "W_enc": w_dec.T.clone(), "b_enc": torch.zeros(d_sae), "b_dec": torch.zeros(d_in)}
    return {k: v.requires_grad_() for k, v in params.items()}


def _encode(p: dict[str, "torch.Tensor"], x: "torch.Tensor") -> "torch.Tensor":
    import torch

    return torch.relu((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"])


def _prompt_codes(
    p: dict[str, "torch.Tensor"], acts: "torch.Tensor", mask: "torch.Tensor", scale: float
) -> PromptCodes:
    """Peak activation and decoded energy per prompt and latent, as `concepts.encode_prompts` computes them."""
    import torch

    with torch.no_grad():
        codes = _encode(p, acts * scale) * mask.unsqueeze(-1)
        dec_norm = p["W_dec"].norm(dim=-1)
        return PromptCodes(codes.amax(dim=1), (codes * dec_norm).pow(2).sum(dim=1))


NO_LATENTS_LOSS = math.log1p(1 / EPS)
"""The loss of a layer where the SAE has no specific latent. The formula would give log(1 + S_uni / eps), whose
differences between such layers only reflect their total energy; one constant keeps them from steering the
preferences (and an SAE that is silent on a layer, S_uni = S_spe = 0, from scoring a perfect 0 there)."""


def layer_separability(
    p: dict[str, "torch.Tensor"], acts: LayerActivations, scale: float, cfg: ConceptConfig
) -> tuple[float, list[int]]:
    """The paper's loss `log(1 + S_uni / (S_spe + eps))` at one layer for the SAE `p` (lower separates better),
    and the concept's specific latents there."""
    target = _prompt_codes(p, acts.target, acts.target_mask, scale)
    nontarget = _prompt_codes(p, acts.nontarget, acts.nontarget_mask, scale)
    latents, shared = specific_and_shared(target, nontarget, cfg)
    if not latents:
        return NO_LATENTS_LOSS, []
    energy = target.energy.sum(0)
    return math.log1p(float(energy[shared].sum()) / (float(energy[latents].sum()) + EPS)), latents


def train_joint(
    layers: dict[str, LayerActivations], cfg: JointConfig = JointConfig(), progress: bool = True
) -> JointResult:
    """Train one SAE and the layer preferences for one concept on `layers` (hook point -> activations)."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    if not layers:
        raise ClearSaeError("clear-joint needs at least one layer")
    start = time.perf_counter()
    hooks = list(layers)
    gen = torch.Generator().manual_seed(cfg.seed)
    tokens = {h: layers[h].tokens().float() for h in hooks}
    widths = {t.shape[-1] for t in tokens.values()}
    if len(widths) != 1:
        raise ClearSaeError(
            f"clear-joint trains one SAE over all layers, so they must share a width; got {sorted(widths)}"
        )
    if any(len(t) == 0 for t in tokens.values()):
        raise ClearSaeError("a layer has no tokens; pass non-empty target and non-target prompts")
    scales = {h: input_scale(tokens[h]) for h in hooks}
    d_in = widths.pop()
    params = _init_sae(d_in, cfg.expansion * d_in, gen)
    logits = torch.zeros(len(hooks), requires_grad=True)
    sae_opt = torch.optim.Adam(params.values(), lr=cfg.sae_lr)
    # Plain gradient descent, not Adam: Adam turns small, noisy differences between the layers' losses into
    # full-size steps (in trials it locked onto a layer before the SAE had found the concept anywhere).
    pref_opt = torch.optim.SGD([logits], lr=cfg.preference_lr)
    history = []

    def gumbel_weights(tau: float) -> "torch.Tensor":
        u = torch.rand(len(hooks), generator=gen).clamp(1e-9, 1 - 1e-9)
        return F.softmax((logits - torch.log(-torch.log(u))) / tau, dim=0)

    for r in tqdm(range(cfg.rounds), desc="clear-joint", unit="round", disable=not progress):
        annealed = max(r - cfg.warmup_rounds, 0) / max(cfg.rounds - cfg.warmup_rounds - 1, 1)
        tau = cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** annealed
        for _ in range(cfg.sae_steps):  # (a) the SAE, preferences fixed
            warm = r >= cfg.warmup_rounds
            weights = gumbel_weights(tau).detach() if warm else torch.full((len(hooks),), 1 / len(hooks))
            loss = torch.zeros(())
            for i, hook in enumerate(hooks):
                rows = torch.randint(len(tokens[hook]), (cfg.batch_tokens,), generator=gen)
                x = tokens[hook][rows] * scales[hook]
                codes = _encode(params, x)
                recon = codes @ params["W_dec"] + params["b_dec"]
                l1 = (codes * params["W_dec"].norm(dim=-1)).sum(-1).mean()
                loss = loss + weights[i] * ((recon - x).pow(2).sum(-1).mean() + cfg.l1_coefficient * l1)
            sae_opt.zero_grad(set_to_none=True)
            loss.backward()
            sae_opt.step()
        if r >= cfg.warmup_rounds:
            sep = torch.tensor([layer_separability(params, layers[h], scales[h], cfg.concept)[0] for h in hooks])
            for _ in range(cfg.preference_steps):  # (b) the preferences, SAE fixed
                loss = (gumbel_weights(tau) * sep).sum()
                pref_opt.zero_grad(set_to_none=True)
                loss.backward()
                pref_opt.step()
        prefs = F.softmax(logits.detach(), dim=0)
        history.append({"tau": round(tau, 5), **{h: round(float(v), 5) for h, v in zip(hooks, prefs)}})

    final = {h: layer_separability(params, layers[h], scales[h], cfg.concept) for h in hooks}
    prefs = F.softmax(logits.detach(), dim=0)
    usable = [i for i, h in enumerate(hooks) if final[h][1]]
    if not usable:
        raise ClearSaeError(
            "clear-joint found no concept-specific latents at any layer: every latent that fires on "
            "the targets also fires on the non-targets; add more target prompts, use non-targets "
            "closer in context, or train longer (--joint-rounds)"
        )
    chosen = hooks[max(usable, key=lambda i: float(prefs[i]))]  # the argmax, among layers that can erase anything
    return JointResult(
        hook_point=chosen,
        latents=final[chosen][1],
        preferences={h: round(float(v), 5) for h, v in zip(hooks, prefs)},
        separability_loss={h: round(final[h][0], 6) for h in hooks},
        history=history,
        sae=_export(params, scales[chosen]),
        seconds=time.perf_counter() - start,
    )


def _export(p: dict[str, "torch.Tensor"], scale: float) -> Any:
    """The SAE as a standard ReLU SAE on raw activations: the layer's input scale folded into its weights."""
    import torch

    from clear_sae.sae.plain import PlainConfig, PlainSAE

    with torch.no_grad():
        tensors = {
            "W_enc": p["W_enc"] * scale,
            "b_enc": p["b_enc"].clone(),
            "W_dec": p["W_dec"] / scale,
            "b_dec": p["b_dec"] / scale,
        }
    d_sae, d_in = tensors["W_dec"].shape
    config = PlainConfig(d_in=d_in, d_sae=d_sae, arch="standard")
    return PlainSAE(config, {k: v.contiguous() for k, v in tensors.items()})


def collect_activations(
    backbone: "Backbone", target: list[str], nontarget: list[str], hook_points: list[str], batch_size: int = 64
) -> dict[str, LayerActivations]:
    """Run both prompt sets once through `backbone` and keep every layer's token activations."""
    import torch

    def run(prompts: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        parts: dict[str, list[Any]] = {h: [] for h in hook_points}
        for _, outputs in backbone.run_batched(prompts, hook_points, batch_size):
            for hook in hook_points:
                # The joint SAE trains on the CPU, wherever the model ran.
                parts[hook].append((outputs[hook].acts.float().cpu(), outputs[hook].mask.cpu()))
        joined = {}
        for hook, chunks in parts.items():
            length = max(a.shape[1] for a, _ in chunks)
            acts = torch.cat([torch.nn.functional.pad(a, (0, 0, 0, length - a.shape[1])) for a, _ in chunks])
            mask = torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1])) for _, m in chunks]).bool()
            joined[hook] = (acts, mask)
        return joined

    t, n = run(target), run(nontarget)
    return {h: LayerActivations(t[h][0], t[h][1], n[h][0], n[h][1]) for h in hook_points}


def save_joint_sae(result: JointResult, folder: str | Path, backbone_id: str, cfg: JointConfig) -> Path:
    """Write the concept's SAE as a one-layer dictionary folder (`cfg.json` + safetensors + manifest)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    layer = folder / result.hook_point
    layer.mkdir(parents=True, exist_ok=True)
    sae = result.sae
    save_file(
        {k: getattr(sae, k).detach().contiguous() for k in ("W_enc", "W_dec", "b_enc", "b_dec")}, str(layer / WEIGHTS)
    )
    sae_cfg = {
        "architecture": "standard",
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"hook_name": result.hook_point, "model_name": backbone_id},
    }
    atomic_write_text(layer / CONFIG, json.dumps(sae_cfg, indent=2))
    manifest = {
        "format": "clear_sae.dictionaries",
        "backbone_id": backbone_id,
        "method": METHOD,
        "hook_points": [result.hook_point],
        "train_config": asdict(cfg),
        "layers": {
            result.hook_point: {
                "hook_point": result.hook_point,
                "folder": result.hook_point,
                "d_in": sae.cfg.d_in,
                "d_sae": sae.cfg.d_sae,
                "architecture": "standard",
            }
        },
    }
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2))
    return folder


def learn_concept_joint(
    backbone: "Backbone",
    name: str,
    target: list[str],
    nontarget: list[str],
    sae_folder: str | Path,
    cfg: JointConfig = JointConfig(),
    hook_points: list[str] | None = None,
    progress: bool = True,
) -> tuple[ConceptEntry, JointResult]:
    """Learn concept `name` the published way; its SAE goes to `sae_folder`, which the entry returned references
    (as an absolute folder, for `ConceptLibrary.add`) as its dictionary."""

    if not name.strip():
        raise ClearSaeError("the concept name is empty; pass --name NAME")
    if not target:
        raise ClearSaeError("the target prompt list is empty; pass prompts that contain the concept")
    if not nontarget:
        raise ClearSaeError("the non-target prompt list is empty; pass the same prompts with the concept swapped out")
    hook_points = hook_points or backbone.hook_points
    backbone.check_hook_points(hook_points)
    layers = collect_activations(backbone, target, nontarget, hook_points, cfg.concept.batch_size)
    result = train_joint(layers, cfg, progress)
    save_joint_sae(result, sae_folder, backbone.backbone_id, cfg)
    layer_scores = {h: {"loss": result.separability_loss[h], "preference": result.preferences[h]} for h in hook_points}
    entry = ConceptEntry(
        name=name,
        hook_point=result.hook_point,
        latents=result.latents,
        strength=cfg.concept.strength,
        dictionary=str(Path(sae_folder).resolve()),
        backbone_id=backbone.backbone_id,
        model_source=backbone.source or backbone.backbone_id,
        score=METHOD,
        layer_scores=layer_scores,
        target_hash=prompts_hash(target),
        nontarget_hash=prompts_hash(nontarget),
        n_target=len(target),
        n_nontarget=len(nontarget),
        method=METHOD,
        selection=selection_settings(cfg.concept),
        joint=asdict(cfg),
        target_prompts=list(target),
        nontarget_prompts=list(nontarget),
    )
    return entry, result


def joint_folder(library_path: str | Path, name: str) -> Path:
    """Where the `clear-joint` SAE of concept `name` goes for the library at `library_path`: a folder per concept
    in `<library stem>_joint/` beside the library file."""
    library_path = Path(library_path)
    return library_path.parent / f"{library_path.stem}_joint" / check_concept_name(name)
