"""The methods CLEAR is compared with, as forward hooks that `erase.attach` registers like a latent clamp.

- `DirectionClamp`: a difference-of-means direction at one layer, no SAE. The direction is the mean token
  activation of the target prompts minus that of the non-target prompts; a token whose projection on it
  exceeds what non-target tokens reach (their `quantile`) is brought back to that level. Tokens below it
  pass through bit for bit, as with the latent clamp, so the comparison isolates what the dictionary adds. With a
  removal strength s, the excess is removed s times (s = 1 caps the projection; s = 2 mirrors it below the cap).
  `direction_separation` scores a layer for it, with no generator: how far the target prompts' largest projection
  stands from the non-targets', in pooled standard deviations.
- `SubspaceProjection`: a training-free projection of the text encoder's output token states away from a
  concept subspace, after SAFREE (Yoon et al., 2025), simplified: the subspace is spanned by the token
  states of the concept's keywords; a token is a trigger when the share of its norm inside the subspace
  exceeds what non-target tokens show (their `quantile`), and a trigger token loses its component in the
  subspace. SAFREE's self-validating filter and its latent-space re-attention are left out.
- The negative prompt needs no hook: the evaluation passes the concept's words as the negative prompt.
- The SAE clamp at other layers (first, middle, last, random, all at once) is `erase.LatentClamp` with the
  concept's latents at those layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clear_sae.backbones import first_tensor, replace_first_tensor
from clear_sae.errors import ClearSaeError

if TYPE_CHECKING:
    import torch

    from clear_sae.backbones import Backbone

QUANTILE = 0.95
"""Share of non-target tokens a baseline leaves alone when it sets its threshold."""


class _TokenEdit:
    """A forward hook that edits some token rows of a module's output and leaves the others bit for bit."""

    width: int
    """The width of the module output it was built for."""

    def rows_to_edit(self, flat: "torch.Tensor") -> "torch.Tensor":
        raise NotImplementedError

    def edit_rows(self, rows: "torch.Tensor") -> "torch.Tensor":
        raise NotImplementedError

    def edit(self, h: "torch.Tensor") -> "torch.Tensor | None":
        """`h` with the concept removed, or None when no token needs it."""
        import torch

        width = h.shape[-1]
        if width != self.width:
            raise ClearSaeError(
                f"dimension mismatch: the baseline was built for width {self.width}, the hooked module "
                f"gives {width}; build it on the model it is applied to"
            )
        flat = h.reshape(-1, width)
        with torch.no_grad():
            rows = torch.nonzero(self.rows_to_edit(flat.float())).squeeze(-1)
            if rows.numel() == 0:
                return None
            out = flat.clone()
            out[rows] = self.edit_rows(flat[rows].float()).to(h.dtype)
        return out.reshape(h.shape)

    def __call__(self, module: Any, inputs: Any, output: Any) -> Any:
        new = self.edit(first_tensor(output))
        return None if new is None else replace_first_tensor(output, new)


class DirectionClamp(_TokenEdit):
    """Caps the projection of every token on one direction at the level non-target tokens reach."""

    def __init__(self, direction: "torch.Tensor", ceiling: float, strength: float = 1.0) -> None:
        norm = float(direction.norm())
        if norm == 0:
            raise ClearSaeError(
                "the concept direction is zero: the target and non-target prompts give the same mean "
                "activation; use non-targets that differ in the concept"
            )
        self.direction = (direction / norm).float()
        self.ceiling = float(ceiling)
        self.strength = float(strength)
        self.width = int(direction.shape[-1])

    def with_strength(self, strength: float) -> "DirectionClamp":
        """The same direction and ceiling with another removal strength."""
        return DirectionClamp(self.direction, self.ceiling, strength)

    def rows_to_edit(self, flat: "torch.Tensor") -> "torch.Tensor":
        return flat @ self.direction > self.ceiling

    def edit_rows(self, rows: "torch.Tensor") -> "torch.Tensor":
        excess = rows @ self.direction - self.ceiling
        return rows - self.strength * excess[:, None] * self.direction


