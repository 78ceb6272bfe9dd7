"""Command schemas (the keys of the original configs where they make sense)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from effvid.config import MISSING, RunConfig, check_choice, option
from effvid.data import DataConfig
from effvid.engine import EngineConfig, RuntimeConfig
from effvid.models.optimize import FastInferenceConfig
from frameexit.data import frameexit_data_config

__all__ = [
    "CheckpointConfig",
    "ConvertConfig",
    "DemoConfig",
    "InferConfig",
    "ModelConfig",
    "SweepConfig",
    "TrainConfig",
]


def _probability(key: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{key} must be a probability in [0, 1]; got {value}")


@dataclass
class ModelConfig:
    backbone: str = option("resnet50", "backbone name in the effvid registry (torchvision.resnet50 accepted)")
    backbone_width: int | None = option(None, "width of tiny_cnn backbones")
    num_class: int = option(200, "number of classes")
    hidden: int = option(4096, "per-frame MLP width")
    first_threshold: float = option(0.99, "exit at step 0 when the max softmax probability exceeds this")
    gate_threshold: float = option(0.5, "exit at a later step when the gate's exit probability exceeds this")

    def __post_init__(self) -> None:
        _probability("model.first_threshold", self.first_threshold)
        _probability("model.gate_threshold", self.gate_threshold)
        if self.num_class < 1 or self.hidden < 1:
            raise ValueError("model.num_class and model.hidden must be >= 1")


@dataclass
class CheckpointConfig:
    init: str | None = option(None, "weights to load: our model.pt, or an authors' .pth with format=original")
    format: str = option("effvid", "effvid | original (the authors' DataParallel checkpoints)")

    def __post_init__(self) -> None:
        check_choice("checkpoint.format", self.format, ("effvid", "original"))


@dataclass
class InferConfig(RunConfig):
    data: DataConfig = option(doc="data", default_factory=frameexit_data_config)
    model: ModelConfig = option(doc="model", default_factory=ModelConfig)
    checkpoint: CheckpointConfig = option(doc="weights", default_factory=CheckpointConfig)
    engine: RuntimeConfig = option(
        doc="device and precision (engine.amp bf16: the frame network as a copy with bf16 weights)",
        default_factory=RuntimeConfig,
    )
    fast: FastInferenceConfig = option(
        doc="inference speed-ups of the frame network (benchmarks/frameexit.md measures each)",
        default_factory=FastInferenceConfig,
    )
    exit_guard: float | None = option(
        4.0,
        "with fast.int8 or engine.amp: exit decisions closer to their threshold than this many times "
        "the approximation's largest error on the calibration videos are re-made in float32, so the "
        "exits stay those of float32 (null: no check, exits may change)",
    )
    stream: bool = option(True, "decode each frame only when a video reaches its step (frames/LMDB)")
    prefetch: bool = option(
        True, "stream: decode the next step's frames on a thread while the frame network runs"
    )
    max_steps: int | None = option(None, "stop every video after this many frames (fixed-frame baseline)")
    no_exit: bool = option(False, "disable exiting: every video uses its max_steps frames")
    random_weights: bool = option(
        False, "run without --checkpoint.init on random weights (smoke tests); the outputs record it"
    )

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.exit_guard is not None and not (math.isfinite(self.exit_guard) and self.exit_guard >= 1):
            raise ValueError(f"exit_guard must be a factor >= 1 (or null), got {self.exit_guard}")
        if self.checkpoint.init is None and not self.random_weights:
            raise ValueError(
                "no weights: give --checkpoint.init (a model.pt, or an authors' .pth with "
                "--checkpoint.format original), or --random_weights true to run on random weights"
            )
        if self.checkpoint.init is not None and self.random_weights:
            raise ValueError(
                f"--random_weights true and --checkpoint.init ({self.checkpoint.init}) exclude each other; "
                "add --checkpoint.init null to run a config that names weights on random ones"
            )


@dataclass
class TrainConfig(RunConfig):
    data: DataConfig = option(
        doc="training data (path_label: the training list)", default_factory=frameexit_data_config
    )
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
    val_list: str | None = option(
        None,
        "validation list (data.format, read from data's storage): evaluated every engine.eval_every epochs",
    )
    engine: EngineConfig = option(doc="engine", default_factory=EngineConfig)

    def __post_init__(self) -> None:
        check_choice("stage", self.stage, (1, 2))
        if self.engine.eval_every and not self.val_list:
            raise ValueError("engine.eval_every needs val_list (the validation videos)")
        for key in ("beta", "lr", "weight_decay"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key} must be a finite number >= 0; got {value}")


@dataclass
class SweepConfig(InferConfig):
    thresholds: list[float] = option(
        doc="gate thresholds to sweep", default_factory=lambda: [0.3, 0.5, 0.7, 0.9, 0.99]
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for t in self.thresholds:
            _probability("thresholds", t)


@dataclass
class ConvertConfig(RunConfig):
    src: str = option(MISSING, "the authors' checkpoint (.pth, DataParallel state dict)")
    dst: str = option(MISSING, "where to write our model.pt")
    num_frames: int = option(10, "frames (classifiers) of the checkpoint")
    model: ModelConfig = option(doc="model", default_factory=ModelConfig)


def _demo_data() -> DataConfig:
    data = frameexit_data_config()
    data.format, data.storage, data.path_frame = "list", "lmdb", "(generated)"
    return data


@dataclass
class DemoConfig(RunConfig):
    root: str = option(
        "data/synthetic-frameexit", "where the synthetic benchmark is generated (reused if present)"
    )
    num_videos: int = option(960, "videos generated (75% train, 25% val)")
    data: DataConfig = option(
        doc="data options (data.storage: the generated benchmark's storage; its paths are set by the demo)",
        default_factory=_demo_data,
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
