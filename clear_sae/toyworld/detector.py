"""A small detector for the toy world: which shapes and colours are in each frame, which motions in a clip.

Multi-label (a clip may hold two objects): per frame, a sigmoid per shape and per colour; per clip, a
sigmoid per motion from the frames' features over time. An object's neutral values (grey, square, still)
have no class: the detector learns to report none of the axis's classes for them. Trained on freshly rendered
clips, so its accuracy is measured on clips it has never seen. Weights are saved as safetensors.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clear_sae.errors import ClearSaeError
from clear_sae.toyworld.render import COLOURS, MOTIONS, SHAPES, ClipSpec, RenderConfig, random_clips

if TYPE_CHECKING:
    import torch

COLOUR_NAMES = list(COLOURS)
WEIGHTS = "detector.safetensors"
CONFIG = "detector.json"


@dataclass
class DetectorConfig:
    """Detector size and training recipe."""

    width: int = 16
    """Channels of the first convolution (doubled twice)."""
    steps: int = 4000
    """Optimiser steps."""
    batch_clips: int = 32
    """Clips per step (each contributes all its frames)."""
    lr: float = 2e-3
    seed: int = 0
    second_object_rate: float = 0.3
    """Share of training clips with two objects."""
    neutral_rate: float = 0.15
    """Chance that each attribute of each object takes its neutral value."""


def clip_labels(spec: ClipSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shapes, colours and motions `spec` draws, as 0/1 vectors over the detector's classes."""
    objects = [spec.main] + ([spec.second] if spec.second is not None else [])
    shape = np.zeros(len(SHAPES), np.float32)
    colour = np.zeros(len(COLOUR_NAMES), np.float32)
    motion = np.zeros(len(MOTIONS), np.float32)
    for obj in objects:  # a neutral value is in none of the lists, so it sets no label
        if obj.shape in SHAPES:
            shape[SHAPES.index(obj.shape)] = 1
        if obj.colour in COLOUR_NAMES:
            colour[COLOUR_NAMES.index(obj.colour)] = 1
        if obj.motion in MOTIONS:
            motion[MOTIONS.index(obj.motion)] = 1
    return shape, colour, motion


def render_batch(
    rng: np.random.Generator, n: int, render: RenderConfig, second_object_rate: float, neutral_rate: float = 0.0
) -> tuple[list[ClipSpec], np.ndarray]:
    """`n` random specs and their clips as float32 `[n, frames, 3, size, size]` in [0, 1]."""
    specs, clips = random_clips(rng, n, render, second_object_rate, neutral_rate)
    return specs, clips.transpose(0, 1, 4, 2, 3).astype(np.float32) / 255.0


