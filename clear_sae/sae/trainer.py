"""The TopK SAE training step and loop: a fast path with hand-written sparse gradients, and a plain fallback.

The model and its optimisation are sae-lens's `TopKTrainingSAE` (the decoder's row norms rescale the
activations; the same initialisation; the same AuxK loss), so dictionaries trained here behave like the ones
sae-lens trains; only the arithmetic is arranged differently. With n_j = |dec_j| and u_j = dec_j / n_j:

    pre   = ((x - b_dec) @ enc.T + b_enc) * n            [batch, d_sae]
    codes = ReLU(top-k of pre), zero elsewhere
    recon = codes @ u + b_dec
    loss  = mean over tokens of |recon - x|^2  +  AuxK loss (below)

Only the encoder's forward GEMM is dense work. Everything else touches just the k chosen latents of
each token, so the fast path computes it from the codes in compressed-row form:

- `sparse` (the CPU default): decode and both weight gradients are CSR x dense products, and the codes'
  gradient is a sampled GEMM that evaluates only the k chosen entries per token. AuxK's codes, whose latents all
  lie among the dead ones, are instead a dense matrix over the dead latents alone while those are few
  (`SUBSET_WIDTH`): there every product is a small dense GEMM, 2 to 4.5 times faster up to 4 times k_aux dead;
- `dense` (the GPU default): codes scattered into a dense matrix and plain GEMMs, which a GPU runs faster
  than its sparse kernels at these densities (DESIGN.md: a sparse decoder was 3x slower on an H200);
- `autograd`: the plain PyTorch reference: the same loss written densely and differentiated by autograd.
  The tests check that all three give the same codes and gradients.

AuxK (OpenAI's recipe, as sae-lens has it): the latents that have not fired for `dead_after` tokens take
their own top-k_aux (k_aux = d_in / 2, values not clipped at zero) on each token and must reconstruct what
the live latents missed, weighted by `aux_coefficient * min(1, n_dead / k_aux)`.

A first version kept the decoder rows at unit norm and started the encoder at the decoder's transpose
(OpenAI's recipe): same explained variance, but its dictionaries erased toy concepts far worse (blue kept 96%
of its generation rate after erasure at blocks.4, against 48% with sae-lens's recipe), so the recipe follows
sae-lens.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple, Protocol

from clear_sae.errors import ClearSaeError, all_finite

if TYPE_CHECKING:
    import torch

KERNELS = ("auto", "sparse", "dense", "autograd")


class StepOutput(NamedTuple):
    """What one training step reports."""

    mse: float
    """Mean squared reconstruction error per token (summed over dimensions)."""
    aux: float
    """The weighted AuxK loss (0 when no latent is dead)."""
    latents: "torch.Tensor"
    """`[batch, k]` ids of each token's chosen latents."""
    values: "torch.Tensor"
    """`[batch, k]` their activations (0 where the pre-activation was negative)."""


@dataclass
class TopKTrainConfig:
    """The optimisation recipe of the TopK trainer (architecture sizes come from the caller)."""

    k: int = 32
    lr: float = 1e-3
    """Adam learning rate; falls linearly to lr/10 over the last 30% of steps."""
    aux_coefficient: float = 1.0
    """Weight of the AuxK loss (sae-lens's default)."""
    kernel: str = "auto"
    """sparse, dense, autograd or auto (sparse on CPU, dense on GPU)."""
    matmul_dtype: str = "auto"
    """dtype of the encoder GEMM: float32, bfloat16, or auto (bfloat16 on a GPU that supports it)."""
    clip_grad_norm: float = 1.0
    seed: int = 0


