"""BitOPs: MACs weighted by the bit widths of the operands (the VideoIQ / any-precision convention).

A layer computing ``m`` MACs with ``w``-bit weights on ``a``-bit activations costs ``m * w * a``
BitOPs: a 32x32-bit float MAC counts 1024, an 8x8 MAC 64, a 4x4 MAC 16, skipped work 0.
:func:`bitops_table` applies this row by row to a :class:`~effvid.flops.MacTable`, so the
per-layer figures sum to the total exactly as the MACs do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from effvid.flops.counter import MacTable
from effvid.io import atomic_write_json

__all__ = ["FLOAT_BITS", "BitopsRow", "BitopsTable", "bitops", "bitops_table"]

FLOAT_BITS = (32, 32)
"""(weight bits, activation bits) of a layer that is not quantised."""


def bitops(macs: int | torch.Tensor, weight_bits: int | torch.Tensor, act_bits: int | torch.Tensor) -> Any:
    """BitOPs of a layer: MACs x weight bits x activation bits (tensors broadcast)."""
    return macs * weight_bits * act_bits


@dataclass(frozen=True)
class BitopsRow:
    name: str
    macs: int
    weight_bits: int
    act_bits: int

    @property
    def bitops(self) -> int:
        return self.macs * self.weight_bits * self.act_bits


@dataclass(frozen=True)
class BitopsTable:
    """Per-layer BitOPs of one forward; ``sum(row.bitops) == total``."""

    rows: tuple[BitopsRow, ...]

    @property
    def total(self) -> int:
        return sum(r.bitops for r in self.rows)

    def bitops_of(self, prefix: str) -> int:
        """BitOPs of the module called ``prefix`` and everything under it."""
        if not prefix:
            return self.total
        return sum(r.bitops for r in self.rows if r.name == prefix or r.name.startswith(prefix + "."))

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": "BitOP (MAC x weight bits x activation bits)",
            "total_bitops": self.total,
            "rows": [{**asdict(r), "bitops": r.bitops} for r in self.rows],
        }

    def to_json(self, path: str | os.PathLike[str]) -> None:
        atomic_write_json(path, self.to_dict())

    def format(self) -> str:
        width = max([len(r.name) for r in self.rows] + [12])
        lines = [f"{'module':<{width}}  {'MACs':>15}  {'W':>3}  {'A':>3}  {'BitOPs':>18}"]
        for r in self.rows:
            lines.append(
                f"{r.name:<{width}}  {r.macs:>15,}  {r.weight_bits:>3}  {r.act_bits:>3}  {r.bitops:>18,}"
            )
        lines.append(
            f"{'(total)':<{width}}  {sum(r.macs for r in self.rows):>15,}  {'':>3}  {'':>3}  {self.total:>18,}"
        )
        return "\n".join(lines)


def bitops_table(
    macs: MacTable,
    bits: Mapping[str, tuple[int, int]] | Callable[[str], tuple[int, int] | None],
    *,
    default: tuple[int, int] = FLOAT_BITS,
) -> BitopsTable:
    """Weight each row of a MAC table by its layer's (weight bits, activation bits).

    Args:
        macs: the per-layer MAC table of the forward to cost (:func:`~effvid.flops.mac_table`).
        bits: module name -> (weight bits, activation bits), as a mapping or a function returning
            None for layers it does not know. Names the table does not have are an error (a typo
            would silently cost a quantised layer at 32 x 32 bits).
        default: bits of the layers ``bits`` leaves out: full precision, 32 x 32.
    """
    if isinstance(bits, Mapping):
        unknown = sorted(set(bits) - {r.name for r in macs.rows})
        if unknown:
            raise KeyError(f"bit widths given for module(s) with no MACs in the table: {unknown}")
        lookup: Callable[[str], tuple[int, int] | None] = bits.get
    else:
        lookup = bits
    rows = []
    for r in macs.rows:
        w, a = lookup(r.name) or default
        if w < 0 or a < 0:
            raise ValueError(f"module '{r.name}': bit widths must be >= 0, got ({w}, {a})")
        rows.append(BitopsRow(r.name, r.macs, int(w), int(a)))
    return BitopsTable(tuple(rows))
