"""Training a delta detector: the detector's own loss on every frame, plus distillation and cost.

Per iteration, on pairs ``{"video": (B, 2, 3, S, S), "targets": B*2 dicts}`` (keyframe first):

1. distillation targets from an eval-mode, teacher-only pass (:func:`deltadist.losses.teacher_deltas`);
2. the training pass: ``task_loss(frames, targets)`` runs the detector on all ``B*2`` rolled frames
   and returns its loss dict (EfficientDet: focal + box loss; Faster R-CNN: RPN + RoI losses);
3. ``loss = sum(task) + alpha * distill + beta * sum_l g_l cost_l``, ``distill`` the per-layer MSE
   between student and teacher deltas, normalised as the original does per detector:
   ``"per_layer"`` (EfficientDet: each layer divided by its first-batch value, then the mean),
   ``"none"`` (Faster R-CNN), or ``"scalar"`` (segmentation's: the mean divided by its first value).

A layer called several times per forward (EfficientDet's heads run once per pyramid level) keeps
its last call's deltas and gate sample, as the original's did.

:func:`train_delta_detector` runs it on the core's engine with the original's optimiser: SGD,
two parameter groups (students + gates at ``lr_students`` without weight decay, everything else at
``lr`` with ``weight_decay``), the learning rate divided by 10 after ``step_epochs`` (MultiStepLR),
distillation off after ``distill_fraction`` of the iterations (EfficientDet: epochs >= 7 // 3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from deltadist.cost import LayerCosts, gate_cost
from deltadist.delta import delta_layers, set_clip_length
from deltadist.detection.data import collate_detection
from deltadist.losses import teacher_deltas
from deltadist.training import attach_distill_switch, param_groups
from effvid.data import worker_init_fn
from effvid.engine import EngineConfig, fit

__all__ = [
    "DetectionDistillationLoss",
    "FrameDetectionObjective",
    "train_delta_detector",
    "train_frame_detector",
]

TaskLoss = Callable[[torch.Tensor, Sequence[dict[str, torch.Tensor]]], dict[str, torch.Tensor]]
Normalise = Literal["per_layer", "scalar", "none"]


class DetectionDistillationLoss(nn.Module):
    """``forward({"video": (B, T, 3, S, S), "targets": [...]}) -> (loss, logs)`` for a converted detector.

    Args:
        model: the converted network (its delta layers are read; its forward is what ``task_loss`` runs).
        task_loss: ``(frames (B*T, 3, S, S), targets) -> {name: 0-dim loss}``, summed.
        costs: per-layer costs of the cost loss (needed when ``beta != 0``).
        alpha / beta: distillation and cost weights (EfficientDet 100 / 10, Faster R-CNN 1000 / 10).
        normalise: how the distillation loss is scaled (see the module doc).
    """

    def __init__(
        self,
        model: nn.Module,
        task_loss: TaskLoss,
        costs: LayerCosts | None = None,
        *,
        alpha: float = 100.0,
        beta: float = 10.0,
        normalise: Normalise = "per_layer",
    ) -> None:
        super().__init__()
        if beta != 0 and costs is None:
            raise ValueError("beta != 0 needs the per-layer costs (deltadist.cost.layer_costs)")
        if normalise not in ("per_layer", "scalar", "none"):
            raise ValueError(f"normalise must be 'per_layer', 'scalar' or 'none', got {normalise!r}")
        layers = delta_layers(model)
        if not layers:
            raise ValueError(f"{type(model).__name__} has no delta layers; convert it first")
        if costs is not None:
            costs.check(model)
        self.model, self.task_loss, self.costs = model, task_loss, costs
        self.alpha, self.beta, self.normalise = alpha, beta, normalise
        self.distill_active = True  # switched off by deltadist.training.attach_distill_switch
        self.register_buffer("distill_scale", torch.zeros(len(layers) if normalise == "per_layer" else 1))

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        clips, targets = batch["video"], batch["targets"]
        if clips.dim() != 5 or clips.shape[1] < 2:
            raise ValueError(f"expected clips (B, T >= 2, C, H, W), got shape {tuple(clips.shape)}")
        t = clips.shape[1]
        frames = clips.flatten(0, 1)
        layers = list(delta_layers(self.model).values())
        alpha = self.alpha if self.distill_active else 0.0
        set_clip_length(self.model, t)
        try:
            reference = teacher_deltas(self.model, frames) if alpha != 0 else None
            task_terms = self.task_loss(frames, targets)
        finally:
            set_clip_length(self.model, 1)
        task = sum(task_terms.values())
        distill = task.new_zeros(())
        if reference is not None:
            per_layer = torch.stack(
                [((layer.student_delta - ref) ** 2).mean() for layer, ref in zip(layers, reference)]
            )
            if self.normalise == "none":
                distill = per_layer.mean()
            else:
                values = per_layer if self.normalise == "per_layer" else per_layer.mean().reshape(1)
                if float(self.distill_scale[0]) == 0.0:
                    self.distill_scale.copy_(1.0 / values.detach().clamp_min(1e-12))
                distill = (values * self.distill_scale).mean()
        cost = gate_cost(self.model, self.costs) if self.beta != 0 else task.new_zeros(())
        loss = task + alpha * distill + self.beta * cost
        logs = {name: float(v.detach()) for name, v in task_terms.items()}
        logs.update(
            task_loss=float(task.detach()),
            distill_loss=float(distill.detach()),
            cost_loss=float(cost.detach()),
            alpha=alpha,
            full_students=float(sum(float(layer.gate_value.detach()) for layer in layers)),
        )
        return loss, logs


class FrameDetectionObjective(nn.Module):
    """A frame-based detector on every frame of the batch: ``sum(task_loss(frames, targets))``."""

    def __init__(self, model: nn.Module, task_loss: TaskLoss) -> None:
        super().__init__()
        self.model, self.task_loss = model, task_loss

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        terms = self.task_loss(batch["video"].flatten(0, 1), batch["targets"])
        return sum(terms.values()), {k: float(v.detach()) for k, v in terms.items()}


def _fit(
    objective,
    optimizer,
    dataset,
    *,
    batch_size,
    num_workers,
    cfg,
    run_dir,
    step_epochs,
    gamma,
    loss=None,
    distill_fraction=1.0,
):
    def step_decay(iteration: int, total: int) -> float:  # gamma at each of step_epochs
        per_epoch = total // cfg.epochs
        return gamma ** sum(iteration >= e * per_epoch for e in step_epochs)

    return fit(
        objective,
        optimizer,
        dataset,
        cfg,
        run_dir,
        batch_size=batch_size,
        num_workers=num_workers,
        lr_lambda=step_decay,
        attach=(lambda trainer: attach_distill_switch(trainer, loss, distill_fraction)) if loss else None,
        worker_init_fn=worker_init_fn,
        collate_fn=collate_detection,
    )


def train_delta_detector(
    loss: DetectionDistillationLoss,
    dataset: torch.utils.data.Dataset,
    *,
    cfg: EngineConfig,
    run_dir: str | Path,
    batch_size: int,
    lr: float = 1e-4,
    lr_students: float = 0.1,
    weight_decay: float = 4e-5,
    momentum: float = 0.9,
    step_epochs: Sequence[int] = (4,),
    gamma: float = 0.1,
    distill_fraction: float = 2 / 7,
    num_workers: int = 0,
) -> bool:
    """Train ``loss.model`` on pairs (:class:`~deltadist.detection.data.VidPairs`); defaults are
    the original's EfficientDet recipe (7 epochs, grad-clip 2.0 is ``cfg.grad_clip``)."""
    groups = param_groups(loss.model, lr=lr, lr_students=lr_students, weight_decay=weight_decay)
    groups[0]["weight_decay"] = 0.0  # students and gates: no weight decay (the original's)
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return _fit(
        loss,
        optimizer,
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        cfg=cfg,
        run_dir=run_dir,
        step_epochs=step_epochs,
        gamma=gamma,
        loss=loss,
        distill_fraction=distill_fraction,
    )


def train_frame_detector(
    model: nn.Module,
    task_loss: TaskLoss,
    dataset: torch.utils.data.Dataset,
    *,
    cfg: EngineConfig,
    run_dir: str | Path,
    batch_size: int,
    lr: float = 1e-3,
    step_epochs: Sequence[int] = (),
    num_workers: int = 0,
    gamma: float = 0.1,
) -> bool:
    """Adam on a frame-based detector, every frame of the pairs (the demo's teacher)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    return _fit(
        FrameDetectionObjective(model, task_loss),
        optimizer,
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        cfg=cfg,
        run_dir=run_dir,
        step_epochs=step_epochs,
        gamma=gamma,
    )
