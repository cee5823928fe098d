"""Latent-clamp erasure at inference: a forward hook at a concept's hook point, no weight touched.

At the hook point, `h' = h - gamma * W_dec (f(h) * m)` with f the SAE encoder and m the concept's
latent mask. The SAE's reconstruction error stays in h' (only the concept latents' decoded
contribution is removed), so a token on which no concept latent fires passes through bit for bit.

That one decoder step is the paper's formula, but re-encoding h' usually still shows the concept
latents firing, since an encoder row is not the inverse of its decoder column (on the dictionaries
shipped before clear_sae had its own trainer, one step removed only 13-49% of the concept activation).
With `exact=True` (the default) the clamp then also removes the smallest component along the concept latents' encoder
directions that puts their pre-activations just below zero, so the SAE reads exactly zero concept
activation at that layer. This applies to latents erased at full strength (gamma >= 1); weaker
strengths keep the single step, as does `exact=False`.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from clear_sae.backbones import attention_mask_of, encoder_of, first_tensor, hook_module, replace_first_tensor
from clear_sae.config import check_value
from clear_sae.dictionary import Dictionaries
from clear_sae.errors import ClearSaeError, ErasureNotAppliedWarning
from clear_sae.library import check_learned_on

if TYPE_CHECKING:
    import torch
    from sae_lens import SAE

    from clear_sae.library import ConceptEntry, ConceptLibrary

MARGIN = 1e-3
"""How far below zero the exact clamp puts a concept latent's pre-activation."""
GUARD_ROUNDS = 3
"""Corrections at most (one suffices unless the concept latents' encoder rows are linearly dependent)."""


def _linear_preacts(sae: "SAE") -> bool:
    """Whether the SAE's pre-activations are `(x - b_dec) W_enc + b_enc` (TopK, standard, JumpReLU)."""
    import torch

    return (
        isinstance(getattr(sae, "b_enc", None), torch.Tensor)
        and getattr(sae.cfg, "normalize_activations", "none") == "none"
        and getattr(sae.cfg, "reshape_activations", "none") == "none"
    )


