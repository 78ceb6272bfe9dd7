"""The synthetic benchmark: small deterministic labelled videos in which each method's premise holds.

A video shows a slowly drifting, low-contrast textured background with a few grey distractor
squares, and one small object (about 1/6 of the frame side) moving slowly. Its class is the
object's colour (6 distinct hues) and, beyond 6 classes, its shape (``circle`` / ``square``; up to
12 classes): colour is what a small CNN learns in minutes. Properties, and who needs them:

* **early vs late evidence (FrameExit).** ``early`` videos show the coloured object in every frame.
  ``late`` videos show it only in a short window of ``window`` consecutive frames that avoids the
  temporal centre; elsewhere the object is a neutral grey disc. A model that looks at the centre
  first (FrameExit's order starts with the middle sampled frame) can decide early videos at once
  and must keep looking for late ones; a window of >= 2 frames always contains one of 10 uniformly
  sampled frames of a 16-frame video, so looking at all frames decides every video.
* **small object in a large frame (AdaFocus).** The evidence covers ~3 % of the pixels.
* **frames without evidence (VideoIQ).** The grey-object frames of late videos carry no class
  information: low precision or skipping them costs nothing.
* **small frame-to-frame change + per-pixel masks (Delta Distillation).** Background and object
  move at most one pixel per frame; the segmentation variant writes a mask per frame
  (0 background, 1..K the class of a coloured object, K+1 a grey object).

Everything derives from ``seed`` (per video: ``numpy.random.default_rng([seed, index])``) and
encoding is deterministic, so the same spec gives identical bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from effvid.config import option
from effvid.data.decode import encode_jpeg, encode_png
from effvid.data.errors import DataError
from effvid.data.storage import write_lmdb
from effvid.io import atomic_dir

__all__ = ["SyntheticInfo", "SyntheticSpec", "generate", "render_video"]

PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
    "magenta": (200, 50, 200),
    "cyan": (40, 200, 210),
}
SHAPES = ("circle", "square")


@dataclass
class SyntheticSpec:
    task: str = option("classification", "classification | segmentation (adds per-frame masks)")
    storage: str = option("frames", "frames (JPEG folders) | lmdb | video (mp4 files)")
    num_classes: int = option(6, "classes: 6 colours, then the same colours as squares (2..12)")
    num_videos: int = option(960, "videos in total (train + val)")
    num_frames: int = option(16, "frames per video")
    size: int = option(64, "frame side in pixels (square frames)")
    val_fraction: float = option(0.25, "share of the videos in val.txt")
    early_fraction: float = option(0.5, "share of videos with evidence in every frame")
    window: int = option(3, "evidence frames of a late video (consecutive, away from the centre)")
    seed: int = option(0, "seed of everything")
    quality: int = option(90, "JPEG quality")

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(PALETTE) * len(SHAPES):
            raise ValueError(
                f"num_classes must be in [2, {len(PALETTE) * len(SHAPES)}], got {self.num_classes}"
            )
        if self.task not in ("classification", "segmentation"):
            raise ValueError(f"task must be classification or segmentation, got '{self.task}'")
        if self.storage not in ("frames", "lmdb", "video"):
            raise ValueError(f"storage must be frames, lmdb or video, got '{self.storage}'")
        if self.num_frames < 4 or not 2 <= self.window <= self.num_frames // 2 - 1:
            raise ValueError(
                f"need num_frames >= 4 and 2 <= window <= num_frames/2 - 1, got {self.num_frames}, {self.window}"
            )
        if self.size < 32:
            raise ValueError(f"size must be >= 32 pixels, got {self.size}")
        if not 0 < self.val_fraction < 1 or not 0 <= self.early_fraction <= 1:
            raise ValueError("val_fraction must be in (0, 1) and early_fraction in [0, 1]")
        if self.num_videos < 2 * self.num_classes:
            raise ValueError(f"num_videos must be >= 2 x num_classes, got {self.num_videos}")


@dataclass(frozen=True)
class SyntheticInfo:
    root: Path
    storage: str
    storage_path: Path
    train_list: Path
    val_list: Path
    classes: Path
    num_classes: int
    masks: Path | None


def class_colour_shape(c: int) -> tuple[str, str]:
    """Class ``c`` -> (colour, shape): colours first, shapes only beyond the 6 colours."""
    return list(PALETTE)[c % len(PALETTE)], SHAPES[c // len(PALETTE)]


def class_name(c: int) -> str:
    return "_".join(class_colour_shape(c))


def _evidence_frames(rng: np.random.Generator, spec: SyntheticSpec, early: bool) -> list[int]:
    t = spec.num_frames
    if early:
        return list(range(t))
    centre = t // 2
    starts = [s for s in range(t - spec.window + 1) if not s <= centre < s + spec.window]
    start = int(rng.choice(starts))
    return list(range(start, start + spec.window))


def render_video(spec: SyntheticSpec, index: int, label: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Frames (T, S, S, 3) uint8 RGB, masks (T, S, S) uint8 and the video's properties."""
    rng = np.random.default_rng([spec.seed, index])
    t, s = spec.num_frames, spec.size
    early = bool(rng.random() < spec.early_fraction)
    evidence = set(_evidence_frames(rng, spec, early))
    # background: coarse noise upsampled onto a canvas the frame window drifts across
    pad = t + 2
    coarse = rng.normal(0.0, 1.0, size=(s // 8 + 4, s // 8 + 4, 3))
    canvas = cv2.resize(coarse, (s + 2 * pad, s + 2 * pad), interpolation=cv2.INTER_CUBIC)
    tint = rng.uniform(95, 145, size=3)
    canvas = np.clip(tint + 18.0 * canvas, 0, 255)
    for _ in range(3):  # grey distractor squares, part of the background
        d = max(s // 10, 3)
        y, x = rng.integers(0, s + 2 * pad - d, size=2)
        canvas[y : y + d, x : x + d] = rng.uniform(90, 170)
    drift = rng.integers(-1, 2, size=2)
    # the object
    r = max(s // 12, 3)  # radius / half side: ~1/6 of the frame side across
    pos = rng.uniform(r + 2, s - r - 2, size=2)
    vel = rng.uniform(-1.0, 1.0, size=2)
    colour_name, shape = class_colour_shape(label)
    colour = np.array(PALETTE[colour_name], dtype=np.float64)
    colour = np.clip(colour + rng.uniform(-15, 15, size=3), 0, 255)
    grey = float(rng.uniform(110, 150))
    frames = np.empty((t, s, s, 3), dtype=np.uint8)
    masks = np.zeros((t, s, s), dtype=np.uint8)
    for f in range(t):
        oy, ox = pad + drift[0] * f, pad + drift[1] * f
        frame = canvas[oy : oy + s, ox : ox + s].copy()
        mask = np.zeros((s, s), dtype=np.uint8)
        cy, cx = (int(round(v)) for v in pos)
        if f in evidence:
            value, tone = label + 1, tuple(float(c) for c in colour)
            if shape == "circle":
                cv2.circle(mask, (cx, cy), r, 1, -1)
            else:
                cv2.rectangle(mask, (cx - r, cy - r), (cx + r, cy + r), 1, -1)
        else:
            value, tone = spec.num_classes + 1, (grey, grey, grey)
            cv2.circle(mask, (cx, cy), r, 1, -1)
        frame[mask > 0] = tone
        masks[f] = mask * value
        frames[f] = np.clip(frame, 0, 255).astype(np.uint8)
        pos = pos + vel
        for k in range(2):  # bounce off the borders
            if not r + 1 <= pos[k] <= s - r - 2:
                vel[k] = -vel[k]
                pos[k] = np.clip(pos[k], r + 1, s - r - 2)
    props = {"label": label, "kind": "early" if early else "late", "evidence_frames": sorted(evidence)}
    return frames, masks, props


def _videos(spec: SyntheticSpec) -> Iterator[tuple[int, str, int, np.ndarray, np.ndarray, dict]]:
    suffix = ".mp4" if spec.storage == "video" else ""
    for i in range(spec.num_videos):
        label = i % spec.num_classes
        frames, masks, props = render_video(spec, i, label)
        yield i, f"vid_{i:05d}{suffix}", label, frames, masks, props


def _write_video_file(path: Path, frames: np.ndarray) -> None:
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8.0, (frames.shape[2], frames.shape[1])
    )
    if not writer.isOpened():
        raise DataError(f"OpenCV cannot write {path} with the mp4v codec")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def generate(
    root: str | os.PathLike[str], spec: SyntheticSpec | None = None, *, progress: bool = False
) -> SyntheticInfo:
    """Write the benchmark under ``root`` (atomically) and describe it.

    If ``root`` already holds a benchmark generated from the same spec it is reused; a different
    spec there is an error (nothing is overwritten).
    """
    spec = spec or SyntheticSpec()
    root = Path(root)
    storage_name = {"frames": "frames", "lmdb": "frames.lmdb", "video": "videos"}[spec.storage]
    info = SyntheticInfo(
        root=root,
        storage=spec.storage,
        storage_path=root / storage_name,
        train_list=root / "train.txt",
        val_list=root / "val.txt",
        classes=root / "classes.txt",
        num_classes=spec.num_classes,
        masks=root / "masks" if spec.task == "segmentation" else None,
    )
    if root.exists():
        meta = root / "meta.json"
        if meta.is_file() and json.loads(meta.read_text())["spec"] == asdict(spec):
            return info
        raise DataError(
            f"{root} exists and does not hold a synthetic benchmark of this spec; choose another root"
        )
    order = np.random.default_rng(spec.seed).permutation(spec.num_videos)
    val = set(order[: max(int(round(spec.val_fraction * spec.num_videos)), spec.num_classes)].tolist())
    with atomic_dir(root) as tmp:
        storage_dir = tmp / storage_name
        lines: dict[str, list[str]] = {"train": [], "val": []}
        videos_meta = []
        encoded: list[tuple[str, list[bytes], tuple[int, int]]] = []
        items = _videos(spec)
        if progress:
            from tqdm import tqdm

            items = tqdm(items, total=spec.num_videos, desc="synthetic videos")
        for i, key, label, frames, masks, props in items:
            split = "val" if i in val else "train"
            lines[split].append(f"{key} {spec.num_frames} {label}")
            videos_meta.append({"key": key, "split": split, **props})
            if spec.storage == "video":
                storage_dir.mkdir(exist_ok=True)
                _write_video_file(storage_dir / key, frames)
            else:
                jpegs = [encode_jpeg(f, quality=spec.quality) for f in frames]
                if spec.storage == "lmdb":
                    encoded.append((key, jpegs, (spec.size, spec.size)))
                else:
                    folder = storage_dir / key
                    folder.mkdir(parents=True)
                    for f, data in enumerate(jpegs):
                        (folder / f"{f:05d}.jpg").write_bytes(data)
            if spec.task == "segmentation":
                mask_dir = tmp / "masks" / key
                mask_dir.mkdir(parents=True)
                for f, m in enumerate(masks):
                    (mask_dir / f"{f:05d}.png").write_bytes(encode_png(m))
        if spec.storage == "lmdb":
            total = sum(len(b) for _, frames, _ in encoded for b in frames)
            write_lmdb(storage_dir, encoded, map_size=max(4 * total, 1 << 24))
        (tmp / "classes.txt").write_text("".join(class_name(c) + "\n" for c in range(spec.num_classes)))
        for split, rows in lines.items():
            (tmp / f"{split}.txt").write_text("".join(r + "\n" for r in rows))
        (tmp / "meta.json").write_text(json.dumps({"spec": asdict(spec), "videos": videos_meta}, indent=1))
    return info
