"""Attachable ignite handlers: any training loop - one optimiser step per batch, several
optimisers, several update epochs per batch (PPO) - gets the same checkpoints, resume, logs.

Attach in this order on a trainer: :func:`attach_lr_scheduler` (so a checkpoint holds the
scheduler state the next iteration needs), :func:`attach_nonfinite_stop`,
:func:`attach_checkpointing`, then progress, TensorBoard and validation.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from ignite.handlers.tqdm_logger import ProgressBar
from torch import nn

from effvid.engine.batch_order import ResumableSampler, RngState
from effvid.io import atomic_write_json
from effvid.model_files import ModelFileError, first_nonfinite, read_torch_file

__all__ = [
    "NonFiniteError",
    "attach_checkpointing",
    "attach_lr_scheduler",
    "attach_nonfinite_stop",
    "attach_progress",
    "attach_tensorboard",
    "attach_validation",
    "find_checkpoints",
    "find_latest_checkpoint",
    "read_training_checkpoint",
]

log = logging.getLogger(__name__)
_CKPT = re.compile(r"^checkpoint_(\d+)\.pt$")


class NonFiniteError(RuntimeError):
    """Training produced a NaN or an infinity (loss or weights); nothing non-finite was saved."""


def find_checkpoints(run_dir: str | Path) -> list[Path]:
    """``checkpoints/checkpoint_<iteration>.pt`` files, newest (highest iteration) first."""
    folder = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint_*.pt") if (m := _CKPT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def find_latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = find_checkpoints(run_dir)
    return found[0] if found else None


def read_training_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """An engine checkpoint (model, optimiser, trainer, RNG states, ...), weights only."""
    return read_torch_file(path, expected="an effvid training checkpoint", map_location=device)


def _modules(objects: Mapping[str, Any]) -> dict[str, nn.Module]:
    return {k: v for k, v in objects.items() if isinstance(v, nn.Module)}


def _check_finite_modules(objects: Mapping[str, Any], when: str) -> None:
    for name, module in _modules(objects).items():
        bad = first_nonfinite(module.state_dict())
        if bad is not None:
            raise NonFiniteError(f"{when}: {name} tensor '{bad}' is not finite (NaN or infinity)")


def attach_checkpointing(
    trainer: Engine,
    to_save: Mapping[str, Any],
    run_dir: str | Path,
    *,
    every: int,
    keep: int,
    device: torch.device | str = "cpu",
) -> Checkpoint:
    """Atomic checkpoints of ``to_save`` (plus the trainer and the global RNG states) every
    ``every`` iterations and at each epoch end, in ``run_dir/checkpoints``; resume from the latest.

    * Resume: the newest readable checkpoint is loaded now; a corrupt one (a truncated file) is
      reported by name and the previous one is used instead.
    * Data order: with a :class:`ResumableSampler`, each epoch's order depends only on (seed,
      epoch) and a resumed epoch skips the batches already trained on.
    * Non-finite weights are never written: saving raises :class:`NonFiniteError` instead, so the
      latest checkpoint on disk stays the last finite one.
    """
    objects = {**to_save, "trainer": trainer, "rng": RngState()}
    saver = Checkpoint(
        objects,
        DiskSaver(Path(run_dir) / "checkpoints", require_empty=False, atomic=True, create_dir=True),
        filename_prefix="",
        n_saved=keep,
        global_step_transform=lambda engine, _: engine.state.iteration,
    )

    def due(engine: Engine, event: int) -> bool:
        return event % every == 0 or event % (engine.state.epoch_length or 1) == 0

    @trainer.on(Events.ITERATION_COMPLETED(event_filter=due))
    def _save(engine: Engine) -> None:
        _check_finite_modules(to_save, f"iteration {engine.state.iteration}: not saving a checkpoint")
        saver(engine)

    for path in find_checkpoints(run_dir):
        try:
            state = read_training_checkpoint(path, device)
        except ModelFileError as exc:
            log.warning("cannot resume from %s (%s); trying the previous checkpoint", path, exc)
            print(f"warning: {exc}; falling back to the previous checkpoint")
            continue
        Checkpoint.load_objects(to_load=objects, checkpoint=state)
        trainer.logger.info("resumed from %s (iteration %d)", path, trainer.state.iteration)
        break
    within = [trainer.state.iteration % trainer.state.epoch_length if trainer.state.epoch_length else 0]

    @trainer.on(Events.EPOCH_STARTED)
    def _order_epoch(engine: Engine) -> None:
        loader = engine.state.dataloader
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, ResumableSampler):
            sampler.set_epoch(engine.state.epoch)
            if within[0]:
                sampler.skip(within[0] * loader.batch_size)
        within[0] = 0

    return saver


def attach_lr_scheduler(trainer: Engine, scheduler: Any) -> None:
    """Step a torch learning-rate scheduler after every iteration (checkpoint it in ``to_save``)."""
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: scheduler.step())


def attach_nonfinite_stop(trainer: Engine, output_key: str = "loss") -> None:
    """Stop with :class:`NonFiniteError` (naming iteration and epoch) when the step's
    ``output[output_key]`` is NaN or infinite."""

    @trainer.on(Events.ITERATION_COMPLETED)
    def _check(engine: Engine) -> None:
        value = engine.state.output.get(output_key) if isinstance(engine.state.output, Mapping) else None
        if value is not None and not math.isfinite(float(value)):
            raise NonFiniteError(
                f"training {output_key} is {float(value)} at iteration {engine.state.iteration} "
                f"(epoch {engine.state.epoch}); stopped without saving it"
            )


def attach_progress(trainer: Engine, output_keys: tuple[str, ...] = ("loss",)) -> None:
    ProgressBar(persist=True).attach(
        trainer, output_transform=lambda out: {k: out[k] for k in output_keys if k in out}
    )


def attach_tensorboard(
    trainer: Engine, run_dir: str | Path, *, every: int, optimizers: Mapping[str, torch.optim.Optimizer]
) -> None:
    """Scalars of every step output and each optimiser's learning rates in ``run_dir/tb`` (rank 0)."""
    if idist.get_rank() != 0:
        return
    from ignite.handlers.tensorboard_logger import TensorboardLogger

    tb = TensorboardLogger(log_dir=str(Path(run_dir) / "tb"))
    tb.attach_output_handler(
        trainer, event_name=Events.ITERATION_COMPLETED(every=every), tag="train", output_transform=lambda o: o
    )
    for name, optimizer in optimizers.items():
        tb.attach_opt_params_handler(
            trainer, event_name=Events.ITERATION_STARTED(every=every), optimizer=optimizer, tag=name
        )
    trainer.add_event_handler(Events.COMPLETED, lambda _: tb.close())

    # ignite stops re-raising once EXCEPTION_RAISED has a handler: close, then re-raise
    @trainer.on(Events.EXCEPTION_RAISED)
    def _close_and_reraise(_: Engine, exc: BaseException) -> None:
        tb.close()
        raise exc


