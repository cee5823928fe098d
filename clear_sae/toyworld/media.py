"""Clips as pictures people can look at: a PNG strip (one row per clip) and an animated GIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def clip_row(clip: np.ndarray, gap: int = 1) -> np.ndarray:
    """The frames of one uint8 `[frames, h, w, 3]` clip side by side, separated by `gap` white pixels."""
    frames, h, w, _ = clip.shape
    row = np.full((h, frames * (w + gap) - gap, 3), 255, np.uint8)
    for f in range(frames):
        row[:, f * (w + gap) : f * (w + gap) + w] = clip[f]
    return row


def save_strip(clips: list[np.ndarray], path: str | Path, scale: int = 3, gap: int = 2) -> Path:
    """Stack the clips' frame rows into one PNG, upscaled `scale` times with nearest-neighbour pixels."""
    from PIL import Image

    rows = [clip_row(c) for c in clips]
    width = max(r.shape[1] for r in rows)
    sheet = np.full((sum(r.shape[0] + gap for r in rows) - gap, width, 3), 255, np.uint8)
    y = 0
    for r in rows:
        sheet[y : y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + gap
    image = Image.fromarray(sheet)
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    path = Path(path)
    image.save(path)
    return path


def save_gif(clips: list[np.ndarray], path: str | Path, scale: int = 4, frame_ms: int = 150) -> Path:
    """One looping GIF showing the clips side by side (e.g. before and after erasure)."""
    from PIL import Image

    frames = []
    for f in range(clips[0].shape[0]):
        tile = np.concatenate([np.pad(c[f], ((0, 0), (0, 2), (0, 0)), constant_values=255) for c in clips], axis=1)
        image = Image.fromarray(tile)
        frames.append(image.resize((image.width * scale, image.height * scale), Image.NEAREST))
    path = Path(path)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return path
