"""Wall-clock per frame of a delta model vs its teacher on the CPU (Delta Distillation).

DDRNet-23-slim (random weights: timing does not depend on them, only on which student each layer
runs) at ``--size H W``, keyframe interval K. Each configuration is measured alone:

* ``teacher``: the plain network;
* ``delta, low-rank (gated layers)``: every layer on its low-rank student, as trained (both
  students and the gate still in the layer);
* ``delta, deployed``: the same after ``deploy()`` (only the chosen student kept);
* ``delta, deployed, channels-last``: and the model and input in channels-last memory format;
* ``delta, latency-aware, deployed``: each layer on the student its *measured* delta-frame time
  says is faster (a latency table per student, ``effvid.flops.latency_table``), deployed.

Two ways of running K frames: ``batched`` (one clip of K frames per call, ``forward_clip``;
teacher: a batch of K frames) and ``streaming`` (one frame per call, ``DeltaStream``). Figures are
milliseconds per frame, amortised over K, the median of ``--repeats`` timed clips after warm-up.

    python benchmarks/bench_deltadist.py [--size 128 256] [--k 3] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from pathlib import Path

import torch

from deltadist.cost import clip_macs, measure_unit_costs
from deltadist.delta import (
    DeltaStream,
    convert_to_delta,
    delta_layers,
    deploy,
    forward_clip,
    set_clip_length,
)
from deltadist.models import get_model
from effvid.flops import latency_table


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def median_ms(fn, frames: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / frames


def force(model, student: str) -> None:
    for layer in delta_layers(model).values():
        layer.force = student


@torch.no_grad()
def latency_aware(model, frame: torch.Tensor) -> dict[str, str]:
    """Per layer, the student whose own time on a delta frame is lower (measured, not counted)."""
    clip = torch.cat([frame, frame + 0.01 * torch.randn_like(frame)])
    set_clip_length(model, 2)
    tables = {}
    for student in ("full", "lowrank"):
        force(model, student)
        tables[student] = latency_table(model, clip, repeats=5, warmup=1)
    set_clip_length(model, 1)
    choice = {}
    for name in delta_layers(model):
        ms = {
            s: sum(r.ms for r in tables[s].rows if r.name.startswith(f"{name}.student_{s}"))
            for s in ("full", "lowrank")
        }
        choice[name] = "lowrank" if ms["lowrank"] < ms["full"] else "full"
    return choice


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=[128, 256])
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    k, (h, w) = args.k, args.size
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    first = torch.randn(1, 3, h, w, generator=g)
    clip = torch.cat(
        [first + 0.05 * t * torch.randn(1, 3, h, w, generator=g) for t in range(k)]
    )  # (K, 3, H, W)

    teacher = get_model("ddrnet23_slim").eval()
    lowrank = copy.deepcopy(teacher)
    convert_to_delta(lowrank)
    lowrank.eval()
    force(lowrank, "lowrank")
    deployed = copy.deepcopy(lowrank)
    deploy(deployed)
    channels_last = copy.deepcopy(deployed).to(memory_format=torch.channels_last)
    aware = copy.deepcopy(lowrank)
    choice = latency_aware(aware, clip[:1])
    for name, layer in delta_layers(aware).items():
        layer.force = choice[name]
    deploy(aware)
    models = {
        "teacher": (teacher, False),
        "delta, low-rank (gated layers)": (lowrank, False),
        "delta, deployed": (deployed, False),
        "delta, deployed, channels-last": (channels_last, True),
        f"delta, latency-aware, deployed ({sum(c == 'full' for c in choice.values())} full)": (aware, False),
    }
    units = measure_unit_costs(lowrank, (3, h, w))
    gmacs = {"teacher": clip_macs(lowrank, units, 1) / 1e9, "delta": clip_macs(lowrank, units, k) / k / 1e9}
    aware_units = measure_unit_costs(aware, (3, h, w))
    print(
        f"DDRNet-23-slim at {h}x{w}, K={k}; {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )
    print(
        f"GMACs/frame: teacher {gmacs['teacher']:.3f}, delta (all low-rank) {gmacs['delta']:.3f}, "
        f"latency-aware {clip_macs(aware, aware_units, k) / k / 1e9:.3f}"
    )
    print(f"{'configuration':<46} {'batched ms/frame':>16} {'streaming ms/frame':>18}")
    for label, (model, cl) in models.items():
        frames = clip.to(memory_format=torch.channels_last) if cl else clip
        batched, streamed = measure(model, frames, k, args.repeats, plain=label == "teacher")
        print(f"{label:<46} {batched:>16.1f} {streamed:>18.1f}", flush=True)


def measure(model, frames: torch.Tensor, k: int, repeats: int, *, plain: bool) -> tuple[float, float]:
    """(batched, streaming) ms per frame of ``frames`` (K, 3, H, W)."""
    if plain:
        batched = median_ms(lambda: model(frames), k, repeats)
        return batched, median_ms(lambda: [model(frames[t : t + 1]) for t in range(k)], k, repeats)
    stream = DeltaStream(model, k)

    def run_stream() -> None:
        stream.reset()
        for t in range(k):
            stream(frames[t : t + 1])

    return median_ms(lambda: forward_clip(model, frames[None]), k, repeats), median_ms(run_stream, k, repeats)


if __name__ == "__main__":
    main()
