"""Trainer and evaluator factories, checkpoints with automatic resume, metrics JSON."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from ignite.handlers.tqdm_logger import ProgressBar
from ignite.metrics import Metric
from torch import nn

from effvid.engine.config import EngineConfig
from effvid.engine.runtime import autocast, resolve_device
from effvid.engine.sampling import ResumableSampler, RngState
from effvid.io import atomic_write_json

__all__ = [
    "evaluate",
    "find_latest_checkpoint",
    "load_training_checkpoint",
    "make_dataloader",
    "setup_evaluator",
    "setup_trainer",
]

LossFn = Callable[[Any], "tuple[torch.Tensor, Mapping[str, float]]"]
_CKPT = re.compile(r"^checkpoint_(\d+)\.pt$")


def find_latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The ``checkpoints/checkpoint_<iteration>.pt`` with the highest iteration, or None."""
    folder = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint_*.pt") if (m := _CKPT.match(p.name))]
    return max(found)[1] if found else None


def load_training_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``, allowing the numpy arrays that the
    checkpointed RNG states hold (and nothing else beyond tensors and containers)."""
    import numpy as np

    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed it
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location=device, weights_only=True)


def make_dataloader(
    dataset: torch.utils.data.Dataset, cfg: EngineConfig, *, train: bool, **kwargs: Any
) -> torch.utils.data.DataLoader:
    """A DataLoader over this process's shard, ordered by a :class:`ResumableSampler`.

    ``cfg.batch_size`` is the total over all processes (each takes its share). Training shuffles
    from ``cfg.seed`` + epoch and pads shards to equal length; evaluation keeps the order and never
    repeats a sample, so metrics under DDP equal those of one process.
    """
    size = len(dataset)  # type: ignore[arg-type]
    if size == 0:
        raise ValueError("cannot build a DataLoader over an empty dataset")
    world, rank = idist.get_world_size(), idist.get_rank()
    if cfg.batch_size < world:
        raise ValueError(f"engine.batch_size {cfg.batch_size} is smaller than the {world} processes")
    sampler = ResumableSampler(size, shuffle=train, seed=cfg.seed, num_replicas=world, rank=rank, pad=train)
    kwargs.setdefault("num_workers", cfg.num_workers)
    kwargs.setdefault("pin_memory", torch.cuda.is_available())
    return torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size // world, sampler=sampler, **kwargs)


def setup_trainer(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    cfg: EngineConfig,
    run_dir: str | Path,
    lr_scheduler: Any = None,
    to_save_extra: Mapping[str, Any] | None = None,
    trainable: Callable[[], None] | None = None,
) -> Engine:
    """An Engine whose step runs ``loss, logs = loss_fn(batch)`` and one optimiser step.

    The step: ``model.train()`` (or ``trainable()``, for methods that freeze parts), zero_grad,
    forward under :func:`autocast`, backward (through a GradScaler for fp16), optional gradient
    clipping, optimiser step, then the scheduler per iteration. Output: ``{"loss": float, **logs}``.

    Data parallel without a wrapper: under ``ignite.distributed`` with several processes, rank 0's
    weights are broadcast at setup and gradients are averaged over processes after every backward,
    so ``loss_fn`` may call any method of the model (not only ``forward``). With
    :func:`make_dataloader` shards of equal size this equals one process on the total batch.
    BatchNorm statistics stay per process (as with DDP's default); checkpoints come from rank 0.

    Attached: a progress bar, TensorBoard scalars in ``run_dir/tb`` (rank 0), and checkpoints of
    model, optimiser, scheduler, scaler, trainer and ``to_save_extra`` in ``run_dir/checkpoints``
    every ``cfg.checkpoint_every`` iterations and at each epoch end, written atomically. If the
    run directory already holds checkpoints, the latest is loaded: calling ``trainer.run`` again
    continues where the interrupted run stopped. With a :func:`make_dataloader` loader it sees the
    same batches and, the RNG states being checkpointed too, ends with the same weights as an
    uninterrupted run (random augmentation inside DataLoader workers restarts from new worker seeds
    after a mid-epoch resume).
    """
    device = resolve_device(cfg.device)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    world = idist.get_world_size()
    if world > 1:  # every process starts from rank 0's weights
        with torch.no_grad():
            for tensor in model.state_dict().values():
                tensor.copy_(idist.broadcast(tensor, src=0))

    def step(engine: Engine, batch: Any) -> dict[str, float]:
        if trainable is None:
            model.train()
        else:
            trainable()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, cfg.amp):
            loss, logs = loss_fn(batch)
        scaler.scale(loss).backward()
        if world > 1:  # data parallel: average the gradients of all processes
            for p in params:
                if p.grad is not None:
                    p.grad.copy_(idist.all_reduce(p.grad) / world)
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if lr_scheduler is not None:
            lr_scheduler.step()
        return {"loss": float(loss.detach()), **{k: float(v) for k, v in logs.items()}}

    trainer = Engine(step)
    run_dir = Path(run_dir)

    to_save: dict[str, Any] = {"model": model, "optimizer": optimizer, "trainer": trainer, "rng": RngState()}
    if cfg.amp == "fp16":
        to_save["scaler"] = scaler
    if lr_scheduler is not None:
        to_save["lr_scheduler"] = lr_scheduler
    to_save.update(to_save_extra or {})

    saver = Checkpoint(
        to_save,
        DiskSaver(run_dir / "checkpoints", require_empty=False, atomic=True, create_dir=True),
        filename_prefix="",
        n_saved=cfg.keep_checkpoints,
        global_step_transform=lambda engine, _: engine.state.iteration,
    )

    def due(engine: Engine, event: int) -> bool:
        return event % cfg.checkpoint_every == 0 or event % (engine.state.epoch_length or 1) == 0

    trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=due), saver)

    latest = find_latest_checkpoint(run_dir)
    if latest is not None:
        state = load_training_checkpoint(latest, device)
        Checkpoint.load_objects(to_load=to_save, checkpoint=state)
        trainer.logger.info("resumed from %s (iteration %d)", latest, trainer.state.iteration)
    resume_within_epoch = [trainer.state.iteration % trainer.state.epoch_length if latest is not None else 0]

    @trainer.on(Events.EPOCH_STARTED)
    def _order_epoch(engine: Engine) -> None:
        # the epoch's order depends only on (seed, epoch); after a resume, skip what was done
        loader = engine.state.dataloader
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, ResumableSampler):
            sampler.set_epoch(engine.state.epoch)
            if resume_within_epoch[0]:
                sampler.skip(resume_within_epoch[0] * loader.batch_size)
        resume_within_epoch[0] = 0

    if cfg.progress:
        ProgressBar(persist=True).attach(trainer, output_transform=lambda out: {"loss": out["loss"]})
    if idist.get_rank() == 0:
        from ignite.handlers.tensorboard_logger import TensorboardLogger

        tb = TensorboardLogger(log_dir=str(run_dir / "tb"))
        tb.attach_output_handler(
            trainer,
            event_name=Events.ITERATION_COMPLETED(every=cfg.log_every),
            tag="train",
            output_transform=lambda out: out,
        )
        tb.attach_opt_params_handler(
            trainer, event_name=Events.ITERATION_STARTED(every=cfg.log_every), optimizer=optimizer
        )
        trainer.add_event_handler(Events.COMPLETED, lambda _: tb.close())

        # ignite stops re-raising once EXCEPTION_RAISED has a handler: close, then re-raise
        @trainer.on(Events.EXCEPTION_RAISED)
        def _close_and_reraise(_: Engine, exc: BaseException) -> None:
            tb.close()
            raise exc

    return trainer


def setup_evaluator(
    *,
    model: nn.Module,
    eval_step: Callable[[Any], Any],
    metrics: Mapping[str, Metric],
    cfg: EngineConfig,
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
