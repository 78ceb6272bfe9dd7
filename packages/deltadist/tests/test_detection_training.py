"""Training a delta EfficientDet on generated VID-format pairs: detector loss on all frames +
per-layer-normalised distillation + cost; the cost term lowers the expected cost of the gates."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

pytest.importorskip("effdet")
warnings.filterwarnings("ignore", category=FutureWarning)

from deltadist.cost import layer_costs  # noqa: E402
from deltadist.delta import delta_layers  # noqa: E402
from deltadist.detection.data import VidPairs, collate_detection, read_vid_json  # noqa: E402
from deltadist.detection.efficientdet import (  # noqa: E402
    EfficientDetDetector,
    convert_efficientdet,
    efficientdet_tiny,
)
from deltadist.detection.synthetic import generate_vid_detection  # noqa: E402
from deltadist.detection.training import DetectionDistillationLoss, train_delta_detector  # noqa: E402
from effvid.data import open_storage  # noqa: E402
from effvid.engine import EngineConfig  # noqa: E402


def _expected_cost(net, costs) -> float:
    logits = torch.stack([layer.gate.logit.detach() for layer in delta_layers(net).values()])
    return float((torch.sigmoid(logits) * costs.tensor()).sum())


def test_loss_terms_and_per_layer_normalisation(tmp_path):
    paths = generate_vid_detection(tmp_path, num_videos={"train": 2}, num_frames=8, size=64, stills=1)
    pairs = VidPairs(
        read_vid_json(paths["train"]), open_storage("frames", paths["frames"]), size=64, frames_per_video=2
    )
    torch.manual_seed(0)
    net = efficientdet_tiny(num_classes=3)
    convert_efficientdet(net)
    detector = EfficientDetDetector(net).train()
    costs = layer_costs(net, (3, 64, 64))
    loss = DetectionDistillationLoss(net, detector.loss, costs, alpha=100.0, beta=10.0, normalise="per_layer")
    batch = collate_detection([pairs[0], pairs[1], pairs[4]])
    total, logs = loss(batch)
    assert math.isfinite(float(total.detach()))
    assert logs["distill_loss"] == pytest.approx(1.0, rel=1e-4)  # each layer / its first value, then the mean
    assert loss.distill_scale.shape == (len(delta_layers(net)),)
    assert 0 <= logs["full_students"] <= len(delta_layers(net))
    expected = logs["task_loss"] + 100.0 * logs["distill_loss"] + 10.0 * logs["cost_loss"]
    assert float(total.detach()) == pytest.approx(expected, rel=1e-5)
    assert {"class_loss", "weighted_box_loss"} <= set(logs)  # effdet's total = their sum = task_loss
    assert logs["task_loss"] == pytest.approx(logs["class_loss"] + logs["weighted_box_loss"], rel=1e-5)
    total.backward()
    assert all(layer.gate.logit.grad is not None for layer in delta_layers(net).values())
    with pytest.raises(ValueError, match="needs the per-layer costs"):
        DetectionDistillationLoss(net, detector.loss, None, beta=1.0)


def test_tiny_run_lowers_the_cost_term(tmp_path):
    paths = generate_vid_detection(tmp_path, num_videos={"train": 2}, num_frames=8, size=64)
    pairs = VidPairs(
        read_vid_json(paths["train"]), open_storage("frames", paths["frames"]), size=64, frames_per_video=4
    )
    torch.manual_seed(0)
    net = efficientdet_tiny(num_classes=3)
    convert_efficientdet(net, gate_init=0.5)
    detector = EfficientDetDetector(net)
    costs = layer_costs(net, (3, 64, 64))
    before = _expected_cost(net, costs)
    loss = DetectionDistillationLoss(net, detector.loss, costs, alpha=100.0, beta=300.0)
    train_delta_detector(
        loss,
        pairs,
        cfg=EngineConfig(epochs=2, progress=False),
        run_dir=tmp_path / "run",
        batch_size=4,
    )
    after = _expected_cost(net, costs)
    assert after < 0.8 * before
    assert all(math.isfinite(float(p.detach().abs().sum())) for p in net.parameters())
