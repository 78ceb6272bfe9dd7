"""DDRNet (Hong et al., 2021, arXiv 2101.06085): deep dual-resolution networks for road scenes.

Two branches after a shared stem: a low-resolution one (1/16 -> 1/64, with the DAPPM context
module at the end) and a high-resolution one kept at 1/8, exchanging features by strided 3x3
convolutions (high -> low) and 1x1 compressions plus bilinear upsampling (low -> high)::

    (N, 3, H, W) -> conv1 (1/4) -> layer1 -> layer2 (1/8) -+-> layer3 (1/16) -> layer4 (1/32) -> layer5 -> spp --+
                                                             |      ^ down3    |   ^ down4                       | up
                                                             +-> layer3_ (1/8) -> layer4_ ----> layer5_ -------- + -> final_layer
                                                                                                   (N, classes, H/8, W/8)

Module names, registration order and parameter shapes are those of the reference implementation
(ydhongHIT/DDRNet, as vendored by Delta Distillation), so its frame-based state dicts load
strictly and ``nn.Conv2d`` module order (which picks the delta layers) is the same. DDRNet-39
splits stage 3 in two (``layer3_1``/``layer3_2`` with their own ``down3_*``/``compression3_*``).
The output stays at 1/8 resolution; upsample to the label size outside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DualResNet", "ddrnet23", "ddrnet23_slim", "ddrnet39"]

BN_MOMENTUM = 0.1


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, no_relu: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = _bn(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn(planes)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else self.relu(out)


class Bottleneck(nn.Module):
    expansion = 2

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, no_relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = _bn(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else self.relu(out)


def _bn_relu_conv(cin: int, cout: int, kernel: int, pool: nn.Module | None = None) -> nn.Sequential:
    parts = [] if pool is None else [pool]
    return nn.Sequential(
        *parts, _bn(cin), nn.ReLU(), nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
    )


class DAPPM(nn.Module):
    """Deep aggregation pyramid pooling: pooled context at 4 scales, refined hierarchically.
    (N, Cin, h, w) -> (N, Cout, h, w)."""

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int) -> None:
        super().__init__()
        pools = [
            nn.AvgPool2d(5, 2, 2),
            nn.AvgPool2d(9, 4, 4),
            nn.AvgPool2d(17, 8, 8),
            nn.AdaptiveAvgPool2d((1, 1)),
        ]
        for i, pool in enumerate(pools, 1):
            setattr(self, f"scale{i}", _bn_relu_conv(inplanes, branch_planes, 1, pool))
        self.scale0 = _bn_relu_conv(inplanes, branch_planes, 1)
        for i in range(1, 5):
            setattr(self, f"process{i}", _bn_relu_conv(branch_planes, branch_planes, 3))
        self.compression = _bn_relu_conv(branch_planes * 5, outplanes, 1)
        self.shortcut = _bn_relu_conv(inplanes, outplanes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = [self.scale0(x)]
        for i in range(1, 5):
            up = F.interpolate(getattr(self, f"scale{i}")(x), size=size, mode="bilinear")
            feats.append(getattr(self, f"process{i}")(up + feats[-1]))
        return self.compression(torch.cat(feats, 1)) + self.shortcut(x)


class SegmentHead(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv1x1 (biased): (N, Cin, h, w) -> (N, classes, h, w)."""

    def __init__(self, inplanes: int, interplanes: int, outplanes: int) -> None:
        super().__init__()
        self.bn1 = _bn(inplanes)
        self.conv1 = nn.Conv2d(inplanes, interplanes, 3, padding=1, bias=False)
        self.bn2 = _bn(interplanes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(interplanes, outplanes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.bn2(self.conv1(self.relu(self.bn1(x))))))


def _make_layer(block, inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
            _bn(planes * block.expansion),
        )
    layers = [block(inplanes, planes, stride, downsample)]
    for i in range(1, blocks):
        layers.append(block(planes * block.expansion, planes, 1, no_relu=i == blocks - 1))
    return nn.Sequential(*layers)


