"""Command schemas: VideoIQ's options under the original's flag names where they make sense.

``videoiq-train`` runs one of the four stages (``--stage fp | ap | policy_backbone | policy``);
each stage takes the previous one's ``model.pt`` by path (``--checkpoint.init``,
``--checkpoint.teacher``, ``--checkpoint.policy_backbone``) and checks its kind when it loads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from effvid.config import MISSING, RunConfig, check_choice, option
from effvid.data import DataConfig, TransformConfig
from effvid.engine import EngineConfig, RuntimeConfig
from videoiq.model import RESNETS
from videoiq.policy import POLICY_BACKBONES
from videoiq.quant import check_family

__all__ = [
    "STAGES",
    "CheckpointConfig",
    "ConvertConfig",
    "DemoConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TestConfig",
    "TrainConfig",
    "videoiq_data_config",
]

STAGES = ("fp", "ap", "policy_backbone", "policy")


def videoiq_data_config() -> DataConfig:
    """VideoIQ's data defaults: Mini-Sports1M lists, 16 TSN segments per video, multi-scale crops
    and flips at 224 in training, resize to 224 + centre crop in evaluation (``--disable_scaleup``)."""
    return DataConfig(
        format="minisports1m",
        path_frame=MISSING,
        sampler="segments",
        num_frames=16,
        batch_size=72,
        transform=TransformConfig(resize=224, crop=224, train_crop="multiscale", flip=True),
    )


def _finite(key: str, value: float, *, positive: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{key} must be a finite number {'> 0' if positive else '>= 0'}; got {value}")


@dataclass
class ModelConfig:
    arch: str = option("resnet50", "the recognition ResNet: resnet18 | resnet34 | resnet50 | resnet101")
    width: int = option(64, "the ResNet's base width (64: torchvision's; 16: a narrow one for CPUs)")
    num_class: int = option(487, "number of classes (Mini-Sports1M: 487)")
    bit_width_family: list[int] = option(
        doc="bit widths of the any-precision network, largest first", default_factory=lambda: [32, 4, 2]
    )
    skip_list: list[int] = option(
        doc="the policy's skip options (frames skipped by each; [] for none)", default_factory=lambda: [1]
    )
    q_init: list[float] = option(
        doc="initial PACT clip: one value, or one per bit width", default_factory=lambda: [2.0]
    )
    dropout: float = option(0.5, "dropout before the recognition classifier")
    mean_aligned: bool = option(False, "rescale quantised values to the mean of the unquantised ones")
    float_branch: bool = option(
        False, "the float network as one more precision choice (the original's --use_fp_as_bb)"
    )
    policy_head: bool = option(False, "the policy's classification head (the original's --is_policy_pred)")
    policy_input_size: int = option(84, "side of the frames the policy sees (bilinear resize)")
    policy_arch: str = option(
        "mobilenet_v2",
        "the policy's frame network: mobilenet_v2 (the original's) | tiny_cnn (trains fast on a CPU)",
    )
    policy_width: float = option(
        1.0, "its width multiplier (mobilenet_v2: width_mult; tiny_cnn: 16 x this channels)"
    )
    policy_hidden: int = option(512, "LSTM width of the policy")
    policy_dropout: float = option(0.8, "dropout on the policy's frame features")

    def __post_init__(self) -> None:
        check_choice("model.arch", self.arch, RESNETS)
        try:
            check_family(self.bit_width_family)
        except ValueError as exc:
            raise ValueError(f"model.bit_width_family: {exc}") from None
        if any(s < 1 for s in self.skip_list) or len(set(self.skip_list)) != len(self.skip_list):
            raise ValueError(f"model.skip_list must hold distinct values >= 1; got {self.skip_list}")
        if len(self.q_init) not in (1, len(self.bit_width_family)):
            raise ValueError(
                f"model.q_init has {len(self.q_init)} values for the {len(self.bit_width_family)} bit "
                f"widths of model.bit_width_family {self.bit_width_family}: give one, or one per bit width"
            )
        if self.num_class < 1 or self.width < 1 or self.policy_hidden < 1:
            raise ValueError("model.num_class, model.width and model.policy_hidden must be >= 1")
        if self.policy_input_size < 32:
            raise ValueError(
                f"model.policy_input_size must be >= 32 (MobileNetV2 reduces a frame 32 times); "
                f"got {self.policy_input_size}"
            )
        for key in ("dropout", "policy_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"model.{key} must be in [0, 1); got {getattr(self, key)}")
        check_choice("model.policy_arch", self.policy_arch, POLICY_BACKBONES)
        _finite("model.policy_width", self.policy_width, positive=True)

    @property
    def backbone_kwargs(self) -> dict:
        return {"width": self.width} if self.width != 64 else {}

    @property
    def q_init_value(self) -> float | list[float]:
        return self.q_init[0] if len(self.q_init) == 1 else list(self.q_init)

    @property
    def policy_kwargs(self) -> dict:
        return {
            "input_size": self.policy_input_size,
            "backbone": self.policy_arch,
            "width": self.policy_width,
            "hidden": self.policy_hidden,
            "dropout": self.policy_dropout,
        }


@dataclass
class CheckpointConfig:
    init: str | None = option(
        None,
        "weights to start from, the previous stage's model.pt - fp: none or a videoiq-fp file; "
        "ap: the fp stage's; policy_backbone: none or its own; policy: the ap stage's (test: a videoiq file)",
    )
    teacher: str | None = option(
        None,
        "the fp stage's model.pt: the KD teacher (ap: default --checkpoint.init; policy), the float branch",
    )
    policy_backbone: str | None = option(
        None, "stage policy: the policy_backbone stage's model.pt (its MobileNetV2 starts the policy)"
    )
    format: str = option("effvid", "effvid | original (videoiq-test: the authors' resnet_videoiq checkpoint)")

    def __post_init__(self) -> None:
        check_choice("checkpoint.format", self.format, ("effvid", "original"))


@dataclass
class LossConfig:
    loss_type: str = option("KD_CE", "CE | KD | KD_CE (the original's --loss_type)")
    kd_weight: float = option(1.0, "stage ap: weight of each bit width's KD term")
    policy_w: float = option(1.0, "stage policy: weight of the policy head's CE")
    efficient_w: float = option(0.16, "stage policy: weight of the expected relative cost")
    balanced_w: float = option(0.5, "stage policy: weight of the action-balance term")
    entropy_w: float = option(0.1, "stage policy: weight of the policy entropy")
    frozen_train_mode: bool = option(
        False, "run frozen parts (teacher; stage policy: the recogniser) in train mode, as the original"
    )

    def __post_init__(self) -> None:
        check_choice("loss.loss_type", self.loss_type, ("CE", "KD", "KD_CE"))
        for key in ("kd_weight", "policy_w", "efficient_w", "balanced_w", "entropy_w"):
            _finite(f"loss.{key}", getattr(self, key))


@dataclass
class OptimConfig:
    optimizer: str = option("sgd", "sgd (the original's: momentum, cosine) | adam")
    lr: float = option(
        0.01, "learning rate of stages fp, policy_backbone and ap (ap: /#bits on shared weights)"
    )
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "weight decay")
    q_lr: list[float] = option(
        doc="stage ap: learning rate of the PACT clips, one value or one per bit width",
        default_factory=lambda: [0.1, 0.1, 0.01],
    )
    q_weight_decay: list[float] = option(
        doc="stage ap: weight decay of the PACT clips, one value or one per bit width",
        default_factory=lambda: [5e-4, 5e-4, 6e-2],
    )
    p_lr: float = option(0.1, "stage policy: learning rate of the LSTM, action layer and head")
    p_b_lr: float = option(0.001, "stage policy: learning rate of the policy's MobileNetV2")
    cosine: bool = option(True, "cosine-anneal the learning rates over the run")
    temperature: float = option(5.0, "stage policy: initial Gumbel-softmax temperature")
    temperature_decay: float = option(0.956, "stage policy: temperature factor after every epoch")

    def __post_init__(self) -> None:
        check_choice("optim.optimizer", self.optimizer, ("sgd", "adam"))
        for key in ("lr", "momentum", "weight_decay", "p_lr", "p_b_lr"):
            _finite(f"optim.{key}", getattr(self, key))
        for key in ("q_lr", "q_weight_decay"):
            for v in getattr(self, key):
                _finite(f"optim.{key}", v)
        _finite("optim.temperature", self.temperature, positive=True)
        if not 0 < self.temperature_decay <= 1:
            raise ValueError(f"optim.temperature_decay must be in (0, 1]; got {self.temperature_decay}")


def _check_fit(data: DataConfig, model: ModelConfig, optim: OptimConfig | None = None) -> None:
    """Checks across sections: the policy's input within the frames, per-bit lists per bit."""
    if model.policy_input_size > data.transform.crop:
        raise ValueError(
            f"model.policy_input_size ({model.policy_input_size}) exceeds the frames' size "
            f"data.transform.crop ({data.transform.crop}): the policy sees a downscaled frame"
        )
    for key in ("q_lr", "q_weight_decay") if optim is not None else ():
        values = getattr(optim, key)
        if len(values) not in (1, len(model.bit_width_family)):
            raise ValueError(
                f"optim.{key} has {len(values)} values for the {len(model.bit_width_family)} bit widths of "
                f"model.bit_width_family {model.bit_width_family}: give one, or one per bit width"
            )


