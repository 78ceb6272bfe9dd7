"""Command schemas: ``deltadist-train``, ``-eval``, ``-convert``, ``-demo``.

Defaults are the original's segmentation recipe where it has one (DDRNet-23-slim on Cityscapes,
alpha 0.01, beta 0.1, learning rates 0.001 / 0.01, SGD momentum 0.9, poly 0.9, keyframe
distance U{1..5} in training and K = 3 in evaluation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import deltadist.data  # noqa: F401 - registers the synthetic_segmentation data format
from deltadist.detection.config import DetectionDemoConfig
from effvid.config import MISSING, RunConfig, check_choice, option
from effvid.data import DataConfig, TransformConfig
from effvid.engine import EngineConfig, RuntimeConfig

__all__ = [
    "CheckpointConfig",
    "ConvertConfig",
    "DemoConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "cityscapes_data_config",
    "synthetic_data_config",
]

ARCHS = ("ddrnet23", "ddrnet23_slim", "ddrnet39", "hrnet_w18_small_v2", "tiny_segnet")


def cityscapes_data_config() -> DataConfig:
    """Cityscapes sequences at full resolution (1024x2048): whole frames in evaluation, random
    512x512 crops in training (the original: random scale 0.5-2 and 512x1024 crops)."""
    return DataConfig(
        format="cityscapes",
        path_frame=MISSING,
        subset="train",
        num_frames=2,
        batch_size=5,
        transform=TransformConfig(style="fullframe", resize=1024, crop=512, train_crop="random", flip=True),
    )


def cityscapes_val_config() -> DataConfig:
    data = cityscapes_data_config()
    data.subset = "val"
    return data


def synthetic_data_config() -> DataConfig:
    """The core's synthetic segmentation benchmark (64-pixel frames, no resizing)."""
    return DataConfig(
        format="synthetic_segmentation",
        path_frame=MISSING,
        num_frames=2,
        batch_size=16,
        transform=TransformConfig(resize=64, crop=64, train_crop="center", flip=True),
    )


def _finite(key: str, value: float, *, low: float = 0.0) -> None:
    if not (math.isfinite(value) and value >= low):
        raise ValueError(f"{key} must be a finite number >= {low}; got {value}")


