"""Two evaluations of a converted segmentation model, with the core's mIoU.

* ``pairs`` - the original's protocol (its §5.1): for each keyframe distance ``d = 0..K-1`` one
  pass over the data with clips ``[labelled - d, labelled]`` (``d = 0``: the labelled frame alone,
  teachers only); the labelled frame is scored. Reported: the mIoU of each distance, their mean
  ("amortised mIoU") and the MACs per frame of a K-frame clip (one keyframe, K-1 delta frames).
  Only annotated frames with ``labelled >= K-1`` are used, so every distance is real.
* ``streaming`` - what a deployment does: every video is run one frame at a time from its first
  frame, a keyframe every K frames (:class:`~deltadist.delta.DeltaStream`), and every annotated
  frame met on the way is scored. MACs and milliseconds per frame are of what ran.

Because deltas are keyframe-relative, a frame's output depends only on itself and its keyframe:
a streamed frame at distance d equals the pair ``[frame - d, frame]``. The two evaluations differ
in which frames and distances are weighted (and in what they cost: a pair recomputes its
keyframe). Predictions are upsampled bilinearly (``align_corners=False``) to the label size.

By default (``optimize=True``) every function runs :func:`~deltadist.inference.inference_copy` of
the model (deployed, BatchNorm folded, channels-last on the CPU): the same outputs up to float
rounding, faster; ``optimize=False`` runs the model as given.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deltadist.cost import clip_macs, measure_unit_costs
from deltadist.data import load_clip
from deltadist.delta import DeltaStream, delta_layers, forward_clip
from deltadist.inference import inference_copy
from effvid.data import DataError, SegmentationClipDataset
from effvid.io import atomic_write_json
from effvid.metrics import MeanIoU

__all__ = ["Evaluation", "evaluate_frames", "evaluate_pairs", "evaluate_streaming", "time_per_frame"]


@dataclass
class Evaluation:
    protocol: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def write(self, run_dir: str | Path) -> None:
        atomic_write_json(Path(run_dir) / f"metrics_{self.protocol}.json", self.metrics)

    def summary(self) -> str:
        m = self.metrics
        head = f"{self.protocol}: mIoU {100 * m['miou']:.2f}  GMACs/frame {m['gmacs_per_frame']:.4f}"
        if self.protocol == "pairs":
            per = "  ".join(f"d={d}: {100 * v:.2f}" for d, v in m["miou_per_distance"].items())
            return f"{head} (amortised over K={m['keyframe_interval']})\n  per distance: {per}"
        return f"{head}  ms/frame {m['ms_per_frame']:.2f} ({m['frames']} frames, {m['scored_frames']} scored)"


def _logits(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _score(metric: MeanIoU, logits: torch.Tensor, labels: torch.Tensor) -> None:
    """logits (N, K, h, w), labels (N, H, W)."""
    logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    metric.update((logits.argmax(1), labels))


def _prepare(model: nn.Module, device: torch.device | str, optimize: bool) -> nn.Module:
    model = model.to(device).eval()
    return inference_copy(model) if optimize else model


def _macs(model: nn.Module, frame_shape: Sequence[int], clip_length: int) -> float:
    return clip_macs(model, measure_unit_costs(model, frame_shape), clip_length)


@torch.no_grad()
def evaluate_pairs(
    model: nn.Module,
    dataset: SegmentationClipDataset,
    *,
    num_classes: int,
    keyframe_interval: int = 3,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    ignore_index: int = 255,
    optimize: bool = True,
) -> Evaluation:
    """The original's amortised protocol (see the module docstring)."""
    k = keyframe_interval
    records = [r for r in dataset.records if r.labeled_index >= k - 1]
    if not records:
        raise DataError(f"no annotated frame at index >= {k - 1}: the pair protocol needs K-1 earlier frames")
    model = _prepare(model, device, optimize)
    per_distance: dict[str, float] = {}
    frame_shape = None
    start = time.perf_counter()
    for d in range(k):
        metric = MeanIoU(num_classes, ignore_index=ignore_index)
        for i in range(0, len(records), batch_size):
            clips, labels = [], []
            for r in records[i : i + batch_size]:
                indices = [r.labeled_index] if d == 0 else [r.labeled_index - d, r.labeled_index]
                video, mask = load_clip(dataset, r.key, indices, [r.mask_path])
                clips.append(video)
                labels.append(mask[0])
            _check_sizes(clips, [r.key for r in records[i : i + batch_size]])
            batch = torch.stack(clips).to(device)
            frame_shape = tuple(batch.shape[2:])
            _score(metric, _logits(forward_clip(model, batch))[:, -1], torch.stack(labels).to(device))
        per_distance[str(d)] = metric.compute()
    gmacs = _macs(model, frame_shape, k) / k / 1e9
    metrics = {
        "miou": sum(per_distance.values()) / k,
        "miou_per_distance": per_distance,
        "keyframe_interval": k,
        "gmacs_per_frame": gmacs,
        "gmacs_per_frame_teacher": _macs(model, frame_shape, 1) / 1e9,
        "labelled_frames": len(records),
        "seconds": time.perf_counter() - start,
        "frame_shape": list(frame_shape),
        "unit": "GMACs (1e9 multiply-accumulates) per frame, amortised over a K-frame clip",
    }
    return Evaluation("pairs", metrics)


def _check_sizes(clips: Sequence[torch.Tensor], keys: Sequence[str]) -> None:
    shapes = {tuple(c.shape[-2:]) for c in clips}
    if len(shapes) > 1:
        raise DataError(
            f"videos of one batch differ in frame size after the transform ({sorted(shapes)}; keys {list(keys)}); "
            "set data.transform.resize / crop to one size"
        )


