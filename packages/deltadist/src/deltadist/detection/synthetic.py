"""A synthetic video detection benchmark in ImageNet VID's COCO format: moving boxes on textured
backgrounds, a few classes, small frame-to-frame change (the premise of Delta Distillation).

Each video: a low-contrast textured background drifting at most one pixel per frame, and 1-2
objects (filled rectangles or ellipses, 1/5 to 1/3 of the frame side, class = colour) moving at
most 1.5 pixels per frame and bouncing off the borders; the box is the shape's bounding box.
Optional DET-style stills (one image each, ids from 10,000,000 as in the original's merged JSON).
Everything derives from ``seed``; the same arguments give the same bytes.

Layout written under ``root``::

    frames/<split>/vid_00000/000000.jpg ...     (storage="frames")  or  frames.lmdb (storage="lmdb")
    frames/det/stills_0000/000000.jpg ...       DET stills (train only)
    annotations/<split>.json                    COCO format: images (file_name, video_id, frame_id), annotations, categories
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from deltadist.detection.data import ORIGINAL_STILL_ID
from effvid.data.decode import encode_jpeg
from effvid.data.storage import write_lmdb
from effvid.io import atomic_write_text

__all__ = ["COLOURS", "generate_vid_detection", "render_detection_video"]

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
    "magenta": (200, 50, 200),
    "cyan": (40, 200, 210),
}


def render_detection_video(
    seed: int, index: int, *, num_frames: int, size: int, num_classes: int
) -> tuple[np.ndarray, list[list[tuple[int, list[float]]]]]:
    """Frames (T, S, S, 3) uint8 RGB and per frame a list of (class 1..K, [x, y, w, h])."""
    rng = np.random.default_rng([seed, index])
    t, s = num_frames, size
    pad = t + 2
    coarse = rng.normal(0.0, 1.0, size=(s // 8 + 4, s // 8 + 4, 3))
    canvas = cv2.resize(coarse, (s + 2 * pad, s + 2 * pad), interpolation=cv2.INTER_CUBIC)
    canvas = np.clip(rng.uniform(95, 145, size=3) + 18.0 * canvas, 0, 255)
    drift = rng.integers(-1, 2, size=2)
    objects = []
    for _ in range(int(rng.integers(1, 3))):
        label = int(rng.integers(1, num_classes + 1))
        half = rng.uniform(s / 10, s / 6, size=2)  # half width, half height
        pos = rng.uniform(half + 1, s - half - 1)
        vel = rng.uniform(-1.5, 1.5, size=2)
        colour = np.clip(
            np.array(list(COLOURS.values())[(label - 1) % len(COLOURS)]) + rng.uniform(-15, 15, 3), 0, 255
        )
        objects.append([label, half, pos, vel, colour, bool(rng.random() < 0.5)])
    frames = np.empty((t, s, s, 3), dtype=np.uint8)
    boxes: list[list[tuple[int, list[float]]]] = []
    for f in range(t):
        oy, ox = pad + drift[0] * f, pad + drift[1] * f
        frame = canvas[oy : oy + s, ox : ox + s].copy()
        here = []
        for obj in objects:
            label, half, pos, vel, colour, ellipse = obj
            (cx, cy), (hw, hh) = pos, half
            x0, y0, x1, y1 = (int(round(v)) for v in (cx - hw, cy - hh, cx + hw, cy + hh))
            mask = np.zeros((s, s), dtype=np.uint8)
            if ellipse:
                cv2.ellipse(
                    mask, (int(round(cx)), int(round(cy))), (int(round(hw)), int(round(hh))), 0, 0, 360, 1, -1
                )
            else:
                cv2.rectangle(mask, (x0, y0), (x1, y1), 1, -1)
            frame[mask > 0] = colour
            ys, xs = np.nonzero(mask)
            here.append(
                (
                    label,
                    [
                        float(xs.min()),
                        float(ys.min()),
                        float(xs.max() - xs.min() + 1),
                        float(ys.max() - ys.min() + 1),
                    ],
                )
            )
            pos += vel
            for k in range(2):
                if not half[k] + 1 <= pos[k] <= s - half[k] - 1:
                    vel[k] = -vel[k]
                    pos[k] = np.clip(pos[k], half[k] + 1, s - half[k] - 1)
        frames[f] = np.clip(frame, 0, 255).astype(np.uint8)
        boxes.append(here)
    return frames, boxes


def generate_vid_detection(
    root: str | Path,
    *,
    num_videos: dict[str, int] | None = None,
    num_frames: int = 20,
    size: int = 64,
    num_classes: int = 3,
    stills: int = 0,
    storage: str = "frames",
    seed: int = 0,
) -> dict[str, Path]:
    """Write the benchmark (see the module doc); returns ``{"frames": storage path, "<split>": json}``.

    ``num_videos``: videos per split (default ``{"train": 16, "val": 4}``); ``stills``: DET stills
    added to the train split.
    """
    if storage not in ("frames", "lmdb"):
        raise ValueError(f"storage must be 'frames' or 'lmdb', got {storage!r}")
    if not 1 <= num_classes <= len(COLOURS):
        raise ValueError(f"num_classes must be 1..{len(COLOURS)}, got {num_classes}")
    root = Path(root)
    splits = num_videos or {"train": 16, "val": 4}
    categories = [{"id": c, "name": list(COLOURS)[c - 1]} for c in range(1, num_classes + 1)]
    encoded: list[tuple[str, list[bytes], tuple[int, int]]] = []
    out: dict[str, Path] = {}
    index = 0
    for split, count in splits.items():
        images, annotations = [], []
        videos = []
        for _ in range(count):
            frames, boxes = render_detection_video(
                seed, index, num_frames=num_frames, size=size, num_classes=num_classes
            )
            key = f"{split}/vid_{index:05d}"
            videos.append((key, frames))
            for f, frame_boxes in enumerate(boxes):
                image_id = 100_000 * index + f + 1
                images.append(
                    {
                        "id": image_id,
                        "file_name": f"{key}/{f:06d}.jpg",
                        "width": size,
                        "height": size,
                        "video_id": index + 1,
                        "frame_id": f,
                    }
                )
                for label, bbox in frame_boxes:
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": image_id,
                            "category_id": label,
                            "bbox": bbox,
                            "area": bbox[2] * bbox[3],
                            "iscrowd": 0,
                        }
                    )
            index += 1
        if split == "train" and stills:
            key = "det/stills_0000"
            frames = []
            for i in range(stills):
                still, boxes = render_detection_video(
                    seed + 1, i, num_frames=1, size=size, num_classes=num_classes
                )
                frames.append(still[0])
                image_id = ORIGINAL_STILL_ID + i
                images.append(
                    {"id": image_id, "file_name": f"{key}/{i:06d}.jpg", "width": size, "height": size}
                )
                for label, bbox in boxes[0]:
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": image_id,
                            "category_id": label,
                            "bbox": bbox,
                            "area": bbox[2] * bbox[3],
                            "iscrowd": 0,
                        }
                    )
            videos.append((key, np.stack(frames)))
        for key, frames in videos:
            data = [encode_jpeg(f, quality=95) for f in frames]
            if storage == "frames":
                folder = root / "frames" / key
                folder.mkdir(parents=True, exist_ok=True)
                for f, blob in enumerate(data):
                    (folder / f"{f:06d}.jpg").write_bytes(blob)
            else:
                encoded.append((key, data, (size, size)))
        path = root / "annotations" / f"{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            path, json.dumps({"images": images, "annotations": annotations, "categories": categories})
        )
        out[split] = path
    if storage == "lmdb":
        write_lmdb(root / "frames.lmdb", encoded, map_size=1 << 30)
        out["frames"] = root / "frames.lmdb"
    else:
        out["frames"] = root / "frames"
    return out
