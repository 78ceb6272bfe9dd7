"""The interface every effvid backbone implements (timm's ``forward_features`` idea)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["Backbone"]


class Backbone(nn.Module):
    """A 2D image trunk plus an optional linear classifier ``head``.

    ::

        x (N, 3, H, W) --trunk--> maps (N, C, h, w) --avg pool--> features (N, C) --head--> (N, K)

    Subclasses implement :meth:`forward_feature_maps` and set ``num_features`` (= C).
    ``head`` is ``nn.Identity`` when built without classes, so ``forward`` then returns features.
    """

    num_features: int

    def __init__(self, num_features: int, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_classes = num_classes
        self.head: nn.Module = nn.Linear(num_features, num_classes) if num_classes else nn.Identity()

    def forward_feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> last feature map (N, num_features, h, w)."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> globally average-pooled features (N, num_features)."""
        return self.forward_feature_maps(x).mean(dim=(2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(N, num_features) -> logits (N, num_classes), or the features when there is no head."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int | None) -> None:
        """Replace the head with a fresh ``Linear(num_features, num_classes)`` (None: no head)."""
        self.num_classes = num_classes
        if not num_classes:
            self.head = nn.Identity()
            return
        ref = next(self.parameters(), None)  # build the new head where the trunk lives
        kw = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
        self.head = nn.Linear(self.num_features, num_classes, **kw)

    def load_weights(self, path: str | Path) -> None:
        """Strictly load a local state_dict (trunk keys, plus ``head.*`` when this model has a head)."""
        from effvid.checkpoint import load_checked, load_state_dict_file

        state = load_state_dict_file(path)
        allow_missing = ("head.*",) if not any(k.startswith("head.") for k in state) else ()
        load_checked(self, state, allow_missing=allow_missing, source=str(path))
