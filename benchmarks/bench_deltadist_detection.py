"""Wall-clock per frame of a delta EfficientDet-D0 vs its teacher on the CPU (Delta Distillation,
detection).

EfficientDet-D0 (effdet, random weights: timing does not depend on them, only on which student
each layer runs) at ``--size S`` (the original's 512), clips of ``--k`` frames (the original's 10):

* ``teacher``: the plain network on a batch of K frames;
* ``delta, deployed``: converted by the original's rule (68 layers, rank min(Cin, Cout) // 16),
  every layer on its low-rank student (the MAC lower bound), deployed, one K-frame clip per call.

Printed: milliseconds per frame (median of ``--repeats`` after one warm-up), and MACs per frame
counted by the core (FlopCounterMode on the meta device), the delta model's amortised over K.

    python benchmarks/bench_deltadist_detection.py [--size 512] [--k 10] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from common import machine

from deltadist.cost import clip_macs, measure_unit_costs
from deltadist.delta import delta_layers, deploy, set_clip_length
from deltadist.detection.efficientdet import convert_efficientdet, efficientdet_d0


@torch.no_grad()
def _ms_per_frame(model, frames, repeats: int) -> float:
    model(frames)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(frames)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / frames.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = efficientdet_d0(image_size=args.size).eval()
    with torch.device("meta"):
        delta = efficientdet_d0(image_size=args.size).eval()
    convert_efficientdet(delta)
    for layer in delta_layers(delta).values():
        layer.force = "lowrank"
    units = measure_unit_costs(delta, (3, args.size, args.size))
    frame_macs, delta_macs = clip_macs(delta, units, 1), clip_macs(delta, units, args.k) / args.k
    delta = efficientdet_d0(image_size=args.size).eval()
    delta.load_state_dict(teacher.state_dict())
    convert_efficientdet(delta)
    for layer in delta_layers(delta).values():
        layer.force = "lowrank"
    deploy(delta)
    frames = torch.rand(args.k, 3, args.size, args.size)
    t_ms = _ms_per_frame(teacher, frames, args.repeats)
    set_clip_length(delta, args.k)
    d_ms = _ms_per_frame(delta, frames, args.repeats)
    print(machine())
    print(f"EfficientDet-D0 {args.size}x{args.size}, clips of {args.k} frames")
    print(f"{'model':<34} {'GMac/frame':>10} {'ms/frame':>9}")
    print(f"{'teacher':<34} {frame_macs / 1e9:>10.3f} {t_ms:>9.1f}")
    print(f"{'delta, all low-rank, deployed':<34} {delta_macs / 1e9:>10.3f} {d_ms:>9.1f}")
    print(f"speed-up {t_ms / d_ms:.2f}x at {100 * delta_macs / frame_macs:.0f} % of the MACs")


if __name__ == "__main__":
    main()
