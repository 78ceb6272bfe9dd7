"""Console scripts: frameexit-infer, -train, -convert, -sweep, -demo (Fire, effvid config)."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import ignite.distributed as idist

from effvid.cli import build_command, package_configs
from effvid.config import config_to_yaml
from effvid.data import build_dataset
from effvid.engine import resolve_device, run_distributed, seed_everything
from effvid.io import atomic_write_text
from effvid.model_files import save_model
from effvid.plots import Series, plot_tradeoff
from frameexit.build import build_model, load_checkpoint
from frameexit.config import ConvertConfig, DemoConfig, InferConfig, SweepConfig, TrainConfig
from frameexit.conversion import KIND, load_original_checkpoint
from frameexit.evaluation import evaluate_dataset
from frameexit.training import train_stage1, train_stage2

__all__ = ["CONVERT", "DEMO", "INFER", "SWEEP", "TRAIN"]

CONFIGS = package_configs("frameexit")


def _model_for(cfg: InferConfig | TrainConfig):
    model = build_model(cfg.model, num_frames=cfg.data.num_frames)
    load_checkpoint(model, cfg.checkpoint)
    return model


def _evaluate(cfg: InferConfig, model, dataset, **kwargs):
    return evaluate_dataset(
        model,
        dataset,
        batch_size=cfg.data.batch_size_on(resolve_device(cfg.engine.device)),
        device=resolve_device(cfg.engine.device),
        stream=cfg.stream,
        prefetch=cfg.prefetch,
        num_threads=cfg.data.num_workers,
        progress=cfg.engine.progress,
        fast=cfg.fast,
        amp=cfg.engine.amp,
        exit_guard=cfg.exit_guard,
        **kwargs,
    )


def _weights_used(cfg: InferConfig) -> str:
    return (
        "RANDOM (--random_weights true)"
        if cfg.random_weights
        else f"{cfg.checkpoint.init} ({cfg.checkpoint.format})"
    )


def run_infer(cfg: InferConfig, run_dir: Path) -> None:
    model = _model_for(cfg)
    dataset = build_dataset(cfg.data, num_classes=cfg.model.num_class)
    result = _evaluate(cfg, model, dataset, max_steps=cfg.max_steps, exits=not cfg.no_exit)
    result.metrics["weights"] = _weights_used(cfg)
    if cfg.random_weights:
        print("warning: running on RANDOM weights (--random_weights true); every output records it")
        for row in result.rows:
            row["random_weights"] = True
    result.write(run_dir)
    print(result.summary())
    print(f"outputs: {run_dir / 'metrics_eval.json'}, {run_dir / 'predictions.jsonl'}")


def _train_process(local_rank: int, cfg: TrainConfig, run_dir: Path) -> None:
    """One training process (the only one without a distributed backend)."""
    seed_everything(cfg.engine.seed, deterministic=cfg.engine.deterministic)  # before the model's init
    model = _model_for(cfg)
    dataset = build_dataset(cfg.data, num_classes=cfg.model.num_class, train=True)
    validate = None
    if cfg.val_list:
        val = build_dataset(replace(cfg.data, path_label=cfg.val_list), num_classes=cfg.model.num_class)

        def validate() -> dict:
            device = next(model.parameters()).device
            result = evaluate_dataset(
                model, val, batch_size=cfg.data.train_batch_size, device=device, progress=False
            )
            return {k: result.metrics[k] for k in ("hit1", "map", "mean_frames", "mean_gmacs")}

    if cfg.stage == 1:
        trained = train_stage1(
            model,
            dataset,
            cfg.data,
            cfg.engine,
            run_dir,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            last_step_only=cfg.all_frames_only,
            validate=validate,
        )
    else:
        trained = train_stage2(
            model, dataset, cfg.data, cfg.engine, run_dir, beta=cfg.beta, lr=cfg.lr, validate=validate
        )
    if not trained:
        print(f"{run_dir} already holds the finished run ({cfg.engine.epochs} epochs); nothing to train")
        return
    if idist.get_rank() == 0:
        save_model(model, run_dir / "model.pt", kind=KIND, config=config_to_yaml(cfg))
        print(f"trained on {idist.get_world_size()} process(es); saved {run_dir / 'model.pt'}")


def run_train(cfg: TrainConfig, run_dir: Path) -> None:
    if cfg.stage == 2 and cfg.checkpoint.init is None:
        print("warning: stage 2 without --checkpoint.init trains gates on an untrained classifier")
    # one process, spawned processes (--engine.backend gloo|nccl --engine.nproc_per_node N), or torchrun's
    run_distributed(
        _train_process, cfg, run_dir, backend=cfg.engine.backend, nproc_per_node=cfg.engine.nproc_per_node
    )


def run_convert(cfg: ConvertConfig, run_dir: Path) -> None:
    model = build_model(cfg.model, num_frames=cfg.num_frames)
    load_original_checkpoint(model, cfg.src)
    save_model(model, cfg.dst, kind=KIND, config=config_to_yaml(cfg))
    print(f"converted {cfg.src} -> {cfg.dst} ({sum(p.numel() for p in model.parameters()):,} parameters)")


def run_sweep(cfg: SweepConfig, run_dir: Path) -> None:
    base = _model_for(cfg)
    dataset = build_dataset(cfg.data, num_classes=cfg.model.num_class)
    lines = ["gate_threshold,hit1,map,mean_frames,mean_gmacs"]
    points = []
    if cfg.random_weights:
        print("warning: sweeping RANDOM weights (--random_weights true)")
    for threshold in cfg.thresholds:
        model = copy.deepcopy(base)
        model.gate_threshold = threshold
        m = _evaluate(cfg, model, dataset).metrics
        lines.append(f"{threshold},{m['hit1']},{m['map']},{m['mean_frames']},{m['mean_gmacs']}")
        points.append((threshold, m))
        print(
            f"gate threshold {threshold}: Hit@1 {m['hit1']:.4f}  mAP {m['map']:.4f}  GMACs {m['mean_gmacs']:.4f}"
        )
    atomic_write_text(run_dir / "tradeoff.csv", "\n".join(lines) + "\n")
    plot_tradeoff(
        [
            Series(
                "FrameExit",
                [m["mean_gmacs"] for _, m in points],
                [100 * m["hit1"] for _, m in points],
                labels=[f"g>{t}" for t, _ in points],
            )
        ],
        run_dir / "tradeoff.png",
        ylabel="Hit@1 (%)",
        title="FrameExit: gate threshold sweep",
    )
    print(f"wrote {run_dir / 'tradeoff.csv'} and {run_dir / 'tradeoff.png'}")


def run_demo(cfg: DemoConfig, run_dir: Path) -> None:
    from frameexit.demo import run_demo as demo

    demo(cfg, run_dir)


INFER = build_command(
    run_infer,
    InferConfig,
    name="frameexit-infer",
    doc="Batched early-exit inference: metrics, exit histogram, GMACs, predictions.jsonl.",
    config_dir=CONFIGS,
)
TRAIN = build_command(
    run_train,
    TrainConfig,
    name="frameexit-train",
    doc="Train FrameExit: stage 1 (backbone, MLP, classifiers) or stage 2 (exit gates).",
    config_dir=CONFIGS,
    resumable=True,
)
CONVERT = build_command(
    run_convert,
    ConvertConfig,
    name="frameexit-convert",
    doc="Convert an authors' checkpoint (strict) into an effvid model.pt.",
    config_dir=CONFIGS,
    run_dir=False,
)
SWEEP = build_command(
    run_sweep,
    SweepConfig,
    name="frameexit-sweep",
    doc="Accuracy-vs-GMACs trade-off over gate thresholds: table (CSV) and PNG.",
    config_dir=CONFIGS,
)
DEMO = build_command(
    run_demo,
    DemoConfig,
    name="frameexit-demo",
    doc="Synthetic benchmark end to end: train FrameExit and a baseline, compare, plot.",
    config_dir=CONFIGS,
)
