"""Clip transforms on (T, C, H, W) tensors.

Two families:

* ``standard``: torchvision ``transforms.v2`` (one random draw per clip, applied to every frame):
  short-side resize, centre / random / multi-scale crop, horizontal flip, normalisation;
* ``frameexit``: the exact preprocessing of the FrameExit original, for reproducing its numbers -
  uint8 -> float in [0, 1], bilinear ``F.interpolate`` without antialiasing to short side S (long
  side ``int(S * long / short)``), centre crop at ``int(round((h - S) / 2))``, normalisation.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from effvid.config import option

__all__ = ["FrameExitPreprocess", "MultiScaleCrop", "TransformConfig", "build_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TransformConfig:
    style: str = option(
        "standard", "standard (torchvision v2) | frameexit (the original's exact preprocessing)"
    )
    resize: int = option(256, "short side after resizing")
    crop: int = option(224, "square crop size")
    train_crop: str = option("random", "training crop: random | multiscale | center")
    flip: bool = option(True, "random horizontal flip in training")
    mean: list[float] = option(doc="normalisation mean", default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = option(doc="normalisation std", default_factory=lambda: list(IMAGENET_STD))

    def __post_init__(self) -> None:
        if self.style not in ("standard", "frameexit"):
            raise ValueError(f"transform.style must be standard or frameexit, got '{self.style}'")
        if self.train_crop not in ("random", "multiscale", "center"):
            raise ValueError(
                f"transform.train_crop must be random, multiscale or center, got '{self.train_crop}'"
            )
        if self.crop > self.resize:
            raise ValueError(f"transform.crop ({self.crop}) cannot exceed transform.resize ({self.resize})")


class FrameExitPreprocess:
    """FrameExit's ToTensor -> Resize(S) -> CenterCrop(S) -> Normalize, on a (T, C, H, W) uint8 clip."""

    def __init__(
        self, size: int = 224, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ):
        self.size = size
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        x = clip.float() / 255.0 if clip.dtype == torch.uint8 else clip.float()
        h, w = x.shape[-2:]
        s = self.size
        new = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
        x = F.interpolate(x, size=new, mode="bilinear", align_corners=False, antialias=False)
        top = int(round((new[0] - s) / 2.0))
        left = int(round((new[1] - s) / 2.0))
        x = x[..., top : top + s, left : left + s]
        return (x - self.mean) / self.std


class MultiScaleCrop(torch.nn.Module):
    """TSN's multi-scale crop: a crop whose sides are drawn from ``scales`` x the short side
    (aspect ratio within one step), at a corner or the centre, resized to ``size``."""

    def __init__(self, size: int, scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66)) -> None:
        super().__init__()
        self.size, self.scales = size, tuple(scales)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        h, w = clip.shape[-2:]
        base = min(h, w)
        sides = [int(base * s) for s in self.scales]
        pairs = [(a, b) for i, a in enumerate(sides) for j, b in enumerate(sides) if abs(i - j) <= 1]
        ch, cw = random.choice(pairs)
        spots = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
        top, left = random.choice(spots)
        clip = clip[..., top : top + ch, left : left + cw]
        return v2.functional.resize(clip, [self.size, self.size], antialias=True)


def build_transform(cfg: TransformConfig, *, train: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """A (T, C, H, W) uint8 clip -> normalised float clip (T, C, crop, crop)."""
    if cfg.style == "frameexit":
        if cfg.resize != cfg.crop:
            raise ValueError("the frameexit preprocessing resizes and crops to one size: set resize == crop")
        return FrameExitPreprocess(cfg.crop, cfg.mean, cfg.std)
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    if train and cfg.train_crop == "multiscale":
        steps += [v2.Resize(cfg.resize, antialias=True), MultiScaleCrop(cfg.crop)]
    elif train and cfg.train_crop == "random":
        steps += [v2.Resize(cfg.resize, antialias=True), v2.RandomCrop(cfg.crop)]
    else:
        steps += [v2.Resize(cfg.resize, antialias=True), v2.CenterCrop(cfg.crop)]
    if train and cfg.flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)]
    return v2.Compose(steps)
