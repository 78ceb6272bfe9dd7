"""Frames on demand for step-by-step inference: decode a step's frame only for the videos still
running it (the early-exit methods never decode the frames of videos that have stopped)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from effvid.data.datasets import VideoClassificationDataset

__all__ = ["StepLoader", "step_loader"]

#: ``load_step(active, step)`` -> frames (len(active), C, H, W) of step ``step`` of the videos at
#: positions ``active`` of the batch
StepLoader = Callable[[Sequence[int], int], torch.Tensor]


def step_loader(
    dataset: VideoClassificationDataset,
    ids: Sequence[int],
    *,
    stream: bool = True,
    pool: ThreadPoolExecutor | None = None,
) -> StepLoader:
    """``load_step`` over the dataset videos ``ids`` (a batch).

    ``stream``: each call decodes frame ``step`` of the active videos only (in ``pool``'s threads
    when given), from one draw of each video's frame indices; otherwise the whole clips are
    loaded now and indexed.
    """
    if not stream:
        clips = torch.stack([dataset[i]["video"] for i in ids])
        return lambda active, step: clips[list(active), step]
    orders = [dataset.frame_indices(i) for i in ids]

    def one(a: int, step: int) -> torch.Tensor:
        return dataset.load_frames(ids[a], [step], indices=orders[a])[0]

    def load_step(active: Sequence[int], step: int) -> torch.Tensor:
        if pool is not None:
            return torch.stack(list(pool.map(one, active, [step] * len(active))))
        return torch.stack([one(a, step) for a in active])

    return load_step
