"""Datasets: records (from a list format) x a storage backend x a sampler x a transform."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torchvision import tv_tensors

from effvid.data.errors import DataError
from effvid.data.formats import SegmentationRecord, VideoRecord
from effvid.data.frame_sampling import apply_order
from effvid.data.storage import VideoStorage
from effvid.draws import Draw, seeded, split_item

__all__ = ["SegmentationClipDataset", "VideoClassificationDataset", "check_records"]

log = logging.getLogger(__name__)

Sampler = Callable[..., Sequence[int]]
Transform = Callable[..., Any]


def check_records(
    records: Sequence[Any], storage: VideoStorage, *, on_missing: str = "raise"
) -> tuple[list[Any], list[str]]:
    """(records whose video is in ``storage``, keys of the skipped ones).

    ``on_missing="raise"`` (default): the first missing video is an error naming it.
    ``on_missing="skip"``: each missing video is logged and the total is reported - never silent;
    datasets keep the skipped keys (``skipped``) so that reports can list them.
    """
    if on_missing not in ("raise", "skip"):
        raise ValueError(f"on_missing must be 'raise' or 'skip', got '{on_missing}'")
    kept, skipped = [], []
    for record in records:
        try:
            storage.num_frames(record.key)
        except DataError as exc:
            if on_missing == "raise":
                raise DataError(f"listed video '{record.key}' is not usable: {exc}") from None
            log.warning("skipping listed video '%s': %s", record.key, exc)
            skipped.append(record.key)
            continue
        kept.append(record)
    if skipped:
        log.warning(
            "skipped %d of %d listed videos that are missing or unreadable", len(skipped), len(records)
        )
    if not kept:
        raise DataError(f"the dataset is empty: none of the {len(records)} listed videos is usable")
    return kept, skipped


def _to_clip(frames: list[np.ndarray], key: str) -> torch.Tensor:
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise DataError(f"video '{key}': frames of different sizes {sorted(shapes)}")
    height, width, channels = frames[0].shape
    clip = np.empty((len(frames), channels, height, width), dtype=frames[0].dtype)  # (T, C, H, W)
    for t, frame in enumerate(frames):
        # cv2.split de-interleaves with SIMD: ~4x faster than a strided HWC -> CHW copy
        for c, plane in enumerate(cv2.split(frame)):
            clip[t, c] = plane
    return torch.from_numpy(clip)


class VideoClassificationDataset(torch.utils.data.Dataset):
    """Clips and labels of the listed videos.

    ``__getitem__(i)`` -> ``{"video": (T, C, H, W) float (after ``transform``), "label": int64 scalar
    (single-label) or float multi-hot (num_classes,), "key": str, "index": int}``; the default
    collate makes ``video`` (B, T, C, H, W). Given a :class:`~effvid.draws.Draw` (what the
    training sampler yields), frame sampling and augmentation draw from that sample's seed.

    Args:
        records: videos and labels (see :mod:`effvid.data.formats`).
        storage: where the frames are.
        sampler: ``sampler(frame count, rng=Generator | None) -> frame indices``.
        transform: (T, C, H, W) uint8 -> tensor; None keeps uint8.
        num_classes: size of the label space.
        multi_label: return multi-hot labels instead of the first label.
        order: optional processing order over the sampled positions (FrameExit).
        on_missing: ``raise`` or ``skip`` (logged and counted) for listed videos not in storage.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        storage: VideoStorage,
        *,
        sampler: Sampler,
        num_classes: int,
        transform: Transform | None = None,
        multi_label: bool = False,
        order: Sequence[int] | None = None,
        on_missing: str = "raise",
    ) -> None:
        if not records:
            raise DataError("the dataset is empty: the list has no video")
        self.records, self.skipped = check_records(records, storage, on_missing=on_missing)
        self.storage, self.sampler, self.transform = storage, sampler, transform
        self.num_classes, self.multi_label, self.order = num_classes, multi_label, order
        for r in self.records:
            bad = [lab for lab in r.labels if not 0 <= lab < num_classes]
            if bad:
                raise DataError(f"video '{r.key}' has label(s) {bad} outside [0, {num_classes})")

    def __len__(self) -> int:
        return len(self.records)

    def label(self, i: int) -> torch.Tensor:
        labels = self.records[i].labels
        if self.multi_label:
            target = torch.zeros(self.num_classes, dtype=torch.float32)
            target[list(labels)] = 1.0
            return target
        return torch.tensor(labels[0], dtype=torch.int64)

    def frame_indices(self, i: int, rng: np.random.Generator | None = None) -> list[int]:
        """The sampled frame indices of video ``i``, in processing order (``rng``: training draws)."""
        record = self.records[i]
        count = self.storage.num_frames(record.key)
        if record.num_frames is not None and record.num_frames > count:
            raise DataError(
                f"video '{record.key}': the list says {record.num_frames} frames, storage has {count}"
            )
        return apply_order(list(self.sampler(count, rng=rng)), self.order)

    def load_frames(
        self, i: int, positions: Sequence[int], indices: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Decode only ``positions`` of the sampled (ordered) indices -> (P, C, H, W) transformed.

        Pass the ``indices`` from :meth:`frame_indices` when the sampler is random, so that
        streamed frames come from one draw.
        """
        indices = self.frame_indices(i) if indices is None else indices
        key = self.records[i].key
        clip = _to_clip(self.storage.read_frames(key, [indices[p] for p in positions]), key)
        return self.transform(clip) if self.transform is not None else clip

    def __getitem__(self, item: int | Draw) -> dict[str, Any]:
        i, seed = split_item(item)
        key = self.records[i].key
        with seeded(seed) as rng:
            clip = _to_clip(self.storage.read_frames(key, self.frame_indices(i, rng)), key)
            video = self.transform(clip) if self.transform is not None else clip
        return {"video": video, "label": self.label(i), "key": key, "index": i}


class SegmentationClipDataset(torch.utils.data.Dataset):
    """Clips ending at an annotated frame, with its mask.

    ``__getitem__(i)`` -> ``{"video": (T, C, H, W), "mask": (H, W) int64, "key": str}``: frames
    ``labeled - (T-1)*distance, ..., labeled`` (clamped at 0) and the mask of the last one.
    ``mask_map`` maps stored label values to training ids (e.g. Cityscapes labelIds), other values
    becoming ``ignore_index``. ``transform`` is called as ``transform(video, mask)`` on
    ``tv_tensors.Video`` / ``tv_tensors.Mask`` (one draw for both: a crop or flip moves the labels
    with the pixels); the frames and mask must agree in size after it.
    """

    def __init__(
        self,
        records: Sequence[SegmentationRecord],
        storage: VideoStorage,
        *,
        clip_len: int = 2,
        distance: int = 1,
        transform: Transform | None = None,
        mask_map: dict[int, int] | None = None,
        ignore_index: int = 255,
    ) -> None:
        if not records:
            raise DataError("the dataset is empty: no annotated clip")
        self.records, self.skipped = check_records(records, storage)
        self.storage, self.clip_len, self.distance = storage, clip_len, distance
        self.transform, self.ignore_index = transform, ignore_index
        self.lut = None
        if mask_map is not None:
            self.lut = np.full(256, ignore_index, dtype=np.int64)
            for src, dst in mask_map.items():
                self.lut[src] = dst

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: int | Draw) -> dict[str, Any]:
        i, seed = split_item(item)
        r = self.records[i]
        indices = [max(r.labeled_index - k * self.distance, 0) for k in reversed(range(self.clip_len))]
        clip = _to_clip(self.storage.read_frames(r.key, indices), r.key)
        mask = cv2.imread(str(r.mask_path), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise DataError(f"clip '{r.key}': cannot read mask {r.mask_path}")
        if mask.ndim == 3:
            raise DataError(f"clip '{r.key}': mask {r.mask_path} must be a single-channel label image")
        labels = torch.from_numpy(self.lut[mask] if self.lut is not None else mask.astype(np.int64))
        video, target = tv_tensors.Video(clip), tv_tensors.Mask(labels)
        if self.transform is not None:
            with seeded(seed):
                video, target = self.transform(video, target)
        if tuple(target.shape[-2:]) != tuple(video.shape[-2:]):
            raise DataError(
                f"clip '{r.key}': mask {tuple(target.shape[-2:])} ({r.mask_path.name}) and frames "
                f"{tuple(video.shape[-2:])} differ in size after the transform"
            )
        return {
            "video": video.as_subclass(torch.Tensor),
            "mask": target.as_subclass(torch.Tensor),
            "key": r.key,
        }
