"""Command schemas: the original's hyper-parameters as typed, documented keys.

The defaults are the paper's ActivityNet recipe (implementation A: MobileNetV2 glance at 224,
ResNet-50 focus on 128-px patches from a 7x7 grid, 16 TSN segments, GRU classifiers of width
1024). A geometry that cannot work - a patch larger than the frames, a grid with more positions
than the patch has offsets, a glance too small to leave the policy a feature map - is an error
naming the key when the config loads (or, for the glance map, when the model is built).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from adafocus.crop import grid_positions, top_left_from_positions
from effvid.config import MISSING, RunConfig, check_choice, option
from effvid.data import DataConfig, TransformConfig
from effvid.engine import EngineConfig, RuntimeConfig
from effvid.models.optimize import FastInferenceConfig

__all__ = [
    "STAGES",
    "CheckpointConfig",
    "ConvertConfig",
    "DemoConfig",
    "LearningRates",
    "ModelConfig",
    "OptimConfig",
    "PPOConfig",
    "ShowConfig",
    "EvalConfig",
    "TrainConfig",
    "adafocus_data_config",
    "check_geometry",
]

STAGES = (0, 1, 2, 3)
POLICIES = ("argmax", "sample", "random")
#: how stage 2 (PPO) rewards a patch; see :class:`adafocus.steps.PolicyStep`
REWARDS = ("sequence", "frame")


def _positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{key} must be a finite number {'>=' if allow_zero else '>'} 0; got {value}")


def adafocus_data_config() -> DataConfig:
    """The original's data pipeline: ActivityNet, 16 TSN segments, multi-scale crops at 224 with
    flips for training, short side 256 and a centre crop of 224 for evaluation, batches of 64."""
    return DataConfig(
        format="activitynet1.3",
        path_frame=MISSING,
        sampler="segments",
        num_frames=16,
        batch_size=64,
        transform=TransformConfig(style="standard", resize=256, crop=224, train_crop="multiscale", flip=True),
    )


@dataclass
class ModelConfig:
    num_class: int = option(200, "number of classes")
    glance: str = option("mobilenet_v2", "glance backbone (effvid registry name): cheap, sees every frame")
    glance_width: float | None = option(
        None, "glance width: tiny_cnn channels (an integer) or mobilenet_v2 width multiplier"
    )
    glance_weights: str | None = option(
        None, "stage 0: initial glance weights (a local state_dict, or a torchvision weight name)"
    )
    focus: str = option("resnet50", "focus backbone (effvid registry name): expensive, sees one patch")
    focus_width: float | None = option(None, "focus width, as glance_width")
    focus_weights: str | None = option(None, "stage 0: initial focus weights, as glance_weights")
    patch_size: int = option(128, "P: side of the square patch cut from the full-resolution frame")
    grid: int = option(7, "patch positions per side (grid x grid actions, both borders included)")
    glance_size: int = option(224, "frames are resized to glance_size x glance_size for the glance")
    glance_mode: str = option(
        "nearest", "interpolation of that resize: nearest (the original) | bilinear | area"
    )
    policy_hidden: int = option(1024, "policy encoder and GRU width")
    classifier_hidden: int = option(1024, "classifier GRU width")
    dropout: float = option(
        0.8, "dropout between the classifier GRU and its Linear (0.8 in the paper's runs)"
    )

    def __post_init__(self) -> None:
        check_choice("model.glance_mode", self.glance_mode, ("nearest", "bilinear", "area"))
        for key in ("num_class", "patch_size", "glance_size", "policy_hidden", "classifier_hidden"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be >= 1; got {getattr(self, key)}")
        if self.grid < 2:
            raise ValueError(f"model.grid must be >= 2 (both borders are positions); got {self.grid}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1); got {self.dropout}")
        for key in ("glance_width", "focus_width"):
            value = getattr(self, key)
            if value is not None:
                _positive(f"model.{key}", value)


#: model keys a later stage may set differently from the stage whose output it continues
FREE_MODEL_KEYS = ("dropout", "glance_weights", "focus_weights")


def check_geometry(model: ModelConfig, data: DataConfig) -> None:
    """Patch and grid against the frames the data section produces (``data.transform.crop``)."""
    side = data.transform.crop
    if model.patch_size > side:
        raise ValueError(
            f"model.patch_size {model.patch_size} does not fit in the {side}x{side} frames "
            f"(data.transform.crop); use a smaller patch or larger frames"
        )
    offsets = top_left_from_positions(grid_positions(model.grid), (side, side), model.patch_size)[:, 0]
    distinct = len(set(offsets.tolist()))
    if distinct < model.grid:
        raise ValueError(
            f"model.grid {model.grid} asks for {model.grid} patch positions per side, but a "
            f"{model.patch_size}-px patch in {side}-px frames (data.transform.crop) has only "
            f"{side - model.patch_size + 1} offsets and the grid falls on {distinct} distinct ones; "
            "lower model.grid or model.patch_size"
        )


@dataclass
class CheckpointConfig:
    init: str | None = option(
        None,
        "weights to start from: the previous stage's model.pt (or an authors' file with format=original)",
    )
    format: str = option("effvid", "effvid (our model.pt) | original (the authors' checkpoint.pth.tar)")

    def __post_init__(self) -> None:
        check_choice("checkpoint.format", self.format, ("effvid", "original"))


@dataclass
class PPOConfig:
    epochs: int = option(4, "update epochs per rollout (the original: 1, where PPO's clipping never acts)")
    gamma: float = option(0.7, "discount over frames")
    clip: float = option(0.2, "PPO ratio clip")
    value_coef: float = option(0.5, "weight of the critic's MSE")
    entropy_coef: float = option(0.01, "weight of the entropy bonus")
    reward: str = option(
        "sequence",
        "sequence: p_y(policy patch) - p_y(random patch) from the classifier state before the step "
        "(the original); frame: the same from a fresh classifier state, i.e. each patch judged alone",
    )

    def __post_init__(self) -> None:
        check_choice("ppo.reward", self.reward, REWARDS)
        if self.epochs < 1:
            raise ValueError(f"ppo.epochs must be >= 1; got {self.epochs}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"ppo.gamma must be in [0, 1]; got {self.gamma}")
        for key in ("clip", "value_coef", "entropy_coef"):
            _positive(f"ppo.{key}", getattr(self, key), allow_zero=True)


@dataclass
class LearningRates:
    stage0: float = option(0.01, "stage 0: the backbone being pre-trained and its head")
    stage1_focus: float = option(0.0005, "stage 1: the focus network")
    stage1_classifier: float = option(0.05, "stage 1: the classifier")
    policy: float = option(3e-4, "stage 2: the policy (Adam, PPO or differentiable)")
    stage3_classifier: float = option(0.005, "stage 3: the classifier")
    stage3_focus: float = option(0.0005, "stage 3 with stage3_focus: the focus network")

    def __post_init__(self) -> None:
        for key in (
            "stage0",
            "stage1_focus",
            "stage1_classifier",
            "policy",
            "stage3_classifier",
            "stage3_focus",
        ):
            _positive(f"lr.{key}", getattr(self, key), allow_zero=True)


@dataclass
class OptimConfig:
    name: str = option("sgd", "optimiser of stages 0, 1 and 3: sgd (the original) | adam")
    momentum: float = option(0.9, "sgd momentum")
    weight_decay: float = option(1e-4, "weight decay (the original applies it to every parameter)")
    schedule: str = option("cosine", "learning rate over the run: cosine (per iteration) | constant")

    def __post_init__(self) -> None:
        check_choice("optim.name", self.name, ("sgd", "adam"))
        check_choice("optim.schedule", self.schedule, ("cosine", "constant"))
        _positive("optim.momentum", self.momentum, allow_zero=True)
        _positive("optim.weight_decay", self.weight_decay, allow_zero=True)


@dataclass
class TrainConfig(RunConfig):
    data: DataConfig = option(
        doc="training data (path_label: the training list)", default_factory=adafocus_data_config
    )
    model: ModelConfig = option(doc="model", default_factory=ModelConfig)
    checkpoint: CheckpointConfig = option(
        doc="the previous stage's output (stage 0: optional)", default_factory=CheckpointConfig
    )
    stage: int = option(
        1,
        "0: pre-train each backbone alone; 1: focus + classifier on random patches; 2: the policy; "
        "3: fine-tune the classifier",
    )
    stage0_parts: list[str] = option(
        doc="stage 0: the backbones to pre-train, each alone, in this order",
        default_factory=lambda: ["glance", "focus"],
    )
    policy_training: str = option(
        "ppo",
        "stage 2: ppo (the original: reward against a random patch) | differentiable (AdaFocusV2-style: "
        "the classifier's loss through a differentiable crop)",
    )
    stage3_focus: bool = option(
        False, "stage 3: fine-tune the focus network too (the paper; not the released code)"
    )
    ppo: PPOConfig = option(doc="stage 2 PPO", default_factory=PPOConfig)
    lr: LearningRates = option(doc="learning rates per stage (the original's)", default_factory=LearningRates)
    optim: OptimConfig = option(doc="optimiser of stages 0, 1, 3", default_factory=OptimConfig)
    engine: EngineConfig = option(doc="engine", default_factory=EngineConfig)

    def __post_init__(self) -> None:
        check_choice("stage", self.stage, STAGES)
        check_choice("policy_training", self.policy_training, ("ppo", "differentiable"))
        if not self.stage0_parts or len(set(self.stage0_parts)) != len(self.stage0_parts):
            raise ValueError(f"stage0_parts must list glance and/or focus once each; got {self.stage0_parts}")
        for part in self.stage0_parts:
            check_choice("stage0_parts", part, ("glance", "focus"))
        check_geometry(self.model, self.data)


@dataclass
class EvalConfig(RunConfig):
    data: DataConfig = option(
        doc="evaluation data (path_label: the list)", default_factory=adafocus_data_config
    )
    model: ModelConfig = option(doc="model", default_factory=ModelConfig)
    checkpoint: CheckpointConfig = option(doc="weights", default_factory=CheckpointConfig)
    engine: RuntimeConfig = option(doc="device and precision", default_factory=RuntimeConfig)
    policy: str = option(
        "argmax",
        "patch positions: argmax (the original's evaluation) | sample | random (uniform, as stage 1)",
    )
    exit_threshold: float | None = option(
        None, "early exit (AdaFocus+): a video stops once its top class probability reaches this"
    )
    skip_similarity: float | None = option(
        None,
        "frame skipping (AdaFocus+): a frame whose glance map has at least this cosine similarity "
        "with the last focused frame's is only glanced",
    )
    stream: bool = option(True, "decode each frame only when a video reaches its step")
    fast: FastInferenceConfig = option(
        doc="speed-ups of the glance and focus networks (fold_bn, channels_last, compile; benchmarks/adafocus.md)",
        default_factory=FastInferenceConfig,
    )
    seed: int = option(0, "seed of sampled or random patch positions")
    random_weights: bool = option(
        False, "run without --checkpoint.init on random weights (smoke tests); the outputs record it"
    )

    def __post_init__(self) -> None:
        check_choice("policy", self.policy, POLICIES)
        if self.exit_threshold is not None and not 0.0 <= self.exit_threshold <= 1.0:
            raise ValueError(f"exit_threshold must be a probability in [0, 1]; got {self.exit_threshold}")
        if self.skip_similarity is not None and not -1.0 <= self.skip_similarity <= 1.0:
            raise ValueError(f"skip_similarity is a cosine similarity in [-1, 1]; got {self.skip_similarity}")
        if self.checkpoint.init is None and not self.random_weights:
            raise ValueError(
                "no weights: give --checkpoint.init (a model.pt, or an authors' checkpoint with "
                "--checkpoint.format original), or --random_weights true to run on random weights"
            )
        if self.checkpoint.init is not None and self.random_weights:
            raise ValueError(
                f"--random_weights true and --checkpoint.init ({self.checkpoint.init}) exclude each other; "
                "add --checkpoint.init null to run a config that names weights on random ones"
            )
        check_geometry(self.model, self.data)


@dataclass
class ShowConfig(EvalConfig):
    video: str | None = option(None, "key of the video to draw (default: the list's first)")
    columns: int = option(8, "frames per row of the picture")
    scale: int = option(2, "pixels per frame pixel in the picture")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.columns < 1 or self.scale < 1:
            raise ValueError("columns and scale must be >= 1")


@dataclass
class ConvertConfig(RunConfig):
    src: str = option(MISSING, "the authors' checkpoint (checkpoint.pth.tar)")
    dst: str = option(MISSING, "where to write our model.pt")
    stage: int = option(3, "the stage the file comes from: 1 (no policy yet), 2, or 3 (the final model)")
    policy_copy: str | None = option(
        None, "which of the file's policy copies to keep (default: all must be equal)"
    )
    model: ModelConfig = option(doc="model", default_factory=ModelConfig)
    data: DataConfig = option(
        doc="not read: lets the config file of the other commands be given as is",
        default_factory=lambda: replace(adafocus_data_config(), path_frame="(not read)"),
    )

    def __post_init__(self) -> None:
        check_choice("stage", self.stage, (1, 2, 3))


def _demo_data() -> DataConfig:
    return DataConfig(
        format="list",
        storage="lmdb",
        path_frame="(generated)",
        sampler="uniform",
        num_frames=8,
        batch_size=8,
        transform=TransformConfig(style="standard", resize=96, crop=96, train_crop="center", flip=True),
    )


def _demo_model() -> ModelConfig:
    return ModelConfig(
        num_class=12,
        glance="tiny_cnn",
        glance_width=4,
        focus="tiny_cnn",
        focus_width=8,
        patch_size=40,
        grid=3,
        glance_size=96,
        policy_hidden=64,
        classifier_hidden=64,
        dropout=0.2,
    )


def _demo_engine(epochs: int) -> EngineConfig:
    return EngineConfig(epochs=epochs, checkpoint_every=1000)


@dataclass
class DemoConfig(RunConfig):
    root: str = option(
        "data/synthetic-adafocus", "where the synthetic benchmark is generated (reused if present)"
    )
    num_videos: int = option(960, "videos generated (75% train, 25% val)")
    size: int = option(96, "frame side of the generated videos (data.transform resizes/crops to it)")
    early_fraction: float = option(
        1.0,
        "share of generated videos whose object shows its class in every frame (the others only in a "
        "short window of frames, FrameExit's late videos)",
    )
    data: DataConfig = option(
        doc="data options (data.storage: the generated benchmark's storage; its paths are set by the demo)",
        default_factory=_demo_data,
    )
    model: ModelConfig = option(doc="model", default_factory=_demo_model)
    stage0: EngineConfig = option(
        doc="stage 0 (each backbone; the focus one is the full-frame baseline)",
        default_factory=lambda: _demo_engine(20),
    )
    stage1: EngineConfig = option(doc="stage 1", default_factory=lambda: _demo_engine(8))
    stage2: EngineConfig = option(doc="stage 2 (both variants)", default_factory=lambda: _demo_engine(8))
    stage3: EngineConfig = option(doc="stage 3", default_factory=lambda: _demo_engine(3))
    ppo: PPOConfig = option(doc="stage 2 PPO", default_factory=PPOConfig)
    stage3_focus: bool = option(
        False, "stage 3 fine-tunes the focus network too (the paper; not the released code)"
    )
    lr: LearningRates = option(
        doc="learning rates (Adam)",
        default_factory=lambda: LearningRates(
            stage0=3e-3, stage1_focus=1e-3, stage1_classifier=1e-3, policy=1e-3, stage3_classifier=5e-4
        ),
    )
    exit_thresholds: list[float] = option(
        doc="early-exit thresholds of AdaFocus+", default_factory=lambda: [0.9, 0.99]
    )
    skip_similarity: float = option(
        0.997, "frame skipping of AdaFocus+: the glance-map cosine similarity at which a frame is skipped"
    )
    eval_batch_size: int = option(
        32, "videos per batch when evaluating every row (data.batch_size is the training batch)"
    )

    def __post_init__(self) -> None:
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1; got {self.eval_batch_size}")
        if self.size < 32:
            raise ValueError(f"size must be >= 32; got {self.size}")
        if not 0.0 <= self.early_fraction <= 1.0:
            raise ValueError(f"early_fraction must be in [0, 1]; got {self.early_fraction}")
        if not self.exit_thresholds:
            raise ValueError("exit_thresholds needs at least one threshold (the AdaFocus+ rows)")
        for t in self.exit_thresholds:
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"exit_thresholds must be probabilities; got {t}")
        if not -1.0 <= self.skip_similarity <= 1.0:
            raise ValueError(f"skip_similarity is a cosine similarity in [-1, 1]; got {self.skip_similarity}")
        check_geometry(self.model, self.data)
