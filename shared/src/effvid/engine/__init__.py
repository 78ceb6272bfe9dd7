"""ignite building blocks shared by every method package.

A package supplies its method as a training module (``forward(batch) -> (loss, logs)``) and an
``eval_step(batch) -> output``, and gets Engines with progress bars, TensorBoard logging, AMP,
atomic checkpoints with automatic resume, validation with a best checkpoint, metrics JSON files
and data-parallel runs on DistributedDataParallel (``ignite.distributed``: torchrun or spawn;
gloo on CPU, NCCL on GPU). The handlers attach to any loop (several optimisers, PPO epochs).
"""

from effvid.engine.batch_order import ResumableSampler, RngState
from effvid.engine.config import EngineConfig, RuntimeConfig
from effvid.engine.handlers import (
    NonFiniteError,
    attach_checkpointing,
    attach_lr_scheduler,
    attach_nonfinite_stop,
    attach_progress,
    attach_tensorboard,
    attach_validation,
    find_checkpoints,
    find_latest_checkpoint,
    read_training_checkpoint,
)
from effvid.engine.runtime import autocast, resolve_device, run_distributed, seed_everything, to_device
from effvid.engine.training import (
    evaluate,
    fit,
    make_dataloader,
    make_train_step,
    prepare_module,
    run_trainer,
    setup_evaluator,
    setup_trainer,
)

__all__ = [
    "EngineConfig",
    "NonFiniteError",
    "ResumableSampler",
    "RngState",
    "RuntimeConfig",
    "attach_checkpointing",
    "attach_lr_scheduler",
    "attach_nonfinite_stop",
    "attach_progress",
    "attach_tensorboard",
    "attach_validation",
    "autocast",
    "evaluate",
    "find_checkpoints",
    "find_latest_checkpoint",
    "fit",
    "make_dataloader",
    "make_train_step",
    "prepare_module",
    "read_training_checkpoint",
    "resolve_device",
    "run_distributed",
    "run_trainer",
    "seed_everything",
    "setup_evaluator",
    "setup_trainer",
    "to_device",
]
