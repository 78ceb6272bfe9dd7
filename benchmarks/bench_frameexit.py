"""FrameExit inference speed: batched early exit vs the original's batch-1 loop, and the realised
speed-up over the all-frames model compared with the MAC reduction.

Two workloads:

* ``--run DIR``: a ``frameexit-demo`` run directory - its trained gated model (``--beta``) on the
  validation videos of its synthetic benchmark, read from storage (end to end: decoding included);
* ``--backbone resnet50``: random weights at 224x224 on random frames held in memory (model only),
  thresholds set so that about half the videos exit at the first frame.

Strategies, on the same weights and data:
  batched  - a batch advances step by step, exited videos leave the active set, frames decoded on demand;
  batch-1  - the original's: one video at a time, all sampled frames decoded first, then step by step;
  static   - the all-frames model (no exit), batched.
``efficiency = (static time / batched time) / (static MACs / batched MACs)``; 1.0 means the MACs
saved turn fully into time saved.

    python benchmarks/bench_frameexit.py --run runs/demo --beta 0.003
    python benchmarks/bench_frameexit.py --backbone resnet50 --videos 32
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from common import machine, timed

from effvid.config import load_config
from effvid.data import build_dataset
from frameexit.build import build_model, load_checkpoint
from frameexit.config import CheckpointConfig, DemoConfig
from frameexit.evaluation import evaluate_dataset
from frameexit.inference import early_exit, measure_unit_costs, video_macs
from frameexit.model import FrameExitModel


def bench_run(run: Path, beta: float, repeats: int) -> None:
    cfg = load_config(DemoConfig, [str(run / "config.yaml")])
    k, t = cfg.model.num_class, cfg.data.num_frames
    root = Path(cfg.root)
    storage_path = root / {"frames": "frames", "lmdb": "frames.lmdb", "video": "videos"}[cfg.data.storage]
    data = replace(
        cfg.data,
        format="list",
        path_frame=str(storage_path),
        path_label=str(root / "val.txt"),
        path_classid=str(root / "classes.txt"),
    )
    dataset = build_dataset(data, num_classes=k)
    model = build_model(cfg.model, num_frames=t)
    load_checkpoint(model, CheckpointConfig(init=str(run / f"stage2-beta{beta:g}" / "model.pt")))
    device = torch.device("cpu")
    n = len(dataset)

    def batched():
        return evaluate_dataset(model, dataset, batch_size=cfg.data.batch_size, device=device, progress=False)

    def static():
        return evaluate_dataset(
            model, dataset, batch_size=cfg.data.batch_size, device=device, exits=False, progress=False
        )

    def batch1():
        # the original strategy: decode the whole clip, then run frame by frame with exits, one video at a time
        used = []
        for i in range(n):
            clip = dataset[i]["video"][None]
            used.append(early_exit(model, lambda a, s, c=clip: c[a, s], 1, device=device).exit_step)
        return torch.cat(used)

    tb, eb = timed(batched, repeats)
    ts, es = timed(static, repeats)
    t1, _ = timed(batch1, repeats)
    report(
        f"demo run {run} (beta={beta:g}), {n} videos from {cfg.data.storage}, end to end",
        n,
        tb,
        t1,
        ts,
        eb.metrics["mean_gmacs"],
        es.metrics["mean_gmacs"],
    )


def bench_resnet(backbone: str, videos: int, batch: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = FrameExitModel(backbone=backbone, num_classes=200).eval()
    clips = torch.randn(videos, 10, 3, 224, 224) * torch.linspace(0.5, 2.0, videos).view(-1, 1, 1, 1, 1)
    with torch.no_grad():  # thresholds from the data: about half exit at step 0, gates split the rest
        h = model.frame_features(clips[:, 0])
        conf = torch.softmax(model.classifiers[0](h), 1).amax(1)
        model.first_threshold = float(conf.median())
        z1 = torch.maximum(model.frame_features(clips[:, 1]), h)
        model.gate_threshold = float(torch.sigmoid(model.gates[0](z1, h)).median())
    costs = measure_unit_costs(model, (3, 224, 224))

    def batched():
        steps = [
            early_exit(model, lambda a, s, o=o: clips[o : o + batch][a, s], min(batch, videos - o)).exit_step
            for o in range(0, videos, batch)
        ]
        return torch.cat(steps)

    def static():
        return torch.cat(
            [
                early_exit(
                    model, lambda a, s, o=o: clips[o : o + batch][a, s], min(batch, videos - o), exits=False
                ).exit_step
                for o in range(0, videos, batch)
            ]
        )

    def batch1():
        return torch.cat(
            [early_exit(model, lambda a, s, i=i: clips[i : i + 1][a, s], 1).exit_step for i in range(videos)]
        )

    tb, steps = timed(batched, repeats)
    ts, steps_static = timed(static, repeats)
    t1, _ = timed(batch1, repeats)
    macs_b = video_macs(steps, costs, 10)["total"].double().mean().item() / 1e9
    macs_s = video_macs(steps_static, costs, 10, exits=False)["total"].double().mean().item() / 1e9
    report(
        f"{backbone} at 224x224, random weights, {videos} videos in memory, model only",
        videos,
        tb,
        t1,
        ts,
        macs_b,
        macs_s,
    )


def bench_frame_network(backbone: str, batch: int, repeats: int, *, compile_too: bool = False) -> None:
    """ms per frame of FrameExit's frame network (backbone + MLP) under each inference pass,
    timed in turn (A B C ... A B C ...) so that a drifting machine hits all alike, with each
    variant's largest deviation from the plain float32 features."""
    from effvid.engine import autocast
    from effvid.models.optimize import FastInferenceConfig, optimize_for_inference
    from frameexit.inference import FrameFeatures

    torch.manual_seed(0)
    model = FrameExitModel(backbone=backbone, num_classes=200).eval()
    for m in model.modules():  # BatchNorm statistics of a trained network, so that folding is real
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    frames = torch.randn(batch, 3, 224, 224)
    cpu = torch.device("cpu")
    plain = FrameFeatures(model)
    none = FastInferenceConfig(fold_bn=False, channels_last=False)
    variants = {
        "plain float32 (the original's)": (plain, "none"),
        "channels-last": (
            optimize_for_inference(plain, replace(none, channels_last=True), device=cpu),
            "none",
        ),
        "BatchNorm folded": (optimize_for_inference(plain, replace(none, fold_bn=True), device=cpu), "none"),
        "folded + channels-last (default)": (
            optimize_for_inference(plain, FastInferenceConfig(), device=cpu),
            "none",
        ),
    }
    default = variants["folded + channels-last (default)"][0]
    variants["default + bf16 autocast"] = (default, "bf16")
    variants["default, bf16 weights"] = (
        optimize_for_inference(plain, FastInferenceConfig(), device=cpu, dtype=torch.bfloat16),
        "none",
    )
    calib = [torch.randn(batch, 3, 224, 224) for _ in range(4)]
    variants["int8 (torch.ao, x86)"] = (
        optimize_for_inference(plain, FastInferenceConfig(int8=True), device=cpu, calibration=calib),
        "none",
    )
    if compile_too:
        start = time.perf_counter()
        compiled = optimize_for_inference(plain, FastInferenceConfig(compile=True), device=cpu)
        with torch.no_grad():
            compiled(frames)
        print(f"torch.compile: first call {time.perf_counter() - start:.0f} s")
        variants["default + torch.compile"] = (compiled, "none")
    with torch.no_grad():
        ref = plain(frames)
        times: dict[str, list[float]] = {k: [] for k in variants}
        dev: dict[str, float] = {}
        for name, (net, amp) in variants.items():
            with autocast(cpu, amp):
                out = net(frames).float()
            dev[name] = float((out - ref).abs().max() / ref.abs().max())
        for _ in range(repeats):
            for name, (net, amp) in variants.items():
                start = time.perf_counter()
                with autocast(cpu, amp):
                    net(frames)
                times[name].append(time.perf_counter() - start)
    print(f"\nframe network ({backbone} + MLP), batch {batch}, {repeats} rounds in turn; {machine()}")
    print(f"{'variant':<34} {'ms/frame':>9} {'speed-up':>9} {'max rel. deviation':>19}")
    base = min(times["plain float32 (the original's)"])
    for name, ts in times.items():
        best = min(ts)
        print(f"{name:<34} {best / batch * 1e3:>9.1f} {base / best:>8.2f}x {dev[name]:>19.1e}")


