"""The main job: AdaFocus on the synthetic benchmark, end to end, on a laptop CPU.

1. generate the benchmark (reused when already there): 12 classes, a small object's colour *and*
   shape, in 96-px frames. The glance sees a low-resolution frame, where the colour shows but the
   shape does not; the focus network sees a full-resolution patch;
2. stage 0: each backbone alone - the focus network on full frames is also the full-frame
   baseline, the glance network at its size the "glance alone" row;
3. stage 1: focus + classifier on random patches;
4. stage 2 twice from stage 1: the policy by PPO, and AdaFocusV2-style through the differentiable
   crop; then stage 3 (the classifier) after each;
5. evaluate on the validation videos: accuracy, GMACs and videos/s of every model, AdaFocus+
   (frame skipping at ``skip_similarity``, early exit at the configured thresholds, and both
   together; see :mod:`adafocus.inference`), and how often the patches cover the object (from
   the generator's masks); print the table, write ``results.txt`` (with a verdict),
   ``results.json`` (the core's rows), ``tradeoff.png`` and one ``adafocus-show`` picture.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from adafocus.build import KINDS, build_model
from adafocus.config import DemoConfig, OptimConfig, TrainConfig
from adafocus.evaluation import Evaluation, evaluate_dataset
from adafocus.model import AdaFocus
from adafocus.training import train_stage
from adafocus.visualize import show_video
from effvid.config import ConfigError, config_to_yaml
from effvid.data import SyntheticSpec, VideoClassificationDataset, build_dataset, generate
from effvid.data.synthetic import render_video
from effvid.draws import Draw, seeded, split_item
from effvid.engine import EngineConfig, resolve_device, seed_everything
from effvid.flops import count_macs
from effvid.io import atomic_write_json, atomic_write_text
from effvid.metrics import HitAt1, VideoMAP
from effvid.model_files import save_model
from effvid.models import Backbone
from effvid.models.optimize import FastInferenceConfig, optimize_for_inference
from effvid.plots import plot_results
from effvid.reports import ResultRow, StageClock, cheapest_within, format_results, write_results

__all__ = ["DecodedOnce", "object_masks", "patch_coverage", "run_demo"]


class DecodedOnce(torch.utils.data.Dataset):
    """A dataset's clips decoded once into memory (uint8) and transformed at every draw.

    The demo trains for dozens of epochs on a few hundred short videos; decoding them again every
    epoch would cost more than training its small networks. Only for a deterministic frame
    sampler (the demo's ``uniform``): the frames of a video are the same at every draw.
    """

    def __init__(self, dataset: VideoClassificationDataset) -> None:
        raw = copy.copy(dataset)
        raw.transform = None
        self.clips = [raw[i]["video"] for i in range(len(raw))]  # plain indices: no training draws
        self.labels = [dataset.label(i) for i in range(len(dataset))]
        self.keys = [r.key for r in dataset.records]
        self.transform = dataset.transform

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, item: int | Draw) -> dict:
        i, seed = split_item(item)
        with seeded(seed):  # the flips of a draw, as the dataset would make them
            video = self.transform(self.clips[i])
        return {"video": video, "label": self.labels[i], "key": self.keys[i], "index": i}


def object_masks(spec: SyntheticSpec, dataset: VideoClassificationDataset) -> list[np.ndarray]:
    """Per video of ``dataset`` (generated from ``spec``, frames neither resized nor cropped):
    the object's mask (T, S, S) bool on each sampled frame, re-rendered by the generator."""
    out = []
    for i, record in enumerate(dataset.records):
        index = int(record.key.split("_")[-1].split(".")[0])
        _, masks, _ = render_video(spec, index, int(record.labels[0]))
        out.append(masks[dataset.frame_indices(i)] > 0)
    return out


def patch_coverage(evaluation: Evaluation, masks: list[np.ndarray], *, at_least: float = 0.5) -> float:
    """Share of the frames focused on whose patch holds at least ``at_least`` of the object's pixels."""
    hits = total = 0
    for row, video_masks in zip(evaluation.rows, masks):
        for box, mask in zip(row["patches"], video_masks):
            if box is None:  # a skipped frame: no patch
                continue
            top, left, bottom, right = box
            inside = mask[top:bottom, left:right].sum()
            hits += int(inside >= at_least * mask.sum())
            total += 1
    return hits / total


@torch.no_grad()
def _evaluate_frame_model(
    backbone: Backbone,
    dataset: VideoClassificationDataset,
    *,
    batch_size: int,
    prepare=lambda frames: frames,
) -> tuple[dict[str, float], float, float]:
    """A stage-0 network alone: its head on every frame (after ``prepare``, e.g. the glance's
    resize), softmax averaged over the frames, run as the same inference copy (BatchNorm folded,
    channels-last) as the AdaFocus rows. Returns ({top1, map}, GMACs per video, videos/s)."""
    backbone = backbone.cpu().eval()
    runner = optimize_for_inference(backbone, FastInferenceConfig(), device=torch.device("cpu"))
    hit1, mean_ap = HitAt1(), VideoMAP()
    hit1.reset()
    mean_ap.reset()
    start = time.perf_counter()
    for first in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(first, min(first + batch_size, len(dataset)))]
        clips = torch.stack([item["video"] for item in items])
        frames = prepare(clips.flatten(0, 1))
        probs = torch.softmax(runner(frames), 1).view(len(items), clips.shape[1], -1).mean(1)
        targets = torch.stack([item["label"] for item in items])
        hit1.update((probs, targets))
        mean_ap.update((probs, targets))
    seconds = time.perf_counter() - start
    clip = dataset[0]["video"]
    meta = copy.deepcopy(backbone).to("meta")
    macs = count_macs(meta, prepare(clip[:1]).to("meta")) * clip.shape[0]
    return {"top1": hit1.compute(), "map": mean_ap.compute()}, macs / 1e9, len(dataset) / seconds


