"""The one exception type the CLI turns into a one-line message, the finite-value checks that raise it, and the
CLI's record of an interrupt."""

from typing import Any

import numpy as np


class ClearSaeError(Exception):
    """A problem with the user's input: the message says what is wrong and how to fix it."""


class NoConceptLatentsError(ClearSaeError):
    """No candidate layer has latents specific to the concept (a per-encoder learning skips such an encoder)."""


class ErasureNotAppliedWarning(UserWarning):
    """An erasure context closed without its clamps seeing a token: nothing was erased."""


def all_finite(values: Any) -> bool:
    """Whether a torch tensor or numpy array holds no NaN and no infinity."""
    if hasattr(values, "isfinite"):  # a torch tensor
        return bool(values.isfinite().all())
    return bool(np.isfinite(values).all())


def check_finite(values: Any, what: str, fix: str) -> None:
    """Raise a one-line error if `values` (a tensor or array) holds NaN or infinity: `what` holds them; `fix`."""
    if not all_finite(values):
        raise ClearSaeError(f"{what} holds NaN or infinite values; {fix}")


_interrupt_requested = False


def request_interrupt(signum: int, frame: Any) -> None:
    """Signal handler of the CLI (Ctrl-C, SIGTERM): remember the request, then raise KeyboardInterrupt."""
    global _interrupt_requested
    _interrupt_requested = True
    raise KeyboardInterrupt


def clear_interrupt() -> None:
    """Forget an earlier interrupt (the CLI calls this as it starts a command)."""
    global _interrupt_requested
    _interrupt_requested = False


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if an interrupt was requested.

    Long loops call this once per batch: a KeyboardInterrupt raised while C code is running Python callbacks
    can be swallowed on its way out, and the loop would otherwise carry on to the end.
    """
    if _interrupt_requested:
        raise KeyboardInterrupt
