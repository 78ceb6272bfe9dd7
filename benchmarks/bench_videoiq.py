"""VideoIQ inference speed on a CPU: policy-driven inference vs the float network vs the original's
strategy of running every precision on every frame; and what a fake-quantised frame costs.

Two workloads:

* ``--run DIR``: a ``videoiq-demo`` run directory - its trained networks on the held-out videos of
  its synthetic benchmark (clips decoded once, held in memory: model time only);
* ``--arch resnet50``: random weights at ``--size`` (224) on random clips (model only); the policy's
  decisions are sampled from its near-uniform initial distribution (a mix of every action).

Strategies, on the same clips:
  dynamic       - VideoIQ as effvid runs it: the policy, then each frame only at its chosen precision;
  every precision - the original's evaluation: every frame at every precision, decisions select
                  the features (``VideoIQ.forward``);
  float         - the float network on every frame (the full-precision baseline);
  fixed b bits  - the any-precision network at one bit width on every frame.

On a CPU the quantisers are simulated in float32 (DoReFa on the weights, PACT on the activations,
per tensor, every forward), so a quantised frame costs more time than a float one, whatever its
bit width; BitOPs count what an integer accelerator would run.

    python benchmarks/bench_videoiq.py --run runs/demo --w 0.5
    python benchmarks/bench_videoiq.py --arch resnet18 --size 224 --frames 8 --videos 4
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from effvid.config import load_config
from effvid.data import build_dataset
from videoiq.build import (
    build_any_precision,
    build_videoiq,
    load_any_precision,
    load_model_file,
    load_teacher,
)
from videoiq.config import DemoConfig
from videoiq.evaluation import action_names, cached_batches
from videoiq.inference import dynamic_inference
from videoiq.model import AnyPrecisionResNet, FullPrecisionTeacher, VideoIQ


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; torch {torch.__version__}"
    )


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def bench(
    title: str,
    model: VideoIQ,
    teacher: FullPrecisionTeacher,
    anyp: AnyPrecisionResNet,
    clips: list[torch.Tensor],
    repeats: int,
    *,
    sample: bool = False,
) -> None:
    for net in (model, teacher, anyp):
        net.eval()
    n, t = sum(c.shape[0] for c in clips), clips[0].shape[1]
    rows = [
        ("dynamic (effvid)", lambda: [dynamic_inference(model, c, sample=sample) for c in clips]),
        ("every precision (original)", lambda: [model(c) for c in clips]),
        ("float network", lambda: [teacher(c) for c in clips]),
    ]
    rows += [(f"fixed {b} bits", lambda b=b: [anyp(c, b) for c in clips]) for b in anyp.family]
    actions = torch.cat([dynamic_inference(model, c, sample=sample).actions for c in clips]).flatten()
    names = action_names(model)
    dist = "  ".join(f"{name} {float((actions == i).float().mean()):.0%}" for i, name in enumerate(names))
    print(f"\n{title}\nmachine: {machine()}\npolicy decisions ({'sampled' if sample else 'argmax'}): {dist}")
    print(f"{'strategy':<28} {'videos/s':>9} {'ms/video':>9} {'ms/frame':>9}")
    for name, fn in rows:
        seconds = timed(fn, repeats)
        print(f"{name:<28} {n / seconds:>9.2f} {1000 * seconds / n:>9.1f} {1000 * seconds / (n * t):>9.2f}")


def bench_run(run: Path, w: float, repeats: int) -> None:
    cfg = load_config(DemoConfig, [str(run / "config.yaml")])
    root = Path(cfg.root)
    storage = root / {"frames": "frames", "lmdb": "frames.lmdb", "video": "videos"}[cfg.data.storage]
    data = replace(cfg.data, format="list", path_frame=str(storage), path_label=str(root / "val.txt"))
    dataset = build_dataset(data, num_classes=cfg.model.num_class)
    clips = [b["video"] for b in cached_batches(dataset, batch_size=cfg.data.batch_size)]
    model = build_videoiq(cfg.model)
    load_model_file(model, str(run / f"policy-w{w:g}" / "model.pt"))
    teacher = load_teacher(str(run / "fp" / "model.pt"), cfg.model, "the fp stage's model")
    anyp = build_any_precision(cfg.model)
    load_any_precision(anyp, str(run / "ap" / "model.pt"), "the ap stage's model")
    title = f"demo run {run} (efficient_w={w:g}), {len(dataset)} videos of {data.num_frames} frames in memory"
    bench(title, model, teacher, anyp, clips, repeats)


def bench_random(arch: str, size: int, frames: int, videos: int, batch: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = VideoIQ(arch=arch, num_classes=200, skip_list=(1,))
    teacher = FullPrecisionTeacher(arch=arch, num_classes=200)
    clips = [torch.randn(min(batch, videos - o), frames, 3, size, size) for o in range(0, videos, batch)]
    title = f"{arch} at {size}x{size}, random weights, {videos} videos of {frames} frames in memory"
    bench(title, model, teacher, model.recognizer, clips, repeats, sample=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a videoiq-demo run directory")
    parser.add_argument(
        "--w", type=float, default=None, help="which policy of the run (an efficiency weight)"
    )
    parser.add_argument("--arch", default=None, help="model-only benchmark with this ResNet, random weights")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.run:
        if args.w is None:
            parser.error("--run needs --w, one of the run's efficient_ws")
        bench_run(args.run, args.w, args.repeats)
    if args.arch:
        bench_random(args.arch, args.size, args.frames, args.videos, args.batch, args.repeats)
    if not args.run and not args.arch:
        parser.error("give --run DIR and/or --arch NAME")


if __name__ == "__main__":
    main()
