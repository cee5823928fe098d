"""The TopK trainer: the fast kernels against the plain autograd reference, training itself, the data path."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from clear_sae.errors import ClearSaeError
from clear_sae.sae.trainer import (
    SUBSET_WIDTH,
    TopKParams,
    TopKTrainConfig,
    _aux_codes,
    _dead_topk,
    _SubsetCodes,
    apply_update,
    make_optimizer,
    prefetch,
    resolve_kernel,
    step_grads,
    to_inference_sae,
    train_topk,
)

D_IN, D_SAE, K, BATCH = 48, 384, 8, 200


def _params(seed: int = 1) -> TopKParams:
    """An SAE some way from its init: decoder rows of unequal norms (the norms rescale the activations) and
    encoder biases low enough that some chosen pre-activations are negative (chosen, but output zero)."""
    p = TopKParams(D_IN, D_SAE, torch.full((D_IN,), 0.2), seed=seed)
    g = torch.Generator().manual_seed(seed + 10)
    with torch.no_grad():
        p.dec *= 5 + 15 * torch.rand(D_SAE, 1, generator=g)
        p.enc += torch.randn(D_SAE, D_IN, generator=g) * 0.05
        p.b_enc += torch.randn(D_SAE, generator=g) * 0.3 - 1.3
    return p


def _batch(seed: int = 0) -> torch.Tensor:
    return torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(seed)) * 1.5 + 0.1


def _dead(n_dead: int) -> torch.Tensor:
    """`n_dead` dead latents spread over the dictionary."""
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[torch.randperm(D_SAE, generator=torch.Generator().manual_seed(n_dead))[:n_dead]] = True
    return dead


# AuxK takes k_aux = D_IN / 2 = 24 dead latents per token: 16 dead are all taken, in the dense layout over the dead
# latents (`_SubsetCodes`); 128 are chosen among, in that layout too; 300 (more than SUBSET_WIDTH x 24) as sparse.
@pytest.mark.parametrize("kernel", ["sparse", "dense"])
@pytest.mark.parametrize("n_dead", [0, 16, 128, 300])
def test_fast_kernels_match_autograd(kernel, n_dead):
    x = _batch()
    with_dead = n_dead > 0
    results = {}
    for name in (kernel, "autograd"):
        p = _params()
        out = step_grads(p, x, TopKTrainConfig(k=K), _dead(n_dead) if with_dead else None, kernel=name)
        results[name] = (out, [t.grad.clone() for t in p.tensors()])
    (fast, fast_grads), (ref, ref_grads) = results[kernel], results["autograd"]
    assert torch.equal(fast.latents.sort(1).values, ref.latents.sort(1).values)
    assert torch.allclose(fast.values.sort(1).values, ref.values.sort(1).values, atol=1e-5)
    assert 0 < (fast.values == 0).float().mean() < 0.5, "cover latents chosen with a negative pre-activation"
    assert fast.mse == pytest.approx(ref.mse, rel=1e-5)
    assert fast.aux == pytest.approx(ref.aux, rel=1e-5)
    assert (fast.aux > 0) == with_dead
    for name, a, b in zip(("enc", "dec", "b_enc", "b_dec"), fast_grads, ref_grads):
        assert b.abs().max() > 0, name
        assert torch.allclose(a, b, atol=1e-5 * float(b.abs().max()), rtol=1e-4), name


@pytest.mark.parametrize(
    ("n_dead", "layout", "every_column"), [(16, "subset", True), (128, "subset", False), (300, "csr", None)]
)
def test_auxk_layout_follows_the_number_of_dead_latents(n_dead, layout, every_column):
    pre = torch.randn(BATCH, D_SAE, generator=torch.Generator().manual_seed(3))
    selection = _dead_topk(pre, _dead(n_dead), D_IN)
    assert selection is not None
    assert torch.equal(selection.columns, _dead(n_dead).nonzero().squeeze(1))
    assert (n_dead <= SUBSET_WIDTH * D_IN // 2) == (layout == "subset")
    codes = _aux_codes(selection, D_SAE, "sparse", torch.float32)
    assert isinstance(codes, _SubsetCodes) == (layout == "subset")
    if every_column is not None:
        assert codes.every_column == every_column
    # Each token's chosen latents are its k_aux largest dead pre-activations, whatever the layout.
    expected = pre[:, selection.columns].topk(min(D_IN // 2, n_dead), dim=1).values.sort(1).values
    assert torch.equal(selection.top.sort(1).values, expected)
    assert torch.equal(pre.gather(1, selection.ids), selection.top)
    assert isinstance(_aux_codes(selection, D_SAE, "dense", torch.float32), _SubsetCodes) is False


def test_bf16_encoder_gemm_stays_close_to_float32():
    x = _batch()
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        p = _params()
        out = step_grads(p, x, TopKTrainConfig(k=K), kernel="dense", matmul_dtype=dtype)
        grads[dtype] = (out, p.enc.grad.clone())
    (o32, g32), (o16, g16) = grads[torch.float32], grads[torch.bfloat16]
    same = (o32.latents.sort(1).values == o16.latents.sort(1).values).float().mean()
    assert same > 0.9
    assert o16.mse == pytest.approx(o32.mse, rel=0.02)
    assert torch.nn.functional.cosine_similarity(g32.flatten(), g16.flatten(), dim=0) > 0.95


def _planted_batches(n_steps: int, seed: int = 0):
    """Tokens that are sparse sums of 96 fixed unit directions (4 per token), plus a little noise."""
    atoms = torch.nn.functional.normalize(torch.randn(96, D_IN, generator=torch.Generator().manual_seed(7)), dim=1)
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        ids = torch.stack([torch.randperm(96, generator=g)[:4] for _ in range(BATCH)])
        weights = torch.rand(BATCH, 4, generator=g) * 2 + 0.5
        yield (weights[..., None] * atoms[ids]).sum(1) + 0.01 * torch.randn(BATCH, D_IN, generator=g)


def test_training_recovers_a_planted_dictionary():
    steps = 300
    losses = []
    result = train_topk(
        _planted_batches(steps + 50),
        D_IN,
        192,
        steps,
        TopKTrainConfig(k=6, lr=3e-3),
        dead_after=20 * BATCH,
        on_step=lambda s, out: losses.append(out.mse),
    )
    assert result.steps == steps and result.tokens == steps * BATCH
    assert sum(losses[-20:]) / 20 < 0.2 * sum(losses[:5]) / 5
    x = next(_planted_batches(1, seed=99))
    sae = to_inference_sae(result.params, 6, "h", "toy")
    norms = sae.W_dec.detach().norm(dim=1)  # the decoder norms are folded into the encoder on export
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    with torch.no_grad():
        recon = sae.decode(sae.encode(x))
    assert 1 - (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum() > 0.9


def test_sparse_and_autograd_training_runs_agree():
    runs = {}
    for kernel in ("sparse", "autograd"):
        result = train_topk(_planted_batches(30), D_IN, 192, 30, TopKTrainConfig(k=6, kernel=kernel), dead_after=BATCH)
        runs[kernel] = result.params
    for a, b in zip(runs["sparse"].tensors(), runs["autograd"].tensors()):
        assert torch.allclose(a, b, atol=1e-4)


def test_the_inference_sae_encodes_like_the_trainer():
    p = _params()
    x = _batch(3)
    out = step_grads(p, x, TopKTrainConfig(k=K), kernel="sparse")
    codes = to_inference_sae(p, K, "h", "toy").encode(x).detach()
    expected = torch.zeros(BATCH, D_SAE).scatter(1, out.latents, out.values)
    assert torch.allclose(codes, expected, atol=1e-5)


@pytest.mark.parametrize("grad_scale", [1e-4, 10.0])
def test_the_update_is_torch_clipping_and_adam_bit_for_bit(grad_scale):
    params = []
    for _ in range(2):
        p = _params()
        g = torch.Generator().manual_seed(5)
        for t in p.tensors():
            t.grad = torch.randn(t.shape, generator=g) * grad_scale
        params.append(p)
    ours, reference = params
    assert (grad_scale > 1) == (torch.nn.utils.get_total_norm([t.grad for t in ours.tensors()]) > 1.0)
    apply_update(ours, make_optimizer(ours, 1e-3), clip_grad_norm=1.0)
    torch.nn.utils.clip_grad_norm_(reference.tensors(), 1.0, foreach=True)
    make_optimizer(reference, 1e-3).step()
    for a, b in zip(ours.tensors(), reference.tensors()):
        assert torch.equal(a.grad, b.grad) and torch.equal(a, b)


def test_kernel_names_and_bad_k_are_one_line_errors():
    assert resolve_kernel("auto", "cpu") == "sparse"
    assert resolve_kernel("auto", "cuda") == "dense"
    with pytest.raises(ClearSaeError, match="unknown TopK kernel 'fast'; choose one of auto, sparse"):
        resolve_kernel("fast", "cpu")
    with pytest.raises(ClearSaeError, match="k must be between 1 and d_sae"):
        train_topk(iter([]), D_IN, 16, 1, TopKTrainConfig(k=32))


def test_prefetch_keeps_order_reads_ahead_and_passes_errors_on():
    produced = []

    def slow_source():
        for i in range(6):
            produced.append(i)
            yield i

    stream = prefetch(slow_source(), depth=2)
    assert next(stream) == 0
    time.sleep(0.2)
    assert len(produced) >= 3  # the reader ran ahead while the consumer was busy
    assert list(stream) == [1, 2, 3, 4, 5]

    def failing():
        yield 1
        raise ValueError("bad chunk")

    with pytest.raises(ValueError, match="bad chunk"):
        list(prefetch(failing()))


def test_prefetch_abandoned_early_stops_its_thread():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    stream = prefetch(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    time.sleep(0.1)
    assert not any(t.name == "clear_sae-prefetch" and t.is_alive() for t in threading.enumerate())


def test_feed_reads_directly_on_cpu_and_through_a_thread_for_a_gpu():
    from clear_sae.sae.trainer import feed

    source = iter(range(5))
    assert feed(source, "cpu") is source
    threaded = feed(iter(range(5)), "cuda")
    assert threaded is not source and list(threaded) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "fill, message",
    [(float("inf"), "training batch 2 holds NaN or infinite activations"), (1e30, "training diverged at step 2")],
    ids=["infinite-batch", "diverged"],
)
def test_a_step_whose_loss_is_not_finite_stops_training_with_the_reason(fill, message):
    """A non-finite batch (a float16 cache that overflowed) and a finite one whose loss overflows are told apart."""
    bad = _batch(1).clone()
    bad[3, 5] = fill
    with pytest.raises(ClearSaeError, match=message):
        train_topk(iter([_batch(0), bad, _batch(2)]), D_IN, D_SAE, 3, TopKTrainConfig(k=K))
