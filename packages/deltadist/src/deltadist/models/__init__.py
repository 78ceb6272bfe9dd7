"""Segmentation networks that Delta Distillation converts, behind a plain name -> builder registry.

>>> from deltadist.models import get_model, list_models
>>> net = get_model("ddrnet23_slim", num_classes=19)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from deltadist.models.ddrnet import DualResNet, ddrnet23, ddrnet23_slim, ddrnet39
from deltadist.models.hrnet import HighResolutionNet, hrnet_w18_small_v2
from deltadist.models.tiny import TinySegNet, tiny_segnet

__all__ = ["DualResNet", "HighResolutionNet", "TinySegNet", "get_model", "list_models"]

_MODELS: dict[str, Callable[..., nn.Module]] = {
    "ddrnet23_slim": ddrnet23_slim,
    "ddrnet23": ddrnet23,
    "ddrnet39": ddrnet39,
    "hrnet_w18_small_v2": hrnet_w18_small_v2,
    "tiny_segnet": tiny_segnet,
}


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_model(name: str, **kwargs) -> nn.Module:
    """Build the named network (keyword arguments go to its builder)."""
    try:
        builder = _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model '{name}'; known: {list_models()}") from None
    return builder(**kwargs)
