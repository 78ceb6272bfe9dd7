"""The main job: the synthetic benchmark end to end on a laptop CPU.

1. generate the benchmark (reused when already there);
2. train the static baseline (max pooling over all frames, one classifier);
3. stage 1: fine-tune it with every step's classifier - FrameExit without exit;
4. for each beta, train stage 2 (the gates) from the stage-1 weights;
5. evaluate on the validation videos, streaming frames step by step; print the table, write it
   (CSV + JSON) and the accuracy-vs-GMACs curve (PNG).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path

from effvid.config import config_to_yaml
from effvid.data import SyntheticSpec, generate
from effvid.engine import resolve_device
from effvid.io import atomic_write_json, atomic_write_text
from effvid.plots import Point, Series, plot_tradeoff
from frameexit.config import DemoConfig
from frameexit.data import build_dataset
from frameexit.evaluation import evaluate_dataset
from frameexit.model_io import build_model, save_model
from frameexit.training import train_stage1, train_stage2

__all__ = ["DemoConfig", "run_demo"]


def _row(name: str, metrics: dict) -> dict:
    return {
        "method": name,
        "top1": metrics["hit1"],
        "frames": metrics["mean_frames"],
        "gmacs": metrics["mean_gmacs"],
        "gmacs_backbone": metrics["mean_gmacs_backbone"],
    }


def run_demo(cfg: DemoConfig, run_dir: Path) -> None:
    start = time.perf_counter()
    k, t = cfg.model.num_class, cfg.data.num_frames
    info = generate(
        cfg.root, SyntheticSpec(storage=cfg.storage, num_videos=cfg.num_videos, num_classes=k), progress=True
    )
    data = replace(
        cfg.data,
        name="list",
        storage=info.storage,
        path_frame=str(info.storage_path),
        path_classid=str(info.classes),
    )
    train_ds = build_dataset(replace(data, path_label=str(info.train_list)), num_classes=k, train=True)
    val_ds = build_dataset(replace(data, path_label=str(info.val_list)), num_classes=k)
    device = resolve_device(cfg.stage1.device)
    print(f"data: {len(train_ds)} training and {len(val_ds)} validation videos in {info.storage_path}")

    def evaluate(model, **kw):
        return evaluate_dataset(
            model, val_ds, batch_size=cfg.data.batch_size, device=device, progress=False, **kw
        )

    # The all-frames model first (as the authors did), then stage 1 fine-tunes every step's
    # classifier from it: trained from scratch, per-step supervision on evidence-free frames
    # pushes the network to memorise training videos, which costs validation accuracy.
    print("baseline: max pooling over all frames, one classifier")
    static = train_stage1(
        build_model(cfg.model, num_frames=t),
        train_ds,
        cfg.stage1,
        run_dir / "baseline",
        lr=cfg.lr,
        last_step_only=True,
    )
    save_model(static, run_dir / "baseline" / "model.pt", config_yaml=config_to_yaml(cfg))
    print("stage 1: every step's classifier, fine-tuned from the baseline")
    stage1 = train_stage1(
        copy.deepcopy(static),
        train_ds,
        replace(cfg.stage1, epochs=cfg.finetune_epochs),
        run_dir / "stage1",
        lr=cfg.finetune_lr,
    )
    save_model(stage1, run_dir / "stage1" / "model.pt", config_yaml=config_to_yaml(cfg))

    rows = [
        _row(f"baseline: all {t} frames (trained alone)", evaluate(static, exits=False).metrics),
        _row(f"FrameExit without exit ({t} frames)", evaluate(stage1, exits=False).metrics),
    ]
    fixed = []
    for frames in sorted({1, 2, t // 2}):
        m = evaluate(stage1, exits=False, max_steps=frames).metrics
        fixed.append(m)
        rows.append(_row(f"first {frames} frame(s) in FrameExit order", m))
    curve = []
    for beta in cfg.betas:
        print(f"stage 2: exit gates, beta={beta:g}")
        gated = train_stage2(
            copy.deepcopy(stage1),
            train_ds,
            cfg.stage2,
            run_dir / f"stage2-beta{beta:g}",
            beta=beta,
            lr=cfg.lr,
        )
        save_model(gated, run_dir / f"stage2-beta{beta:g}" / "model.pt", config_yaml=config_to_yaml(cfg))
        result = evaluate(gated)
        result.write(run_dir / f"stage2-beta{beta:g}")
        curve.append((beta, result.metrics))
        rows.append(_row(f"FrameExit, beta={beta:g}", result.metrics))

    # compare with the stronger of the two all-frames models (same GMACs), never the weaker
    baseline = max(rows[:2], key=lambda r: r["top1"])
    width = max(len(r["method"]) for r in rows)
    lines = [
        f"{'method':<{width}}  {'top-1 (%)':>9}  {'frames':>6}  {'GMACs/video':>11}  {'vs baseline':>11}"
    ]
    for r in rows:
        lines.append(
            f"{r['method']:<{width}}  {100 * r['top1']:>9.2f}  {r['frames']:>6.2f}  {r['gmacs']:>11.4f}  "
            f"{r['gmacs'] / baseline['gmacs']:>10.1%}"
        )
    table = "\n".join(lines)
    print("\n" + table)
    print("GMACs = 1e9 multiply-accumulates per video, measured (backbone, MLP, gates, classifiers).")
    atomic_write_text(run_dir / "results.txt", table + "\n")
    atomic_write_json(run_dir / "results.json", rows)
    plot_tradeoff(
        [
            Series(
                "FrameExit (beta sweep)",
                [m["mean_gmacs"] for _, m in curve],
                [100 * m["hit1"] for _, m in curve],
                labels=[f"beta={b:g}" for b, _ in curve],
            ),
            Series(
                "first k frames (no exit)", [m["mean_gmacs"] for m in fixed], [100 * m["hit1"] for m in fixed]
            ),
        ],
        run_dir / "tradeoff.png",
        baselines=[
            Point(rows[0]["method"], rows[0]["gmacs"], 100 * rows[0]["top1"]),
            Point(rows[1]["method"], rows[1]["gmacs"], 100 * rows[1]["top1"]),
        ],
        title="FrameExit on the synthetic benchmark",
    )
    # the target: within 1 point of the best all-frames model at no more than half its GMACs
    passing = [
        (b, m)
        for b, m in curve
        if m["hit1"] >= baseline["top1"] - 0.01 and m["mean_gmacs"] <= 0.5 * baseline["gmacs"]
    ]
    if passing:
        beta, m = min(passing, key=lambda item: item[1]["mean_gmacs"])
        print(
            f"Target met by FrameExit with beta={beta:g}: top-1 {100 * m['hit1']:.2f} vs {100 * baseline['top1']:.2f} "
            f"for the best all-frames model, at {m['mean_gmacs'] / baseline['gmacs']:.1%} of its GMACs."
        )
    else:
        print(
            "Target NOT met: no beta of the sweep is within 1 point of the best all-frames model at <= 50% of its GMACs."
        )
    print(
        f"wrote {run_dir / 'results.txt'}, {run_dir / 'results.json'}, {run_dir / 'tradeoff.png'}; "
        f"total time {time.perf_counter() - start:.0f} s"
    )
    (run_dir / "timing.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))
