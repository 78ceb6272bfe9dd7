"""Backbone registry: plain typed builders behind one interface.

    >>> from effvid.models import get_backbone, list_backbones
    >>> net = get_backbone("resnet50")              # no weights unless asked
    >>> net.num_features
    2048
    >>> feats = net.forward_features(frames)        # (N, 3, H, W) -> (N, 2048)

Every backbone is a :class:`Backbone`: ``forward_feature_maps`` (last map), ``forward_stages``
(every stage's map) and ``feature_info``, ``forward_features`` (pooled vector), ``forward_head``,
``reset_classifier``, ``num_features``. Trunk parameters keep torchvision's names, so a
torchvision state_dict (minus its classifier) loads strictly; builders pass other keywords on to
torchvision. ``replace_modules`` / ``revert_modules`` do layer surgery on any built model.
"""

from effvid.models import resnet, small, torchvision_nets  # noqa: F401  (registers the builders)
from effvid.models.backbone import Backbone, StageInfo
from effvid.models.registry import BACKBONES, get_backbone, list_backbones, register_backbone
from effvid.models.surgery import Revertible, replace_modules, revert_modules, select_modules

__all__ = [
    "BACKBONES",
    "Backbone",
    "StageInfo",
    "Revertible",
    "get_backbone",
    "list_backbones",
    "register_backbone",
    "replace_modules",
    "revert_modules",
    "select_modules",
]
