"""Faster R-CNN R101-DC5 from torchvision parts: structure, the detection rule's 105 delta layers,
exactness with exact students, a training step on rolled clips, MACs at 584x966."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from deltadist.cost import clip_macs, measure_unit_costs
from deltadist.delta import delta_layers, set_clip_length
from deltadist.detection.faster_rcnn import (
    DenseStage,
    convert_faster_rcnn,
    faster_rcnn_r101_dc5,
    roi_head_macs,
)


class _NarrowBottleneck(Bottleneck):
    expansion = 1  # stage outputs 64..512 instead of 256..2048: a CPU-sized trunk of the same shape


def _tiny_trunk():
    trunk = ResNet(
        _NarrowBottleneck, [1, 1, 1, 1], width_per_group=8, replace_stride_with_dilation=[False, False, True]
    )
    trunk.layer4[0].conv2.dilation, trunk.layer4[0].conv2.padding = (2, 2), (2, 2)
    return trunk


#: the options of faster_rcnn_r101_dc5 that make the tests' small model (with _tiny_trunk())
TINY_OPTIONS = {"mapper_channels": 32, "representation": 64}


def _tiny(num_classes: int = 3):
    return faster_rcnn_r101_dc5(
        num_classes=num_classes, min_size=64, max_size=96, trunk=_tiny_trunk(), **TINY_OPTIONS
    )


def test_r101_dc5_structure_and_rule():
    with torch.device("meta"):
        model = faster_rcnn_r101_dc5(num_classes=30).eval()
    body = model.backbone.body
    assert all(b.conv2.stride == (1, 1) and b.conv2.dilation == (2, 2) for b in body.layer4)
    assert body.layer4[0].downsample[0].stride == (1, 1) and body.layer3[0].conv2.stride == (2, 2)
    assert model.backbone.mapper.in_channels == 2048 and model.backbone.mapper.kernel_size == (3, 3)
    assert model.rpn.head.cls_logits.out_channels == 12  # 4 sizes x 3 ratios
    assert model.roi_heads.box_predictor.cls_score.out_features == 31
    assert model.roi_heads.box_coder.weights == (5.0, 5.0, 5.0, 5.0)  # box stds 0.2 (the original's)
    objectness, _ = DenseStage(model)(torch.empty(1, 3, 584, 966, device="meta"))
    assert objectness[0].shape == (1, 12, 37, 61)  # output stride 16
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    names = convert_faster_rcnn(model)
    assert len(convs) == 108 and names == convs[1:-2] and len(names) == 105
    assert convs[0] == "backbone.body.conv1" and convs[-2:] == ["rpn.head.cls_logits", "rpn.head.bbox_pred"]
    layers = delta_layers(model)
    assert [n for n, m in layers.items() if m.teacher.bias is not None] == [
        "backbone.mapper",
        "rpn.head.conv.0.0",
    ]
    assert layers["backbone.mapper"].student_lowrank.rank == 512 // 16


def test_delta_faster_rcnn_equals_the_teacher_with_exact_students_and_trains_on_clips():
    torch.manual_seed(0)
    teacher = _tiny().eval()
    delta = _tiny().eval()
    delta.load_state_dict(teacher.state_dict())
    convert_faster_rcnn(delta)
    for layer in delta_layers(delta).values():
        layer.force = "full"
    base = torch.rand(2, 1, 3, 64, 96)
    frames = (base + 0.05 * torch.randn(2, 3, 3, 64, 96)).clamp(0, 1).flatten(0, 1)  # 2 clips of 3
    set_clip_length(delta, 3)
    with torch.no_grad():
        got = DenseStage(delta)(frames)
        want = DenseStage(teacher)(frames)
        dets = delta(list(frames))
    for g, w in zip(got[0] + got[1], want[0] + want[1]):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    assert len(dets) == 6 and set(dets[0]) == {"boxes", "scores", "labels"}
    # training: the detector's own losses on every frame of the rolled clips
    delta.train()
    set_clip_length(delta, 2)
    for layer in delta_layers(delta).values():
        layer.force = None
    targets = [{"boxes": torch.tensor([[10.0, 8.0, 50.0, 40.0]]), "labels": torch.tensor([1])}] * 4
    losses = delta(list(frames[:4]), targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert all(layer.gate_value is not None for layer in delta_layers(delta).values())


def test_r101_dc5_macs_per_frame_at_584x966(capsys):
    with torch.device("meta"):
        model = faster_rcnn_r101_dc5(num_classes=30).eval()
    convert_faster_rcnn(model)
    for layer in delta_layers(model).values():
        layer.force = "lowrank"
    dense = DenseStage(model)
    units = measure_unit_costs(dense, (3, 584, 966))
    roi = roi_head_macs(model, 300)  # the original's 300 test proposals per frame
    frame_based = clip_macs(dense, units, 1) + roi
    amortised = clip_macs(dense, units, 10) / 10 + roi
    with capsys.disabled():
        print(
            f"\nFaster R-CNN R101-DC5 584x966 GMac/frame (300 RoIs: {roi / 1e9:.3f}): "
            f"frame {frame_based / 1e9:.3f} -> delta/10 {amortised / 1e9:.3f}"
        )
    assert 145e9 < frame_based < 152e9  # published 149.1
    assert 29e9 < amortised < 32e9  # published 28.81 (see the README on the difference)
