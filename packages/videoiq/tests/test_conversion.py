"""The original's checkpoints -> our model + teacher: the same decisions and outputs."""

from __future__ import annotations

import re

import pytest
import torch
from original_reference import OrigResNetPACTAP, OrigResNetVideoIQ, calibrate_bn, randomise

from effvid.checkpoint import CheckpointMismatchError
from videoiq.conversion import convert_original_state_dict, load_original_checkpoint
from videoiq.inference import dynamic_inference
from videoiq.model import AnyPrecisionResNet, FullPrecisionTeacher, VideoIQ

FAMILY = [32, 4, 2]
SKIPS = [1, 2]


def _clip(b, t, seed, size=32):
    # frames of different contrast and colour, so that the policy's decisions differ between them
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, 3, size, size, generator=g) * torch.rand(
        b, t, 1, 1, 1, generator=g
    ) * 3 + torch.randn(b, t, 3, 1, 1, generator=g)


def original_videoiq(
    depth, b=3, t=6, seed=3, teacher=True, policy_head=True, classes=6, family=FAMILY, fp=False
):
    """A randomised, BN-calibrated original ResNetVideoIQ whose argmax policy varies between frames."""
    torch.manual_seed(seed)
    ref = OrigResNetVideoIQ(depth, t, family, SKIPS, 2.0, teacher, policy_head, classes, use_fp_as_bb=fp)
    ref = randomise(ref, seed)
    with torch.no_grad():
        ref.policy_net.linear.weight.mul_(50)
        ref.policy_net.linear.bias.zero_()
        ref.policy_net.rnn.weight_ih.mul_(30)
    x = _clip(b, t, seed)
    calibrate_bn(ref, lambda: ref.ada_forward(x.flatten(1, 2)))
    return ref, x


def _module_state(ref):
    return {f"module.{k}": v for k, v in ref.state_dict().items()}


def _ours(depth, teacher=True, policy_head=True, classes=6, family=FAMILY, fp=False):
    model = VideoIQ(
        arch=f"resnet{depth}",
        num_classes=classes,
        bit_width_family=family,
        skip_list=SKIPS,
        policy_head=policy_head,
        float_branch=fp,
    ).eval()
    return model, FullPrecisionTeacher(arch=f"resnet{depth}", num_classes=classes).eval() if teacher else None


@pytest.mark.parametrize("depth,b,t,seed", [(18, 3, 6, 3), (50, 2, 4, 1)])
def test_converted_videoiq_matches_the_original(tmp_path, depth, b, t, seed):
    ref, x = original_videoiq(depth, b, t, seed)
    path = tmp_path / "policy_best.pth.tar"
    torch.save({"epoch": 3, "arch": "x", "state_dict": _module_state(ref)}, path)
    model, teacher = _ours(depth)
    converted = load_original_checkpoint(model, path, teacher=teacher)
    assert converted.layout == "videoiq" and converted.checkpoint_family == (32, 4, 2)
    with torch.no_grad():
        out, r, p, out_32fp, policy_out, feats = ref.ada_forward(x.flatten(1, 2))
        ours = model(x)
        teacher_logits = teacher(x)
    choices = set(r.argmax(-1).flatten().tolist())
    assert len(choices) >= 3 and choices & {3, 4}, choices  # several bit widths and a skip ran
    assert torch.equal(ours.policy.decisions, r)
    diffs = {
        "log_probs": (ours.policy.log_probs - p).abs().max().item(),
        "policy_head": (ours.policy.class_logits - policy_out).abs().max().item(),
        "teacher": (teacher_logits - out_32fp).abs().max().item(),
        "video": (ours.logits - out).abs().max().item(),
        **{
            f"bit{bit}": (ours.features[:, :, i] - feats[i]).abs().max().item()
            for i, bit in enumerate(FAMILY)
        },
    }
    assert max(diffs.values()) <= 1e-4, diffs
    for i in range(len(FAMILY)):  # the same operation order: bit-for-bit equal features
        assert torch.equal(ours.features[:, :, i], feats[i])
    assert torch.equal(model.policy.temperature, ref.policy_net.temperature)


def test_conversion_without_policy_head_or_teacher():
    ref, x = original_videoiq(18, 2, 4, 1, teacher=False, policy_head=False)
    converted = convert_original_state_dict(_module_state(ref))
    assert converted.teacher is None and not any(k.startswith("policy.fc.") for k in converted.model)
    model, teacher = _ours(18, teacher=True, policy_head=False)
    with pytest.raises(ValueError, match=r"has no float teacher \(\*_32fp keys\)"):
        load_original_checkpoint(model, _module_state(ref), teacher=teacher)
    load_original_checkpoint(model, _module_state(ref))
    with torch.no_grad():
        out = ref.ada_forward(x.flatten(1, 2))[0]
        torch.testing.assert_close(model(x).logits, out, atol=1e-4, rtol=0)


