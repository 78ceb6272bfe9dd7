"""Video classification metrics: top-k accuracy, Hit@1, ActivityNet-style mAP."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric, TopKCategoricalAccuracy
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from effvid.metrics._gather import gather_rows

__all__ = ["HitAt1", "VideoMAP", "average_precision", "topk_accuracy"]


def topk_accuracy(
    k: int = 1, output_transform: Callable[[Any], Any] = lambda x: x, device: str | torch.device = "cpu"
) -> TopKCategoricalAccuracy:
    """Top-k accuracy for single-label targets: output ``(scores (B, K), target (B,))``.

    This is ignite's ``TopKCategoricalAccuracy`` (already DDP-correct); one implementation only.
    """
    return TopKCategoricalAccuracy(k=k, output_transform=output_transform, device=device)


def _as_multi_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    if target.dim() == 1:
        return torch.nn.functional.one_hot(target.long(), num_classes).to(torch.float32)
    if target.dim() == 2 and target.shape[1] == num_classes:
        return target.to(torch.float32)
    raise ValueError(
        f"target must be (B,) class indices or (B, {num_classes}) multi-hot, got {tuple(target.shape)}"
    )


class HitAt1(Metric):
    """Video-level Hit@1: the fraction of videos whose highest-scoring class is one of their labels.

    Output: ``(scores (B, K), target)``, target either class indices (B,) or multi-hot (B, K).
    For single-label targets this equals top-1 accuracy.
    """

    @reinit__is_reduced
    def reset(self) -> None:
        self._hits = torch.tensor(0, dtype=torch.int64, device=self._device)
        self._count = 0

    @reinit__is_reduced
    def update(self, output: Sequence[torch.Tensor]) -> None:
        scores, target = output[0].detach(), output[1].detach()
        if scores.dim() != 2:
            raise ValueError(f"scores must be (B, K), got {tuple(scores.shape)}")
        multi_hot = _as_multi_hot(target, scores.shape[1]).to(scores.device)
        top = scores.argmax(dim=1)
        self._hits += (multi_hot.gather(1, top[:, None]).squeeze(1) > 0).sum().to(self._device)
        self._count += scores.shape[0]

    @sync_all_reduce("_hits", "_count")
    def compute(self) -> float:
        if self._count == 0:
            raise NotComputableError("HitAt1 needs at least one video before compute()")
        return self._hits.item() / self._count


def average_precision(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """Non-interpolated AP of one class: mean of precision@k over the ranks k of the positives.

    ``scores`` (N,), ``positives`` (N,) in {0, 1}. Videos are ranked by descending score (ties
    keep their input order). NaN when there is no positive.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    hits = positives[order].to(torch.float64)
    n_pos = hits.sum()
    if n_pos == 0:
        return float("nan")
    precision_at_k = hits.cumsum(0) / torch.arange(1, hits.numel() + 1, dtype=torch.float64)
    return float((precision_at_k * hits).sum() / n_pos)


class VideoMAP(Metric):
    """ActivityNet-convention mAP over video-level scores.

    Per class: rank all videos by that class's score, AP = mean precision at the ranks of the
    positives (non-interpolated); classes without any positive video are left out; the result is
    the mean over the remaining classes. Output: ``(scores (B, K), target)`` as for :class:`HitAt1`.
    """

    @reinit__is_reduced
    def reset(self) -> None:
        self._scores: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    @reinit__is_reduced
    def update(self, output: Sequence[torch.Tensor]) -> None:
        scores, target = output[0].detach(), output[1].detach()
        self._scores.append(scores.to(self._device, torch.float64))
        self._targets.append(_as_multi_hot(target, scores.shape[1]).to(self._device, torch.float64))

    def per_class(self) -> torch.Tensor:
        """AP of every class (K,), NaN for classes without positives; gathered over processes."""
        if not self._scores:
            raise NotComputableError("VideoMAP needs at least one video before compute()")
        scores = gather_rows(torch.cat(self._scores)).cpu()
        targets = gather_rows(torch.cat(self._targets)).cpu()
        aps = [average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
        return torch.tensor(aps, dtype=torch.float64)

    def compute(self) -> float:
        ap = self.per_class()
        valid = ~torch.isnan(ap)
        if not valid.any():
            raise NotComputableError("VideoMAP: no class has a positive video")
        return float(ap[valid].mean())
