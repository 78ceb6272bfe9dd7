"""Trainer and evaluator factories on ignite, data parallel through torch's DistributedDataParallel.

A method supplies a *training module*: an ``nn.Module`` whose ``forward(batch)`` returns
``(loss, logs)``. Computing the loss inside ``forward`` is what lets DistributedDataParallel's
hooks average gradients (``idist.auto_model`` wraps the module when several processes run).
:func:`setup_trainer` builds the usual loop - one optimiser step per batch - from the
attachable handlers of :mod:`effvid.engine.handlers`; a loop of another shape (several
optimisers, PPO epochs) builds its own step and attaches the same handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from torch import nn

from effvid.engine.batch_order import ResumableSampler
from effvid.engine.config import EngineConfig, RuntimeConfig
from effvid.engine.handlers import (
    NonFiniteError,
    attach_checkpointing,
    attach_lr_scheduler,
    attach_nonfinite_stop,
    attach_progress,
    attach_tensorboard,
)
from effvid.engine.runtime import autocast, resolve_device, to_device
from effvid.io import atomic_write_json

__all__ = [
    "evaluate",
    "fit",
    "make_dataloader",
    "make_train_step",
    "prepare_module",
    "run_trainer",
    "setup_evaluator",
    "setup_trainer",
]


def make_dataloader(
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
    **kwargs: Any,
) -> torch.utils.data.DataLoader:
    """A DataLoader over this process's shard, ordered by a :class:`ResumableSampler`.

    ``batch_size`` is the total over all processes (each takes its share). Training shuffles from
    ``seed`` + epoch, pads shards to equal length and hands the dataset
    :class:`~effvid.draws.Draw` items (index + per-sample seed); evaluation keeps the order and
    never repeats a sample, so metrics under DDP equal those of one process.
    """
    size = len(dataset)  # type: ignore[arg-type]
    if size == 0:
        raise ValueError("cannot build a DataLoader over an empty dataset")
    world, rank = idist.get_world_size(), idist.get_rank()
    if batch_size < world:
        raise ValueError(f"data.batch_size {batch_size} is smaller than the {world} processes")
    sampler = ResumableSampler(
        size, shuffle=train, seed=seed, num_replicas=world, rank=rank, pad=train, draws=train
    )
    kwargs.setdefault("pin_memory", torch.cuda.is_available())
    kwargs.setdefault("persistent_workers", num_workers > 0)
    # the loader draws its workers' base seed when an epoch's iterator is made: from its own
    # generator, not the global RNG, whose checkpointed state (dropout) a resume must replay exactly
    kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size // world, sampler=sampler, num_workers=num_workers, **kwargs
    )


def prepare_module(module: nn.Module, cfg: EngineConfig) -> tuple[nn.Module, torch.device]:
    """Move the training module to this process's device; with several processes wrap it in
    DistributedDataParallel (``idist.auto_model``, SyncBatchNorm with ``cfg.sync_bn``), which
    broadcasts rank 0's weights and averages gradients during ``backward``."""
    if idist.get_world_size() > 1:
        return idist.auto_model(module, sync_bn=cfg.sync_bn), idist.device()
    device = resolve_device(cfg.device)
    return module.to(device), device


def make_train_step(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: EngineConfig,
    *,
    device: torch.device,
    scaler: torch.amp.GradScaler,
    trainable: Callable[[], None] | None = None,
) -> Callable[[Engine, Any], dict[str, float]]:
    """One optimiser step per batch: ``module.train()`` (or ``trainable()``, for methods that
    freeze parts), zero_grad, ``loss, logs = module(batch)`` under autocast, a non-finite loss
    stops training before it touches the weights, backward (scaled for fp16), optional gradient
    clipping, step. Output: ``{"loss": float, **logs}``."""
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def step(engine: Engine, batch: Any) -> dict[str, float]:
        if trainable is None:
            module.train()
        else:
            trainable()
        optimizer.zero_grad(set_to_none=True)
        batch = to_device(batch, device)
        with autocast(device, cfg.amp):
            loss, logs = module(batch)
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteError(
                f"training loss is {float(loss.detach())} at iteration {engine.state.iteration} "
                f"(epoch {engine.state.epoch}); stopped before updating the weights"
            )
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        return {"loss": float(loss.detach()), **{k: float(v) for k, v in logs.items()}}

    return step


