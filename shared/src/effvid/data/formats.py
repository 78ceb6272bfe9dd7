"""Readers for the standard datasets' list and annotation files -> :class:`VideoRecord` lists.

Formats (facts from the original repositories):

* generic TSN / AR-Net / VideoIQ lists: ``path num_frames label [label ...]`` (whitespace), or
  ``path start end label ...`` (VideoIQ: ``columns="start_end"``), with ``sep`` for ``,``/``;``;
* ActivityNet v1.3 ``activity_net.v1-3.min.json`` + ``classes.txt``: keys ``v_<youtube id>.mp4``,
  every annotated label of a video (multi-label);
* Kinetics CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``): keys
  ``<ytid>_<start:06d>_<end:06d>.mp4``; Mini-Kinetics = these rows restricted to a 200-class list
  (and the AR-Net/AdaFuse split file);
* FCVID (239 classes) and Mini-Sports1M (487 classes): the lists the VideoIQ/AdaFocus authors used
  (generic lists with their separators), and the official annotations: FCVID's
  ``FCVID_VideoName_TrainTestSplit.txt`` (``path train|test``) + ``FCVID_Label.txt`` (one row of 239
  0/1 values per video, same order); Sports-1M's ``train_partition.txt``/``test_partition.txt``
  (``URL label,label...``) + ``labels.txt`` (487 names), restricted to a subset of YouTube ids
  (Mini-Sports1M: the AdaMML id lists);
* Cityscapes sequences: see :func:`read_cityscapes`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effvid.data.errors import DataError
from effvid.data.storage import FileListStorage

__all__ = [
    "activitynet_classes",
    "CITYSCAPES_TRAIN_IDS",
    "SegmentationRecord",
    "VideoRecord",
    "kinetics_key",
    "read_activitynet",
    "read_cityscapes",
    "read_class_list",
    "read_fcvid",
    "read_fcvid_official",
    "read_generic_list",
    "read_kinetics_csv",
    "read_minisports1m",
    "read_split_file",
    "read_sports1m_partition",
    "read_youtube_ids",
    "youtube_id",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoRecord:
    """One video of a list: its storage key, frame count if the list gives one, class indices."""

    key: str
    num_frames: int | None
    labels: tuple[int, ...]


def _read_lines(path: str | os.PathLike[str], what: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} not found: {p}")
    return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_class_list(path: str | os.PathLike[str]) -> list[str]:
    """One class name per line; line order is the class index."""
    names = _read_lines(path, "class list")
    if not names:
        raise DataError(f"class list {path} is empty")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"class list {path}: class '{name}' appears twice")
        seen.add(name)
    return names


def read_split_file(path: str | os.PathLike[str]) -> list[str]:
    """One video key per line (FrameExit's ``split_val_*.txt``)."""
    keys = _read_lines(path, "split file")
    if not keys:
        raise DataError(f"split file {path} lists no video")
    return keys


def _class_index(classes: Sequence[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(classes)}


def read_generic_list(
    path: str | os.PathLike[str],
    *,
    sep: str | None = None,
    columns: str = "num_frames",
    num_classes: int | None = None,
) -> list[VideoRecord]:
    """``path num_frames label...`` (``columns="num_frames"``) or ``path start end label...``
    (``columns="start_end"``, frame count = end - start + 1). ``sep=None`` splits on whitespace."""
    if columns not in ("num_frames", "start_end"):
        raise ValueError(f"columns must be 'num_frames' or 'start_end', got '{columns}'")
    first_label = 2 if columns == "num_frames" else 3
    records = []
    for lineno, line in enumerate(_read_lines(path, "list file"), 1):
        fields = [f.strip() for f in (line.split(sep) if sep else line.split())]
        if len(fields) < first_label + 1:
            raise DataError(
                f"{path}:{lineno}: expected 'path {'num_frames' if first_label == 2 else 'start end'} label...', got '{line}'"
            )
        try:
            numbers = [int(f) for f in fields[1:]]
        except ValueError:
            raise DataError(
                f"{path}:{lineno}: frame counts and labels must be integers, got '{line}'"
            ) from None
        count = numbers[0] if first_label == 2 else numbers[1] - numbers[0] + 1
        labels = tuple(numbers[first_label - 1 :])
        if num_classes is not None and any(not 0 <= lab < num_classes for lab in labels):
            raise DataError(
                f"{path}:{lineno}: video '{fields[0]}' has a label outside [0, {num_classes}): {labels}"
            )
        if count < 1:
            raise DataError(f"{path}:{lineno}: video '{fields[0]}' has {count} frames")
        records.append(VideoRecord(fields[0], count, labels))
    if not records:
        raise DataError(f"list file {path} lists no video")
    return records


FCVID_NUM_CLASSES = 239
SPORTS1M_NUM_CLASSES = 487


def read_fcvid(path: str | os.PathLike[str], *, style: str = "videoiq") -> list[VideoRecord]:
    """FCVID lists: VideoIQ's ``path start end label...`` (spaces) or AdaFocus's
    ``dir,num_frames,label[,label...]`` (``style="adafocus"``). 239 classes, multi-label."""
    if style == "videoiq":
        return read_generic_list(path, columns="start_end", num_classes=FCVID_NUM_CLASSES)
    if style == "adafocus":
        return read_generic_list(path, sep=",", num_classes=FCVID_NUM_CLASSES)
    raise ValueError(f"FCVID list style must be videoiq or adafocus, got '{style}'")


def read_minisports1m(path: str | os.PathLike[str]) -> list[VideoRecord]:
    """Mini-Sports1M (VideoIQ): ``path;start;end;label``, 487 classes."""
    return read_generic_list(path, sep=";", columns="start_end", num_classes=SPORTS1M_NUM_CLASSES)


def read_fcvid_official(
    split_path: str | os.PathLike[str],
    label_path: str | os.PathLike[str],
    *,
    subset: str = "test",
    key: str = "name",
    num_classes: int = FCVID_NUM_CLASSES,
) -> list[VideoRecord]:
    """FCVID's official annotations: ``FCVID_VideoName_TrainTestSplit.txt`` (``<video path>
    train|test`` per line) and ``FCVID_Label.txt`` (row i: the 0/1 labels of line i's video, one
    column per class, whitespace-separated). Returns the ``subset`` videos with every positive
    class; the key is the video file's name (``key="name"``, how ``extract-frames`` names frame
    folders) or its path as listed (``key="path"``)."""
    if subset not in ("train", "test"):
        raise ValueError(f"FCVID subset must be train or test, got '{subset}'")
    if key not in ("name", "path"):
        raise ValueError(f"key must be 'name' or 'path', got '{key}'")
    split_lines = _read_lines(split_path, "FCVID split file")
    label_lines = _read_lines(label_path, "FCVID label file")
    if len(split_lines) != len(label_lines):
        raise DataError(
            f"FCVID: {split_path} lists {len(split_lines)} videos but {label_path} has "
            f"{len(label_lines)} label rows (expected one row per video, in the same order)"
        )
    records, seen = [], {}
    for lineno, (line, row) in enumerate(zip(split_lines, label_lines), 1):
        fields = line.rsplit(None, 1)
        if len(fields) != 2 or fields[1] not in ("train", "test"):
            raise DataError(f"{split_path}:{lineno}: expected '<video path> train|test', got '{line}'")
        try:
            values = [float(v) for v in row.split()]
        except ValueError:
            raise DataError(
                f"{label_path}:{lineno}: expected {num_classes} numbers 0/1, got '{row[:80]}'"
            ) from None
        if len(values) != num_classes or any(v not in (0.0, 1.0) for v in values):
            raise DataError(
                f"{label_path}:{lineno}: expected {num_classes} values, each 0 or 1, got {len(values)} "
                f"values {sorted(set(values))[:4]}"
            )
        if fields[1] != subset:
            continue
        labels = tuple(i for i, v in enumerate(values) if v == 1.0)
        name = fields[0] if key == "path" else Path(fields[0]).name
        if not labels:
            raise DataError(f"{label_path}:{lineno}: video '{fields[0]}' has no positive label")
        if name in seen:
            raise DataError(
                f"{split_path}:{lineno}: video key '{name}' also names line {seen[name]}; use key='path'"
            )
        seen[name] = lineno
        records.append(VideoRecord(name, None, labels))
    if not records:
        raise DataError(f"{split_path}: no video in subset '{subset}'")
    return records


_YOUTUBE_ID = re.compile(r"(?:[?&]v=|youtu\.be/|/embed/|/shorts/)([A-Za-z0-9_-]{11})(?![A-Za-z0-9_-])")
_BARE_ID = re.compile(r"[A-Za-z0-9_-]{11}")


def youtube_id(text: str) -> str | None:
    """The video id of a YouTube URL (``watch?v=``, ``youtu.be/``, ``embed/``) or of a bare
    11-character id; ``None`` if there is none."""
    if _BARE_ID.fullmatch(text):
        return text
    match = _YOUTUBE_ID.search(text)
    return match.group(1) if match else None


def read_youtube_ids(path: str | os.PathLike[str]) -> list[str]:
    """A subset file: one video per line, its first field (whitespace or comma separated) a YouTube
    URL or id; further fields are ignored. Used for Mini-Sports1M's id lists."""
    ids, seen = [], set()
    for lineno, line in enumerate(_read_lines(path, "YouTube id list"), 1):
        first = re.split(r"[\s,;]+", line, maxsplit=1)[0]
        vid = youtube_id(first)
        if vid is None:
            raise DataError(
                f"{path}:{lineno}: expected a YouTube URL or 11-character id first, got '{first}'"
            )
        if vid not in seen:
            seen.add(vid)
            ids.append(vid)
    if not ids:
        raise DataError(f"YouTube id list {path} lists no video")
    return ids


def read_sports1m_partition(
    path: str | os.PathLike[str],
    *,
    ids: Sequence[str] | None = None,
    key_template: str = "{id}.mp4",
    num_classes: int = SPORTS1M_NUM_CLASSES,
) -> list[VideoRecord]:
    """Sports-1M's official ``train_partition.txt`` / ``test_partition.txt``: ``<YouTube URL>
    <label,label,...>`` per line (indices into ``labels.txt``). ``ids`` restricts and orders the
    videos (Mini-Sports1M). A URL listed twice gets the union of its labels (logged). Keys are
    ``key_template.format(id=...)``, the downloaded file's name."""
    labels_of: dict[str, list[int]] = {}
    repeated = 0
    for lineno, line in enumerate(_read_lines(path, "Sports-1M partition file"), 1):
        fields = line.split()
        vid = youtube_id(fields[0]) if len(fields) == 2 else None
        if vid is None:
            raise DataError(f"{path}:{lineno}: expected '<YouTube URL> <label,label,...>', got '{line}'")
        try:
            labels = [int(v) for v in fields[1].split(",") if v]
        except ValueError:
            raise DataError(f"{path}:{lineno}: labels must be integers, got '{fields[1]}'") from None
        if not labels or any(not 0 <= lab < num_classes for lab in labels):
            raise DataError(
                f"{path}:{lineno}: video '{vid}' needs labels in [0, {num_classes}), got {labels}"
            )
        if vid in labels_of:
            repeated += 1
            log.info("%s:%d: video '%s' listed again; merging its labels", path, lineno, vid)
        labels_of.setdefault(vid, []).extend(labels)
    if repeated:
        log.warning("%s: %d videos are listed more than once; their labels were merged", path, repeated)
    order = list(ids) if ids is not None else list(labels_of)
    records = []
    for vid in order:
        if vid not in labels_of:
            raise DataError(f"{path}: video '{vid}' of the subset is not in the partition file")
        records.append(VideoRecord(key_template.format(id=vid), None, tuple(sorted(set(labels_of[vid])))))
    if not records:
        raise DataError(f"{path}: no video listed")
    return records


def _activitynet_database(json_path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(json_path)
    if not p.is_file():
        raise DataError(f"ActivityNet annotation file not found: {p}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))["database"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise DataError(f"{p}: expected ActivityNet JSON with a 'database' object ({exc})") from None


def activitynet_classes(json_path: str | os.PathLike[str]) -> list[str]:
    """The class list in the order FrameExit's (and most ActivityNet) checkpoints use.

    It is the ActivityNet crawler's ``classes.txt`` (antran89/ActivityNet,
    ``Crawler/generate_activitynet_classes.py``): ``numpy.unique`` of the labels of the *training*
    subset, i.e. the distinct names sorted by code point - derivable from the official JSON.
    """
    database = _activitynet_database(json_path)
    names = {
        a["label"]
        for v in database.values()
        if v.get("subset") == "training"
        for a in v.get("annotations", [])
    }
    if not names:
        raise DataError(f"{json_path}: no annotated training video to take the class names from")
    return sorted(names)


def read_activitynet(
    json_path: str | os.PathLike[str],
    classes: Sequence[str],
    *,
    subset: str = "validation",
    keys: Sequence[str] | None = None,
) -> list[VideoRecord]:
    """ActivityNet v1.3: every video of ``subset`` (or the ``keys`` of a split file, ``v_<id>.mp4``)
    with all its annotated labels."""
    p = Path(json_path)
    database = _activitynet_database(p)
    index = _class_index(classes)
    wanted = (
        list(keys)
        if keys is not None
        else [f"v_{vid}.mp4" for vid, v in database.items() if v.get("subset") == subset]
    )
    records = []
    for key in wanted:
        vid = re.sub(r"^v_", "", key)
        vid = re.sub(r"\.mp4$", "", vid)
        if vid not in database:
            raise DataError(f"{p}: video '{key}' from the split is not in the annotation database")
        labels = []
        for ann in database[vid].get("annotations", []):
            name = ann["label"]
            if name not in index:
                raise DataError(f"{p}: video '{key}' has label '{name}', which is not in the class list")
            if index[name] not in labels:
                labels.append(index[name])
        if not labels:
            raise DataError(f"{p}: video '{key}' has no annotated label")
        records.append(VideoRecord(key, None, tuple(sorted(labels))))
    if not records:
        raise DataError(f"{p}: no video in subset '{subset}'")
    return records


def kinetics_key(youtube_id: str, start: str, end: str) -> str:
    """``<ytid>_<start:06d>_<end:06d>.mp4`` as the Kinetics downloaders and FrameExit name videos."""
    return f"{youtube_id}_{start.split('.')[0].zfill(6)}_{end.split('.')[0].zfill(6)}.mp4"


def read_kinetics_csv(
    csv_path: str | os.PathLike[str],
    classes: Sequence[str],
    *,
    keys: Sequence[str] | None = None,
    skip_other_classes: bool = False,
) -> list[VideoRecord]:
    """Kinetics CSV rows as records. ``keys`` (a split file) restricts and orders the videos.

    A label outside ``classes`` is an error, unless ``skip_other_classes`` (building Mini-Kinetics
    from the Kinetics-400 CSV), in which case each skipped row is logged and the count reported.
    """
    p = Path(csv_path)
    if not p.is_file():
        raise DataError(f"Kinetics CSV not found: {p}")
    index = _class_index(classes)
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        needed = {"label", "youtube_id", "time_start", "time_end"}
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise DataError(f"{p}: expected a header with {sorted(needed)}, got {reader.fieldnames}")
        rows = {kinetics_key(r["youtube_id"], r["time_start"], r["time_end"]): r["label"] for r in reader}
    order = list(keys) if keys is not None else list(rows)
    records, skipped = [], 0
    for key in order:
        if key not in rows:
            raise DataError(f"{p}: video '{key}' from the split is not in the CSV")
        label = rows[key]
        if label not in index:
            if skip_other_classes:
                skipped += 1
                log.info("skipping video '%s': label '%s' is not in the class list", key, label)
                continue
            raise DataError(f"{p}: video '{key}' has label '{label}', which is not in the class list")
        records.append(VideoRecord(key, None, (index[label],)))
    if skipped:
        log.warning(
            "%s: skipped %d of %d videos whose label is not in the class list", p, skipped, len(order)
        )
    if not records:
        raise DataError(f"{p}: no video left")
    return records


# ----------------------------------------------------------------------------- Cityscapes

#: Cityscapes labelIds -> the 19 training ids (others: 255, ignored).
CITYSCAPES_TRAIN_IDS = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}


@dataclass(frozen=True)
class SegmentationRecord:
    """A clip whose frame ``labeled_index`` has the per-pixel annotation ``mask_path``."""

    key: str
    num_frames: int
    labeled_index: int
    mask_path: Path


def read_cityscapes(
    root: str | os.PathLike[str], split: str = "val", *, snippet: int = 30, labeled: int = 19
) -> tuple[list[SegmentationRecord], FileListStorage]:
    """Cityscapes sequences: for every ``gtFine/<split>/<city>/*_gtFine_labelIds.png`` the snippet of
    ``leftImg8bit_sequence/<split>/<city>/`` frames around it (the labelled frame is the 20th of 30).

    Returns the records and a storage whose video ``<city>_<seq>_<frame>`` is that snippet.
    """
    root = Path(root)
    gt_dir = root / "gtFine" / split
    seq_dir = root / "leftImg8bit_sequence" / split
    for d in (gt_dir, seq_dir):
        if not d.is_dir():
            raise DataError(f"Cityscapes folder not found: {d}")
    records, videos = [], {}
    for mask in sorted(gt_dir.glob("*/*_gtFine_labelIds.png")):
        city, seq, frame = mask.name.split("_")[:3]
        first = int(frame) - labeled
        frames = [seq_dir / city / f"{city}_{seq}_{first + j:06d}_leftImg8bit.png" for j in range(snippet)]
        missing = [f for f in frames if not f.is_file()]
        if missing:
            raise DataError(f"Cityscapes: labelled frame {mask.name} lacks snippet frame {missing[0]}")
        key = f"{city}_{seq}_{frame}"
        videos[key] = frames
        records.append(SegmentationRecord(key, snippet, labeled, mask))
    if not records:
        raise DataError(f"Cityscapes: no *_gtFine_labelIds.png under {gt_dir}")
    return records, FileListStorage(videos)
