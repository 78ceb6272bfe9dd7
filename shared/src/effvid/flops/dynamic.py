"""Dynamic (input-dependent) MAC accounting.

An adaptive model's cost is a sum over the units it executed for each sample: frames through the
backbone, gate evaluations, crops at some size, layers at some bit width. The cost of one unit is
*measured* once (from :func:`~effvid.flops.count_macs` or a :class:`~effvid.flops.MacTable`),
then per-sample MACs = sum over units of (times executed x unit cost). :func:`crosscheck` verifies
such a figure against FlopCounterMode on an actual batch-1 run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from effvid.flops.counter import _run_counted

__all__ = ["UnitCosts", "crosscheck", "per_sample_macs"]


@dataclass
class UnitCosts:
    """Measured MACs of one execution of each named unit, e.g. ``{"backbone": 4.09e9, "gate": 1.1e6}``."""

    macs: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, unit: str) -> float:
        try:
            return self.macs[unit]
        except KeyError:
            raise KeyError(f"no measured cost for unit '{unit}'; known units: {sorted(self.macs)}") from None

    def __setitem__(self, unit: str, macs: float) -> None:
        if not macs >= 0:  # also refuses NaN
            raise ValueError(f"unit '{unit}' cannot cost {macs} MACs")
        self.macs[unit] = macs

    def measure(self, unit: str, fn: Callable[..., Any], *inputs: Any, **kwargs: Any) -> float:
        """Run ``fn(*inputs, **kwargs)`` once under FlopCounterMode and record it as ``unit``'s cost.

        ``inputs`` should describe ONE execution (e.g. batch 1, or a meta tensor of that shape).
        """
        self[unit] = _run_counted(lambda: fn(*inputs, **kwargs)).get_total_flops() // 2
        return self.macs[unit]

    def per_sample(self, counts: Mapping[str, torch.Tensor | Sequence[float] | float]) -> torch.Tensor:
        return per_sample_macs(counts, self)


def per_sample_macs(
    counts: Mapping[str, torch.Tensor | Sequence[float] | float], costs: UnitCosts | Mapping[str, float]
) -> torch.Tensor:
    """MACs per sample: ``sum_u counts[u] * costs[u]`` -> float64 tensor (B,).

    ``counts[u]`` holds how many times unit ``u`` ran for each sample, shape (B,) (a scalar
    broadcasts). Counts may be fractional (a crop covering part of a frame, a layer run on part
    of its input); float64 holds integer MAC totals exactly up to 2**53 (9e15). Every unit counted
    must have a cost.
    """
    table = costs if isinstance(costs, UnitCosts) else UnitCosts(dict(costs))
    total: torch.Tensor | None = None
    for unit, n in counts.items():
        term = torch.as_tensor(n, dtype=torch.float64) * table[unit]
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no unit counts given")
    return total


def crosscheck(
    run_one: Callable[[], Any], expected_macs: float | torch.Tensor, *, what: str = "sample"
) -> int:
    """Run ``run_one()`` (a batch-1 forward of the adaptive model) under FlopCounterMode and
    raise if its MACs differ from ``expected_macs`` (the dynamic figure) by more than float64
    rounding. Returns the measured MACs.
    """
    measured = _run_counted(run_one).get_total_flops() // 2
    expected = float(expected_macs)
    if abs(measured - expected) > 1e-9 * max(1.0, abs(expected)):
        raise AssertionError(
            f"dynamic MAC count for {what} is {expected:,} but FlopCounterMode measured {measured:,} "
            f"(difference {measured - expected:+,.1f})"
        )
    return measured
