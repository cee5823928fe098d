"""SAFREE (Yoon et al., ICLR 2025) on the prompt embeddings a generator reads, after its paper, in a cheaper form
where noted.

- **Concept subspace.** Spanned by the concept's own tokens in context: for each of the concept's words, the mean
  state of its tokens in the learning target prompts that contain it (the paper spans its subspace by the
  embeddings of the concept's keywords).
- **Trigger, token by token.** A prompt's pooled embedding is the mean of its real tokens. Leaving out token i
  moves that mean; if the pooled embedding without token i lies farther from the concept subspace than
  `(1 + alpha)` times the average over the prompt's word tokens, token i is a trigger (it pulls the prompt
  towards the concept). The paper's `alpha` is 0.01.
- **Projection inside the input space.** A trigger token is projected onto the complement of the concept
  subspace, then back into the span of the prompt's own token states, so it stays a mix of what the prompt said.
- **Self-validating filter.** The filtered embedding conditions only the first steps of sampling, a number that
  grows as the filtered prompt moves away from the original: `round(steps * min(1, scale * sigmoid(1 - cos)))`,
  `cos` between the pooled embeddings with and without the filter. The paper's constant is 10 steps of 50, so its
  `scale` here is 0.2; a larger one filters more steps.

Where this is cheaper or looser than SAFREE's own: the prompt without token i is the mean of the other tokens' states,
not the prompt encoded again with token i masked; the average a token is compared with includes its own distance;
and the projection back into the prompt's span can return part of the concept component it removed. Every position
but the first and last real tokens (the start and end markers of a BERT-style encoder) can trigger.

SAFREE's re-attention in the denoiser's latent space (a Fourier filter of U-Net skip features) has no counterpart in
the toy generator and is left out. Padding positions are the rows that are exactly zero (the toy pipeline zeroes
them, as Wan does).

**At a layer** (`SafreeHook`, not in the paper): the same trigger and projection on the text encoder's residual
stream at one hook point, with the subspace spanned there (`build_safree` on that layer's states), so that SAFREE
can act at the depth it chooses as CLEAR does. The layer is its own choice, with no generator: where the concept
subspace tells the target prompts from the non-target ones best (`safree_separations`). The self-validating filter
then compares the prompt embeddings with and without the hook (`SelfValidatingFilter`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from clear_sae.backbones import first_tensor, replace_first_tensor
from clear_sae.erase import ReadsMask
from clear_sae.errors import ClearSaeError

if TYPE_CHECKING:
    import torch

    from clear_sae.backbones import Backbone

ALPHA = 0.01
"""The paper's trigger margin."""
FILTER_SCALE = 0.2
"""The paper's self-validating filter constant (10 steps of 50), as a share of the sampling steps."""


@dataclass
class Safree:
    """The filter for one concept; call it on prompt embeddings `[n, tokens, width]` (`sampling.EmbedFilter`)."""

    basis: "torch.Tensor"
    """Orthonormal basis of the concept subspace, `[width, rank]`."""
    alpha: float = ALPHA
    filter_scale: float = FILTER_SCALE

    def distance_to_subspace(self, pooled: "torch.Tensor") -> "torch.Tensor":
        """Norm of the part of each row outside the concept subspace."""
        return (pooled - (pooled @ self.basis) @ self.basis.T).norm(dim=-1)

    def triggers(self, states: "torch.Tensor", real: "torch.Tensor") -> "torch.Tensor":
        """Which tokens of one prompt are triggers, `[tokens]` bool; `real` marks its real tokens. The first and
        last real tokens (the encoder's start and end markers) are pooled but never triggers."""
        import torch

        positions = torch.nonzero(real).squeeze(-1)
        words = positions[1:-1]
        flagged = torch.zeros(len(states), dtype=torch.bool, device=states.device)
        if len(words) < 1:
            return flagged
        total = states[positions].sum(0)
        without = (total[None] - states[words]) / (len(positions) - 1)
        distance = self.distance_to_subspace(without)
        flagged[words] = distance > (1 + self.alpha) * distance.mean()
        return flagged

    def project(self, states: "torch.Tensor", real: "torch.Tensor", flagged: "torch.Tensor") -> "torch.Tensor":
        """One prompt's states with its trigger tokens moved off the concept subspace, within the span of its real
        tokens."""
        import torch

        if not bool(flagged.any()):
            return states
        span, _ = torch.linalg.qr(states[real].T)  # [width, real tokens]
        moved = states[flagged] - (states[flagged] @ self.basis) @ self.basis.T
        out = states.clone()
        out[flagged] = (moved @ span) @ span.T
        return out

    def filtered_steps(
        self, states: "torch.Tensor", projected: "torch.Tensor", real: "torch.Tensor", steps: int
    ) -> int:
        """How many early sampling steps the filtered prompt conditions (the self-validating filter)."""
        return filtered_steps(states, projected, real, steps, self.filter_scale)

    def filter_prompt(self, states: "torch.Tensor", real: "torch.Tensor") -> "torch.Tensor":
        """One prompt's states with its triggers projected off the concept subspace (`states` itself when none)."""
        return self.project(states, real, self.triggers(states, real))

    def __call__(
        self, embeds: "torch.Tensor", steps: int, original: "torch.Tensor | None" = None
    ) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """The early embeddings (filtered where a prompt has triggers and at least one step is filtered), the late
        ones (the originals) and the number of early steps per prompt (`sampling.EmbedFilter`; `embeds` are the
        originals here, as nothing else edits the text encoder, so `original` is not read)."""
        import torch

        early, counts = embeds.clone(), torch.zeros(len(embeds), dtype=torch.long, device=embeds.device)
        for i, states in enumerate(embeds.float()):
            real = states.abs().sum(-1) > 0
            projected = self.filter_prompt(states, real)
            counts[i] = self.filtered_steps(states, projected, real, steps)
            if counts[i] > 0:
                early[i] = projected.to(embeds.dtype)
        return early, embeds, counts