def test_converted_step2_network_matches_the_original():
    torch.manual_seed(0)
    ref = randomise(OrigResNetPACTAP(18, 3, FAMILY, 2.0, True, 5), 0)
    x = _clip(2, 3, 0)
    calibrate_bn(ref, lambda: [ref(x.flatten(1, 2), bit) for bit in FAMILY])
    state = {k: v for k, v in ref.state_dict().items()}  # also without the module. prefix
    model = AnyPrecisionResNet(arch="resnet18", num_classes=5, bit_width_family=FAMILY).eval()
    teacher = FullPrecisionTeacher(arch="resnet18", num_classes=5).eval()
    assert load_original_checkpoint(model, state, teacher=teacher).layout == "ap"
    with torch.no_grad():
        for bit in FAMILY:
            out, out_32fp = ref(x.flatten(1, 2), bit)
            assert torch.equal(model(x, bit), out)
        torch.testing.assert_close(teacher(x), ref(x.flatten(1, 2), 32)[1], atol=1e-5, rtol=0)
    with pytest.raises(
        ValueError, match="resnet_pact_ap \\(step 2\\) state dict, but the model is a VideoIQ"
    ):
        load_original_checkpoint(_ours(18)[0], state)


def test_conversion_errors_name_the_problem(tmp_path):
    ref, _ = original_videoiq(18, 1, 2, 0)
    state = _module_state(ref)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state}, path)
    model8, _ = _ours(18, family=(32, 8, 4))
    with pytest.raises(ValueError, match=rf"checkpoint {path} has bit widths \(32, 4, 2\).*also needs \[8\]"):
        load_original_checkpoint(model8, path)
    # a renamed key and a class-count mismatch are listed by name
    bad = dict(state)
    bad["module.backbone.layer1.0.conv1.weightx"] = bad.pop("module.backbone.layer1.0.conv1.weight")
    with pytest.raises(
        CheckpointMismatchError, match=r"missing\s+recognizer.backbone.layer1.0.conv1.weight\n"
    ):
        load_original_checkpoint(_ours(18)[0], bad)
    with pytest.raises(ValueError, match="unknown key 'layer1.0.gate.weight'"):
        convert_original_state_dict({**state, "module.backbone.layer1.0.gate.weight": torch.zeros(1)})
    model, _ = _ours(18, classes=7)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"shape\s+recognizer.fc.weight: checkpoint \(6, 512\) vs model \(7, 512\)",
    ):
        load_original_checkpoint(model, state)
    missing = {k: v for k, v in state.items() if "policy_net.rnn.bias_hh" not in k}
    with pytest.raises(CheckpointMismatchError, match=r"missing\s+policy.rnn.bias_hh"):
        load_original_checkpoint(_ours(18)[0], missing)
    with pytest.raises(ValueError, match="not a VideoIQ any-precision network"):
        convert_original_state_dict({"module.conv1.weight": torch.zeros(1)})
    shared_bn = {k.replace("bn1_32.", "bn1."): v for k, v in state.items()}
    with pytest.raises(ValueError, match="--switch_bn and --switch_clipval"):
        convert_original_state_dict(shared_bn)
    quantised_policy = {**state, "module.policy_net.features.2.q_alpha_1": torch.ones(1)}
    with pytest.raises(ValueError, match="quantised policies"):
        convert_original_state_dict(quantised_policy)


def test_tied_downsample_conv_is_loaded_once_and_extra_bit_widths_are_dropped():
    ref, _ = original_videoiq(18, 1, 2, 0)
    state = _module_state(ref)
    key = "module.backbone.layer2.0.downsample_{}.0.weight"
    assert state[key.format(4)].data_ptr() == state[key.format(2)].data_ptr()  # one tensor in the original
    converted = convert_original_state_dict(state, bit_width_family=(32, 4))
    assert "recognizer.backbone.layer2.0.downsample.0.weight" in converted.model
    per_bit = {int(m[1]) for k in converted.model if (m := re.search(r"\.(?:bns|clips)\.(\d+)", k))}
    assert per_bit == {32, 4}  # the checkpoint's 2-bit BNs and clips are left out
    untied = dict(state)
    untied[key.format(2)] = state[key.format(2)] + 1
    with pytest.raises(ValueError, match="differs from another bit width's copy"):
        convert_original_state_dict(untied)
    with pytest.warns(UserWarning, match="largest bit width is 32, the model's 4"):
        convert_original_state_dict(state, bit_width_family=(4, 2))


def test_use_fp_as_bb_checkpoint_loads_into_a_float_branch():
    # the ActivityNet step-4 setting: family 4 2, the float copy as the first policy choice
    ref, x = original_videoiq(18, 3, 6, 4, family=[4, 2], fp=True)  # actions: float, 2 bits, skip 2
    state = _module_state(ref)
    with pytest.raises(
        ValueError, match=r"policy has 5 actions, the model 4 .*build VideoIQ\(float_branch=True\)"
    ):
        load_original_checkpoint(_ours(18, family=(4, 2))[0], state)
    model, teacher = _ours(18, family=(4, 2), fp=True)
    assert model.precisions == ("float", 4, 2) and model.precision_bits == (32, 4, 2)
    load_original_checkpoint(model, state, teacher=teacher)
    with torch.no_grad():
        out, r, p, out_32fp, policy_out, feats = ref.ada_forward(x.flatten(1, 2))
        ours = model(x)
    assert 0 in r.argmax(-1) and len(set(r.argmax(-1).flatten().tolist())) >= 3  # the float branch is chosen
    assert torch.equal(ours.policy.decisions, r)
    for i in range(3):
        assert torch.equal(ours.features[:, :, i], feats[i])
    assert torch.equal(ours.logits, out) and torch.equal(teacher(x), out_32fp)
    result = dynamic_inference(model, x)
    assert torch.equal(result.actions, r.argmax(-1))
    assert torch.equal(result.bits, torch.tensor([32, 4, 2, 0, 0])[result.actions])
    torch.testing.assert_close(result.logits, out, atol=1e-3, rtol=0)
