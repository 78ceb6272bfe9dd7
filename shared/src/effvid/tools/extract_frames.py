"""``extract-frames``: a folder of videos -> one JPEG frame folder per video (OpenCV).

The originals: ActivityNet at 1 fps with the short side 350, Mini-Kinetics at 5 fps with the
short side 256 (``--fps 1 --short_side 350`` / ``--fps 5 --short_side 256``). Each video is
written into a temporary folder renamed when complete, so a finished folder is never partial and
a rerun skips the videos already done (resumable). Failures are reported per video and the
command exits non-zero; nothing fails silently.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import cv2

from effvid.cli import build_command
from effvid.config import MISSING, option
from effvid.data.decode import encode_jpeg
from effvid.data.errors import DataError
from effvid.io import atomic_dir

__all__ = ["EXTRACT", "extract_video"]

log = logging.getLogger(__name__)


@dataclass
class ExtractConfig:
    videos: str = option(MISSING, "folder of input videos")
    frames: str = option(MISSING, "output folder; one sub-folder per video, named like the video file")
    fps: float | None = option(None, "frames per second to keep (None: every frame)")
    short_side: int | None = option(None, "resize so the shorter side is this long (None: keep)")
    quality: int = option(95, "JPEG quality")
    template: str = option("image_{:05d}.jpg", "frame file name; numbered from 1")
    extensions: list[str] = option(
        doc="video file extensions",
        default_factory=lambda: [
            ".mp4",
            ".mkv",
            ".webm",
            ".avi",
            ".mov",
            ".flv",
            ".m4v",
            ".mpg",
            ".mpeg",
            ".wmv",
            ".3gp",
        ],
    )
    workers: int = option(2, "parallel processes")
    recursive: bool = option(
        False, "also find videos in sub-folders (e.g. one per class); frame folders stay flat, by file name"
    )


def _resize(rgb, short_side: int | None):
    if not short_side:
        return rgb
    h, w = rgb.shape[:2]
    scale = short_side / min(h, w)
    size = (max(int(round(w * scale)), short_side), max(int(round(h * scale)), short_side))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def extract_video(
    src: Path, dst: Path, *, fps: float | None, short_side: int | None, quality: int, template: str
) -> int:
    """Write the frames of ``src`` into the new folder ``dst`` (atomically); returns the frame count."""
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise DataError(f"OpenCV cannot open video {src}")
    native = cap.get(cv2.CAP_PROP_FPS) or 0.0
    step = native / fps if fps and native > 0 else 1.0
    written = 0
    try:
        with atomic_dir(dst) as tmp:
            index, next_keep = 0, 0.0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                if index >= next_keep - 1e-6:
                    rgb = _resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), short_side)
                    written += 1
                    (tmp / template.format(written)).write_bytes(encode_jpeg(rgb, quality=quality))
                    next_keep += step
                index += 1
            if written == 0:
                raise DataError(f"video {src} yielded no frames (empty or unreadable)")
    finally:
        cap.release()
    return written


def _job(args: tuple) -> tuple[str, int | None, str | None]:
    cv2.setNumThreads(1)
    src, dst, kw = args
    try:
        return src.name, extract_video(src, dst, **kw), None
    except Exception as exc:  # reported per video in the summary
        return src.name, None, str(exc)


def _run(cfg: ExtractConfig, _run_dir: None) -> None:
    from tqdm import tqdm

    root, out = Path(cfg.videos), Path(cfg.frames)
    if not root.is_dir():
        raise DataError(f"video folder not found: {root}")
    exts = {e.lower() for e in cfg.extensions}
    candidates = root.rglob("*") if cfg.recursive else root.iterdir()
    videos = sorted(p for p in candidates if p.suffix.lower() in exts and p.is_file())
    if not videos:
        where = f"{root} or its sub-folders" if cfg.recursive else str(root)
        raise DataError(f"no video with extension {sorted(exts)} in {where}")
    first_of: dict[str, Path] = {}
    for v in videos:
        if v.name in first_of:
            raise DataError(
                f"two videos are both named '{v.name}' ({first_of[v.name]} and {v}); frame folders are "
                "named by file name, so rename one"
            )
        first_of[v.name] = v
    todo = [v for v in videos if not (out / v.name).is_dir()]
    print(f"extract-frames: {len(videos)} videos, {len(videos) - len(todo)} already done, {len(todo)} to do")
    kw = {"fps": cfg.fps, "short_side": cfg.short_side, "quality": cfg.quality, "template": cfg.template}
    jobs = [(v, out / v.name, kw) for v in todo]
    failures, frames = [], 0
    with mp.get_context("spawn").Pool(max(cfg.workers, 1)) as pool:
        for name, count, error in tqdm(pool.imap_unordered(_job, jobs), total=len(jobs), desc="videos"):
            if error:
                failures.append((name, error))
                log.error("%s: %s", name, error)
            else:
                frames += count or 0
    for name, error in failures:
        print(f"extract-frames: FAILED {name}: {error}")
    if failures:
        raise SystemExit(
            f"extract-frames: {len(failures)} of {len(jobs)} videos failed (see above); rerun to retry them"
        )
    print(f"extract-frames: done, {frames} frames from {len(jobs)} videos written to {out}")


EXTRACT = build_command(
    _run, ExtractConfig, name="extract-frames", doc=__doc__.split("\n\n")[0], run_dir=False
)