def resolve_kernel(kernel: str, device: "torch.device | str") -> str:
    """The kernel `auto` stands for on `device`, after checking the name."""
    import torch

    if kernel not in KERNELS:
        raise ClearSaeError(f"unknown TopK kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    if kernel != "auto":
        return kernel
    return "dense" if torch.device(device).type == "cuda" else "sparse"


def resolve_matmul_dtype(name: str, device: "torch.device | str") -> "torch.dtype":
    """The encoder GEMM's dtype: bfloat16 on a GPU that supports it when `auto`, float32 otherwise."""
    import torch

    if name == "auto":
        cuda = torch.device(device).type == "cuda"
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    if name not in ("float32", "bfloat16"):
        raise ClearSaeError(f"unsupported matmul dtype {name!r}; use float32, bfloat16 or auto")
    return getattr(torch, name)


class TopKParams:
    """The trainable tensors of a TopK SAE, latent-major: `enc`, `dec` are `[d_sae, d_in]` (sae-lens's W_enc
    transposed, and its W_dec)."""

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        b_dec_init: "torch.Tensor | None" = None,
        seed: int = 0,
        device: "torch.device | str" = "cpu",
        decoder_init_norm: float = 0.1,
    ) -> None:
        import torch

        # sae-lens's initialisation: Kaiming-uniform decoder rows scaled to norm 0.1, the encoder its transpose.
        dec = torch.empty(d_sae, d_in)
        torch.nn.init.kaiming_uniform_(dec, generator=torch.Generator().manual_seed(seed))
        dec *= decoder_init_norm / dec.norm(dim=1, keepdim=True)
        self.enc = dec.clone().to(device).requires_grad_()
        self.dec = dec.to(device).requires_grad_()
        self.b_enc = torch.zeros(d_sae, device=device, requires_grad=True)
        b_dec = torch.zeros(d_in) if b_dec_init is None else b_dec_init.detach().float().cpu()
        self.b_dec = b_dec.clone().to(device).requires_grad_()

    def tensors(self) -> list["torch.Tensor"]:
        """The parameters, in optimiser order."""
        return [self.enc, self.dec, self.b_enc, self.b_dec]

    @property
    def d_sae(self) -> int:
        """Number of latents."""
        return int(self.enc.shape[0])

    @property
    def d_in(self) -> int:
        """Input width."""
        return int(self.enc.shape[1])


