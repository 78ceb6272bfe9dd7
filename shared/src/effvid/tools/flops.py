"""``effvid-flops --backbone resnet50 --input 3x224x224 [--per_layer true] [--json PATH] [--csv PATH]``.

Counts on the meta device (no weights are materialised, nothing is computed), so even
ResNet-101 is instant. 1 MAC = 2 FLOPs (see docs/flops.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from effvid.cli import build_command
from effvid.config import MISSING, option
from effvid.flops.counter import mac_table
from effvid.models import BACKBONES, get_backbone

__all__ = ["FLOPS", "FlopsConfig"]


@dataclass
class FlopsConfig:
    backbone: str = option(
        MISSING, "a registered backbone (resnet18/34/50/101, mobilenet_v2, efficientnet_b0/b3, tiny_cnn)"
    )
    input: str = option("3x224x224", "per-sample input size C x H x W")
    batch: int = option(1, "batch size of the counted forward")
    per_layer: bool = option(False, "also print the per-module table")
    json: str | None = option(None, "write the per-module table as JSON here")
    csv: str | None = option(None, "write the per-module table as CSV here")

    def __post_init__(self) -> None:
        BACKBONES.check(self.backbone, key="backbone")
        if not re.fullmatch(r"[1-9]\d*x[1-9]\d*x[1-9]\d*", str(self.input).lower()):
            raise ValueError(
                f"input must be three positive sizes C x H x W such as 3x224x224; got {self.input!r}"
            )
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")


def _run(cfg: FlopsConfig, _run_dir: None) -> None:
    shape = tuple(int(p) for p in str(cfg.input).lower().split("x"))
    with torch.device("meta"):
        model = get_backbone(cfg.backbone).eval()
    table = mac_table(model, torch.empty(cfg.batch, *shape, device="meta"))
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{cfg.backbone}: {table.total / 1e9:.2f} GMACs ({table.total:,} MACs; 1 MAC = 2 FLOPs) "
        f"for input {cfg.batch}x{'x'.join(map(str, shape))}, {params / 1e6:.2f} M parameters"
    )
    if cfg.per_layer:
        print(table.format())
    for path, write in ((cfg.json, table.to_json), (cfg.csv, table.to_csv)):
        if path:
            write(path)
            print(f"wrote {path}")


FLOPS = build_command(
    _run, FlopsConfig, name="effvid-flops", doc="MACs of one forward of a registry backbone.", run_dir=False
)
