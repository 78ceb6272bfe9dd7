"""Evaluating VideoIQ over a dataset: dynamic inference (each frame only at its chosen precision),
top-1 / mAP, the policy's action distribution, each video's cost three ways, and one record per
video (``predictions.jsonl``: per-frame decisions, class probabilities, the three costs).

Also the static networks VideoIQ is compared with: the float network and the any-precision one
at a fixed bit width (:func:`evaluate_static`). Timings count the model only (data excluded),
after one untimed warm-up pass on the first batch (kernel and memory set-up).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from effvid.engine import make_dataloader
from effvid.flops import UnitCosts
from effvid.io import atomic_write_json
from effvid.metrics import HitAt1, VideoMAP
from effvid.reports import check_finite_scores, write_predictions
from videoiq.cost import (
    PAPER_BACKBONE_GFLOPS,
    PaperConstants,
    frame_bitops,
    measure_unit_costs,
    measured_paper_constants,
    paper_constants,
    paper_gflops,
    paper_relative_cost,
    static_costs,
    video_bitops,
    video_macs,
)
from videoiq.inference import dynamic_inference
from videoiq.model import AnyPrecisionResNet, VideoIQ

__all__ = [
    "Evaluation",
    "action_names",
    "cached_batches",
    "evaluate_static",
    "evaluate_videoiq",
    "formula_constants",
    "video_batches",
]

Batch = Mapping[str, Any]
T = TypeVar("T")


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0  # model time over the whole set

    def write(self, run_dir: str | Path, *, name: str = "eval") -> None:
        """``metrics_<name>.json`` and ``predictions.jsonl`` (one line per video), atomically."""
        run_dir = Path(run_dir)
        atomic_write_json(run_dir / f"metrics_{name}.json", self.metrics)
        write_predictions(run_dir / "predictions.jsonl", self.rows)

    def summary(self) -> str:
        m = self.metrics
        lines = [f"videos: {m['num_videos']}  top1: {m['top1']:.4f}  mAP: {m['map']:.4f}"]
        if "policy_distribution" in m:
            dist = "  ".join(f"{k} {v:.1%}" for k, v in m["policy_distribution"].items())
            lines.append(f"policy ({m['decisions']} decisions): {dist}")
        lines.append(
            f"cost per video: paper formula {m['mean_gflops_paper']:.4f} GMACs ({m['paper_constants']}); "
            f"measured {m['mean_gmacs']:.4f} GMACs; {m['mean_gbitops']:.4f} GBitOPs"
        )
        return "\n".join(lines)


def action_names(model: VideoIQ) -> list[str]:
    """Names of the policy's actions in order: ``32bit``... (``float``), then ``skip<s>``."""
    names = [p if p == "float" else f"{p}bit" for p in model.precisions]
    return names + [f"skip{s}" for s in model.skip_list]


def video_batches(
    dataset: torch.utils.data.Dataset, *, batch_size: int, num_workers: int = 0
) -> Iterable[Batch]:
    """The dataset in order, batch by batch (``video`` (B, T, 3, H, W), ``label``, ``key``)."""
    return make_dataloader(dataset, batch_size=batch_size, train=False, num_workers=num_workers)


def cached_batches(dataset: torch.utils.data.Dataset, *, batch_size: int) -> list[Batch]:
    """:func:`video_batches` decoded once and kept in memory (several models on one set)."""
    return list(video_batches(dataset, batch_size=batch_size))


def formula_constants(
    model: VideoIQ, frame_shape: Sequence[int], num_frames: int, costs: UnitCosts | None = None
) -> PaperConstants:
    """The paper's constants when the setting is the paper's (a 64-wide R-18/R-50, the policy's
    MobileNetV2 at 84x84, 16 frames at 224x224), else the same constants measured for this model and input (``costs``: its unit
    costs, if already measured)."""
    rec, policy = model.recognizer, model.policy
    if (
        rec.arch in PAPER_BACKBONE_GFLOPS
        and not rec.backbone_kwargs
        and (policy.arch, policy.width, policy.input_size) == ("mobilenet_v2", 1.0, 84)
        and tuple(frame_shape) == (3, 224, 224)
        and num_frames == 16
    ):
        return paper_constants(rec.arch)
    return measured_paper_constants(model, frame_shape, num_frames, costs)


def _labels(label: torch.Tensor) -> list[list[int]]:
    if label.dim() == 1:
        return [[int(v)] for v in label]
    return [torch.nonzero(row).flatten().tolist() for row in label]


def _timed(fn: Callable[[], T], device: torch.device, *, warm_up: bool = False) -> tuple[T, float]:
    if warm_up:
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


