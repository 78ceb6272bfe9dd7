"""Console scripts: frameexit-infer, -train, -convert, -sweep, -demo (Fire, effvid config)."""

from __future__ import annotations

import copy
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import ignite.distributed as idist

from effvid.cli import build_command, run_cli
from effvid.config import MISSING, RunConfig, config_to_yaml, option
from effvid.engine import resolve_device, run_distributed
from effvid.io import atomic_write_text
from effvid.plots import Series, plot_tradeoff
from frameexit.config import InferConfig, ModelConfig, SweepConfig, TrainConfig
from frameexit.conversion import load_original_checkpoint
from frameexit.data import build_dataset
from frameexit.evaluation import evaluate_dataset
from frameexit.model_io import build_model, load_weights, save_model
from frameexit.training import train_stage1, train_stage2

__all__ = ["CONVERT", "DEMO", "INFER", "SWEEP", "TRAIN"]


def _model_for(cfg: InferConfig | TrainConfig):
    model = build_model(cfg.model, num_frames=cfg.data.num_frames)
    load_weights(model, cfg.checkpoint)
    return model


def _evaluate(cfg: InferConfig, model, dataset, **kwargs):
    return evaluate_dataset(
        model,
        dataset,
        batch_size=cfg.data.batch_size,
        device=resolve_device(cfg.device),
        stream=cfg.stream,
        num_threads=cfg.data.num_workers,
        **kwargs,
    )


def run_infer(cfg: InferConfig, run_dir: Path) -> None:
    model = _model_for(cfg)
    dataset = build_dataset(cfg.data, num_classes=cfg.model.num_class)
    result = _evaluate(cfg, model, dataset, max_steps=cfg.max_steps, exits=not cfg.no_exit)
    result.write(run_dir)
    print(result.summary())
    print(f"outputs: {run_dir / 'metrics_eval.json'}, {run_dir / 'predictions.jsonl'}")


def _train_process(local_rank: int, cfg: TrainConfig, run_dir: Path) -> None:
    """One training process (the only one without a distributed backend)."""
    model = _model_for(cfg)
    dataset = build_dataset(cfg.data, num_classes=cfg.model.num_class, train=True)
    if cfg.stage == 1:
        train_stage1(
            model,
            dataset,
            cfg.engine,
            run_dir,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            last_step_only=cfg.all_frames_only,
        )
    else:
        train_stage2(model, dataset, cfg.engine, run_dir, beta=cfg.beta, lr=cfg.lr)
    if idist.get_rank() == 0:
        save_model(model, run_dir / "model.pt", config_yaml=config_to_yaml(cfg))
        print(f"trained on {idist.get_world_size()} process(es); saved {run_dir / 'model.pt'}")


def run_train(cfg: TrainConfig, run_dir: Path) -> None:
    if cfg.stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {cfg.stage}")
    if cfg.stage == 2 and cfg.checkpoint.init is None:
        print("warning: stage 2 without --checkpoint.init trains gates on an untrained classifier")
    # one process, spawned processes (--engine.backend gloo|nccl --engine.nproc_per_node N), or torchrun's
    run_distributed(
        _train_process, cfg, run_dir, backend=cfg.engine.backend, nproc_per_node=cfg.engine.nproc_per_node
    )


@dataclass
class ConvertConfig(RunConfig):
    src: str = option(MISSING, "the authors' checkpoint (.pth, DataParallel state dict)")
    dst: str = option(MISSING, "where to write our model.pt")
    num_frames: int = option(10, "frames (classifiers) of the checkpoint")
    model: ModelConfig = option(doc="model", default_factory=ModelConfig)


def run_convert(cfg: ConvertConfig, run_dir: Path) -> None:
    model = build_model(cfg.model, num_frames=cfg.num_frames)
    load_original_checkpoint(model, cfg.src)
    save_model(model, cfg.dst, config_yaml=config_to_yaml(cfg))
    print(f"converted {cfg.src} -> {cfg.dst} ({sum(p.numel() for p in model.parameters()):,} parameters)")


def tradeoff_table(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def run_sweep(cfg: SweepConfig, run_dir: Path) -> None:
    base = _model_for(cfg)
    dataset = build_dataset(cfg.data, num_classes=cfg.model.num_class)
    rows = []
    for threshold in cfg.thresholds:
        model = copy.deepcopy(base)
        model.gate_threshold = threshold
        result = _evaluate(cfg, model, dataset, progress=False)
        m = result.metrics
        rows.append(
            {
                "gate_threshold": threshold,
                "hit1": m["hit1"],
                "map": m["map"],
                "mean_frames": m["mean_frames"],
                "mean_gmacs": m["mean_gmacs"],
            }
        )
        print(
            f"gate threshold {threshold}: Hit@1 {m['hit1']:.4f}  mAP {m['map']:.4f}  GMACs {m['mean_gmacs']:.4f}"
        )
    atomic_write_text(run_dir / "tradeoff.csv", tradeoff_table(rows))
    plot_tradeoff(
        [
            Series(
                "FrameExit",
                [r["mean_gmacs"] for r in rows],
                [100 * r["hit1"] for r in rows],
                labels=[f"g>{r['gate_threshold']}" for r in rows],
            )
        ],
        run_dir / "tradeoff.png",
        ylabel="Hit@1 (%)",
        title="FrameExit: gate threshold sweep",
    )
    print(f"wrote {run_dir / 'tradeoff.csv'} and {run_dir / 'tradeoff.png'}")


INFER = build_command(
    run_infer,
    InferConfig,
    name="frameexit-infer",
    doc="Batched early-exit inference: metrics, exit histogram, GMACs, predictions.jsonl.",
)
TRAIN = build_command(
    run_train,
    TrainConfig,
    name="frameexit-train",
    doc="Train FrameExit: stage 1 (backbone, MLP, classifiers) or stage 2 (exit gates).",
)
CONVERT = build_command(
    run_convert,
    ConvertConfig,
    name="frameexit-convert",
    doc="Convert an authors' checkpoint (strict) into an effvid model.pt.",
)
SWEEP = build_command(
    run_sweep,
    SweepConfig,
    name="frameexit-sweep",
    doc="Accuracy-vs-GMACs trade-off over gate thresholds: table (CSV) and PNG.",
)


def _demo_command():
    from frameexit.demo import DemoConfig, run_demo

    return build_command(
        run_demo,
        DemoConfig,
        name="frameexit-demo",
        doc="Synthetic benchmark end to end: train FrameExit and a baseline, compare, plot.",
    )


DEMO = _demo_command()


def infer_main() -> None:
    run_cli(INFER, name="frameexit-infer")


def train_main() -> None:
    run_cli(TRAIN, name="frameexit-train")


def convert_main() -> None:
    run_cli(CONVERT, name="frameexit-convert")


def sweep_main() -> None:
    run_cli(SWEEP, name="frameexit-sweep")


def demo_main() -> None:
    run_cli(DEMO, name="frameexit-demo")
