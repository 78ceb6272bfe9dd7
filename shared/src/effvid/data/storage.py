"""Where frames live: frame folders, one LMDB for a dataset, or video files.

Every backend answers the same questions - which videos exist, how many frames a video has,
frame i as decoded RGB - so datasets and samplers never know where the bytes come from.

LMDB layout (written by :func:`write_lmdb`): key ``<video>/<index:06d>`` -> encoded image bytes;
``__meta__/<video>`` -> JSON ``{"num_frames", "height", "width"}``; ``__keys__`` -> JSON list
of videos. No pickles: any LMDB reader in any language can read it.
"""

from __future__ import annotations

import abc
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from effvid.data.decode import decode_image
from effvid.data.errors import DataError

__all__ = [
    "FileListStorage",
    "FrameFolderStorage",
    "LmdbStorage",
    "VideoFileStorage",
    "VideoStorage",
    "close_lmdb_envs",
    "natural_key",
    "open_storage",
    "write_lmdb",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def natural_key(name: str) -> list[object]:
    """Sort key that orders ``img_2`` before ``img_10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class VideoStorage(abc.ABC):
    #: constructor keyword -> the ``data.*`` config key that sets it (see ``open_configured_storage``)
    config_options: ClassVar[dict[str, str]] = {}
    #: set to the transform's short side to decode large JPEGs at reduced size (``decode_image``)
    decode_min_side: int | None = None

    """Read-only access to the frames of many videos, addressed by video key."""

    @abc.abstractmethod
    def keys(self) -> list[str]:
        """Every video key, sorted."""

    @abc.abstractmethod
    def num_frames(self, key: str) -> int:
        """Frame count of a video (``DataError`` if it does not exist or has none)."""

    def read_bytes(self, key: str, index: int) -> bytes:
        """Encoded bytes of frame ``index`` (frame folders and LMDB)."""
        raise NotImplementedError(f"{type(self).__name__} stores no per-frame encoded bytes")

    def read_bytes_many(self, key: str, indices: Sequence[int]) -> list[bytes]:
        """Encoded bytes of several frames of one video (LMDB reads them in one transaction)."""
        return [self.read_bytes(key, i) for i in indices]

    def read_frames(self, key: str, indices: Sequence[int]) -> list[np.ndarray]:
        """Frames ``indices`` (repeats allowed, any order) as (H, W, 3) RGB uint8 arrays."""
        cache: dict[int, np.ndarray] = {}
        for i in indices:
            if i not in cache:
                cache[i] = decode_image(
                    self.read_bytes(key, i), where=self._where(key, i), min_side=self.decode_min_side
                )
        return [cache[i] for i in indices]

    def __contains__(self, key: str) -> bool:
        try:
            return self.num_frames(key) > 0
        except DataError:
            return False

    def frame_label(self, key: str, index: int) -> str:
        """How errors name frame ``index`` of ``key`` (a frame folder: its file)."""
        return self._where(key, index)

    def _where(self, key: str, index: int) -> str:
        return f"video '{key}' frame {index}"

    def _check_index(self, key: str, index: int, count: int) -> None:
        if not 0 <= index < count:
            raise DataError(f"video '{key}': frame {index} requested but the video has {count} frames")


class FrameFolderStorage(VideoStorage):
    config_options = {"pattern": "frame_pattern"}

    """``root/<video key>/<frame files>``; frames sorted in natural (numeric-aware) order.

    ``pattern`` is a glob for frame names (default: every ``.jpg``/``.jpeg``/``.png``).
    """

    def __init__(self, root: str | os.PathLike[str], *, pattern: str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"frame root folder not found: {self.root}")
        self.pattern = pattern
        self._frames: dict[str, list[Path]] = {}

    def keys(self) -> list[str]:
        return sorted((p.name for p in self.root.iterdir() if p.is_dir()), key=natural_key)

    def frame_paths(self, key: str) -> list[Path]:
        if key not in self._frames:
            folder = self.root / key
            if not folder.is_dir():
                raise DataError(f"video '{key}': frame folder not found: {folder}")
            if self.pattern:
                files = [p for p in folder.glob(self.pattern) if p.is_file()]
            else:
                files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
            if not files:
                wanted = self.pattern or "/".join(IMAGE_EXTENSIONS)
                raise DataError(f"video '{key}': frame folder {folder} has no frames matching {wanted}")
            self._frames[key] = sorted(files, key=lambda p: natural_key(p.name))
        return self._frames[key]

    def num_frames(self, key: str) -> int:
        return len(self.frame_paths(key))

    def read_bytes(self, key: str, index: int) -> bytes:
        paths = self.frame_paths(key)
        self._check_index(key, index, len(paths))
        try:
            return paths[index].read_bytes()
        except OSError as exc:
            raise DataError(f"video '{key}': cannot read frame file {paths[index]}: {exc}") from exc

    def _where(self, key: str, index: int) -> str:
        return f"video '{key}' frame {index} ({self.frame_paths(key)[index]})"


class FileListStorage(VideoStorage):
    """Videos given as explicit lists of frame files (e.g. Cityscapes snippets sharing one folder)."""

    def __init__(self, videos: dict[str, Sequence[str | os.PathLike[str]]]) -> None:
        self._videos = {k: [Path(p) for p in v] for k, v in videos.items()}

    def keys(self) -> list[str]:
        return sorted(self._videos, key=natural_key)

    def num_frames(self, key: str) -> int:
        if key not in self._videos:
            raise DataError(f"video '{key}' is not in this file list")
        return len(self._videos[key])

    def read_bytes(self, key: str, index: int) -> bytes:
        self._check_index(key, index, self.num_frames(key))
        path = self._videos[key][index]
        if not path.is_file():
            raise DataError(f"video '{key}': frame {index} file not found: {path}")
        return path.read_bytes()


_LMDB_ENVS: dict[tuple[int, str], tuple[object, bool]] = {}


def _lmdb_env(path: Path, resolved: str, readahead: bool = False):
    """One read-only environment per (process, path): py-lmdb refuses to open one twice per process,
    and a DataLoader worker must not reuse its parent's handle after fork. ``resolved`` is the
    path's resolved form, computed once by the caller (resolving costs a syscall per component)."""
    key = (os.getpid(), resolved)
    entry = _LMDB_ENVS.get(key)
    if entry is None:
        import lmdb

        # a forked worker inherits its parent's handle, which py-lmdb still counts as open:
        # close that copy (read-only, lock-free; the parent's own mapping is unaffected)
        for stale in [k for k in _LMDB_ENVS if k[1] == resolved]:
            _LMDB_ENVS.pop(stale)[0].close()  # type: ignore[attr-defined]

        env = lmdb.open(
            str(path),
            readonly=True,
            lock=False,
            readahead=readahead,
            meminit=False,
            subdir=path.is_dir(),
            max_readers=512,
        )
        entry = _LMDB_ENVS[key] = (env, readahead)
    elif entry[1] != readahead:
        raise DataError(
            f"LMDB {path} is already open in this process with readahead={entry[1]}; "
            f"call effvid.data.close_lmdb_envs() before opening it with readahead={readahead}"
        )
    return entry[0]


def close_lmdb_envs(path: str | os.PathLike[str] | None = None) -> int:
    """Close this process's LMDB environments (those of ``path``, or all); returns how many.

    Storages reopen lazily on their next read. Use it to release a database's memory map, e.g.
    before replacing the file, or to measure reads from a cold page cache (mapped pages are not
    evicted while a mapping holds them)."""
    resolved = None if path is None else str(Path(path).resolve())
    closing = [k for k in _LMDB_ENVS if k[0] == os.getpid() and resolved in (None, k[1])]
    for key in closing:
        _LMDB_ENVS.pop(key)[0].close()  # type: ignore[attr-defined]
    return len(closing)


class LmdbStorage(VideoStorage):
    config_options = {"readahead": "lmdb_readahead"}

    """One LMDB for a whole dataset (see the module docstring for its layout).

    The environment opens lazily, read-only, ``lock=False``, once per process (shared by every
    storage on the same path); a DataLoader worker opens its own.

    ``readahead=False`` (default) maps the file for random access: a page fault reads one 4 KB
    page, so the page cache holds only what was read. ``readahead=True`` lets the kernel read
    ahead (128 KB by default): a JPEG frame spans several pages and a clip's frames sit next to
    each other in the file, so reads from a cold cache need far fewer disk requests (6.7x the raw
    clip reads, 2x end to end, in ``benchmarks/data.md``) at the cost of reading, and caching, some
    unused bytes.
    """

    def __init__(self, path: str | os.PathLike[str], *, readahead: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"LMDB not found: {self.path}")
        self.readahead = bool(readahead)
        self._resolved = str(self.path.resolve())
        self._meta: dict[str, dict[str, int]] = {}

    def _txn_get(self, key: str) -> bytes | None:
        with _lmdb_env(self.path, self._resolved, self.readahead).begin(buffers=False) as txn:
            return txn.get(key.encode("utf-8"))

    def keys(self) -> list[str]:
        raw = self._txn_get("__keys__")
        if raw is None:
            raise DataError(
                f"LMDB {self.path} has no '__keys__' record (not written by effvid's build-lmdb?)"
            )
        return json.loads(raw)

    def meta(self, key: str) -> dict[str, int]:
        if key not in self._meta:
            raw = self._txn_get(f"__meta__/{key}")
            if raw is None:
                raise DataError(f"LMDB {self.path} has no video '{key}' (missing key '__meta__/{key}')")
            self._meta[key] = json.loads(raw)
        return self._meta[key]

    def num_frames(self, key: str) -> int:
        return int(self.meta(key)["num_frames"])

    def read_bytes(self, key: str, index: int) -> bytes:
        return self.read_bytes_many(key, [index])[0]

    def read_bytes_many(self, key: str, indices: Sequence[int]) -> list[bytes]:
        count = self.num_frames(key)
        for i in indices:
            self._check_index(key, i, count)
        with _lmdb_env(self.path, self._resolved, self.readahead).begin(
            buffers=False
        ) as txn:  # one transaction per clip
            values = [txn.get(f"{key}/{i:06d}".encode()) for i in indices]
        for i, value in zip(indices, values):
            if value is None:
                raise DataError(f"LMDB {self.path}: video '{key}' frame {i} is missing (key '{key}/{i:06d}')")
        return values  # type: ignore[return-value]

    def read_frames(self, key: str, indices: Sequence[int]) -> list[np.ndarray]:
        unique = sorted(set(indices))
        encoded = self.read_bytes_many(key, unique)
        decoded = {
            i: decode_image(data, where=self._where(key, i), min_side=self.decode_min_side)
            for i, data in zip(unique, encoded)
        }
        return [decoded[i] for i in indices]


def write_lmdb(
    path: str | os.PathLike[str],
    videos: Iterable[tuple[str, Sequence[bytes], tuple[int, int]]],
    *,
    map_size: int,
) -> int:
    """Write ``(key, encoded frames, (height, width))`` items into a new LMDB at ``path``.

    The caller picks the place (build-lmdb writes to a temporary name and renames when done).
    Returns the number of videos written.
    """
    import lmdb

    keys: list[str] = []
    env = lmdb.open(str(path), map_size=map_size, subdir=True, lock=True)
    try:
        for key, frames, (height, width) in videos:
            if not frames:
                raise DataError(f"video '{key}' has no frames to write")
            with env.begin(write=True) as txn:
                for i, data in enumerate(frames):
                    txn.put(f"{key}/{i:06d}".encode(), data)
                meta = {"num_frames": len(frames), "height": height, "width": width}
                txn.put(f"__meta__/{key}".encode(), json.dumps(meta).encode())
            keys.append(key)
        with env.begin(write=True) as txn:
            txn.put(b"__keys__", json.dumps(sorted(keys, key=natural_key)).encode())
        env.sync()
    finally:
        env.close()
    return len(keys)


class VideoFileStorage(VideoStorage):
    """``root/<video key>`` video files read with ``cv2.VideoCapture``.

    Requested frames are decoded in ascending order: consecutive or nearby indices by sequential
    ``grab``/``retrieve`` (exact), and jumps longer than ``seek_threshold`` frames by seeking,
    which is used only after a test seek on the file landed where asked (otherwise decoding
    stays sequential). A file that ends before a requested frame is reported as truncated.
    """

    def __init__(self, root: str | os.PathLike[str], *, seek_threshold: int = 64) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"video root folder not found: {self.root}")
        self.seek_threshold = seek_threshold
        self._counts: dict[str, int] = {}
        self._seek_ok: dict[str, bool] = {}

    def keys(self) -> list[str]:
        return sorted((p.name for p in self.root.iterdir() if p.is_file()), key=natural_key)

    def _open(self, key: str):
        import cv2

        path = self.root / key
        if not path.is_file():
            raise DataError(f"video '{key}': file not found: {path}")
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise DataError(f"video '{key}': OpenCV cannot open {path} (corrupt or unsupported)")
        return cap

    def num_frames(self, key: str) -> int:
        if key not in self._counts:
            import cv2

            cap = self._open(key)
            try:
                count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
                if count <= 0:  # container without a count: decode to find out
                    count = 0
                    while cap.grab():
                        count += 1
            finally:
                cap.release()
            if count <= 0:
                raise DataError(f"video '{key}': {self.root / key} contains no frames")
            self._counts[key] = count
        return self._counts[key]

    def _seek_reliable(self, cap, key: str) -> bool:
        import cv2

        if key not in self._seek_ok:
            target = self.num_frames(key) // 2
            ok = target > 0 and cap.set(cv2.CAP_PROP_POS_FRAMES, target)
            self._seek_ok[key] = bool(ok) and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == target
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        return self._seek_ok[key]

    def read_frames(self, key: str, indices: Sequence[int]) -> list[np.ndarray]:
        import cv2

        count = self.num_frames(key)
        for i in indices:
            self._check_index(key, i, count)
        wanted = sorted(set(indices))
        cap = self._open(key)
        frames: dict[int, np.ndarray] = {}
        try:
            seekable = (
                self._seek_reliable(cap, key) if len(wanted) > 1 or wanted[0] > self.seek_threshold else False
            )
            position = 0
            for target in wanted:
                if seekable and target - position > self.seek_threshold:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, target)
                    position = target
                while position < target:
                    if not cap.grab():
                        raise DataError(
                            f"video '{key}': {self.root / key} ended after {position} frames but frame {target} "
                            f"was requested (truncated file, or {count} frames reported)"
                        )
                    position += 1
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    raise DataError(
                        f"video '{key}': {self.root / key} ended after {position} frames but frame {target} "
                        f"was requested (truncated file, or {count} frames reported)"
                    )
                position += 1
                frames[target] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()
        return [frames[i] for i in indices]


def open_storage(kind: str, path: str | os.PathLike[str], **options: Any) -> VideoStorage:
    """Open a registered storage backend by name (``frames``, ``lmdb``, ``video``, or a package's)."""
    from effvid.data.registries import STORAGES

    return STORAGES.get(kind)(path, **options)
