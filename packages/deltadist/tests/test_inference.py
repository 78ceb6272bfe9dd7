"""BatchNorm folding and the inference settings keep the outputs of plain and delta models."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_model import clips_like, tiny
from torch import nn

from deltadist.delta import DeltaStream, convert_to_delta, delta_layers, deploy, forward_clip
from deltadist.inference import conv_bn_pairs, fold_batchnorm, optimize_for_inference
from deltadist.models import get_model


def _streamed(model: nn.Module, clips: torch.Tensor) -> torch.Tensor:
    stream = DeltaStream(model, keyframe_interval=clips.shape[1])
    return torch.stack([stream(clips[:, t]) for t in range(clips.shape[1])], 1)


def _delta_model(bias_mode: str, *, deployed: bool) -> nn.Module:
    net = tiny(seed=3)
    convert_to_delta(net, bias_mode=bias_mode)
    net.eval()
    layers = delta_layers(net)
    assert list(layers) == ["body.0", "body.2", "body.5"]
    with torch.no_grad():
        for layer, logit in zip(layers.values(), (1.0, -1.0, 1.0)):
            layer.gate.logit.fill_(logit)  # full, low-rank, full
            for p in [*layer.student_full.parameters(), *layer.student_lowrank.parameters()]:
                p.add_(0.05 * torch.randn_like(p))  # trained students: not the teacher's copies
    if deployed:
        deploy(net)
    return net


@pytest.mark.parametrize("bias_mode", ["corrected", "original"])
@pytest.mark.parametrize("deployed", [False, True])
@torch.no_grad()
def test_folding_batchnorm_into_delta_layers_keeps_batched_and_streamed_outputs(bias_mode, deployed):
    torch.manual_seed(0)
    net = _delta_model(bias_mode, deployed=deployed)
    clips = clips_like(b=2, t=3)
    before_b, before_s = forward_clip(net, clips), _streamed(net, clips)
    pairs = fold_batchnorm(net)
    # the stem's plain conv and the low-rank delta layer body.2 each feed a BatchNorm; body.0 feeds a ReLU
    assert pairs == [("stem", "bn"), ("body.2", "body.3")]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert isinstance(net.bn, nn.Identity) and isinstance(net.body[3], nn.Identity)
    assert net.body[2].choice() == "lowrank" and net.body[0].choice() == "full"
    # float64: equal to rounding (the folded weights are products of the originals)
    torch.testing.assert_close(forward_clip(net, clips), before_b, rtol=0, atol=1e-12)
    torch.testing.assert_close(_streamed(net, clips), before_s, rtol=0, atol=1e-12)
    # the full student of a folded layer is scaled too: force it and compare with an unfolded twin
    if not deployed:
        twin = _delta_model(bias_mode, deployed=False)
        net.body[2].force = twin.body[2].force = "full"
        torch.testing.assert_close(forward_clip(net, clips), forward_clip(twin, clips), rtol=0, atol=1e-12)


@torch.no_grad()
def test_optimize_for_inference_keeps_float32_outputs_of_teacher_and_delta_model_and_needs_eval():
    teacher = tiny(seed=4, dtype=torch.float32)
    delta = copy.deepcopy(teacher)
    convert_to_delta(delta)
    delta.eval()
    deploy(delta)
    clips = clips_like(b=1, t=3, dtype=torch.float32)
    ref_t, ref_d, ref_s = teacher(clips[0]), forward_clip(delta, clips), _streamed(delta, clips)
    for model in (teacher, delta):
        assert optimize_for_inference(model) is model
        conv = model.body[2].teacher if model is delta else model.body[2]
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # inputs stay NCHW: the first convolution's channels-last weights carry the format on
    torch.testing.assert_close(teacher(clips[0]), ref_t, rtol=0, atol=1e-5)
    torch.testing.assert_close(forward_clip(delta, clips), ref_d, rtol=0, atol=1e-5)
    torch.testing.assert_close(_streamed(delta, clips), ref_s, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorm(tiny().train())


def test_pairs_of_ddrnet_skip_pre_activation_batchnorms():
    with torch.device("meta"):
        net = get_model("ddrnet23_slim").eval()
    convert_to_delta(net)
    pairs = dict(conv_bn_pairs(net))
    assert len(pairs) == 43  # of 55 BatchNorms: DAPPM's and the heads' 12 come before their conv
    assert pairs["layer1.0.conv1"] == "layer1.0.bn1" and pairs["compression3.0"] == "compression3.1"
    assert "spp.scale1.3" not in pairs  # BN -> ReLU -> conv: nothing before it to fold into


@pytest.mark.parametrize("clips_per_call", [1, 2])  # 1: the single-clip path on plain 4-D slices
def test_inference_reconstruction_equals_the_training_path_and_keeps_channels_last(clips_per_call):
    net = _delta_model("corrected", deployed=True)
    clips = clips_like(b=clips_per_call, t=3)
    reference = forward_clip(net, clips)  # autograd on: z_0 + dz, then torch.cat
    with torch.no_grad():  # inference: the sum written into a preallocated output
        torch.testing.assert_close(forward_clip(net, clips), reference, rtol=0, atol=0)
        net.to(memory_format=torch.channels_last)
        formats = []
        hooks = [
            layer.register_forward_hook(
                lambda _m, _i, out: formats.append(out.is_contiguous(memory_format=torch.channels_last))
            )
            for layer in delta_layers(net).values()
        ]
        out = forward_clip(net, clips.contiguous())
        for hook in hooks:
            hook.remove()
    assert formats == [True, True, True]
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-12)


def test_inference_copy_after_training_leaves_the_model_alone_and_keeps_outputs():
    from deltadist.inference import inference_copy

    net = _delta_model("corrected", deployed=False).float()
    clips = clips_like(b=1, t=3, dtype=torch.float32)
    net.train()
    forward_clip(net, clips).sum().backward()  # leaves student_delta (with its graph) in the layers
    net.eval()
    twin = inference_copy(net, channels_last=True)
    assert not any(layer.deployed for layer in delta_layers(net).values())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert all(layer.deployed for layer in delta_layers(twin).values())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in twin.modules())
    with torch.no_grad():
        torch.testing.assert_close(forward_clip(twin, clips), forward_clip(net, clips), rtol=0, atol=1e-5)
