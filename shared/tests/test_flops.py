"""MAC accounting: totals against torchvision's published figures, tables, dynamic counts, CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn

from effvid.flops import (
    UnitCosts,
    bitops,
    bitops_table,
    count_macs,
    crosscheck,
    latency_table,
    mac_table,
    per_sample_macs,
)
from effvid.models import get_backbone
from effvid.tools.flops import FLOPS

# backbone -> (weights enum member, native input side). torchvision's `_ops` is GFLOPs in its docs'
# wording but counts one op per multiply-accumulate of conv/linear layers: our MACs.
PUBLISHED = {
    "resnet18": (torchvision.models.ResNet18_Weights.IMAGENET1K_V1, 224),
    "resnet34": (torchvision.models.ResNet34_Weights.IMAGENET1K_V1, 224),
    "resnet50": (torchvision.models.ResNet50_Weights.IMAGENET1K_V2, 224),
    "resnet101": (torchvision.models.ResNet101_Weights.IMAGENET1K_V2, 224),
    "mobilenet_v2": (torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V2, 224),
    "efficientnet_b0": (torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1, 224),
    "efficientnet_b3": (torchvision.models.EfficientNet_B3_Weights.IMAGENET1K_V1, 300),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_total_equals_torchvision_published_ops(name):
    weights, side = PUBLISHED[name]
    assert weights.transforms().crop_size == [side]  # the resolution the figure was published at
    with torch.device("meta"):
        net = get_backbone(name, num_classes=1000).eval()
    table = mac_table(net, torch.empty(1, 3, side, side, device="meta"))
    assert round(table.total / 1e9, 3) == pytest.approx(weights.meta["_ops"], abs=1e-9)
    assert sum(r.macs for r in table.rows) == table.total


def test_resnet50_table_sums_and_subtrees():
    with torch.device("meta"):
        net = get_backbone("resnet50").eval()
    table = mac_table(net, torch.empty(1, 3, 224, 224, device="meta"))
    assert table.total == 4_087_136_256  # trunk only: torchvision's 4.089 G minus the 2048x1000 fc
    assert sum(table.macs_of(f"layer{i}") for i in range(1, 5)) + table.macs_of("conv1") == table.total
    assert table.macs_of("conv1") == 64 * 3 * 7 * 7 * 112 * 112
    names = [r.name for r in table.rows]
    assert names.index("conv1") < names.index("layer1.0.conv1") < names.index("layer4.2.conv3")


class Repeated(nn.Module):
    """Calls one Linear twice and runs a functional op of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.extra = nn.Parameter(torch.ones(4, 8))

    def forward(self, x):
        return nn.functional.linear(self.fc(self.fc(x)), self.extra)


def test_repeated_calls_and_functional_ops_are_attributed():
    table = mac_table(Repeated(), torch.randn(3, 8), device=None)
    rows = {r.name: r for r in table.rows}
    assert rows["fc"].macs == 2 * 3 * 8 * 8
    assert rows["(root)"].macs == 3 * 8 * 4 and rows["(root)"].params == 32
    assert table.total == count_macs(Repeated(), torch.randn(3, 8)) == 3 * 8 * 8 * 2 + 3 * 8 * 4


def test_table_exports(tmp_path):
    table = mac_table(Repeated(), torch.randn(1, 8))
    table.to_json(tmp_path / "t.json")
    table.to_csv(tmp_path / "t.csv")
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["unit"] == "MAC" and data["total_macs"] == table.total
    assert sum(r["macs"] for r in data["rows"]) == table.total
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0] == "module,macs,params" and lines[-1].startswith(f"(total),{table.total},")
    assert "(total)" in table.format()


