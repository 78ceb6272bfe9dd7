"""A small segmentation network that trains on a CPU in minutes (the demo's teacher).

::

    (N, 3, H, W) --stem 3x3/2--> (N, w, H/2, W/2) --conv 3x3--> (N, 2w, H/2, W/2) = skip
        --conv 3x3/2--> (N, 2w, H/4, W/4) --conv 3x3 dil 2--> --conv 3x3--> upsample x2 (+ skip)
        --conv 3x3--> (N, 2w, H/2, W/2) --classifier 1x1--> (N, K, H/2, W/2)

Every conv but the classifier is followed by BatchNorm and ReLU; the default conversion rule
(all but the first and the last conv) gives it five delta layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TinySegNet", "tiny_segnet"]


def _conv_bn_relu(cin: int, cout: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinySegNet(nn.Module):
    """Output stride 2: logits ``(N, num_classes, ceil(H/2), ceil(W/2))`` for frames ``(N, 3, H, W)``."""

    def __init__(self, *, num_classes: int = 19, width: int = 16) -> None:
        super().__init__()
        if width < 4:
            raise ValueError(f"width must be >= 4, got {width}")
        self.stem = _conv_bn_relu(3, width, stride=2)
        self.high = _conv_bn_relu(width, 2 * width)
        self.down = _conv_bn_relu(2 * width, 2 * width, stride=2)
        self.context = nn.Sequential(
            _conv_bn_relu(2 * width, 2 * width, dilation=2), _conv_bn_relu(2 * width, 2 * width)
        )
        self.fuse = _conv_bn_relu(2 * width, 2 * width)
        self.classifier = nn.Conv2d(2 * width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.high(self.stem(x))
        y = self.context(self.down(skip))
        y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(y + skip))


def tiny_segnet(*, num_classes: int = 19, width: int = 16) -> TinySegNet:
    return TinySegNet(num_classes=num_classes, width=width)
