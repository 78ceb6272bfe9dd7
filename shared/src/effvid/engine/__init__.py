"""ignite building blocks shared by every method package.

A package supplies its method through callables - ``loss_fn(batch) -> (loss, logs)`` for
training, ``eval_step(batch) -> output`` for evaluation - and gets Engines with progress bars,
TensorBoard logging, AMP, atomic checkpoints with automatic resume, metrics JSON files and
distributed runs (``ignite.distributed``: torchrun or spawn; gloo on CPU, NCCL on GPU).
"""

from effvid.engine.config import EngineConfig
from effvid.engine.runtime import autocast, resolve_device, run_distributed, seed_everything, to_device
from effvid.engine.training import (
    evaluate,
    find_latest_checkpoint,
    load_training_checkpoint,
    make_dataloader,
    setup_evaluator,
    setup_trainer,
)

__all__ = [
    "EngineConfig",
    "autocast",
    "evaluate",
    "find_latest_checkpoint",
    "load_training_checkpoint",
    "make_dataloader",
    "resolve_device",
    "run_distributed",
    "seed_everything",
    "setup_evaluator",
    "setup_trainer",
    "to_device",
]