@dataclass
class TrainConfig(RunConfig):
    stage: str = option(MISSING, "fp | ap | policy_backbone | policy (the four steps, in order)")
    data: DataConfig = option(doc="training data", default_factory=videoiq_data_config)
    model: ModelConfig = option(doc="model", default_factory=ModelConfig)
    checkpoint: CheckpointConfig = option(
        doc="the previous stages' model files", default_factory=CheckpointConfig
    )
    loss: LossConfig = option(doc="loss terms and weights", default_factory=LossConfig)
    optim: OptimConfig = option(doc="optimiser, learning rates, temperature", default_factory=OptimConfig)
    engine: EngineConfig = option(doc="engine", default_factory=EngineConfig)

    def __post_init__(self) -> None:
        check_choice("stage", self.stage, STAGES)
        _check_fit(self.data, self.model, self.optim)
        ckpt = self.checkpoint
        if ckpt.format != "effvid":
            raise ValueError(
                "training reads our model files only (checkpoint.format effvid); convert an authors' "
                "checkpoint first with videoiq-convert"
            )
        if self.stage == "policy" and ckpt.init is None:
            raise ValueError(
                "stage policy trains the policy on a frozen recogniser: give --checkpoint.init "
                "(the ap stage's model.pt)"
            )
        if self.stage == "policy" and self.model.float_branch and ckpt.teacher is None:
            raise ValueError("model.float_branch needs --checkpoint.teacher (the fp stage's model.pt)")
        unused = {
            "fp": ("teacher", "policy_backbone"),
            "ap": ("policy_backbone",),
            "policy_backbone": ("teacher", "policy_backbone"),
            "policy": (),
        }[self.stage]
        for key in unused:
            if getattr(ckpt, key) is not None:
                raise ValueError(f"stage {self.stage} does not use checkpoint.{key}")


