"""A second judge for the toy world that shares nothing with the learned detector: rules on the renderer's geometry.

The detector (`detector.py`) is a network trained on renders; calibration reads its verdicts, so a rate it reports
after calibration may be tuned to it. This judge learns nothing. Per frame it finds the objects as bright
connected regions (every object colour, grey included, is brighter than every background), names each region's
colour as the nearest object colour to its mean, and its shape as the template (`render.shape_mask`, scaled to the
region's area, placed at its centroid) that overlaps it best. Per clip it follows each region from the first
frame to the last and names its motion from how far its centroid travelled and how its area changed. It returns
the detector's `Detections` (each probability 0 or 1), so every rate can be read from both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import cast

import numpy as np

from clear_sae.toyworld.detector import COLOUR_NAMES, Detections, exact_match
from clear_sae.toyworld.render import COLOURS, MOTIONS, NEUTRAL_RGB, SHAPES, RenderConfig, random_clips, shape_mask


@dataclass(frozen=True)
class GeometryConfig:
    """The thresholds of the rules, in the renderer's units."""

    brightness: float = 140.0
    """A pixel belongs to an object when its brightest channel reaches this (backgrounds stay below 125)."""
    min_area: int = 6
    """Regions smaller than this many pixels are noise."""
    max_colour_distance: float = 70.0
    """A region whose mean colour lies further than this (RGB) from every object colour has no colour."""
    min_overlap: float = 0.5
    """A region overlapping its best template less than this (intersection over union) has no shape."""
    travel: float = 4.0
    """Pixels the centroid must travel, first frames to last, for a left, right, rise or fall."""
    growth: float = 1.8
    """Area ratio, last frames to first, for a grow (its inverse for a shrink)."""


@dataclass(frozen=True)
class Region:
    """One object's pixels in one frame."""

    mask: np.ndarray
    cx: float
    cy: float
    area: int
    rgb: np.ndarray


def regions(frame: np.ndarray, cfg: GeometryConfig = GeometryConfig()) -> list[Region]:
    """The objects of a `[size, size, 3]` uint8 frame, largest first."""
    from scipy import ndimage

    bright = frame.max(-1) >= cfg.brightness
    labels, n = cast("tuple[np.ndarray, int]", ndimage.label(bright))
    found = []
    for index in range(1, n + 1):
        mask = labels == index
        area = int(mask.sum())
        if area < cfg.min_area:
            continue
        ys, xs = np.nonzero(mask)
        found.append(Region(mask, float(xs.mean()) + 0.5, float(ys.mean()) + 0.5, area, frame[mask].mean(0)))
    return sorted(found, key=lambda r: -r.area)


def colour_of(region: Region, cfg: GeometryConfig = GeometryConfig()) -> str | None:
    """The object colour nearest the region's mean colour; None for grey or a colour far from every one."""
    palette = {**COLOURS, "grey": NEUTRAL_RGB}
    name, distance = min(
        ((n, float(np.linalg.norm(region.rgb - np.array(c)))) for n, c in palette.items()), key=lambda x: x[1]
    )
    return None if name == "grey" or distance > cfg.max_colour_distance else name


@cache
def _unit_area(shape: str, size: int) -> float:
    """A shape's area in pixels per squared radius, measured on a large render."""
    radius = size / 3
    return float(shape_mask(shape, size, size / 2, size / 2, radius).sum()) / radius**2


def shape_of(region: Region, size: int, cfg: GeometryConfig = GeometryConfig()) -> str | None:
    """The shape whose template, scaled to the region's area and centred on its centroid, overlaps it best; None
    for the neutral square or an overlap below `min_overlap`."""
    best, best_overlap = None, 0.0
    for shape in (*SHAPES, "square"):
        radius = float(np.sqrt(region.area / _unit_area(shape, 96)))
        template = shape_mask(shape, size, region.cx, region.cy, radius)
        overlap = float((template & region.mask).sum()) / float((template | region.mask).sum())
        if overlap > best_overlap:
            best, best_overlap = shape, overlap
    return None if best == "square" or best_overlap < cfg.min_overlap else best


def motion_of(track: list[Region], cfg: GeometryConfig = GeometryConfig()) -> str | None:
    """The motion of one object followed across frames: the larger of its centroid's horizontal and vertical
    travel (first two frames to last two), else its change of area; None when it stands still."""
    if len(track) < 2:
        return None
    head, tail = track[: max(1, len(track) // 4)], track[-max(1, len(track) // 4) :]

    def mean(regions: list[Region], key: str) -> float:
        return float(np.mean([getattr(r, key) for r in regions]))

    dx, dy = mean(tail, "cx") - mean(head, "cx"), mean(tail, "cy") - mean(head, "cy")
    ratio = mean(tail, "area") / max(mean(head, "area"), 1.0)
    if max(abs(dx), abs(dy)) >= cfg.travel:
        if abs(dx) >= abs(dy):
            return "right" if dx > 0 else "left"
        return "fall" if dy > 0 else "rise"  # image rows grow downward
    if ratio >= cfg.growth:
        return "grow"
    if ratio <= 1 / cfg.growth:
        return "shrink"
    return None


def tracks(frames: list[list[Region]]) -> list[list[Region]]:
    """Each object of the first frame that has one, followed frame by frame to the nearest region."""
    found = []
    for start in frames[0] if frames else []:
        track = [start]
        for regions_now in frames[1:]:
            if regions_now:
                last = track[-1]
                track.append(min(regions_now, key=lambda r: (r.cx - last.cx) ** 2 + (r.cy - last.cy) ** 2))
        found.append(track)
    return found


def judge_clips(clips: np.ndarray, cfg: GeometryConfig = GeometryConfig()) -> Detections:
    """Rule-based `Detections` of uint8 `[n, frames, size, size, 3]` clips: 1 where a rule names a shape or colour
    in a frame, or a motion in a clip, else 0."""
    n, n_frames, size = clips.shape[0], clips.shape[1], clips.shape[2]
    shape = np.zeros((n, n_frames, len(SHAPES)), np.float32)
    colour = np.zeros((n, n_frames, len(COLOUR_NAMES)), np.float32)
    motion = np.zeros((n, len(MOTIONS)), np.float32)
    for i, clip in enumerate(clips):
        per_frame = [regions(frame, cfg) for frame in clip]
        for f, found in enumerate(per_frame):
            for region in found:
                named_colour, named_shape = colour_of(region, cfg), shape_of(region, size, cfg)
                if named_colour is not None:
                    colour[i, f, COLOUR_NAMES.index(named_colour)] = 1
                if named_shape is not None:
                    shape[i, f, SHAPES.index(named_shape)] = 1
        for track in tracks(per_frame):
            named_motion = motion_of(track, cfg)
            if named_motion is not None:
                motion[i, MOTIONS.index(named_motion)] = 1
    return Detections(shape, colour, motion)


def accuracy(
    n_clips: int = 300, seed: int = 4242, render: RenderConfig = RenderConfig(), second_object_rate: float = 0.3
) -> dict[str, float]:
    """Exact-match accuracy of the rules on freshly rendered clips, as `detector.accuracy` measures the network
    (the set of shapes and colours per frame, of motions per clip; neutral values must give the empty set)."""
    specs, clips = random_clips(np.random.default_rng(seed), n_clips, render, second_object_rate, 0.15)
    return exact_match(judge_clips(clips), specs)
