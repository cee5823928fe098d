"""The text probe: a logistic classifier that tells a concept's prompts from their twins on pooled final states."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def train_concept_probe(positive: "torch.Tensor", negative: "torch.Tensor", steps: int = 300, seed: int = 0) -> Any:
    """A logistic probe (standardised inputs, light L2) telling concept prompts from their twins; returns a
    function mapping pooled states `[n, d]` to the probability of the concept."""
    import torch

    torch.manual_seed(seed)
    x = torch.cat([positive, negative]).float()
    y = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))])
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(steps):
        logits = ((x - mean) / std) @ weight + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + 1e-3 * weight.pow(2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    weight, bias = weight.detach(), bias.detach()
    return lambda states: torch.sigmoid(((states.float() - mean) / std) @ weight + bias)
