"""ImageNet VID for detection: the COCO-format annotation JSONs both original paths use, frames read
from the core's storages, the original's training pairs and evaluation clips.

The JSON: ``images`` (``id``, ``file_name`` = ``<video folder>/<frame file>``, optional
``video_id`` / ``frame_id`` as mmtracking writes them), ``annotations`` (``image_id``,
``category_id``, ``bbox`` = ``[x, y, w, h]``), ``categories``. Frames are grouped into videos by
``video_id`` when present, else by the folder of ``file_name`` (the EfficientDet path's rule);
frames of a video are ordered by ``frame_id``, else by natural order of the file name. DET stills
(image ids >= ``still_id_from``, 10,000,000 in the original's merged JSON, or every image of a JSON
without videos when asked) are one-frame "videos". A video's frame ``i`` is read as index ``i`` of
the storage key ``<video folder>``, so the JSON must list every frame of the folder (it does for
ImageNet VID; a mismatch is an error naming the folder). A still with a ``frame_id`` (what
:mod:`deltadist.detection.det_json` writes: DET folders hold images without any VID class, which
are left out) is read at that storage index instead, and its folder may hold unlisted images;
from a frame folder, the file at that index must have the still's file name.

Categories are numbered 1..K in ``categories`` order (0 is no class); boxes become ``xyxy`` pixels.
Frames are letterboxed into ``size x size`` (the original's ResizePad: scale the long side to
``size``, pad bottom/right with the mean colour) and normalised with ImageNet statistics; boxes
are scaled the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
import torch

from effvid.data import DataError, VideoStorage
from effvid.data.decode import decode_image
from effvid.data.storage import natural_key
from effvid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from effvid.draws import seeded, split_item

__all__ = [
    "ORIGINAL_STILL_ID",
    "VidAnnotations",
    "VidClips",
    "VidPairs",
    "VidVideo",
    "collate_detection",
    "letterbox",
    "read_vid_json",
]

ORIGINAL_STILL_ID = 10_000_000


@dataclass
class VidVideo:
    """One video (or one DET still): its storage key and, per frame, image id and target."""

    key: str
    image_ids: list[int]
    boxes: list[np.ndarray]  # (M, 4) xyxy float32 per frame
    labels: list[np.ndarray]  # (M,) int64 1..K per frame
    still: bool = False
    still_index: int = 0  # a still's frame index in its folder (the storage's natural order)
    still_name: str = ""  # a still read at its JSON frame_id: its file name (checked against frame folders)


@dataclass
class VidAnnotations:
    videos: list[VidVideo]
    categories: list[dict[str, Any]]
    source: str = ""
    folder_counts: dict[str, int] = field(default_factory=dict)
    indexed_folders: set[str] = field(default_factory=set)  # folders of stills read at their frame_id

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def num_images(self) -> int:
        return sum(len(v.image_ids) for v in self.videos)


def _need(obj: dict, key: str, where: str) -> Any:
    try:
        return obj[key]
    except (KeyError, TypeError):
        raise DataError(f"{where}: missing key '{key}'") from None


def read_vid_json(path: str | Path, *, still_id_from: int | None = ORIGINAL_STILL_ID) -> VidAnnotations:
    """Parse a COCO-format ImageNet VID (or merged VID + DET) annotation file (see the module doc)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc})") from None
    images = _need(data, "images", str(path))
    categories = _need(data, "categories", str(path))
    label_of = {int(_need(c, "id", f"{path} categories[{i}]")): i + 1 for i, c in enumerate(categories)}
    targets: dict[int, tuple[list, list]] = {}
    for i, image in enumerate(images):
        targets[int(_need(image, "id", f"{path} images[{i}]"))] = ([], [])
    for i, ann in enumerate(data.get("annotations", [])):
        where = f"{path} annotations[{i}]"
        image_id, category = int(_need(ann, "image_id", where)), int(_need(ann, "category_id", where))
        if image_id not in targets:
            raise DataError(f"{where}: image_id {image_id} is not in images")
        if category not in label_of:
            raise DataError(f"{where}: category_id {category} is not in categories")
        x, y, w, h = (float(v) for v in _need(ann, "bbox", where))
        targets[image_id][0].append([x, y, x + w, y + h])
        targets[image_id][1].append(label_of[category])
    groups: dict[Any, list[tuple[Any, int, str]]] = {}
    stills: list[tuple[int, str, Any]] = []
    counts: dict[str, int] = {}
    for i, image in enumerate(images):
        image_id = int(image["id"])
        name = str(_need(image, "file_name", f"{path} images[{i}]"))
        folder = str(PurePosixPath(name).parent)
        counts[folder] = counts.get(folder, 0) + 1
        if still_id_from is not None and image_id >= still_id_from:
            stills.append((image_id, name, image.get("frame_id")))
            continue
        group = image.get("video_id", folder)
        order = image["frame_id"] if "frame_id" in image else natural_key(PurePosixPath(name).name)
        groups.setdefault(group, []).append((order, image_id, name))
    videos = []
    for group, frames in groups.items():
        frames.sort(key=lambda f: f[0])
        folders = {str(PurePosixPath(n).parent) for _, _, n in frames}
        if len(folders) != 1:
            raise DataError(f"{path}: video {group!r} spans several folders {sorted(folders)}")
        ids = [f[1] for f in frames]
        videos.append(_video(folders.pop(), ids, targets))
    if stills:
        by_folder: dict[str, list[str]] = {}
        for image in images:
            name = PurePosixPath(image["file_name"])
            by_folder.setdefault(str(name.parent), []).append(name.name)
        position = {
            f"{folder}/{n}": i
            for folder, names in by_folder.items()
            for i, n in enumerate(sorted(names, key=natural_key))
        }
    indexed: set[str] = set()
    for image_id, name, frame_id in stills:
        folder = str(PurePosixPath(name).parent)
        video = _video(folder, [image_id], targets, still=True)
        if frame_id is None:
            video.still_index = position[str(PurePosixPath(name))]
        else:
            video.still_index, video.still_name = int(frame_id), PurePosixPath(name).name
            indexed.add(folder)
        videos.append(video)
    return VidAnnotations(videos, list(categories), str(path), counts, indexed)


