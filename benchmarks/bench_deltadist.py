"""Wall-clock per frame of a delta model vs its teacher on the CPU (Delta Distillation).

DDRNet-23-slim (random weights and BatchNorm statistics: the time depends only on which student
each layer runs) at ``--size H W``, keyframe interval K. Two ways of running K frames:
``batched`` (one K-frame clip per call, ``forward_clip``; the teacher: a batch of K frames) and
``streaming`` (one frame per call, ``DeltaStream``; the teacher: K single frames). Figures are
milliseconds per frame amortised over K.

The techniques, each applied alone and together, to the teacher as well where it has the layer:

* ``deployed``: ``deploy()`` keeps the chosen student only (else both students and the gate);
* ``latency-aware``: each layer on the student whose own measured delta-frame time is lower (a
  latency table per student, ``effvid.flops.latency_table``) instead of all low-rank;
* ``fold-bn``: BatchNorm folded into the preceding convolution (``deltadist.inference``);
* ``channels-last``: weights and activations in channels-last memory format;
* ``compile``: ``torch.compile`` (inductor; ``--compile``, slow to build on a small CPU).

Table mode (default) builds every configuration, checks that each optimised model's outputs equal
its unoptimised counterpart's, and times them **in turn** (one batched clip and one streamed clip
of each configuration per round, ``--repeats`` rounds; the median per configuration), so that a
drift of the machine's speed hits every row alike. ``--only`` runs one configuration for
``--clips`` clips and exits, for whole-process timing of two commands alternated.

    python benchmarks/bench_deltadist.py [--size 128 256] [--k 3] [--repeats 15] [--compile]
    python benchmarks/bench_deltadist.py --only delta --mode batched --fold-bn --channels-last --clips 40
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from deltadist.cost import clip_macs, measure_unit_costs
from deltadist.delta import DeltaStream, convert_to_delta, delta_layers, deploy, forward_clip, set_clip_length
from deltadist.inference import fold_batchnorm
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


def force(model: nn.Module, student: str | dict[str, str]) -> None:
    for name, layer in delta_layers(model).items():
        layer.force = student if isinstance(student, str) else student[name]


@torch.no_grad()
def latency_aware(model: nn.Module, frame: torch.Tensor) -> dict[str, str]:
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


def random_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that folding them is actually checked."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model


@dataclass(frozen=True)
class Config:
    model: str = "delta"  # teacher | delta
    deployed: bool = True
    full_layers: tuple[str, ...] = ()  # latency-aware: these layers on their full student
    fold_bn: bool = False
    channels_last: bool = False
    compile: bool = False
    label: str = field(default="", compare=False)

    def name(self) -> str:
        if self.label:
            return self.label
        parts = [self.model]
        if self.model == "delta":
            parts.append(
                f"latency-aware ({len(self.full_layers)} full)" if self.full_layers else "all low-rank"
            )
            parts.append("deployed" if self.deployed else "gated layers")
        parts += [t for t, on in (("fold-bn", self.fold_bn), ("channels-last", self.channels_last)) if on]
        if self.compile:
            parts.append("compiled")
        return ", ".join(parts)


def build(cfg: Config, teacher: nn.Module) -> nn.Module:
    """The configuration's model, eval mode, from a copy of ``teacher``."""
    model = copy.deepcopy(teacher)
    if cfg.model == "delta":
        convert_to_delta(model)
        model.eval()
        force(model, {name: "full" if name in cfg.full_layers else "lowrank" for name in delta_layers(model)})
        if cfg.deployed:
            deploy(model)
    if cfg.fold_bn:
        fold_batchnorm(model)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


