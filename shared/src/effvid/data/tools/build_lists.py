"""``build-lists``: list files from the official annotations.

* ``--format activitynet --annotations activity_net.v1-3.min.json --classes classes.txt``:
  ``split_<subset>.txt`` (``v_<id>.mp4`` keys, FrameExit's split file) for the subset;
* ``--format kinetics --annotations kinetics_val.csv --classes minik_classInd.txt``: the split
  file of the CSV's videos in the class list (Mini-Kinetics when the list has its 200 classes;
  videos of other classes are skipped and counted);
* any format with ``--frames DIR``: also ``<name>.txt`` in the generic ``key num_frames label...``
  form, counting each video's frames (a listed video without frames is an error).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from effvid.cli import build_command, run_cli
from effvid.config import MISSING, RunConfig, option
from effvid.data.errors import DataError
from effvid.data.formats import VideoRecord, read_activitynet, read_class_list, read_kinetics_csv
from effvid.data.storage import FrameFolderStorage
from effvid.io import atomic_write_text

__all__ = ["BUILD_LISTS", "main", "write_lists"]


@dataclass
class BuildListsConfig(RunConfig):
    format: str = option(MISSING, "activitynet | kinetics")
    annotations: str = option(MISSING, "ActivityNet JSON or Kinetics CSV")
    classes: str = option(MISSING, "class list, one name per line")
    out_dir: str = option(MISSING, "where to write the lists")
    subset: str = option("validation", "ActivityNet subset (training | validation)")
    name: str = option("val", "base name of the generic list")
    frames: str | None = option(None, "frame root: also write the generic list with frame counts")


def write_lists(cfg: BuildListsConfig) -> list[VideoRecord]:
    classes = read_class_list(cfg.classes)
    out = Path(cfg.out_dir)
    if cfg.format == "activitynet":
        records = read_activitynet(cfg.annotations, classes, subset=cfg.subset)
        split_name = f"split_{cfg.subset}.txt"
    elif cfg.format == "kinetics":
        records = read_kinetics_csv(cfg.annotations, classes, skip_other_classes=True)
        split_name = f"split_{cfg.name}.txt"
    else:
        raise DataError(f"format must be activitynet or kinetics, got '{cfg.format}'")
    atomic_write_text(out / split_name, "".join(r.key + "\n" for r in records))
    if cfg.frames:
        storage = FrameFolderStorage(cfg.frames)
        lines = [f"{r.key} {storage.num_frames(r.key)} {' '.join(map(str, r.labels))}\n" for r in records]
        atomic_write_text(out / f"{cfg.name}.txt", "".join(lines))
    return records


def _run(cfg: BuildListsConfig, run_dir: Path) -> None:
    records = write_lists(cfg)
    print(f"build-lists: {len(records)} videos listed in {cfg.out_dir}")


BUILD_LISTS = build_command(_run, BuildListsConfig, name="build-lists", doc=__doc__.split("\n\n")[0])


def main() -> None:
    run_cli(BUILD_LISTS, name="build-lists")