@torch.no_grad()
def evaluate_streaming(
    model: nn.Module,
    dataset: SegmentationClipDataset,
    *,
    num_classes: int,
    keyframe_interval: int = 3,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    ignore_index: int = 255,
    optimize: bool = True,
) -> Evaluation:
    """Frame-by-frame inference, a keyframe every K frames from each video's first frame."""
    k = keyframe_interval
    annotated: dict[str, dict[int, Path]] = defaultdict(dict)
    for r in dataset.records:
        annotated[r.key][r.labeled_index] = r.mask_path
    by_length: dict[int, list[str]] = defaultdict(list)
    for key, masks in annotated.items():
        by_length[max(masks) + 1].append(key)
    model = _prepare(model, device, optimize)
    stream = DeltaStream(model, k)
    metric = MeanIoU(num_classes, ignore_index=ignore_index)
    frames = keyframes = scored = 0
    seconds = 0.0
    frame_shape = None
    for length, keys in sorted(by_length.items()):
        for i in range(0, len(keys), batch_size):
            group = keys[i : i + batch_size]
            loaded = [load_clip(dataset, key, range(length), list(annotated[key].values())) for key in group]
            _check_sizes([v for v, _ in loaded], group)
            videos = torch.stack([v for v, _ in loaded]).to(device)  # (N, L, 3, H, W)
            frame_shape = tuple(videos.shape[2:])
            stream.reset()
            for t in range(length):
                start = time.perf_counter()
                logits = _logits(stream(videos[:, t]))
                if videos.device.type == "cuda":
                    torch.cuda.synchronize(videos.device)
                seconds += time.perf_counter() - start
                frames += len(group)
                keyframes += len(group) * (t % k == 0)
                rows = [
                    (j, list(annotated[key]).index(t)) for j, key in enumerate(group) if t in annotated[key]
                ]
                if rows:
                    labels = torch.stack([loaded[j][1][m] for j, m in rows]).to(device)
                    _score(metric, logits[[j for j, _ in rows]], labels)
                    scored += len(rows)
    key_macs = _macs(model, frame_shape, 1)
    delta_macs = _macs(model, frame_shape, 2) - key_macs
    total = keyframes * key_macs + (frames - keyframes) * delta_macs
    metrics = {
        "miou": metric.compute(),
        "keyframe_interval": k,
        "gmacs_per_frame": total / frames / 1e9,
        "gmacs_per_frame_teacher": key_macs / 1e9,
        "ms_per_frame": 1000 * seconds / frames,
        "frames": frames,
        "keyframes": keyframes,
        "scored_frames": scored,
        "batch_size": batch_size,
        "frame_shape": list(frame_shape),
        "unit": "GMACs per frame of what ran; ms per frame = wall clock of the model / frames (batch of videos)",
    }
    return Evaluation("streaming", metrics)


@torch.no_grad()
def evaluate_frames(
    model: nn.Module,
    dataset: SegmentationClipDataset,
    *,
    num_classes: int,
    device: torch.device | str = "cpu",
    ignore_index: int = 255,
    optimize: bool = True,
) -> Evaluation:
    """A frame-based network (no delta layers, e.g. the teacher) on the same frames as
    :func:`evaluate_streaming`: every frame of every video runs the whole network, one frame
    per call (compare with streaming at ``batch_size=1``)."""
    from effvid.flops import count_macs

    annotated: dict[str, dict[int, Path]] = defaultdict(dict)
    for r in dataset.records:
        annotated[r.key][r.labeled_index] = r.mask_path
    model = _prepare(model, device, optimize)
    metric = MeanIoU(num_classes, ignore_index=ignore_index)
    frames = scored = 0
    seconds = 0.0
    frame_shape = None
    for key, masks in annotated.items():
        length = max(masks) + 1
        video, labels = load_clip(dataset, key, range(length), list(masks.values()))
        frame_shape = tuple(video.shape[1:])
        video = video.to(device)
        for t in range(length):
            start = time.perf_counter()
            logits = _logits(model(video[t : t + 1]))
            seconds += time.perf_counter() - start
            frames += 1
            if t in masks:
                _score(metric, logits, labels[list(masks).index(t)][None].to(device))
                scored += 1
    macs = count_macs(model, torch.zeros(1, *frame_shape, device=device))
    metrics = {
        "miou": metric.compute(),
        "gmacs_per_frame": macs / 1e9,
        "ms_per_frame": 1000 * seconds / frames,
        "frames": frames,
        "scored_frames": scored,
        "batch_size": 1,
        "frame_shape": list(frame_shape),
    }
    return Evaluation("frames", metrics)


@torch.no_grad()
def time_per_frame(
    model: nn.Module,
    frames: torch.Tensor,
    *,
    keyframe_interval: int = 1,
    rounds: int = 5,
    optimize: bool = True,
) -> float:
    """Milliseconds per frame of streaming ``frames`` ``(L, 3, H, W)`` one at a time (a keyframe every
    K frames; a model without delta layers runs every frame whole): the best of ``rounds`` passes,
    which is the least disturbed by other processes on a shared machine. ``optimize``: see the
    module docstring."""
    model = inference_copy(model) if optimize else model.eval()
    has_deltas = bool(delta_layers(model))
    step = DeltaStream(model, keyframe_interval) if has_deltas else model
    best = float("inf")
    for r in range(rounds + 1):  # pass 0 warms up
        if has_deltas:
            step.reset()
        start = time.perf_counter()
        for t in range(len(frames)):
            step(frames[t : t + 1])
        if frames.device.type == "cuda":
            torch.cuda.synchronize(frames.device)
        if r:
            best = min(best, time.perf_counter() - start)
    return 1000 * best / len(frames)
