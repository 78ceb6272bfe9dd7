"""Devices, AMP, seeding, batches and distributed launch."""

from __future__ import annotations

import contextlib
import gc
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch

__all__ = ["autocast", "resolve_device", "run_distributed", "seed_everything", "to_device"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> this process's device (its CUDA device under DDP, CUDA if present, else CPU)."""
    if name == "auto":
        return idist.device()
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' requested but CUDA is not available on this machine")
    return device


@contextlib.contextmanager
def autocast(device: torch.device, amp: str) -> Iterator[None]:
    """Mixed precision for the forward pass: ``none``, ``bf16`` (CUDA or CPU) or ``fp16`` (CUDA)."""
    if amp == "none":
        yield
        return
    if amp == "fp16" and device.type != "cuda":
        raise RuntimeError("fp16 AMP needs a CUDA device; use amp=bf16 on CPU or amp=none")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (all devices); optionally ask for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) dict/list/tuple batch to ``device``; other leaves unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def run_distributed(
    fn: Callable[..., Any], *args: Any, backend: str | None = None, nproc_per_node: int | None = None
) -> None:
    """Run ``fn(local_rank, *args)`` under ``idist.Parallel``.

    * no backend: one process;
    * backend + ``nproc_per_node``: spawns that many processes (gloo on CPU, nccl on GPU);
    * backend under ``torchrun``: joins the processes torchrun started (leave nproc_per_node None).
    """
    with idist.Parallel(backend=backend, nproc_per_node=nproc_per_node) as parallel:
        parallel.run(_run_then_collect, fn, *args)


def _run_then_collect(local_rank: int, fn: Callable[..., Any], *args: Any) -> None:
    """``fn(local_rank, *args)``, then a garbage collection while the process group still exists:
    DDP's reducer and the gloo work it holds are freed before ignite destroys the group, not by
    gloo's threads during interpreter shutdown (which can abort the process after a finished run:
    seen once under torchrun, "terminate called without an active exception")."""
    try:
        fn(local_rank, *args)
    finally:
        gc.collect()
