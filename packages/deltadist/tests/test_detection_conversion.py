"""The authors' detection checkpoints, built here in their layouts (vendored effdet names /
mmdet names, delta-distilled keys), load strictly into our converted detectors."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_detection_faster_rcnn import _tiny as tiny_faster_rcnn

from deltadist.delta import delta_layers
from deltadist.detection.conversion import load_original_efficientdet, load_original_faster_rcnn
from deltadist.detection.faster_rcnn import convert_faster_rcnn
from effvid.checkpoint import CheckpointMismatchError

_TO_ORIGINAL = [
    (".teacher.", ".W."),
    (".student_full.", ".g_Wa."),
    (".student_lowrank.vertical.", ".g_Wb.0."),
    (".student_lowrank.horizontal.", ".g_Wb.1."),
    (".gate.logit", ".g_gate.bias"),
]

_TO_MMDET = [
    ("backbone.body.", "backbone."),
    ("backbone.mapper.", "neck.convs.0.conv."),
    ("rpn.head.conv.0.0.", "rpn_head.rpn_conv."),
    ("rpn.head.cls_logits.", "rpn_head.rpn_cls."),
    ("rpn.head.bbox_pred.", "rpn_head.rpn_reg."),
    ("roi_heads.box_head.fc6.", "roi_head.bbox_head.shared_fcs.0."),
    ("roi_heads.box_head.fc7.", "roi_head.bbox_head.shared_fcs.1."),
    ("roi_heads.box_predictor.cls_score.", "roi_head.bbox_head.fc_cls."),
    ("roi_heads.box_predictor.bbox_pred.", "roi_head.bbox_head.fc_reg."),
]


def _original_layout(model) -> dict[str, torch.Tensor]:
    """Our converted model's weights under the authors' delta-distilled key names (``model.`` prefix)."""
    out = {}
    for key, value in model.state_dict().items():
        for ours, theirs in _TO_ORIGINAL:
            key = key.replace(ours, theirs)
        out[f"model.{key}"] = value.clone()
    return out


def _randomise(model) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
        for i, layer in enumerate(delta_layers(model).values()):
            layer.gate.logit.fill_(1.0 if i % 3 == 0 else -1.0)


def _assert_same(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


def test_efficientdet_checkpoint_in_the_vendored_layout_loads_strictly(tmp_path):
    pytest.importorskip("effdet")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from deltadist.detection.efficientdet import convert_efficientdet, efficientdet_tiny

    source = efficientdet_tiny(num_classes=3)
    convert_efficientdet(source, bias_mode="original")
    _randomise(source)
    state = _original_layout(source)
    assert "model.class_net.predict.conv_pw.g_Wb.1.bias" in state  # the class-logit conv is delta
    assert "model.box_net.predict.conv_pw.weight" in state  # the box predictor is not
    state["model.class_net.predict.conv_pw.g_W.weight"] = state["model.class_net.predict.conv_pw.g_Wa.weight"]
    torch.save({"state_dict": state}, tmp_path / "effdet-delta.pth")
    target = efficientdet_tiny(num_classes=3)
    convert_efficientdet(target, bias_mode="original")
    load_original_efficientdet(target, tmp_path / "effdet-delta.pth")
    _assert_same(source, target)
    # a frame-based checkpoint: the teachers, students initialised from them
    plain = efficientdet_tiny(num_classes=3)
    frame = efficientdet_tiny(num_classes=3)
    convert_efficientdet(frame)
    load_original_efficientdet(frame, plain.state_dict())
    layer = delta_layers(frame)["class_net.predict.conv_pw"]
    torch.testing.assert_close(layer.teacher.weight, plain.class_net.predict.conv_pw.weight)
    torch.testing.assert_close(layer.student_full.weight, plain.class_net.predict.conv_pw.weight)
    # strict: a missing key is an error naming it
    del state["model.backbone.bn1.weight"]
    with pytest.raises(CheckpointMismatchError, match="backbone.bn1.weight"):
        load_original_efficientdet(target, state)


def _mmdet_layout(model, *, delta: bool) -> dict[str, torch.Tensor]:
    state = (
        _original_layout(model) if delta else {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    )
    out = {}
    for key, value in state.items():
        name = key[len("model.") :]
        for ours, theirs in _TO_MMDET:
            if name.startswith(ours):
                name = theirs + name[len(ours) :]
                break
        if name.startswith("roi_head.bbox_head.fc_cls."):
            value = torch.cat([value[1:], value[:1]])  # background last
        if name.startswith("roi_head.bbox_head.fc_reg."):
            value = value[4:]  # no background box
        out[f"detector.{name}"] = value
    return out


def test_faster_rcnn_checkpoint_in_mmdet_names_loads_strictly(tmp_path):
    source = tiny_faster_rcnn()
    convert_faster_rcnn(source, bias_mode="original")
    _randomise(source)
    with torch.no_grad():
        source.roi_heads.box_predictor.bbox_pred.weight[:4] = 0  # torchvision's unused background rows
        source.roi_heads.box_predictor.bbox_pred.bias[:4] = 0
    state = _mmdet_layout(source, delta=True)
    assert "detector.neck.convs.0.conv.g_Wb.1.bias" in state and "detector.rpn_head.rpn_cls.weight" in state
    assert state["detector.roi_head.bbox_head.fc_reg.weight"].shape[0] == 4 * 3
    torch.save(state, tmp_path / "frcnn-delta.pth")
    target = tiny_faster_rcnn()
    convert_faster_rcnn(target, bias_mode="original")
    load_original_faster_rcnn(target, tmp_path / "frcnn-delta.pth")
    _assert_same(source, target)
    # frame-based mmdet weights
    plain = tiny_faster_rcnn()
    frame = tiny_faster_rcnn()
    convert_faster_rcnn(frame)
    load_original_faster_rcnn(frame, _mmdet_layout(plain, delta=False))
    torch.testing.assert_close(
        delta_layers(frame)["backbone.mapper"].teacher.weight, plain.backbone.mapper.weight, rtol=0, atol=0
    )
    torch.testing.assert_close(
        frame.roi_heads.box_predictor.cls_score.weight, plain.roi_heads.box_predictor.cls_score.weight
    )
    state["detector.roi_head.mask_head.conv.weight"] = torch.zeros(1)
    with pytest.raises(
        ValueError, match="key 'detector.roi_head.mask_head.conv.weight' is not a key of mmdet"
    ):
        load_original_faster_rcnn(target, state)
