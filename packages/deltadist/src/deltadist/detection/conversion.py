"""The authors' detection checkpoints -> our detectors' weights, loaded strictly.

* **EfficientDet**: the original vendored effdet v0.1.6 on timm 0.6; its module tree gives the
  same names as effdet 0.4 on timm 1.0 (``backbone.*``, ``fpn.resample.*``,
  ``fpn.cell.<i>.fnode.<j>.{combine,after_combine}.*``, ``{class,box}_net.{conv_rep,bn_rep,predict}.*``),
  so its checkpoints only need the delta layers' renaming of :mod:`deltadist.conversion`
  (``W`` / ``g_Wa`` / ``g_Wb.0/1`` / ``g_gate.bias``, ``model.`` prefix):
  :func:`load_original_efficientdet`. Build the model with ``bias_mode="original"`` (the
  authors' students carry a bias) and the detection rank (``min`` / 16).
* **Faster R-CNN**: mmdet 2.x names (mmtracking's ``detector.`` prefix optional) are renamed to
  the torchvision modules of :func:`~deltadist.detection.faster_rcnn.faster_rcnn_r101_dc5`;
  mmdet's classifier puts background last (``fc_cls`` rows ``0..K-1`` classes, ``K`` background)
  and regresses boxes for the K classes only, torchvision puts background first and has a
  (never used) background box row: rows are reordered and the background box rows are zero.
  Both the delta-distilled layout and a frame-based mmdet checkpoint load
  (:func:`load_original_faster_rcnn`).

Every key is renamed or rejected (the error names the checkpoint's key), and loading is strict.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from deltadist.conversion import load_frame_based_state_dict, load_original_state_dict
from effvid.model_files import read_state_dict

__all__ = ["load_original_efficientdet", "load_original_faster_rcnn", "mmdet_to_torchvision"]

_DELTA_SUFFIX = re.compile(r"\.(?:W|g_Wa|g_Wb\.[01]|g_W(?:\.[01])?|g_gate)(?=\.)")

_MMDET_PREFIXES = [
    ("backbone.", "backbone.body."),
    ("neck.convs.0.conv.", "backbone.mapper."),
    ("rpn_head.rpn_conv.", "rpn.head.conv.0.0."),
    ("rpn_head.rpn_cls.", "rpn.head.cls_logits."),
    ("rpn_head.rpn_reg.", "rpn.head.bbox_pred."),
    ("roi_head.bbox_head.shared_fcs.0.", "roi_heads.box_head.fc6."),
    ("roi_head.bbox_head.shared_fcs.1.", "roi_heads.box_head.fc7."),
    ("roi_head.bbox_head.fc_cls.", "roi_heads.box_predictor.cls_score."),
    ("roi_head.bbox_head.fc_reg.", "roi_heads.box_predictor.bbox_pred."),
]


def _background_first(key: str, value: torch.Tensor) -> torch.Tensor:
    if key.startswith("roi_heads.box_predictor.cls_score."):
        return torch.cat([value[-1:], value[:-1]])  # mmdet: background is the last class
    if key.startswith("roi_heads.box_predictor.bbox_pred."):
        return torch.cat([torch.zeros_like(value[:4]), value])  # torchvision: a background box row
    return value


def mmdet_to_torchvision(
    state: Mapping[str, torch.Tensor], *, source: str = "<state dict>"
) -> dict[str, torch.Tensor]:
    """mmdet / mmtracking Faster R-CNN keys -> our torchvision model's (delta suffixes kept)."""
    state = {k: v for k, v in state.items() if not k.startswith("loss.")}
    out = {}
    for key, value in state.items():
        name = key[len("model.") :] if key.startswith("model.") else key
        name = name[len("detector.") :] if name.startswith("detector.") else name
        for old, new in _MMDET_PREFIXES:
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        else:
            raise ValueError(
                f"{source}: key '{key}' is not a key of mmdet's Faster R-CNN R101-DC5 (backbone.*, "
                "neck.convs.0.conv.*, rpn_head.rpn_conv/rpn_cls/rpn_reg.*, roi_head.bbox_head.shared_fcs.0/1, "
                "fc_cls, fc_reg)"
            )
        out[name] = _background_first(name, value)
    return out


def _is_delta_layout(state: Mapping[str, torch.Tensor]) -> bool:
    return any(_DELTA_SUFFIX.search(k) for k in state)


def load_original_faster_rcnn(model: nn.Module, path_or_state: str | os.PathLike[str] | Mapping) -> None:
    """Load an mmdet-layout Faster R-CNN checkpoint (delta-distilled or frame-based) into the
    converted ``model``, strictly."""
    if isinstance(path_or_state, Mapping):
        state, source = path_or_state, "<state dict>"
    else:
        source = str(path_or_state)
        state = read_state_dict(path_or_state, expected="an mmdet Faster R-CNN checkpoint")
    renamed = mmdet_to_torchvision(state, source=source)
    if _is_delta_layout(renamed):
        load_original_state_dict(model, renamed, source=source)
    else:
        load_frame_based_state_dict(model, renamed, source=source)


def load_original_efficientdet(model: nn.Module, path_or_state: str | os.PathLike[str] | Mapping) -> None:
    """Load the authors' EfficientDet checkpoint (delta-distilled or frame-based, vendored effdet
    names) into the converted effdet ``model``, strictly."""
    if isinstance(path_or_state, Mapping):
        state, source = path_or_state, "<state dict>"
    else:
        source = str(path_or_state)
        state = read_state_dict(path_or_state, expected="an EfficientDet checkpoint")
    if _is_delta_layout(state):
        load_original_state_dict(model, state, source=source)
    else:
        load_frame_based_state_dict(model, state, source=source)