@dataclass
class TestConfig(RunConfig):
    data: DataConfig = option(
        doc="data (path_label: the list to evaluate)", default_factory=videoiq_data_config
    )
    model: ModelConfig = option(doc="model", default_factory=ModelConfig)
    checkpoint: CheckpointConfig = option(doc="weights (checkpoint.init)", default_factory=CheckpointConfig)
    engine: RuntimeConfig = option(doc="device and precision", default_factory=RuntimeConfig)
    sample: bool = option(
        False, "sample the policy's decisions (Gumbel, at the checkpoint's temperature) as the original did"
    )
    seed: int = option(0, "random seed of sampled decisions")
    random_weights: bool = option(False, "run without --checkpoint.init on random weights (smoke tests)")
    int8: bool = option(
        False,
        "run the <= 8-bit branches on PyTorch's int8 CPU kernels (videoiq.int8.Int8Branch; CPU only); "
        "wider bit widths stay fake-quantised",
    )
    int8_engine: str = option("x86", "the quantised CPU engine of --int8 (x86, fbgemm, onednn)")
    int8_calibration_batches: int = option(
        1, "--int8: how many of the first evaluated batches calibrate the int8 branches' scales"
    )

    def __post_init__(self) -> None:
        _check_fit(self.data, self.model)
        if self.int8_calibration_batches < 1:
            raise ValueError("--int8_calibration_batches must be at least 1")
        if self.checkpoint.init is None and not self.random_weights:
            raise ValueError(
                "no weights: give --checkpoint.init (a videoiq model.pt, or an authors' checkpoint with "
                "--checkpoint.format original), or --random_weights true"
            )
        if self.checkpoint.init is not None and self.random_weights:
            raise ValueError(
                f"--random_weights true and --checkpoint.init ({self.checkpoint.init}) exclude each other; "
                "add --checkpoint.init null to run a config that names weights on random ones"
            )