def gemm_peak(dtype: str, size: int = 1024, repeats: int = 5) -> float:
    """Multiply-accumulates per second of one large matrix product on this machine (as many threads
    as torch uses): ``float32`` and ``bfloat16`` through torch.mm, ``int8`` through torch.ao's x86
    quantised linear, the kernel family the int8 frame network runs on."""
    import warnings

    a, b = torch.randn(size, size), torch.randn(size, size)
    if dtype == "int8":
        import torch.ao.nn.quantized as nnq

        torch.backends.quantized.engine = "x86"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            linear = nnq.Linear(size, size)
            x = torch.quantize_per_tensor(a, 0.05, 64, torch.quint8)

        def run():
            return linear(x)
    else:
        if dtype == "bfloat16":
            a, b = a.bfloat16(), b.bfloat16()

        def run():
            return a @ b

    run()
    best, _ = timed(run, repeats)
    return size**3 / best


def bench_roofline(backbone: str) -> None:
    """The least time a frame can take on this machine: the frame network's measured MACs at the
    peak rate of one large matrix product in each number format."""
    costs = measure_unit_costs(FrameExitModel(backbone=backbone, num_classes=200), (3, 224, 224))
    macs = costs.macs["backbone"] + costs.macs["mlp"]
    print(f"\nroofline: {backbone} + MLP, {macs / 1e9:.3f} GMACs per frame (measured); {machine()}")
    print(f"{'format':<10} {'GEMM peak GMAC/s':>17} {'least ms/frame':>15}")
    for dtype in ("float32", "bfloat16", "int8"):
        peak = gemm_peak(dtype)
        print(f"{dtype:<10} {peak / 1e9:>17.1f} {macs / peak * 1e3:>15.1f}")


