"""The int8 path (PyTorch's quantised CPU kernels) against the fake-quantised float path."""

from __future__ import annotations

import warnings

import pytest
import torch

from videoiq.inference import dynamic_inference
from videoiq.int8 import Int8Branch, blocks_of
from videoiq.model import AnyPrecisionResNet, VideoIQ
from videoiq.policy import PolicyOutput

pytestmark = pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")


def _net(seed: int = 0, **kwargs) -> AnyPrecisionResNet:
    """A tiny any-precision ResNet-18 (width 8) with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    net = AnyPrecisionResNet(
        arch="resnet18", num_classes=5, q_init=4.0, backbone_kwargs={"width": 8}, **kwargs
    ).eval()
    _randomise_bns(net)
    return net


def _randomise_bns(net: torch.nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("bits", [4, 2])
def test_first_int8_convolution_lands_on_the_pact_grid_of_the_fake_quant_branch(bits):
    net = _net()
    frames = torch.randn(8, 3, 32, 32)
    branch = Int8Branch(net, bits, frames)
    block, qblock = blocks_of(net)[0], branch.blocks[0]
    with torch.no_grad(), net.bit_width(bits):
        x = block.quant1(net.backbone.stem(frames))
        ref = block.quant2(torch.relu(block.bn1(block.conv1(x))))
        xq = torch.quantize_per_tensor(
            branch.stem(frames).clamp(max=branch.in_clip), branch.in_scale, 0, torch.quint8
        )
        # the input grid is PACT's (up to the float32 ulps of its mean-rescale)
        torch.testing.assert_close(xq.dequantize(), x, rtol=0, atol=1e-5)
        out = torch.clamp(qblock.conv1(xq), max=qblock.clip2)
    levels = out.int_repr().long()
    step = float(block.quant2.clips[str(bits)].detach()) / (2**bits - 1)
    ref_levels = torch.round(ref / step).long()
    assert levels.max() <= 2**bits - 1 and levels.min() >= 0
    # weights rounded to int8 move a few pre-activations across a level boundary, never further
    assert (levels - ref_levels).abs().max() <= 1
    assert (levels == ref_levels).float().mean() >= 0.85


def test_int8_branch_features_stay_close_to_the_fake_quant_branch():
    """End to end over 8 residual blocks the level flips add up: tolerance 0.6 relative (L2) at
    4 bits on this random network (measured 0.3-0.4; 0.12 on a trained demo network)."""
    net = _net()
    frames = torch.randn(16, 3, 32, 32)
    branch = Int8Branch(net, 4, frames[:8])
    with torch.no_grad():
        ref = net.frame_features(frames, 4)
        out = branch(frames)
    assert out.shape == ref.shape == (16, net.num_features)
    assert float((out - ref).norm() / ref.norm()) < 0.6
    # the int8 net is a different network from the 32-bit member: much further away
    with torch.no_grad():
        other = net.frame_features(frames, 32)
    assert float((other - ref).norm() / ref.norm()) > float((out - ref).norm() / ref.norm())


def test_dynamic_inference_runs_the_int8_branch_for_its_bit_width_only():
    torch.manual_seed(0)
    model = VideoIQ(
        arch="resnet18",
        num_classes=4,
        q_init=4.0,
        backbone_kwargs={"width": 8},
        policy_kwargs={"input_size": 32, "backbone": "tiny_cnn", "width": 0.25, "hidden": 8},
    ).eval()
    _randomise_bns(model.recognizer)
    clip = torch.randn(2, 6, 3, 32, 32)
    branch = Int8Branch(model.recognizer, 4, clip.flatten(0, 1))
    seen = []
    branch.register_forward_pre_hook(lambda _m, inp: seen.append(len(inp[0])))
    # a policy that sends frames 0-2 of each video to 4 bits, 3-4 to 32 bits and skips frame 5
    with torch.no_grad():
        onehot = torch.nn.functional.one_hot(torch.tensor([1, 1, 1, 0, 0, 3]), 4).float().expand(2, 6, 4)
        model.policy.forward = lambda _clip, sample=False: PolicyOutput(onehot, onehot.log(), None)
        fake = dynamic_inference(model, clip)
        real = dynamic_inference(model, clip, int8={4: branch})
    assert seen == [6]  # only the six 4-bit frames went through the int8 network
    assert torch.equal(fake.bits, real.bits)
    assert real.bits[0].tolist() == [4, 4, 4, 32, 32, 0]
    # the video logits: fc of the mean over kept frames, the 4-bit ones from the int8 network
    frames = clip[:, :5]
    with torch.no_grad():
        low = branch(frames[:, :3].flatten(0, 1)).view(2, 3, -1)
        high = model.recognizer.frame_features(frames[:, 3:].flatten(0, 1), 32).view(2, 2, -1)
        expected = model.recognizer.fc(torch.cat([low, high], dim=1).mean(dim=1))
    torch.testing.assert_close(real.logits, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(real.logits, fake.logits, atol=1e-5)  # a different path for 4 bits
    with pytest.raises(ValueError, match=r"bit widths \[8\] that are not in the family"):
        dynamic_inference(model, clip, int8={8: branch})


def test_bit_widths_without_an_integer_path_are_refused():
    net = _net()
    frames = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="bit width 32 has no integer path"):
        Int8Branch(net, 32, frames)
    with pytest.raises(ValueError, match=r"bit width 8 is not in the network's family \(32, 4, 2\)"):
        Int8Branch(net, 8, frames)
    with pytest.raises(ValueError, match="mean_aligned"):
        Int8Branch(_net(mean_aligned=True), 4, frames)
    with (
        pytest.raises(ValueError, match="quantized engine 'nope' is not available"),
        warnings.catch_warnings(),
    ):
        Int8Branch(net, 4, frames, engine="nope")