def setup_trainer(
    *,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: EngineConfig,
    run_dir: str | Path,
    lr_scheduler: Any = None,
    to_save_extra: Mapping[str, Any] | None = None,
    trainable: Callable[[], None] | None = None,
) -> Engine:
    """The standard loop: :func:`make_train_step` + scheduler, non-finite stop, checkpoints with
    resume, progress bar and TensorBoard (see :mod:`effvid.engine.handlers`).

    ``module`` is the training module (``forward(batch) -> (loss, logs)``); its unwrapped state
    is checkpointed as ``"model"``. A run directory holding checkpoints resumes: the same batches,
    the same per-sample random draws and the RNG states, so a killed run ends with the weights of
    an uninterrupted one. Under several processes checkpoints come from rank 0.
    """
    wrapped, device = prepare_module(module, cfg)
    optimizer = idist.auto_optim(optimizer)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    trainer = Engine(
        make_train_step(wrapped, optimizer, cfg, device=device, scaler=scaler, trainable=trainable)
    )
    to_save: dict[str, Any] = {"model": module, "optimizer": optimizer}
    if cfg.amp == "fp16":
        to_save["scaler"] = scaler
    if lr_scheduler is not None:
        to_save["lr_scheduler"] = lr_scheduler
        attach_lr_scheduler(trainer, lr_scheduler)
    to_save.update(to_save_extra or {})
    attach_nonfinite_stop(trainer)
    attach_checkpointing(
        trainer, to_save, run_dir, every=cfg.checkpoint_every, keep=cfg.keep_checkpoints, device=device
    )
    if cfg.progress:
        attach_progress(trainer)
    attach_tensorboard(trainer, run_dir, every=cfg.log_every, optimizers={"optimizer": optimizer})
    return trainer


def run_trainer(trainer: Engine, loader: Any, *, epochs: int) -> bool:
    """Run to ``epochs``; a run already finished (resumed at its last epoch) is not trained again.

    Returns True when training ran, False when the run was already complete. Asking for more
    epochs than a finished run had continues it.
    """
    if trainer.state.epoch >= epochs and trainer.state.iteration > 0:
        trainer.logger.info("run already complete (%d epochs); nothing to train", trainer.state.epoch)
        return False
    trainer.run(loader, max_epochs=epochs)
    return True


def fit(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: torch.utils.data.Dataset,
    cfg: EngineConfig,
    run_dir: str | Path,
    *,
    batch_size: int,
    num_workers: int = 0,
    cosine: bool = True,
    lr_lambda: Callable[[int, int], float] | None = None,
    trainable: Callable[[], None] | None = None,
    attach: Callable[[Engine], Any] | None = None,
    **loader_kwargs: Any,
) -> bool:
    """Train ``module`` for ``cfg.epochs`` with the standard loop (:func:`setup_trainer`) on a
    training loader over ``dataset`` (:func:`make_dataloader`; ``loader_kwargs`` go to it, e.g. a
    ``worker_init_fn``), the learning rate cosine-annealed per iteration unless ``cosine`` is False.

    ``lr_lambda(iteration, total_iterations)`` (a factor of the initial rates) replaces the cosine
    when given. ``attach(trainer)`` is called before the run, to add handlers (e.g. :func:`attach_validation`).
    Returns False when ``run_dir`` already held the finished run (nothing trained).
    """
    loader = make_dataloader(
        dataset,
        batch_size=batch_size,
        train=True,
        seed=cfg.seed,
        num_workers=num_workers,
        drop_last=len(dataset) > batch_size,  # type: ignore[arg-type]
        **loader_kwargs,
    )
    total = cfg.epochs * len(loader)
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    if lr_lambda is not None:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_lambda(it, total))
    elif cosine:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    trainer = setup_trainer(
        module=module,
        optimizer=optimizer,
        cfg=cfg,
        run_dir=run_dir,
        lr_scheduler=scheduler,
        trainable=trainable,
    )
    if attach is not None:
        attach(trainer)
    return run_trainer(trainer, loader, epochs=cfg.epochs)


def setup_evaluator(
    *,
    model: nn.Module,
    eval_step: Callable[[Any], Any],
    metrics: Mapping[str, Metric],
    cfg: RuntimeConfig,
) -> Engine:
    """An Engine running ``eval_step(batch)`` under ``model.eval()``, no_grad and autocast,
    with ``metrics`` attached by name (each metric's output_transform picks from the output)."""
    device = resolve_device(cfg.device)

    def step(engine: Engine, batch: Any) -> Any:
        model.eval()
        with torch.no_grad(), autocast(device, cfg.amp):
            return eval_step(batch)

    evaluator = Engine(step)
    for name, metric in metrics.items():
        metric.attach(evaluator, name)
    if cfg.progress:
        from ignite.handlers.tqdm_logger import ProgressBar

        ProgressBar(persist=False, desc="eval").attach(evaluator)
    return evaluator


def evaluate(evaluator: Engine, loader: Any, run_dir: str | Path, *, name: str = "eval") -> dict[str, Any]:
    """Run ``evaluator`` over ``loader``; rank 0 writes ``run_dir/metrics_<name>.json``; returns the metrics."""
    if hasattr(loader, "__len__") and len(loader) == 0:
        raise ValueError(f"evaluation '{name}' has no data")
    evaluator.run(loader)
    results = {
        k: (float(v) if isinstance(v, (int, float, torch.Tensor)) else v)
        for k, v in evaluator.state.metrics.items()
    }
    if idist.get_rank() == 0:
        atomic_write_json(Path(run_dir) / f"metrics_{name}.json", results)
    return results
