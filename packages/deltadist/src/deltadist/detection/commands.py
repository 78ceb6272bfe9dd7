"""``deltadist-train / -eval / -convert --task detection``: the schemas and the command bodies.

* train, ``--model.delta false``: the frame-based detector (the teacher) on every frame of the
  training pairs (Adam, :func:`~deltadist.detection.training.train_frame_detector`);
* train, ``--model.delta true`` (default): the teacher's weights (``--checkpoint.init``) converted by
  the detection rule and trained with detector loss + distillation + gate cost
  (:class:`~deltadist.detection.training.DetectionDistillationLoss`,
  :func:`~deltadist.detection.training.train_delta_detector`, the original's EfficientDet recipe);
* eval: AP50 and MACs per frame on ``clip_length``-frame clips (a keyframe every ``clip_length``
  frames), ``metrics_detection.json`` in the run directory;
* convert: an authors' checkpoint (effdet or mmdet names, delta-distilled or frame-based), loaded
  strictly, saved as our ``model.pt``.

Model files: ``effvid-deltadist-detection-v1`` (converted) and ``effvid-deltadist-detection-frame-v1``
(plain); the network is rebuilt from the ``model`` options, so eval and train need the same ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import ignite.distributed as idist
import torch

from deltadist.config import CheckpointConfig
from deltadist.detection.data import VidClips, VidPairs, read_vid_json
from deltadist.detection.detectors import DETECTORS, Detector, build_detector
from deltadist.detection.evaluation import ORIGINAL_MIN_SCORE, clip_predictor, evaluate_detection
from effvid.checkpoint import CheckpointMismatchError, load_checked
from effvid.config import MISSING, ConfigError, RunConfig, check_choice, config_to_yaml, option
from effvid.engine import (
    EngineConfig,
    RuntimeConfig,
    autocast,
    resolve_device,
    run_distributed,
    seed_everything,
)
from effvid.io import atomic_write_json
from effvid.model_files import ModelFileError, read_model_file, read_state_dict, read_torch_file, save_model

__all__ = [
    "FRAME_KIND",
    "KIND",
    "DetectionConvertConfig",
    "DetectionEvalConfig",
    "DetectionTrainConfig",
    "build_from_config",
    "check_original_layout",
    "load_detector_weights",
    "run_detection_convert",
    "run_detection_eval",
    "run_detection_train",
]

KIND = "deltadist-detection"
FRAME_KIND = "deltadist-detection-frame"


def _kind(delta: bool) -> str:
    return KIND if delta else FRAME_KIND


@dataclass
class DetectorConfig:
    detector: str = option("efficientdet_d0", f"network: {' | '.join(DETECTORS)}")
    num_classes: int = option(30, "object classes without background (ImageNet VID: 30)")
    size: int = option(512, "input side: frames are letterboxed to size x size (EfficientDet-D0: 512)")
    delta: bool = option(
        True, "the delta model (converted by the detection rule) | false: the frame-based detector"
    )
    factor_ch: int = option(16, "low-rank student: rank = min(Cin, Cout) / factor_ch (the original's 16)")
    reduction: str = option("min", "rank rule: min (the original's detection) | out")
    bias_mode: str = option("corrected", "student bias: corrected (none, exact) | original (the authors')")
    gate_init: float = option(-1.0, "initial gate logit of converted layers (P(full student) = sigmoid)")
    fpn_channels: int = option(16, "efficientdet_tiny only: BiFPN and head width")

    def __post_init__(self) -> None:
        check_choice("model.detector", self.detector, DETECTORS)
        check_choice("model.reduction", self.reduction, ("min", "out"))
        check_choice("model.bias_mode", self.bias_mode, ("corrected", "original"))
        for key in ("num_classes", "size", "factor_ch", "fpn_channels"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be >= 1, got {getattr(self, key)}")


@dataclass
class DetectionDataConfig:
    path_label: str = option(
        MISSING, "COCO-format annotation JSON (training: VID + DET from det_json; eval: the VID val JSON)"
    )
    path_frame: str = option(MISSING, "frame storage the JSON's file names are relative to (folder or LMDB)")
    storage: str = option("frames", "frames (a folder of frame folders) | lmdb (keys = the JSON's folders)")
    batch_size: int = option(8, "training: pairs per batch; eval: clips per batch")
    num_workers: int = option(0, "loader worker processes")

    def __post_init__(self) -> None:
        check_choice("data.storage", self.storage, ("frames", "lmdb"))
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError("data.batch_size must be >= 1 and data.num_workers >= 0")


def _check_task(task: str) -> None:
    check_choice("task", task, ("detection",))


@dataclass
class DetectionTrainConfig(RunConfig):
    task: str = option("detection", "detection (these options) | segmentation (deltadist-train --help)")
    data: DetectionDataConfig = option(doc="training pairs", default_factory=DetectionDataConfig)
    model: DetectorConfig = option(doc="detector", default_factory=DetectorConfig)
    checkpoint: CheckpointConfig = option(
        doc="initial weights (a delta model: usually the frame-based teacher)",
        default_factory=CheckpointConfig,
    )
    engine: EngineConfig = option(
        doc="engine (the original: 7 epochs, gradient clipping 2.0)",
        default_factory=lambda: EngineConfig(epochs=7, grad_clip=2.0),
    )
    frames_per_video: int = option(15, "training pairs per video (linspace mid-points, the original's 15)")
    max_offset: int = option(9, "partner frame at offset U{-max_offset .. max_offset - 1} (the original's 9)")
    alpha: float = option(100.0, "distillation weight (EfficientDet 100; the original's Faster R-CNN 1000)")
    beta: float = option(10.0, "weight of the cost loss beta * sum_l g_l * cost_l (MACs normalised to sum 1)")
    distill_normalise: str = option(
        "per_layer", "per_layer (EfficientDet: each layer / its first value) | none (Faster R-CNN) | scalar"
    )
    distill_fraction: float = option(
        2 / 7, "distillation on for this fraction of the iterations (7 // 3 / 7)"
    )
    lr: float = option(
        1e-4, "learning rate: frame-based training (Adam) | delta: teachers and all but students (SGD)"
    )
    lr_students: float = option(0.1, "delta: learning rate of the students and gates (no weight decay)")
    momentum: float = option(0.9, "delta: SGD momentum")
    weight_decay: float = option(4e-5, "delta: weight decay outside the students (Faster R-CNN: 1e-4)")
    step_epochs: list[int] = option(doc="learning rate x gamma at these epochs", default_factory=lambda: [4])
    gamma: float = option(0.1, "learning-rate factor at each of step_epochs")

    def __post_init__(self) -> None:
        _check_task(self.task)
        check_choice("distill_normalise", self.distill_normalise, ("per_layer", "none", "scalar"))
        for key in ("alpha", "beta", "lr", "lr_students", "momentum", "weight_decay", "gamma"):
            value = getattr(self, key)
            if not (value == value and value >= 0 and value != float("inf")):
                raise ValueError(f"{key} must be a finite number >= 0; got {value}")
        if not 0.0 <= self.distill_fraction <= 1.0:
            raise ValueError(f"distill_fraction must be in [0, 1]; got {self.distill_fraction}")
        if self.frames_per_video < 1 or self.max_offset < 1:
            raise ValueError("frames_per_video and max_offset must be >= 1")


@dataclass
class DetectionEvalConfig(RunConfig):
    task: str = option("detection", "detection (these options) | segmentation (deltadist-eval --help)")
    data: DetectionDataConfig = option(
        doc="evaluation videos", default_factory=lambda: DetectionDataConfig(batch_size=4)
    )
    model: DetectorConfig = option(doc="detector (as trained)", default_factory=DetectorConfig)
    checkpoint: str = option(MISSING, "our model.pt (deltadist-train / deltadist-convert --task detection)")
    engine: RuntimeConfig = option(doc="device and precision", default_factory=RuntimeConfig)
    clip_length: int = option(10, "frames per clip: a keyframe every clip_length frames (the original's 10)")
    original_filter: bool = option(
        False,
        f"the original's EfficientDet scoring: detections with score < {ORIGINAL_MIN_SCORE} dropped, only "
        "frames with a detection scored (raises AP50: misses on frames without detections are ignored)",
    )

    def __post_init__(self) -> None:
        _check_task(self.task)
        if self.clip_length < 1:
            raise ValueError(f"clip_length must be >= 1; got {self.clip_length}")


@dataclass
class DetectionConvertConfig(RunConfig):
    task: str = option("detection", "detection (these options) | segmentation (deltadist-convert --help)")
    src: str = option(
        MISSING, "the authors' checkpoint (.pth: effdet names for EfficientDet, mmdet for Faster R-CNN)"
    )
    dst: str = option(MISSING, "where to write our model.pt")
    model: DetectorConfig = option(
        doc="detector (bias_mode original for the authors' delta-distilled checkpoints)",
        default_factory=lambda: DetectorConfig(bias_mode="original"),
    )

    def __post_init__(self) -> None:
        _check_task(self.task)


# ----------------------------------------------------------------------------- weights


def build_from_config(cfg: DetectorConfig, **extra) -> Detector:
    warnings.filterwarnings("ignore", category=FutureWarning)  # effdet's torch.jit.script
    return build_detector(
        cfg.detector,
        num_classes=cfg.num_classes,
        size=cfg.size,
        delta=cfg.delta,
        factor_ch=cfg.factor_ch,
        reduction=cfg.reduction,
        gate_init=cfg.gate_init,
        bias_mode=cfg.bias_mode,  # type: ignore[arg-type]
        fpn_channels=cfg.fpn_channels,
        **extra,
    )


_FAMILIES = {
    "effdet": ("fpn.", "class_net.", "box_net."),
    "mmdet": ("rpn_head.", "roi_head.", "neck."),
    "torchvision Faster R-CNN": ("rpn.head.", "roi_heads.", "backbone.body."),
}
_EXPECTED = {
    "efficientdet": "an EfficientDet checkpoint in effdet's names (backbone.*, fpn.*, class_net.*, box_net.*)",
    "faster_rcnn": "a Faster R-CNN checkpoint in mmdet's names (backbone.*, neck.*, rpn_head.*, roi_head.*)",
}


def _family(state: Mapping[str, torch.Tensor]) -> str | None:
    names = [k.removeprefix("model.").removeprefix("detector.") for k in state]
    for family, prefixes in _FAMILIES.items():
        if any(n.startswith(prefixes) for n in names):
            return family
    return None


def check_original_layout(path: str, detector: str) -> dict[str, torch.Tensor]:
    """The authors' checkpoint ``path`` if its key names are the layout of ``detector``'s family
    (effdet or mmdet), else a one-line :class:`ModelFileError` naming the file and the layout."""
    arch = "faster_rcnn" if detector.startswith("faster_rcnn") else "efficientdet"
    state = read_state_dict(path, expected=_EXPECTED[arch])
    family = _family(state)
    if family != ("mmdet" if arch == "faster_rcnn" else "effdet"):
        found = f"{family} names" if family else "none of the known detector layouts"
        raise ModelFileError(f"{path}: expected {_EXPECTED[arch]}; found {found}")
    return dict(state)


def _load_original(detector: Detector, path: str) -> None:
    from deltadist.detection.conversion import (
        _is_delta_layout,
        load_original_efficientdet,
        load_original_faster_rcnn,
        mmdet_to_torchvision,
    )

    arch = "faster_rcnn" if detector.name.startswith("faster_rcnn") else "efficientdet"
    state = check_original_layout(path, detector.name)
    if detector.is_delta:
        (load_original_faster_rcnn if arch == "faster_rcnn" else load_original_efficientdet)(
            detector.net, path
        )
        return
    state = mmdet_to_torchvision(state, source=path) if arch == "faster_rcnn" else dict(state)
    if _is_delta_layout(state):
        raise ModelFileError(f"{path}: holds a delta-distilled model; convert it with --model.delta true")
    if all(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items()}
    load_checked(detector.net, state, source=path)


def load_detector_weights(
    detector: Detector, init: str | None, fmt: str, *, from_teacher: bool = True
) -> None:
    """Load ``init`` (``checkpoint.format`` ``fmt``) into the built ``detector``, strictly; a
    file in another layout is a :class:`ModelFileError` naming it and what was expected.
    ``from_teacher``: a frame-based model file may initialise a converted detector (training)."""
    from deltadist.conversion import load_frame_based_state_dict

    if init is None:
        return
    try:
        if fmt == "original":
            _load_original(detector, init)
        elif fmt == "effvid":
            obj = read_torch_file(init, expected=f"an effvid {_kind(detector.is_delta)} model file")
            frame_file = isinstance(obj, Mapping) and obj.get("format") == f"effvid-{FRAME_KIND}-v1"
            if (
                detector.is_delta and frame_file and from_teacher
            ):  # a teacher: the converted model's teachers and students
                state = read_model_file(init, kind=FRAME_KIND).state_dict
                load_frame_based_state_dict(detector.net, state, source=init)
            else:
                load_checked(
                    detector.net, read_model_file(init, kind=_kind(detector.is_delta)).state_dict, source=init
                )
        else:
            state = read_state_dict(init, expected="a plain detector's state dict")
            if detector.is_delta:
                load_frame_based_state_dict(detector.net, state, source=init)
            else:
                load_checked(detector.net, state, source=init)
    except (ModelFileError, CheckpointMismatchError, ConfigError):
        raise
    except ValueError as exc:  # the converters' key errors: one line naming the file and the key
        message = str(exc)
        raise ModelFileError(message if init in message else f"{init}: {message}") from None


# ----------------------------------------------------------------------------- commands


def _pairs(cfg: DetectionTrainConfig) -> VidPairs:
    from effvid.data import open_storage

    return VidPairs(
        read_vid_json(cfg.data.path_label),
        open_storage(cfg.data.storage, cfg.data.path_frame),
        size=cfg.model.size,
        frames_per_video=cfg.frames_per_video,
        max_offset=cfg.max_offset,
    )


def _train_process(local_rank: int, cfg: DetectionTrainConfig, run_dir: Path) -> None:
    from deltadist.detection.training import (
        DetectionDistillationLoss,
        train_delta_detector,
        train_frame_detector,
    )

    seed_everything(cfg.engine.seed, deterministic=cfg.engine.deterministic)
    detector = build_from_config(cfg.model)
    load_detector_weights(detector, cfg.checkpoint.init, cfg.checkpoint.format)
    pairs = _pairs(cfg)
    common = dict(
        cfg=cfg.engine,
        run_dir=run_dir,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        step_epochs=tuple(cfg.step_epochs),
    )
    if cfg.model.delta:
        costs = detector.layer_costs() if cfg.beta != 0 else None
        if costs is not None and idist.get_rank() == 0:
            costs.to_json(run_dir / "layer_costs.json")
        loss = DetectionDistillationLoss(
            detector.net,
            detector.task_loss,
            costs,
            alpha=cfg.alpha,
            beta=cfg.beta,
            normalise=cfg.distill_normalise,  # type: ignore[arg-type]
        )
        trained = train_delta_detector(
            loss,
            pairs,
            lr=cfg.lr,
            lr_students=cfg.lr_students,
            weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
            gamma=cfg.gamma,
            distill_fraction=cfg.distill_fraction,
            **common,
        )
    else:
        trained = train_frame_detector(
            detector.net, detector.task_loss, pairs, lr=cfg.lr, gamma=cfg.gamma, **common
        )
    if not trained:
        print(f"{run_dir} already holds the finished run ({cfg.engine.epochs} epochs); nothing to train")
        return
    if idist.get_rank() == 0:
        save_model(
            detector.net, run_dir / "model.pt", kind=_kind(cfg.model.delta), config=config_to_yaml(cfg)
        )
        what = "delta" if cfg.model.delta else "frame-based"
        print(f"trained the {what} {cfg.model.detector}; saved {run_dir / 'model.pt'}")


def run_detection_train(cfg: DetectionTrainConfig, run_dir: Path) -> None:
    if cfg.checkpoint.init is None:
        what = "the teachers start" if cfg.model.delta else "the detector starts"
        print(f"warning: no --checkpoint.init: {what} from random weights")
    run_distributed(
        _train_process, cfg, run_dir, backend=cfg.engine.backend, nproc_per_node=cfg.engine.nproc_per_node
    )


def _check_kind(path: str, delta: bool) -> None:
    """A model file of the other kind (frame-based vs delta) is an error saying which option fits."""
    obj = read_torch_file(path, expected=f"an effvid {_kind(delta)} model file")
    other = f"effvid-{_kind(not delta)}-v1"
    if isinstance(obj, Mapping) and obj.get("format") == other:
        what = "a delta detector" if not delta else "a frame-based detector"
        raise ModelFileError(
            f"{path}: holds {what} ({other}); evaluate it with --model.delta {str(not delta).lower()}"
        )


def run_detection_eval(cfg: DetectionEvalConfig, run_dir: Path) -> None:
    from effvid.data import open_storage

    detector = build_from_config(cfg.model)
    _check_kind(cfg.checkpoint, cfg.model.delta)
    load_detector_weights(detector, cfg.checkpoint, "effvid", from_teacher=False)
    device = resolve_device(cfg.engine.device)
    detector.net.to(device).eval()
    clips = VidClips(
        read_vid_json(cfg.data.path_label),
        open_storage(cfg.data.storage, cfg.data.path_frame),
        size=cfg.model.size,
        clip_length=cfg.clip_length,
    )
    with autocast(device, cfg.engine.amp):
        result = evaluate_detection(
            clip_predictor(detector.net, detector.predict),
            clips,
            batch_size=cfg.data.batch_size,
            original_filter=cfg.original_filter,
            device=device,
        )
    macs = detector.macs_per_frame(cfg.clip_length)
    metrics = {
        **result,
        "macs_per_frame": macs,
        "gmacs_per_frame": macs / 1e9,
        "detector": cfg.model.detector,
        "model": "delta" if cfg.model.delta else "frame-based",
        "clip_length": cfg.clip_length,
        "original_filter": cfg.original_filter,
        "weights": cfg.checkpoint,
        "note": "AP50: COCO AP at IoU 0.5 (pycocotools) on every real frame of the clips"
        + (
            f", the original's filter (score >= {ORIGINAL_MIN_SCORE}, frames with a detection)"
            if cfg.original_filter
            else ""
        )
        + "; MACs: convolutions and matrix products, a delta model's amortised over the clip"
        + (", Faster R-CNN with 300 RoIs" if cfg.model.detector.startswith("faster_rcnn") else ""),
    }
    if cfg.model.delta:
        from deltadist.delta import delta_layers

        layers = delta_layers(detector.net)
        metrics["full_students"] = sum(layer.choice() == "full" for layer in layers.values())
        metrics["layers"] = len(layers)
    atomic_write_json(run_dir / "metrics_detection.json", metrics)
    students = (
        f", {metrics['full_students']} of {metrics['layers']} layers on the full student"
        if cfg.model.delta
        else ""
    )
    print(
        f"detection ({metrics['model']} {cfg.model.detector}, clips of {cfg.clip_length}"
        f"{', original filter' if cfg.original_filter else ''}): AP50 {100 * result['ap50']:.2f} on "
        f"{result['frames']} frames, {macs / 1e9:.3f} GMAC/frame{students}, {result['ms_per_frame']:.1f} ms/frame"
    )
    print(f"outputs: {run_dir / 'metrics_detection.json'}")


def run_detection_convert(cfg: DetectionConvertConfig, run_dir: Path | None) -> None:
    check_original_layout(cfg.src, cfg.model.detector)  # before building a large network
    detector = build_from_config(cfg.model)
    load_detector_weights(detector, cfg.src, "original")
    save_model(detector.net, cfg.dst, kind=_kind(cfg.model.delta), config=config_to_yaml(cfg))
    count = sum(p.numel() for p in detector.net.parameters())
    what = "delta" if cfg.model.delta else "frame-based"
    print(f"converted {cfg.src} -> {cfg.dst} ({what} {cfg.model.detector}, {count:,} parameters)")