def build_detector(cfg: DetectorConfig) -> "torch.nn.Module":
    """The detector network: a frame CNN with shape and colour heads, and a temporal motion head."""
    from torch import nn

    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = cfg.width
            self.frames = nn.Sequential(
                nn.Conv2d(3, w, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(w, 2 * w, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(2 * w, 4 * w, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(4 * w * 16, 128),
                nn.ReLU(),
            )
            self.shape = nn.Linear(128, len(SHAPES))
            self.colour = nn.Linear(128, len(COLOUR_NAMES))
            self.motion = nn.Sequential(
                nn.Conv1d(128, 64, 3, padding=1),
                nn.ReLU(),
                nn.AdaptiveMaxPool1d(1),
                nn.Flatten(),
                nn.Linear(64, len(MOTIONS)),
            )

        def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            b, t = clips.shape[:2]
            feats = self.frames(clips.flatten(0, 1))  # [b*t, 128]
            motion = self.motion(feats.view(b, t, -1).transpose(1, 2))
            return self.shape(feats).view(b, t, -1), self.colour(feats).view(b, t, -1), motion

    return Detector()


def train_detector(
    cfg: DetectorConfig = DetectorConfig(),
    render: RenderConfig = RenderConfig(),
    progress: bool = True,
    losses: list[float] | None = None,
) -> "torch.nn.Module":
    """Train a detector on freshly rendered clips (a new batch every step); `losses` collects the loss per step."""
    import torch
    from torch.nn.functional import binary_cross_entropy_with_logits as bce
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_detector(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps)
    for _ in tqdm(range(cfg.steps), desc="training detector", unit="step", disable=not progress):
        specs, clips = render_batch(rng, cfg.batch_clips, render, cfg.second_object_rate, cfg.neutral_rate)
        labels = [torch.from_numpy(np.stack(x)) for x in zip(*map(clip_labels, specs))]
        shape, colour, motion = model(torch.from_numpy(clips))
        frames = clips.shape[1]
        loss = (
            bce(shape, labels[0][:, None].expand(-1, frames, -1))
            + bce(colour, labels[1][:, None].expand(-1, frames, -1))
            + bce(motion, labels[2])
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if losses is not None:
            losses.append(float(loss.detach()))
    return model.eval()


@dataclass
class Detections:
    """Detector outputs for a batch of clips (probabilities)."""

    shape: np.ndarray
    """`[clips, frames, shapes]`"""
    colour: np.ndarray
    """`[clips, frames, colours]`"""
    motion: np.ndarray
    """`[clips, motions]`"""


def detect(model: "torch.nn.Module", clips: np.ndarray, batch: int = 64) -> Detections:
    """Run the detector on uint8 `[n, frames, size, size, 3]` clips."""
    import torch

    outs: list[list[np.ndarray]] = [[], [], []]
    with torch.no_grad():
        for i in range(0, len(clips), batch):
            x = torch.from_numpy(clips[i : i + batch].transpose(0, 1, 4, 2, 3).astype(np.float32) / 255.0)
            for store, logits in zip(outs, model(x)):
                store.append(torch.sigmoid(logits).numpy())
    return Detections(*(np.concatenate(o) for o in outs))


def accuracy(
    model: "torch.nn.Module",
    n_clips: int = 500,
    seed: int = 12345,
    render: RenderConfig = RenderConfig(),
    second_object_rate: float = 0.3,
    neutral_rate: float = 0.15,
) -> dict[str, float]:
    """Exact-match accuracy on freshly rendered clips: the set of shapes / colours per frame, motions per clip
    (a neutral value must give the empty set)."""
    specs, clips = random_clips(np.random.default_rng(seed), n_clips, render, second_object_rate, neutral_rate)
    return exact_match(detect(model, clips), specs)


def exact_match(det: Detections, specs: list[ClipSpec]) -> dict[str, float]:
    """The share of frames whose set of shapes, and of colours, is the one drawn, and of clips whose set of
    motions is (probabilities above 0.5 count as found)."""
    labels = [np.stack(x) for x in zip(*map(clip_labels, specs))]
    shape_ok = ((det.shape > 0.5) == (labels[0][:, None] > 0.5)).all(-1)
    colour_ok = ((det.colour > 0.5) == (labels[1][:, None] > 0.5)).all(-1)
    motion_ok = ((det.motion > 0.5) == (labels[2] > 0.5)).all(-1)
    return {
        "shape_frames": float(shape_ok.mean()),
        "colour_frames": float(colour_ok.mean()),
        "motion_clips": float(motion_ok.mean()),
        "clips": len(specs),
    }


def save_detector(
    model: "torch.nn.Module", cfg: DetectorConfig, folder: str | Path, metrics: dict[str, float] | None = None
) -> None:
    """Write `detector.safetensors` and `detector.json` (config and measured accuracy)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps({"config": asdict(cfg), "accuracy": metrics or {}}, indent=2))


def load_detector(folder: str | Path) -> "torch.nn.Module":
    """Load a detector saved by `save_detector` (safetensors only)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
        raise ClearSaeError(
            f"{folder} holds no {WEIGHTS} and {CONFIG}; train one with `python -m clear_sae.toyworld.detector`"
        )
    try:
        cfg = DetectorConfig(**json.loads((folder / CONFIG).read_text())["config"])
        model = build_detector(cfg)
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except Exception as err:  # a broken JSON, a truncated file or other shapes: each library raises its own kind
        raise ClearSaeError(
            f"cannot load the toy detector in {folder} ({type(err).__name__}: {err}); restore the "
            "shipped one or retrain it with `python -m clear_sae.toyworld.detector`"
        ) from None
    return model.eval()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Train the toy-world detector and report its accuracy.")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "weights"))
    parser.add_argument("--steps", type=int, default=DetectorConfig.steps)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = DetectorConfig(steps=args.steps, seed=args.seed)
    detector = train_detector(config)
    measured = accuracy(detector)
    save_detector(detector, config, args.out, measured)
    print(json.dumps(measured, indent=2))
