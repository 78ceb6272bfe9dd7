"""Which convolutions of a detector become delta layers: the original's detection rule.

The original takes every ``nn.Conv2d`` of the detector in module (registration) order, drops the
first (the RGB stem) and the last two (``[1:-2]``), and for EfficientDet also drops the
squeeze-excitation convolutions (names containing ``.se.``) and the depthwise ones
(``groups == in_channels``), *after* the slice. Detection uses rank ``min(Cin, Cout) // 16``.

EfficientDet's quirk follows from the order: its class net is registered before its box net, so
the last two convolutions are ``box_net.predict.conv_dw`` / ``conv_pw``; the class-logit
convolution ``class_net.predict.conv_pw`` *is* converted and the box predictor is not.
"""

from __future__ import annotations

from torch import nn

from deltadist.delta import BiasMode, convert_to_delta
from deltadist.students import Reduction

__all__ = ["DETECTION_FACTOR_CH", "DETECTION_REDUCTION", "convert_detector", "detection_layer_names"]

DETECTION_FACTOR_CH = 16
DETECTION_REDUCTION: Reduction = "min"


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels


def detection_layer_names(model: nn.Module, *, drop_se_and_depthwise: bool) -> list[str]:
    """Names of the convolutions the original converts, in module order (``[1:-2]`` of all Conv2d,
    then without ``.se.`` and depthwise convolutions when ``drop_se_and_depthwise``)."""
    convs = [(n, m) for n, m in model.named_modules() if n and isinstance(m, nn.Conv2d)]
    if len(convs) < 4:
        raise ValueError(
            f"{type(model).__name__} has {len(convs)} Conv2d; the detection rule [1:-2] needs 4 or more"
        )
    kept = convs[1:-2]
    if drop_se_and_depthwise:
        kept = [(n, m) for n, m in kept if ".se." not in f".{n}." and not _is_depthwise(m)]
    return [n for n, _ in kept]


def convert_detector(
    model: nn.Module,
    *,
    drop_se_and_depthwise: bool,
    factor_ch: int = DETECTION_FACTOR_CH,
    reduction: Reduction = DETECTION_REDUCTION,
    gate_init: float = -1.0,
    bias_mode: BiasMode = "corrected",
) -> list[str]:
    """Convert ``model`` in place by the detection rule; returns the delta layers' names."""
    names = detection_layer_names(model, drop_se_and_depthwise=drop_se_and_depthwise)
    # the names are exact module names (no glob characters), so include= selects exactly them
    return convert_to_delta(
        model,
        include=names,
        skip_first=0,
        skip_last=0,
        factor_ch=factor_ch,
        reduction=reduction,
        gate_init=gate_init,
        bias_mode=bias_mode,
    )
