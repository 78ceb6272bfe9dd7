"""ResNet-18/34/50/101 trunks from torchvision, keeping torchvision's parameter names."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision

from effvid.models.backbone import Backbone
from effvid.models.registry import register_backbone
from effvid.models.weights import resolve_weights

__all__ = ["ResNetBackbone"]


class ResNetBackbone(Backbone):
    """A torchvision ResNet without ``avgpool``/``fc``.

    ::

        conv1 -> bn1 -> relu -> maxpool -> layer1 -> layer2 -> layer3 -> layer4   (stride 32)

    ``forward_stages`` returns the output of every stage, for methods that need intermediate maps.
    """

    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, net: torchvision.models.ResNet, num_classes: int | None = None) -> None:
        super().__init__(net.fc.in_features, num_classes)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) -> {"layer1": (N, C1, H/4, W/4), ..., "layer4": (N, C4, H/32, W/32)}."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            out[name] = x
        return out

    def forward_feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _resnet(
    builder: Callable[..., torchvision.models.ResNet],
    enum: type[torchvision.models.WeightsEnum],
    num_classes: int | None,
    weights: str | None,
) -> ResNetBackbone:
    tv_weights, local_path = resolve_weights(enum, weights)
    model = ResNetBackbone(builder(weights=tv_weights), num_classes=num_classes)
    if local_path is not None:
        model.load_weights(local_path)
    return model


@register_backbone()
def resnet18(*, num_classes: int | None = None, weights: str | None = None) -> ResNetBackbone:
    """ResNet-18 trunk, 512-d features."""
    return _resnet(torchvision.models.resnet18, torchvision.models.ResNet18_Weights, num_classes, weights)


@register_backbone()
def resnet34(*, num_classes: int | None = None, weights: str | None = None) -> ResNetBackbone:
    """ResNet-34 trunk, 512-d features."""
    return _resnet(torchvision.models.resnet34, torchvision.models.ResNet34_Weights, num_classes, weights)


@register_backbone()
def resnet50(*, num_classes: int | None = None, weights: str | None = None) -> ResNetBackbone:
    """ResNet-50 trunk, 2048-d features (FrameExit's backbone)."""
    return _resnet(torchvision.models.resnet50, torchvision.models.ResNet50_Weights, num_classes, weights)


@register_backbone()
def resnet101(*, num_classes: int | None = None, weights: str | None = None) -> ResNetBackbone:
    """ResNet-101 trunk, 2048-d features."""
    return _resnet(torchvision.models.resnet101, torchvision.models.ResNet101_Weights, num_classes, weights)