@dataclass
class ModelConfig:
    arch: str = option("ddrnet23_slim", f"network: {' | '.join(ARCHS)}")
    num_classes: int = option(19, "classes (Cityscapes: 19; synthetic: its classes + 2)")
    width: int = option(16, "tiny_segnet only: channels of its first stage")
    include: list[str] = option(
        doc="conversion: glob patterns of Conv2d names to consider", default_factory=lambda: ["*"]
    )
    exclude: list[str] = option(
        doc="conversion: glob patterns of Conv2d names to leave alone", default_factory=list
    )
    skip_first: int = option(1, "conversion: leave the first N selected Conv2d (the RGB stem)")
    skip_last: int = option(1, "conversion: leave the last N selected Conv2d (the classifier)")
    factor_ch: int = option(4, "low-rank student: rank = channels / factor_ch")
    reduction: str = option("out", "rank rule: out (segmentation) | min (detection)")
    bias_mode: str = option("corrected", "student bias: corrected (none, exact) | original (the authors')")
    gate_init: float = option(-1.0, "initial gate logit (P(full student) = sigmoid of it)")
    students: str = option("gated", "gated (learned choice) | full | lowrank (every layer forced)")

    def __post_init__(self) -> None:
        check_choice("model.arch", self.arch, ARCHS)
        check_choice("model.reduction", self.reduction, ("out", "min"))
        check_choice("model.bias_mode", self.bias_mode, ("corrected", "original"))
        check_choice("model.students", self.students, ("gated", "full", "lowrank"))
        for key in ("num_classes", "factor_ch", "width"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.skip_first < 0 or self.skip_last < 0:
            raise ValueError("model.skip_first and model.skip_last must be >= 0")


@dataclass
class CheckpointConfig:
    init: str | None = option(None, "weights to load (see format)")
    format: str = option(
        "effvid",
        "effvid (our model.pt; a frame-based one initialises a delta model's teachers and students) | "
        "original (the authors' .pth: delta-distilled segmentation, or effdet / mmdet detection names) | "
        "frame_based (a plain network's state dict: teachers; students initialised from them)",
    )

    def __post_init__(self) -> None:
        check_choice("checkpoint.format", self.format, ("effvid", "original", "frame_based"))


@dataclass
class TrainConfig(RunConfig):
    data: DataConfig = option(
        doc="training clips (num_frames is 2: keyframe, labelled frame)",
        default_factory=cityscapes_data_config,
    )
    model: ModelConfig = option(doc="model", default_factory=ModelConfig)
    checkpoint: CheckpointConfig = option(
        doc="initial weights (usually the frame-based teacher)", default_factory=CheckpointConfig
    )
    engine: EngineConfig = option(doc="engine", default_factory=EngineConfig)
    max_distance: int = option(
        5, "training keyframe distance d ~ U{1..max_distance} before the labelled frame"
    )
    task_loss: str = option("ohem", "ohem (the original's) | ce (plain cross-entropy)")
    ohem_threshold: float = option(0.9, "OHEM probability threshold")
    ohem_min_kept: int = option(131072, "OHEM: pixels kept at least")
    ignore_index: int = option(255, "label of unlabelled pixels")
    alpha: float = option(0.01, "weight of the distillation loss")
    distill_fraction: float = option(
        1 / 3, "distillation on for this fraction of the training iterations, then alpha = 0"
    )
    beta: float = option(0.1, "weight of the cost loss beta * sum_l g_l * cost_l")
    cost: str = option("macs", "per-layer cost of the gates: macs | latency")
    cost_table: str | None = option(
        None, "a layer cost table (JSON, deltadist.cost.LayerCosts); default: measured at the start"
    )
    optimizer: str = option("sgd", "sgd (momentum, the original's) | adam")
    lr: float = option(0.001, "learning rate of teachers and everything outside the students")
    lr_students: float = option(0.01, "learning rate of the students and gates")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(0.0, "weight decay (both groups)")
    poly_power: float = option(
        0.9, "poly learning-rate decay (1 - it/max_it)^power per iteration (0: constant)"
    )

    def __post_init__(self) -> None:
        check_choice("task_loss", self.task_loss, ("ohem", "ce"))
        check_choice("cost", self.cost, ("macs", "latency"))
        check_choice("optimizer", self.optimizer, ("sgd", "adam"))
        for key in ("alpha", "beta", "lr", "lr_students", "momentum", "weight_decay", "poly_power"):
            _finite(key, getattr(self, key))
        if not 0.0 <= self.distill_fraction <= 1.0:
            raise ValueError(f"distill_fraction must be in [0, 1]; got {self.distill_fraction}")
        if self.max_distance < 1:
            raise ValueError(f"max_distance must be >= 1; got {self.max_distance}")
        if self.data.num_frames != 2:
            raise ValueError(
                f"data.num_frames must be 2 in training (keyframe, labelled frame); got {self.data.num_frames}"
            )


@dataclass
class EvalConfig(RunConfig):
    data: DataConfig = option(doc="evaluation clips", default_factory=cityscapes_val_config)
    model: ModelConfig = option(doc="model", default_factory=ModelConfig)
    checkpoint: CheckpointConfig = option(doc="weights", default_factory=CheckpointConfig)
    engine: RuntimeConfig = option(doc="device and precision", default_factory=RuntimeConfig)
    keyframe_interval: int = option(3, "K: a keyframe every K frames")
    protocols: list[str] = option(
        doc="pairs (the original's: distances 0..K-1, amortised) | streaming (a keyframe every K frames)",
        default_factory=lambda: ["pairs", "streaming"],
    )
    ignore_index: int = option(255, "label of unlabelled pixels")
    random_weights: bool = option(False, "run without --checkpoint.init on random weights (smoke tests)")

    def __post_init__(self) -> None:
        if self.keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be >= 1; got {self.keyframe_interval}")
        if not self.protocols:
            raise ValueError("protocols must name at least one of pairs, streaming")
        for p in self.protocols:
            check_choice("protocols", p, ("pairs", "streaming"))
        if (self.checkpoint.init is None) != self.random_weights:
            raise ValueError("give exactly one of --checkpoint.init (weights) and --random_weights true")


@dataclass
class ConvertConfig(RunConfig):
    src: str = option(MISSING, "the authors' delta-distilled checkpoint (.pth; training or deployed layout)")
    dst: str = option(MISSING, "where to write our model.pt")
    model: ModelConfig = option(
        doc="model (bias_mode original for the authors' checkpoints)",
        default_factory=lambda: ModelConfig(bias_mode="original"),
    )


def _demo_data() -> DataConfig:
    data = synthetic_data_config()
    data.path_frame = "(generated)"
    return data


@dataclass
class DemoConfig(RunConfig):
    root: str = option(
        "data/synthetic-deltadist", "where the synthetic benchmark is generated (reused if present)"
    )
    num_videos: int = option(96, "videos generated (75% train, 25% val)")
    num_classes: int = option(4, "object classes of the benchmark (the model has 2 more: background, grey)")
    num_frames: int = option(12, "frames per video")
    size: int = option(64, "frame side in pixels")
    data: DataConfig = option(doc="data options (paths are set by the demo)", default_factory=_demo_data)
    width: int = option(12, "tiny_segnet width")
    keyframe_interval: int = option(3, "K of both evaluations")
    teacher: EngineConfig = option(
        doc="teacher training", default_factory=lambda: EngineConfig(epochs=6, progress=False)
    )
    delta: EngineConfig = option(
        doc="delta-model training", default_factory=lambda: EngineConfig(epochs=3, progress=False)
    )
    teacher_lr: float = option(3e-3, "Adam learning rate of the teacher")
    lr: float = option(2e-4, "Adam learning rate of the teachers inside the delta model")
    lr_students: float = option(5e-3, "Adam learning rate of the students and gates")
    alpha: float = option(0.1, "distillation weight")
    gate_init: float = option(0.25, "initial gate logit (> 0: every layer starts on its full student)")
    betas: list[float] = option(doc="two betas of the gated models", default_factory=lambda: [0.2, 0.5])
    latency_beta: float = option(0.2, "beta of the latency-aware gated model")
    task: str = option("segmentation", "segmentation | detection (the options under detection.*)")
    detection: DetectionDemoConfig = option(
        doc="the detection demo (--task detection)", default_factory=DetectionDemoConfig
    )

    def __post_init__(self) -> None:
        check_choice("task", self.task, ("segmentation", "detection"))
