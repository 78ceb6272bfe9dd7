"""Segmentation clips for Delta Distillation: the synthetic benchmark's format, training pairs at a
random keyframe distance, and multi-frame clips with their masks for evaluation.

* ``data.format synthetic_segmentation`` (registered here; the core has ``cityscapes``): the
  core's synthetic benchmark generated with ``task="segmentation"``. ``data.path_label`` is its
  ``train.txt`` / ``val.txt``, ``data.path_frame`` its frame storage; the masks are read from the
  ``masks/`` folder beside the list. Every frame is labelled: one record per (video, frame).
* :class:`KeyframePairs`: the original's training pairs ``[labelled - d, labelled]`` with
  ``d ~ U{1..max_distance}`` drawn per sample (clamped at the first frame), one transform draw for
  both frames and the mask.
* ``data.transform.style fullframe`` (registered here): evaluation on whole frames; the core's
  ``standard`` style centre-crops a square.
* :func:`load_clip`: frames ``indices`` of a video and the masks of some of them, transformed
  together, for the evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from effvid.data import (
    FORMATS,
    TRANSFORMS,
    DataConfig,
    DataError,
    Listing,
    SegmentationClipDataset,
    SegmentationRecord,
    TransformConfig,
)
from effvid.data.formats import read_generic_list
from effvid.draws import Draw, seeded, split_item

__all__ = ["KeyframePairs", "load_clip", "read_synthetic_segmentation"]


def read_synthetic_segmentation(list_path: str | Path) -> list[SegmentationRecord]:
    """One record per frame of every video of a synthetic segmentation list (``key frames label``)."""
    list_path = Path(list_path)
    masks = list_path.parent / "masks"
    if not masks.is_dir():
        raise DataError(
            f"{list_path}: no masks/ folder beside it; generate the benchmark with SyntheticSpec(task='segmentation')"
        )
    records = []
    for video in read_generic_list(list_path):
        if video.num_frames is None:
            raise DataError(f"{list_path}: video '{video.key}' has no frame count")
        for t in range(video.num_frames):
            records.append(
                SegmentationRecord(video.key, video.num_frames, t, masks / video.key / f"{t:05d}.png")
            )
    return records


@FORMATS.register("synthetic_segmentation")
def _synthetic_segmentation(cfg: DataConfig, num_classes: int) -> Listing:
    if not cfg.path_label:
        raise DataError(
            "data.format synthetic_segmentation needs data.path_label (the generated train/val list)"
        )
    return Listing(read_synthetic_segmentation(cfg.path_label), task="segmentation")


@TRANSFORMS.register("fullframe")
def fullframe_transform(cfg: TransformConfig, train: bool):
    """Whole frames for evaluation (short side resized to ``resize``, no crop: the original scores
    full 1024x2048 Cityscapes frames); training adds a random ``crop`` square and the flip."""
    steps: list = [v2.Resize(cfg.resize, antialias=True)]
    if train:
        steps.append(v2.RandomCrop(cfg.crop))
        if cfg.flip:
            steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)]
    return v2.Compose(steps)


def _stack(frames: list[np.ndarray], key: str, indices: Sequence[int]) -> torch.Tensor:
    """(T, C, H, W) uint8 from HWC frames; frames of different sizes are an error naming them."""
    first = frames[0].shape
    for i, f in zip(indices, frames):
        if f.shape != first:
            raise DataError(
                f"clip of video '{key}': frame {i} is {f.shape[1]}x{f.shape[0]} but frame {indices[0]} is "
                f"{first[1]}x{first[0]}; every frame of a clip must have the same size"
            )
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def _read_mask(dataset: SegmentationClipDataset, path: Path, key: str) -> torch.Tensor:
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DataError(f"video '{key}': cannot read mask {path}")
    if mask.ndim == 3:
        raise DataError(f"video '{key}': mask {path} must be a single-channel label image")
    return torch.from_numpy(dataset.lut[mask] if dataset.lut is not None else mask.astype(np.int64))


def load_clip(
    dataset: SegmentationClipDataset,
    key: str,
    indices: Sequence[int],
    masks: Sequence[Path],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``indices`` of video ``key`` ``(T, 3, H, W)`` float and the label maps ``(M, H, W)``
    int64 of ``masks``, through the dataset's (evaluation) transform in one call."""
    frames = _stack(dataset.storage.read_frames(key, list(indices)), key, indices)
    labels = torch.stack([_read_mask(dataset, p, key) for p in masks])
    if labels.shape[-2:] != frames.shape[-2:]:
        raise DataError(
            f"video '{key}': masks {tuple(labels.shape[-2:])} and frames {tuple(frames.shape[-2:])} differ in size"
        )
    video, target = tv_tensors.Video(frames), tv_tensors.Mask(labels)
    if dataset.transform is not None:
        video, target = dataset.transform(video, target)
    return video.as_subclass(torch.Tensor), target.as_subclass(torch.Tensor)


class KeyframePairs(torch.utils.data.Dataset):
    """Training pairs ``{"video": (2, 3, H, W), "mask": (H, W)}``: the keyframe ``labelled - d``
    and the labelled frame, ``d ~ U{1..max_distance}`` from the sample's seed (the original: 5)."""

    def __init__(self, base: SegmentationClipDataset, *, max_distance: int = 5) -> None:
        if max_distance < 1:
            raise ValueError(f"max_distance must be >= 1, got {max_distance}")
        self.base, self.max_distance = base, max_distance

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: int | Draw) -> dict[str, Any]:
        i, seed = split_item(item)
        r = self.base.records[i]
        with seeded(seed):
            d = int(torch.randint(1, self.max_distance + 1, ()))
            video, mask = load_clip(
                self.base, r.key, [max(r.labeled_index - d, 0), r.labeled_index], [r.mask_path]
            )
        return {"video": video, "mask": mask[0], "key": r.key}
