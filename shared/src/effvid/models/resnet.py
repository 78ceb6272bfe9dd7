"""ResNet-18/34/50/101 trunks from torchvision, keeping torchvision's parameter names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torchvision

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


def _resnet(
    builder: Callable[..., torchvision.models.ResNet],
    enum: type[torchvision.models.WeightsEnum],
    num_classes: int | None,
    weights: str | None,
    kwargs: dict[str, Any],
) -> ResNetBackbone:
    tv_weights, local_path = resolve_weights(enum, weights)
    model = ResNetBackbone(builder(weights=tv_weights, **kwargs), num_classes=num_classes)
    if local_path is not None:
        model.load_weights(local_path)
    return model


@register_backbone()
def resnet18(*, num_classes: int | None = None, weights: str | None = None, **kwargs: Any) -> ResNetBackbone:
    """ResNet-18 trunk, 512-d features; other keywords go to ``torchvision.models.resnet18``."""
    return _resnet(
        torchvision.models.resnet18, torchvision.models.ResNet18_Weights, num_classes, weights, kwargs
    )


@register_backbone()
def resnet34(*, num_classes: int | None = None, weights: str | None = None, **kwargs: Any) -> ResNetBackbone:
    """ResNet-34 trunk, 512-d features; other keywords go to ``torchvision.models.resnet34``."""
    return _resnet(
        torchvision.models.resnet34, torchvision.models.ResNet34_Weights, num_classes, weights, kwargs
    )


@register_backbone()
def resnet50(*, num_classes: int | None = None, weights: str | None = None, **kwargs: Any) -> ResNetBackbone:
    """ResNet-50 trunk, 2048-d features (FrameExit's backbone); other keywords go to torchvision
    (e.g. ``replace_stride_with_dilation=[False, False, True]``, ``norm_layer``)."""
    return _resnet(
        torchvision.models.resnet50, torchvision.models.ResNet50_Weights, num_classes, weights, kwargs
    )


@register_backbone()
def resnet101(*, num_classes: int | None = None, weights: str | None = None, **kwargs: Any) -> ResNetBackbone:
    """ResNet-101 trunk, 2048-d features; other keywords go to ``torchvision.models.resnet101``."""
    return _resnet(
        torchvision.models.resnet101, torchvision.models.ResNet101_Weights, num_classes, weights, kwargs
    )
