"""A small network with the cases a delta layer must handle, for the tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Tiny(nn.Module):
    """Stem, a biased strided conv, a dilated asymmetric conv, a 1x1, BN/ReLU/upsampling, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.body = nn.Sequential(
            nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=True),
            nn.ReLU(),
            nn.Conv2d(8, 16, (3, 1), padding=(2, 0), dilation=(2, 1), bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 1, bias=False),
        )
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, x):
        y = self.body(torch.relu(self.bn(self.stem(x))))
        return self.head(F.interpolate(y, scale_factor=2, mode="bilinear"))


def tiny(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    net = Tiny().to(dtype)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0, 0.5)
    return net.eval()


def clips_like(b=2, t=3, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    first = torch.randn(b, 1, 3, 16, 16, generator=g, dtype=dtype)
    # later frames: the keyframe plus a small change, as in a video
    return first + 0.1 * torch.randn(b, t, 3, 16, 16, generator=g, dtype=dtype) * torch.arange(t).view(
        1, t, 1, 1, 1
    )
