"""Layer surgery: selection rules, replacement that keeps everything else, and the way back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from effvid.models import get_backbone, replace_modules, revert_modules, select_modules


class Wrapped(nn.Module):
    """A stand-in for a method layer built from a conv (quantised conv, delta layer)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.conv(x) * self.scale

    def revert(self) -> nn.Module:
        return self.conv


def test_select_by_type_and_rule_in_module_order():
    net = get_backbone("resnet18")
    convs = select_modules(net, nn.Conv2d)
    assert convs[0] == "conv1" and convs[-1] == "layer4.1.conv2" and len(convs) == 20
    assert select_modules(net, nn.Conv2d, skip_first=1, skip_last=1) == convs[1:-1]
    assert select_modules(net, nn.Conv2d, include=["layer1.*"]) == [
        "layer1.0.conv1",
        "layer1.0.conv2",
        "layer1.1.conv1",
        "layer1.1.conv2",
    ]
    assert "layer2.0.downsample.0" not in select_modules(net, nn.Conv2d, exclude=["*downsample*"])


def test_replace_keeps_state_and_reverts_exactly():
    torch.manual_seed(0)
    net = get_backbone("resnet18").eval()
    x = torch.randn(2, 3, 64, 64)
    before = net(x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    names = select_modules(net, nn.Conv2d, skip_first=1)
    replaced = replace_modules(net, names, lambda name, conv: Wrapped(conv))
    assert replaced == names
    assert isinstance(net.layer1[0].conv1, Wrapped) and isinstance(net.conv1, nn.Conv2d)
    # untouched keys unchanged; replaced convs moved under '.conv'
    after = net.state_dict()
    assert torch.equal(after["bn1.weight"], state["bn1.weight"])
    assert torch.equal(after["layer1.0.conv1.conv.weight"], state["layer1.0.conv1.weight"])
    torch.testing.assert_close(net(x), before)  # scale 1: same function
    assert revert_modules(net) == names
    assert net.state_dict().keys() == state.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())


def test_replace_by_type_predicate_and_nesting():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))
    assert replace_modules(net, nn.Sequential, lambda n, m: nn.Identity()) == ["1"]  # inner not visited
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3))
    assert replace_modules(
        net, lambda name, m: getattr(m, "kernel_size", None) == (3, 3), lambda n, m: Wrapped(m)
    ) == ["1"]


def test_replace_errors():
    net = nn.Sequential(nn.Conv2d(3, 4, 1))
    with pytest.raises(ValueError, match="no module of Sequential matches"):
        replace_modules(net, nn.Linear, lambda n, m: m)
    assert replace_modules(net, nn.Linear, lambda n, m: m, allow_none=True) == []
    with pytest.raises(KeyError, match=r"no submodule\(s\) \['conv9'\]"):
        replace_modules(net, ["conv9"], lambda n, m: m)
    with pytest.raises(ValueError, match="replacement for '0' is a str"):
        replace_modules(net, nn.Conv2d, lambda n, m: "oops")