def filtered_steps(
    states: "torch.Tensor", projected: "torch.Tensor", real: "torch.Tensor", steps: int, filter_scale: float
) -> int:
    """SAFREE's self-validating filter: how many early sampling steps of `steps` condition on the filtered prompt
    `projected` rather than on `states`, `round(steps * min(1, filter_scale * sigmoid(1 - cos)))` with `cos` between
    their pooled real tokens (0 when nothing was filtered)."""
    import torch

    if torch.equal(states, projected):
        return 0
    cos = torch.nn.functional.cosine_similarity(states[real].mean(0), projected[real].mean(0), dim=0)
    share = min(1.0, filter_scale * float(torch.sigmoid(1 - cos)))
    return int(round(steps * share))


@dataclass(eq=False)
class SafreeHook(ReadsMask):
    """SAFREE's trigger and projection on the residual stream at one hook point: a forward hook for
    `erase.attach`, which shows it each call's attention mask, so that padding is neither pooled nor edited. Where
    the encoder takes no mask, every position counts as a real token. Like `Safree`, it takes each prompt's first and
    last real tokens for the encoder's start and end markers (BERT-style encoders, padded on the right)."""

    safree: Safree
    """The filter, its subspace spanned by the concept's words at this hook point."""
    mask: "torch.Tensor | None" = None

    def __call__(self, module: Any, inputs: Any, output: Any) -> Any:
        import torch

        hidden = first_tensor(output)
        if self.mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        elif tuple(self.mask.shape) != tuple(hidden.shape[:2]):
            raise ClearSaeError(
                f"the SAFREE hook got an attention mask of shape {tuple(self.mask.shape)} for states of shape "
                f"{tuple(hidden.shape)}; attach it at a hook point of the encoder whose call carries that mask"
            )
        else:
            mask = self.mask.bool().to(hidden.device)
        self.safree.basis = self.safree.basis.to(hidden.device)
        rows = [self.safree.filter_prompt(h, m) for h, m in zip(hidden.float(), mask)]
        return replace_first_tensor(output, torch.stack(rows).to(hidden.dtype))


@dataclass
class SelfValidatingFilter:
    """SAFREE's self-validating filter for a hook that edits the text encoder (`SafreeHook`): given the prompt
    embeddings under the hook and without it, the edited ones condition the first `filtered_steps` steps and the
    originals the rest (`sampling.EmbedFilter`)."""

    filter_scale: float = FILTER_SCALE

    def __call__(
        self, embeds: "torch.Tensor", steps: int, original: "torch.Tensor | None" = None
    ) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """The early embeddings (`embeds` where at least one step is filtered, else the original), the late ones
        (the originals) and the number of early steps per prompt."""
        import torch

        if original is None:
            raise ClearSaeError("the self-validating filter needs the prompt embeddings without the SAFREE hook")
        early, counts = original.clone(), torch.zeros(len(embeds), dtype=torch.long, device=embeds.device)
        for i, (edited, states) in enumerate(zip(embeds.float(), original.float())):
            real = states.abs().sum(-1) > 0
            counts[i] = filtered_steps(states, edited, real, steps, self.filter_scale)
            if counts[i] > 0:
                early[i] = embeds[i]
        return early, original, counts


