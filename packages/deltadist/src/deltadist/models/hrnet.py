"""HRNetV2 for segmentation (Wang et al., TPAMI 2020): parallel branches at 1/4, 1/8, 1/16, 1/32
exchanging features after every module; the head concatenates all branches upsampled to 1/4::

    (N, 3, H, W) -> stem (1/4) -> layer1 -> transition1 -> stage2 [2 branches] -> transition2
        -> stage3 [3] -> transition3 -> stage4 [4] -> upsample + concat (sum of widths)
        -> last_layer: 1x1 (biased) - BN - ReLU - 1x1 -> (N, num_classes, H/4, W/4)

Module names, registration order and shapes follow HRNet/HRNet-Semantic-Segmentation's
``seg_hrnet.py`` as vendored by Delta Distillation, so its frame-based state dicts load strictly
and the delta-layer rule converts the same 144 convolutions of HRNetV2-W18-Small-v2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HighResolutionNet", "StageSpec", "hrnet_w18_small_v2"]

BN_MOMENTUM = 0.1


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = _bn(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = _bn(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _make_layer(block, inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
            _bn(planes * block.expansion),
        )
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _down(cin: int, cout: int, relu: bool) -> nn.Sequential:
    parts = [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), _bn(cout)]
    return nn.Sequential(*parts, nn.ReLU()) if relu else nn.Sequential(*parts)


class HighResolutionModule(nn.Module):
    """Branches of BasicBlocks, then every output the sum of all branches resized to it (+ ReLU).
    Input and output: a list of (N, C_i, H/2^i, W/2^i)."""

    def __init__(self, num_blocks: tuple[int, ...], channels: tuple[int, ...]) -> None:
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(_make_layer(BasicBlock, c, c, b) for b, c in zip(num_blocks, channels))
        fuse = []
        for i in range(n):
            row: list[nn.Module | None] = []
            for j in range(n):
                if j > i:  # lower resolution: 1x1 to C_i, upsampled in forward
                    row.append(
                        nn.Sequential(
                            nn.Conv2d(channels[j], channels[i], 1, 1, 0, bias=False), _bn(channels[i])
                        )
                    )
                elif j == i:
                    row.append(None)
                else:  # higher resolution: i - j strided 3x3, the last one to C_i without ReLU
                    steps = [_down(channels[j], channels[j], True) for _ in range(i - j - 1)]
                    row.append(nn.Sequential(*steps, _down(channels[j], channels[i], False)))
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse) if n > 1 else None
        self.relu = nn.ReLU()

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, len(xs)):
                if j == i:
                    y = y + xs[j]
                elif j > i:
                    y = y + F.interpolate(
                        row[j](xs[j]), size=xs[i].shape[-2:], mode="bilinear", align_corners=False
                    )
                else:
                    y = y + row[j](xs[j])
            out.append(self.relu(y))
        return out


@dataclass(frozen=True)
class StageSpec:
    """A stage of BasicBlock modules: how many modules, blocks per branch, channels per branch."""

    num_modules: int
    num_blocks: tuple[int, ...]
    channels: tuple[int, ...]


class HighResolutionNet(nn.Module):
    """HRNetV2 segmentation network: ``(N, 3, H, W)`` -> logits ``(N, num_classes, H/4, W/4)``.

    Args:
        stem_blocks / stem_planes: the Bottleneck ``layer1`` (its width x 4 leaves it).
        stages: stages 2, 3, 4 (each adds one branch).
    """

    def __init__(
        self,
        *,
        stem_blocks: int,
        stem_planes: int,
        stages: tuple[StageSpec, StageSpec, StageSpec],
        num_classes: int = 19,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = _bn(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = _bn(64)
        self.relu = nn.ReLU()
        self.layer1 = _make_layer(Bottleneck, 64, stem_planes, stem_blocks)
        previous = [stem_planes * Bottleneck.expansion]
        for k, spec in enumerate(stages, 1):
            if len(spec.channels) != len(previous) + 1 or len(spec.num_blocks) != len(spec.channels):
                raise ValueError(f"stage {k + 1} must have {len(previous) + 1} branches: {spec}")
            setattr(self, f"transition{k}", self._transition(previous, list(spec.channels)))
            modules = [HighResolutionModule(spec.num_blocks, spec.channels) for _ in range(spec.num_modules)]
            setattr(self, f"stage{k + 1}", nn.Sequential(*modules))
            previous = list(spec.channels)
        width = sum(previous)
        self.last_layer = nn.Sequential(
            nn.Conv2d(width, width, 1, 1, 0), _bn(width), nn.ReLU(), nn.Conv2d(width, num_classes, 1, 1, 0)
        )

    @staticmethod
    def _transition(previous: list[int], current: list[int]) -> nn.ModuleList:
        layers: list[nn.Module | None] = []
        for i, c in enumerate(current):
            if i < len(previous):
                same = c == previous[i]
                layers.append(
                    None
                    if same
                    else nn.Sequential(nn.Conv2d(previous[i], c, 3, 1, 1, bias=False), _bn(c), nn.ReLU())
                )
            else:  # a new, lower-resolution branch from the lowest existing one
                steps = i + 1 - len(previous)
                cin = previous[-1]
                layers.append(
                    nn.Sequential(*[_down(cin, c if s == steps - 1 else cin, True) for s in range(steps)])
                )
        return nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, num_classes, H/4, W/4)."""
        x = self.layer1(self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))))
        ys = [x]
        for k in (1, 2, 3):
            transition = getattr(self, f"transition{k}")
            xs = [
                (ys[i] if i < len(ys) else ys[-1]) if t is None else t(ys[i] if i < len(ys) else ys[-1])
                for i, t in enumerate(transition)
            ]
            ys = getattr(self, f"stage{k + 1}")(xs)
        size = ys[0].shape[-2:]
        up = [ys[0]] + [F.interpolate(y, size=size, mode="bilinear", align_corners=False) for y in ys[1:]]
        return self.last_layer(torch.cat(up, 1))


def hrnet_w18_small_v2(*, num_classes: int = 19) -> HighResolutionNet:
    """HRNetV2-W18-Small-v2 (branch widths 18/36/72/144), the Delta Distillation configuration."""
    return HighResolutionNet(
        stem_blocks=2,
        stem_planes=64,
        stages=(
            StageSpec(1, (2, 2), (18, 36)),
            StageSpec(3, (2, 2, 2), (18, 36, 72)),
            StageSpec(2, (2, 2, 2, 2), (18, 36, 72, 144)),
        ),
        num_classes=num_classes,
    )
