"""``build-lmdb``: frame folders (or video files) -> one LMDB of encoded frames.

Every frame is decoded while building (a corrupt frame is an error naming the video and frame
file; nothing undecodable is stored). The database is written under a temporary name next to the
output and renamed only when complete, then verified: every video's frame count is read back and
its first and last frames decoded. Frame folders keep their JPEG bytes as they are (no
re-encoding); video frames are encoded as JPEG. One build at a time per destination (a lock file
beside it); a temporary database left by a killed build is removed by the next build.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from effvid.cli import build_command
from effvid.config import MISSING, option
from effvid.data.decode import decode_image, encode_jpeg
from effvid.data.errors import DataError
from effvid.data.storage import FrameFolderStorage, LmdbStorage, VideoFileStorage, write_lmdb

__all__ = ["BUILD_LMDB", "build_lmdb"]


@dataclass
class BuildLmdbConfig:
    source: str = option(MISSING, "folder of frame folders (or of videos with --source_kind video)")
    output: str = option(MISSING, "the LMDB to create (a directory; must not exist)")
    source_kind: str = option("frames", "frames | video")
    quality: int = option(95, "JPEG quality when encoding video frames")
    keys: str | None = option(
        None,
        "file of video keys, one per line: frame folders at any depth below source (e.g. "
        "val/ILSVRC2015_val_00000000); default: every folder (or video) directly in source",
    )


def _items(source, kind: str, quality: int, keys: list[str]):
    from tqdm import tqdm

    for key in tqdm(keys, desc="videos"):
        if kind == "frames":
            frames = [source.read_bytes(key, i) for i in range(source.num_frames(key))]
            # decode every frame now: a corrupt JPEG must fail the build, not a training run later
            decoded = [decode_image(data, where=source.frame_label(key, i)) for i, data in enumerate(frames)]
            first = decoded[0]
        else:
            decoded = source.read_frames(key, list(range(source.num_frames(key))))
            frames = [encode_jpeg(f, quality=quality) for f in decoded]
            first = decoded[0]
        yield key, frames, (int(first.shape[0]), int(first.shape[1]))


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``out``; a second build to the same place fails at once."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.with_name(f".{out.name}.lock")
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(
                f"another build-lmdb is writing {out} (it holds {lock_path}); wait for it or choose another output"
            ) from None
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)


def _remove_stale(out: Path) -> None:
    """Temporary databases of builds that were killed (we hold the lock: nobody else writes)."""
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        print(f"build-lmdb: removing {stale}, left by an interrupted build")
        shutil.rmtree(stale, ignore_errors=True)


def build_lmdb(
    source_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    source_kind: str = "frames",
    quality: int = 95,
    keys: list[str] | None = None,
) -> int:
    """Build and verify the LMDB; returns the number of videos. ``keys``: the videos to store
    (relative paths below ``source_dir``, nested folders allowed); default: the source's own."""
    out = Path(output)
    with _exclusive(out):
        if out.exists():
            raise DataError(f"{out} already exists; remove it or choose another output")
        _remove_stale(out)
        return _build(source_dir, out, source_kind=source_kind, quality=quality, keys=keys)


def _build(
    source_dir: str | os.PathLike[str], out: Path, *, source_kind: str, quality: int, keys: list[str] | None
) -> int:
    if source_kind == "frames":
        source = FrameFolderStorage(source_dir)
        size = sum(f.stat().st_size for f in Path(source_dir).rglob("*") if f.is_file())
    elif source_kind == "video":
        source = VideoFileStorage(source_dir)
        size = 0
    else:
        raise DataError(f"source_kind must be frames or video, got '{source_kind}'")
    keys = source.keys() if keys is None else keys
    if not keys:
        raise DataError(f"no video found in {source_dir}")
    if source_kind == "video":  # decoded size bounds the JPEG size from above
        size = sum(source.num_frames(k) for k in keys) * 3 * 1920 * 1080 // 8
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        count = write_lmdb(tmp, _items(source, source_kind, quality, keys), map_size=max(2 * size, 1 << 26))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    written = LmdbStorage(out)
    for key in keys:
        expected = source.num_frames(key)
        got = written.num_frames(key)
        if got != expected:
            raise DataError(
                f"verification failed: video '{key}' has {got} frames in {out}, {expected} in the source"
            )
        written.read_frames(key, [0, got - 1])
    return count


def _run(cfg: BuildLmdbConfig, _run_dir: None) -> None:
    keys = None
    if cfg.keys is not None:
        path = Path(cfg.keys)
        if not path.is_file():
            raise DataError(f"--keys: file not found: {path}")
        keys = list(dict.fromkeys(line.strip() for line in path.read_text().splitlines() if line.strip()))
    count = build_lmdb(cfg.source, cfg.output, source_kind=cfg.source_kind, quality=cfg.quality, keys=keys)
    print(f"build-lmdb: wrote and verified {count} videos in {cfg.output}")


BUILD_LMDB = build_command(
    _run, BuildLmdbConfig, name="build-lmdb", doc=__doc__.split("\n\n")[0], run_dir=False
)
