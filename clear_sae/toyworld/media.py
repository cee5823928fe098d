"""Clips as pictures people can look at: a PNG strip (one row per clip) and an animated GIF."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def clip_row(clip: np.ndarray, gap: int = 1) -> np.ndarray:
    """The frames of one uint8 `[frames, h, w, 3]` clip side by side, separated by `gap` white pixels."""
    frames, h, w, _ = clip.shape
    row = np.full((h, frames * (w + gap) - gap, 3), 255, np.uint8)
    for f in range(frames):
        row[:, f * (w + gap) : f * (w + gap) + w] = clip[f]
    return row


def fit_lines(text: str, width: int, max_lines: int, measure: Callable[[str], float]) -> list[str]:
    """`text` wrapped at word boundaries into lines no wider than `width` (as `measure` reads a line), each
    newline starting a new line; past `max_lines`, the last line kept ends in "..." (a word longer than a line
    is cut too)."""

    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            wider = f"{line} {word}" if line else word
            if measure(wider) <= width:
                line = wider
                continue
            if line:
                lines.append(line)
            line = word
        lines.append(line)
    lines = [_cut(line, width, measure) for line in lines]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _cut(lines[-1] + " ...", width, measure, always=True)
    return lines


def _cut(line: str, width: int, measure: Callable[[str], float], always: bool = False) -> str:
    """`line` as it fits in `width`: whole, or shortened to end in "..." (always so with `always`)."""
    if measure(line) <= width and not always:
        return line
    body = line.removesuffix(" ...")
    while body and measure(body + "...") > width:
        body = body[:-1]
    return body.rstrip() + "..."


def save_strip(
    clips: list[np.ndarray],
    path: str | Path,
    scale: int = 3,
    gap: int = 2,
    labels: list[str] | None = None,
    label_width: int = 240,
) -> Path:
    """Stack the clips' frame rows into one PNG, upscaled `scale` times with nearest-neighbour pixels. With
    `labels` (one per clip; a newline starts a new line), a column `label_width` pixels wide on the left
    carries each row's label in PIL's default font, wrapped and cut to fit the row; the clips' pixels are
    those of the bare strip, shifted right by the column."""
    from PIL import Image, ImageDraw, ImageFont

    rows = [clip_row(c) for c in clips]
    width = max(r.shape[1] for r in rows)
    sheet = np.full((sum(r.shape[0] + gap for r in rows) - gap, width, 3), 255, np.uint8)
    tops = []
    y = 0
    for r in rows:
        sheet[y : y + r.shape[0], : r.shape[1]] = r
        tops.append(y)
        y += r.shape[0] + gap
    image = Image.fromarray(sheet)
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    if labels is not None:
        if len(labels) != len(clips):
            raise ValueError(f"{len(labels)} labels for {len(clips)} clips")
        framed = Image.new("RGB", (label_width + image.width, image.height), (255, 255, 255))
        framed.paste(image, (label_width, 0))
        draw = ImageDraw.Draw(framed)
        font = ImageFont.load_default()
        line_height = int(draw.textbbox((0, 0), "Ag", font=font)[3]) + 2
        pad = 4
        for top, r, label in zip(tops, rows, labels):
            height = r.shape[0] * scale
            lines = fit_lines(
                label, label_width - 2 * pad, max(1, (height - pad) // line_height), lambda t: draw.textlength(t, font)
            )
            for k, line in enumerate(lines):
                colour = (29, 35, 48) if k == 0 else (85, 93, 110)
                draw.text((pad, top * scale + pad + k * line_height), line, fill=colour, font=font)
        image = framed
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
        frames.append(image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST))
    path = Path(path)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return path
