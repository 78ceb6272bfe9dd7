"""Console scripts: videoiq-train, -test, -convert, -demo (Fire, effvid config)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch

from effvid.cli import build_command, run_cli
from effvid.config import ConfigError, config_to_yaml
from effvid.data import build_dataset
from effvid.engine import resolve_device, run_distributed, seed_everything
from effvid.model_files import ModelFileError, read_state_dict, save_model
from videoiq.build import (
    KIND,
    KIND_AP,
    KIND_FP,
    build_any_precision,
    build_teacher,
    build_videoiq,
    load_model_file,
)
from videoiq.config import ConvertConfig, DemoConfig, TestConfig, TrainConfig
from videoiq.conversion import convert_original_state_dict, load_original_checkpoint
from videoiq.evaluation import evaluate_videoiq, video_batches
from videoiq.int8 import MAX_INT_BITS, Int8Branch
from videoiq.model import VideoIQ
from videoiq.training import train

__all__ = ["CONVERT", "DEMO", "TEST", "TRAIN"]


def _train_process(local_rank: int, cfg: TrainConfig, run_dir: Path) -> None:
    """One training process (the only one without a distributed backend)."""
    seed_everything(cfg.engine.seed, deterministic=cfg.engine.deterministic)  # before the model's init
    stage = train(cfg, run_dir)
    if stage is None:
        print(f"{run_dir} already holds the finished run ({cfg.engine.epochs} epochs); nothing to train")
        return
    if idist.get_rank() == 0:
        save_model(stage.model, run_dir / "model.pt", kind=stage.kind, config=config_to_yaml(cfg))
        print(
            f"stage {cfg.stage} trained on {idist.get_world_size()} process(es); "
            f"saved {run_dir / 'model.pt'} ({stage.kind})"
        )


def run_train(cfg: TrainConfig, run_dir: Path) -> None:
    # one process, spawned processes (--engine.backend gloo|nccl --engine.nproc_per_node N), or torchrun's
    run_distributed(
        _train_process, cfg, run_dir, backend=cfg.engine.backend, nproc_per_node=cfg.engine.nproc_per_node
    )


def run_test(cfg: TestConfig, run_dir: Path) -> None:
    model = build_videoiq(cfg.model)
    if cfg.checkpoint.init is not None:
        load_model_file(model, cfg.checkpoint.init, fmt=cfg.checkpoint.format)
    else:
        print("warning: running on RANDOM weights (--random_weights true); every output records it")
    dataset = build_dataset(cfg.data, num_classes=cfg.model.num_class)
    device = resolve_device(cfg.engine.device)
    batches = video_batches(
        dataset, batch_size=cfg.data.batch_size_on(device), num_workers=cfg.data.num_workers
    )
    int8, int8_info = ({}, None) if not cfg.int8 else _int8_branches(cfg, model, batches, device)
    if cfg.sample:
        torch.manual_seed(cfg.seed)
    result = evaluate_videoiq(
        model, batches, device=device, sample=cfg.sample, progress=cfg.engine.progress, int8=int8
    )
    if int8_info is not None:
        result.metrics["int8"] = int8_info
    result.metrics["weights"] = (
        "RANDOM (--random_weights true)"
        if cfg.random_weights
        else f"{cfg.checkpoint.init} ({cfg.checkpoint.format})"
    )
    result.metrics["videos_per_s"] = result.metrics["num_videos"] / max(result.seconds, 1e-9)
    result.write(run_dir)
    print(result.summary())
    print(f"outputs: {run_dir / 'metrics_eval.json'}, {run_dir / 'predictions.jsonl'}")


def _int8_branches(
    cfg: TestConfig, model: VideoIQ, batches: Iterable[Any], device: torch.device
) -> tuple[dict[int, Int8Branch], dict[str, Any]]:
    """--int8: an :class:`Int8Branch` for every bit width <= 8 of the family, calibrated on the
    frames of the first ``int8_calibration_batches`` evaluated batches."""
    if device.type != "cpu":
        raise ConfigError(
            f"--int8 true runs PyTorch's quantised CPU kernels only; the device is '{device}' "
            "(give --engine.device cpu, or leave --int8 false)"
        )
    if cfg.int8_engine not in torch.backends.quantized.supported_engines:
        raise ConfigError(
            f"--int8_engine {cfg.int8_engine} is not available in this torch build; supported: "
            f"{', '.join(e for e in torch.backends.quantized.supported_engines if e != 'none')}"
        )
    bits = [b for b in model.family if b <= MAX_INT_BITS]
    if not bits:
        raise ConfigError(
            f"--int8 true: the family {model.family} has no bit width <= {MAX_INT_BITS} to run on int8 kernels"
        )
    frames = []
    for i, batch in enumerate(batches):
        if i >= cfg.int8_calibration_batches:
            break
        frames.append(batch["video"].flatten(0, 1))
    calibration = torch.cat(frames)
    model.eval()
    try:
        branches = {b: Int8Branch(model.recognizer, b, calibration, engine=cfg.int8_engine) for b in bits}
    except ValueError as exc:  # a mean_aligned network, a clip <= 0
        raise ConfigError(f"--int8 true: {exc}") from None
    info = {
        "branches": bits,
        "float_path": [p if p == "float" else int(p) for p in model.precisions if p not in bits],
        "engine": cfg.int8_engine,
        "calibration_frames": int(calibration.shape[0]),
    }
    print(
        f"int8: bit widths {bits} on the {cfg.int8_engine} int8 kernels (calibrated on "
        f"{calibration.shape[0]} frames); {info['float_path'] or 'nothing'} fake-quantised"
    )
    return branches, info


def run_convert(cfg: ConvertConfig, run_dir: Path) -> None:
    state = read_state_dict(cfg.src, expected="a VideoIQ checkpoint")
    try:
        layout = convert_original_state_dict(state, source=str(cfg.src)).layout
    except ValueError as exc:  # another layout (a float ResNet, an effvid file...): one error line
        raise ModelFileError(
            f"{exc}; videoiq-convert reads resnet_videoiq or resnet_pact_ap checkpoints"
        ) from None
    model = build_videoiq(cfg.model) if layout == "videoiq" else build_any_precision(cfg.model)
    teacher = build_teacher(cfg.model) if cfg.teacher_dst else None
    load_original_checkpoint(model, cfg.src, teacher=teacher)
    config = config_to_yaml(cfg)
    kind = KIND if layout == "videoiq" else KIND_AP
    save_model(model, cfg.dst, kind=kind, config=config)
    print(
        f"converted {cfg.src} -> {cfg.dst} ({kind}, {sum(p.numel() for p in model.parameters()):,} parameters)"
    )
    if teacher is not None:
        save_model(teacher, cfg.teacher_dst, kind=KIND_FP, config=config)  # type: ignore[arg-type]
        print(f"and its float teacher -> {cfg.teacher_dst} ({KIND_FP})")


def run_demo(cfg: DemoConfig, run_dir: Path) -> None:
    from videoiq.demo import run_demo as demo

    demo(cfg, run_dir)


TRAIN = build_command(
    run_train,
    TrainConfig,
    name="videoiq-train",
    doc="Train one stage of VideoIQ: --stage fp | ap | policy_backbone | policy, each from the previous one's model.pt.",
    resumable=True,
)
TEST = build_command(
    run_test,
    TestConfig,
    name="videoiq-test",
    doc="Evaluate VideoIQ, each frame at its chosen precision: top-1, mAP, the policy's distribution, "
    "cost per video (paper formula, measured MACs, BitOPs) and predictions.jsonl.",
)
_CONVERT = build_command(
    run_convert,
    ConvertConfig,
    name="videoiq-convert",
    doc="videoiq-convert IN.pth OUT.pt [--model.KEY VALUE ...]: an authors' checkpoint (resnet_videoiq or "
    "resnet_pact_ap, checked strictly) -> our model file.",
)
DEMO = build_command(
    run_demo,
    DemoConfig,
    name="videoiq-demo",
    doc="Synthetic benchmark end to end: the four stages, fixed precisions vs VideoIQ, table and plot.",
)


def CONVERT(*args: str, **overrides: Any) -> None:
    """``videoiq-convert IN.pth OUT.pt [CONFIG.yml ...] [--model.KEY VALUE ...]``: positional
    arguments that are not YAML files are ``src`` and ``dst``."""
    configs = [a for a in args if str(a).endswith((".yml", ".yaml"))]
    files = [str(a) for a in args if not str(a).endswith((".yml", ".yaml"))]
    if len(files) > 2:
        raise ConfigError(f"videoiq-convert takes IN.pth and OUT.pt, got {len(files)} paths: {files}")
    for key, value in zip(("src", "dst"), files):
        if key in overrides:
            raise ConfigError(f"{key} given twice: as the path '{value}' and as --{key}")
        overrides[key] = value
    _CONVERT(*configs, **overrides)


CONVERT.main = lambda argv=None: run_cli(CONVERT, name="videoiq-convert", argv=argv)  # type: ignore[attr-defined]
