"""effvid.models.optimize: the inference passes keep the function (fold, channels-last), int8 stays
close and is refused where it cannot run, the original module is untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from effvid.models import get_backbone
from effvid.models.optimize import ChannelsLast, FastInferenceConfig, optimize_for_inference


class Features(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = get_backbone("resnet18")

    def forward(self, x):
        return self.net.forward_features(x)


def _trained_bn(module: nn.Module) -> nn.Module:
    """BatchNorm statistics away from (0, 1), so that folding them is a real change."""
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return module.eval()


def test_fold_and_channels_last_keep_the_function():
    torch.manual_seed(0)
    net = _trained_bn(Features())
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
        fast = optimize_for_inference(net, FastInferenceConfig(), device=torch.device("cpu"))
        out = fast(x)
    assert isinstance(fast, ChannelsLast)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules()), "BatchNorm left unfolded"
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules()), "the original was modified"
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_int8_is_close_and_needs_cpu_and_calibration():
    torch.manual_seed(0)
    net = _trained_bn(Features())
    x = torch.randn(4, 3, 64, 64)
    cfg = FastInferenceConfig(int8=True)
    cpu = torch.device("cpu")
    with torch.no_grad():
        ref = net(x)
        q = optimize_for_inference(net, cfg, device=cpu, calibration=[x[:2], x[2:]])
        out = q(x)
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in q.modules()), "no int8 layer"
    rel = float((out - ref).norm() / ref.norm())
    assert rel < 0.1, f"int8 features differ by {rel:.3f} (relative L2)"
    outputs: list[torch.Tensor] = []
    optimize_for_inference(net, cfg, device=cpu, calibration=[x[:2], x[2:]], calibration_outputs=outputs)
    torch.testing.assert_close(torch.cat(outputs), ref, rtol=1e-4, atol=1e-5)  # the float network's
    with pytest.raises(ValueError, match="CPU only"):
        optimize_for_inference(net, cfg, device=torch.device("meta"), calibration=[x])
    with pytest.raises(ValueError, match="needs calibration"):
        optimize_for_inference(net, cfg, device=cpu)
    with pytest.raises(ValueError, match="at least one calibration batch"):
        optimize_for_inference(net, cfg, device=cpu, calibration=[])
    with pytest.raises(ValueError, match="calibration_batches"):
        FastInferenceConfig(calibration_batches=0)


def test_half_precision_copy_computes_what_autocast_does():
    torch.manual_seed(0)
    net = _trained_bn(Features())
    x = torch.randn(2, 3, 64, 64)
    cpu = torch.device("cpu")
    with torch.no_grad():
        ref = net(x)
        with torch.autocast("cpu", torch.bfloat16):
            autocast = optimize_for_inference(net, FastInferenceConfig(), device=cpu)(x)
        half = optimize_for_inference(net, FastInferenceConfig(), device=cpu, dtype=torch.bfloat16)
        out = half(x)
    assert out.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in half.parameters()), "weights not stored in bf16"
    assert next(net.parameters()).dtype == torch.float32, "the original was modified"
    torch.testing.assert_close(out.float(), autocast.float(), rtol=2e-2, atol=2e-2)
    rel = float((out.float() - ref).norm() / ref.norm())
    assert rel < 0.02, f"bf16 features differ by {rel:.3f} (relative L2)"
    with pytest.raises(ValueError, match="int8 is its own pass"):
        optimize_for_inference(
            net, FastInferenceConfig(int8=True), device=cpu, calibration=[x], dtype=torch.bfloat16
        )