class ReadsMask:
    """A forward hook that `attach` shows the attention mask of each call of the text encoder it sits in (`mask`),
    so that it can leave padding positions alone."""

    mask: "torch.Tensor | None" = None

    def read_mask(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        """Forward pre-hook on the text encoder: remember the attention mask of the call."""
        self.mask = attention_mask_of(args, kwargs)

    def forget_mask(self, module: Any, args: Any, output: Any) -> None:
        """Forward hook on the text encoder: the call is over."""
        self.mask = None


class LatentClamp(ReadsMask):
    """A forward hook that removes the chosen SAE latents from a residual stream."""

    def __init__(
        self, sae: "SAE", latents: list[int], strengths: list[float] | float = 1.0, exact: bool = True
    ) -> None:
        import torch

        if not latents:
            raise ClearSaeError(
                "a latent clamp needs at least one latent id, and this concept's entry lists none; "
                "relearn it with `clear-sae concept`"
            )
        d_sae = int(sae.cfg.d_sae)
        bad = [i for i in latents if not 0 <= int(i) < d_sae]
        if bad:
            raise ClearSaeError(
                f"latent id {bad[0]} is out of range for a dictionary of {d_sae} latents; the library "
                "entry does not match this dictionary: rebuild it with `clear-sae concept`"
            )
        self.sae = sae
        self.latents = torch.tensor([int(i) for i in latents], dtype=torch.long)
        gammas = [float(strengths)] * len(latents) if isinstance(strengths, float | int) else list(strengths)
        for gamma in gammas:
            try:
                check_value(gamma, "strength")
            except ClearSaeError as err:
                raise ClearSaeError(f"clamp strength {err}; pass a strength such as 1") from None
        self.gamma = torch.tensor(gammas, dtype=torch.float32)
        self.exact = exact and _linear_preacts(sae) and bool((self.gamma >= 1.0).any())
        self.tokens_seen = 0
        self.tokens_edited = 0
        self.mask: "torch.Tensor | None" = None
        """The attention mask of the forward pass under way (set by `attach` from the encoder's call): padding
        positions are never edited. None where the model takes no mask, and every position is then edited."""
        with torch.no_grad():
            self._w_dec = sae.W_dec[self.latents].float()
            if self.exact:
                scale = torch.ones(len(latents))
                if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
                    scale = sae.W_dec[self.latents].norm(dim=-1).float()
                # Pre-activation of the concept latents = h @ enc.T + offset (a linear map of h).
                self._enc = sae.W_enc[:, self.latents].T.float() * scale[:, None]
                b_dec = sae.b_dec.float() * float(getattr(sae.cfg, "apply_b_dec_to_input", True))
                # sae-lens's base SAE does not declare b_enc (each architecture registers it).
                b_enc = sae.b_enc[self.latents]  # pyright: ignore[reportIndexIssue]
                self._offset = b_enc.float() * scale - (self._enc @ b_dec)
                self._enc_pinv = torch.linalg.pinv(self._enc)
                self._hard = self.gamma >= 1.0

    def _follow(self, device: "torch.device") -> None:
        """Move the SAE and the clamp's tensors to the device of the model being edited (once)."""
        if self._w_dec.device == device:
            return
        self.sae.to(device)
        for name in ("latents", "gamma", "_w_dec", "_enc", "_offset", "_enc_pinv", "_hard"):
            if hasattr(self, name):
                setattr(self, name, getattr(self, name).to(device))

    def concept_codes(self, h: "torch.Tensor") -> "torch.Tensor":
        """The concept latents' activations `[..., n_latents]` for residual-stream rows `h`."""
        import torch

        self._follow(h.device)
        with torch.no_grad():
            codes = self.sae.encode(h.float())
        return codes[..., self.latents]

    def _push_below_zero(self, rows: "torch.Tensor") -> "torch.Tensor":
        """Minimal-norm change of `rows` that puts every full-strength concept pre-activation at -MARGIN or below."""
        for _ in range(GUARD_ROUNDS):
            excess = ((rows @ self._enc.T + self._offset) + MARGIN).clamp_min(0) * self._hard
            if not bool((excess > 0).any()):
                break
            rows = rows - excess @ self._enc_pinv.T
        return rows

    def edit(self, h: "torch.Tensor") -> "torch.Tensor | None":
        """`h` with the concept removed, or None when no concept latent fires on any token."""
        import torch

        width = h.shape[-1]
        if width != self._w_dec.shape[-1]:
            raise ClearSaeError(
                f"dimension mismatch: the dictionary reads width {self._w_dec.shape[-1]}, the hooked "
                f"module gives {width}; erase with the model the concept was learned on"
            )
        flat = h.reshape(-1, width)
        real = self._real_positions(h)
        self.tokens_seen += flat.shape[0] if real is None else int(real.sum())
        with torch.no_grad():  # not inference_mode: the edited tensor may flow on into a graph
            codes = self.concept_codes(flat)
            fired = (codes > 0).any(-1)
            rows = torch.nonzero(fired if real is None else fired & real).squeeze(-1)
            if rows.numel() == 0:
                return None
            self.tokens_edited += rows.numel()
            edited = flat[rows].float() - (codes[rows] * self.gamma) @ self._w_dec
            if self.exact:
                edited = self._push_below_zero(edited)
            if bool((~edited.isfinite().all(-1) & flat[rows].isfinite().all(-1)).any()):
                raise ClearSaeError(
                    "the clamp turned finite activations into NaN or infinity (a strength too large for this "
                    "dictionary, or a dictionary with extreme weights); lower the strength or retrain the layer"
                )
            out = flat.clone()
            out[rows] = edited.to(h.dtype)
        return out.reshape(h.shape)

    def _real_positions(self, h: "torch.Tensor") -> "torch.Tensor | None":
        """Per row of `h` flattened, whether it is a real token (None: no mask, or one of another shape)."""
        if self.mask is None or tuple(self.mask.shape) != tuple(h.shape[:-1]):
            return None
        return self.mask.reshape(-1).to(h.device).bool()

    def __call__(self, module: Any, inputs: Any, output: Any) -> Any:
        new = self.edit(first_tensor(output))
        return None if new is None else replace_first_tensor(output, new)


class LatentBoost(LatentClamp):
    """A forward hook that sets the chosen SAE latents to `value` on every real token: the clamp's opposite, to see
    what a latent writes (its decoder direction added where it was quiet, raised where it was weaker)."""

    def __init__(self, sae: "SAE", latents: list[int], value: float) -> None:
        super().__init__(sae, latents, 1.0, exact=False)
        try:
            self.value = float(check_value(value, "at_least_zero"))
        except ClearSaeError as err:
            raise ClearSaeError(f"boost value {err}; pass a latent activation such as its maximum") from None

    def edit(self, h: "torch.Tensor") -> "torch.Tensor | None":
        """`h` with each chosen latent's activation set to `value` on every real token."""
        import torch

        if h.shape[-1] != self._w_dec.shape[-1]:
            raise ClearSaeError(
                f"dimension mismatch: the dictionary reads width {self._w_dec.shape[-1]}, the hooked module gives "
                f"{h.shape[-1]}; boost with the model the dictionary was trained on"
            )
        flat = h.reshape(-1, h.shape[-1])
        real = self._real_positions(h)
        rows = torch.arange(flat.shape[0], device=h.device) if real is None else torch.nonzero(real).squeeze(-1)
        self.tokens_seen += rows.numel()
        self.tokens_edited += rows.numel()
        with torch.no_grad():
            codes = self.concept_codes(flat[rows])
            out = flat.clone()
            out[rows] = (flat[rows].float() + (self.value - codes) @ self._w_dec).to(h.dtype)
        return out.reshape(h.shape)


@dataclass
class ConceptClamp:
    """A library entry resolved to its SAE: what `attach` needs for one concept."""

    entry: "ConceptEntry"
    sae: "SAE"


def merge_clamps(concepts: list[ConceptClamp], exact: bool = True) -> dict[str, LatentClamp]:
    """One clamp per hook point; concepts sharing a hook point and dictionary have their latents merged."""
    by_hook: dict[str, list[ConceptClamp]] = {}
    for concept in concepts:
        by_hook.setdefault(concept.entry.hook_point, []).append(concept)
    clamps = {}
    for hook, group in by_hook.items():
        if len({id(c.sae) for c in group}) > 1:
            raise ClearSaeError(
                f"concepts {', '.join(c.entry.name for c in group)} use different dictionaries "
                f"at {hook}; erase them in separate runs or rebuild them on one dictionary"
            )
        strengths: dict[int, float] = {}
        for c in group:
            for latent in c.entry.latents:
                strengths[latent] = max(strengths.get(latent, 0.0), float(c.entry.strength))
        latents = sorted(strengths)
        clamps[hook] = LatentClamp(group[0].sae, latents, [strengths[i] for i in latents], exact)
    return clamps


@contextmanager
def attach(target: Any, clamps: dict[str, LatentClamp]) -> Iterator[dict[str, LatentClamp]]:
    """Register each clamp at its hook point on `target` (backbone, pipeline, text encoder or
    HookedTransformer), and on the text encoder a hook that shows a clamp that `ReadsMask` (a `LatentClamp`,
    SAFREE's layer hook) the call's attention mask (so padding positions are never edited; the other baselines'
    edits keep their published form); remove every hook on exit, also on error."""
    handles = []
    try:
        for hook, clamp in clamps.items():
            # First among the module's hooks: transformers records `hidden_states` with forward hooks of its own,
            # installed at a model's first call, and a pipeline that reads one (SD3, HunyuanVideo) must read it
            # clamped whichever hook came first.
            handles.append(hook_module(target, hook).register_forward_hook(clamp, prepend=True))
            encoder = encoder_of(target, hook) if isinstance(clamp, ReadsMask) else None
            if encoder is not None:  # padding positions are left alone where the encoder's call says which they are
                handles.append(encoder.register_forward_pre_hook(clamp.read_mask, with_kwargs=True))
                handles.append(encoder.register_forward_hook(clamp.forget_mask, always_call=True))
        yield clamps
    finally:
        for handle in handles:
            handle.remove()


def resolve_concepts(library: "ConceptLibrary", names: list[str]) -> list[ConceptClamp]:
    """Load the SAE behind each named concept, or behind each of its per-encoder parts (dictionaries shared between
    concepts are loaded once)."""
    if not names:
        raise ClearSaeError("no concept to erase; name at least one with --concept")
    loaded: dict[str, Dictionaries] = {}
    resolved = []
    for entry in [part for name in names for part in library.parts(name)]:
        folder = library.dictionary_path(entry)
        key = str(folder)
        if key not in loaded:
            loaded[key] = Dictionaries(folder)
        check_learned_on(entry, loaded[key])
        resolved.append(ConceptClamp(entry, loaded[key].sae(entry.hook_point)))
    return resolved


@contextmanager
def erase_concepts(
    target: Any, library: "ConceptLibrary", names: list[str], exact: bool = True, strict: bool = False
) -> Iterator[dict[str, LatentClamp]]:
    """Erase the named concepts of `library` from `target` while the context is open.

    Erasure acts where the text is encoded, so a context in which the text encoder never ran (a pipeline called
    with precomputed `prompt_embeds`) erases nothing: leaving it then warns with `ErasureNotAppliedWarning`, or
    raises `ClearSaeError` with `strict=True`."""
    clamps = merge_clamps(resolve_concepts(library, names), exact)
    with attach(target, clamps) as attached:
        yield attached
    check_clamps_ran(attached, strict)


def check_clamps_ran(clamps: dict[str, LatentClamp], strict: bool = False) -> None:
    """Warn (or with `strict` raise) when a clamp saw no token: its hook point never ran while it was attached."""
    idle = [hook for hook, clamp in clamps.items() if clamp.tokens_seen == 0]
    if not idle:
        return
    message = (
        f"erasure had no effect: no text passed through {', '.join(idle)} while the concepts were attached "
        "(was the pipeline given precomputed prompt_embeds?); encode the prompt inside the erase_concepts "
        "context, e.g. with pipe.encode_prompt, and pass those embeddings on"
    )
    if strict:
        raise ClearSaeError(message)
    warnings.warn(message, ErasureNotAppliedWarning, stacklevel=4)


def concept_clamps(library: "ConceptLibrary", entry: Any, exact: bool = True) -> dict[str, Any]:
    """The clamp of one library entry (possibly edited: another layer, other latents) on its dictionary."""

    dictionaries = Dictionaries(library.dictionary_path(entry))
    check_learned_on(library.concepts.get(entry.name) or entry, dictionaries)  # the entry as learned, not the edit
    return merge_clamps([ConceptClamp(entry, dictionaries.sae(entry.hook_point))], exact)
