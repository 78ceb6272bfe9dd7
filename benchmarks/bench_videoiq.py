"""VideoIQ inference speed on a CPU: policy-driven inference vs the float network vs the original's
strategy of running every precision on every frame; what a fake-quantised frame costs; and the
int8 path (the <= 8-bit branches on PyTorch's quantised CPU kernels, ``videoiq.int8``).

Two workloads:

* ``--run DIR``: a ``videoiq-demo`` run directory - its trained networks on the held-out videos of
  its synthetic benchmark (clips decoded once, held in memory: model time only); also prints the
  top-1 of the fake-quantised and the int8 paths;
* ``--arch resnet50``: random weights at ``--size`` (224) on random clips (model only); the policy's
  decisions are sampled from its near-uniform initial distribution (a mix of every action).

Strategies, on the same clips:
  dynamic             - VideoIQ as effvid runs it: the policy, then each frame only at its chosen
                        precision, fake-quantised (float32 with simulated quantisers);
  dynamic, int8       - the same decisions, the <= 8-bit frames through int8 copies of the network;
  every precision     - the original's evaluation: every frame at every precision, decisions select
                        the features (``VideoIQ.forward``);
  float               - the float network on every frame (the full-precision baseline);
  fixed b bits        - the any-precision network at one bit width on every frame (fake-quantised);
  fixed b bits, int8  - the same on the int8 kernels (b <= 8);
  all at b / half skipped - dynamic inference with scripted decisions: every frame at the lowest
                        bit width, or every other frame skipped (skipped frames must save their time).

``--only NAME --loops N`` runs one strategy N times and prints nothing else (whole-process timings
of one strategy against another).

    python benchmarks/bench_videoiq.py --run runs/demo --w 1
    python benchmarks/bench_videoiq.py --arch resnet18 --size 224 --frames 8 --videos 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from common import machine, timed

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
from videoiq.int8 import MAX_INT_BITS, Int8Branch
from videoiq.model import AnyPrecisionResNet, FullPrecisionTeacher, VideoIQ
from videoiq.policy import PolicyOutput

warnings.filterwarnings("ignore", message="torch.quantize_per_tensor")


def _scripted(model: VideoIQ, action: Callable[[int], int]) -> Callable:
    """A policy stand-in: the real policy runs (its cost stays in), then frame t gets ``action(t)``."""
    forward = model.policy.forward  # the real one, bound before any stand-in replaces it

    def run(clip: torch.Tensor, sample: bool = False) -> PolicyOutput:
        out = forward(clip, sample=sample)
        a = torch.tensor([action(t) for t in range(clip.shape[1])])
        onehot = torch.nn.functional.one_hot(a, out.decisions.shape[-1]).float().expand_as(out.decisions)
        return PolicyOutput(onehot, out.log_probs, out.class_logits)

    return run


def strategies(
    model: VideoIQ,
    teacher: FullPrecisionTeacher,
    anyp: AnyPrecisionResNet,
    int8: dict[int, Int8Branch],
    clips: list[torch.Tensor],
    *,
    sample: bool,
) -> dict[str, Callable[[], list]]:
    lowest = len(model.precisions) - 1  # the last precision: the lowest bit width
    skip = len(model.precisions)  # the first skip option
    forced = {
        f"all at {model.precision_bits[lowest]} bits": _scripted(model, lambda t: lowest),
        "half skipped": _scripted(model, lambda t: lowest if t % 2 == 0 else skip),
    }

    def with_policy(policy: Callable) -> Callable[[], list]:
        def run() -> list:
            real = model.policy.forward
            model.policy.forward = policy
            try:
                return [dynamic_inference(model, c) for c in clips]
            finally:
                model.policy.forward = real

        return run

    rows: dict[str, Callable[[], list]] = {
        "dynamic": lambda: [dynamic_inference(model, c, sample=sample) for c in clips],
        "dynamic, int8": lambda: [dynamic_inference(model, c, sample=sample, int8=int8) for c in clips],
        "every precision": lambda: [model(c) for c in clips],
        "float": lambda: [teacher(c) for c in clips],
    }
    for b in anyp.family:
        rows[f"fixed {b} bits"] = lambda b=b: [anyp(c, b) for c in clips]
        if b in int8:
            rows[f"fixed {b} bits, int8"] = lambda b=b: [
                anyp.fc(int8[b](c.flatten(0, 1))).view(*c.shape[:2], -1).mean(1) for c in clips
            ]
    for name, policy in forced.items():
        rows[name] = with_policy(policy)
    return rows


def int8_branches(anyp: AnyPrecisionResNet, calibration: torch.Tensor) -> dict[int, Int8Branch]:
    return {b: Int8Branch(anyp, b, calibration) for b in anyp.family if b <= MAX_INT_BITS}


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
    only: str | None = None,
    loops: int = 1,
) -> None:
    for net in (model, teacher, anyp):
        net.eval()
    int8 = int8_branches(anyp, clips[0].flatten(0, 1))
    rows = strategies(model, teacher, anyp, int8, clips, sample=sample)
    if only is not None:
        if only not in rows:
            raise SystemExit(f"--only: unknown strategy '{only}'; one of: {', '.join(rows)}")
        for _ in range(loops):
            rows[only]()
        return
    n, t = sum(c.shape[0] for c in clips), clips[0].shape[1]
    results = [dynamic_inference(model, c, sample=sample) for c in clips]
    actions = torch.cat([r.actions for r in results]).flatten()
    names = action_names(model)
    dist = "  ".join(f"{name} {float((actions == i).float().mean()):.0%}" for i, name in enumerate(names))
    kept = float(torch.cat([r.kept for r in results]).float().mean())
    print(f"\n{title}\nmachine: {machine()}")
    print(f"policy decisions ({'sampled' if sample else 'argmax'}): {dist}; frames kept {kept:.0%}")
    for fn in rows.values():  # warm-up (and the quantised weights cached at inference)
        fn()
    # the strategies alternate within each round, so that a change in the machine's load reaches
    # all of them alike; the best round is reported, and the median beside it
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeats):
        for name, fn in rows.items():
            times[name].append(timed(fn, 1)[0])
    print(f"{'strategy':<24} {'videos/s':>9} {'ms/video':>9} {'ms/frame':>9} {'median ms/video':>16}")
    for name, secs in times.items():
        seconds, med = min(secs), statistics.median(secs)
        print(
            f"{name:<24} {n / seconds:>9.2f} {1000 * seconds / n:>9.1f} {1000 * seconds / (n * t):>9.2f}"
            f" {1000 * med / n:>16.1f}"
        )
    print(f"best (and median) of {repeats} rounds, strategies alternated within each round")


@torch.no_grad()
def accuracy(
    model: VideoIQ, anyp: AnyPrecisionResNet, batches: list[dict], int8: dict[int, Int8Branch]
) -> None:
    """Top-1 on the held-out videos: fake-quantised vs int8, fixed bit widths and VideoIQ."""
    labels = torch.cat([b["label"] for b in batches])

    def top1(logits: list[torch.Tensor]) -> tuple[float, torch.Tensor]:
        pred = torch.cat(logits).argmax(1)
        return float((pred == labels).float().mean()), pred

    print(f"\ntop-1 on {len(labels)} held-out videos, fake-quantised vs int8 (calibrated on one batch):")
    for b, branch in int8.items():
        fake, pf = top1([anyp(x["video"], b) for x in batches])
        real, pr = top1(
            [
                anyp.fc(branch(x["video"].flatten(0, 1))).view(*x["video"].shape[:2], -1).mean(1)
                for x in batches
            ]
        )
        print(
            f"  fixed {b} bits: {100 * fake:.2f} vs {100 * real:.2f} (same prediction on {float((pf == pr).float().mean()):.1%})"
        )
    fake, pf = top1([dynamic_inference(model, x["video"]).logits for x in batches])
    real, pr = top1([dynamic_inference(model, x["video"], int8=int8).logits for x in batches])
    print(
        f"  VideoIQ:      {100 * fake:.2f} vs {100 * real:.2f} (same prediction on {float((pf == pr).float().mean()):.1%})"
    )


def bench_run(run: Path, w: float, repeats: int, only: str | None, loops: int) -> None:
    cfg = load_config(DemoConfig, [str(run / "config.yaml")])
    root = Path(cfg.root)
    storage = root / {"frames": "frames", "lmdb": "frames.lmdb", "video": "videos"}[cfg.data.storage]
    data = replace(cfg.data, format="list", path_frame=str(storage), path_label=str(root / "val.txt"))
    dataset = build_dataset(data, num_classes=cfg.model.num_class)
    batches = cached_batches(dataset, batch_size=cfg.data.batch_size)
    model = build_videoiq(cfg.model)
    load_model_file(model, str(run / f"policy-w{w:g}" / "model.pt"))
    teacher = load_teacher(str(run / "fp" / "model.pt"), cfg.model, "the fp stage's model")
    anyp = build_any_precision(cfg.model)
    load_any_precision(anyp, str(run / "ap" / "model.pt"), "the ap stage's model")
    clips = [b["video"] for b in batches]
    title = f"demo run {run} (efficient_w={w:g}), {len(dataset)} videos of {data.num_frames} frames in memory"
    bench(title, model, teacher, anyp, clips, repeats, only=only, loops=loops)
    if only is None:
        model.eval(), anyp.eval()
        accuracy(model, anyp, batches, int8_branches(anyp, clips[0].flatten(0, 1)))


def bench_random(
    arch: str, size: int, frames: int, videos: int, batch: int, repeats: int, only: str | None, loops: int
) -> None:
    torch.manual_seed(0)
    model = VideoIQ(arch=arch, num_classes=200, skip_list=(1,))
    teacher = FullPrecisionTeacher(arch=arch, num_classes=200)
    clips = [torch.randn(min(batch, videos - o), frames, 3, size, size) for o in range(0, videos, batch)]
    title = f"{arch} at {size}x{size}, random weights, {videos} videos of {frames} frames in memory"
    bench(title, model, teacher, model.recognizer, clips, repeats, sample=True, only=only, loops=loops)


#: the decisions of the demo's trained policy (efficient_w=1, README): 4 bits 60 %, 2 bits 30 %,
#: skip 10 %; without --predictions every video replays this 8-frame pattern (62.5/25/12.5 %)
DEFAULT_PATTERN = ("4bit", "4bit", "2bit", "4bit", "4bit", "2bit", "4bit", "skip1")


def _replay(model: VideoIQ, actions: list[int]) -> Callable:
    """A policy stand-in: the real policy runs (its cost stays in), then the frames get ``actions``."""
    forward = model.policy.forward

    def run(clip: torch.Tensor, sample: bool = False) -> PolicyOutput:
        out = forward(clip, sample=sample)
        onehot = torch.nn.functional.one_hot(torch.tensor(actions), out.decisions.shape[-1]).float()
        return PolicyOutput(onehot.expand_as(out.decisions), out.log_probs, out.class_logits)

    return run


@torch.no_grad()
def bench_realistic(predictions: Path | None, videos: int, rounds: int, size: int, frames: int) -> None:
    """ResNet-18 at ``size`` (random weights), one video of ``frames`` frames per call: the float
    network on every frame vs VideoIQ's dynamic inference (fake-quantised, and with the <= 8-bit
    frames on int8) under the decisions of a trained policy, and the policy alone (the paper's
    MobileNetV2 at 84x84). Variants alternate within each round; median and min over rounds."""
    torch.manual_seed(0)
    model = VideoIQ(arch="resnet18", num_classes=200, skip_list=(1,)).eval()
    teacher = FullPrecisionTeacher(arch="resnet18", num_classes=200).eval()
    names = action_names(model)
    if predictions is not None:
        rows = [json.loads(line) for line in predictions.read_text().splitlines()]
        sequences = [[names.index(a) for a in r["actions"][:frames]] for r in rows]
        source = f"{predictions} ({len(rows)} videos)"
    else:
        sequences = [[names.index(a) for a in DEFAULT_PATTERN[:frames]]]
        source = "the fixed pattern " + " ".join(DEFAULT_PATTERN[:frames])
    if any(len(seq) != frames for seq in sequences):
        raise SystemExit(f"--predictions: every video needs {frames} decisions")

    def dist(seqs: list[list[int]]) -> str:
        counts = torch.bincount(torch.tensor(seqs).flatten(), minlength=len(names)).double()
        return "  ".join(f"{n} {float(c / counts.sum()):.1%}" for n, c in zip(names, counts))

    # evenly spaced over the file (its videos are in list order, e.g. the early then the late half)
    replayed = [sequences[(i * len(sequences)) // videos] for i in range(videos)]
    clips = [torch.randn(1, frames, 3, size, size) for _ in range(videos)]
    int8 = int8_branches(model.recognizer, torch.cat(clips[:2]).flatten(0, 1))
    real = model.policy.forward

    def dynamic(with_int8: bool) -> Callable[[], None]:
        def run() -> None:
            try:
                for i, clip in enumerate(clips):
                    model.policy.forward = _replay(model, replayed[i])
                    dynamic_inference(model, clip, int8=int8 if with_int8 else None)
            finally:
                model.policy.forward = real

        return run

    variants = {
        "float, every frame": lambda: [teacher(c) for c in clips],
        "VideoIQ dynamic, int8": dynamic(True),
        "VideoIQ dynamic, fake-quantised": dynamic(False),
        "policy alone (in both)": lambda: [model.policy(c) for c in clips],
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in variants.items():
            seconds, _ = timed(fn, 1)
            times[name].append(1000 * seconds / videos)
    print(f"\nresnet18 at {size}x{size}, random weights, {videos} videos of {frames} frames, one per call")
    print(f"machine: {machine()}")
    print(f"decisions from {source}: {dist(sequences)}")
    print(f"replayed on the {videos} timed videos: {dist(replayed)}")
    print(f"{'variant':<34} {'ms/video':>9} {'(min)':>8} {'vs float':>9}")
    ref = statistics.median(times["float, every frame"])
    for name, ms in times.items():
        med = statistics.median(ms)
        print(f"{name:<34} {med:>9.1f} {min(ms):>8.1f} {med / ref:>8.2f}x")
    print(f"medians (min) of {rounds} rounds, variants alternated within each round")


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
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="timed rounds, the strategies alternated within each (the best and the median are printed)",
    )
    parser.add_argument(
        "--realistic",
        action="store_true",
        help="ResNet-18 at --size, one video of --frames per call: float vs VideoIQ (int8) vs its policy",
    )
    parser.add_argument(
        "--predictions", type=Path, default=None, help="--realistic: replay a demo policy's predictions.jsonl"
    )
    parser.add_argument("--rounds", type=int, default=3, help="--realistic: alternated rounds")
    parser.add_argument("--only", default=None, help="run this one strategy --loops times, print nothing")
    parser.add_argument("--loops", type=int, default=1)
    args = parser.parse_args()
    if args.realistic:
        bench_realistic(args.predictions, args.videos, args.rounds, args.size, args.frames)
        return
    if args.run and args.arch:
        parser.error("give --run DIR or --arch NAME, not both")
    if args.run:
        if args.w is None:
            parser.error("--run needs --w, one of the run's efficient_ws")
        bench_run(args.run, args.w, args.repeats, args.only, args.loops)
    elif args.arch:
        bench_random(
            args.arch, args.size, args.frames, args.videos, args.batch, args.repeats, args.only, args.loops
        )
    else:
        parser.error("give --run DIR or --arch NAME")


if __name__ == "__main__":
    main()
