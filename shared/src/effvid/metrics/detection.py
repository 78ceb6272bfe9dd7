"""Detection AP at IoU 0.5 (COCO-style), evaluated by pycocotools."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced

from effvid.metrics._gather import gather_rows

__all__ = ["CocoAP50"]


def _rows(image: float, boxes: Any, *columns: Any) -> torch.Tensor:
    """One image's boxes as float64 rows ``[image, column..., x1, y1, x2, y2]``."""
    xyxy = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    n = xyxy.shape[0]
    extra = [torch.as_tensor(c, dtype=torch.float64).reshape(n, 1) for c in columns]
    return torch.cat([torch.full((n, 1), image, dtype=torch.float64), *extra, xyxy], dim=1)


class CocoAP50(Metric):
    """COCO-style AP@IoU0.5 (101-point interpolated, averaged over classes) via ``COCOeval``.

    Output per batch: ``(predictions, targets)``, two lists with one dict per image:
    predictions ``{"boxes": (N, 4) xyxy, "scores": (N,), "labels": (N,)}``, targets
    ``{"boxes": (M, 4) xyxy, "labels": (M,)}``. Images are numbered in arrival order per process;
    under DDP the rows of all processes are gathered before evaluation.
    """

    @reinit__is_reduced
    def reset(self) -> None:
        self._dets: list[torch.Tensor] = []  # rows: image, label, score, x1, y1, x2, y2
        self._gts: list[torch.Tensor] = []  # rows: image, label, x1, y1, x2, y2
        self._images = 0

    @reinit__is_reduced
    def update(self, output: tuple[Sequence[dict[str, Any]], Sequence[dict[str, Any]]]) -> None:
        predictions, targets = output
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        for pred, tgt in zip(predictions, targets):
            image = float(self._images)
            self._images += 1
            self._dets.append(_rows(image, pred["boxes"], pred["labels"], pred["scores"]))
            self._gts.append(_rows(image, tgt["boxes"], tgt["labels"]))

    def compute(self) -> float:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        if not self._gts:
            raise NotComputableError("CocoAP50 needs at least one image before compute()")
        # number images per process apart before gathering: rank r's image i -> (i, r) pair id
        import ignite.distributed as idist

        rank = idist.get_rank()
        offset = rank * 1_000_000
        dets = torch.cat(self._dets)
        gts = torch.cat(self._gts)
        dets[:, 0] += offset
        gts[:, 0] += offset
        images = torch.arange(self._images, dtype=torch.float64)[:, None] + offset
        dets, gts, images = gather_rows(dets), gather_rows(gts), gather_rows(images)
        if gts.shape[0] == 0:
            raise NotComputableError("CocoAP50: no ground-truth box")
        categories = sorted({int(c) for c in gts[:, 1].tolist()} | {int(c) for c in dets[:, 1].tolist()})
        annotations = [
            {
                "id": i + 1,
                "image_id": int(r[0]),
                "category_id": int(r[1]),
                "bbox": [r[2], r[3], r[4] - r[2], r[5] - r[3]],
                "area": float((r[4] - r[2]) * (r[5] - r[3])),
                "iscrowd": 0,
            }
            for i, r in enumerate(gts.tolist())
        ]
        gt = COCO()
        gt.dataset = {
            "images": [{"id": int(i)} for i in images.flatten().tolist()],
            "annotations": annotations,
            "categories": [{"id": c} for c in categories],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            if dets.shape[0] == 0:
                return 0.0
            rows = dets.numpy()
            det_array = np.stack(
                [
                    rows[:, 0],
                    rows[:, 3],
                    rows[:, 4],
                    rows[:, 5] - rows[:, 3],
                    rows[:, 6] - rows[:, 4],
                    rows[:, 2],
                    rows[:, 1],
                ],
                axis=1,
            )
            dt = gt.loadRes(det_array)
            evaluator = COCOeval(gt, dt, iouType="bbox")
            evaluator.params.iouThrs = np.array([0.5])
            evaluator.evaluate()
            evaluator.accumulate()
        precision = evaluator.eval["precision"][
            0, :, :, 0, -1
        ]  # IoU 0.5, recall pts, classes, all areas, max dets
        valid = precision > -1
        return float(precision[valid].mean()) if valid.any() else 0.0
