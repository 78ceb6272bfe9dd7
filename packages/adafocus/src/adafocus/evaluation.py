"""Evaluating AdaFocus over a dataset: batched step-by-step inference, metrics, per-video records."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from adafocus.cost import measure_unit_costs, video_macs
from adafocus.inference import early_exit, inference_copy
from adafocus.model import AdaFocus
from effvid import reports
from effvid.data import VideoClassificationDataset
from effvid.data.streaming import step_loader
from effvid.engine import autocast
from effvid.metrics import HitAt1, VideoMAP
from effvid.models.optimize import FastInferenceConfig

__all__ = ["Evaluation", "evaluate_dataset"]


class Evaluation(reports.Evaluation):
    def summary(self) -> str:
        m = self.metrics
        hist = "  ".join(f"{k}:{v:.1%}" for k, v in m["exit_histogram"].items() if v > 0)
        note = self.skipped_note()
        return (
            f"videos: {m['num_videos']}  top1: {m['top1']:.4f}  mAP: {m['map']:.4f}  "
            f"(patches: {m['policy']}, exit threshold: {m['exit_threshold']}, "
            f"skip similarity: {m['skip_similarity']})\n"
            f"steps per video: {m['mean_steps']:.2f} (focused {m['mean_focused']:.2f})  "
            f"GMACs per video: {m['mean_gmacs']:.4f}  "
            f"videos/s: {m['videos_per_s']:.1f}\n"
            f"exit histogram (steps used: share of videos): {hist}{note}"
        )


def _row(dataset: VideoClassificationDataset, i: int, j: int, result, macs, patch: int) -> dict[str, Any]:
    steps = int(result.exit_step[j]) + 1
    skipped = result.skipped[j, :steps].tolist()
    boxes = [
        None if skip else [int(y), int(x), int(y) + patch, int(x) + patch]
        for (y, x), skip in zip(result.top_left[j, :steps].tolist(), skipped)
    ]
    step_probs = torch.softmax(result.step_logits[j, :steps], 1)
    return {
        "video": dataset.records[i].key,
        "labels": list(dataset.records[i].labels),
        "exit_step": steps - 1,
        "steps_used": steps,
        "skipped": [t for t, skip in enumerate(skipped) if skip],  # steps only glanced
        "gmacs": float(macs["total"][j]) / 1e9,
        "patches": boxes,  # per step: [top, left, bottom, right) in the transformed frame's pixels (None: skipped)
        "actions": result.actions[j, :steps].tolist(),
        "step_probs": [[round(float(p), 6) for p in row] for row in step_probs],
        "probs": [round(float(p), 6) for p in result.probs[j]],
    }


@torch.no_grad()
def evaluate_dataset(
    model: AdaFocus,
    dataset: VideoClassificationDataset,
    *,
    batch_size: int,
    device: torch.device,
    policy: str = "argmax",
    threshold: float | None = None,
    skip_similarity: float | None = None,
    stream: bool = True,
    num_threads: int = 0,
    seed: int = 0,
    amp: str = "none",
    progress: bool = True,
    fast: FastInferenceConfig | None = None,
) -> Evaluation:
    """Step-by-step inference over ``dataset`` in batches of ``batch_size`` videos.

    Positions come from ``policy`` (``argmax``, ``sample`` or ``random``); a video stops once
    its top class probability reaches ``threshold`` (None: every video runs every step); a frame
    whose glance map is as similar as ``skip_similarity`` to the last focused one is only glanced
    (AdaFocus+, see :func:`~adafocus.inference.early_exit`; None: no skipping).
    ``stream``: a frame is decoded when a video reaches its step, never for steps it does not
    reach (``num_threads`` decoding in parallel); with neither exits nor skipping and argmax
    positions every frame is needed, so whole clips are loaded and the batched forward runs. ``videos_per_s`` is the measured throughput,
    decoding included. ``fast``: the glance and focus networks run as optimised copies
    (:func:`~adafocus.inference.inference_copy`; same outputs up to rounding); MACs are counted
    on the model as defined.
    """
    model = model.to(device).eval()
    frame_hw = tuple(dataset.load_frames(0, [0]).shape[-2:])
    costs = measure_unit_costs(model, frame_hw)
    runner = model if fast is None else inference_copy(model, fast, device=device)
    every_step = threshold is None and skip_similarity is None and policy == "argmax"
    num_steps = len(dataset.frame_indices(0))
    generator = torch.Generator().manual_seed(seed)
    hit1, mean_ap = HitAt1(), VideoMAP()
    hit1.reset()
    mean_ap.reset()
    rows: list[dict[str, Any]] = []
    pool = ThreadPoolExecutor(num_threads) if num_threads > 0 else None
    start_time = time.perf_counter()
    try:
        for start in tqdm(
            range(0, len(dataset), batch_size), desc="videos", unit="batch", disable=not progress
        ):
            ids = list(range(start, min(start + batch_size, len(dataset))))
            if every_step:  # every frame is needed: whole clips, and the batched forward runs
                load_step = torch.stack([dataset[i]["video"] for i in ids]).to(device)
            else:
                load_step = step_loader(dataset, ids, stream=stream, pool=pool)
            with autocast(device, amp):
                result = early_exit(
                    runner,
                    load_step,
                    len(ids),
                    num_steps=num_steps,
                    threshold=threshold,
                    skip_similarity=skip_similarity,
                    policy=policy,
                    generator=generator,
                )
            reports.check_finite_scores(result.logits, [dataset.records[i].key for i in ids])
            targets = torch.stack([dataset.label(i) for i in ids])
            hit1.update((result.probs, targets))
            mean_ap.update((result.probs, targets))
            macs = video_macs(
                result.steps_used, costs, policy=policy != "random", focused=result.focused_steps
            )
            rows.extend(_row(dataset, i, j, result, macs, model.patch_size) for j, i in enumerate(ids))
    finally:
        if pool:
            pool.shutdown()
    seconds = time.perf_counter() - start_time
    steps = np.array([r["steps_used"] for r in rows])
    metrics = {
        "num_videos": len(rows),
        "top1": hit1.compute(),
        "map": mean_ap.compute(),
        "policy": policy,
        "exit_threshold": threshold,
        "skip_similarity": skip_similarity,
        "mean_steps": float(steps.mean()),
        "mean_focused": float(np.mean([r["steps_used"] - len(r["skipped"]) for r in rows])),
        "mean_gmacs": float(np.mean([r["gmacs"] for r in rows])),
        "videos_per_s": len(rows) / seconds,
        "exit_histogram": {str(k): float((steps == k).mean()) for k in range(1, num_steps + 1)},
        "skipped_videos": {"count": len(dataset.skipped), "keys": list(dataset.skipped)},
        "unit": "GMACs (multiply-accumulates) per video",
        "unit_costs_macs": dict(costs.macs),
        "device": str(device),
    }
    return Evaluation(metrics=metrics, rows=rows)
