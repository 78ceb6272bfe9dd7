"""Training a delta model (and a frame-based teacher) on the core's engine.

The training module wraps :class:`~deltadist.losses.DeltaDistillationLoss`: on a batch
``{"video": (B, 2, 3, H, W), "mask": (B, H, W)}`` (keyframe, labelled frame) it returns
``task + alpha * distill + beta * sum_l g_l cost_l``. Around it:

* one optimiser, two parameter groups: the students and gates (``lr_students``) and everything
  else, teachers included (``lr``); SGD with momentum (the original's) or Adam; poly decay
  ``(1 - it / max_it) ^ power`` per iteration;
* :func:`attach_distill_switch`: alpha is 0 from ``distill_fraction`` of the iterations on
  (recomputed from the iteration count, so a resumed run switches at the same step);
* the cost vector from the MAC table or from a latency table measured on the training device
  (JSON; written to the run directory and reused when the run resumes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from deltadist.cost import LayerCosts, layer_costs, layer_costs_from_latency
from deltadist.delta import delta_layers, set_clip_length, student_parameters
from deltadist.losses import CrossEntropy2d, DeltaDistillationLoss, OhemCrossEntropy
from effvid.data import worker_init_fn
from effvid.engine import EngineConfig, fit
from effvid.flops import latency_table
from effvid.model_files import ModelFileError

__all__ = [
    "DeltaObjective",
    "FrameObjective",
    "attach_distill_switch",
    "measure_layer_costs",
    "param_groups",
    "read_cost_table",
    "train_delta",
    "train_frames",
]


class DeltaObjective(nn.Module):
    """The training module: ``forward({"video": (B, 2, 3, H, W), "mask": (B, H, W)}) -> (loss, logs)``."""

    def __init__(self, loss: DeltaDistillationLoss) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss((batch["video"], batch["mask"]))


class FrameObjective(nn.Module):
    """A frame-based network on the labelled (last) frame: ``task_loss(model(video[:, -1]), mask)``."""

    def __init__(self, model: nn.Module, task_loss: nn.Module) -> None:
        super().__init__()
        self.model, self.task_loss = model, task_loss

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.task_loss(self.model(batch["video"][:, -1]), batch["mask"]), {}


def make_task_loss(
    kind: str, *, ignore_index: int = 255, threshold: float = 0.9, min_kept: int = 131072
) -> nn.Module:
    if kind == "ohem":
        return OhemCrossEntropy(threshold=threshold, min_kept=min_kept, ignore_index=ignore_index)
    return CrossEntropy2d(ignore_index=ignore_index)


def read_cost_table(path: str | Path, model: nn.Module) -> LayerCosts:
    """A :class:`LayerCosts` JSON file, checked against ``model``'s delta layers (errors name the file)."""
    try:
        costs = LayerCosts.from_json(path)
        costs.check(model)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: cost table not found") from None
    except (ValueError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    return costs


@torch.no_grad()
def _timed(model: nn.Module, frames: torch.Tensor, student: str, repeats: int):
    for layer in delta_layers(model).values():
        layer.force = student  # type: ignore[assignment]
    return latency_table(model, frames, repeats=repeats, warmup=2)


def measure_layer_costs(
    model: nn.Module,
    frame_shape: Sequence[int],
    source: str,
    *,
    device: torch.device | str = "cpu",
    repeats: int = 10,
) -> LayerCosts:
    """Per-layer costs of the full-size students, normalised to sum 1: MACs counted on ``meta``
    (``source="macs"``) or milliseconds timed on ``device`` on a 2-frame clip (``"latency"``)."""
    if source == "macs":
        return layer_costs(model, frame_shape)
    layers = delta_layers(model)
    saved = {n: (layer.force, layer.training) for n, layer in layers.items()}
    was_training = model.training
    model.eval()
    set_clip_length(model, 2)
    frames = torch.randn(2, *frame_shape, device=device)
    try:
        full = _timed(model, frames, "full", repeats)
    finally:
        set_clip_length(model, 1)
        for n, layer in layers.items():
            layer.force = saved[n][0]
        model.train(was_training)
    return layer_costs_from_latency(model, full)


def attach_distill_switch(trainer: Engine, loss: DeltaDistillationLoss, fraction: float) -> None:
    """Distillation on for the first ``fraction`` of the run's iterations (``max_epochs * epoch_length``)."""

    @trainer.on(Events.ITERATION_STARTED)
    def _switch(engine: Engine) -> None:
        total = engine.state.max_epochs * (engine.state.epoch_length or 1)
        # iteration counts from 1 at the first step
        loss.distill_active = engine.state.iteration - 1 < fraction * total


def param_groups(model: nn.Module, *, lr: float, lr_students: float, weight_decay: float = 0.0) -> list[dict]:
    """Two groups of the trainable parameters: students + gates, and everything else."""
    students = {id(p) for p in student_parameters(model)}
    first = [p for p in model.parameters() if p.requires_grad and id(p) in students]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in students]
    return [
        {"params": first, "lr": lr_students, "weight_decay": weight_decay, "name": "students"},
        {"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "rest"},
    ]


def _optimizer(groups: list[dict], kind: str, momentum: float) -> torch.optim.Optimizer:
    groups = [g for g in groups if g["params"]]
    if kind == "adam":
        return torch.optim.Adam(groups)
    return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=momentum)


def _fit(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int,
    num_workers: int,
    cfg: EngineConfig,
    run_dir: str | Path,
    poly_power: float,
    loss: DeltaDistillationLoss | None = None,
    distill_fraction: float = 1.0,
) -> bool:
    def poly(iteration: int, total: int) -> float:
        return max(1.0 - iteration / total, 0.0) ** poly_power if poly_power else 1.0

    return fit(
        objective,
        optimizer,
        dataset,
        cfg,
        run_dir,
        batch_size=batch_size,
        num_workers=num_workers,
        lr_lambda=poly,
        attach=(lambda trainer: attach_distill_switch(trainer, loss, distill_fraction)) if loss else None,
        worker_init_fn=worker_init_fn,
    )


def train_delta(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    *,
    task_loss: nn.Module,
    costs: LayerCosts | None,
    cfg: EngineConfig,
    run_dir: str | Path,
    batch_size: int,
    num_workers: int = 0,
    alpha: float = 0.01,
    beta: float = 0.1,
    distill_fraction: float = 1 / 3,
    optimizer: str = "sgd",
    lr: float = 0.001,
    lr_students: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    poly_power: float = 0.9,
) -> bool:
    """Train a converted model on ``{"video": (2, 3, H, W), "mask": (H, W)}`` samples.
    Returns False when ``run_dir`` already held the finished run (nothing trained)."""
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta}")
    loss = DeltaDistillationLoss(model, task_loss, costs, alpha=alpha, beta=beta)
    groups = param_groups(model, lr=lr, lr_students=lr_students, weight_decay=weight_decay)
    return _fit(
        DeltaObjective(loss),
        _optimizer(groups, optimizer, momentum),
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        cfg=cfg,
        run_dir=run_dir,
        poly_power=poly_power,
        loss=loss,
        distill_fraction=distill_fraction,
    )


def train_frames(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    *,
    task_loss: nn.Module,
    cfg: EngineConfig,
    run_dir: str | Path,
    batch_size: int,
    lr: float,
    num_workers: int = 0,
    poly_power: float = 0.9,
) -> bool:
    """Adam on a frame-based network, labelled frames only (the demo's teacher)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    return _fit(
        FrameObjective(model, task_loss),
        optimizer,
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        cfg=cfg,
        run_dir=run_dir,
        poly_power=poly_power,
    )
