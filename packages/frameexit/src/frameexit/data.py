"""Datasets from a :class:`~frameexit.config.DataConfig`."""

from __future__ import annotations

import functools

from effvid.data import (
    DataError,
    VideoClassificationDataset,
    build_transform,
    open_storage,
    read_activitynet,
    read_class_list,
    read_generic_list,
    read_kinetics_csv,
    read_split_file,
    uniform_indices,
)
from frameexit.config import DataConfig

__all__ = ["build_dataset"]


def _need(cfg: DataConfig, *keys: str) -> None:
    for key in keys:
        if getattr(cfg, key) is None:
            raise DataError(f"data.name '{cfg.name}' needs data.{key}")


def build_dataset(cfg: DataConfig, *, num_classes: int, train: bool = False) -> VideoClassificationDataset:
    """Records from the configured format over the configured storage; clips of ``num_frames``
    uniformly sampled frames (FrameExit's rule) in ``order``."""
    if sorted(cfg.order) != list(range(cfg.num_frames)):
        raise DataError(f"data.order {cfg.order} must be a permutation of 0..{cfg.num_frames - 1}")
    kwargs: dict[str, object] = {}
    if cfg.storage == "frames" and cfg.frame_pattern:
        kwargs["pattern"] = cfg.frame_pattern
    if cfg.storage == "lmdb" and cfg.lmdb_readahead:
        kwargs["readahead"] = True
    storage = open_storage(cfg.storage, cfg.path_frame, **kwargs)
    multi_label = False
    if cfg.name == "activitynet1.3":
        _need(cfg, "path_label", "path_classid")
        keys = read_split_file(cfg.path_split) if cfg.path_split else None
        records = read_activitynet(cfg.path_label, read_class_list(cfg.path_classid), keys=keys)
        multi_label = True
    elif cfg.name == "minikinetics":
        _need(cfg, "path_label", "path_classid")
        keys = read_split_file(cfg.path_split) if cfg.path_split else None
        records = read_kinetics_csv(cfg.path_label, read_class_list(cfg.path_classid), keys=keys)
    elif cfg.name == "list":
        _need(cfg, "path_label")
        records = read_generic_list(cfg.path_label, num_classes=num_classes)
        multi_label = any(len(r.labels) > 1 for r in records)
    else:
        raise DataError(f"data.name must be activitynet1.3, minikinetics or list, got '{cfg.name}'")
    if cfg.path_classid:
        found = len(read_class_list(cfg.path_classid))
        if found != num_classes:
            raise DataError(f"{cfg.path_classid} lists {found} classes but model.num_class is {num_classes}")
    return VideoClassificationDataset(
        records,
        storage,
        sampler=functools.partial(uniform_indices, n=cfg.num_frames),
        num_classes=num_classes,
        transform=build_transform(cfg.transform, train=train),
        multi_label=multi_label,
        order=cfg.order,
        on_missing=cfg.on_missing,
    )
