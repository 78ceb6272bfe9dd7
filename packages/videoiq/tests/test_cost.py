"""The three cost figures: the original's formula, measured MACs, BitOPs."""

from __future__ import annotations

import pytest
import torch
from test_inference import _converted

from effvid.flops import count_macs, crosscheck, mac_table
from effvid.models import get_backbone
from videoiq.cost import (
    PAPER_FIRST_LAST_GFLOPS,
    PAPER_POLICY_GFLOPS,
    frame_bitops,
    measure_unit_costs,
    paper_gflops,
    video_bitops,
    video_macs,
)
from videoiq.inference import dynamic_inference
from videoiq.model import VideoIQ


def test_paper_formula_by_hand():
    # R-50, 16 frames, actions [32, 4, 2, skip] equally often: 1.92 + 63.84 (1 + 1/4 + 1/16) / 4
    actions = torch.tensor([[0, 1, 2, 3] * 4, [0] * 16, [3] * 16])
    g = paper_gflops(actions, (32, 4, 2), 1, arch="resnet50")
    torch.testing.assert_close(g["backbone"], torch.tensor([22.8675, 65.76, 1.92], dtype=torch.float64))
    assert g["policy"].tolist() == pytest.approx([0.898] * 3)
    torch.testing.assert_close(g["total"], g["backbone"] + 0.898, atol=1e-12, rtol=0)
    # a 32-bit frame is charged like an 8-bit one; R-18 has its own constant
    eight = paper_gflops(torch.zeros(1, 16, dtype=torch.long), (8, 4), 0, arch="resnet18")["backbone"]
    assert eight.item() == pytest.approx(29.10)
    with pytest.raises(ValueError, match="constants for"):
        paper_gflops(actions, (32, 4, 2), 1, arch="resnet101")


def test_measured_macs_match_a_batch1_crosscheck():
    model, clip = _converted(seed=3)
    size = tuple(clip.shape[2:])
    costs = measure_unit_costs(model, size)
    trunk = count_macs(get_backbone("resnet18").to("meta").eval(), torch.empty(1, *size, device="meta"))
    assert costs["backbone@32"] == costs["backbone@4"] == costs["backbone@2"] == trunk
    assert costs["classifier"] == 512 * 6
    checked = 0
    for v in range(clip.shape[0]):
        one = clip[v : v + 1]
        actions = dynamic_inference(model, one).actions
        macs = video_macs(actions, costs, model.family, len(model.skip_list))
        kept = int((actions < 3).sum())
        assert macs["backbone"].item() == kept * trunk
        crosscheck(lambda one=one: dynamic_inference(model, one), macs["total"].item(), what=f"video {v}")
        checked += kept < actions.shape[1]
    assert checked  # at least one video skipped frames and still matched


def test_bitops_weight_each_layer_by_its_bit_width():
    model, clip = _converted(seed=3)
    size = tuple(clip.shape[2:])
    per_frame = frame_bitops(model, size)
    table = mac_table(get_backbone("resnet18").eval(), torch.empty(1, *size))
    stem, total = table.macs_of("conv1"), table.total
    for bits in (32, 4, 2):
        assert per_frame[bits] == stem * 32 * 32 + (total - stem) * bits * bits
    costs = measure_unit_costs(model, size)
    actions = torch.tensor([[0, 1, 2, 3, 4, 4]])
    float_part = (costs["policy_frame"] * 6 + costs["classifier"]) * 1024
    expect = per_frame[32] + per_frame[4] + per_frame[2] + float_part
    assert video_bitops(actions, per_frame, costs, (32, 4, 2), 2).item() == expect


@pytest.mark.parametrize("arch,paper", [("resnet18", 29.10), ("resnet50", 65.76)])
def test_paper_constants_are_the_measured_macs_to_one_percent(arch, paper):
    model = VideoIQ(arch=arch, num_classes=200, policy_head=True)
    costs = measure_unit_costs(model, (3, 224, 224))  # meta device: nothing is computed
    assert costs["backbone@32"] * 16 / 1e9 == pytest.approx(paper, rel=0.01)  # 16 frames at 224^2
    stem = mac_table(get_backbone(arch).eval(), torch.empty(1, 3, 224, 224)).macs_of("conv1")
    assert stem * 16 / 1e9 == pytest.approx(PAPER_FIRST_LAST_GFLOPS, rel=0.02)  # 1.89 of the 1.92
    assert costs["policy_frame"] * 16 / 1e9 == pytest.approx(sum(PAPER_POLICY_GFLOPS), rel=0.04)  # 0.864


def test_costs_of_a_float_branch():
    model = VideoIQ(arch="resnet18", num_classes=3, bit_width_family=(4, 2), float_branch=True)
    costs = measure_unit_costs(model, (3, 32, 32))
    assert costs["backbone@float"] == costs["backbone@4"] == costs["backbone@2"]
    per_frame = frame_bitops(model, (3, 32, 32))
    stem = mac_table(get_backbone("resnet18").eval(), torch.empty(1, 3, 32, 32)).macs_of("conv1")
    assert per_frame["float"] == costs["backbone@float"] * 1024
    assert per_frame[4] == stem * 1024 + (costs["backbone@4"] - stem) * 16
    # the original charges the float branch like an 8-bit frame: action 0 costs the full backbone
    g = paper_gflops(torch.tensor([[0, 1, 2, 3]]), model.precision_bits, 1, arch="resnet18")
    assert g["backbone"].item() == pytest.approx(1.92 + 27.18 * (1 + 0.25 + 1 / 16) / 4)
    macs = video_macs(torch.tensor([[0, 1, 2, 3]]), costs, model.precisions, 1)
    assert macs["backbone"].item() == 3 * costs["backbone@4"]
