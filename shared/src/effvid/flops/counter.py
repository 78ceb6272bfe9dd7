"""Static MAC counts: a total, and a per-module table that sums to it."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from effvid.io import atomic_write_json, atomic_write_text

__all__ = ["MacRow", "MacTable", "count_macs", "mac_table"]


def _run_counted(fn: Callable[[], Any]) -> FlopCounterMode:
    counter = FlopCounterMode(display=False, depth=None)
    with counter, torch.no_grad():
        fn()
    return counter


def count_macs(model: nn.Module | Callable[..., Any], *inputs: Any, **kwargs: Any) -> int:
    """MACs of one call ``model(*inputs, **kwargs)`` (FlopCounterMode FLOPs / 2).

    Works on any device, ``meta`` included (nothing is computed there).
    """
    counter = _run_counted(lambda: model(*inputs, **kwargs))
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class MacRow:
    """One module's own MACs (ops it ran itself, not through a child) and own parameters."""

    name: str
    macs: int
    params: int


@dataclass(frozen=True)
class MacTable:
    """Per-module MACs of one forward; ``sum(row.macs) == total``."""

    rows: tuple[MacRow, ...]
    total: int

    def macs_of(self, prefix: str) -> int:
        """MACs of the module called ``prefix`` and everything under it (``""``: the total)."""
        if not prefix:
            return self.total
        return sum(r.macs for r in self.rows if r.name == prefix or r.name.startswith(prefix + "."))

    def to_dict(self) -> dict[str, Any]:
        return {"unit": "MAC", "total_macs": self.total, "rows": [asdict(r) for r in self.rows]}

    def to_json(self, path: str | os.PathLike[str]) -> None:
        atomic_write_json(path, self.to_dict())

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["module", "macs", "params"])
        for r in self.rows:
            writer.writerow([r.name, r.macs, r.params])
        writer.writerow(["(total)", self.total, sum(r.params for r in self.rows)])
        atomic_write_text(path, buf.getvalue())

    def format(self, *, min_share: float = 0.0) -> str:
        """A fixed-width table; rows below ``min_share`` of the total are folded into one line."""
        width = max([len(r.name) for r in self.rows] + [12])
        lines = [f"{'module':<{width}}  {'MACs':>15}  {'share':>7}  {'params':>11}"]
        folded_macs = folded_n = 0
        for r in self.rows:
            share = r.macs / self.total if self.total else 0.0
            if share < min_share:
                folded_macs += r.macs
                folded_n += 1
                continue
            lines.append(f"{r.name:<{width}}  {r.macs:>15,}  {share:>7.2%}  {r.params:>11,}")
        if folded_n:
            share = folded_macs / self.total if self.total else 0.0
            lines.append(f"{f'({folded_n} smaller rows)':<{width}}  {folded_macs:>15,}  {share:>7.2%}")
        lines.append(
            f"{'(total)':<{width}}  {self.total:>15,}  {1:>7.2%}  {sum(r.params for r in self.rows):>11,}"
        )
        return "\n".join(lines)


def _own_params(model: nn.Module) -> dict[str, int]:
    return {name: sum(p.numel() for p in m.parameters(recurse=False)) for name, m in model.named_modules()}


def mac_table(
    model: nn.Module,
    *inputs: Any,
    device: str | torch.device | None = "meta",
    **kwargs: Any,
) -> MacTable:
    """Per-module MACs of ``model(*inputs, **kwargs)``.

    Each op is attributed to the innermost module that ran it (a module's own count is its
    FlopCounterMode count minus its children's), so functional ops inside custom ``forward``s and
    repeated calls of one module are all counted, and the rows sum to the total. The root module's
    own ops appear as ``"(root)"``.

    With ``device="meta"`` (default) the model is copied to the meta device (weights are not
    materialised, nothing is computed) and tensor inputs are moved there; ``device=None`` runs
    as given.
    """
    if device is not None:
        device = torch.device(device)
        if device.type == "meta":
            import copy

            model = (
                copy.deepcopy(model).to(device)
                if any(p.device.type != "meta" for p in model.parameters())
                else model
            )
        else:
            model = model.to(device)
        inputs = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)
    counter = _run_counted(lambda: model(*inputs, **kwargs))
    counts = counter.get_flop_counts()
    root = type(model).__name__
    flops_by_name: dict[str, int] = {}
    for name, ops in counts.items():
        if name == "Global":
            continue
        rel = "" if name == root else name[len(root) + 1 :] if name.startswith(root + ".") else name
        flops_by_name[rel] = flops_by_name.get(rel, 0) + sum(ops.values())
    names = set(flops_by_name)

    def parent_of(n: str) -> str | None:
        # nearest counted ancestor ("" is the root)
        while n:
            n = n.rsplit(".", 1)[0] if "." in n else ""
            if n in names:
                return n
        return None

    own = dict(flops_by_name)
    for n, f in flops_by_name.items():
        if n == "":
            continue
        p = parent_of(n)
        if p is not None:
            own[p] -= f
    params = _own_params(model)
    order = {name: i for i, name in enumerate(params)}  # registration order, like print(model)
    rows = tuple(
        MacRow(name=n or "(root)", macs=f // 2, params=params.get(n, 0))
        for n, f in sorted(own.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))
        if f > 0
    )
    total = counter.get_total_flops() // 2
    if sum(r.macs for r in rows) != total:
        raise RuntimeError(
            f"per-module MACs ({sum(r.macs for r in rows)}) do not add up to the total ({total}); "
            "an op ran outside every module"
        )
    return MacTable(rows=rows, total=total)
