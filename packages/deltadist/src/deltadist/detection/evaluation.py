"""Detection evaluation on clips: COCO AP50 from the core's metric (pycocotools).

Clips of ``clip_length`` frames (keyframe first, the original's 10) are rolled into the batch,
run once, and every real frame (not the padding of a video's last clip) is scored. With
``original_filter`` the EfficientDet path's filtering is applied: detections with score below
0.001 are dropped and only images with at least one remaining detection are evaluated (the
original restricted COCOeval's ``imgIds`` to them, which ignores the missed objects of frames
where nothing was detected, so it can only raise AP50). Off by default: every frame counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from deltadist.delta import delta_layers
from deltadist.detection.data import collate_detection
from effvid.metrics import CocoAP50

__all__ = ["ORIGINAL_MIN_SCORE", "clip_predictor", "evaluate_detection", "filter_original"]

ORIGINAL_MIN_SCORE = 0.001

Predictor = Callable[[torch.Tensor, int], Sequence[dict[str, torch.Tensor]]]


def filter_original(
    predictions: Sequence[dict[str, torch.Tensor]], targets: Sequence[dict[str, torch.Tensor]]
) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """Drop detections scoring below 0.001, then the images left without a detection."""
    kept_p, kept_t = [], []
    for p, t in zip(predictions, targets):
        keep = p["scores"] >= ORIGINAL_MIN_SCORE
        if bool(keep.any()):
            kept_p.append({k: v[keep] for k, v in p.items()})
            kept_t.append(t)
    return kept_p, kept_t


@torch.no_grad()
def evaluate_detection(
    predict: Predictor,
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int = 1,
    original_filter: bool = False,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """``predict(frames (B*T, 3, S, S), T)`` -> one detection dict per frame, over a clip dataset
    (:class:`~deltadist.detection.data.VidClips`). Returns ``{"ap50", "frames", "ms_per_frame"}``."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_detection)
    metric = CocoAP50()
    frames_scored, frames_run, seconds, updated = 0, 0, 0.0, False
    for batch in loader:
        video = batch["video"].to(device)
        t = video.shape[1]
        start = time.perf_counter()
        preds = predict(video.flatten(0, 1), t)
        seconds += time.perf_counter() - start
        frames_run += video.shape[0] * t
        real = batch["real"].flatten().tolist()
        preds = [{k: v.cpu() for k, v in p.items()} for p, r in zip(preds, real) if r]
        targets = [tg for tg, r in zip(batch["targets"], real) if r]
        frames_scored += len(targets)
        if original_filter:
            preds, targets = filter_original(preds, targets)
        if targets:
            metric.update((preds, targets))
            updated = True
    ap50 = metric.compute() if updated else 0.0  # nothing detected anywhere (with the filter)
    return {"ap50": float(ap50), "frames": frames_scored, "ms_per_frame": 1000 * seconds / max(frames_run, 1)}


def clip_predictor(model: torch.nn.Module, predict: Callable[[torch.Tensor], Sequence[dict]]) -> Predictor:
    """A :data:`Predictor` for a converted (or plain) detector: sets the delta layers' clip length
    for the call (a plain network runs frame by frame in one batch)."""

    def run(frames: torch.Tensor, clip_length: int):
        layers = delta_layers(model)
        for layer in layers.values():
            layer.clip_length = clip_length
        try:
            return predict(frames)
        finally:
            for layer in layers.values():
                layer.clip_length = 1

    return run