def report(title: str, n: int, tb: float, t1: float, ts: float, gmacs_b: float, gmacs_s: float) -> None:
    print(f"\n{title}")
    print(f"machine: {machine()}")
    print(f"{'strategy':<28} {'videos/s':>9} {'GMACs/video':>12}")
    print(f"{'batched early exit':<28} {n / tb:>9.1f} {gmacs_b:>12.4f}")
    print(f"{'batch-1 loop (original)':<28} {n / t1:>9.1f} {gmacs_b:>12.4f}")
    print(f"{'static, all frames':<28} {n / ts:>9.1f} {gmacs_s:>12.4f}")
    speedup, reduction = ts / tb, gmacs_s / gmacs_b
    print(f"batched vs batch-1: {t1 / tb:.2f}x faster")
    print(
        f"speed-up over all frames {speedup:.2f}x / MAC reduction {reduction:.2f}x = efficiency {speedup / reduction:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a frameexit-demo run directory")
    parser.add_argument(
        "--beta", type=float, default=None, help="which gated model of the run (a beta of its sweep)"
    )
    parser.add_argument("--backbone", default=None, help="model-only benchmark with this backbone at 224x224")
    parser.add_argument(
        "--frame_network",
        default=None,
        help="ms per frame of this backbone's frame network under each inference pass",
    )
    parser.add_argument("--compile", action="store_true", help="--frame_network: torch.compile too (slow)")
    parser.add_argument(
        "--roofline", default=None, help="least ms per frame of this backbone at this machine's GEMM peaks"
    )
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.run:
        betas = yaml.safe_load((args.run / "config.yaml").read_text())["betas"]
        if args.beta is None or args.beta not in betas:
            parser.error(f"--run needs --beta, one of the run's sweep: {betas}")
        bench_run(args.run, args.beta, args.repeats)
    if args.backbone:
        bench_resnet(args.backbone, args.videos, args.batch, args.repeats)
    if args.frame_network:
        bench_frame_network(args.frame_network, args.batch, args.repeats, compile_too=args.compile)
    if args.roofline:
        bench_roofline(args.roofline)
    if not args.run and not args.backbone and not args.frame_network and not args.roofline:
        parser.error("give --run DIR, --backbone NAME, --frame_network NAME and/or --roofline NAME")


if __name__ == "__main__":
    main()
