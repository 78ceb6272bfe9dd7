"""The authors' checkpoints -> :class:`~frameexit.model.FrameExitModel` weights.

``activitynet_checkpoint_25gmac.pth`` / ``minikinetics_checkpoint_19.7gmac.pth`` are plain
``nn.DataParallel`` state dicts (``module.`` prefix) of the original
``ConditionalFrameExitInferenceModel``: a ResNet-50 as a Sequential without its fc (indices
0 conv1, 1 bn1, 4-7 layer1-4), ``mlp.layers.{0,1}``, ``exit_selector.{0..8}`` gates of 1x1
convolutions (4096->128->64) whose sigmoid means "continue", and ``classifiers.{0..9}``.

Conversion renames every key, reshapes the 1x1 convolutions to linear weights and negates the
gates' final layer (our gates output the probability of exiting); the converter is registered
as ``frameexit/original`` with the core, whose :func:`~effvid.model_files.load_weights` reads
the file and loads strictly: a missing, unexpected or mis-shaped key is an error listing all.
"""

from __future__ import annotations

import os
import re

import torch

from effvid.checkpoint import remap_state_dict
from effvid.model_files import load_weights, register_converter
from frameexit.model import FrameExitModel

__all__ = ["KIND", "convert_original_state_dict", "load_original_checkpoint"]

KIND = "frameexit"

RULES = [
    (r"^backbone\.0\.", "backbone.conv1."),
    (r"^backbone\.1\.", "backbone.bn1."),
    (r"^backbone\.4\.", "backbone.layer1."),
    (r"^backbone\.5\.", "backbone.layer2."),
    (r"^backbone\.6\.", "backbone.layer3."),
    (r"^backbone\.7\.", "backbone.layer4."),
    (r"^mlp\.layers\.", "mlp."),
    (r"^exit_selector\.(\d+)\.conv1\.", r"gates.\1.fc1."),
    (r"^exit_selector\.(\d+)\.conv2\.", r"gates.\1.fc2."),
    (r"^exit_selector\.(\d+)\.", r"gates.\1."),
]


@register_converter(KIND, "original")
def convert_original_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename/reshape/negate an original state dict (with or without ``module.``) to ours."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    out = remap_state_dict(state, RULES)
    for key in list(out):
        if re.match(r"^gates\.\d+\.fc[12]\.weight$", key) and out[key].dim() == 4:
            out[key] = out[key].flatten(1)  # 1x1 conv (O, I, 1, 1) -> linear (O, I)
        if re.match(r"^gates\.\d+\.linear\.(weight|bias)$", key):
            out[key] = -out[key]  # original: sigmoid = P(continue); ours: P(exit)
    return out


def load_original_checkpoint(model: FrameExitModel, path: str | os.PathLike[str]) -> None:
    """Load an authors' checkpoint file into ``model`` (strict; see the module docstring)."""
    load_weights(model, path, kind=KIND, fmt="original")
