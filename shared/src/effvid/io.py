"""Atomic file writes: an output either appears whole or not at all.

Every writer goes through :func:`atomic_path`, which hands out a temporary name in the target's
own directory (so the final ``os.replace`` is a rename on one filesystem) and only moves it into
place when the block finishes without an exception.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_dir",
    "atomic_path",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_jsonl",
    "atomic_write_text",
    "strict_json",
]


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _as_created(path: Path, *, directory: bool) -> None:
    """Give a temporary file/dir (mkstemp: 0600, mkdtemp: 0700) the mode a plain ``open`` /
    ``mkdir`` would have given it under the user's umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path; on success it replaces ``path``, on error it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _as_created(tmp, directory=False)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory that is renamed to ``path`` when the block succeeds.

    ``path`` must not exist yet (a finished directory is never overwritten); a failed block
    leaves nothing behind, so a half-written folder can never be mistaken for a finished one.
    """
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"refusing to overwrite existing directory {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _as_created(tmp, directory=True)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def strict_json(obj: Any, *, where: str, indent: int | None = None) -> str:
    """``json.dumps`` that refuses NaN and infinities (they are not JSON), naming the first bad key."""
    try:
        return json.dumps(obj, indent=indent, allow_nan=False)
    except ValueError:
        raise ValueError(
            f"{where}: value at {_first_nonfinite_path(obj) or '?'} is not finite; refusing to write it"
        ) from None


def _first_nonfinite_path(obj: Any, path: str = "") -> str | None:
    if isinstance(obj, float) and not math.isfinite(obj):
        return path or "(top level)"
    if isinstance(obj, dict):
        items: Any = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = _first_nonfinite_path(value, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> None:
    """Write ``obj`` as strict JSON (no NaN/Infinity), atomically."""
    atomic_write_text(path, strict_json(obj, where=str(path), indent=indent) + "\n")


def atomic_write_jsonl(path: str | os.PathLike[str], rows: Any) -> None:
    """One strict-JSON object per line, atomically (``predictions.jsonl``)."""
    text = "".join(strict_json(r, where=f"{path} line {i + 1}") + "\n" for i, r in enumerate(rows))
    atomic_write_text(path, text)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
