"""``effvid-flops <backbone> --input 3x224x224 [--per_layer] [--json PATH] [--csv PATH]``.

Counts on the meta device (no weights are materialised, nothing is computed), so even
ResNet-101 is instant.
"""

from __future__ import annotations

import sys

import torch

from effvid.flops.counter import mac_table

__all__ = ["flops", "main"]


def _parse_input(text: str | int | tuple) -> tuple[int, ...]:
    parts = text if isinstance(text, tuple) else str(text).lower().split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--input must look like 3x224x224 (C x H x W), got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"--input must be three positive sizes C x H x W, got {text!r}")
    return shape


def flops(
    backbone: str,
    input: str = "3x224x224",
    per_layer: bool = False,
    json: str | None = None,
    csv: str | None = None,
    batch: int = 1,
) -> None:
    """Print the MACs of one forward of a registry backbone (1 MAC = 2 FLOPs).

    Args:
        backbone: a name from ``effvid.models.list_backbones()``.
        input: per-sample input size C x H x W.
        per_layer: also print the per-module table.
        json: write the per-module table as JSON to this path.
        csv: write the per-module table as CSV to this path.
        batch: batch size of the counted forward.
    """
    from effvid.models import get_backbone

    shape = _parse_input(input)
    with torch.device("meta"):
        model = get_backbone(backbone).eval()
    table = mac_table(model, torch.empty(batch, *shape, device="meta"))
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{backbone}: {table.total / 1e9:.2f} GMACs ({table.total:,} MACs; 1 MAC = 2 FLOPs) "
        f"for input {batch}x{'x'.join(map(str, shape))}, {params / 1e6:.2f} M parameters"
    )
    if per_layer:
        print(table.format())
    if json:
        table.to_json(json)
        print(f"wrote {json}")
    if csv:
        table.to_csv(csv)
        print(f"wrote {csv}")


def main(argv: list[str] | None = None) -> None:
    import fire

    try:
        fire.Fire(flops, command=argv, name="effvid-flops")
    except (KeyError, ValueError) as exc:
        print(f"effvid-flops: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        raise SystemExit(2) from None
