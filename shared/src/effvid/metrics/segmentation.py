"""Semantic segmentation mIoU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

__all__ = ["MeanIoU"]


class MeanIoU(Metric):
    """Mean intersection-over-union from an accumulated confusion matrix.

    Output: ``(prediction, target)`` with prediction either logits (B, K, H, W) or labels (B, H, W),
    and target labels (B, H, W). Pixels whose target is ``ignore_index`` (Cityscapes: 255) are not
    counted. IoU_c = TP / (TP + FP + FN); classes that appear neither in targets nor predictions
    are left out of the mean. :meth:`per_class` gives every class's IoU.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, **kwargs) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        super().__init__(**kwargs)

    @reinit__is_reduced
    def reset(self) -> None:
        self._confusion = torch.zeros(
            self.num_classes, self.num_classes, dtype=torch.int64, device=self._device
        )

    @reinit__is_reduced
    def update(self, output: Sequence[torch.Tensor]) -> None:
        pred, target = output[0].detach(), output[1].detach()
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} shapes differ")
        pred, target = pred.flatten().long(), target.flatten().long()
        keep = (
            target != self.ignore_index
            if self.ignore_index is not None
            else torch.ones_like(target, dtype=torch.bool)
        )
        pred, target = pred[keep], target[keep]
        if target.numel() and (target.min() < 0 or target.max() >= self.num_classes):
            raise ValueError(
                f"target labels must be in [0, {self.num_classes}) or the ignore index {self.ignore_index}, "
                f"got values in [{int(target.min())}, {int(target.max())}]"
            )
        idx = target * self.num_classes + pred.clamp(0, self.num_classes - 1)
        counts = torch.bincount(idx, minlength=self.num_classes**2)
        self._confusion += counts.reshape(self.num_classes, self.num_classes).to(self._device)

    @sync_all_reduce("_confusion")
    def per_class(self) -> torch.Tensor:
        """IoU per class (K,), NaN where the class is absent from both targets and predictions."""
        cm = self._confusion.to(torch.float64)
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))

    def compute(self) -> float:
        iou = self.per_class()
        valid = ~torch.isnan(iou)
        if not valid.any():
            raise NotComputableError("MeanIoU needs at least one labelled pixel before compute()")
        return float(iou[valid].mean())
