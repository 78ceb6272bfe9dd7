"""The any-precision ResNet, the teacher and the policy: structure, bit switching, skip rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from videoiq.model import (
    AnyPrecisionBlock,
    AnyPrecisionResNet,
    FullPrecisionTeacher,
    PrecisionPolicy,
    VideoIQ,
)
from videoiq.quant import PACT, QConv2d, SwitchableBatchNorm2d


def test_surgery_quantises_the_blocks_only():
    net = AnyPrecisionResNet(arch="resnet18", num_classes=4, bit_width_family=(32, 4, 2))
    bb = net.backbone
    assert type(bb.conv1) is nn.Conv2d and type(bb.bn1) is nn.BatchNorm2d and type(net.fc) is nn.Linear
    blocks = [m for m in bb.modules() if isinstance(m, AnyPrecisionBlock)]
    assert len(blocks) == 8
    qconvs = [n for n, m in bb.named_modules() if isinstance(m, QConv2d)]
    assert len(qconvs) == 8 * 2 + 3  # two convs per BasicBlock and the downsample convs of layers 2-4
    assert not [n for n, m in bb.named_modules() if type(m) is nn.Conv2d and n != "conv1"]
    assert isinstance(bb.layer2[0].downsample[1], SwitchableBatchNorm2d)
    assert sorted(bb.layer3[1].quant2.clips) == ["2", "32", "4"]
    r50 = AnyPrecisionResNet(arch="resnet50", num_classes=4, bit_width_family=(4, 2))
    assert sum(isinstance(m, PACT) for m in r50.modules()) == 16 * 3
    with pytest.raises(ValueError, match="is a ResNet"):
        AnyPrecisionResNet(arch="mobilenet_v2", num_classes=4)


def test_bit_width_switch_changes_the_output_and_is_restored():
    torch.manual_seed(0)
    net = AnyPrecisionResNet(arch="resnet18", num_classes=3, bit_width_family=(32, 4, 2)).eval()
    clip = torch.randn(2, 2, 3, 32, 32)
    with torch.no_grad():
        outs = {b: net(clip, b) for b in (32, 4, 2)}
        with net.bit_width(2):
            assert torch.equal(net(clip), outs[2])
            assert {m.bit_width for m in net.modules() if isinstance(m, QConv2d)} == {2}
        assert torch.equal(net(clip), outs[32])  # back to the largest
    assert not torch.allclose(outs[32], outs[4]) and not torch.allclose(outs[4], outs[2])
    with pytest.raises(ValueError, match="bit width 8 is not in the family"):
        net.set_bit_width(8)


def test_teacher_is_a_separate_float_network():
    model = VideoIQ(arch="resnet18", num_classes=3, skip_list=(1,))
    assert not any("32fp" in k or "teacher" in k for k in model.state_dict())
    teacher = FullPrecisionTeacher(arch="resnet18", num_classes=3).eval()
    assert not any(isinstance(m, QConv2d | PACT) for m in teacher.modules())
    clip = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        frames = teacher.fc(teacher.backbone.forward_features(clip.flatten(0, 1))).view(2, 3, 3)
        torch.testing.assert_close(teacher(clip), frames.mean(dim=1), atol=1e-6, rtol=0)


class ScriptedLinear(nn.Module):
    """Returns given logits (T, B, A) step by step, in place of the policy's Linear."""

    def __init__(self, logits):
        super().__init__()
        self.logits, self.step = logits, 0

    def forward(self, h):
        out = self.logits[self.step] + 0 * h[:, :1]
        self.step += 1
        return out


def _policy(skips=(1, 2), **kw):
    torch.manual_seed(0)
    return PrecisionPolicy(num_bits=2, skip_list=skips, input_size=32, hidden=8, **kw).eval()


def test_skip_option_forces_the_next_frames_to_copy_the_choice():
    policy = _policy()
    # actions: 0, 1 = bit widths; 2 = skip 1 frame; 3 = skip 2 frames
    wanted = torch.tensor([[0, 3, 0, 1, 2, 1], [3, 1, 3, 3, 0, 2]])
    logits = torch.nn.functional.one_hot(wanted.T, 4).float() * 5
    policy.linear = ScriptedLinear(logits)
    out = policy(torch.randn(2, 6, 3, 32, 32))
    # video 0: skip-2 at t=1 forces t=2; video 1: skip-2 at t=0 forces t=1, at t=2 forces t=3
    assert out.decisions.argmax(-1).tolist() == [[0, 3, 3, 1, 2, 1], [3, 3, 3, 3, 0, 2]]
    assert torch.equal(out.log_probs[0, 2], out.log_probs[0, 1])  # a forced frame copies the log-probs
    assert torch.equal(out.log_probs[1, 3], out.log_probs[1, 2])
    assert not torch.equal(out.log_probs[1, 4], out.log_probs[1, 3])
    torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(2, 6))


def test_decisions_argmax_at_eval_sampled_in_training_straight_through():
    policy = _policy(num_classes=5)
    with torch.no_grad():
        policy.linear.weight.normal_(0, 0.001)
    clip = torch.randn(3, 4, 3, 32, 32)
    with torch.no_grad():
        a, b = policy(clip), policy(clip)
    assert torch.equal(a.decisions, b.decisions)  # deterministic by default at eval
    torch.testing.assert_close(a.decisions, torch.nn.functional.one_hot(a.log_probs.argmax(-1), 4).float())
    assert a.class_logits.shape == (3, 5)
    torch.manual_seed(1)
    sampled = [policy(clip, sample=True).decisions.argmax(-1) for _ in range(4)]
    assert any(not torch.equal(s, sampled[0]) for s in sampled[1:])  # a near-uniform policy varies
    policy.train()
    out = policy(clip)
    assert set(out.decisions.sum(-1).flatten().tolist()) == {1.0}
    (out.decisions * torch.arange(4.0)).sum().backward()
    assert policy.linear.weight.grad.abs().sum() > 0  # gradients reach the policy through the hard sample


