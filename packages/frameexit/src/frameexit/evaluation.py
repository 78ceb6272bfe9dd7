"""Evaluating FrameExit over a dataset: batched early exit, metrics, per-video records."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from effvid import reports
from effvid.data import VideoClassificationDataset
from effvid.data.streaming import PrefetchingStepLoader, step_loader
from effvid.engine import autocast
from effvid.metrics import HitAt1, VideoMAP
from effvid.models.optimize import FastInferenceConfig, optimize_for_inference
from frameexit.inference import (
    ExitGuard,
    FrameFeatures,
    early_exit,
    guard_margins,
    measure_unit_costs,
    video_macs,
)
from frameexit.model import FrameExitModel

__all__ = ["Evaluation", "evaluate_dataset"]


class Evaluation(reports.Evaluation):
    def summary(self) -> str:
        m = self.metrics
        hist = "  ".join(f"{k}:{v:.1%}" for k, v in m["exit_histogram"].items())
        note = self.skipped_note()
        if "exit_guard" in m:
            note += (
                f"\nexit guard: {m['exit_guard']['rechecked_share']:.1%} of the videos had a decision "
                "near its threshold re-made in float32"
            )
        return (
            f"videos: {m['num_videos']}  top1/Hit@1: {m['hit1']:.4f}  mAP: {m['map']:.4f}\n"
            f"frames per video: {m['mean_frames']:.2f}  GMACs per video: {m['mean_gmacs']:.4f} "
            f"(backbone only, as the paper counts: {m['mean_gmacs_backbone']:.4f})\n"
            f"exit histogram (frames used: share of videos): {hist}{note}\n"
            f"time: {m['seconds']['setup']:.1f} s setting up, {m['seconds']['videos']:.1f} s for the videos"
        )


@torch.no_grad()
def evaluate_dataset(
    model: FrameExitModel,
    dataset: VideoClassificationDataset,
    *,
    batch_size: int,
    device: torch.device,
    stream: bool = True,
    num_threads: int = 0,
    prefetch: bool = True,
    max_steps: int | None = None,
    exits: bool = True,
    progress: bool = True,
    fast: FastInferenceConfig | None = None,
    amp: str = "none",
    exit_guard: float | None = None,
) -> Evaluation:
    """Early-exit inference over ``dataset`` in batches of ``batch_size`` videos.

    ``stream``: frames are decoded when a video reaches their step (never for steps it does not
    reach), ``num_threads`` decoding in parallel; otherwise whole clips are loaded first.
    ``prefetch`` (streaming): a thread decodes the next step's frames of the running videos (and
    the next batch's first frames) while the frame network runs; the outputs are the same.
    ``fast``: the frame network (backbone + MLP) runs as an optimised copy (BatchNorm folded,
    channels-last, optionally int8 calibrated on the first videos, or compiled). ``amp``: bf16 or
    fp16, as a copy with weights in that type (under autocast without ``fast``). ``exit_guard``
    (with int8 or amp): every exit decision closer to its threshold than ``exit_guard`` times the
    largest error the approximation makes on the calibration videos is re-made in float32
    (:class:`~frameexit.inference.ExitGuard`).
    MACs are counted on the model as defined (a guard's float32 recomputations are not in them).
    """
    started = time.perf_counter()
    model = model.to(device).eval()
    steps = min(max_steps or model.num_frames, model.num_frames)
    frame_shape = tuple(dataset.load_frames(0, [0]).shape[1:])
    costs = measure_unit_costs(model, frame_shape)
    frame_net: torch.nn.Module = FrameFeatures(model)
    approximate = fast is not None and (fast.int8 or amp != "none")
    guarded = approximate and exit_guard is not None and exits and steps > 1
    calibration: list[torch.Tensor] = []
    if fast is not None and (fast.int8 or guarded):
        calibration = [
            dataset.load_frames(i, list(range(steps)))
            for i in range(min(fast.calibration_batches, len(dataset)))
        ]
    exact_out: list[torch.Tensor] = []
    # bf16/fp16 with an inference copy: weights stored in that type rather than cast at every call
    half = None if fast is None or fast.int8 else {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if half is not None:
        with autocast(device, amp):  # refuses what autocast refuses (fp16 on a CPU)
            pass
    if fast is not None:
        exact_net = (
            optimize_for_inference(frame_net, replace(fast, int8=False), device=device) if guarded else None
        )
        frame_net = optimize_for_inference(
            frame_net,
            fast,
            device=device,
            calibration=iter(calibration) if fast.int8 else None,
            calibration_outputs=exact_out if fast.int8 else None,
            dtype=half,
        )

    def features(frames: torch.Tensor) -> torch.Tensor:
        if half is not None:
            return frame_net(frames)
        with autocast(device, amp):
            return frame_net(frames)

    guard = None
    if guarded:
        assert exact_net is not None and exit_guard is not None
        clips = [c.to(device) for c in calibration]
        exact_h = torch.stack(exact_out or [exact_net(c) for c in clips]).float()
        approx_h = torch.stack([features(c) for c in clips]).float()
        guard = ExitGuard(exact_net, guard_margins(model, exact_h, approx_h, exit_guard))

    prepared = time.perf_counter()
    hit1, mean_ap = HitAt1(), VideoMAP()
    hit1.reset()
    mean_ap.reset()
    rows: list[dict[str, Any]] = []
    pool = ThreadPoolExecutor(num_threads) if num_threads > 0 else None
    ahead = ThreadPoolExecutor(1, thread_name_prefix="prefetch") if prefetch and stream else None
    batches = [list(range(s, min(s + batch_size, len(dataset)))) for s in range(0, len(dataset), batch_size)]

    def loader(ids: list[int]):
        load = step_loader(dataset, ids, stream=stream, pool=pool, prefetch=ahead, num_steps=steps)
        if isinstance(load, PrefetchingStepLoader):
            load.prefetch(range(len(ids)), 0)
        return load

    upcoming = loader(batches[0]) if batches else None
    try:
        for b, ids in enumerate(tqdm(batches, desc="videos", unit="batch", disable=not progress)):
            load_step = upcoming
            upcoming = loader(batches[b + 1]) if b + 1 < len(batches) else None
            result = early_exit(
                model,
                load_step,
                len(ids),
                device=device,
                max_steps=steps,
                exits=exits,
                features=features,
                guard=guard,
            )
            reports.check_finite_scores(result.logits, [dataset.records[i].key for i in ids])
            targets = torch.stack([dataset.label(i) for i in ids])
            hit1.update((result.probs, targets))
            mean_ap.update((result.probs, targets))
            macs = video_macs(result.exit_step, costs, steps, exits=exits)  # the capped run's gates
            for j, i in enumerate(ids):
                rows.append(
                    {
                        "video": dataset.records[i].key,
                        "frames_used": int(result.frames_used[j]),
                        "exit_step": int(result.exit_step[j]),
                        "gmacs": float(macs["total"][j]) / 1e9,
                        "gmacs_backbone": float(macs["backbone"][j]) / 1e9,
                        "labels": list(dataset.records[i].labels),
                        "probs": [round(float(p), 6) for p in result.probs[j]],
                    }
                )
                if guard is not None:
                    rows[-1]["rechecked"] = bool(result.rechecked[j])
    finally:
        for executor in (ahead, pool):
            if executor is not None:
                executor.shutdown(cancel_futures=True)
    finished = time.perf_counter()
    frames = np.array([r["frames_used"] for r in rows])
    metrics = {
        "num_videos": len(rows),
        "hit1": hit1.compute(),
        "map": mean_ap.compute(),
        "mean_frames": float(frames.mean()),
        "mean_gmacs": float(np.mean([r["gmacs"] for r in rows])),
        "mean_gmacs_backbone": float(np.mean([r["gmacs_backbone"] for r in rows])),
        "exit_histogram": {str(k): float((frames == k).mean()) for k in range(1, steps + 1)},
        "skipped_videos": {"count": len(dataset.skipped), "keys": list(dataset.skipped)},
        "unit": "GMACs (multiply-accumulates) per video",
        "unit_costs_macs": dict(costs.macs),
        # setup: measuring MACs, building the inference copies, calibrating; videos: the loop
        "seconds": {"setup": round(prepared - started, 3), "videos": round(finished - prepared, 3)},
    }
    if guard is not None:
        metrics["exit_guard"] = {
            "margins_logit": [round(m, 6) for m in guard.margins],
            "factor": exit_guard,
            "calibration_videos": len(calibration),
            "rechecked_share": float(np.mean([r["rechecked"] for r in rows])) if rows else 0.0,
        }
    return Evaluation(metrics=metrics, rows=rows)
