"""The training objective and the OHEM loss on hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deltadist.cost import LayerCosts
from deltadist.delta import convert_to_delta, delta_layers
from deltadist.losses import DeltaDistillationLoss, OhemCrossEntropy, original_distill_epochs, teacher_deltas


def test_ohem_keeps_the_hard_pixels():
    # pixels: p(true) = sigmoid(2) = 0.881, 0.5, sigmoid(3) = 0.953, and one unlabelled
    logits = torch.tensor([[2.0, 0.0, 3.0, 9.0], [0.0, 0.0, 0.0, 0.0]]).view(1, 2, 1, 4)
    labels = torch.tensor([[[0, 1, 0, 255]]])
    ce = [math.log(1 + math.exp(-2)), math.log(2.0)]
    # threshold 0.9 above p_k (the 2nd smallest, 0.881): the two pixels below 0.9
    assert float(OhemCrossEntropy(threshold=0.9, min_kept=1)(logits, labels)) == pytest.approx(
        sum(ce) / 2, rel=1e-5
    )
    # threshold 0.6 below p_k = 0.881: only pixels strictly below 0.881
    assert float(OhemCrossEntropy(threshold=0.6, min_kept=1)(logits, labels)) == pytest.approx(
        ce[1], rel=1e-5
    )
    # class weights scale each pixel's loss; the mean stays a plain mean
    weighted = OhemCrossEntropy(threshold=0.9, min_kept=1, weight=[2.0, 1.0])(logits, labels)
    assert float(weighted) == pytest.approx((2 * ce[0] + ce[1]) / 2, rel=1e-5)
    # logits at a lower resolution are upsampled to the labels first
    small = torch.randn(1, 2, 2, 2)
    up = nn.functional.interpolate(small, size=(4, 4), mode="bilinear", align_corners=False)
    full = torch.randint(0, 2, (1, 4, 4))
    ohem = OhemCrossEntropy(threshold=0.9, min_kept=4)
    assert float(ohem(small, full)) == pytest.approx(float(ohem(up, full)), rel=1e-6)
    assert float(ohem(small, torch.full((1, 4, 4), 255))) == 0.0


def one_layer_model():
    """logits = w * x with w = (1, -1), made a delta layer; students set by hand:
    full-size w' = (2, -1), low-rank (rank 1) product (1, 0)."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    convert_to_delta(model, skip_first=0, skip_last=0, factor_ch=2)
    layer = delta_layers(model)["0"]
    with torch.no_grad():
        layer.student_full.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
        layer.student_lowrank.vertical.weight.fill_(1.0)
        layer.student_lowrank.horizontal.weight.copy_(torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
        layer.gate.logit.fill_(30.0)  # the sampled noise (|noise| <= 13.8) cannot flip it: always full-size
    return model.train(), layer


def test_objective_on_hand_computed_numbers():
    model, layer = one_layer_model()
    costs = LayerCosts(("0",), (0.7,), "MAC")
    objective = DeltaDistillationLoss(
        model, nn.CrossEntropyLoss(), costs, alpha=0.01, beta=0.1, distill_epochs=original_distill_epochs(3)
    )
    # one clip of 2 frames of 1x2 pixels: x0 = (1, 2), x1 = (2, 2) -> dx = (1, 0)
    clips = torch.tensor([[1.0, 2.0], [2.0, 2.0]]).view(1, 2, 1, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    loss, logs = objective((clips, labels))
    # z1 = w x0 + w' dx: class 0 (1 + 2, 2 + 0) = (3, 2), class 1 (-1 - 1, -2 - 0) = (-2, -2)
    task = (math.log(1 + math.exp(-5)) + math.log(1 + math.exp(4))) / 2
    # student delta (2, 0 | -1, 0) vs teacher delta (1, 0 | -1, 0): mean square 1/4, scaled to 1
    assert logs["task_loss"] == pytest.approx(task, rel=1e-6)
    assert logs["distill_loss"] == pytest.approx(1.0) and float(objective.distill_scale) == pytest.approx(4.0)
    assert logs["cost_loss"] == pytest.approx(0.7) and logs["full_students"] == 1.0 and logs["alpha"] == 0.01
    assert float(loss.detach()) == pytest.approx(task + 0.01 * 1.0 + 0.1 * 0.7, rel=1e-6)
    loss.backward()
    assert layer.gate.logit.grad is not None and layer.teacher.weight.grad is not None
    assert layer.clip_length == 1  # the objective leaves the model's clip length as it found it
    # the scale stays fixed: dx = (2, 0) gives a mean square of 1, scaled by 4
    clips2 = torch.tensor([[1.0, 2.0], [3.0, 2.0]]).view(1, 2, 1, 1, 2)
    _, logs = objective((clips2, labels))
    assert logs["distill_loss"] == pytest.approx(4.0)
    # distillation is off after num_epochs // 3 (epochs 0 and 1 of 3 have it)
    objective.set_epoch(1)
    assert objective.current_alpha == 0.01
    objective.set_epoch(2)
    loss, logs = objective((clips, labels))
    assert logs["alpha"] == 0.0 and logs["distill_loss"] == 0.0
    assert float(loss.detach()) == pytest.approx(task + 0.1 * 0.7, rel=1e-6)


def test_teacher_deltas_run_the_teacher_in_eval_and_restore_the_mode():
    model, layer = one_layer_model()
    layer.clip_length = 2
    frames = torch.tensor([[1.0, 2.0], [2.0, 2.0]]).view(2, 1, 1, 2)
    (delta,) = teacher_deltas(model, frames)
    torch.testing.assert_close(delta, torch.tensor([1.0, 0.0, -1.0, 0.0]).view(1, 2, 1, 2))
    assert model.training and not layer.record_targets


def test_objective_argument_errors():
    model, _ = one_layer_model()
    with pytest.raises(ValueError, match="beta != 0 needs the per-layer costs"):
        DeltaDistillationLoss(model, nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="rows do not match"):
        DeltaDistillationLoss(model, nn.CrossEntropyLoss(), LayerCosts(("1",), (1.0,), "MAC"))
    objective = DeltaDistillationLoss(model, nn.CrossEntropyLoss(), beta=0.0)
    with pytest.raises(ValueError, match=r"expected clips \(B, T >= 2, C, H, W\)"):
        objective((torch.zeros(1, 1, 1, 1, 2), torch.zeros(1, 1, 2, dtype=torch.long)))
