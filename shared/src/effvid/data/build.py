"""Datasets from a :class:`~effvid.data.config.DataConfig`, through the registries.

The built-in entries registered here: storages ``frames``, ``lmdb``, ``video``; formats
``activitynet1.3``, ``kinetics``, ``fcvid``, ``fcvid_adafocus``, ``minisports1m``, ``list``,
``cityscapes``; samplers ``uniform``, ``segments``, ``dense``.
"""

from __future__ import annotations

import functools

from effvid.data.config import DataConfig
from effvid.data.datasets import SegmentationClipDataset, VideoClassificationDataset
from effvid.data.errors import DataError
from effvid.data.formats import (
    CITYSCAPES_TRAIN_IDS,
    read_activitynet,
    read_cityscapes,
    read_class_list,
    read_fcvid,
    read_generic_list,
    read_kinetics_csv,
    read_minisports1m,
    read_split_file,
)
from effvid.data.frame_sampling import dense_clip_indices, segment_indices, uniform_indices
from effvid.data.registries import FORMATS, FRAME_SAMPLERS, STORAGES, FrameSampler, Listing
from effvid.data.storage import FrameFolderStorage, LmdbStorage, VideoFileStorage, VideoStorage
from effvid.data.transforms import build_transform

__all__ = ["build_dataset", "build_frame_sampler", "open_configured_storage"]


# ----------------------------------------------------------------------------- storages


STORAGES.register("frames", FrameFolderStorage)
STORAGES.register("lmdb", LmdbStorage)
STORAGES.register("video", VideoFileStorage)


def open_configured_storage(cfg: DataConfig) -> VideoStorage:
    """The storage ``cfg.storage`` names, with the options its class declares read from ``cfg``."""
    kind = STORAGES.get(cfg.storage)
    options = {arg: getattr(cfg, key) for arg, key in getattr(kind, "config_options", {}).items()}
    storage = kind(cfg.path_frame, **options)
    if cfg.reduced_decode:
        storage.decode_min_side = cfg.transform.resize
    return storage


# ----------------------------------------------------------------------------- formats


def _need(cfg: DataConfig, *keys: str) -> None:
    for key in keys:
        if getattr(cfg, key) is None:
            raise DataError(f"data.format '{cfg.format}' needs data.{key}")


def _keys(cfg: DataConfig) -> list[str] | None:
    return read_split_file(cfg.path_split) if cfg.path_split else None


@FORMATS.register("activitynet1.3")
def _activitynet(cfg: DataConfig, num_classes: int) -> Listing:
    _need(cfg, "path_label", "path_classid")
    classes = read_class_list(cfg.path_classid)  # type: ignore[arg-type]
    records = read_activitynet(cfg.path_label, classes, subset=cfg.subset or "validation", keys=_keys(cfg))  # type: ignore[arg-type]
    return Listing(records, multi_label=True)


@FORMATS.register("kinetics")
def _kinetics(cfg: DataConfig, num_classes: int) -> Listing:
    _need(cfg, "path_label", "path_classid")
    classes = read_class_list(cfg.path_classid)  # type: ignore[arg-type]
    return Listing(read_kinetics_csv(cfg.path_label, classes, keys=_keys(cfg)))  # type: ignore[arg-type]


FORMATS.register("minikinetics", _kinetics)  # Mini-Kinetics is Kinetics' CSV restricted by a split file


@FORMATS.register("fcvid")
def _fcvid(cfg: DataConfig, num_classes: int) -> Listing:
    _need(cfg, "path_label")
    return Listing(read_fcvid(cfg.path_label), multi_label=True)  # type: ignore[arg-type]


@FORMATS.register("fcvid_adafocus")
def _fcvid_adafocus(cfg: DataConfig, num_classes: int) -> Listing:
    _need(cfg, "path_label")
    return Listing(read_fcvid(cfg.path_label, style="adafocus"), multi_label=True)  # type: ignore[arg-type]