def _video(key: str, ids: list[int], targets, *, still: bool = False) -> VidVideo:
    boxes = [np.asarray(targets[i][0], dtype=np.float32).reshape(-1, 4) for i in ids]
    labels = [np.asarray(targets[i][1], dtype=np.int64) for i in ids]
    return VidVideo(key, ids, boxes, labels, still)


def letterbox(image: np.ndarray, size: int) -> tuple[torch.Tensor, float]:
    """(H, W, 3) RGB uint8 -> ((3, size, size) normalised float32, scale): long side to ``size``,
    padded bottom/right with the mean colour (0 after normalisation)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    out = np.zeros((size, size, 3), dtype=np.float32)
    out[:nh, :nw] = (resized.astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(out).permute(2, 0, 1).contiguous(), scale


class _VidFrames:
    def __init__(self, annotations: VidAnnotations, storage: VideoStorage, size: int) -> None:
        self.annotations, self.storage, self.size = annotations, storage, size
        self._checked: set[str] = set()

    def _index(self, video: VidVideo, position: int) -> int:
        if video.still:
            if video.still_name and hasattr(self.storage, "frame_paths"):
                paths = self.storage.frame_paths(video.key)
                found = paths[video.still_index].name if video.still_index < len(paths) else None
                if found != video.still_name:
                    raise DataError(
                        f"{self.annotations.source}: image '{video.key}/{video.still_name}' has frame_id "
                        f"{video.still_index}, but frame {video.still_index} of that folder is "
                        f"{found or 'missing'} (the folder changed since the JSON was built?)"
                    )
            return video.still_index
        return position

    def _check(self, key: str) -> None:
        if key in self._checked or key in self.annotations.indexed_folders:
            return
        listed, stored = self.annotations.folder_counts.get(key, 0), self.storage.num_frames(key)
        if listed != stored:
            raise DataError(
                f"{self.annotations.source}: lists {listed} frames of folder '{key}' but the storage has {stored}; "
                "the JSON must list every frame of a folder"
            )
        self._checked.add(key)

    def load(
        self, video: VidVideo, positions: Sequence[int]
    ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """Frames ``(T, 3, size, size)`` and one target per frame."""
        self._check(video.key)
        indices = [self._index(video, p) for p in positions]
        raw = self.storage.read_bytes_many(video.key, indices)
        frames, targets = [], []
        for p, i, data in zip(positions, indices, raw):
            tensor, scale = letterbox(
                decode_image(data, where=self.storage.frame_label(video.key, i)), self.size
            )
            frames.append(tensor)
            targets.append(
                {
                    "boxes": torch.from_numpy(video.boxes[p] * scale),
                    "labels": torch.from_numpy(video.labels[p]),
                    "image_id": torch.tensor(video.image_ids[p]),
                    "scale": torch.tensor(scale),
                }
            )
        return torch.stack(frames), targets


class VidPairs(torch.utils.data.Dataset):
    """The original's training pairs: ``frames_per_video`` frames per video at linspace mid-points,
    each with a partner at offset ``d ~ U{-max_offset .. max_offset - 1}`` (Python's
    ``range(-9, 9)``) clamped to the video, ordered in time (the earlier one is the keyframe); a DET
    still is a pair of two identical frames. Item: ``{"video": (2, 3, S, S), "targets": [t0, t1]}``.
    """

    def __init__(
        self,
        annotations: VidAnnotations,
        storage: VideoStorage,
        *,
        size: int,
        frames_per_video: int = 15,
        max_offset: int = 9,
    ) -> None:
        self.frames = _VidFrames(annotations, storage, size)
        self.max_offset = max_offset
        self.items: list[tuple[int, int]] = []
        for v, video in enumerate(annotations.videos):
            n = len(video.image_ids)
            k = min(frames_per_video, n)
            mids = sorted({int((j + 0.5) * n / k) for j in range(k)})
            self.items += [(v, m) for m in mids]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item) -> dict[str, Any]:
        index, seed = split_item(item)
        v, centre = self.items[index]
        video = self.frames.annotations.videos[v]
        n = len(video.image_ids)
        with seeded(seed) as rng:
            draw = rng.integers(-self.max_offset, self.max_offset) if rng is not None else 1
        partner = int(np.clip(centre + int(draw), 0, n - 1))
        frames, targets = self.frames.load(video, sorted([centre, partner]))
        return {"video": frames, "targets": targets}


class VidClips(torch.utils.data.Dataset):
    """Evaluation clips: each video cut into non-overlapping ``clip_length``-frame clips; the last
    one is padded by repeating its last frame (``real`` marks the frames to score).
    Item: ``{"video": (T, 3, S, S), "targets": [T dicts], "real": (T,) bool}``."""

    def __init__(
        self, annotations: VidAnnotations, storage: VideoStorage, *, size: int, clip_length: int = 10
    ):
        if clip_length < 1:
            raise ValueError(f"clip_length must be >= 1, got {clip_length}")
        self.frames = _VidFrames(annotations, storage, size)
        self.clip_length = clip_length
        self.items = [
            (v, start)
            for v, video in enumerate(annotations.videos)
            for start in range(0, len(video.image_ids), clip_length)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item) -> dict[str, Any]:
        index, _ = split_item(item)
        v, start = self.items[index]
        video = self.frames.annotations.videos[v]
        n = len(video.image_ids)
        positions = [min(start + j, n - 1) for j in range(self.clip_length)]
        frames, targets = self.frames.load(video, positions)
        real = torch.tensor([start + j < n for j in range(self.clip_length)])
        return {"video": frames, "targets": targets, "real": real}


def collate_detection(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``video`` to ``(B, T, 3, S, S)``; ``targets`` becomes one flat list of B*T dicts
    (clip-major, as the frames are rolled); ``real`` ``(B, T)`` when present."""
    out: dict[str, Any] = {
        "video": torch.stack([it["video"] for it in items]),
        "targets": [t for it in items for t in it["targets"]],
    }
    if "real" in items[0]:
        out["real"] = torch.stack([it["real"] for it in items])
    return out