@dataclass
class ConvertConfig(RunConfig):
    src: str = option(MISSING, "the authors' checkpoint: resnet_videoiq (step 4) or resnet_pact_ap (step 2)")
    dst: str = option(MISSING, "where to write our model file (videoiq, or videoiq-ap for step 2)")
    teacher_dst: str | None = option(
        None, "also write the checkpoint's float teacher (*_32fp keys) as a videoiq-fp model file"
    )
    model: ModelConfig = option(doc="the checkpoint's model", default_factory=ModelConfig)


def _demo_data() -> DataConfig:
    return DataConfig(
        format="list",
        storage="lmdb",
        path_frame="(generated)",
        sampler="segments",
        num_frames=8,
        batch_size=16,
        transform=TransformConfig(resize=64, crop=64, train_crop="center", flip=True),
    )


def _demo_model() -> ModelConfig:
    return ModelConfig(
        arch="resnet18",
        width=16,
        num_class=6,
        q_init=[8.0],
        dropout=0.2,
        policy_head=True,
        policy_input_size=64,
        policy_arch="tiny_cnn",
        policy_width=0.25,
        policy_hidden=64,
        policy_dropout=0.2,
    )


def _demo_optim() -> OptimConfig:
    return OptimConfig(
        optimizer="adam",
        lr=2e-3,
        weight_decay=5e-4,
        q_lr=[0.02],
        q_weight_decay=[0.0],
        p_lr=0.01,
        p_b_lr=1e-3,
    )


def _demo_loss() -> LossConfig:
    return LossConfig(balanced_w=0.5, entropy_w=0.0)


def _epochs(n: int) -> Callable[[], EngineConfig]:
    return lambda: EngineConfig(epochs=n, checkpoint_every=1000)


@dataclass
class DemoConfig(RunConfig):
    root: str = option(
        "data/synthetic-videoiq", "where the synthetic benchmark is generated (reused if present)"
    )
    num_videos: int = option(1000, "videos generated")
    val_fraction: float = option(0.3, "share of the videos held out for evaluation")
    data: DataConfig = option(
        doc="data options (data.storage: the generated benchmark's storage; its paths are set by the demo)",
        default_factory=_demo_data,
    )
    model: ModelConfig = option(doc="model", default_factory=_demo_model)
    loss: LossConfig = option(
        doc="loss terms (loss.efficient_w: see efficient_ws)", default_factory=_demo_loss
    )
    optim: OptimConfig = option(
        doc="optimiser and learning rates of every stage", default_factory=_demo_optim
    )
    fp: EngineConfig = option(doc="stage fp", default_factory=_epochs(20))
    ap: EngineConfig = option(doc="stage ap", default_factory=_epochs(6))
    policy_backbone: EngineConfig = option(doc="stage policy_backbone", default_factory=_epochs(15))
    policy: EngineConfig = option(doc="stage policy (once per efficiency weight)", default_factory=_epochs(6))
    efficient_ws: list[float] = option(
        doc="efficiency weights of the policies trained (the trade-off sweep)",
        default_factory=lambda: [1.0, 2.0],
    )

    def __post_init__(self) -> None:
        _check_fit(self.data, self.model, self.optim)
        if not self.efficient_ws:
            raise ValueError("efficient_ws needs at least one efficiency weight")
        for w in self.efficient_ws:
            _finite("efficient_ws", w)
