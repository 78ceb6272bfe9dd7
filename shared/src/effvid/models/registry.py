"""A plain dict registry of backbone builders (torchvision's ``register_model`` idea)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, TypeVar

from effvid.models.backbone import Backbone

__all__ = ["get_backbone", "list_backbones", "register_backbone"]

_BUILDERS: dict[str, Callable[..., Backbone]] = {}

F = TypeVar("F", bound=Callable[..., Backbone])


def register_backbone(name: str | None = None) -> Callable[[F], F]:
    """Decorator: register a keyword-only builder under ``name`` (default: its function name)."""

    def wrap(fn: F) -> F:
        key = name or fn.__name__
        if key in _BUILDERS:
            raise ValueError(f"backbone '{key}' is already registered")
        _BUILDERS[key] = fn
        return fn

    return wrap


def list_backbones() -> list[str]:
    return sorted(_BUILDERS)


def get_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build a registered backbone; keyword arguments go to its builder.

    Common keywords: ``num_classes`` (None: no classifier head) and ``weights`` (None; a local
    state_dict path; or a torchvision weight-enum name such as ``"IMAGENET1K_V2"``, which
    torchvision may download).
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_BUILDERS), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"unknown backbone '{name}'.{hint} Available: {', '.join(list_backbones())}") from None
    return builder(**kwargs)
