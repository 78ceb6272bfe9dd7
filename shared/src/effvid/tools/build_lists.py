"""``build-lists``: list files from the official annotations.

* ``--format activitynet --annotations activity_net.v1-3.min.json``: ``split_<subset>.txt``
  (``v_<id>.mp4`` keys, FrameExit's split file) for the subset, and - unless ``--classes`` is
  given - ``classes.txt``, the class order of the authors' checkpoints (the ActivityNet crawler's
  list: the training subset's label names, sorted), derived from the JSON;
* ``--format kinetics --annotations kinetics_val.csv --classes minik_classInd.txt``: the split
  file of the CSV's videos in the class list (Mini-Kinetics when the list has its 200 classes;
  videos of other classes are skipped and counted);
* ``--format fcvid --annotations FCVID_VideoName_TrainTestSplit.txt --labels FCVID_Label.txt
  --subset test``: the FCVID subset's videos with all their labels (keys: the video file names);
* ``--format sports1m --annotations test_partition.txt [--ids test_minisports1m.txt]``: Sports-1M
  partition videos (``<id>.mp4`` keys), restricted to a list of YouTube ids for Mini-Sports1M;
* any format with ``--frames DIR`` (or an LMDB / video folder with ``--storage``): also
  ``<name>.txt`` in the generic ``key num_frames label...`` form, with each video's frame count
  read from the storage. A listed video that is not there is an error, or with
  ``--on_missing skip`` is left out, logged and counted (Sports-1M videos disappear from YouTube).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from effvid.cli import build_command
from effvid.config import MISSING, option
from effvid.data.errors import DataError
from effvid.data.formats import (
    VideoRecord,
    activitynet_classes,
    read_activitynet,
    read_class_list,
    read_fcvid_official,
    read_kinetics_csv,
    read_sports1m_partition,
    read_youtube_ids,
)
from effvid.data.storage import open_storage
from effvid.io import atomic_write_text

__all__ = ["BUILD_LISTS", "BuildListsConfig", "write_lists"]

log = logging.getLogger(__name__)

FORMATS = ("activitynet", "kinetics", "fcvid", "sports1m")


@dataclass
class BuildListsConfig:
    format: str = option(MISSING, " | ".join(FORMATS))
    annotations: str = option(
        MISSING, "ActivityNet JSON, Kinetics CSV, FCVID split file or Sports-1M partition file"
    )
    out_dir: str = option(MISSING, "where to write the lists")
    classes: str | None = option(
        None,
        "class list, one name per line (kinetics: required; activitynet: derived from the JSON and "
        "written to out_dir/classes.txt when not given; others: checks the count)",
    )
    labels: str | None = option(None, "fcvid: FCVID_Label.txt, the 0/1 label matrix")
    ids: str | None = option(None, "sports1m: keep only these YouTube ids (one URL or id per line)")
    subset: str | None = option(None, "activitynet: training | validation; fcvid: train | test")
    key_template: str = option("{id}.mp4", "sports1m: video key from the YouTube id")
    name: str = option("val", "base name of the lists")
    frames: str | None = option(None, "storage path: also write the generic list with frame counts")
    storage: str = option("frames", "kind of --frames: frames | lmdb | video")
    on_missing: str = option("raise", "a listed video absent from --frames: raise | skip (logged, counted)")


def _records(cfg: BuildListsConfig) -> tuple[list[VideoRecord], str]:
    classes = read_class_list(cfg.classes) if cfg.classes else None
    if cfg.format == "activitynet" and classes is None:
        classes = activitynet_classes(cfg.annotations)
        atomic_write_text(Path(cfg.out_dir) / "classes.txt", "".join(c + "\n" for c in classes))
        print(
            f"build-lists: wrote {Path(cfg.out_dir) / 'classes.txt'} ({len(classes)} classes, the checkpoints' order)"
        )
    if cfg.format == "kinetics" and classes is None:
        raise DataError(f"--classes is required for format '{cfg.format}'")
    if cfg.format == "activitynet":
        subset = cfg.subset or "validation"
        return read_activitynet(cfg.annotations, classes, subset=subset), f"split_{subset}.txt"
    if cfg.format == "kinetics":
        return read_kinetics_csv(cfg.annotations, classes, skip_other_classes=True), f"split_{cfg.name}.txt"
    if cfg.format == "fcvid":
        if not cfg.labels:
            raise DataError("--labels (FCVID_Label.txt) is required for format 'fcvid'")
        kw = {"num_classes": len(classes)} if classes else {}
        records = read_fcvid_official(cfg.annotations, cfg.labels, subset=cfg.subset or "test", **kw)
        return records, f"split_{cfg.name}.txt"
    if cfg.format == "sports1m":
        ids = read_youtube_ids(cfg.ids) if cfg.ids else None
        kw = {"num_classes": len(classes)} if classes else {}
        records = read_sports1m_partition(cfg.annotations, ids=ids, key_template=cfg.key_template, **kw)
        return records, f"split_{cfg.name}.txt"
    raise DataError(f"format must be one of {', '.join(FORMATS)}; got '{cfg.format}'")


def write_lists(cfg: BuildListsConfig) -> tuple[list[VideoRecord], int]:
    """Write the split file (and the generic list with ``frames``); returns the records listed and
    the number left out because their frames are missing (``on_missing="skip"``)."""
    if cfg.on_missing not in ("raise", "skip"):
        raise DataError(f"on_missing must be raise or skip, got '{cfg.on_missing}'")
    records, split_name = _records(cfg)
    out, left_out = Path(cfg.out_dir), 0
    if cfg.frames:
        storage = open_storage(cfg.storage, cfg.frames)
        kept, lines = [], []
        for r in records:
            if any(ch.isspace() for ch in r.key):
                raise DataError(
                    f"video key '{r.key}' contains whitespace, which the generic list "
                    "'key num_frames label...' cannot hold; rename the video and its frame folder"
                )
            try:
                count = storage.num_frames(r.key)
            except DataError as exc:
                if cfg.on_missing == "raise":
                    raise DataError(f"listed video '{r.key}' has no frames in {cfg.frames}: {exc}") from None
                log.warning("leaving out video '%s': %s", r.key, exc)
                continue
            kept.append(r)
            lines.append(f"{r.key} {count} {' '.join(map(str, r.labels))}\n")
        left_out = len(records) - len(kept)
        if left_out:
            log.warning("left out %d of %d listed videos missing from %s", left_out, len(records), cfg.frames)
        if not kept:
            raise DataError(f"none of the {len(records)} listed videos is in {cfg.frames}")
        records = kept
        atomic_write_text(out / f"{cfg.name}.txt", "".join(lines))
    atomic_write_text(out / split_name, "".join(r.key + "\n" for r in records))
    return records, left_out


def _run(cfg: BuildListsConfig, _run_dir: None) -> None:
    records, left_out = write_lists(cfg)
    note = f"; {left_out} listed videos left out, their frames are missing (see the log)" if left_out else ""
    print(f"build-lists: {len(records)} videos listed in {cfg.out_dir}{note}")


BUILD_LISTS = build_command(
    _run, BuildListsConfig, name="build-lists", doc=__doc__.split("\n\n")[0], run_dir=False
)
