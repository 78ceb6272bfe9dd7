"""Frame sampling: pure functions from a frame count to frame indices (0-based).

Training randomness comes only from the ``rng`` keyword argument, so a sampler never touches
global state; every sampler is called as ``sampler(num_frames, rng=rng)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "apply_order",
    "dense_clip_indices",
    "segment_indices",
    "uniform_indices",
]


def _check(num_frames: int, n: int) -> None:
    if num_frames < 1:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    if n < 1:
        raise ValueError(f"number of frames to sample must be >= 1, got {n}")


def uniform_indices(num_frames: int, n: int, *, rng: np.random.Generator | None = None) -> list[int]:
    """FrameExit's rule: ``floor(clip(linspace(0, L, n), 0, L - 1))`` (deterministic: ``rng`` is
    accepted, like every sampler's, and unused).

    The end point is L (not L - 1) before clipping, so the last sample is the last frame and short
    videos repeat frames: L=12, n=10 -> [0, 1, 2, 4, 5, 6, 8, 9, 10, 11]; L=5 -> [0, 0, 1, 1, ...].
    """
    _check(num_frames, n)
    return np.clip(np.linspace(0, num_frames, n), 0, num_frames - 1).astype(np.int64).tolist()


def apply_order(indices: Sequence[int], order: Sequence[int] | None) -> list[int]:
    """Reorder sampled indices into processing order (``order`` holds positions into ``indices``)."""
    if order is None:
        return list(indices)
    if sorted(order) != list(range(len(indices))):
        raise ValueError(f"order {list(order)} must be a permutation of 0..{len(indices) - 1}")
    return [indices[p] for p in order]


def segment_indices(
    num_frames: int, n: int, *, train: bool, rng: np.random.Generator | None = None
) -> list[int]:
    """TSN segment sampling: split the video into ``n`` equal segments and take one frame from each
    - a random offset in training, the segment centre in testing. Videos shorter than ``n`` repeat
    frames (training: sorted random draws)."""
    _check(num_frames, n)
    if train:
        if rng is None:
            raise ValueError("training-mode segment sampling needs an rng (numpy Generator)")
        span = num_frames // n
        if span > 0:
            return (np.arange(n) * span + rng.integers(0, span, size=n)).tolist()
        return np.sort(rng.integers(0, num_frames, size=n)).tolist()
    tick = num_frames / n
    return [min(int(tick / 2 + tick * k), num_frames - 1) for k in range(n)]


def dense_clip_indices(
    num_frames: int,
    *,
    clip_len: int,
    frame_interval: int = 1,
    num_clips: int = 1,
    train: bool,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Dense clips (MMAction's ``SampleFrames``): ``num_clips`` clips of ``clip_len`` frames taken
    every ``frame_interval`` frames. Training: random start per clip within its share of the video;
    testing: clips evenly spaced. Indices past the end wrap to the last frame. Returns
    ``num_clips * clip_len`` indices, clip after clip."""
    _check(num_frames, clip_len)
    if frame_interval < 1 or num_clips < 1:
        raise ValueError("frame_interval and num_clips must be >= 1")
    span = clip_len * frame_interval
    room = max(num_frames - span + 1, 1)
    if train:
        if rng is None:
            raise ValueError("training-mode dense sampling needs an rng (numpy Generator)")
        bounds = np.linspace(0, room, num_clips + 1)
        starts = [
            int(lo) + int(rng.integers(0, max(int(hi) - int(lo), 1)))
            for lo, hi in zip(bounds[:-1], bounds[1:])
        ]
    else:
        starts = (
            [int(room * (2 * k + 1) / (2 * num_clips)) for k in range(num_clips)]
            if room > 1
            else [0] * num_clips
        )
    out: list[int] = []
    for start in starts:
        out.extend(min(start + j * frame_interval, num_frames - 1) for j in range(clip_len))
    return out
