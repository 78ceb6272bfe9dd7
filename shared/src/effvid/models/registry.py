"""The backbone registry: keyword-only builders by name (torchvision's ``register_model`` idea)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from effvid.models.backbone import Backbone
from effvid.registry import Registry

__all__ = ["BACKBONES", "get_backbone", "list_backbones", "register_backbone"]

BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")

F = TypeVar("F", bound=Callable[..., Backbone])


def register_backbone(name: str | None = None) -> Callable[[F], F]:
    """Decorator: register a keyword-only builder under ``name`` (default: its function name)."""

    def wrap(fn: F) -> F:
        BACKBONES.register(name or fn.__name__, fn)
        return fn

    return wrap


def list_backbones() -> list[str]:
    return BACKBONES.names()


def get_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build a registered backbone; keyword arguments go to its builder.

    Common keywords: ``num_classes`` (None: no classifier head) and ``weights`` (None; a local
    state_dict path; or a torchvision weight-enum name such as ``"IMAGENET1K_V2"``, which
    torchvision may download). Torchvision-based builders pass any other keyword to torchvision
    (``norm_layer``, ``replace_stride_with_dilation``, ``width_per_group``, ...).
    """
    return BACKBONES.get(name)(**kwargs)