def test_temperature_schedule():
    policy = _policy()
    assert policy.temperature.item() == 5.0
    for _ in range(50):
        policy.decay_temperature(0.956)
    assert policy.temperature.item() == pytest.approx(5.0 * 0.956**50, rel=1e-5)  # about 0.53
    assert "temperature" in policy.state_dict()


def test_video_prediction_averages_features_of_kept_frames():
    torch.manual_seed(0)
    model = VideoIQ(arch="resnet18", num_classes=3, skip_list=(1,), policy_kwargs={"input_size": 32}).eval()
    features = torch.randn(2, 3, 3, 512)
    # video 0: bits 32, skip, 2 -> mean of two frames; video 1 skips everything -> fc bias
    decisions = torch.nn.functional.one_hot(torch.tensor([[0, 3, 2], [3, 3, 3]]), 4).float()
    logits = model.combine(features, decisions)
    expect0 = model.recognizer.fc((features[0, 0, 0] + features[0, 2, 2]) / 2)
    torch.testing.assert_close(logits[0], expect0, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[1], model.recognizer.fc.bias, atol=1e-6, rtol=0)
    out = model(torch.randn(2, 3, 3, 32, 32))
    assert out.logits.shape == (2, 3) and out.features.shape == (2, 3, 3, 512)
    assert out.policy.decisions.shape == (2, 3, 4) and out.policy.class_logits is None


def test_any_precision_network_starts_from_the_float_network():
    torch.manual_seed(0)
    teacher = FullPrecisionTeacher(arch="resnet18", num_classes=3)
    with torch.no_grad():
        teacher.backbone.layer2[0].bn1.running_mean.uniform_()
    net = AnyPrecisionResNet.from_float(teacher, bit_width_family=(32, 4), q_init=[3.0, 2.0])
    assert torch.equal(net.backbone.layer3[1].conv2.weight, teacher.backbone.layer3[1].conv2.weight)
    for bits in ("32", "4"):
        bn = net.backbone.layer2[0].bn1.bns[bits]
        assert torch.equal(bn.running_mean, teacher.backbone.layer2[0].bn1.running_mean)
    assert torch.equal(net.fc.weight, teacher.fc.weight) and torch.equal(
        net.backbone.conv1.weight, teacher.backbone.conv1.weight
    )
    assert net.backbone.layer1[0].quant1.clips["4"].item() == 2.0


def test_temperature_changes_gradients_not_hard_decisions():
    # hard Gumbel-softmax: the one-hot is argmax(logits + g) whatever the temperature, so the
    # schedule shapes only the straight-through gradient (and the original's sampled evaluation
    # draws from softmax(p) at any temperature)
    policy = _policy()
    clip = torch.randn(2, 5, 3, 32, 32)
    grads, decisions = [], []
    for tau in (5.0, 0.5):
        policy.temperature.fill_(tau)
        policy.zero_grad()
        torch.manual_seed(3)
        out = policy(clip, sample=True)
        (out.decisions * torch.arange(4.0)).sum().backward()
        decisions.append(out.decisions)
        grads.append(policy.linear.weight.grad.clone())
    assert torch.equal(decisions[0], decisions[1])
    assert not torch.allclose(grads[0], grads[1])


def test_inference_shortcuts_give_the_same_values():
    """The stem's channels-last max pool (no autograd) and the skipped scale-1 resize of the
    policy's frames change no value."""
    from videoiq.model import InferenceMaxPool2d
    from videoiq.policy import small_frames

    torch.manual_seed(0)
    x = torch.relu(torch.randn(6, 5, 17, 16))  # ReLU output: many tied maxima (zeros)
    pool, plain = InferenceMaxPool2d(3, 2, 1), torch.nn.MaxPool2d(3, 2, 1)
    with torch.no_grad():
        fast = pool(x)
    assert fast.is_contiguous() and torch.equal(fast, plain(x))
    net = VideoIQ(arch="resnet18", num_classes=3, skip_list=(1,), backbone_kwargs={"width": 4})
    assert isinstance(net.recognizer.backbone.maxpool, InferenceMaxPool2d)
    clip = torch.rand(2, 3, 3, 20, 20)
    assert torch.equal(
        small_frames(clip, 20),
        torch.nn.functional.interpolate(clip.flatten(1, 2), size=[20, 20], mode="bilinear").view(
            6, 3, 20, 20
        ),
    )


def test_inference_without_autograd_equals_the_autograd_forward_bit_for_bit():
    # without autograd the network reuses cached quantised weights and PACT scales and works in
    # place; with autograd it computes everything afresh: the features must be identical
    torch.manual_seed(0)
    net = AnyPrecisionResNet(
        arch="resnet18", num_classes=3, bit_width_family=(32, 4, 2), backbone_kwargs={"width": 4}
    )
    frames = torch.randn(6, 3, 32, 32)

    def check() -> None:
        net.eval()
        for _ in range(2):  # the second pass runs on the cached weights
            for b in net.family:
                with torch.no_grad():
                    fast = net.frame_features(frames, b)
                assert torch.equal(fast, net.frame_features(frames, b).detach())

    check()
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for b in net.family:
        net.set_bit_width(b)
        net(torch.randn(2, 2, 3, 32, 32)).logsumexp(1).sum().backward()
    opt.step()
    check()
    other = AnyPrecisionResNet(
        arch="resnet18", num_classes=3, bit_width_family=(32, 4, 2), backbone_kwargs={"width": 4}
    )
    net.load_state_dict(other.state_dict())
    check()
