"""MobileNetV2 and EfficientNet-B0/B3 trunks (torchvision ``features``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torchvision
from torch import nn

from effvid.models.backbone import Backbone
from effvid.models.registry import register_backbone
from effvid.models.weights import resolve_weights

__all__ = ["FeaturesBackbone"]


class FeaturesBackbone(Backbone):
    """A torchvision net whose trunk is a ``features`` Sequential followed by a linear classifier.

    ::

        features[0] -> ... -> features[-1]  (N, C, H/32, W/32)
    """

    def __init__(self, features: nn.Sequential, num_features: int, num_classes: int | None = None) -> None:
        super().__init__(num_features, num_classes)
        self.features = features
        self.stage_names = tuple(f"features.{i}" for i in range(len(features)))


def _features_net(
    builder: Callable[..., nn.Module],
    enum: type[torchvision.models.WeightsEnum],
    num_classes: int | None,
    weights: str | None,
    kwargs: dict[str, Any],
) -> FeaturesBackbone:
    tv_weights, local_path = resolve_weights(enum, weights)
    net = builder(weights=tv_weights, **kwargs)
    linear = next(m for m in net.classifier.modules() if isinstance(m, nn.Linear))
    model = FeaturesBackbone(net.features, linear.in_features, num_classes=num_classes)
    if local_path is not None:
        model.load_weights(local_path)
    return model


@register_backbone()
def mobilenet_v2(
    *, num_classes: int | None = None, weights: str | None = None, **kwargs: Any
) -> FeaturesBackbone:
    """MobileNetV2 trunk, 1280-d features. Other keywords go to torchvision's builder."""
    return _features_net(
        torchvision.models.mobilenet_v2, torchvision.models.MobileNet_V2_Weights, num_classes, weights, kwargs
    )


@register_backbone()
def efficientnet_b0(
    *, num_classes: int | None = None, weights: str | None = None, **kwargs: Any
) -> FeaturesBackbone:
    """EfficientNet-B0 trunk, 1280-d features (native input 224). Other keywords go to torchvision's builder."""
    return _features_net(
        torchvision.models.efficientnet_b0,
        torchvision.models.EfficientNet_B0_Weights,
        num_classes,
        weights,
        kwargs,
    )


@register_backbone()
def efficientnet_b3(
    *, num_classes: int | None = None, weights: str | None = None, **kwargs: Any
) -> FeaturesBackbone:
    """EfficientNet-B3 trunk, 1536-d features (native input 300). Other keywords go to torchvision's builder."""
    return _features_net(
        torchvision.models.efficientnet_b3,
        torchvision.models.EfficientNet_B3_Weights,
        num_classes,
        weights,
        kwargs,
    )
