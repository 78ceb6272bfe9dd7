"""Command schemas (the keys of the original configs where they make sense)."""

from __future__ import annotations

from dataclasses import dataclass

from effvid.config import MISSING, RunConfig, option
from effvid.data import FRAMEEXIT_ORDER, TransformConfig
from effvid.engine import EngineConfig

__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "DemoConfig",
    "InferConfig",
    "ModelConfig",
    "SweepConfig",
    "TrainConfig",
]


def _frameexit_transform() -> TransformConfig:
    return TransformConfig(style="frameexit", resize=224, crop=224, train_crop="center", flip=False)


@dataclass
class DataConfig:
    name: str = option(
        "activitynet1.3",
        "label format: activitynet1.3 | minikinetics | list (generic 'key num_frames label...')",
    )
    storage: str = option("frames", "frames (a folder of frame folders) | lmdb | video")
    path_frame: str = option(MISSING, "frame root folder, LMDB or video folder")
    path_split: str | None = option(None, "split file of video keys (activitynet1.3, minikinetics)")
    path_label: str | None = option(None, "ActivityNet JSON, Kinetics CSV, or the generic list")
    path_classid: str | None = option(None, "class names, one per line (the line is the class index)")
    frame_pattern: str | None = option(None, "glob of frame file names (the original read only *.jpeg)")
    lmdb_readahead: bool = option(
        False, "storage lmdb: let the kernel read ahead (faster from a cold cache; see benchmarks/data.md)"
    )
    num_frames: int = option(10, "frames sampled uniformly per video (T)")
    order: list[int] = option(
        doc="processing order over the sampled frames", default_factory=lambda: list(FRAMEEXIT_ORDER)
    )
    batch_size: int = option(16, "videos advanced together")
    num_workers: int = option(0, "decoding threads (inference) / DataLoader workers (training)")
    on_missing: str = option("raise", "a listed video missing from storage: raise | skip (logged, counted)")
    transform: TransformConfig = option(doc="frame preprocessing", default_factory=_frameexit_transform)


@dataclass
class ModelConfig:
    backbone: str = option("resnet50", "backbone name in the effvid registry (torchvision.resnet50 accepted)")
    backbone_width: int | None = option(None, "width of tiny_cnn backbones")
    num_class: int = option(200, "number of classes")
    hidden: int = option(4096, "per-frame MLP width")
    first_threshold: float = option(0.99, "exit at step 0 when the max softmax probability exceeds this")
    gate_threshold: float = option(0.5, "exit at a later step when the gate's exit probability exceeds this")


@dataclass
class CheckpointConfig:
    init: str | None = option(None, "weights to load: our model.pt, or an authors' .pth with format=original")
    format: str = option("effvid", "effvid | original (the authors' DataParallel checkpoints)")


@dataclass
class InferConfig(RunConfig):
    data: DataConfig = option(doc="data", default_factory=DataConfig)
    model: ModelConfig = option(doc="model", default_factory=ModelConfig)
    checkpoint: CheckpointConfig = option(doc="weights", default_factory=CheckpointConfig)
    device: str = option("auto", "auto | cpu | cuda")
    stream: bool = option(True, "decode each frame only when a video reaches its step (frames/LMDB)")
    max_steps: int | None = option(None, "stop every video after this many frames (fixed-frame baseline)")
    no_exit: bool = option(False, "disable exiting: every video uses its max_steps frames")


@dataclass
class TrainConfig(RunConfig):
    data: DataConfig = option(doc="training data (path_label: the training list)", default_factory=DataConfig)
    model: ModelConfig = option(doc="model", default_factory=ModelConfig)
    checkpoint: CheckpointConfig = option(
        doc="initial weights (stage 2 starts from stage 1)", default_factory=CheckpointConfig
    )
    stage: int = option(1, "1: backbone + MLP + classifiers; 2: exit gates only")
    all_frames_only: bool = option(
        False, "stage 1: train only the last step's classifier (the static all-frames model)"
    )
    beta: float = option(1e-3, "stage 2: gate pseudo-label tolerance beta * exp(t/2)")
    lr: float = option(1e-3, "Adam learning rate")
    weight_decay: float = option(0.0, "Adam weight decay")
    engine: EngineConfig = option(doc="engine", default_factory=EngineConfig)


@dataclass
class SweepConfig(InferConfig):
    thresholds: list[float] = option(
        doc="gate thresholds to sweep", default_factory=lambda: [0.3, 0.5, 0.7, 0.9, 0.99]
    )


@dataclass
class DemoConfig(RunConfig):
    root: str = option(
        "data/synthetic-frameexit", "where the synthetic benchmark is generated (reused if present)"
    )
    storage: str = option("lmdb", "storage of the generated benchmark: frames | lmdb | video")
    num_videos: int = option(960, "videos generated (75% train, 25% val)")
    data: DataConfig = option(
        doc="data options (storage and paths are set by the demo)",
        default_factory=lambda: DataConfig(name="list", path_frame="(generated)"),
    )
    model: ModelConfig = option(doc="model", default_factory=ModelConfig)
    stage1: EngineConfig = option(doc="stage-1 and baseline training", default_factory=EngineConfig)
    stage2: EngineConfig = option(doc="stage-2 (gate) training", default_factory=EngineConfig)
    lr: float = option(2e-3, "Adam learning rate")
    finetune_epochs: int = option(
        6, "stage 1 = the baseline fine-tuned with every step's classifier for this many epochs"
    )
    finetune_lr: float = option(5e-4, "learning rate of that fine-tuning")
    betas: list[float] = option(
        doc="beta values of the trade-off sweep", default_factory=lambda: [1e-3, 1e-2, 1e-1]
    )
