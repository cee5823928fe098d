"""Procedural clips: one or two coloured shapes moving over a background, seeded and fast (numpy only).

A clip is `uint8 [frames, height, width, 3]`. Shapes are drawn large (radius 8 px on 32x32 by
default) and differ grossly, so that a tiny generator can learn them and a small detector can tell
them apart; backgrounds double as a "style". Every motion is visible for every shape (a spin would
not be, for a circle), so motion can be detected from any clip.

An attribute a caption leaves out is drawn with its neutral value (`NEUTRAL`): a grey object, a square,
standing still. None of these is a concept or a detector class, so "no colour named" renders as the
absence of every colour concept rather than as some colour of the generator's choosing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

SHAPES = ("circle", "bar", "triangle", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
}
MOTIONS = ("left", "right", "rise", "fall", "grow", "shrink")
NEUTRAL: dict[str, str] = {"colour": "grey", "shape": "square", "motion": "still"}
"""What each axis shows when the caption does not name it."""
NEUTRAL_RGB = (165, 165, 165)
BACKGROUNDS = ("plain", "checker", "gradient")


@dataclass(frozen=True)
class ToyObject:
    """One moving shape."""

    shape: str
    colour: str
    motion: str


@dataclass(frozen=True)
class ClipSpec:
    """What a clip shows: one main object, optionally a second one, over a background."""

    main: ToyObject
    background: str = "plain"
    second: ToyObject | None = None


@dataclass(frozen=True)
class RenderConfig:
    """Clip geometry."""

    frames: int = 8
    size: int = 32
    radius: float = 8.0
    noise: float = 4.0
    """Standard deviation of per-pixel noise, in 0-255 units (0 for exact renders)."""


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(coords, coords, indexing="xy")


def shape_mask(shape: str, size: int, cx: float, cy: float, radius: float, angle: float = 0.0) -> np.ndarray:
    """Boolean `[size, size]` mask of a shape centred at (cx, cy), rotated by `angle` radians."""
    xs, ys = _grid(size)
    dx, dy = xs - cx, ys - cy
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # coordinates in the shape's own frame
    r = radius
    if shape == "circle":
        return u * u + v * v <= r * r
    if shape == "bar":  # a wide horizontal bar: its aspect ratio sets it apart from every other shape
        return (np.abs(u) <= r) & (np.abs(v) <= 0.36 * r)
    if shape == "triangle":  # pointing up, centroid at the centre
        top, bottom = -r, 0.6 * r
        inside_height = (v >= top) & (v <= bottom)
        half_width = (v - top) / (bottom - top) * r
        return inside_height & (np.abs(u) <= half_width)
    if shape == "square":  # the neutral shape: of an area between the bar's and the circle's
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if shape == "cross":  # a diagonal cross (an X), so it shares no arm with the horizontal bar
        a, b = (u + v) / np.sqrt(2), (u - v) / np.sqrt(2)
        arm, reach = 0.22 * r, 1.1 * r
        return ((np.abs(a) <= arm) & (np.abs(b) <= reach)) | ((np.abs(b) <= arm) & (np.abs(a) <= reach))
    raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)} (or the neutral square)")


def _background(kind: str, cfg: RenderConfig) -> np.ndarray:
    xs, ys = _grid(cfg.size)
    if kind == "plain":
        img = np.full((cfg.size, cfg.size, 3), 24.0, dtype=np.float32)
    elif kind == "checker":
        cells = ((xs // 4 + ys // 4) % 2)[..., None]
        img = np.where(cells > 0, 70.0, 25.0).astype(np.float32) * np.ones(3, dtype=np.float32)
    elif kind == "gradient":
        t = (ys / cfg.size)[..., None]
        img = (1 - t) * np.array([40, 30, 90], np.float32) + t * np.array([120, 60, 40], np.float32)
    else:
        raise ValueError(f"unknown background {kind!r}; choose from {', '.join(BACKGROUNDS)}")
    return img


def trajectory(
    motion: str, cfg: RenderConfig, frame: int, start: tuple[float, float] | None = None
) -> tuple[float, float, float, float]:
    """(cx, cy, radius, angle) of an object at `frame` for a motion; `start` offsets the resting position."""
    n = max(cfg.frames - 1, 1)
    t = frame / n
    mid = cfg.size / 2
    travel = cfg.size - 2 * cfg.radius - 2
    ox, oy = start if start is not None else (mid, mid)
    if motion == "left":
        return mid + travel / 2 - travel * t, oy, cfg.radius, 0.0
    if motion == "right":
        return mid - travel / 2 + travel * t, oy, cfg.radius, 0.0
    if motion == "rise":
        return ox, mid + travel / 2 - travel * t, cfg.radius, 0.0
    if motion == "fall":
        return ox, mid - travel / 2 + travel * t, cfg.radius, 0.0
    if motion == "grow":
        return ox, oy, cfg.radius * (0.45 + 0.75 * t), 0.0
    if motion == "shrink":
        return ox, oy, cfg.radius * (1.2 - 0.75 * t), 0.0
    if motion == "still":
        return ox, oy, cfg.radius, 0.0
    raise ValueError(f"unknown motion {motion!r}; choose from {', '.join(MOTIONS)} (or the neutral still)")


def render_clip(spec: ClipSpec, cfg: RenderConfig = RenderConfig(), seed: int = 0) -> np.ndarray:
    """Render `spec` as `uint8 [frames, size, size, 3]`; the seed drives the noise and colour jitter."""
    rng = np.random.default_rng(seed)
    background = _background(spec.background, cfg)
    objects = [spec.main] + ([spec.second] if spec.second is not None else [])
    # With two objects, each keeps to its own half of the frame across the motion's free axis.
    if len(objects) == 1:
        starts = [None]
    else:
        q = cfg.size / 4
        starts = [(q + 1, q + 1), (3 * q - 1, 3 * q - 1)]
    jitter = [rng.normal(0, 8, size=3) for _ in objects]
    frames = np.empty((cfg.frames, cfg.size, cfg.size, 3), dtype=np.uint8)
    for f in range(cfg.frames):
        img = background.copy()
        for obj, start, jit in zip(objects, starts, jitter):
            radius_cfg = cfg if len(objects) == 1 else replace(cfg, radius=cfg.radius * 0.75)
            cx, cy, radius, angle = trajectory(obj.motion, radius_cfg, f, start)
            mask = shape_mask(obj.shape, cfg.size, cx, cy, radius, angle)
            rgb = NEUTRAL_RGB if obj.colour == NEUTRAL["colour"] else COLOURS[obj.colour]
            img[mask] = np.clip(np.array(rgb, np.float32) + jit, 0, 255)
        if cfg.noise > 0:
            img = img + rng.normal(0, cfg.noise, size=img.shape).astype(np.float32)
        frames[f] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def random_spec(rng: np.random.Generator, second_object_rate: float = 0.25, neutral_rate: float = 0.0) -> ClipSpec:
    """A clip drawn uniformly over shapes, colours, motions and backgrounds (sometimes two objects).

    Each attribute of each object is left unnamed, i.e. neutral, with probability `neutral_rate`; at 0 the
    random stream is exactly that of a world without neutral values.
    """

    def obj() -> ToyObject:
        drawn = ToyObject(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(MOTIONS)))
        if neutral_rate <= 0:
            return drawn
        return replace(drawn, **{axis: value for axis, value in NEUTRAL.items() if rng.random() < neutral_rate})

    main = obj()
    second = None
    if rng.random() < second_object_rate:
        second = obj()
        while second.shape == main.shape and second.colour == main.colour:
            second = obj()
    return ClipSpec(main=main, background=str(rng.choice(BACKGROUNDS)), second=second)


def random_clips(
    rng: np.random.Generator,
    n: int,
    cfg: RenderConfig = RenderConfig(),
    second_object_rate: float = 0.25,
    neutral_rate: float = 0.0,
) -> tuple[list[ClipSpec], np.ndarray]:
    """`n` random specs and their clips, uint8 `[n, frames, size, size, 3]`, each with its own noise seed."""
    specs = [random_spec(rng, second_object_rate, neutral_rate) for _ in range(n)]
    return specs, np.stack([render_clip(s, cfg, seed=int(rng.integers(1 << 31))) for s in specs])