@FORMATS.register("minisports1m")
def _minisports1m(cfg: DataConfig, num_classes: int) -> Listing:
    _need(cfg, "path_label")
    return Listing(read_minisports1m(cfg.path_label))  # type: ignore[arg-type]


@FORMATS.register("list")
def _generic(cfg: DataConfig, num_classes: int) -> Listing:
    _need(cfg, "path_label")
    records = read_generic_list(cfg.path_label, num_classes=num_classes)  # type: ignore[arg-type]
    return Listing(records, multi_label=any(len(r.labels) > 1 for r in records))


@FORMATS.register("cityscapes")
def _cityscapes(cfg: DataConfig, num_classes: int) -> Listing:
    records, storage = read_cityscapes(cfg.path_frame, cfg.subset or "val")
    return Listing(records, task="segmentation", storage=storage, mask_map=CITYSCAPES_TRAIN_IDS)


# ----------------------------------------------------------------------------- frame samplers


@FRAME_SAMPLERS.register("uniform")
def _uniform(cfg: DataConfig, train: bool) -> FrameSampler:
    return functools.partial(uniform_indices, n=cfg.num_frames)


@FRAME_SAMPLERS.register("segments")
def _segments(cfg: DataConfig, train: bool) -> FrameSampler:
    return functools.partial(segment_indices, n=cfg.num_frames, train=train)


@FRAME_SAMPLERS.register("dense")
def _dense(cfg: DataConfig, train: bool) -> FrameSampler:
    return functools.partial(
        dense_clip_indices,
        clip_len=cfg.num_frames,
        frame_interval=cfg.frame_interval,
        num_clips=cfg.num_clips,
        train=train,
    )


def build_frame_sampler(cfg: DataConfig, *, train: bool) -> FrameSampler:
    return FRAME_SAMPLERS.get(cfg.sampler)(cfg, train)


def _sampled_positions(cfg: DataConfig) -> int:
    return cfg.num_frames * (cfg.num_clips if cfg.sampler == "dense" else 1)


# ----------------------------------------------------------------------------- datasets


def build_dataset(
    cfg: DataConfig, *, num_classes: int, train: bool = False
) -> VideoClassificationDataset | SegmentationClipDataset:
    """Records from the configured format over the configured storage, frames from the configured
    sampler (in ``cfg.order`` when given), prepared by the configured transform style.

    Classification formats give a :class:`VideoClassificationDataset`, ``cityscapes`` a
    :class:`SegmentationClipDataset` (clips of ``num_frames`` frames ``frame_interval`` apart,
    ending at the annotated frame).
    """
    listing = FORMATS.get(cfg.format)(cfg, num_classes)
    if cfg.path_classid:
        found = len(read_class_list(cfg.path_classid))
        if found != num_classes:
            raise DataError(f"{cfg.path_classid} lists {found} classes but the model has {num_classes}")
    storage = listing.storage if listing.storage is not None else open_configured_storage(cfg)
    transform = build_transform(cfg.transform, train=train)
    if listing.task == "segmentation":
        if cfg.reduced_decode:
            raise DataError(
                f"data.reduced_decode: format '{cfg.format}' pairs frames with full-size label maps; "
                "reduced-size decoding applies to classification formats only"
            )
        return SegmentationClipDataset(
            listing.records,
            storage,
            clip_len=cfg.num_frames,
            distance=cfg.frame_interval,
            transform=transform,
            mask_map=listing.mask_map,
        )
    if cfg.order is not None and len(cfg.order) != _sampled_positions(cfg):
        raise DataError(
            f"data.order has {len(cfg.order)} positions but the sampler takes {_sampled_positions(cfg)}"
        )
    return VideoClassificationDataset(
        listing.records,
        storage,
        sampler=build_frame_sampler(cfg, train=train),
        num_classes=num_classes,
        transform=transform,
        multi_label=listing.multi_label,
        order=cfg.order,
        on_missing=cfg.on_missing,
    )