@torch.no_grad()
def evaluate_videoiq(
    model: VideoIQ,
    batches: Iterable[Batch],
    *,
    device: torch.device,
    sample: bool = False,
    progress: bool = False,
    int8: Mapping[int, Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> Evaluation:
    """Dynamic inference over ``batches``: metrics, policy distribution, costs, per-video rows.

    ``sample`` draws the policy's decisions (Gumbel at the model's temperature; seed torch first
    for repeatable draws); the default takes the argmax. ``int8``: bit width -> an int8 branch
    that runs those frames instead (:func:`videoiq.inference.dynamic_inference`).
    """
    model = model.to(device).eval()
    names, num_skips = action_names(model), len(model.skip_list)
    hit1, mean_ap = HitAt1(), VideoMAP()
    rows: list[dict[str, Any]] = []
    counts = torch.zeros(len(names), dtype=torch.float64)
    costs = per_frame = constants = None
    seconds = 0.0
    for batch in tqdm(batches, desc="videos", unit="batch", disable=not progress):
        clip = batch["video"].to(device)
        if costs is None:  # measured once, for this input size
            frame_shape, num_frames = tuple(clip.shape[2:]), clip.shape[1]
            costs, per_frame = measure_unit_costs(model, frame_shape), frame_bitops(model, frame_shape)
            constants = formula_constants(model, frame_shape, num_frames, costs)
        infer = lambda clip=clip: dynamic_inference(model, clip, sample=sample, int8=int8)  # noqa: E731
        result, took = _timed(infer, device, warm_up=not rows)
        seconds += took
        check_finite_scores(result.logits, batch["key"])
        probs, actions = result.probs.cpu(), result.actions.cpu()
        hit1.update((probs, batch["label"]))
        mean_ap.update((probs, batch["label"]))
        counts += torch.nn.functional.one_hot(actions.flatten(), len(names)).sum(dim=0)
        paper = paper_gflops(actions, model.precision_bits, num_skips, constants=constants)["total"]
        macs = video_macs(actions, costs, model.precisions, num_skips)["total"]
        bitops = video_bitops(actions, per_frame, costs, model.precisions, num_skips)
        for j, key in enumerate(batch["key"]):
            rows.append(
                {
                    "video": key,
                    "labels": _labels(batch["label"][j : j + 1])[0],
                    "actions": [names[a] for a in actions[j]],
                    "bits": result.bits[j].tolist(),
                    "probs": [round(float(p), 6) for p in probs[j]],
                    "gflops_paper": float(paper[j]),
                    "gmacs": float(macs[j]) / 1e9,
                    "gbitops": float(bitops[j]) / 1e9,
                }
            )
    if not rows:
        raise ValueError("evaluation has no video")
    metrics = {
        "num_videos": len(rows),
        "top1": hit1.compute(),
        "map": mean_ap.compute(),
        "decisions": "sampled" if sample else "argmax",
        "policy_distribution": {n: float(c / counts.sum()) for n, c in zip(names, counts)},
        "mean_gflops_paper": float(np.mean([r["gflops_paper"] for r in rows])),
        "paper_constants": "the paper's"
        if constants.source == "paper"
        else "measured for this model and input",
        "mean_gmacs": float(np.mean([r["gmacs"] for r in rows])),
        "mean_gbitops": float(np.mean([r["gbitops"] for r in rows])),
        "unit": "GMACs and GBitOPs per video (the paper's GFLOPs are GMACs)",
        "unit_costs_macs": dict(costs.macs),
        "frame_bitops": {str(k): v for k, v in per_frame.items()},
        "model_seconds": seconds,
    }
    return Evaluation(metrics, rows, seconds)


@torch.no_grad()
def evaluate_static(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    device: torch.device,
    bits: int | None = None,
    constants: PaperConstants | None = None,
) -> Evaluation:
    """The float network (``bits=None``) or the any-precision one at ``bits`` on every frame:
    top-1, mAP, MACs and BitOPs per video, and the paper formula when ``constants`` are given."""
    model = model.to(device).eval()
    hit1, mean_ap = HitAt1(), VideoMAP()
    seconds, n, clip_shape = 0.0, 0, None
    run = (lambda c: model(c, bits)) if isinstance(model, AnyPrecisionResNet) else model
    try:
        for batch in batches:
            clip = batch["video"].to(device)
            clip_shape = clip_shape or tuple(clip.shape[1:])
            logits, took = _timed(lambda clip=clip: run(clip), device, warm_up=n == 0)
            seconds += took
            check_finite_scores(logits, batch["key"])
            probs = torch.softmax(logits.float(), dim=1).cpu()
            hit1.update((probs, batch["label"]))
            mean_ap.update((probs, batch["label"]))
            n += clip.shape[0]
    finally:
        if isinstance(model, AnyPrecisionResNet):
            model.set_bit_width(model.family[0])
    if clip_shape is None:
        raise ValueError("evaluation has no video")
    cost = static_costs(model, clip_shape, bits)
    metrics = {
        "num_videos": n,
        "top1": hit1.compute(),
        "map": mean_ap.compute(),
        "mean_gmacs": cost["macs"] / 1e9,
        "mean_gbitops": cost["bitops"] / 1e9,
        "model_seconds": seconds,
    }
    if constants is not None:
        metrics["mean_gflops_paper"] = float(constants.backbone_gflops(paper_relative_cost(bits or 32)))
    return Evaluation(metrics, [], seconds)
