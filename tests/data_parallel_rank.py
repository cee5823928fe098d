"""Data-parallel TopK training checked against one process, run under torchrun by tests/test_distributed.py as
`data_parallel_rank.py OUT.json`: each rank trains on its half of every batch, gradients averaged over the ranks;
the first rank then trains alone on the whole batches and writes how far the two SAEs are apart."""

from __future__ import annotations

import json
import sys

import torch

from clear_sae.distributed import join
from clear_sae.sae.trainer import TopKTrainConfig, train_topk

D_IN, D_SAE, STEPS, BATCH = 32, 1024, 20, 256
group = join("cpu")
generator = torch.Generator().manual_seed(0)
batches = [torch.randn(BATCH, D_IN, generator=generator) for _ in range(STEPS)]
share = BATCH // group.size
halves = [b[group.rank * share : (group.rank + 1) * share] for b in batches]
cfg = TopKTrainConfig(k=2, kernel="sparse")
# Many latents for k = 2 and a short dead window, so that AuxK takes part (it depends on the dead mask, which every
# rank must agree on).
together = train_topk(iter(halves), D_IN, D_SAE, STEPS, cfg, dead_after=2 * BATCH, data_parallel=group)
if group.leads:
    alone = train_topk(iter(batches), D_IN, D_SAE, STEPS, cfg, dead_after=2 * BATCH)
    gap = {
        name: float((a.detach() - b.detach()).abs().max() / b.detach().abs().max())
        for name, a, b in zip(("enc", "dec", "b_enc", "b_dec"), together.params.tensors(), alone.params.tensors())
    }
    record = {"relative_gap": gap, "dead_fraction": [together.dead_fraction, alone.dead_fraction]}
    with open(sys.argv[1], "w") as f:
        json.dump(record, f)
group.barrier()
