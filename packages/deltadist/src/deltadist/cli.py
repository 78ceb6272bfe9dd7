"""Console scripts: deltadist-train, -eval, -convert, -demo (Fire, effvid config).

``--task detection`` (on the command line or ``task: detection`` in a YAML) switches train, eval
and convert to the detection options (:mod:`deltadist.detection.commands`); without it they are
the segmentation commands.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import ignite.distributed as idist
import torch
import yaml

from deltadist.build import build_model, load_checkpoint
from deltadist.config import ConvertConfig, DemoConfig, EvalConfig, TrainConfig
from deltadist.conversion import KIND, load_original_checkpoint
from deltadist.data import KeyframePairs
from deltadist.detection.commands import (
    DetectionConvertConfig,
    DetectionEvalConfig,
    DetectionTrainConfig,
    run_detection_convert,
    run_detection_eval,
    run_detection_train,
)
from deltadist.evaluation import evaluate_pairs, evaluate_streaming
from deltadist.training import make_task_loss, measure_layer_costs, read_cost_table, train_delta
from effvid.cli import build_command, run_cli
from effvid.config import ConfigError, check_choice, config_to_yaml
from effvid.data import build_dataset
from effvid.engine import autocast, resolve_device, run_distributed, seed_everything
from effvid.model_files import save_model

__all__ = ["CONVERT", "DEMO", "EVAL", "TRAIN"]


def _costs(cfg: TrainConfig, model, dataset, run_dir: Path):
    """The cost vector: ``--cost_table`` if given, else the run's own (reused on resume), else measured."""
    if cfg.beta == 0 and cfg.cost_table is None:
        return None
    if cfg.cost_table is not None:
        return read_cost_table(cfg.cost_table, model)
    own = run_dir / "layer_costs.json"
    if own.is_file():
        return read_cost_table(own, model)
    frame_shape = tuple(dataset[0]["video"].shape[1:])
    costs = measure_layer_costs(model, frame_shape, cfg.cost, device=resolve_device(cfg.engine.device))
    if idist.get_world_size() > 1:  # timings differ between processes: every one uses rank 0's
        values = idist.broadcast(costs.tensor(idist.device(), torch.float64), src=0)
        costs = replace(costs, values=tuple(float(v) for v in values.cpu()))
    if idist.get_rank() == 0:
        costs.to_json(own)
    return costs


def _train_process(local_rank: int, cfg: TrainConfig, run_dir: Path) -> None:
    seed_everything(cfg.engine.seed, deterministic=cfg.engine.deterministic)  # before the model's init
    model = build_model(cfg.model)
    load_checkpoint(model, cfg.checkpoint)
    base = build_dataset(cfg.data, num_classes=cfg.model.num_classes, train=True)
    dataset = KeyframePairs(base, max_distance=cfg.max_distance)
    costs = _costs(cfg, model, dataset, run_dir)
    trained = train_delta(
        model,
        dataset,
        task_loss=make_task_loss(
            cfg.task_loss,
            ignore_index=cfg.ignore_index,
            threshold=cfg.ohem_threshold,
            min_kept=cfg.ohem_min_kept,
        ),
        costs=costs,
        cfg=cfg.engine,
        run_dir=run_dir,
        batch_size=cfg.data.train_batch_size,
        num_workers=cfg.data.num_workers,
        alpha=cfg.alpha,
        beta=cfg.beta,
        distill_fraction=cfg.distill_fraction,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        lr_students=cfg.lr_students,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        poly_power=cfg.poly_power,
    )
    if not trained:
        print(f"{run_dir} already holds the finished run ({cfg.engine.epochs} epochs); nothing to train")
        return
    if idist.get_rank() == 0:
        save_model(model, run_dir / "model.pt", kind=KIND, config=config_to_yaml(cfg))
        print(f"trained on {idist.get_world_size()} process(es); saved {run_dir / 'model.pt'}")


def run_train(cfg: TrainConfig, run_dir: Path) -> None:
    if cfg.checkpoint.init is None:
        print("warning: no --checkpoint.init: the teachers start from random weights")
    run_distributed(
        _train_process, cfg, run_dir, backend=cfg.engine.backend, nproc_per_node=cfg.engine.nproc_per_node
    )


def run_eval(cfg: EvalConfig, run_dir: Path) -> None:
    model = build_model(cfg.model)
    load_checkpoint(model, cfg.checkpoint)
    if cfg.random_weights:
        print("warning: evaluating RANDOM weights (--random_weights true)")
    dataset = build_dataset(cfg.data, num_classes=cfg.model.num_classes)
    kwargs = dict(
        num_classes=cfg.model.num_classes,
        keyframe_interval=cfg.keyframe_interval,
        batch_size=cfg.data.batch_size_on(resolve_device(cfg.engine.device)),
        device=resolve_device(cfg.engine.device),
        ignore_index=cfg.ignore_index,
    )
    run = {"pairs": evaluate_pairs, "streaming": evaluate_streaming}
    for protocol in cfg.protocols:
        with autocast(kwargs["device"], cfg.engine.amp):
            result = run[protocol](model, dataset, **kwargs)
        result.metrics["weights"] = (
            "RANDOM" if cfg.random_weights else f"{cfg.checkpoint.init} ({cfg.checkpoint.format})"
        )
        result.write(run_dir)
        print(result.summary())
    print(f"outputs: {', '.join(str(run_dir / f'metrics_{p}.json') for p in cfg.protocols)}")


