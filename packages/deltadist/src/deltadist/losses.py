"""The training objective of Delta Distillation for segmentation, and its OHEM task loss.

Per iteration, on clips ``(B, T, 3, H, W)`` whose last frame is labelled (the original trains on
pairs ``[labelled - d, labelled]``, d ~ U{1..5}):

1. distillation targets: one no-grad pass with the model in eval mode (BatchNorm on running
   statistics) and every delta layer running its teacher on all frames; each layer keeps
   ``teacher(x_t) - teacher(x_0)`` along the *teacher's* own feature trajectory;
2. the training pass: each layer samples its gate and keeps its student's delta;
3. ``loss = task + alpha * distill + beta * cost`` with
   * task: the task loss on the last frame's logits only;
   * distill: the mean over layers of ``mean((student delta - teacher delta)^2)``, times a scale
     fixed at the first batch so that the first value is 1 (kept as a buffer, so a resumed run keeps
     it; the original kept it in a process global and recomputed it after a restart);
   * cost: ``sum_l g_l * cost_l`` (:func:`~deltadist.cost.gate_cost`).

The original switches alpha to 0 after ``num_epochs // 3`` (``epoch > num_epochs // 3``, 0-based):
:func:`original_distill_epochs` gives that count for :meth:`DeltaDistillationLoss.set_epoch`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deltadist.cost import LayerCosts, gate_cost
from deltadist.delta import delta_layers, set_clip_length

__all__ = [
    "CrossEntropy2d",
    "DeltaDistillationLoss",
    "OhemCrossEntropy",
    "original_distill_epochs",
    "teacher_deltas",
]


class OhemCrossEntropy(nn.Module):
    """Cross-entropy over the hardest pixels (HRNet/DDRNet's OHEM, as the original trains with).

    Logits are upsampled bilinearly (``align_corners=False``) to the label size; pixels whose
    predicted probability of the true class is below ``max(threshold, p_k)`` are averaged, ``p_k``
    being the ``min_kept``-th smallest such probability (so at least ``min_kept`` pixels count).
    Class weights scale the per-pixel losses; the mean is not re-normalised by them (as the original).
    A batch without any labelled pixel gives 0 (the original gave NaN).

    Args: logits ``(B, K, h, w)``, labels ``(B, H, W)`` int64 with ``ignore_index`` for unlabelled.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.9,
        min_kept: int = 131072,
        weight: torch.Tensor | Sequence[float] | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        self.threshold, self.min_kept, self.ignore_index = threshold, max(1, min_kept), ignore_index
        self.register_buffer(
            "weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        )

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        weight = None if self.weight is None else self.weight.to(logits.dtype)
        pixel = F.cross_entropy(
            logits, labels, weight, ignore_index=self.ignore_index, reduction="none"
        ).flatten()
        valid = labels.flatten() != self.ignore_index
        if not bool(valid.any()):
            return logits.sum() * 0.0
        safe = labels.masked_fill(labels == self.ignore_index, 0)
        prob = logits.softmax(1).gather(1, safe.unsqueeze(1)).flatten()[valid]
        prob, order = prob.sort()
        threshold = max(float(prob[min(self.min_kept, prob.numel() - 1)]), self.threshold)
        kept = pixel[valid][order][prob < threshold]
        return kept.mean() if kept.numel() else logits.sum() * 0.0


class CrossEntropy2d(nn.Module):
    """Mean per-pixel cross-entropy, logits ``(B, K, h, w)`` upsampled bilinearly to labels ``(B, H, W)``."""

    def __init__(self, *, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        if not bool((labels != self.ignore_index).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, labels, ignore_index=self.ignore_index)


def original_distill_epochs(num_epochs: int) -> int:
    """Epochs with distillation in the original: 0-based epochs ``0 .. num_epochs // 3``."""
    return num_epochs // 3 + 1


@torch.no_grad()
def teacher_deltas(model: nn.Module, frames: torch.Tensor) -> list[torch.Tensor]:
    """Each delta layer's teacher delta ``(N*(T-1), C, H', W')`` for rolled frames ``(N*T, C, H, W)``
    (clip length as set on the layers), from an eval-mode pass running the teachers only."""
    layers = list(delta_layers(model).values())
    was_training = model.training
    model.eval()
    for layer in layers:
        layer.record_targets = True
    try:
        model(frames)
    finally:
        for layer in layers:
            layer.record_targets = False
        model.train(was_training)
    return [layer.teacher_delta for layer in layers]


class DeltaDistillationLoss(nn.Module):
    """``forward((clips, labels)) -> (loss, logs)`` for a converted segmentation model.

    Args:
        model: the converted network (its output ``(N, K, h, w)`` per frame).
        task_loss: ``(logits (B, K, h, w), labels (B, H, W)) -> 0-dim``, on the last frame.
        costs: the per-layer costs of the cost loss (needed when ``beta != 0``).
        alpha / beta: weights of the distillation and cost losses (original: 0.01 / 0.1).
        distill_epochs: epochs (from 0) with distillation, after which alpha is 0; None = always.

    ``clips`` ``(B, T, 3, H, W)``, keyframe first; ``labels`` ``(B, H, W)`` for the last frame.
    ``logs``: task_loss, distill_loss (scaled, before alpha), cost_loss (before beta), alpha,
    full_students (how many gates chose the full-size student).
    """

    def __init__(
        self,
        model: nn.Module,
        task_loss: nn.Module,
        costs: LayerCosts | None = None,
        *,
        alpha: float = 0.01,
        beta: float = 0.1,
        distill_epochs: int | None = None,
    ) -> None:
        super().__init__()
        if beta != 0 and costs is None:
            raise ValueError("beta != 0 needs the per-layer costs (deltadist.cost.layer_costs)")
        if costs is not None:
            costs.check(model)
        self.model, self.task_loss, self.costs = model, task_loss, costs
        self.alpha, self.beta, self.distill_epochs = alpha, beta, distill_epochs
        self.epoch = 0
        self.distill_active = True  # switched off by deltadist.training.attach_distill_switch
        self.register_buffer("distill_scale", torch.tensor(0.0))  # 0 = not yet fixed

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def current_alpha(self) -> float:
        on = self.distill_epochs is None or self.epoch < self.distill_epochs
        return self.alpha if on and self.distill_active else 0.0

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        clips, labels = batch
        if clips.dim() != 5 or clips.shape[1] < 2:
            raise ValueError(f"expected clips (B, T >= 2, C, H, W), got shape {tuple(clips.shape)}")
        b, t = clips.shape[:2]
        frames = clips.flatten(0, 1)
        layers = list(delta_layers(self.model).values())
        before = [layer.clip_length for layer in layers]
        set_clip_length(self.model, t)
        alpha = self.current_alpha
        try:
            targets = teacher_deltas(self.model, frames) if alpha != 0 else None
            logits = self.model(frames).unflatten(0, (b, t))[:, -1]
        finally:  # leave the model as found: a later plain forward must not see T-frame clips
            for layer, length in zip(layers, before):
                layer.clip_length = length
        task = self.task_loss(logits, labels)
        zero = task.new_zeros(())
        distill = zero
        if targets is not None:
            per_layer = torch.stack(
                [((layer.student_delta - ref) ** 2).mean() for layer, ref in zip(layers, targets)]
            )
            distill = per_layer.mean()
            if float(self.distill_scale) == 0.0:
                self.distill_scale.fill_(1.0 / max(float(distill.detach()), 1e-12))
            distill = distill * self.distill_scale
        cost = gate_cost(self.model, self.costs) if self.beta != 0 else zero
        loss = task + alpha * distill + self.beta * cost
        logs = {
            "task_loss": float(task.detach()),
            "distill_loss": float(distill.detach()),
            "cost_loss": float(cost.detach()),
            "alpha": alpha,
            "full_students": float(sum(float(layer.gate_value.detach()) for layer in layers)),
        }
        return loss, logs
