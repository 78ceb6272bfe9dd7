"""Checked state-dict loading and key remapping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from effvid.checkpoint import (
    CheckpointMismatchError,
    load_checked,
    remap_state_dict,
)


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)


def original_layout(model: Small) -> dict[str, torch.Tensor]:
    """The same weights under DataParallel + Sequential-index names."""
    names = {"conv1": "0", "bn1": "1", "head": "9"}
    out = {}
    for k, v in model.state_dict().items():
        mod, rest = k.split(".", 1)
        out[f"module.backbone.{names[mod]}.{rest}"] = v
    return out


def test_remap_round_trip_loads_identical_weights():
    torch.manual_seed(0)
    src = Small()
    rules = [
        (r"^module\.backbone\.0\.", "conv1."),
        (r"^module\.backbone\.1\.", "bn1."),
        (r"^module\.backbone\.9\.", "head."),
    ]
    dst = Small()
    load_checked(dst, remap_state_dict(original_layout(src), rules))
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k])


def test_remap_drop_and_callable_and_collision():
    sd = {"a.w": torch.zeros(1), "b.w": torch.ones(1), "dead.w": torch.ones(1)}
    assert list(remap_state_dict(sd, [(r"^dead\.", None)])) == ["a.w", "b.w"]
    assert list(remap_state_dict(sd, lambda k: k.upper())) == ["A.W", "B.W", "DEAD.W"]
    with pytest.raises(ValueError, match="two checkpoint keys to 'x.w'"):
        remap_state_dict(sd, [(r"^(a|b)\.", "x.")])


def test_strict_error_lists_every_problem():
    model = Small()
    sd = dict(model.state_dict())
    del sd["head.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["conv1.weight"] = torch.zeros(5, 3, 3, 3)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checked(model, sd, source="ckpt.pth")
    msg = str(info.value)
    assert "checkpoint ckpt.pth does not match the model: 1 missing, 1 unexpected, 1 shape-mismatched" in msg
    assert "missing     head.bias" in msg
    assert "unexpected  extra.weight" in msg
    assert "shape       conv1.weight: checkpoint (5, 3, 3, 3) vs model (4, 3, 3, 3)" in msg
    assert info.value.missing == ["head.bias"]


def test_allowed_patterns():
    model = Small()
    torch.nn.init.constant_(model.head.weight, 7.0)
    sd = {k: v.clone() for k, v in Small().state_dict().items() if not k.startswith("head.")}
    sd["exit_selector.8.w"] = torch.zeros(1)
    load_checked(model, sd, allow_missing=["head.*"], allow_unexpected=["exit_selector.*"])
    assert torch.all(model.head.weight == 7.0)  # missing-but-allowed keys keep their values
