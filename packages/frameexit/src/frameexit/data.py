"""FrameExit's data pieces, registered into the core: its frame order and its preprocessing style.

``frameexit`` transform style: the exact preprocessing of the FrameExit original, for
reproducing its numbers - uint8 -> float in [0, 1], bilinear ``F.interpolate`` without
antialiasing to short side S (long side ``int(S * long / short)``), centre crop at
``int(round((h - S) / 2))``, normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from effvid.config import MISSING
from effvid.data import TRANSFORMS, DataConfig, TransformConfig

__all__ = ["FRAMEEXIT_ORDER", "FrameExitPreprocess", "frameexit_data_config"]

#: FrameExit's processing order over its 10 uniformly sampled frames: middle, first, last, ...
FRAMEEXIT_ORDER = (5, 0, 9, 2, 7, 4, 6, 3, 8, 1)


class FrameExitPreprocess:
    """FrameExit's ToTensor -> Resize(S) -> CenterCrop(S) -> Normalize, on a (T, C, H, W) uint8 clip."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
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


@TRANSFORMS.register("frameexit")
def _frameexit_style(cfg: TransformConfig, train: bool) -> FrameExitPreprocess:
    if cfg.resize != cfg.crop:
        raise ValueError("the frameexit preprocessing resizes and crops to one size: set resize == crop")
    return FrameExitPreprocess(cfg.crop, cfg.mean, cfg.std)


def frameexit_data_config() -> DataConfig:
    """The data defaults of FrameExit's commands: ActivityNet, 10 uniform frames in FrameExit's
    order, the original's preprocessing at 224."""
    return DataConfig(
        format="activitynet1.3",
        path_frame=MISSING,
        order=list(FRAMEEXIT_ORDER),
        transform=TransformConfig(style="frameexit", resize=224, crop=224, train_crop="center", flip=False),
    )