class Runner:
    """Runs one configuration batched or streamed on a K-frame clip; ``compile`` wraps the model."""

    def __init__(self, cfg: Config, teacher: nn.Module, clip: torch.Tensor) -> None:
        self.cfg, self.k = cfg, clip.shape[0]
        self.model = build(cfg, teacher)
        self.clip = clip.contiguous(memory_format=torch.channels_last) if cfg.channels_last else clip
        self.compile_s = 0.0
        call = self.model
        if cfg.compile:
            call = torch.compile(self.model)
        self.call = call
        self.stream = DeltaStream(call, self.k) if cfg.model == "delta" else None
        if self.stream is not None:  # DeltaStream finds the layers on the model it is given
            self.stream.layers = list(delta_layers(self.model).values())
            self.stream.reset()

    def batched(self) -> torch.Tensor:
        if self.cfg.model == "teacher":
            return self.call(self.clip)
        return forward_clip(self.call, self.clip[None])[0]

    def streamed(self) -> torch.Tensor:
        outs = []
        if self.stream is None:
            outs = [self.call(self.clip[t : t + 1]) for t in range(self.k)]
        else:
            self.stream.reset()
            outs = [self.stream(self.clip[t : t + 1]) for t in range(self.k)]
        return torch.cat(outs)


def frames(size: tuple[int, int], k: int) -> torch.Tensor:
    """A K-frame clip (K, 3, H, W): a random frame plus growing noise (a moving video's deltas)."""
    g = torch.Generator().manual_seed(1)
    first = torch.randn(1, 3, *size, generator=g)
    return torch.cat([first + 0.05 * t * torch.randn(1, 3, *size, generator=g) for t in range(k)])


def teacher_net() -> nn.Module:
    torch.manual_seed(0)
    return random_batchnorm(get_model("ddrnet23_slim")).eval()


def configurations(full: tuple[str, ...], compile_rows: bool) -> list[Config]:
    rows = []
    for model in ("teacher", "delta"):
        for fold_bn, channels_last in ((False, False), (True, False), (False, True), (True, True)):
            rows.append(Config(model, fold_bn=fold_bn, channels_last=channels_last))
        if model == "delta":
            rows.insert(len(rows) - 4, Config("delta", deployed=False))
            rows.append(Config("delta", full_layers=full))
            rows.append(Config("delta", full_layers=full, fold_bn=True, channels_last=True))
        if compile_rows:  # one compiled row each: compiling takes minutes on a small CPU
            rows.append(Config(model, fold_bn=True, channels_last=True, compile=True))
    return rows


def reference_of(cfg: Config) -> Config:
    """The unoptimised counterpart whose outputs ``cfg``'s must equal."""
    return (
        Config(cfg.model, deployed=False, full_layers=cfg.full_layers)
        if cfg.model == "delta"
        else Config("teacher")
    )


