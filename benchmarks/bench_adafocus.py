"""AdaFocus inference speed: the batched forward vs a frame-by-frame loop like the original's, and
the realised speed-up over the full-frame model compared with the MAC reduction.

Two workloads, model only (clips held in memory, no decoding):

* ``--paper``: the paper's sizes with random weights - MobileNetV2 glance at 224, ResNet-50 focus
  on 128-px patches of 224-px frames, 16 frames, 200 classes; the full-frame model is the ResNet-50
  on every whole frame (the focus network without the patch);
* ``--run DIR``: an ``adafocus-demo`` run directory - its final model (PPO policy) on its validation
  videos; the full-frame model is its stage-0 focus network, the demo's baseline.

Strategies, on the same weights and clips:
  batched         - ``AdaFocus.forward``: the glance over all B*T frames at once, the policy over the
                    clip, then the focus network over all B*T patches at once;
  frame by frame  - the original's order: one video at a time, and per frame glance, policy, crop,
                    focus, classifier step (``AdaFocus.forward_frame_by_frame``, batch 1);
  full frame      - the full-frame model on every frame, batched.
``efficiency = (full-frame time / batched time) / (full-frame MACs / AdaFocus MACs)``: 1.0 means the
MACs saved turn fully into time saved.
Then each part of the batched forward (glance resize, glance, policy, crop, focus, classifier) is
timed alone, and its share of the time printed next to its share of the MACs: where the time goes.
``--only STRATEGY`` runs one strategy and nothing else (for timing whole processes apart).

    python benchmarks/bench_adafocus.py --paper --videos 8 --batch 8
    python benchmarks/bench_adafocus.py --run runs/adafocus-demo-<time>
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import replace
from pathlib import Path

import torch
from common import machine, timed

from adafocus.build import KIND, KINDS, build_model
from adafocus.config import DemoConfig
from adafocus.cost import UNITS, measure_unit_costs, video_macs
from adafocus.crop import crop_patches
from adafocus.inference import inference_copy
from adafocus.model import AdaFocus
from effvid.checkpoint import load_checked
from effvid.config import load_config
from effvid.data import build_dataset
from effvid.flops import count_macs
from effvid.model_files import read_model_file
from effvid.models.optimize import FastInferenceConfig, optimize_for_inference

STRATEGIES = ("batched", "frame_by_frame", "full")


@torch.no_grad()
def compare(
    title: str,
    model: AdaFocus,
    full_frame: torch.nn.Module,
    clips: torch.Tensor,
    batch: int,
    repeats: int,
    only: str | None = None,
    fast: bool = False,
) -> None:
    model.eval()
    full_frame.eval()
    plain = model
    n, t = clips.shape[:2]
    gmacs = float(video_macs(t, measure_unit_costs(model, tuple(clips.shape[-2:])))["total"]) / 1e9
    meta = copy.deepcopy(full_frame).to("meta")
    full_gmacs = count_macs(meta, torch.empty(1, *clips.shape[2:], device="meta")) * t / 1e9
    if fast:  # both sides as effvid's inference copies: BatchNorm folded, channels-last
        cpu = torch.device("cpu")
        model = inference_copy(model, FastInferenceConfig(), device=cpu)
        full_frame = optimize_for_inference(full_frame, FastInferenceConfig(), device=cpu)
        title += "; --fast: BatchNorm folded + channels-last on both sides"
    chunks = [clips[i : i + batch] for i in range(0, n, batch)]

    def batched():
        for chunk in chunks:
            model(chunk)

    def frame_by_frame():
        for i in range(n):
            model.forward_frame_by_frame(clips[i : i + 1])

    def full():
        for chunk in chunks:
            full_frame(chunk.flatten(0, 1))

    if only is not None:  # one strategy, e.g. for whole-process timings of each strategy apart
        strategy = {"batched": batched, "frame_by_frame": frame_by_frame, "full": full}[only]
        seconds, _ = timed(strategy, repeats)
        print(f"{only}: {n / seconds:.2f} videos/s (best of {repeats})")
        return
    batched()  # warm-up: allocator, oneDNN primitives
    tb, t1, tf = (timed(fn, repeats)[0] for fn in (batched, frame_by_frame, full))
    print(f"\n{title}")
    print(f"machine: {machine()}")
    print(f"{'strategy':<34} {'videos/s':>9} {'GMACs/video':>12}")
    print(f"{f'AdaFocus, batched (batch {batch})':<34} {n / tb:>9.2f} {gmacs:>12.4f}")
    print(f"{'AdaFocus, frame by frame (batch 1)':<34} {n / t1:>9.2f} {gmacs:>12.4f}")
    print(f"{f'full frame, batched (batch {batch})':<34} {n / tf:>9.2f} {full_gmacs:>12.4f}")
    speedup, reduction = tf / tb, full_gmacs / gmacs
    print(f"batched vs frame by frame: {t1 / tb:.2f}x faster")
    print(
        f"speed-up over the full-frame model {speedup:.2f}x / MAC reduction {reduction:.2f}x = "
        f"efficiency {speedup / reduction:.2f}"
    )
    breakdown(model, clips, batch, repeats, costs=measure_unit_costs(plain, tuple(clips.shape[-2:])))


@torch.no_grad()
def breakdown(model: AdaFocus, clips: torch.Tensor, batch: int, repeats: int, costs) -> None:
    """Where the batched forward's time goes: each part of ``AdaFocus.forward`` run alone over the
    same chunks, its share of the time next to its share of the MACs (the crop and the glance's
    resize are indexing and interpolation: time, no MACs)."""
    n, t = clips.shape[:2]
    chunks = [clips[i : i + batch] for i in range(0, n, batch)]
    hw = tuple(clips.shape[-2:])
    prepared = []
    for chunk in chunks:
        frames = chunk.flatten(0, 1)
        maps, pooled = model.glance_frames(frames)
        actions, _ = model.choose(maps.view(len(chunk), t, *maps.shape[1:]), sample=False)
        corners = model.actions_to_top_left(actions, hw).flatten(0, 1)
        local = model.focus_patches(frames, corners)
        prepared.append((frames, maps.view(len(chunk), t, *maps.shape[1:]), corners, pooled, local))

    def run(part):
        def go():
            for frames, maps, corners, pooled, local in prepared:
                if part == "resize":
                    model.glance_input(frames)
                elif part == "glance":
                    model.glance_frames(frames)
                elif part == "policy":
                    model.choose(maps, sample=False)
                elif part == "crop":
                    crop_patches(frames, corners, model.patch_size)
                elif part == "focus":
                    model.focus_patches(frames, corners)
                else:
                    model.classifier(torch.cat([pooled, local], 1).view(maps.shape[0], t, -1))

        return go

    seconds = {
        part: timed(run(part), repeats)[0]
        for part in ("resize", "glance", "policy", "crop", "focus", "classifier")
    }
    seconds["glance"] -= seconds["resize"]  # the glance part above includes its input's resize
    seconds["focus"] -= seconds["crop"]  # and the focus part its crop
    total_s, total_macs = sum(seconds.values()), sum(costs[u] for u in UNITS)
    print(f"{'part of the batched forward':<28} {'time':>7} {'MACs':>7}")
    for part, sec in seconds.items():
        share = costs[part] / total_macs if part in UNITS else 0.0
        print(f"{part:<28} {sec / total_s:>7.1%} {share:>7.1%}")


def bench_paper(videos: int, batch: int, repeats: int, only: str | None = None, fast: bool = False) -> None:
    torch.manual_seed(0)
    model = AdaFocus(num_classes=200, patch_size=128)
    full_frame = copy.deepcopy(model.focus)  # ResNet-50 with its 200-way head, on whole frames
    clips = torch.randn(videos, 16, 3, 224, 224)
    compare(
        f"paper sizes (MobileNetV2 glance at 224, ResNet-50 on 128-px patches, 16 frames), random weights, "
        f"{videos} videos in memory",
        model,
        full_frame,
        clips,
        batch,
        repeats,
        only,
        fast,
    )


def bench_run(run: Path, batch: int, repeats: int, only: str | None = None, fast: bool = False) -> None:
    cfg = load_config(DemoConfig, [str(run / "config.yaml")])
    root = Path(cfg.root)
    storage = root / {"frames": "frames", "lmdb": "frames.lmdb", "video": "videos"}[cfg.data.storage]
    transform = replace(cfg.data.transform, resize=cfg.size, crop=cfg.size, train_crop="center")
    data = replace(
        cfg.data,
        format="list",
        path_frame=str(storage),
        path_label=str(root / "val.txt"),
        path_classid=str(root / "classes.txt"),
        transform=transform,
    )
    dataset = build_dataset(data, num_classes=cfg.model.num_class)
    clips = torch.stack([dataset[i]["video"] for i in range(len(dataset))])
    model = build_model(cfg.model)
    load_checked(model, read_model_file(run / "stage3-ppo" / "model.pt", kind=KIND).state_dict)
    stage0 = build_model(cfg.model)
    load_checked(stage0, read_model_file(run / "stage0" / "model.pt", kind=KINDS[0]).state_dict)
    compare(
        f"demo run {run}: final model (PPO policy) and its stage-0 focus network on whole frames, "
        f"{len(dataset)} validation videos in memory",
        model,
        stage0.focus,
        clips,
        batch,
        repeats,
        only,
        fast,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", action="store_true", help="the paper's sizes with random weights")
    parser.add_argument("--run", type=Path, help="an adafocus-demo run directory")
    parser.add_argument("--videos", type=int, default=8, help="--paper: videos to run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--only", choices=STRATEGIES, help="run only this strategy (no warm-up, no comparison)"
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="both models as inference copies (BatchNorm folded, channels-last)",
    )
    args = parser.parse_args()
    if not args.paper and not args.run:
        parser.error("give --paper and/or --run DIR")
    if args.run:
        bench_run(args.run, args.batch, args.repeats, args.only, args.fast)
    if args.paper:
        bench_paper(args.videos, args.batch, args.repeats, args.only, args.fast)


if __name__ == "__main__":
    main()
