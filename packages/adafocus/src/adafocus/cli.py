"""Console scripts: adafocus-train, -test, -show, -convert, -demo (Fire, effvid config)."""

from __future__ import annotations

from pathlib import Path

from adafocus.build import KIND, KINDS, build_model, load_checkpoint
from adafocus.config import ConvertConfig, DemoConfig, EvalConfig, ShowConfig, TrainConfig
from adafocus.conversion import load_original_checkpoint
from adafocus.evaluation import evaluate_dataset
from adafocus.inference import inference_copy
from adafocus.model import AdaFocus
from adafocus.training import run_training
from adafocus.visualize import show_video
from effvid.cli import build_command
from effvid.config import config_to_yaml
from effvid.data import DataError, VideoClassificationDataset, build_dataset
from effvid.engine import resolve_device
from effvid.model_files import save_model

__all__ = ["CONVERT", "DEMO", "SHOW", "TEST", "TRAIN"]

#: the model files adafocus-test and adafocus-show read (stage 1's with random patches)
EVALUATED_KINDS = (KIND, KINDS[2], KINDS[1])


def _model_and_data(cfg: EvalConfig, purpose: str) -> tuple[AdaFocus, VideoClassificationDataset]:
    model = build_model(cfg.model)
    if cfg.random_weights:
        print("warning: running on RANDOM weights (--random_weights true); every output records it")
    else:
        kind = load_checkpoint(
            model, cfg.checkpoint, kinds=EVALUATED_KINDS, purpose=purpose, model_cfg=cfg.model
        )
        if kind == KINDS[1] and cfg.policy != "random":
            print(
                f"warning: {cfg.checkpoint.init} is a stage-1 model, whose policy is untrained; --policy random evaluates it as trained"
            )
    return model, build_dataset(cfg.data, num_classes=cfg.model.num_class)


def run_test(cfg: EvalConfig, run_dir: Path) -> None:
    model, dataset = _model_and_data(cfg, "adafocus-test")
    result = evaluate_dataset(
        model,
        dataset,
        batch_size=cfg.data.batch_size_on(resolve_device(cfg.engine.device)),
        device=resolve_device(cfg.engine.device),
        policy=cfg.policy,
        threshold=cfg.exit_threshold,
        skip_similarity=cfg.skip_similarity,
        stream=cfg.stream,
        num_threads=cfg.data.num_workers,
        seed=cfg.seed,
        amp=cfg.engine.amp,
        progress=cfg.engine.progress,
        fast=cfg.fast,
    )
    result.metrics["weights"] = (
        "RANDOM (--random_weights true)"
        if cfg.random_weights
        else f"{cfg.checkpoint.init} ({cfg.checkpoint.format})"
    )
    result.write(run_dir)
    print(result.summary())
    print(f"outputs: {run_dir / 'metrics_eval.json'}, {run_dir / 'predictions.jsonl'}")


def run_show(cfg: ShowConfig, run_dir: Path) -> None:
    model, dataset = _model_and_data(cfg, "adafocus-show")
    keys = [r.key for r in dataset.records]
    key = cfg.video or keys[0]
    if key not in keys:
        raise DataError(f"video '{key}' is not in {cfg.data.path_label}; it lists e.g. {keys[:3]}")
    path = run_dir / f"patches_{Path(key).name}.png"
    device = resolve_device(cfg.engine.device)
    shown = show_video(
        inference_copy(model, cfg.fast, device=device),
        dataset,
        keys.index(key),
        path,
        device=device,
        policy=cfg.policy,
        threshold=cfg.exit_threshold,
        skip_similarity=cfg.skip_similarity,
        seed=cfg.seed,
        amp=cfg.engine.amp,
        mean=tuple(cfg.data.transform.mean),
        std=tuple(cfg.data.transform.std),
        columns=cfg.columns,
        scale=cfg.scale,
    )
    top = max(range(len(shown["probs"])), key=shown["probs"].__getitem__)
    print(
        f"{key}: label {shown['label']}, predicted {top} ({shown['probs'][top]:.2f}) after "
        f"{shown['exit_step'] + 1} step(s); picture: {path}"
    )


def run_convert(cfg: ConvertConfig, run_dir: Path) -> None:
    model = build_model(cfg.model)
    load_original_checkpoint(model, cfg.src, policy_copy=cfg.policy_copy, allow_missing_policy=cfg.stage == 1)
    save_model(model, cfg.dst, kind=KINDS[cfg.stage], config=config_to_yaml(cfg))
    print(
        f"converted {cfg.src} -> {cfg.dst} ({KINDS[cfg.stage]}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters)"
    )


def run_demo(cfg: DemoConfig, run_dir: Path) -> None:
    from adafocus.demo import run_demo as demo

    demo(cfg, run_dir)


TRAIN = build_command(
    run_training,
    TrainConfig,
    name="adafocus-train",
    doc="Train one AdaFocus stage: 0 backbones, 1 focus + classifier, 2 policy (ppo | differentiable), 3 classifier.",
    resumable=True,
)
TEST = build_command(
    run_test,
    EvalConfig,
    name="adafocus-test",
    doc="Evaluate: top-1, mAP, GMACs per video, videos/s; predictions.jsonl with each frame's patch.",
)
SHOW = build_command(
    run_show,
    ShowConfig,
    name="adafocus-show",
    doc="Draw a video's frames with the patches the policy chose (PNG).",
)
CONVERT = build_command(
    run_convert,
    ConvertConfig,
    name="adafocus-convert",
    doc="Convert an authors' checkpoint.pth.tar (strict) into an effvid model.pt.",
    run_dir=False,
)
DEMO = build_command(
    run_demo,
    DemoConfig,
    name="adafocus-demo",
    doc="Synthetic benchmark end to end: the four stages, both policy trainings, baselines, table, plots.",
)