def _topk(pre: "torch.Tensor", k: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Top-k pre-activations and their ids per row (the values before the ReLU)."""
    top, ids = pre.topk(k, dim=1, sorted=False)
    return top, ids


def _pre_activations(p: TopKParams, centred: "torch.Tensor", dtype: "torch.dtype") -> "torch.Tensor":
    """`centred @ enc.T + b_enc` in float32, the GEMM in `dtype`."""
    import torch

    if dtype == centred.dtype:
        return torch.addmm(p.b_enc.detach(), centred, p.enc.detach().T)
    return (centred.to(dtype) @ p.enc.detach().T.to(dtype)).float() + p.b_enc.detach()


class AuxSelection(NamedTuple):
    """AuxK's choice on one batch: each token's top k_aux dead latents."""

    top: "torch.Tensor"
    """`[batch, k_aux]` their pre-activations (not clipped at zero)."""
    which: "torch.Tensor"
    """`[batch, k_aux]` their positions in `columns`."""
    columns: "torch.Tensor"
    """The dead latents' ids, ascending."""
    scale: float
    """The loss weight's `min(1, n_dead / k_aux)`."""

    @property
    def ids(self) -> "torch.Tensor":
        """`[batch, k_aux]` the chosen latents' ids."""
        return self.columns[self.which]


def _dead_topk(pre: "torch.Tensor", dead: "torch.Tensor", d_in: int) -> AuxSelection | None:
    """AuxK selection: the top k_aux dead latents per row, and the loss scale; None when nothing is dead. Where no
    more than k_aux latents are dead, every row takes all of them, in `columns` order."""
    import torch

    n_dead = int(dead.sum())
    if n_dead == 0:
        return None
    k_aux = d_in // 2
    scale = min(n_dead / k_aux, 1.0)
    columns = torch.nonzero(dead).squeeze(1)
    candidates = pre.index_select(1, columns)
    if n_dead <= k_aux:
        which = torch.arange(n_dead, device=pre.device).expand(len(pre), n_dead)
        return AuxSelection(candidates, which, columns, scale)
    top, which = _topk(candidates, k_aux)
    return AuxSelection(top, which, columns, scale)


def _csr(crow: "torch.Tensor", cols: "torch.Tensor", values: "torch.Tensor", shape: Any) -> "torch.Tensor":
    """A CSR matrix, without torch's warning that CSR support is beta (these kernels are checked against
    autograd in tests/sae/test_trainer.py)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, shape)


class _Codes:
    """A `[rows, d_sae]` matrix with k non-zeros per row, in the layout the chosen kernel multiplies fastest."""

    def __init__(
        self, ids: "torch.Tensor", values: "torch.Tensor", d_sae: int, kernel: str, dtype: "torch.dtype | None" = None
    ) -> None:
        import torch

        self.ids, self.values, self.d_sae, self.kernel = ids, values, d_sae, kernel
        # Dense products run in the GEMM dtype (bf16 on a GPU); sparse kernels stay in float32.
        self.dtype = values.dtype if kernel == "sparse" or dtype is None else dtype
        rows, k = ids.shape
        if kernel == "sparse":
            self.crow = torch.arange(0, rows * k + 1, k, device=ids.device)
            self.matrix = _csr(self.crow, ids.reshape(-1), values.reshape(-1), (rows, d_sae))
        else:
            self.matrix = torch.zeros(rows, d_sae, device=ids.device, dtype=self.dtype)
            self.matrix.scatter_(1, ids, values.to(self.dtype))

    def times(self, weights: "torch.Tensor") -> "torch.Tensor":
        """codes @ weights: `[rows, d_in]` from latent-major `[d_sae, d_in]` weights."""
        return (self.matrix @ weights.to(self.dtype)).float()

    def add_transpose_times(self, into: "torch.Tensor", grad: "torch.Tensor") -> None:
        """into += codes.T @ grad: a latent-major `[d_sae, d_in]` weight gradient from a `[rows, d_in]` gradient."""
        into += (self.matrix.t() @ grad.to(self.dtype)).float()

    def gather_dot(self, grad: "torch.Tensor", weights: "torch.Tensor") -> "torch.Tensor":
        """`[rows, k]`: for every stored entry (r, latent), grad[r] . weights[latent]."""
        import torch

        if self.kernel == "sparse":
            pattern = _csr(
                self.crow, self.ids.reshape(-1), torch.zeros_like(self.values).reshape(-1), self.matrix.shape
            )
            return torch.sparse.sampled_addmm(pattern, grad, weights.T, beta=0.0).values().reshape(self.ids.shape)
        return (grad.to(self.dtype) @ weights.T.to(self.dtype)).float().gather(1, self.ids)

    def with_values(self, values: "torch.Tensor") -> "_Codes":
        """The same sparsity pattern holding other values (a gradient)."""
        return _Codes(self.ids, values, self.d_sae, self.kernel, self.dtype)


SUBSET_WIDTH = 8
"""AuxK's codes are held as `_SubsetCodes` while at most this many times k_aux latents are dead: on 2 CPU cores the
dense products over the dead latents beat the CSR ones up to 8 times k_aux and lost from 12 times (the AuxK table of
`benchmarks/training.py`)."""


class _SubsetCodes:
    """Codes whose latents all lie in a small set `columns` (AuxK's dead latents), as a dense `[rows, n_columns]`
    matrix: the same products as `_Codes`, each a dense GEMM over those columns only."""

    def __init__(self, columns: "torch.Tensor", which: "torch.Tensor", values: "torch.Tensor") -> None:
        import torch

        self.columns, self.which, self.values = columns, which, values
        self.ids = columns[which]
        self.every_column = which.shape[1] == len(columns)  # `_dead_topk` then took all, in column order
        if self.every_column:
            self.matrix = values
        else:
            self.matrix = torch.zeros(len(values), len(columns), device=values.device, dtype=values.dtype)
            self.matrix.scatter_(1, which, values)

    def times(self, weights: "torch.Tensor") -> "torch.Tensor":
        """codes @ weights: `[rows, d_in]` from latent-major `[d_sae, d_in]` weights."""
        return self.matrix @ weights[self.columns]

    def add_transpose_times(self, into: "torch.Tensor", grad: "torch.Tensor") -> None:
        """into += codes.T @ grad, only the rows of `columns` touched."""
        into.index_add_(0, self.columns, self.matrix.t() @ grad)

    def gather_dot(self, grad: "torch.Tensor", weights: "torch.Tensor") -> "torch.Tensor":
        """`[rows, k]`: for every stored entry (r, latent), grad[r] . weights[latent]."""
        dots = grad @ weights[self.columns].T
        return dots if self.every_column else dots.gather(1, self.which)

    def with_values(self, values: "torch.Tensor") -> "_SubsetCodes":
        """The same latents holding other values (a gradient)."""
        return _SubsetCodes(self.columns, self.which, values)


def _aux_codes(selection: AuxSelection, d_sae: int, kernel: str, dtype: "torch.dtype") -> "_Codes | _SubsetCodes":
    """AuxK's codes in the layout that multiplies them fastest: over the dead latents alone where few are dead
    (the sparse kernel's case), else as the main codes are held."""
    if kernel == "sparse" and len(selection.columns) <= SUBSET_WIDTH * selection.top.shape[1]:
        return _SubsetCodes(selection.columns, selection.which, selection.top)
    return _Codes(selection.ids, selection.top, d_sae, kernel, dtype)


def _backprop_codes(
    codes: "_Codes | _SubsetCodes",
    top: "torch.Tensor",
    grad_out: "torch.Tensor",
    unit: "torch.Tensor",
    norms: "torch.Tensor",
    centred: "torch.Tensor",
    grads: dict[str, "torch.Tensor"],
    gate: bool = True,
) -> None:
    """Accumulate into `grads` what flows from `grad_out` (d loss / d decoded output) back through `codes`.

    `grads["unit"]` collects d loss / d u and `grads["norm"]` d loss / d n through the pre-activations; the
    caller turns both into the decoder's gradient. `gate` applies the ReLU (the AuxK values have none).
    """
    codes.add_transpose_times(grads["unit"], grad_out)
    grad_pre = codes.gather_dot(grad_out, unit)
    if gate:
        grad_pre = grad_pre * (top > 0)
    flat_ids = codes.ids.reshape(-1)
    # pre = z * n, so d/dn = z = pre / n (divided once at the end), and d/dz = d/dpre * n.
    grads["norm"].index_add_(0, flat_ids, (grad_pre * top).reshape(-1))
    grad_z = grad_pre * norms[codes.ids]
    codes.with_values(grad_z).add_transpose_times(grads["enc"], centred)
    grads["b_enc"].index_add_(0, flat_ids, grad_z.reshape(-1))


def fast_step_grads(
    p: TopKParams,
    x: "torch.Tensor",
    k: int,
    dead: "torch.Tensor | None",
    aux_coefficient: float,
    kernel: str,
    matmul_dtype: "torch.dtype | None" = None,
) -> StepOutput:
    """Loss and gradients of one batch with hand-written sparse backprop; sets `.grad` of every parameter."""
    import torch

    with torch.no_grad():
        dtype = matmul_dtype or torch.float32
        batch = x.shape[0]
        enc, dec = p.enc.detach(), p.dec.detach()
        norms = dec.norm(dim=1)
        unit = dec / norms[:, None]
        centred = x - p.b_dec.detach()
        pre = _pre_activations(p, centred, dtype) * norms
        top, ids = _topk(pre, k)
        codes = _Codes(ids, top.relu(), p.d_sae, kernel, dtype)
        error = codes.times(unit) + p.b_dec.detach() - x
        mse = error.pow(2).sum(1).mean()
        grad_out = error * (2.0 / batch)
        grads = {
            "enc": torch.zeros_like(enc),
            "unit": torch.zeros_like(dec),
            "norm": torch.zeros_like(norms),
            "b_enc": torch.zeros_like(p.b_enc),
        }
        _backprop_codes(codes, top, grad_out, unit, norms, centred, grads)
        aux = torch.zeros(())
        if dead is not None and aux_coefficient > 0:
            selection = _dead_topk(pre, dead, p.d_in)
            if selection is not None:
                aux_codes = _aux_codes(selection, p.d_sae, kernel, dtype)
                # The dead latents chase the residual the live ones left (-error), which carries no gradient.
                aux_error = aux_codes.times(unit) + error
                aux = aux_coefficient * selection.scale * aux_error.pow(2).sum(1).mean()
                _backprop_codes(
                    aux_codes,
                    selection.top,
                    aux_error * (2.0 * aux_coefficient * selection.scale / batch),
                    unit,
                    norms,
                    centred,
                    grads,
                    gate=False,
                )
        grad_norm = grads["norm"] / norms
        grad_unit = grads["unit"]
        # u = dec / |dec|: project out the radial part, divide by the norm; n = |dec| adds a radial part.
        grad_dec = (grad_unit - (grad_unit * unit).sum(1, keepdim=True) * unit) / norms[:, None] + grad_norm[
            :, None
        ] * unit
        # b_dec enters the decoder directly and the encoder through x - b_dec.
        grad_b_dec = grad_out.sum(0) - grads["b_enc"] @ enc
        for tensor, grad in zip(p.tensors(), (grads["enc"], grad_dec, grads["b_enc"], grad_b_dec)):
            tensor.grad = grad
    return StepOutput(float(mse), float(aux), ids, codes.values)


def autograd_step_grads(
    p: TopKParams, x: "torch.Tensor", k: int, dead: "torch.Tensor | None", aux_coefficient: float
) -> StepOutput:
    """The plain reference: the same loss written densely, gradients from autograd; sets `.grad`."""
    import torch

    for tensor in p.tensors():
        tensor.grad = None
    norms = p.dec.norm(dim=1)
    pre = ((x - p.b_dec) @ p.enc.T + p.b_enc) * norms
    top, ids = _topk(pre, k)
    codes = torch.zeros_like(pre).scatter(1, ids, top.relu())
    recon = (codes / norms) @ p.dec + p.b_dec
    mse = (recon - x).pow(2).sum(1).mean()
    loss, aux = mse, torch.zeros(())
    if dead is not None and aux_coefficient > 0:
        selection = _dead_topk(pre, dead, p.d_in)
        if selection is not None:
            aux_codes = torch.zeros_like(pre).scatter(1, selection.ids, selection.top)
            residual = (x - recon).detach()
            aux = aux_coefficient * selection.scale * ((aux_codes / norms) @ p.dec - residual).pow(2).sum(1).mean()
            loss = loss + aux
    loss.backward()
    return StepOutput(float(mse.detach()), float(aux.detach()), ids.detach(), top.detach().relu())


def step_grads(
    p: TopKParams,
    x: "torch.Tensor",
    cfg: TopKTrainConfig,
    dead: "torch.Tensor | None" = None,
    kernel: str | None = None,
    matmul_dtype: "torch.dtype | None" = None,
) -> StepOutput:
    """Loss and gradients of one batch with the configured kernel (fast or autograd)."""
    kernel = kernel or resolve_kernel(cfg.kernel, x.device)
    if kernel == "autograd":
        return autograd_step_grads(p, x, cfg.k, dead, cfg.aux_coefficient)
    return fast_step_grads(p, x, cfg.k, dead, cfg.aux_coefficient, kernel, matmul_dtype)


def apply_update(p: TopKParams, optimizer: "torch.optim.Optimizer", clip_grad_norm: float = 1.0) -> None:
    """One optimiser step from the gradients in `.grad` (clipped to a total norm of `clip_grad_norm`)."""
    import torch

    if clip_grad_norm > 0:
        params = p.tensors()
        if not hasattr(torch.nn.utils, "get_total_norm"):  # torch before 2.6
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm, foreach=True)
        else:
            total = torch.nn.utils.get_total_norm([t.grad for t in params if t.grad is not None], foreach=True)
            # `clip_grad_norm_` also multiplies by a coefficient clamped to exactly 1 (sparing a GPU a sync), a pass
            # over every gradient that changes no bit; the loop syncs each step anyway, so it is skipped (a NaN
            # coefficient is still applied, as torch applies it).
            if not float(clip_grad_norm / (total + 1e-6)) >= 1.0:
                torch.nn.utils.clip_grads_with_norm_(params, clip_grad_norm, total, foreach=True)
    optimizer.step()


def lr_factor(step: int, n_steps: int) -> float:
    """1 for the first 70% of steps, then linear down to 0.1 at the last step."""
    decay_start = int(0.7 * n_steps)
    if step < decay_start:
        return 1.0
    return 1.0 - 0.9 * (step - decay_start) / max(n_steps - decay_start, 1)


def make_optimizer(p: TopKParams, lr: float) -> "torch.optim.Optimizer":
    """Adam over the SAE's tensors; the fused kernel where this torch build has it for the device."""
    import torch

    try:
        return torch.optim.Adam(p.tensors(), lr=lr, betas=(0.9, 0.999), fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(p.tensors(), lr=lr, betas=(0.9, 0.999))


@dataclass
class TrainResult:
    """A trained TopK SAE and what training saw."""

    params: TopKParams
    steps: int
    tokens: int
    """Tokens this call trained on (a resumed run counts those after its checkpoint only)."""
    dead_fraction: float
    """Share of latents that fired on no token in the last `dead_window` of training."""
    seconds: float


def check_step_loss(step: int, loss: float, batch: "torch.Tensor") -> None:
    """Raise a one-line error when a training step's loss is NaN or infinite: the batch held such values (a
    float16 cache that overflowed), or training diverged."""
    if math.isfinite(loss):
        return
    if not all_finite(batch):
        raise ClearSaeError(
            f"training batch {step + 1} holds NaN or infinite activations; recreate the cache with "
            "`clear-sae cache ... --dtype float32 --force`"
        )
    raise ClearSaeError(f"training diverged at step {step + 1} (the loss became {loss}); lower --lr")


class DataParallel(Protocol):
    """What data-parallel training needs of its process group (`clear_sae.distributed.ProcessGroup`)."""

    size: int
    """How many ranks train together."""

    def average(self, tensors: list["torch.Tensor"]) -> None:
        """Replace each tensor, in place, by its mean over the ranks."""
        ...

    def any(self, mask: "torch.Tensor") -> "torch.Tensor":
        """A bool mask true where it is true on any rank."""
        ...


@dataclass
class Checkpointing:
    """Where a TopK training run saves its state and where it starts from."""

    every: int = 0
    """Steps between checkpoints; 0 saves none."""
    save: Callable[[int, dict[str, "torch.Tensor"]], None] | None = None
    """Called with the number of steps done and the trainer's state (`trainer_state`)."""
    start: dict[str, "torch.Tensor"] | None = None
    """A state saved earlier to continue from; the caller's batches must begin at its step."""


def trainer_state(
    p: TopKParams,
    optimizer: "torch.optim.Optimizer",
    tokens_since_fired: "torch.Tensor",
    fired_late: "torch.Tensor",
    steps: int,
) -> dict[str, "torch.Tensor"]:
    """Everything a training run needs to continue bit for bit: parameters, Adam's state, dead-latent counters,
    the number of steps done."""
    import torch

    state = {name: t.detach() for name, t in zip(PARAM_NAMES, p.tensors())}
    for i, moments in optimizer.state_dict()["state"].items():
        for key, value in moments.items():
            state[f"adam.{i}.{key}"] = torch.as_tensor(value)
    state.update(tokens_since_fired=tokens_since_fired, fired_late=fired_late, steps=torch.tensor(steps))
    return state


def restore_trainer_state(
    state: dict[str, "torch.Tensor"], p: TopKParams, optimizer: "torch.optim.Optimizer", device: str
) -> tuple["torch.Tensor", "torch.Tensor", int]:
    """Load `trainer_state`'s output into `p` and `optimizer`; returns the dead-latent counters and steps done."""
    import torch

    try:
        with torch.no_grad():
            for name, tensor in zip(PARAM_NAMES, p.tensors()):
                if state[name].shape != tensor.shape:
                    raise ClearSaeError(
                        f"the checkpoint's {name} has shape {tuple(state[name].shape)}, this run's "
                        f"{tuple(tensor.shape)}; pass --force to start over"
                    )
                tensor.copy_(state[name])
        moments: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in state.items():
            if name.startswith("adam."):
                _, i, key = name.split(".")
                moments.setdefault(int(i), {})[key] = value.to(device) if key != "step" else value
        saved = optimizer.state_dict()
        saved["state"] = moments
        optimizer.load_state_dict(saved)
        return state["tokens_since_fired"].to(device), state["fired_late"].to(device), int(state["steps"])
    except (KeyError, ValueError) as err:
        raise ClearSaeError(f"the checkpoint is malformed ({err}); pass --force to start over") from None


PARAM_NAMES = ("enc", "dec", "b_enc", "b_dec")


def train_topk(
    batches: Iterable["torch.Tensor"],
    d_in: int,
    d_sae: int,
    n_steps: int,
    cfg: TopKTrainConfig,
    b_dec_init: "torch.Tensor | None" = None,
    dead_after: int | None = None,
    dead_window: float = 0.25,
    device: str = "cpu",
    on_step: Callable[[int, StepOutput], None] | None = None,
    checkpointing: Checkpointing = Checkpointing(),
    data_parallel: DataParallel | None = None,
) -> TrainResult:
    """Train a TopK SAE on `n_steps` minibatches `[batch, d_in]` from `batches` (already normalised).

    With `checkpointing.start`, training continues from a saved state and `batches` must be the stream from its
    step on; on the CPU it then ends bit for bit where an uninterrupted run ends. With `data_parallel`, every rank
    feeds its own batches and the gradients are averaged over the ranks before each update, so that all ranks hold
    the same SAE throughout.
    """

    import torch

    if cfg.k < 1 or cfg.k > d_sae:
        raise ClearSaeError(f"k must be between 1 and d_sae ({d_sae}), not {cfg.k}")
    kernel = resolve_kernel(cfg.kernel, device)
    dtype = resolve_matmul_dtype(cfg.matmul_dtype, device)
    p = TopKParams(d_in, d_sae, b_dec_init, cfg.seed, device)
    optimizer = make_optimizer(p, cfg.lr)
    tokens_since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
    fired_late = torch.zeros(d_sae, dtype=torch.bool, device=device)
    first = 0
    if checkpointing.start is not None:
        tokens_since_fired, fired_late, first = restore_trainer_state(checkpointing.start, p, optimizer, device)
    late_from = int((1 - dead_window) * n_steps)
    steps, tokens = first, 0
    start = time.perf_counter()
    for step, batch in zip(range(first, n_steps), batches):
        batch = batch.to(device, non_blocking=True).float()
        dead = tokens_since_fired > dead_after if dead_after is not None else None
        out = step_grads(p, batch, cfg, dead, kernel, dtype)
        check_step_loss(step, out.mse + out.aux, batch)
        if data_parallel is not None:
            data_parallel.average([t.grad for t in p.tensors() if t.grad is not None])
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, n_steps)
        apply_update(p, optimizer, cfg.clip_grad_norm)
        with torch.no_grad():
            fired = torch.zeros(d_sae, dtype=torch.bool, device=device)
            fired[out.latents[out.values > 0]] = True
            if data_parallel is not None:
                fired = data_parallel.any(fired)
            # Counted in tokens of the batch every rank sees together, so a latent dies after as many tokens
            # whatever the number of ranks.
            tokens_since_fired += len(batch) * (1 if data_parallel is None else data_parallel.size)
            tokens_since_fired[fired] = 0
            if step >= late_from:
                fired_late |= fired
        steps, tokens = step + 1, tokens + len(batch)
        if on_step is not None:
            on_step(step, out)
        if checkpointing.save is not None and checkpointing.every and steps % checkpointing.every == 0:
            if steps < n_steps:
                checkpointing.save(steps, trainer_state(p, optimizer, tokens_since_fired, fired_late, steps))
    if tokens == 0:
        raise ClearSaeError("the SAE trainer received no data; check that the cache holds tokens")
    return TrainResult(p, steps, tokens, 1.0 - float(fired_late.float().mean()), time.perf_counter() - start)


def to_inference_sae(p: TopKParams, k: int, hook: str, model_name: str) -> Any:
    """The trained tensors as an inference TopK SAE (float32, CPU, the decoder norms folded in): a `PlainSAE`, the
    forward pass and folder of sae-lens's `TopKSAE` without importing sae-lens (about 3 s on 2 cores)."""
    import torch

    from clear_sae.sae.plain import PlainConfig, PlainSAE, sae_lens_metadata

    with torch.no_grad():
        norms = p.dec.detach().norm(dim=1).cpu()
        tensors = {
            "W_enc": (p.enc.detach().cpu() * norms[:, None]).T.contiguous(),
            "b_enc": p.b_enc.detach().cpu() * norms,
            "W_dec": p.dec.detach().cpu() / norms[:, None],
            "b_dec": p.b_dec.detach().cpu().clone(),
        }
    cfg = PlainConfig(d_in=p.d_in, d_sae=p.d_sae, arch="topk", k=k, metadata=sae_lens_metadata(hook, model_name))
    return PlainSAE(cfg, tensors).eval()


_END = object()


def feed(batches: Iterator[Any], device: str) -> Iterator[Any]:
    """The batch stream as the trainer should read it on `device`: through `prefetch` when the step runs on a
    GPU (the CPU is free to read meanwhile), directly on a CPU, where a reader thread competes with torch's
    threads for the cores (on 2 cores it cost 6-7% of training throughput; benchmarks/caching.py)."""
    import torch

    return prefetch(batches) if torch.device(device).type != "cpu" else batches


def prefetch(iterator: Iterator[Any], depth: int = 4) -> Iterator[Any]:
    """Run `iterator` in a background thread, `depth` items ahead, so reading overlaps training.

    Worth it when the training step runs on a GPU (see `feed`). An exception in the reader is raised here.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in iterator:
                if stop.is_set():
                    return
                items.put(item)
            items.put(_END)
        except BaseException as err:  # handed to the consumer
            items.put(err)

    thread = threading.Thread(target=work, daemon=True, name="clear_sae-prefetch")
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