def _row(method: str, setting: str, result: Evaluation, **extra) -> ResultRow:
    m = result.metrics
    return ResultRow(
        method=method,
        setting=setting,
        metrics={"top1": m["top1"], "map": m["map"]},
        gmacs_per_video=m["mean_gmacs"],
        frames_per_video=m["mean_focused"],  # frames the focus network saw
        videos_per_s=m["videos_per_s"],
        extra={"frames_glanced": m["mean_steps"], **extra},
    )


def run_demo(cfg: DemoConfig, run_dir: Path) -> None:
    clock = StageClock()
    k = cfg.model.num_class
    spec = SyntheticSpec(
        storage=cfg.data.storage,
        num_videos=cfg.num_videos,
        num_classes=k,
        size=cfg.size,
        early_fraction=cfg.early_fraction,
    )
    info = generate(cfg.root, spec, progress=True)
    # frames as generated (no resize, no crop): patch positions are then the generator's pixels
    transform = replace(cfg.data.transform, resize=cfg.size, crop=cfg.size, train_crop="center")
    data = replace(
        cfg.data,
        format="list",
        path_frame=str(info.storage_path),
        path_classid=str(info.classes),
        transform=transform,
    )
    train_data = replace(data, path_label=str(info.train_list))
    if data.sampler != "uniform":
        raise ConfigError("the demo decodes its training clips once: data.sampler must be uniform")
    train_ds = DecodedOnce(build_dataset(train_data, num_classes=k, train=True))
    val_ds = build_dataset(replace(data, path_label=str(info.val_list)), num_classes=k)
    device = resolve_device(cfg.stage0.device)
    print(f"data: {len(train_ds)} training and {len(val_ds)} validation videos in {info.storage_path}")
    clock.lap("data")

    def train(model: AdaFocus, stage: int, engine: EngineConfig, name: str, **options) -> None:
        train_cfg = TrainConfig(
            data=train_data,
            model=cfg.model,
            stage=stage,
            ppo=cfg.ppo,
            lr=cfg.lr,
            optim=OptimConfig(name="adam", weight_decay=0.0),
            engine=engine,
            **options,
        )
        seed_everything(engine.seed, deterministic=engine.deterministic)
        train_stage(model, train_cfg, run_dir / name, dataset=train_ds)
        save_model(model, run_dir / name / "model.pt", kind=KINDS[stage], config=config_to_yaml(train_cfg))
        clock.lap(name)

    seed_everything(cfg.stage0.seed, deterministic=cfg.stage0.deterministic)  # before the model's init
    model = build_model(cfg.model)
    train(model, 0, cfg.stage0, "stage0")
    warm = copy.deepcopy(model)
    train(warm, 1, cfg.stage1, "stage1")
    finals = {}
    for variant in ("ppo", "differentiable"):
        policy_model = copy.deepcopy(warm)
        train(policy_model, 2, cfg.stage2, f"stage2-{variant}", policy_training=variant)
        train(policy_model, 3, cfg.stage3, f"stage3-{variant}", stage3_focus=cfg.stage3_focus)
        finals[variant] = policy_model

    def evaluate(m: AdaFocus, **kw) -> Evaluation:
        return evaluate_dataset(
            m,
            val_ds,
            batch_size=cfg.eval_batch_size,
            device=device,
            stream=False,
            progress=False,
            fast=FastInferenceConfig(),
            **kw,
        )

    masks = object_masks(spec, val_ds)
    bs = cfg.eval_batch_size
    full_metrics, full_gmacs, full_speed = _evaluate_frame_model(model.focus, val_ds, batch_size=bs)
    glance_metrics, glance_gmacs, glance_speed = _evaluate_frame_model(
        model.glance, val_ds, batch_size=bs, prepare=model.glance_input
    )
    t = data.num_frames
    baseline = ResultRow(
        "full frame", f"focus network on all {t} frames", full_metrics, full_gmacs, t, full_speed
    )
    rows = [
        baseline,
        ResultRow(
            "glance alone",
            f"{cfg.model.glance_size}-px frames",
            glance_metrics,
            glance_gmacs,
            t,
            glance_speed,
        ),
    ]
    random_eval = evaluate(warm, policy="random")
    coverage = {"random patches": patch_coverage(random_eval, masks)}
    # one marker per AdaFocus model in the plot (a method with several settings is drawn as a curve)
    rows.append(_row("AdaFocus, random patches", "", random_eval, coverage=coverage["random patches"]))
    names = {"ppo": "policy by PPO", "differentiable": "policy by differentiable crop"}
    for variant, final in finals.items():
        result = evaluate(final)
        coverage[names[variant]] = patch_coverage(result, masks)
        result.write(run_dir / f"stage3-{variant}")
        rows.append(_row(f"AdaFocus, {names[variant]}", "", result, coverage=coverage[names[variant]]))
    skip = cfg.skip_similarity
    plus = {
        f"PPO policy, skip at similarity>={skip:g}": {"skip_similarity": skip},
        f"PPO policy, exit at p>={cfg.exit_thresholds[0]:g}": {"threshold": cfg.exit_thresholds[0]},
    }
    for threshold in cfg.exit_thresholds:
        plus[f"PPO policy, skip + exit at p>={threshold:g}"] = {
            "skip_similarity": skip,
            "threshold": threshold,
        }
    for setting, options in plus.items():
        result = evaluate(finals["ppo"], **options)
        rows.append(_row("AdaFocus+", setting, result, coverage=patch_coverage(result, masks)))
    clock.lap("evaluation")

    picture = run_dir / "patches_ppo.png"
    first_key = val_ds.records[0].key
    boxes = []
    for mask in masks[0]:
        ys, xs = np.nonzero(mask)
        boxes.append(
            [int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1] if len(ys) else None
        )
    show_video(
        finals["ppo"],
        val_ds,
        0,
        picture,
        device=device,
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        marks=boxes,
    )

    table = format_results(rows, reference=baseline, metric="top1")
    adafocus_rows = [r for r in rows if r.method.startswith("AdaFocus") and "random" not in r.method]
    best = cheapest_within(adafocus_rows, baseline, metric="top1", tolerance=0.01, max_cost_share=0.5)
    if best is not None:
        verdict = (
            f"Target met by '{best.label}': top-1 {100 * best.metrics['top1']:.2f} vs "
            f"{100 * baseline.metrics['top1']:.2f} for the full-frame baseline, at "
            f"{best.gmacs_per_video / baseline.gmacs_per_video:.1%} of its GMACs."
        )
    else:
        verdict = (
            "Target NOT met: no AdaFocus model with a learned policy is within 1 point of the "
            "full-frame baseline at <= 50% of its GMACs."
        )
    cover = "; ".join(f"{name} {share:.1%}" for name, share in coverage.items())
    cover_line = f"Patches holding at least half of the object (share of frames): {cover}."
    print("\n" + table)
    print(
        "frames = frames the focus network saw (AdaFocus+ glances at every frame up to its exit, skipped "
        "ones included); GMACs = 1e9 multiply-accumulates per video, measured; videos/s include decoding "
        "(this machine)."
    )
    print(cover_line)
    print(verdict)
    print(f"picture of the PPO policy's patches on {first_key} (green; the object in yellow): {picture}")
    atomic_write_text(run_dir / "results.txt", f"{table}\n{cover_line}\n{verdict}\n")
    write_results(run_dir / "results.json", rows)
    plot_results(rows, run_dir / "tradeoff.png", metric="top1", title="AdaFocus on the synthetic benchmark")
    total = clock.total
    atomic_write_json(
        run_dir / "timing.json", {"seconds": total, "stages": clock.stages, "coverage": coverage}
    )
    print(
        f"wrote {run_dir / 'results.txt'}, {run_dir / 'results.json'}, {run_dir / 'tradeoff.png'}, "
        f"{picture}; total time {total:.0f} s"
    )
