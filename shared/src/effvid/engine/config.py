"""The engine section that command schemas embed (``--train.engine.amp bf16`` ...)."""

from __future__ import annotations

from dataclasses import dataclass

from effvid.config import option

__all__ = ["EngineConfig"]


@dataclass
class EngineConfig:
    device: str = option("auto", "auto (CUDA when present, else CPU) | cpu | cuda | cuda:N")
    amp: str = option("none", "mixed precision: none | bf16 | fp16 (fp16 needs CUDA)")
    epochs: int = option(10, "training epochs")
    batch_size: int = option(16, "batch size (total over all processes)")
    num_workers: int = option(0, "DataLoader worker processes")
    seed: int = option(0, "random seed (data order, initialisation)")
    deterministic: bool = option(True, "ask torch for deterministic kernels (seed_everything)")
    log_every: int = option(10, "iterations between TensorBoard scalars")
    checkpoint_every: int = option(100, "iterations between checkpoints (also at every epoch end)")
    keep_checkpoints: int = option(2, "how many recent checkpoints to keep")
    grad_clip: float = option(0.0, "clip the gradient norm to this value (0: off)")
    progress: bool = option(True, "show progress bars")
    backend: str | None = option(None, "distributed backend: none | gloo | nccl (torchrun sets the rest)")
    nproc_per_node: int | None = option(None, "processes to spawn on this machine (with a backend)")

    def __post_init__(self) -> None:
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"engine.amp must be none, bf16 or fp16, got '{self.amp}'")
        if self.backend not in (None, "gloo", "nccl"):
            raise ValueError(f"engine.backend must be none, gloo or nccl, got '{self.backend}'")
        for name in ("epochs", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"engine.{name} must be >= 1, got {getattr(self, name)}")
