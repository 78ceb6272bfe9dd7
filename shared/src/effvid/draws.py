"""Reproducible per-sample randomness: every random draw of a training sample (frame sampling,
augmentation) comes from a seed derived from (run seed, epoch, sample index).

The training sampler yields :class:`Draw` items instead of bare indices; a dataset that receives
one makes all its draws inside :func:`seeded`. The draws of a sample then depend neither on the
DataLoader's worker count nor on what ran before, so a run killed mid-epoch and resumed sees
exactly the samples an uninterrupted run sees. Evaluation samplers yield plain indices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["Draw", "derive_seed", "seeded", "split_item"]


class Draw(NamedTuple):
    """A sample index and the seed of its random draws."""

    index: int
    seed: int


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. run seed, epoch, index), well mixed by NumPy's SeedSequence."""
    words = np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def split_item(item: int | Draw) -> tuple[int, int | None]:
    """(index, seed or None) of what a sampler handed to ``__getitem__``."""
    if isinstance(item, tuple):
        return int(item[0]), int(item[1])
    return int(item), None


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[np.random.Generator | None]:
    """Within the block, torch's global CPU generator starts from ``seed`` (and is restored
    after); yields a NumPy Generator from the same seed. ``None``: no change, yields None.

    Transforms draw from torch's generator (torchvision v2 does; ours too); Python's ``random``
    is left alone. Only the CPU generator is seeded: ``torch.manual_seed`` would also seed every
    accelerator, ~20x the cost of the rest, on every sample.
    """
    if seed is None:
        yield None
        return
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield np.random.default_rng(seed)
