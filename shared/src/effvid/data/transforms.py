"""Clip transforms on (T, C, H, W) tensors.

Styles live in the ``TRANSFORMS`` registry; the core registers ``standard``: torchvision
``transforms.v2`` (one random draw per clip, applied to every frame): short-side resize, centre /
random / multi-scale crop, horizontal flip, normalisation. Packages register their own (the
``frameexit`` package: the FrameExit original's exact preprocessing).

Random draws come from torch's global generator, which a training dataset seeds per sample
(:func:`effvid.draws.seeded`), so augmentation is reproducible across workers and resumes.
Segmentation clips go through the same transform as their mask (``tv_tensors.Video`` + ``Mask``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from effvid.config import check_choice, option
from effvid.data.registries import TRANSFORMS

__all__ = ["MultiScaleCrop", "TransformConfig", "build_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TransformConfig:
    style: str = option(
        "standard", "a registered style: standard (torchvision v2); frameexit (with the frameexit package)"
    )
    resize: int = option(256, "short side after resizing")
    crop: int = option(224, "square crop size")
    train_crop: str = option("random", "training crop: random | multiscale | center")
    flip: bool = option(True, "random horizontal flip in training")
    mean: list[float] = option(doc="normalisation mean", default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = option(doc="normalisation std", default_factory=lambda: list(IMAGENET_STD))

    def __post_init__(self) -> None:
        TRANSFORMS.check(self.style, key="data.transform.style")
        check_choice("data.transform.train_crop", self.train_crop, ("random", "multiscale", "center"))
        if self.crop > self.resize:
            raise ValueError(f"transform.crop ({self.crop}) cannot exceed transform.resize ({self.resize})")


class MultiScaleCrop(torch.nn.Module):
    """TSN's multi-scale crop: a crop whose sides are drawn from ``scales`` x the short side
    (aspect ratio within one step), at a corner or the centre, resized to ``size``."""

    def __init__(self, size: int, scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66)) -> None:
        super().__init__()
        self.size, self.scales = size, tuple(scales)

    def forward(self, *inputs: object) -> object:
        clip = next(x for x in inputs if isinstance(x, torch.Tensor) and not isinstance(x, tv_tensors.Mask))
        h, w = clip.shape[-2:]
        base = min(h, w)
        sides = [int(base * s) for s in self.scales]
        pairs = [(a, b) for i, a in enumerate(sides) for j, b in enumerate(sides) if abs(i - j) <= 1]
        ch, cw = pairs[int(torch.randint(len(pairs), ()))]  # torch's RNG: seeded per sample
        spots = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
        top, left = spots[int(torch.randint(len(spots), ()))]
        # one crop for every input (frames and mask alike), then a resize that keeps labels labels
        out = [
            v2.functional.resized_crop(x, top, left, ch, cw, [self.size, self.size], antialias=True)
            for x in inputs
        ]
        return out[0] if len(out) == 1 else tuple(out)


def build_transform(cfg: TransformConfig, *, train: bool) -> Callable[..., object]:
    """The registered style's transform: a (T, C, H, W) uint8 clip -> normalised float clip
    (T, C, crop, crop); the ``standard`` style also takes ``(tv_tensors.Video, tv_tensors.Mask)``."""
    return TRANSFORMS.get(cfg.style)(cfg, train)


@TRANSFORMS.register("standard")
def standard_transform(cfg: TransformConfig, train: bool) -> Callable[..., object]:
    steps: list[Callable[..., object]] = []
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