def attach_validation(
    trainer: Engine,
    run_validation: Callable[[], Mapping[str, float]],
    run_dir: str | Path,
    *,
    every: int,
    to_save: Mapping[str, Any],
    metric: str,
    mode: str = "max",
) -> Checkpoint:
    """Every ``every`` epochs (and at the end), call ``run_validation()`` -> metrics, write them to
    ``run_dir/metrics_val_epoch<E>.json`` and keep the best ``to_save`` by ``metric`` in
    ``run_dir/best/``."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be max or min, got '{mode}'")
    latest: dict[str, float] = {}
    best = Checkpoint(
        dict(to_save),
        DiskSaver(Path(run_dir) / "best", require_empty=False, atomic=True, create_dir=True),
        filename_prefix="best",
        n_saved=1,
        score_function=lambda _: latest[metric] if mode == "max" else -latest[metric],
        score_name=metric if mode == "max" else f"neg_{metric}",
        global_step_transform=lambda engine, _: engine.state.epoch,
    )

    def due(engine: Engine, epoch: int) -> bool:
        return epoch % every == 0 or epoch == engine.state.max_epochs

    @trainer.on(Events.EPOCH_COMPLETED(event_filter=due))
    def _validate(engine: Engine) -> None:
        metrics = dict(run_validation())
        if metric not in metrics:
            raise KeyError(f"validation returned no metric '{metric}'; it returned {sorted(metrics)}")
        latest.clear()
        latest.update({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        if idist.get_rank() == 0:
            atomic_write_json(Path(run_dir) / f"metrics_val_epoch{engine.state.epoch}.json", metrics)
        best(engine)

    return best