class ToyEarlyExit(nn.Module):
    """Frames pass a small CNN one at a time; a sample stops once its running score passes 0."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = get_backbone("tiny_cnn", width=4)
        self.gate = nn.Linear(32, 1)

    def forward(self, video: torch.Tensor, exit_after: torch.Tensor) -> torch.Tensor:
        """video (B, T, 3, H, W); exit_after (B,) frames each sample processes -> scores (B,)."""
        scores = torch.zeros(video.shape[0])
        active = torch.arange(video.shape[0])
        for t in range(video.shape[1]):
            active = active[exit_after[active] > t]
            if active.numel() == 0:
                break
            feats = self.backbone.forward_features(video[active, t])
            scores[active] = self.gate(feats).squeeze(1)
        return scores


def test_dynamic_count_equals_batch1_flop_counter():
    torch.manual_seed(0)
    model = ToyEarlyExit().eval()
    video = torch.randn(4, 5, 3, 32, 32)
    exit_after = torch.tensor([1, 5, 3, 2])
    costs = UnitCosts()
    costs.measure("backbone", model.backbone.forward_features, video[:1, 0])
    costs.measure("gate", model.gate, torch.randn(1, 32))
    dynamic = per_sample_macs({"backbone": exit_after, "gate": exit_after}, costs)
    assert dynamic.tolist() == [(costs["backbone"] + costs["gate"]) * n for n in exit_after.tolist()]
    for i in range(4):
        crosscheck(lambda i=i: model(video[i : i + 1], exit_after[i : i + 1]), dynamic[i], what=f"video {i}")
    # the batched run spends exactly the sum of the per-sample figures
    assert count_macs(model, video, exit_after) == int(dynamic.sum())
    with pytest.raises(
        AssertionError, match=r"dynamic MAC count for video 0 is .* but FlopCounterMode measured"
    ):
        crosscheck(lambda: model(video[:1], exit_after[:1]), dynamic[0] + 1, what="video 0")
    with pytest.raises(KeyError, match="no measured cost for unit 'crop'"):
        per_sample_macs({"crop": [1]}, costs)


def test_bitops_convention():
    assert bitops(1000, 32, 32) == 1_024_000
    assert bitops(1000, 4, 4) == 16_000
    assert torch.equal(bitops(torch.tensor([10, 10]), torch.tensor([8, 0]), 8), torch.tensor([640, 0]))


def test_fractional_counts_are_exact_floats():
    costs = UnitCosts({"patch": 1000, "frame": 4000})
    # a patch covering 37.5% of a frame's area, run on 3 and 2.5 frames
    macs = per_sample_macs({"patch": torch.tensor([3.0, 2.5]), "frame": 0.375}, costs)
    assert macs.dtype == torch.float64
    assert macs.tolist() == [4500.0, 4000.0]
    with pytest.raises(ValueError, match="cannot cost nan MACs"):
        costs["bad"] = float("nan")


def test_bitops_table_sums_and_weights_rows():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)
    )
    macs = mac_table(net, torch.empty(1, 3, 8, 8))
    table = bitops_table(macs, {"2": (4, 2)})
    by_name = {r.name: r for r in table.rows}
    assert (by_name["0"].weight_bits, by_name["0"].act_bits) == (32, 32)  # float stem
    assert by_name["2"].bitops == macs.macs_of("2") * 8
    assert table.total == sum(r.bitops for r in table.rows)
    assert table.total == 1024 * (macs.total - macs.macs_of("2")) + 8 * macs.macs_of("2")
    assert table.bitops_of("4") == 1024 * macs.macs_of("4")
    # a function may choose bits; a skipped layer has 0 bits
    assert bitops_table(macs, lambda name: (0, 0) if name == "4" else None).bitops_of("4") == 0
    with pytest.raises(KeyError, match=r"no MACs in the table: \['3'\]"):
        bitops_table(macs, {"3": (4, 4)})


def test_latency_table_rows_are_the_mac_rows():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Conv2d(16, 64, 3, padding=1))
    x = torch.randn(2, 3, 32, 32)
    table = latency_table(net.eval(), x, repeats=5, warmup=1)
    assert [r.name for r in table.rows] == [r.name for r in mac_table(net, x).rows] == ["0", "2"]
    assert all(r.ms > 0 for r in table.rows)
    assert sum(r.ms for r in table.rows) <= table.total_ms
    assert table.cost_vector(["2", "0"]) == [table.ms_of("2"), table.ms_of("0")]
    with pytest.raises(KeyError, match="no latency row '1'"):
        table.ms_of("1")
    with torch.device("meta"):
        meta_net = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="not 'meta'"):
        latency_table(meta_net, torch.empty(1, 3, 4, 4, device="meta"))


def test_cli_prints_resnet50_gmacs_and_table(capsys, tmp_path):
    FLOPS.main(
        [
            "--backbone",
            "resnet50",
            "--input",
            "3x224x224",
            "--per-layer",
            "true",
            "--json",
            str(tmp_path / "r50.json"),
        ]
    )
    out = capsys.readouterr().out
    assert out.startswith("resnet50: 4.09 GMACs (4,087,136,256 MACs; 1 MAC = 2 FLOPs)")
    assert "layer4.2.conv3" in out and "(total)" in out
    assert json.loads((tmp_path / "r50.json").read_text())["total_macs"] == 4_087_136_256


def test_cli_bad_input(capsys):
    with pytest.raises(SystemExit) as info:
        FLOPS.main(["--backbone", "resnet50", "--input", "224x224"])
    assert info.value.code == 2
    assert "input must be three positive sizes C x H x W" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        FLOPS.main(["--backbone", "resnet5O"])
    assert "unknown backbone 'resnet5O'. Did you mean 'resnet50'" in capsys.readouterr().err
