"""What a converted model costs: per-layer cost vectors for the gates, and MACs per clip.

* :func:`measure_unit_costs` - MACs of one execution of every unit at a frame size, measured on
  the ``meta`` device: ``"frame"`` (everything outside the delta layers, per frame), and per delta
  layer ``<l>.teacher`` (one keyframe), ``<l>.full`` / ``<l>.lowrank`` (one delta frame);
* :func:`clip_macs` - MACs of a T-frame clip of what actually runs (teacher on the keyframe, each
  layer's chosen student on the others) from those units, through ``per_sample_macs``; the tests
  check it against FlopCounterMode with ``crosscheck``;
* :class:`LayerCosts` - the vector ``cost_l`` of the cost loss ``beta * sum_l g_l * cost_l``, in
  delta-layer order, from the MAC units or a measured latency table, saved as JSON (the original
  unpickled an unlabelled tensor; here a table whose names do not match the model's delta layers
  is an error).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from deltadist.delta import delta_layers, set_clip_length
from effvid.flops import LatencyTable, UnitCosts, mac_table, per_sample_macs
from effvid.io import atomic_write_json

__all__ = [
    "LayerCosts",
    "clip_macs",
    "gate_cost",
    "layer_costs",
    "layer_costs_from_latency",
    "measure_unit_costs",
]

StudentCost = Literal["full", "extra"]


def measure_unit_costs(model: nn.Module, frame_shape: Sequence[int]) -> UnitCosts:
    """MACs of each unit of ``model`` for frames of ``frame_shape`` ``(C, H, W)``, counted on a meta copy.

    A deployed layer has only its chosen student's unit.
    """
    layers = delta_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no delta layers; convert it first")
    twin = copy.deepcopy(model).to("meta").eval()
    set_clip_length(twin, 2)  # one keyframe, one delta frame
    clip = torch.empty(2, *frame_shape, device="meta")
    tables = {}
    for student in ("full", "lowrank"):
        for layer in delta_layers(twin).values():
            layer.force = student
        tables[student] = mac_table(twin, clip, device=None)
    costs = UnitCosts()
    inside = 0.0  # MACs of the delta layers in the "full" pass
    for name, layer in layers.items():
        costs[f"{name}.teacher"] = tables["full"].macs_of(f"{name}.teacher")
        if layer.deployed:
            costs[f"{name}.{layer.choice()}"] = tables["full"].macs_of(f"{name}.student")
            inside += costs[f"{name}.teacher"] + costs[f"{name}.{layer.choice()}"]
        else:
            costs[f"{name}.full"] = tables["full"].macs_of(f"{name}.student_full")
            costs[f"{name}.lowrank"] = tables["lowrank"].macs_of(f"{name}.student_lowrank")
            inside += costs[f"{name}.teacher"] + costs[f"{name}.full"]
    costs["frame"] = (tables["full"].total - inside) / 2
    return costs


def clip_macs(model: nn.Module, costs: UnitCosts, clip_length: int) -> float:
    """MACs of one ``clip_length``-frame clip: per-frame work, teachers once, chosen students T-1 times."""
    if clip_length < 1:
        raise ValueError(f"clip_length must be >= 1, got {clip_length}")
    counts = {"frame": float(clip_length)}
    for name, layer in delta_layers(model).items():
        counts[f"{name}.teacher"] = 1.0
        if clip_length > 1:
            counts[f"{name}.{layer.choice()}"] = float(clip_length - 1)
    return float(per_sample_macs(counts, costs))


@dataclass(frozen=True)
class LayerCosts:
    """One cost per delta layer, in the model's delta-layer order: what choosing the full-size
    student costs (``student_cost="full"``), or what it costs more than the low-rank one (``"extra"``).
    """

    names: tuple[str, ...]
    values: tuple[float, ...]
    unit: str
    student_cost: StudentCost = "full"
    normalised: bool = True

    def __post_init__(self) -> None:
        if len(self.names) != len(self.values):
            raise ValueError(f"{len(self.names)} layer names but {len(self.values)} costs")

    def check(self, model: nn.Module) -> None:
        """Raise unless the names are exactly ``model``'s delta layers, in order."""
        layers = list(delta_layers(model))
        if list(self.names) == layers:
            return
        missing = [n for n in layers if n not in self.names]
        extra = [n for n in self.names if n not in layers]
        detail = (
            f"missing {missing}, not in the model {extra}"
            if missing or extra
            else "same names, another order"
        )
        raise ValueError(
            f"the cost table's {len(self.names)} rows do not match the model's {len(layers)} delta layers: {detail}"
        )

    def tensor(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """(L,) costs."""
        return torch.tensor(self.values, device=device, dtype=dtype)

    def to_json(self, path: str | os.PathLike[str]) -> None:
        atomic_write_json(
            path,
            {
                "unit": self.unit,
                "student_cost": self.student_cost,
                "normalised": self.normalised,
                "layers": [{"name": n, "cost": v} for n, v in zip(self.names, self.values)],
            },
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> LayerCosts:
        data = json.loads(Path(path).read_text())
        try:
            layers = data["layers"]
            return cls(
                tuple(str(r["name"]) for r in layers),
                tuple(float(r["cost"]) for r in layers),
                str(data["unit"]),
                data["student_cost"],
                bool(data["normalised"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a layer cost table: missing {exc}") from None


def _finish(names, values, unit, student_cost, normalise) -> LayerCosts:
    if normalise:
        total = sum(values)
        if total <= 0:
            raise ValueError(f"the layer costs sum to {total}; cannot normalise them")
        values = [v / total for v in values]
    return LayerCosts(tuple(names), tuple(float(v) for v in values), unit, student_cost, normalise)


def layer_costs(
    model: nn.Module,
    frame_shape: Sequence[int],
    *,
    student_cost: StudentCost = "full",
    normalise: bool = True,
) -> LayerCosts:
    """Per-layer MACs on one delta frame of ``frame_shape`` ``(C, H, W)``; normalised to sum 1 by
    default (what the original's uniform fallback ``1 / L`` suggests its files held)."""
    if any(layer.deployed for layer in delta_layers(model).values()):
        raise ValueError("layer costs are for training: the model has deployed layers")
    units = measure_unit_costs(model, frame_shape)
    names = list(delta_layers(model))
    values = [units[f"{n}.full"] - (units[f"{n}.lowrank"] if student_cost == "extra" else 0.0) for n in names]
    return _finish(names, values, "MAC", student_cost, normalise)


def _ms_under(table: LatencyTable, prefix: str) -> float:
    rows = [r.ms for r in table.rows if r.name == prefix or r.name.startswith(prefix + ".")]
    if not rows:
        raise ValueError(
            f"the latency table has no row for '{prefix}'; time the model with that student running "
            "(force it, clip_length >= 2)"
        )
    return sum(rows)


def layer_costs_from_latency(
    model: nn.Module,
    full: LatencyTable,
    lowrank: LatencyTable | None = None,
    *,
    normalise: bool = True,
) -> LayerCosts:
    """Per-layer milliseconds of the full-size student (from ``full``, timed with every layer forced
    to it), minus the low-rank student's (from ``lowrank``) when that table is given."""
    names = list(delta_layers(model))
    if not names:
        raise ValueError(f"{type(model).__name__} has no delta layers; convert it first")
    values = [
        _ms_under(full, f"{n}.student_full")
        - (_ms_under(lowrank, f"{n}.student_lowrank") if lowrank else 0.0)
        for n in names
    ]
    return _finish(names, values, "ms", "extra" if lowrank else "full", normalise)


def gate_cost(model: nn.Module, costs: LayerCosts) -> torch.Tensor:
    """``sum_l g_l * cost_l`` over the gates sampled by the last training forward (0-dim, differentiable)."""
    costs.check(model)
    gates = []
    for name, layer in delta_layers(model).items():
        if layer.gate_value is None:
            raise ValueError(
                f"delta layer '{name}' has no sampled gate; run a training forward with clip_length >= 2"
            )
        gates.append(layer.gate_value)
    g = torch.stack(gates)
    return (g * costs.tensor(g.device, g.dtype)).sum()