class DualResNet(nn.Module):
    """DDRNet for segmentation: ``(N, 3, H, W)`` -> logits ``(N, num_classes, H/8, W/8)``.

    Args:
        layers: BasicBlocks per stage 1-4 (stage 3 is cut into ``stage3_splits`` equal parts).
        planes / spp_planes / head_planes: widths (32/128/64 for 23-slim, 64/128/128 for 23,
            64/128/256 for 39).
        aux_head: also build ``seghead_extra`` on the high-resolution branch after stage 3 (the
            reference's ``augment``; its training checkpoints have it); ``forward`` then returns
            ``(logits, aux_logits)``.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        *,
        planes: int,
        spp_planes: int,
        head_planes: int,
        num_classes: int = 19,
        stage3_splits: int = 1,
        aux_head: bool = False,
    ) -> None:
        super().__init__()
        if stage3_splits not in (1, 2) or layers[2] % stage3_splits:
            raise ValueError(f"stage 3 ({layers[2]} blocks) cannot be cut into {stage3_splits} parts")
        high = planes * 2
        self.aux_head = aux_head
        self._stage3 = [""] if stage3_splits == 1 else ["_1", "_2"]
        blocks3 = layers[2] // stage3_splits
        # registration order matters: it is the nn.Conv2d order that picks the delta layers
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, planes, 3, 2, 1),
            _bn(planes),
            nn.ReLU(),
            nn.Conv2d(planes, planes, 3, 2, 1),
            _bn(planes),
            nn.ReLU(),
        )
        self.relu = nn.ReLU()
        self.layer1 = _make_layer(BasicBlock, planes, planes, layers[0])
        self.layer2 = _make_layer(BasicBlock, planes, planes * 2, layers[1], stride=2)
        for i, s in enumerate(self._stage3):
            cin, stride = (planes * 2, 2) if i == 0 else (planes * 4, 1)
            setattr(self, f"layer3{s}", _make_layer(BasicBlock, cin, planes * 4, blocks3, stride))
        self.layer4 = _make_layer(BasicBlock, planes * 4, planes * 8, layers[3], stride=2)
        for s in self._stage3:
            setattr(
                self, f"compression3{s}", nn.Sequential(nn.Conv2d(planes * 4, high, 1, bias=False), _bn(high))
            )
        self.compression4 = nn.Sequential(nn.Conv2d(planes * 8, high, 1, bias=False), _bn(high))
        for s in self._stage3:
            setattr(
                self,
                f"down3{s}",
                nn.Sequential(nn.Conv2d(high, planes * 4, 3, 2, 1, bias=False), _bn(planes * 4)),
            )
        self.down4 = nn.Sequential(
            nn.Conv2d(high, planes * 4, 3, 2, 1, bias=False),
            _bn(planes * 4),
            nn.ReLU(),
            nn.Conv2d(planes * 4, planes * 8, 3, 2, 1, bias=False),
            _bn(planes * 8),
        )
        for i, s in enumerate(self._stage3):
            setattr(
                self, f"layer3{s}_", _make_layer(BasicBlock, planes * 2 if i == 0 else high, high, blocks3)
            )
        self.layer4_ = _make_layer(BasicBlock, high, high, layers[3])
        self.layer5_ = _make_layer(Bottleneck, high, high, 1)
        self.layer5 = _make_layer(Bottleneck, planes * 8, planes * 8, 1, stride=2)
        self.spp = DAPPM(planes * 16, spp_planes, planes * 4)
        if aux_head:
            self.seghead_extra = SegmentHead(high, head_planes, num_classes)
        self.final_layer = SegmentHead(planes * 4, head_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> (N, num_classes, H/8, W/8) (and the auxiliary logits with ``aux_head``)."""
        size = (x.shape[-2] // 8, x.shape[-1] // 8)
        x = self.layer1(self.conv1(x))
        x = self.layer2(self.relu(x))
        x_ = x  # the high-resolution branch starts from stage 2
        for s in self._stage3:
            x = getattr(self, f"layer3{s}")(self.relu(x))
            low = x
            x_ = getattr(self, f"layer3{s}_")(self.relu(x_))
            x = x + getattr(self, f"down3{s}")(self.relu(x_))
            x_ = x_ + F.interpolate(
                getattr(self, f"compression3{s}")(self.relu(low)), size=size, mode="bilinear"
            )
        aux_in = x_
        x = self.layer4(self.relu(x))
        low = x
        x_ = self.layer4_(self.relu(x_))
        x = x + self.down4(self.relu(x_))
        x_ = x_ + F.interpolate(self.compression4(self.relu(low)), size=size, mode="bilinear")
        x_ = self.layer5_(self.relu(x_))
        x = F.interpolate(self.spp(self.layer5(self.relu(x))), size=size, mode="bilinear")
        out = self.final_layer(x + x_)
        if self.aux_head:
            return out, self.seghead_extra(aux_in)
        return out


def ddrnet23_slim(*, num_classes: int = 19, aux_head: bool = False) -> DualResNet:
    """DDRNet-23-slim: 5.7 M parameters, 36.3 GMAC at 1024x2048 (paper)."""
    return DualResNet(
        (2, 2, 2, 2), planes=32, spp_planes=128, head_planes=64, num_classes=num_classes, aux_head=aux_head
    )


def ddrnet23(*, num_classes: int = 19, aux_head: bool = False) -> DualResNet:
    """DDRNet-23: 20.1 M parameters, 143.1 GMAC at 1024x2048 (paper)."""
    return DualResNet(
        (2, 2, 2, 2), planes=64, spp_planes=128, head_planes=128, num_classes=num_classes, aux_head=aux_head
    )


def ddrnet39(*, num_classes: int = 19, aux_head: bool = False) -> DualResNet:
    """DDRNet-39: 32.3 M parameters, 281.2 GMAC at 1024x2048 (paper)."""
    return DualResNet(
        (3, 4, 6, 3),
        planes=64,
        spp_planes=128,
        head_planes=256,
        num_classes=num_classes,
        stage3_splits=2,
        aux_head=aux_head,
    )
