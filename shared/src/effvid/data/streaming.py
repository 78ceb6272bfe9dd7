"""Frames on demand for step-by-step inference: decode a step's frame only for the videos still
running it (the early-exit methods never decode the frames of videos that have stopped)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import torch

from effvid.data.datasets import VideoClassificationDataset

__all__ = ["PrefetchingStepLoader", "StepLoader", "step_loader"]

#: ``load_step(active, step)`` -> frames (len(active), C, H, W) of step ``step`` of the videos at
#: positions ``active`` of the batch
StepLoader = Callable[[Sequence[int], int], torch.Tensor]


def step_loader(
    dataset: VideoClassificationDataset,
    ids: Sequence[int],
    *,
    stream: bool = True,
    pool: ThreadPoolExecutor | None = None,
    prefetch: Executor | None = None,
    num_steps: int | None = None,
) -> StepLoader:
    """``load_step`` over the dataset videos ``ids`` (a batch).

    ``stream``: each call decodes frame ``step`` of the active videos only (in ``pool``'s threads
    when given), from one draw of each video's frame indices; otherwise the whole clips are
    loaded now and indexed. ``prefetch`` (streaming only): a :class:`PrefetchingStepLoader` that
    decodes the next step's frames in that executor while the caller computes (give it an executor
    of its own, not ``pool``), never past ``num_steps`` (default: every sampled frame).
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

    if prefetch is not None:
        steps = len(orders[0]) if orders else 0
        return PrefetchingStepLoader(load_step, prefetch, num_steps=min(steps, num_steps or steps))
    return load_step


class PrefetchingStepLoader:
    """A ``load_step`` that, when asked for step ``t``, also starts decoding step ``t + 1`` of the
    same videos in ``executor``, so that decoding overlaps the caller's computation.

    Videos only ever leave the active set, so the next call's videos are a subset of the prefetched
    ones: their rows are taken and the others' frames dropped (at most one step decoded in vain per
    exiting video). :meth:`prefetch` starts a step ahead of time (e.g. the first step of the next
    batch). A prefetched decode that failed is redone for the videos actually asked for, so an error
    is raised only for a frame some video needs. The frames are the ones ``load_step`` gives.
    """

    def __init__(self, load_step: StepLoader, executor: Executor, *, num_steps: int) -> None:
        self._load, self._executor, self.num_steps = load_step, executor, num_steps
        self._pending: dict[int, tuple[list[int], Future[torch.Tensor]]] = {}

    def prefetch(self, active: Sequence[int], step: int) -> None:
        """Start decoding ``step`` for the videos ``active`` (nothing past the last step)."""
        if step < self.num_steps and step not in self._pending:
            videos = list(active)
            self._pending[step] = (videos, self._executor.submit(self._load, videos, step))

    def __call__(self, active: Sequence[int], step: int) -> torch.Tensor:
        videos = list(active)
        frames = self._take(videos, step)
        if frames is None:
            frames = self._load(videos, step)
        self.prefetch(videos, step + 1)
        return frames

    def _take(self, videos: list[int], step: int) -> torch.Tensor | None:
        ahead = self._pending.pop(step, None)
        if ahead is None:
            return None
        decoded, future = ahead
        row = {v: j for j, v in enumerate(decoded)}
        if any(v not in row for v in videos):
            future.cancel()
            return None
        try:
            frames = future.result()
        except Exception:  # e.g. a corrupt frame of a video that has exited since: decode what is needed
            return None
        return frames if decoded == videos else frames[[row[v] for v in videos]]
