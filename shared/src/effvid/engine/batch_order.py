"""Data order that survives a restart: a pure function of (seed, epoch), resumable mid-epoch."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from effvid.draws import Draw, derive_seed

__all__ = ["ResumableSampler", "RngState"]


class ResumableSampler(torch.utils.data.Sampler[int]):
    """Indices of one process's shard of a dataset, shuffled per epoch from ``seed + epoch``.

    Unlike a sampler drawing from the global RNG, the order of epoch ``e`` does not depend on what
    ran before, so a resumed run sees the same batches; :meth:`skip` drops the samples of an epoch
    that were already trained on. Sharding follows ``DistributedSampler`` (rank r takes every
    ``num_replicas``-th index); with ``pad=True`` (training) shards are padded to equal length by
    repeating indices, with ``pad=False`` (evaluation) no sample is seen twice.

    With ``draws=True`` (training) it yields :class:`~effvid.draws.Draw` items: the index and the
    seed of that sample's random draws, derived from (seed, epoch, index).
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        pad: bool = True,
        draws: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.num_replicas, self.rank, self.pad, self.draws = num_replicas, rank, pad, draws
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, num_samples: int) -> None:
        """Leave out the first ``num_samples`` of the next pass (resuming inside an epoch)."""
        self._skip = num_samples

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.size / self.num_replicas)
        return len(range(self.rank, self.size, self.num_replicas))

    def __iter__(self) -> Iterator[int | Draw]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.pad:
            total = math.ceil(self.size / self.num_replicas) * self.num_replicas
            order += order[: total - self.size]
        shard = order[self.rank :: self.num_replicas]
        skip, self._skip = self._skip, 0
        if self.draws:
            return iter([Draw(i, derive_seed(self.seed, self.epoch, i)) for i in shard[skip:]])
        return iter(shard[skip:])


class RngState:
    """Checkpointable global RNG states (Python, NumPy, torch CPU and CUDA)."""

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