def concept_subspace(word_states: "list[torch.Tensor]") -> "torch.Tensor":
    """An orthonormal basis `[width, rank]` of the span of the words' states (numerically null directions dropped)."""
    import torch

    if not word_states:
        raise ClearSaeError("the SAFREE subspace needs at least one concept word found in the target prompts")
    u, s, _ = torch.linalg.svd(torch.stack(word_states).float().T, full_matrices=False)
    return u[:, s > s[0] * 1e-4]


def word_token_positions(token_ids: list[int], word_ids: list[int]) -> list[int]:
    """Positions of the first occurrence of the token sequence `word_ids` in `token_ids` (empty if absent)."""
    n = len(word_ids)
    for start in range(len(token_ids) - n + 1):
        if token_ids[start : start + n] == word_ids:
            return list(range(start, start + n))
    return []


def build_safree(
    tokenizer: Any,
    encode: "Callable[[list[str]], torch.Tensor]",
    keywords: list[str],
    target: list[str],
    alpha: float = ALPHA,
    filter_scale: float = FILTER_SCALE,
    max_length: int = 32,
) -> Safree:
    """SAFREE for one concept: its subspace from the states `encode` gives (the prompt embeddings a generator
    reads, `[n, max_length, width]`) at each keyword's tokens in the `target` prompts that contain it."""
    import torch

    keywords = [k for k in keywords if k.strip()]
    if not keywords or not target:
        raise ClearSaeError("SAFREE needs the concept's words and target prompts that contain them")
    ids = tokenizer(target, padding="max_length", max_length=max_length, truncation=True)["input_ids"]
    with torch.no_grad():
        states = encode(target)
    return Safree(concept_subspace(keyword_states(tokenizer, keywords, ids, states)), alpha, filter_scale)


def keyword_states(
    tokenizer: Any, keywords: list[str], ids: list[list[int]], states: "torch.Tensor"
) -> "list[torch.Tensor]":
    """For each keyword found in the prompts (token `ids`, their `states` `[n, positions, width]`), the mean state
    of its tokens over the prompts that contain it."""
    import torch

    word_states = []
    for word in keywords:
        word_ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        found = [
            states[i, positions].mean(0)
            for i, prompt_ids in enumerate(ids)
            if (positions := word_token_positions(list(prompt_ids), word_ids))
        ]
        if found:
            word_states.append(torch.stack(found).mean(0))
    return word_states


def build_safree_at(
    backbone: "Backbone",
    hook: str,
    keywords: list[str],
    target: list[str],
    alpha: float = ALPHA,
    filter_scale: float = FILTER_SCALE,
) -> Safree:
    """SAFREE for one concept at `hook` of `backbone`'s text encoder (for a `SafreeHook` there): its subspace from
    the keywords' states at that hook point in the `target` prompts."""
    return build_safree(
        backbone.tokenizer_for(hook),
        lambda p: backbone.run(p, [hook])[hook].acts,
        keywords,
        target,
        alpha,
        filter_scale,
    )


def safree_separations(
    backbone: "Backbone", hooks: list[str], keywords: list[str], target: list[str], nontarget: list[str]
) -> dict[str, float]:
    """How well SAFREE's concept subspace at each hook tells the prompts apart, with no generator: per prompt, the
    largest share of a word token's norm inside the subspace (the start and end markers aside); the gap between the
    target and non-target prompts' means over their pooled standard deviation. Each prompt set is encoded once, for
    all hooks together."""
    import torch

    keywords = [k for k in keywords if k.strip()]
    if not keywords or not target or not nontarget:
        raise ClearSaeError("SAFREE needs the concept's words, target prompts that contain them and non-target prompts")
    t_out, n_out = backbone.run(target, hooks), backbone.run(nontarget, hooks)
    scores = {}
    for hook in hooks:
        tokenizer = backbone.tokenizer_for(hook)
        t_ids = [tokenizer(p)["input_ids"] for p in target]
        basis = concept_subspace(keyword_states(tokenizer, keywords, t_ids, t_out[hook].acts.float()))

        def largest_share(acts: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
            words = mask.clone()
            words[:, 0] = False  # the start marker
            words[torch.arange(len(mask)), mask.sum(1) - 1] = False  # the end marker
            share = (acts.float() @ basis).norm(dim=-1) / acts.float().norm(dim=-1).clamp_min(1e-12)
            return share.masked_fill(~words, float("-inf")).max(-1).values

        t = largest_share(t_out[hook].acts, t_out[hook].mask.bool())
        n = largest_share(n_out[hook].acts, n_out[hook].mask.bool())
        spread = float(torch.sqrt((t.var() + n.var()) / 2).clamp_min(1e-12))
        scores[hook] = float(t.mean() - n.mean()) / spread
    return scores
