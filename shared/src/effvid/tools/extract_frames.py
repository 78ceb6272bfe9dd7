"""``extract-frames``: a folder of videos -> one JPEG frame folder per video (OpenCV).

The originals: ActivityNet at 1 fps with the short side 350, Mini-Kinetics at 5 fps with the
short side 256 (``--fps 1 --short_side 350`` / ``--fps 5 --short_side 256``). Each video is
written into a temporary folder renamed when complete, so a finished folder is never partial and
a rerun skips the videos already done (resumable). Failures are reported per video and the
command exits non-zero; nothing fails silently.

A video that decodes to fewer frames than its container lists (a truncated download) is an error
by default. With ``--on_short keep`` its frames are kept, minus the last decoded one (the frame at
the cut is often damaged), the video is logged and counted in the summary, and its folder holds an
``INCOMPLETE`` marker so that it is never taken as done: a rerun extracts it again.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2

from effvid.cli import build_command
from effvid.config import MISSING, check_choice, option
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
    on_short: str = option(
        "error", "a video decoding to fewer frames than its container lists: error | keep (logged, counted)"
    )

    def __post_init__(self) -> None:
        check_choice("on_short", self.on_short, ("error", "keep"))


INCOMPLETE = "INCOMPLETE"


def _done(folder: Path) -> bool:
    return folder.is_dir() and not (folder / INCOMPLETE).exists()


def _short(decoded: int, listed: int) -> bool:
    """Fewer frames than the container lists, beyond its usual rounding of one frame."""
    return listed > 0 and decoded < listed - max(1, listed // 100)


def _resize(rgb, short_side: int | None):
    if not short_side:
        return rgb
    h, w = rgb.shape[:2]
    scale = short_side / min(h, w)
    size = (max(int(round(w * scale)), short_side), max(int(round(h * scale)), short_side))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def extract_video(
    src: Path,
    dst: Path,
    *,
    fps: float | None,
    short_side: int | None,
    quality: int,
    template: str,
    on_short: str = "error",
) -> tuple[int, bool]:
    """Write the frames of ``src`` into the new folder ``dst`` (atomically).

    Returns (frames written, whether the video was short - see the module docstring).
    """
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise DataError(f"OpenCV cannot open video {src}")
    native = cap.get(cv2.CAP_PROP_FPS) or 0.0
    listed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    step = native / fps if fps and native > 0 else 1.0
    written, short = [], False
    if dst.exists():  # an INCOMPLETE folder of an earlier run: extract it again
        shutil.rmtree(dst)
    try:
        with atomic_dir(dst) as tmp:
            index, next_keep = 0, 0.0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                if index >= next_keep - 1e-6:
                    rgb = _resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), short_side)
                    path = tmp / template.format(len(written) + 1)
                    path.write_bytes(encode_jpeg(rgb, quality=quality))
                    written.append((index, path))
                    next_keep += step
                index += 1
            if _short(index, listed):
                if on_short != "keep":
                    raise DataError(
                        f"video {src} decodes to {index} of the {listed} frames its container lists "
                        "(truncated or damaged); --on_short keep keeps the frames that decode"
                    )
                short = True
                if written and written[-1][0] == index - 1:  # the frame at the cut is often damaged
                    written.pop()[1].unlink()
                (tmp / INCOMPLETE).write_text(f"decoded {index} of {listed} listed frames\n")
            if not written:
                raise DataError(f"video {src} yielded no frames (empty or unreadable)")
    finally:
        cap.release()
    return len(written), short


def _job(args: tuple) -> tuple[str, tuple[int, bool] | None, str | None]:
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
    todo = [v for v in videos if not _done(out / v.name)]
    print(f"extract-frames: {len(videos)} videos, {len(videos) - len(todo)} already done, {len(todo)} to do")
    kw = {
        "fps": cfg.fps,
        "short_side": cfg.short_side,
        "quality": cfg.quality,
        "template": cfg.template,
        "on_short": cfg.on_short,
    }
    jobs = [(v, out / v.name, kw) for v in todo]
    failures, shorts, frames = [], [], 0
    with mp.get_context("spawn").Pool(max(cfg.workers, 1)) as pool:
        for name, result, error in tqdm(pool.imap_unordered(_job, jobs), total=len(jobs), desc="videos"):
            if error or result is None:
                failures.append((name, error))
                log.error("%s: %s", name, error)
                continue
            frames += result[0]
            if result[1]:
                shorts.append(name)
                log.warning(
                    "%s: fewer frames than its container lists; kept %d (marked INCOMPLETE)", name, result[0]
                )
    if shorts:
        print(
            f"extract-frames: {len(shorts)} short video(s) kept as INCOMPLETE (retried on a rerun): {', '.join(sorted(shorts))}"
        )
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