@torch.no_grad()
def table(args: argparse.Namespace) -> None:
    k, size = args.k, tuple(args.size)
    clip = frames(size, k)
    teacher = teacher_net()
    probe = build(Config("delta", deployed=False), teacher)
    full = tuple(name for name, s in latency_aware(probe, clip[:1]).items() if s == "full")
    units = measure_unit_costs(probe, (3, *size))
    print(
        f"DDRNet-23-slim at {size[0]}x{size[1]}, K={k}; {cpu_name()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); {args.repeats} rounds, configurations timed in turn"
    )
    print(
        f"GMACs/frame: teacher {clip_macs(probe, units, 1) / 1e9:.3f}, delta (all low-rank) "
        f"{clip_macs(probe, units, k) / k / 1e9:.3f}"
    )
    print(f"latency-aware full layers: {','.join(full) or '(none)'}")
    runners, refs = {}, {}
    for cfg in configurations(full, args.compile):
        runner = Runner(cfg, teacher, clip)
        start = time.perf_counter()
        out_b, out_s = runner.batched(), runner.streamed()  # compiles, if compiled
        runner.compile_s = time.perf_counter() - start
        ref = refs.setdefault(reference_of(cfg), Runner(reference_of(cfg), teacher, clip))
        diff = max((out_b - ref.batched()).abs().max().item(), (out_s - ref.streamed()).abs().max().item())
        runners[cfg] = (runner, diff)
        note = f", first calls (compiling) {runner.compile_s:.0f} s" if cfg.compile else ""
        print(f"  built {cfg.name()}: max |out - unoptimised out| {diff:.1e}{note}", flush=True)
    times: dict[Config, tuple[list[float], list[float]]] = {cfg: ([], []) for cfg in runners}
    for _ in range(args.repeats):
        for cfg, (runner, _diff) in runners.items():
            for mode, fn in enumerate((runner.batched, runner.streamed)):
                start = time.perf_counter()
                fn()
                times[cfg][mode].append(1000 * (time.perf_counter() - start) / k)
    med = {cfg: tuple(statistics.median(t) for t in pair) for cfg, pair in times.items()}
    print(
        f"{'configuration':<62} {'batched':>8} {'streamed':>8}  ms/frame; teacher/delta at the same techniques"
    )
    for cfg, (b, s) in med.items():
        twin = Config("teacher", fold_bn=cfg.fold_bn, channels_last=cfg.channels_last, compile=cfg.compile)
        ratio = ""
        if cfg.model == "delta" and twin in med:
            ratio = f"  x{med[twin][0] / b:.2f} x{med[twin][1] / s:.2f}"
        print(f"{cfg.name():<62} {b:>8.1f} {s:>8.1f}{ratio}")
    best_t = min((c for c in med if c.model == "teacher"), key=lambda c: med[c][0])
    best_ts = min((c for c in med if c.model == "teacher"), key=lambda c: med[c][1])
    best_d = min((c for c in med if c.model == "delta"), key=lambda c: med[c][0])
    best_ds = min((c for c in med if c.model == "delta"), key=lambda c: med[c][1])
    print(
        f"best batched: teacher {med[best_t][0]:.1f} ({best_t.name()}), delta {med[best_d][0]:.1f} "
        f"({best_d.name()}): x{med[best_t][0] / med[best_d][0]:.2f}"
    )
    print(
        f"best streamed: teacher {med[best_ts][1]:.1f} ({best_ts.name()}), delta {med[best_ds][1]:.1f} "
        f"({best_ds.name()}): x{med[best_ts][1] / med[best_ds][1]:.2f}"
    )


@torch.no_grad()
def only(args: argparse.Namespace) -> None:
    """One configuration, ``--clips`` clips: the process's time is (mostly) the model's."""
    k, size = args.k, tuple(args.size)
    cfg = Config(
        args.only,
        deployed=not args.gated,
        full_layers=tuple(args.full_layers.split(",")) if args.full_layers else (),
        fold_bn=args.fold_bn,
        channels_last=args.channels_last,
        compile=args.compile,
    )
    runner = Runner(cfg, teacher_net(), frames(size, k))
    fn = runner.batched if args.mode == "batched" else runner.streamed
    fn()  # warm-up (and compilation)
    if args.clips < 1:  # set-up only: what a whole-process timing pays before the first clip
        print(f"{cfg.name()}: set up, one warm-up clip, no timed clips")
        return
    start = time.perf_counter()
    for _ in range(args.clips):
        fn()
    ms = 1000 * (time.perf_counter() - start) / (args.clips * k)
    print(
        f"{cfg.name()}, {args.mode}, {size[0]}x{size[1]}, K={k}: {ms:.2f} ms/frame (mean of {args.clips} clips)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=[128, 256])
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15, help="table mode: rounds")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--compile", action="store_true", help="add torch.compile rows / compile --only's model"
    )
    parser.add_argument("--only", choices=("teacher", "delta"), default=None, help="run one configuration")
    parser.add_argument("--mode", choices=("batched", "streaming"), default="batched")
    parser.add_argument("--clips", type=int, default=30, help="--only: timed clips (0: set-up only)")
    parser.add_argument("--gated", action="store_true", help="--only delta: not deployed")
    parser.add_argument(
        "--full-layers", default="", help="--only delta: comma-separated layers on full students"
    )
    parser.add_argument("--fold-bn", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    (only if args.only else table)(args)


if __name__ == "__main__":
    main()
