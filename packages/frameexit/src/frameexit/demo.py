"""The main job: the synthetic benchmark end to end on a laptop CPU.

1. generate the benchmark (reused when already there);
2. train the static baseline (max pooling over all frames, one classifier);
3. stage 1: fine-tune it with every step's classifier - FrameExit without exit;
4. for each beta, train stage 2 (the gates) from the stage-1 weights;
5. evaluate on the validation videos, streaming frames step by step; print the table, write it
   (``results.txt``, ``results.json`` in the core's shared schema) and the accuracy-vs-GMACs
   curve (``tradeoff.png``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path

from effvid.config import config_to_yaml
from effvid.data import SyntheticSpec, build_dataset, generate
from effvid.engine import resolve_device, seed_everything
from effvid.io import atomic_write_json, atomic_write_text
from effvid.model_files import save_model
from effvid.plots import plot_results
from effvid.reports import ResultRow, StageClock, cheapest_within, format_results, write_results
from frameexit.build import build_model
from frameexit.config import DemoConfig
from frameexit.conversion import KIND
from frameexit.evaluation import evaluate_dataset
from frameexit.training import train_stage1, train_stage2

__all__ = ["run_demo"]

METHOD = "FrameExit"


def _row(method: str, setting: str, result, seconds: float) -> ResultRow:
    m = result.metrics
    return ResultRow(
        method=method,
        setting=setting,
        metrics={"top1": m["hit1"], "map": m["map"]},
        gmacs_per_video=m["mean_gmacs"],
        frames_per_video=m["mean_frames"],
        videos_per_s=m["num_videos"] / seconds,
        extra={"gmacs_backbone_per_video": m["mean_gmacs_backbone"]},
    )


def run_demo(cfg: DemoConfig, run_dir: Path) -> None:
    clock = StageClock()
    k, t = cfg.model.num_class, cfg.data.num_frames
    info = generate(
        cfg.root,
        SyntheticSpec(storage=cfg.data.storage, num_videos=cfg.num_videos, num_classes=k),
        progress=True,
    )
    data = replace(cfg.data, format="list", path_frame=str(info.storage_path), path_classid=str(info.classes))
    train_ds = build_dataset(replace(data, path_label=str(info.train_list)), num_classes=k, train=True)
    val_ds = build_dataset(replace(data, path_label=str(info.val_list)), num_classes=k)
    device = resolve_device(cfg.stage1.device)
    print(f"data: {len(train_ds)} training and {len(val_ds)} validation videos in {info.storage_path}")
    clock.lap("data")

    def evaluate(model, **kw):
        start = time.perf_counter()
        result = evaluate_dataset(
            model, val_ds, batch_size=data.train_batch_size, device=device, progress=False, **kw
        )
        return result, time.perf_counter() - start

    def save(model, name: str) -> None:
        save_model(model, run_dir / name / "model.pt", kind=KIND, config=config_to_yaml(cfg))

    # The all-frames model first (as the authors did), then stage 1 fine-tunes every step's
    # classifier from it: trained from scratch, per-step supervision on evidence-free frames
    # pushes the network to memorise training videos, which costs validation accuracy.
    print("baseline: max pooling over all frames, one classifier")
    seed_everything(cfg.stage1.seed, deterministic=cfg.stage1.deterministic)  # before the model's init
    static = build_model(cfg.model, num_frames=t)
    train_stage1(static, train_ds, data, cfg.stage1, run_dir / "baseline", lr=cfg.lr, last_step_only=True)
    save(static, "baseline")
    clock.lap("baseline training")
    print("stage 1: every step's classifier, fine-tuned from the baseline")
    stage1 = copy.deepcopy(static)
    train_stage1(
        stage1,
        train_ds,
        data,
        replace(cfg.stage1, epochs=cfg.finetune_epochs),
        run_dir / "stage1",
        lr=cfg.finetune_lr,
    )
    save(stage1, "stage1")
    clock.lap("stage-1 training")

    baseline = _row("all frames", f"trained alone ({t} frames)", *evaluate(static, exits=False))
    rows = [baseline, _row(METHOD, f"no exit ({t} frames)", *evaluate(stage1, exits=False))]
    for frames in sorted({1, 2, t // 2}):
        rows.append(_row("first k frames", f"k={frames}", *evaluate(stage1, exits=False, max_steps=frames)))
    clock.lap("fixed-frame evaluation")
    for beta in cfg.betas:
        print(f"stage 2: exit gates, beta={beta:g}")
        gated = copy.deepcopy(stage1)
        name = f"stage2-beta{beta:g}"
        train_stage2(gated, train_ds, data, cfg.stage2, run_dir / name, beta=beta, lr=cfg.lr)
        save(gated, name)
        result, seconds = evaluate(gated)
        result.write(run_dir / name)
        rows.append(_row(METHOD, f"beta={beta:g}", result, seconds))
        clock.lap(f"stage 2, beta={beta:g}")

    # the reference: the better of the two all-frames models (same GMACs), never the weaker
    reference = max(rows[:2], key=lambda r: r.metrics["top1"])
    gated_rows = [r for r in rows if r.setting.startswith("beta=")]
    best = cheapest_within(gated_rows, reference, metric="top1", tolerance=0.01, max_cost_share=0.5)
    if best is not None:
        verdict = (
            f"Target met by FrameExit with {best.setting}: top-1 {100 * best.metrics['top1']:.2f} vs "
            f"{100 * reference.metrics['top1']:.2f} for '{reference.label}', at "
            f"{best.gmacs_per_video / reference.gmacs_per_video:.1%} of its GMACs."
        )
    else:
        verdict = f"Target NOT met: no beta of the sweep is within 1 point of '{reference.label}' at <= 50% of its GMACs."
    table = format_results(rows, reference=reference, metric="top1")
    print("\n" + table)
    print("GMACs = 1e9 multiply-accumulates per video, measured (backbone, MLP, gates, classifiers).")
    print(verdict)
    atomic_write_text(run_dir / "results.txt", f"{table}\n{verdict}\n")
    write_results(run_dir / "results.json", rows)
    plot_results(rows, run_dir / "tradeoff.png", metric="top1", title="FrameExit on the synthetic benchmark")
    total = clock.total
    atomic_write_json(run_dir / "timing.json", {"seconds": total, "stages": clock.stages})
    print(
        f"wrote {run_dir / 'results.txt'}, {run_dir / 'results.json'}, {run_dir / 'tradeoff.png'}; "
        f"total time {total:.0f} s"
    )
