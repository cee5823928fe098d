"""Training checkpoints: one safetensors file per layer holding the trainer's whole state, written atomically.

The file's tensors are the SAE's parameters, the optimiser's moments and the dead-latent counters; its metadata
(safetensors' string map) holds one JSON record: the step reached and what the run was (configuration, cache,
hook point), so that a resumed run refuses a checkpoint of another run instead of continuing it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_save_tensors

if TYPE_CHECKING:
    import torch

RECORD = "clear_sae.checkpoint"
"""The metadata key of the checkpoint's JSON record."""


def save_checkpoint(path: str | Path, tensors: dict[str, "torch.Tensor"], record: dict[str, Any]) -> None:
    """Write `tensors` and `record` to `path` through a temporary file, so a kill at any moment leaves the previous
    checkpoint or the new one, never half of one."""
    atomic_save_tensors(path, tensors, {RECORD: json.dumps(record)})


def load_checkpoint(path: str | Path) -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
    """The tensors and record of the checkpoint at `path`; a file that is not one is a one-line error."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            record = json.loads((f.metadata() or {})[RECORD])
            tensors = {name: f.get_tensor(name) for name in f.keys()}
            int(tensors["steps"])
    except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as err:
        raise ClearSaeError(
            f"{path} is not a readable training checkpoint ({type(err).__name__}); delete it to train that layer "
            "from the start"
        ) from None
    return tensors, record


def check_same_run(path: str | Path, record: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raise a one-line error when the checkpoint at `path` was written by another run than `expected` describes
    (each key of `expected` must hold the same value in its `record`)."""
    for key, value in expected.items():
        if record.get(key) != value:
            raise ClearSaeError(
                f"cannot resume from {path}: it was written with another {key} ({record.get(key)!r}, this run has "
                f"{value!r}); rerun with the arguments it was started with, or pass --force to start over"
            )
