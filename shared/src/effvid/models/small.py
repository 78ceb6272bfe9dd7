"""Small CNNs that train on 2 CPU cores in minutes: for tests and the synthetic benchmark."""

from __future__ import annotations

from torch import nn

from effvid.models.backbone import Backbone
from effvid.models.registry import register_backbone

__all__ = ["TinyCNN"]


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyCNN(Backbone):
    """Four stride-2 conv-BN-ReLU stages (widths w, 2w, 4w, 8w), each followed by one stride-1 conv.

    ::

        x (N, 3, H, W) -> stages.0 (N, w, H/2, W/2) -> ... -> stages.3 (N, 8w, H/16, W/16)
    """

    stage_names = ("stages.0", "stages.1", "stages.2", "stages.3")

    def __init__(self, width: int = 16, num_classes: int | None = None) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        widths = [width, 2 * width, 4 * width, 8 * width]
        super().__init__(widths[-1], num_classes)
        stages, cin = [], 3
        for w in widths:
            stages.append(nn.Sequential(_conv_bn_relu(cin, w, 2), _conv_bn_relu(w, w, 1)))
            cin = w
        self.stages = nn.Sequential(*stages)


@register_backbone()
def tiny_cnn(*, num_classes: int | None = None, weights: str | None = None, width: int = 16) -> TinyCNN:
    """A ~0.3 M-parameter CNN (width 16: 128-d features); ``weights`` may name a local state_dict."""
    model = TinyCNN(width=width, num_classes=num_classes)
    if weights is not None:
        model.load_weights(weights)
    return model
