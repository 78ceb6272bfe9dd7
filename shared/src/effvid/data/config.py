"""The data section every command embeds: what to read, from where, which frames, how prepared.

    --data.format activitynet1.3 --data.storage lmdb --data.path_frame /data/anet.lmdb
    --data.sampler segments --data.num_frames 8 --data.transform.style standard

``format``, ``storage``, ``sampler`` and ``transform.style`` name entries of the registries in
:mod:`effvid.data.registries` (a package adds its own); a wrong name is a configuration error
listing the valid ones when the config loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from effvid.config import MISSING, check_choice, option
from effvid.data.registries import FORMATS, FRAME_SAMPLERS, STORAGES
from effvid.data.transforms import TransformConfig

__all__ = ["DataConfig"]


@dataclass
class DataConfig:
    format: str = option(
        "list",
        "list format: activitynet1.3 | kinetics (also Mini-Kinetics) | fcvid | fcvid_adafocus | "
        "minisports1m | list (generic 'key num_frames label...') | cityscapes",
    )
    storage: str = option(
        "frames", "frames (a folder of frame folders) | lmdb | video (a folder of video files)"
    )
    path_frame: str = option(
        MISSING, "frame root folder, LMDB or video folder (cityscapes: the dataset root)"
    )
    path_split: str | None = option(None, "split file of video keys to keep (activitynet1.3, kinetics)")
    path_label: str | None = option(None, "ActivityNet JSON, Kinetics CSV, or the list file")
    path_classid: str | None = option(None, "class names, one per line (the line is the class index)")
    subset: str | None = option(
        None, "annotation subset (activitynet1.3: training | validation; cityscapes: train | val)"
    )
    frame_pattern: str | None = option(
        None, "storage frames: glob of frame file names (default: jpg/jpeg/png)"
    )
    lmdb_readahead: bool = option(
        False, "storage lmdb: let the kernel read ahead (faster from a cold cache; see benchmarks/data.md)"
    )
    sampler: str = option("uniform", "frame sampler: uniform (FrameExit) | segments (TSN) | dense (clips)")
    num_frames: int = option(10, "frames per video (dense: frames per clip)")
    frame_interval: int = option(
        1, "sampler dense: step between frames; cityscapes: distance between clip frames"
    )
    num_clips: int = option(1, "sampler dense: clips per video")
    order: list[int] | None = option(None, "processing order over the sampled frames (a permutation)")
    batch_size: int | None = option(
        16,
        "videos per batch (training: the total over all processes); null in an inference command: "
        "1 on a CPU, 16 on a GPU",
    )
    num_workers: int = option(0, "loader worker processes (inference: decoding threads)")
    reduced_decode: bool = option(
        False,
        "decode a JPEG at 1/2, 1/4 or 1/8 size (libjpeg DCT scaling) when its short side stays >= "
        "transform.resize: less decoding work, pixels differ slightly from a full decode",
    )
    on_missing: str = option("raise", "a listed video missing from storage: raise | skip (logged, counted)")
    transform: TransformConfig = option(doc="frame preprocessing", default_factory=TransformConfig)

    def __post_init__(self) -> None:
        FORMATS.check(self.format, key="data.format")
        STORAGES.check(self.storage, key="data.storage")
        FRAME_SAMPLERS.check(self.sampler, key="data.sampler")
        check_choice("data.on_missing", self.on_missing, ("raise", "skip"))
        for name in ("num_frames", "frame_interval", "num_clips", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.order is not None and sorted(self.order) != list(range(len(self.order))):
            raise ValueError(f"data.order {self.order} must be a permutation of 0..{len(self.order) - 1}")

    def batch_size_on(self, device: object) -> int:
        """The inference batch size: ``batch_size``, or when it is null the per-device default: 1 on a
        CPU (ResNet-50's convolutions are compute-bound there and batch 16 was 0.81x as fast as
        batch 1, benchmarks/frameexit.md), 16 on a GPU, which needs batches to be used well."""
        if self.batch_size is not None:
            return self.batch_size
        import torch

        return 1 if torch.device(device).type == "cpu" else 16  # type: ignore[arg-type]

    @property
    def train_batch_size(self) -> int:
        """``batch_size`` for training, which has no per-device default."""
        if self.batch_size is None:
            raise ValueError(
                "data.batch_size is null: training needs a number (the per-device default is for inference)"
            )
        return self.batch_size