class SubspaceProjection(_TokenEdit):
    """Removes the concept-subspace component of the tokens that lie mostly in it (SAFREE-style)."""

    def __init__(self, keyword_states: "torch.Tensor", trigger: float) -> None:
        import torch

        if keyword_states.ndim != 2 or len(keyword_states) == 0:
            raise ClearSaeError("the concept subspace needs at least one keyword; pass the concept's words")
        # Orthonormal basis of the span of the keyword states (numerically null directions dropped).
        u, s, _ = torch.linalg.svd(keyword_states.float().T, full_matrices=False)
        self.basis = u[:, s > s[0] * 1e-4]  # [width, rank]
        self.trigger = float(trigger)
        self.width = int(keyword_states.shape[-1])

    def share_in_subspace(self, flat: "torch.Tensor") -> "torch.Tensor":
        """Per token, the share of its norm that lies in the concept subspace (0 to 1)."""
        inside = (flat @ self.basis).norm(dim=-1)
        return inside / flat.norm(dim=-1).clamp_min(1e-12)

    def rows_to_edit(self, flat: "torch.Tensor") -> "torch.Tensor":
        return self.share_in_subspace(flat) > self.trigger

    def edit_rows(self, rows: "torch.Tensor") -> "torch.Tensor":
        return rows - (rows @ self.basis) @ self.basis.T


def _tokens(backbone: "Backbone", prompts: list[str], hook: str, batch_size: int = 64) -> "torch.Tensor":
    """Every real token's activation at `hook`, `[n_tokens, width]`."""
    import torch

    parts = []
    for _, outputs in backbone.run_batched(prompts, [hook], batch_size):
        act = outputs[hook]
        parts.append(act.acts[act.mask].float())
    return torch.cat(parts)


def direction_clamp(
    backbone: "Backbone",
    hook: str,
    target: list[str],
    nontarget: list[str],
    quantile: float = QUANTILE,
    strength: float = 1.0,
) -> DirectionClamp:
    """The difference-of-means baseline at `hook`, built from target and non-target prompts."""
    import torch

    if not target or not nontarget:
        raise ClearSaeError("the difference-of-means direction needs target and non-target prompts")
    t, n = _tokens(backbone, target, hook), _tokens(backbone, nontarget, hook)
    direction = t.mean(0) - n.mean(0)
    ceiling = torch.quantile(n @ (direction / direction.norm().clamp_min(1e-12)), quantile)
    return DirectionClamp(direction, float(ceiling), strength)


def direction_separations(
    backbone: "Backbone", hooks: list[str], target: list[str], nontarget: list[str]
) -> dict[str, float]:
    """How well the difference-of-means direction at each hook tells the prompts apart, with no generator: the gap
    between the target and non-target prompts' mean largest token projection, over their pooled standard
    deviation (each prompt set is encoded once for every hook)."""
    import torch

    def collect(prompts: list[str]) -> dict[str, list[tuple["torch.Tensor", "torch.Tensor"]]]:
        batches: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {h: [] for h in hooks}
        for _, outputs in backbone.run_batched(prompts, hooks, 64):
            for hook in hooks:
                batches[hook].append((outputs[hook].acts.float(), outputs[hook].mask))
        return batches

    t_batches, n_batches = collect(target), collect(nontarget)
    scores = {}
    for hook in hooks:
        t_tokens = torch.cat([acts[mask] for acts, mask in t_batches[hook]])
        n_tokens = torch.cat([acts[mask] for acts, mask in n_batches[hook]])
        direction = t_tokens.mean(0) - n_tokens.mean(0)
        unit = direction / direction.norm().clamp_min(1e-12)

        def largest(batches: list[tuple["torch.Tensor", "torch.Tensor"]]) -> "torch.Tensor":
            return torch.cat([(acts @ unit).masked_fill(~mask, float("-inf")).max(-1).values for acts, mask in batches])

        t, n = largest(t_batches[hook]), largest(n_batches[hook])
        spread = float(torch.sqrt((t.var() + n.var()) / 2).clamp_min(1e-12))
        scores[hook] = float(t.mean() - n.mean()) / spread
    return scores


def subspace_projection(
    backbone: "Backbone", hook: str, keywords: list[str], nontarget: list[str], quantile: float = QUANTILE
) -> SubspaceProjection:
    """The SAFREE-style baseline at `hook` (the text encoder's output): the subspace of the keywords' mean token
    states, the trigger level set on the non-target prompts' tokens."""
    import torch

    keywords = [k for k in keywords if k.strip()]
    if not keywords:
        raise ClearSaeError("the concept subspace needs at least one keyword; pass the concept's words")
    states = torch.stack([_tokens(backbone, [k], hook).mean(0) for k in keywords])
    projection = SubspaceProjection(states, 1.0)
    projection.trigger = float(
        torch.quantile(projection.share_in_subspace(_tokens(backbone, nontarget, hook)), quantile)
    )
    return projection
