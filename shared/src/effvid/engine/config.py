"""The engine sections that command schemas embed (``--engine.device cpu``, ``--engine.amp bf16``).

Every command that runs a model embeds ``engine``: inference commands a :class:`RuntimeConfig`
(device, precision, progress), training commands the :class:`EngineConfig` that extends it.
Batch size and loader workers are data settings (``data.batch_size``, ``data.num_workers``):
each setting has one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from effvid.config import check_choice, option

__all__ = ["EngineConfig", "RuntimeConfig"]


@dataclass
class RuntimeConfig:
    device: str = option("auto", "auto (CUDA when present, else CPU) | cpu | cuda | cuda:N")
    amp: str = option("none", "mixed precision: none | bf16 | fp16 (fp16 needs CUDA)")
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        check_choice("engine.amp", self.amp, ("none", "bf16", "fp16"))
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(f"engine.device must be auto, cpu, cuda or cuda:N; got {self.device!r}")


@dataclass
class EngineConfig(RuntimeConfig):
    epochs: int = option(10, "training epochs")
    seed: int = option(
        0, "random seed: initialisation, data order, per-sample frame sampling and augmentation"
    )
    deterministic: bool = option(True, "ask torch for deterministic kernels (seed_everything)")
    log_every: int = option(10, "iterations between TensorBoard scalars")
    checkpoint_every: int = option(100, "iterations between checkpoints (also at every epoch end)")
    keep_checkpoints: int = option(2, "how many recent checkpoints to keep")
    grad_clip: float = option(0.0, "clip the gradient norm to this value (0: off)")
    eval_every: int = option(
        0, "evaluate on the validation data every N epochs and keep the best model (0: off)"
    )
    backend: str | None = option(None, "distributed backend: none | gloo | nccl (torchrun sets the rest)")
    nproc_per_node: int | None = option(None, "processes to spawn on this machine (with a backend)")
    sync_bn: bool = option(False, "data parallel: synchronise BatchNorm statistics over processes")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("engine.backend", self.backend, (None, "gloo", "nccl"))
        for name in ("epochs", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"engine.{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0 or self.grad_clip < 0:
            raise ValueError("engine.eval_every and engine.grad_clip must be >= 0")