def run_convert(cfg: ConvertConfig, run_dir: Path | None) -> None:
    model = build_model(cfg.model)
    load_original_checkpoint(model, cfg.src)
    save_model(model, cfg.dst, kind=KIND, config=config_to_yaml(cfg))
    print(f"converted {cfg.src} -> {cfg.dst} ({sum(p.numel() for p in model.parameters()):,} parameters)")


def run_demo(cfg: DemoConfig, run_dir: Path) -> None:
    from deltadist.demo import run_demo as demo

    demo(cfg, run_dir)


_DETECTION_HELP = (
    " With --task detection: the video object detection command (its options: {} --task detection --help)."
)

_TRAIN = build_command(
    run_train,
    TrainConfig,
    name="deltadist-train",
    doc="Train a delta-distilled segmentation model (task + distillation + gate cost) from its teacher."
    + _DETECTION_HELP.format("deltadist-train"),
    resumable=True,
)
_TRAIN_DETECTION = build_command(
    run_detection_train,
    DetectionTrainConfig,
    name="deltadist-train",
    doc="Video object detection (--task detection): train the frame-based detector (--model.delta false), "
    "or convert the teacher (--checkpoint.init) by the detection rule and train the delta detector with "
    "detector loss + distillation + gate cost, on a COCO-format VID JSON (+ DET stills) and its frames.",
    resumable=True,
)
_EVAL = build_command(
    run_eval,
    EvalConfig,
    name="deltadist-eval",
    doc="Evaluate a delta model: the original's pair protocol (amortised mIoU, MACs) and true streaming."
    + _DETECTION_HELP.format("deltadist-eval"),
)
_EVAL_DETECTION = build_command(
    run_detection_eval,
    DetectionEvalConfig,
    name="deltadist-eval",
    doc="Video object detection (--task detection): AP50 and MACs per frame of a detector on clips of "
    "clip_length frames (a keyframe every clip_length frames); writes metrics_detection.json.",
)
_CONVERT_DETECTION = build_command(
    run_detection_convert,
    DetectionConvertConfig,
    name="deltadist-convert",
    doc="Convert an authors' detection checkpoint (strict) into an effvid model.pt: deltadist-convert "
    "in.pth out.pt --task detection --model.detector efficientdet_d0|faster_rcnn_r101_dc5 "
    "[--model.delta false for a frame-based one].",
    run_dir=False,
)
_CONVERT = build_command(
    run_convert,
    ConvertConfig,
    name="deltadist-convert",
    doc="Convert an authors' delta-distilled checkpoint (strict) into an effvid model.pt: "
    "deltadist-convert in.pth out.pt [config.yml] [--model.arch ...]."
    + _DETECTION_HELP.format("deltadist-convert"),
    run_dir=False,
)
DEMO = build_command(
    run_demo,
    DemoConfig,
    name="deltadist-demo",
    doc="Synthetic benchmark end to end: teacher, delta models (full, low-rank, gated, latency-aware), table, plot.",
)


def _task(configs, overrides: dict) -> str:
    """The task: ``--task``, else the last YAML's ``task``, else segmentation. ``--task`` is taken out
    of the overrides (the segmentation schemas have no ``task`` key; the detection ones default to it)."""
    task = overrides.get("task")
    source = "--task"
    if task is None:
        for path in configs:
            try:
                data = yaml.safe_load(Path(str(path)).read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue  # the command reports the file
            if isinstance(data, dict) and "task" in data:
                task, source = data["task"], str(path)
    task = "segmentation" if task is None else str(task)
    try:
        check_choice("task", task, ("segmentation", "detection"))
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if task == "segmentation" and source != "--task":
        raise ConfigError(
            f"{source}: 'task: segmentation' is the default; remove the key (the segmentation options have no task key)"
        )
    overrides.pop("task", None)  # the detection schemas' task is detection by default
    return task


def TRAIN(*args: str, **overrides) -> None:
    """``deltadist-train [config.yml ...] [--task detection] [--key value ...]``."""
    (_TRAIN_DETECTION if _task(args, overrides) == "detection" else _TRAIN)(*args, **overrides)


def EVAL(*args: str, **overrides) -> None:
    """``deltadist-eval [config.yml ...] [--task detection] [--key value ...]``."""
    (_EVAL_DETECTION if _task(args, overrides) == "detection" else _EVAL)(*args, **overrides)


def CONVERT(*args: str, **overrides) -> None:
    """``deltadist-convert in.pth out.pt [config.yml ...] [--task detection] [--key value ...]``:
    positional non-YAML arguments are the source and destination (``--src`` / ``--dst`` also work)."""
    configs = [a for a in args if str(a).endswith((".yml", ".yaml"))]
    files = [a for a in args if not str(a).endswith((".yml", ".yaml"))]
    if len(files) > 2:
        raise SystemExit(
            f"deltadist-convert: expected in.pth out.pt, got {len(files)} file arguments {files}"
        )
    for key, value in zip(("src", "dst"), files):
        overrides[key] = value
    (_CONVERT_DETECTION if _task(configs, overrides) == "detection" else _CONVERT)(*configs, **overrides)


for _command, _name in ((TRAIN, "deltadist-train"), (EVAL, "deltadist-eval"), (CONVERT, "deltadist-convert")):
    _command.main = (  # type: ignore[attr-defined]
        lambda argv=None, command=_command, name=_name: run_cli(
            command, name=name, argv=list(sys.argv[1:] if argv is None else argv)
        )
    )
