"""A small Faster R-CNN built as faster_rcnn_r101_dc5 (narrow ResNet trunk) through the detection
commands' path: frame-based training steps, the delta-converted model's step with all three loss
terms, its MACs per frame, and the authors' mmdet checkpoints loaded by the commands' loader."""

from __future__ import annotations

import math

import pytest
import torch
from test_detection_conversion import _mmdet_layout, _randomise
from test_detection_faster_rcnn import TINY_OPTIONS, _tiny_trunk

from deltadist.delta import delta_layers
from deltadist.detection.commands import load_detector_weights
from deltadist.detection.data import VidPairs, collate_detection, read_vid_json
from deltadist.detection.detectors import build_detector
from deltadist.detection.faster_rcnn import roi_head_macs
from deltadist.detection.synthetic import generate_vid_detection
from deltadist.detection.training import DetectionDistillationLoss, train_delta_detector, train_frame_detector
from effvid.data import open_storage
from effvid.engine import EngineConfig
from effvid.model_files import ModelFileError

RPN_ROI = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


def _detector(*, delta: bool, bias_mode: str = "corrected"):
    return build_detector(
        "faster_rcnn_r101_dc5",
        num_classes=3,
        size=64,
        delta=delta,
        bias_mode=bias_mode,  # type: ignore[arg-type]
        trunk=_tiny_trunk(),
        **TINY_OPTIONS,
    )


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("frcnn")
    paths = generate_vid_detection(root, num_videos={"train": 2}, num_frames=6, size=64, num_classes=3)
    return VidPairs(
        read_vid_json(paths["train"]), open_storage("frames", paths["frames"]), size=64, frames_per_video=2
    )


def _float_state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items() if v.dtype.is_floating_point}


def _changed(before, net) -> set[str]:
    after = net.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def test_frame_based_faster_rcnn_trains_a_few_steps(pairs, tmp_path):
    torch.manual_seed(0)
    detector = _detector(delta=False)
    assert detector.net.transform.min_size == (64,) and detector.net.transform.image_std == [1.0, 1.0, 1.0]
    batch = collate_detection([pairs[0], pairs[1]])
    detector.net.train()
    terms = detector.task_loss(batch["video"].flatten(0, 1), batch["targets"])
    assert set(terms) == RPN_ROI and all(math.isfinite(float(v.detach())) for v in terms.values())
    before = _float_state(detector.net)
    train_frame_detector(
        detector.net,
        detector.task_loss,
        pairs,
        cfg=EngineConfig(epochs=1, progress=False),
        run_dir=tmp_path / "frame",
        batch_size=2,  # 4 pairs: two steps
        lr=1e-3,
    )
    changed = _changed(before, detector.net)
    for key in ("backbone.body.conv1.weight", "backbone.mapper.weight", "rpn.head.cls_logits.weight"):
        assert key in changed
    assert "roi_heads.box_predictor.cls_score.weight" in changed
    assert all(torch.isfinite(p).all() for p in detector.net.parameters())
    # the plain network's MACs: the convolutional part + the box head on 300 RoIs
    assert detector.macs_per_frame(10) > 0


def test_delta_faster_rcnn_trains_with_task_distillation_and_cost(pairs, tmp_path):
    torch.manual_seed(0)
    teacher = _detector(delta=False)
    torch.save(teacher.net.state_dict(), tmp_path / "teacher.pth")
    detector = _detector(delta=True)
    load_detector_weights(detector, str(tmp_path / "teacher.pth"), "frame_based")
    layers = delta_layers(detector.net)
    convs = [n for n, m in teacher.net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert list(layers) == convs[1:-2]  # the detection rule: all but the stem and the two RPN predictors
    torch.testing.assert_close(layers["backbone.mapper"].teacher.weight, teacher.net.backbone.mapper.weight)
    costs = detector.layer_costs()
    assert list(costs.names) == list(layers) and costs.names[-1] == "rpn.head.conv.0.0"
    assert sum(costs.values) == pytest.approx(1.0)
    loss = DetectionDistillationLoss(
        detector.net, detector.task_loss, costs, alpha=1000.0, beta=10.0, normalise="none"
    )
    detector.net.train()
    total, logs = loss(collate_detection([pairs[0], pairs[1]]))
    assert RPN_ROI <= set(logs) and logs["distill_loss"] > 0 and logs["cost_loss"] > 0
    want = logs["task_loss"] + 1000.0 * logs["distill_loss"] + 10.0 * logs["cost_loss"]
    assert math.isfinite(want) and float(total.detach()) == pytest.approx(want, rel=1e-5)
    total.backward()
    assert all(layer.gate.logit.grad is not None for layer in layers.values())
    detector.net.zero_grad()
    before = _float_state(detector.net)
    train_delta_detector(
        loss,
        pairs,
        cfg=EngineConfig(epochs=1, progress=False, grad_clip=3.0),
        run_dir=tmp_path / "delta",
        batch_size=2,
        lr=5e-5,
        weight_decay=1e-4,
    )
    changed = _changed(before, detector.net)
    assert (
        "backbone.mapper.gate.logit" in changed
        and "backbone.mapper.student_lowrank.vertical.weight" in changed
    )
    assert "roi_heads.box_predictor.cls_score.weight" in changed
    assert all(torch.isfinite(p).all() for p in detector.net.parameters())
    # MACs per frame amortised over 10 frames, every layer on its (low-rank) choice: the convolutional
    # part well below the teacher's
    assert all(layer.choice() == "lowrank" for layer in layers.values())
    roi = roi_head_macs(teacher.net, 300)  # the box head on 300 RoIs: the same in both, most of it at 64x64
    assert detector.macs_per_frame(10) - roi < 0.7 * (teacher.macs_per_frame(10) - roi)  # 62 % at this width


def test_the_commands_load_the_authors_mmdet_checkpoints(tmp_path):
    torch.manual_seed(1)
    source = _detector(delta=True, bias_mode="original")
    _randomise(source.net)
    with torch.no_grad():
        source.net.roi_heads.box_predictor.bbox_pred.weight[:4] = 0  # torchvision's background rows
        source.net.roi_heads.box_predictor.bbox_pred.bias[:4] = 0
    torch.save(_mmdet_layout(source.net, delta=True), tmp_path / "delta.pth")
    target = _detector(delta=True, bias_mode="original")
    load_detector_weights(target, str(tmp_path / "delta.pth"), "original")
    want = source.net.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in target.net.state_dict().items())
    # a frame-based mmdet checkpoint into the plain network
    plain = _detector(delta=False)
    with torch.no_grad():
        plain.net.roi_heads.box_predictor.bbox_pred.weight[:4] = 0
        plain.net.roi_heads.box_predictor.bbox_pred.bias[:4] = 0
    torch.save(_mmdet_layout(plain.net, delta=False), tmp_path / "frame.pth")
    loaded = _detector(delta=False)
    load_detector_weights(loaded, str(tmp_path / "frame.pth"), "original")
    assert all(torch.equal(v, plain.net.state_dict()[k]) for k, v in loaded.net.state_dict().items())
    # the delta-distilled file into a plain network: an error saying which option fits
    with pytest.raises(
        ModelFileError, match="delta.pth: holds a delta-distilled model; convert it with --model.delta true"
    ):
        load_detector_weights(_detector(delta=False), str(tmp_path / "delta.pth"), "original")
