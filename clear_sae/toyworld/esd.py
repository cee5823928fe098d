"""A fine-tuning baseline for the toy generator: erasing a concept by changing its weights, after ESD (Gandikota et al.,
ICCV 2023).

ESD teaches a copy of the denoiser to answer the concept's prompt with what the frozen original predicts under
*negative* guidance away from it: for a noisy clip x at noise level t,

    student(x, t, concept) <- original(x, t, "") - eta * (original(x, t, concept) - original(x, t, ""))

so that sampling with the concept's prompt is steered away from the concept. Only the cross-attention layers (the
ones that read the text, `attn2`) are trained, as ESD-x does for a specific concept; everything else is the
original's. The toy generator predicts a flow-matching velocity rather than noise, so the same rule is applied to
its velocity. ESD takes its noisy inputs from the student's own partial sampling trajectories for the concept's
prompts; here they are clips the original sampled for those prompts, noised to a level drawn as the generator's
training draws it, which needs no sampling inside the loop.

`EsdTuner` trains in steps, so a ladder of step counts continues one run rather than starting again at each rung.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clear_sae.config import ABOVE_ZERO, AT_LEAST_ZERO, POSITIVE, check_fields
from clear_sae.errors import ClearSaeError
from clear_sae.toyworld.generator import as_model_input, with_coordinates
from clear_sae.toyworld.sampling import clip_noise, encode

if TYPE_CHECKING:
    import torch


@dataclass
class EsdConfig:
    """How the copy is trained."""

    negative_guidance: float = field(default=1.0, metadata=AT_LEAST_ZERO)
    """eta: how far the target is pushed away from the concept."""
    lr: float = field(default=1e-4, metadata=ABOVE_ZERO)
    batch_clips: int = field(default=8, metadata=POSITIVE)
    source_clips: int = field(default=32, metadata=POSITIVE)
    """Clips the original samples for the concept's prompts, the inputs that are noised at each step."""
    train_shift: float = field(default=3.0, metadata=ABOVE_ZERO)
    """Noise levels are drawn logit-normal and shifted, as the generator's own training draws them."""
    trained: str = "attn2"
    """Parameters whose name contains this are trained (the cross-attention)."""
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)


class EsdTuner:
    """Fine-tunes a copy of a toy pipeline's transformer away from a concept, continuing from step to step."""

    def __init__(
        self, pipe: Any, prompts: list[str], cfg: EsdConfig = EsdConfig(), steps: int = 6, guidance: float = 4.0
    ) -> None:
        """`prompts`: the concept's target prompts (the learning prompts); `steps` and `guidance`: how the source
        clips are sampled."""
        import torch

        if not prompts:
            raise ClearSaeError("ESD needs the concept's target prompts; pass at least one")
        self.cfg, self.original = cfg, pipe.transformer.eval()
        chosen = [prompts[i % len(prompts)] for i in range(cfg.source_clips)]
        self.cond, self.uncond = encode(pipe, chosen), encode(pipe, [""])
        clips = pipe(
            prompt_embeds=self.cond,
            negative_prompt_embeds=self.uncond.expand(len(chosen), -1, -1),
            latents=clip_noise([cfg.seed * 1_000_003 + i for i in range(len(chosen))]),
            num_inference_steps=steps,
            guidance_scale=guidance,
        )
        self.clips = torch.from_numpy(as_model_input(clips))
        self.student = copy.deepcopy(self.original)
        trained = []
        for name, parameter in self.student.named_parameters():
            parameter.requires_grad_(cfg.trained in name)
            if cfg.trained in name:
                trained.append(parameter)
        if not trained:
            raise ClearSaeError(f"no parameter of the transformer is named like {cfg.trained!r}; pick another")
        self.optimizer = torch.optim.Adam(trained, lr=cfg.lr)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.steps_done = 0

    def velocity(self, model: Any, x: "torch.Tensor", sigma: "torch.Tensor", context: "torch.Tensor") -> "torch.Tensor":
        """`model`'s velocity for noisy clips `x` at noise levels `sigma`."""
        return model(
            hidden_states=with_coordinates(model, x),
            timestep=sigma * 1000,
            encoder_hidden_states=context,
            return_dict=False,
        )[0]

    def step(self) -> float:
        """One optimizer step; returns its loss."""
        import torch

        cfg, g = self.cfg, self.generator
        rows = torch.randint(len(self.clips), (cfg.batch_clips,), generator=g)
        x, cond = self.clips[rows], self.cond[rows]
        u = torch.sigmoid(torch.randn(len(x), generator=g))
        sigma = cfg.train_shift * u / (1 + (cfg.train_shift - 1) * u)
        s = sigma.view(-1, 1, 1, 1, 1)
        noisy = (1 - s) * x + s * torch.randn(x.shape, generator=g)
        with torch.no_grad():
            v_cond = self.velocity(self.original, noisy, sigma, cond)
            v_uncond = self.velocity(self.original, noisy, sigma, self.uncond.expand(len(x), -1, -1))
            target = v_uncond - cfg.negative_guidance * (v_cond - v_uncond)
        self.student.train()
        loss = torch.nn.functional.mse_loss(self.velocity(self.student, noisy, sigma, cond), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps_done += 1
        return float(loss.detach())

    def train_to(self, steps: int) -> Any:
        """Continue to `steps` optimizer steps in all; returns a frozen copy of the transformer at that point."""
        if steps < self.steps_done:
            raise ClearSaeError(f"this run is already at {self.steps_done} steps; ask for {self.steps_done} or more")
        while self.steps_done < steps:
            self.step()
        return copy.deepcopy(self.student).eval().requires_grad_(False)
