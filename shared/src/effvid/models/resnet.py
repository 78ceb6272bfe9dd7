"""ResNet-18/34/50/101 trunks from torchvision, keeping torchvision's parameter names.

``width`` scales the network: stem and stages ``width * (1, 2, 4, 8)`` channels (x4 for the
bottleneck output) instead of 64 * (1, 2, 4, 8); the layers and names stay torchvision's, so
layer surgery and converters see the same modules. ``resnet18(width=16)`` (11 M MACs at 64x64)
is what trains on a laptop CPU in minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torchvision
from torch import nn

from effvid.models.backbone import Backbone
from effvid.models.registry import register_backbone
from effvid.models.weights import resolve_weights

__all__ = ["ResNetBackbone"]


class ResNetBackbone(Backbone):
    """A torchvision ResNet without ``avgpool``/``fc``.

    ::

        stem: conv1 -> bn1 -> relu -> maxpool;  stages: layer1 -> layer2 -> layer3 -> layer4  (stride 32)
    """

    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, net: torchvision.models.ResNet, num_classes: int | None = None) -> None:
        super().__init__(net.fc.in_features, num_classes)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


class _ScaledResNet(torchvision.models.ResNet):
    """torchvision's ResNet with base width ``width`` instead of 64 (same layers and names)."""

    def __init__(self, block: type[nn.Module], layers: list[int], *, width: int, **kwargs: Any) -> None:
        self._width = width
        super().__init__(block, layers, **kwargs)
        self.fc = nn.Linear(8 * width * block.expansion, self.fc.out_features)

    def _make_layer(
        self, block: type[nn.Module], planes: int, blocks: int, stride: int = 1, dilate: bool = False
    ) -> nn.Sequential:
        if self.inplanes == 64 and planes == 64:  # layer1 comes first: the stem is still 64 wide
            self.conv1 = nn.Conv2d(3, self._width, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = self._norm_layer(self._width)
            self.inplanes = self._width
        return super()._make_layer(block, planes * self._width // 64, blocks, stride, dilate)


_LAYOUTS = {  # block type and blocks per stage, for width != 64
    "resnet18": (torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (torchvision.models.resnet.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (torchvision.models.resnet.Bottleneck, [3, 4, 6, 3]),
    "resnet101": (torchvision.models.resnet.Bottleneck, [3, 4, 23, 3]),
}


def _resnet(
    builder: Callable[..., torchvision.models.ResNet],
    enum: type[torchvision.models.WeightsEnum],
    num_classes: int | None,
    weights: str | None,
    kwargs: dict[str, Any],
    width: int = 64,
) -> ResNetBackbone:
    if width < 1:
        raise ValueError(f"a ResNet's width must be >= 1, got {width}")
    if width != 64:
        if weights is not None:
            raise ValueError(f"pretrained weights '{weights}' are 64 wide; width={width} trains from scratch")
        block, layers = _LAYOUTS[builder.__name__]
        return ResNetBackbone(_ScaledResNet(block, layers, width=width, **kwargs), num_classes=num_classes)
    tv_weights, local_path = resolve_weights(enum, weights)
    model = ResNetBackbone(builder(weights=tv_weights, **kwargs), num_classes=num_classes)
    if local_path is not None:
        model.load_weights(local_path)
    return model


@register_backbone()
def resnet18(
    *, num_classes: int | None = None, weights: str | None = None, width: int = 64, **kwargs: Any
) -> ResNetBackbone:
    """ResNet-18 trunk, 512-d features (8 x ``width``); other keywords go to ``torchvision.models.resnet18``."""
    return _resnet(
        torchvision.models.resnet18, torchvision.models.ResNet18_Weights, num_classes, weights, kwargs, width
    )


@register_backbone()
def resnet34(
    *, num_classes: int | None = None, weights: str | None = None, width: int = 64, **kwargs: Any
) -> ResNetBackbone:
    """ResNet-34 trunk, 512-d features (8 x ``width``); other keywords go to ``torchvision.models.resnet34``."""
    return _resnet(
        torchvision.models.resnet34, torchvision.models.ResNet34_Weights, num_classes, weights, kwargs, width
    )


@register_backbone()
def resnet50(
    *, num_classes: int | None = None, weights: str | None = None, width: int = 64, **kwargs: Any
) -> ResNetBackbone:
    """ResNet-50 trunk, 2048-d features (32 x ``width``; FrameExit's backbone); other keywords go to torchvision
    (e.g. ``replace_stride_with_dilation=[False, False, True]``, ``norm_layer``)."""
    return _resnet(
        torchvision.models.resnet50, torchvision.models.ResNet50_Weights, num_classes, weights, kwargs, width
    )


@register_backbone()
def resnet101(
    *, num_classes: int | None = None, weights: str | None = None, width: int = 64, **kwargs: Any
) -> ResNetBackbone:
    """ResNet-101 trunk, 2048-d features (32 x ``width``); other keywords go to ``torchvision.models.resnet101``."""
    return _resnet(
        torchvision.models.resnet101,
        torchvision.models.ResNet101_Weights,
        num_classes,
        weights,
        kwargs,
        width,
    )
