"""Per-layer latency measured on a device, with the row names of the MAC table.

For latency-aware training (Delta Distillation's gates weighted by time instead of MACs) the cost
of a layer is what it takes on the target device. :func:`latency_table` times every module of a
forward with hooks, over repeated calls after a warm-up, and reports each module's *own* time
(its inclusive time minus that of its timed children), the median over the repeats, for exactly
the modules that have rows in :func:`~effvid.flops.mac_table`. Layers without MACs (BatchNorm,
activations) are not rows; their time is in ``total_ms`` but not in any row.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from effvid.flops.counter import mac_table
from effvid.io import atomic_write_json

__all__ = ["LatencyRow", "LatencyTable", "latency_table"]


@dataclass(frozen=True)
class LatencyRow:
    name: str
    ms: float
    """median own time per forward, milliseconds"""


@dataclass(frozen=True)
class LatencyTable:
    rows: tuple[LatencyRow, ...]
    total_ms: float
    """median time of the whole forward (hooks included)"""
    device: str
    repeats: int

    def ms_of(self, name: str) -> float:
        for r in self.rows:
            if r.name == name:
                return r.ms
        raise KeyError(f"no latency row '{name}'; rows: {[r.name for r in self.rows]}")

    def cost_vector(self, names: Sequence[str]) -> list[float]:
        """Milliseconds of ``names``, in that order (a layer without a row is an error)."""
        return [self.ms_of(n) for n in names]

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": "ms (median own time per forward)",
            "device": self.device,
            "repeats": self.repeats,
            "total_ms": self.total_ms,
            "rows": [asdict(r) for r in self.rows],
        }

    def to_json(self, path: str | os.PathLike[str]) -> None:
        atomic_write_json(path, self.to_dict())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_parent(name: str, timed: dict[str, float]) -> str | None:
    """The nearest ancestor of ``name`` that was timed ("" is the root)."""
    while name:
        name = name.rsplit(".", 1)[0] if "." in name else ""
        if name in timed:
            return name
    return None


@torch.no_grad()
def latency_table(
    model: nn.Module,
    *inputs: Any,
    repeats: int = 20,
    warmup: int = 3,
    **kwargs: Any,
) -> LatencyTable:
    """Time ``model(*inputs, **kwargs)`` layer by layer where model and inputs already are.

    Args:
        repeats: timed forwards; each row is the median over them.
        warmup: forwards run first and not counted (allocator, caches, cuDNN autotuning).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if device.type == "meta":
        raise ValueError("latency_table needs a model on a real device, not 'meta'")
    row_names = [r.name for r in mac_table(model, *inputs, **kwargs).rows]
    names = {m: n for n, m in model.named_modules()}
    inclusive: dict[str, float] = {}
    stack: list[tuple[str, float]] = []

    def pre(module: nn.Module, _args: Any) -> None:
        _sync(device)
        stack.append((names[module], time.perf_counter()))

    def post(module: nn.Module, _args: Any, _out: Any) -> None:
        _sync(device)
        name, start = stack.pop()
        inclusive[name] = inclusive.get(name, 0.0) + time.perf_counter() - start

    handles = [m.register_forward_pre_hook(pre) for m in names] + [
        m.register_forward_hook(post) for m in names
    ]
    own_runs: dict[str, list[float]] = {n: [] for n in row_names}
    totals: list[float] = []
    try:
        for i in range(warmup + repeats):
            inclusive.clear()
            _sync(device)
            start = time.perf_counter()
            model(*inputs, **kwargs)
            _sync(device)
            if i < warmup:
                continue
            totals.append(time.perf_counter() - start)
            own = dict(inclusive)
            for n, t in inclusive.items():
                p = _timed_parent(n, inclusive) if n else None
                if p is not None:
                    own[p] -= t
            for row in row_names:
                own_runs[row].append(own.get("" if row == "(root)" else row, 0.0))
    finally:
        for h in handles:
            h.remove()
    rows = tuple(LatencyRow(n, 1e3 * statistics.median(own_runs[n])) for n in row_names)
    return LatencyTable(rows, 1e3 * statistics.median(totals), str(device), repeats)
