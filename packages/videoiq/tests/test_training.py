"""Loss terms on hand-computed numbers; the stage modules' losses, logs and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from videoiq.losses import (
    balanced_loss,
    classification_loss,
    efficiency_codebook,
    efficiency_loss,
    kd_loss,
    policy_entropy,
)
from videoiq.model import AnyPrecisionResNet, FullPrecisionTeacher, VideoIQ
from videoiq.steps import AnyPrecisionStep, FloatStep, PolicyStep


def test_loss_terms_by_hand():
    r = torch.tensor([[[1.0, 0, 0], [0, 0, 1]]])  # one video, two frames, actions [32 bits, 2 bits, skip]
    assert balanced_loss(r).item() == pytest.approx((0.5 - 1 / 3) ** 2 * 2 + (1 / 3) ** 2)
    codebook = efficiency_codebook((32, 2), 1)
    assert codebook.tolist() == [1.0, 4 / 64, 0.0]  # 32 bits charged as 8
    assert efficiency_loss(r, codebook).item() == pytest.approx(0.5)
    logp = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    assert policy_entropy(logp).item() == pytest.approx(1.5 * math.log(2))
    # teacher softmax [0.75, 0.25] against a uniform student: cross-entropy ln 2
    assert kd_loss(torch.zeros(1, 2), torch.tensor([[math.log(3), 0.0]])).item() == pytest.approx(math.log(2))
    assert classification_loss(torch.zeros(2, 4), torch.tensor([1, 3])).item() == pytest.approx(math.log(4))
    multi = classification_loss(torch.tensor([[2.0, 0, 0]]), torch.tensor([[1.0, 1, 0]]))
    p = torch.softmax(torch.tensor([2.0, 0, 0]), 0)
    assert multi.item() == pytest.approx(-(torch.log(p[0]) + torch.log(p[1])).item() / 2)


def _batch(b=2, t=2, classes=3):
    g = torch.Generator().manual_seed(0)
    return {"video": torch.randn(b, t, 3, 32, 32, generator=g), "label": torch.tensor([0, 2])}


def test_float_step():
    teacher = FullPrecisionTeacher(arch="resnet18", num_classes=3)
    loss, logs = FloatStep(teacher)(_batch())
    loss.backward()
    assert logs["ce"] == pytest.approx(loss.item()) and teacher.fc.weight.grad is not None


def test_any_precision_step_sums_per_bit_ce_and_kd():
    torch.manual_seed(0)
    model = AnyPrecisionResNet(arch="resnet18", num_classes=3, bit_width_family=(32, 4), dropout=0.0).eval()
    teacher = FullPrecisionTeacher(arch="resnet18", num_classes=3)
    step = AnyPrecisionStep(model, teacher).eval()  # eval: batch-independent outputs to recompute
    batch = _batch()
    loss, logs = step(batch)
    with torch.no_grad():
        target = teacher.eval()(batch["video"])
        expect = sum(
            classification_loss(model(batch["video"], b), batch["label"])
            + kd_loss(model(batch["video"], b), target)
            for b in (32, 4)
        )
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    assert logs["loss@32"] + logs["loss@4"] == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    clip_grad = model.backbone.layer1[0].quant2.clips["4"].grad
    assert clip_grad is not None and model.fc.weight.grad is not None
    with pytest.raises(ValueError, match="loss_type must be one of"):
        AnyPrecisionStep(model, loss_type="MSE")


def test_in_place_distillation_without_teacher():
    torch.manual_seed(0)
    model = AnyPrecisionResNet(arch="resnet18", num_classes=3, bit_width_family=(32, 2), dropout=0.0).eval()
    batch = _batch()
    loss, logs = AnyPrecisionStep(model, loss_type="KD").eval()(batch)
    with torch.no_grad():
        top, low = model(batch["video"], 32), model(batch["video"], 2)
    assert logs["loss@32"] == pytest.approx(classification_loss(top, batch["label"]).item(), rel=1e-5)
    assert logs["loss@2"] == pytest.approx(kd_loss(low, top).item(), rel=1e-5)


def test_policy_step_trains_only_the_policy():
    torch.manual_seed(0)
    model = VideoIQ(
        arch="resnet18", num_classes=3, skip_list=(1,), policy_head=True, policy_kwargs={"input_size": 32}
    )
    weights = {"policy_w": 0.5, "balanced_w": 1.0, "efficient_w": 0.16, "entropy_w": 0.1}
    step = PolicyStep(model, FullPrecisionTeacher(arch="resnet18", num_classes=3), **weights).train()
    before = {k: v.clone() for k, v in model.recognizer.state_dict().items()}
    loss, logs = step(_batch())
    expect = logs["ce"] + logs["kd"] + 0.5 * logs["policy_ce"] + logs["balanced"] + 0.16 * logs["efficiency"]
    assert loss.item() == pytest.approx(expect + 0.1 * logs["entropy"], rel=1e-5)
    assert sum(logs[f"usage/{n}"] for n in ("32bit", "4bit", "2bit", "skip1")) == pytest.approx(1.0)
    assert logs["entropy"] == pytest.approx(math.log(4), rel=1e-3)  # the initial policy is near uniform
    loss.backward()
    assert all(p.grad is None for p in model.recognizer.parameters())
    assert model.policy.linear.weight.grad.abs().sum() > 0 and model.policy.rnn.weight_ih.grad is not None
    after = model.recognizer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen BN statistics did not move


def test_any_precision_step_gives_the_original_gradients():
    # the original's train_ap: per bit width (largest first) CE + KD to the float copy's softmax,
    # one backward each, gradients accumulated; the float copy runs in train mode inside forward
    from original_reference import OrigResNetPACTAP, calibrate_bn, randomise

    from videoiq.conversion import convert_original_state_dict, load_original_checkpoint

    torch.manual_seed(0)
    family = [32, 4, 2]
    ref = randomise(OrigResNetPACTAP(18, 2, family, 2.0, True, 3), 0)
    ref.dropout.p = 0.0
    batch = _batch()
    x = batch["video"].flatten(1, 2)
    calibrate_bn(ref, lambda: [ref(x, b) for b in family])
    model = AnyPrecisionResNet(arch="resnet18", num_classes=3, bit_width_family=family, dropout=0.0)
    teacher = FullPrecisionTeacher(arch="resnet18", num_classes=3)
    load_original_checkpoint(model, ref.state_dict(), teacher=teacher)
    ref.train()
    target = None
    for b in family:
        out, out_32fp = ref(x, b)
        target = out_32fp if out_32fp is not None else target
        loss = classification_loss(out, batch["label"]) + kd_loss(out, target)
        loss.backward(retain_graph=True)
    step = AnyPrecisionStep(model.train(), teacher, frozen_train_mode=True).train()
    step(batch)[0].backward()
    grads = {k: p.grad for k, p in ref.named_parameters() if p.grad is not None}
    expect = convert_original_state_dict(grads).model  # the same renaming as the weights
    ours = {k: p.grad for k, p in model.named_parameters()}
    assert set(expect) == set(ours)  # every parameter, the clips of every bit width included
    for k, g in expect.items():
        torch.testing.assert_close(ours[k], g, rtol=1e-4, atol=1e-6 * max(1.0, g.abs().max().item()), msg=k)
    assert ours["backbone.layer1.0.quant1.clips.2"].abs().sum() > 0
