"""The two training stages on the effvid engine (the original repository has no training code).

Each stage is a *training module* (``forward(batch) -> (loss, logs)``, so DistributedDataParallel
sees the loss computed in ``forward``) run by one shared loop, :func:`fit`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine
from torch import nn

from effvid.data import DataConfig, VideoClassificationDataset, worker_init_fn
from effvid.engine import EngineConfig, attach_validation
from effvid.engine import fit as engine_fit
from frameexit.losses import gate_loss, gate_pseudo_labels, step_cross_entropy, step_losses
from frameexit.model import FrameExitModel

__all__ = ["GateObjective", "StepObjective", "fit", "train_stage1", "train_stage2"]


class StepObjective(nn.Module):
    """Stage 1: cross-entropy of every step's classifier on the running max (``last_step_only``:
    only the all-frames classifier - the static max-pooling baseline)."""

    def __init__(self, model: FrameExitModel, *, last_step_only: bool = False) -> None:
        super().__init__()
        self.model, self.last_step_only = model, last_step_only

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        logits, _ = self.model.step_logits(batch["video"])
        if self.last_step_only:
            logits = logits[:, -1:]
        return step_cross_entropy(logits, batch["label"]), {}


class GateObjective(nn.Module):
    """Stage 2: the gates on pseudo-labels ``1[CE_t <= beta * exp(t/2)]`` of the frozen model."""

    def __init__(self, model: FrameExitModel, *, beta: float) -> None:
        super().__init__()
        self.model, self.beta = model, beta

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        t = batch["video"].shape[1]
        with torch.no_grad():
            logits, z = self.model.step_logits(batch["video"])
            ce = step_losses(logits, batch["label"])[:, 1 : t - 1]  # steps whose gate is consulted
            labels = gate_pseudo_labels(ce, self.beta)
        loss = gate_loss(self.model.gate_logits(z[:, : t - 1]), labels)
        return loss, {"exit_label_rate": float(labels.mean())}


def _only_trainable(model: nn.Module, params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """Freeze everything but ``params`` (DDP needs every parameter that requires grad to get one)."""
    chosen = list(params)
    ids = {id(p) for p in chosen}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    return chosen


def fit(
    objective: nn.Module,
    params: list[nn.Parameter],
    dataset: VideoClassificationDataset,
    data: DataConfig,
    cfg: EngineConfig,
    run_dir: str | Path,
    *,
    lr: float,
    weight_decay: float = 0.0,
    cosine: bool = True,
    trainable: Callable[[], None] | None = None,
    validate: Callable[[], dict[str, float]] | None = None,
) -> bool:
    """Adam on ``params`` (cosine-annealed per iteration), the core's trainer, ``cfg.epochs``.

    ``validate() -> metrics`` runs every ``cfg.eval_every`` epochs, and the best model by its
    ``hit1`` is kept in ``run_dir/best/``. Returns False when ``run_dir`` already held the finished
    run (nothing trained)."""
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)

    def attach(trainer: Engine) -> None:
        if validate is not None and cfg.eval_every:
            model = objective.model  # type: ignore[attr-defined]
            attach_validation(
                trainer, validate, run_dir, every=cfg.eval_every, to_save={"model": model}, metric="hit1"
            )

    return engine_fit(
        objective,
        optimizer,
        dataset,
        cfg,
        run_dir,
        batch_size=data.train_batch_size,
        num_workers=data.num_workers,
        cosine=cosine,
        trainable=trainable,
        worker_init_fn=worker_init_fn,
        attach=attach,
    )


def train_stage1(
    model: FrameExitModel,
    dataset: VideoClassificationDataset,
    data: DataConfig,
    cfg: EngineConfig,
    run_dir: str | Path,
    *,
    lr: float,
    weight_decay: float = 0.0,
    last_step_only: bool = False,
    validate: Callable[[], dict[str, float]] | None = None,
) -> bool:
    """Backbone + MLP + every step's classifier (or only the last one: the static baseline)."""
    heads = model.classifiers[-1:] if last_step_only else model.classifiers
    params = _only_trainable(
        model, [*model.backbone.parameters(), *model.mlp.parameters(), *heads.parameters()]
    )
    objective = StepObjective(model, last_step_only=last_step_only)
    return fit(
        objective, params, dataset, data, cfg, run_dir, lr=lr, weight_decay=weight_decay, validate=validate
    )


def train_stage2(
    model: FrameExitModel,
    dataset: VideoClassificationDataset,
    data: DataConfig,
    cfg: EngineConfig,
    run_dir: str | Path,
    *,
    beta: float,
    lr: float,
    validate: Callable[[], dict[str, float]] | None = None,
) -> bool:
    """Only the gates of steps 1..T-2 learn (the last step always exits); backbone, MLP and
    classifiers stay frozen, BatchNorm statistics included (eval mode)."""
    used = model.gates[: model.num_frames - 2]
    params = _only_trainable(model, used.parameters())
    objective = GateObjective(model, beta=beta)

    def trainable() -> None:
        objective.eval()
        used.train()

    return fit(
        objective,
        params,
        dataset,
        data,
        cfg,
        run_dir,
        lr=lr,
        cosine=False,
        trainable=trainable,
        validate=validate,
    )
