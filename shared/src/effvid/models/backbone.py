"""The interface every effvid backbone implements (timm's ``forward_features`` idea)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["Backbone", "StageInfo"]


@dataclass(frozen=True)
class StageInfo:
    """One stage's output: its module name, channels and stride relative to the input."""

    name: str
    channels: int
    reduction: int


class Backbone(nn.Module):
    """A 2D image trunk made of a stem and named stages, plus an optional linear classifier ``head``.

    ::

        x (N, 3, H, W) --stem--> --stage_names[0]--> ... --stage_names[-1]--> maps (N, C, h, w)
            --avg pool--> features (N, C) --head--> (N, K)

    Subclasses set ``stage_names`` (module names of the stages, in order, e.g. ``layer1`` or
    ``features.3``) and override
    :meth:`stem` when the trunk starts with layers outside every stage. Everything else -
    multi-scale ``forward_stages``, ``feature_info``, pooled features, the head - is written
    here once. ``head`` is ``nn.Identity`` when built without classes.
    """

    num_features: int
    stage_names: tuple[str, ...] = ()

    def __init__(self, num_features: int, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_classes = num_classes
        self.head: nn.Module = nn.Linear(num_features, num_classes) if num_classes else nn.Identity()

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Layers before the first stage (identity unless a subclass has some)."""
        return x

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) -> {stage name: its output (N, C_i, H/r_i, W/r_i)}, in stage order."""
        x = self.stem(x)
        out = {}
        for name in self.stage_names:
            x = self.get_submodule(name)(x)
            out[name] = x
        return out

    def forward_feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> last feature map (N, num_features, h, w)."""
        x = self.stem(x)
        for name in self.stage_names:
            x = self.get_submodule(name)(x)
        return x

    def feature_info(self, input_size: int = 224) -> list[StageInfo]:
        """Channels and stride of every stage, found by a forward on the meta device."""
        import copy

        meta = copy.deepcopy(self).to("meta").eval()
        with torch.no_grad():
            maps = meta.forward_stages(torch.empty(1, 3, input_size, input_size, device="meta"))
        return [StageInfo(n, m.shape[1], input_size // m.shape[-1]) for n, m in maps.items()]

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
        from effvid.checkpoint import load_checked
        from effvid.model_files import read_state_dict

        state = read_state_dict(path, expected="a backbone state_dict")
        allow_missing = ("head.*",) if not any(k.startswith("head.") for k in state) else ()
        load_checked(self, state, allow_missing=allow_missing, source=str(path))
