"""The two training stages on the effvid engine (the original repository has no training code)."""

from __future__ import annotations

from pathlib import Path

import torch

from effvid.data import VideoClassificationDataset, worker_init_fn
from effvid.engine import (
    EngineConfig,
    make_dataloader,
    resolve_device,
    seed_everything,
    setup_trainer,
    to_device,
)
from frameexit.losses import gate_loss, gate_pseudo_labels, step_cross_entropy, step_losses
from frameexit.model import FrameExitModel

__all__ = ["train_stage1", "train_stage2"]


def _loader(dataset: VideoClassificationDataset, cfg: EngineConfig) -> torch.utils.data.DataLoader:
    return make_dataloader(
        dataset, cfg, train=True, worker_init_fn=worker_init_fn, drop_last=len(dataset) > cfg.batch_size
    )


def train_stage1(
    model: FrameExitModel,
    dataset: VideoClassificationDataset,
    cfg: EngineConfig,
    run_dir: str | Path,
    *,
    lr: float,
    weight_decay: float = 0.0,
    last_step_only: bool = False,
) -> FrameExitModel:
    """Backbone + MLP + every step's classifier, cross-entropy at every step on the running max
    (``last_step_only``: only the all-frames classifier - the static max-pooling baseline)."""
    seed_everything(cfg.seed, deterministic=cfg.deterministic)
    device = resolve_device(cfg.device)
    model.to(device)
    params = [p for n, p in model.named_parameters() if not n.startswith("gates.")]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    loader = _loader(dataset, cfg)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * len(loader))

    def loss_fn(batch):
        batch = to_device(batch, device)
        logits, _ = model.step_logits(batch["video"])
        if last_step_only:
            logits = logits[:, -1:]
        loss = step_cross_entropy(logits, batch["label"])
        return loss, {}

    trainer = setup_trainer(
        model=model, optimizer=optimizer, loss_fn=loss_fn, cfg=cfg, run_dir=run_dir, lr_scheduler=sched
    )
    trainer.run(loader, max_epochs=cfg.epochs)
    return model


def train_stage2(
    model: FrameExitModel,
    dataset: VideoClassificationDataset,
    cfg: EngineConfig,
    run_dir: str | Path,
    *,
    beta: float,
    lr: float,
) -> FrameExitModel:
    """Exit gates on pseudo-labels ``1[CE_t <= beta * exp(t/2)]`` of the frozen stage-1 model.

    Only the gates of steps 1..T-2 learn (the last step always exits); backbone, MLP and classifiers
    stay frozen, BatchNorm included (eval mode)."""
    seed_everything(cfg.seed, deterministic=cfg.deterministic)
    device = resolve_device(cfg.device)
    model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    used = model.gates[: model.num_frames - 2]
    for p in used.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(used.parameters(), lr=lr)

    def trainable() -> None:
        model.eval()
        used.train()

    def loss_fn(batch):
        batch = to_device(batch, device)
        t = batch["video"].shape[1]
        with torch.no_grad():
            logits, z = model.step_logits(batch["video"])
            ce = step_losses(logits, batch["label"])[:, 1 : t - 1]  # steps whose gate is consulted
            labels = gate_pseudo_labels(ce, beta)
        loss = gate_loss(model.gate_logits(z[:, : t - 1]), labels)
        return loss, {"exit_label_rate": float(labels.mean())}

    trainer = setup_trainer(
        model=model, optimizer=optimizer, loss_fn=loss_fn, cfg=cfg, run_dir=run_dir, trainable=trainable
    )
    trainer.run(_loader(dataset, cfg), max_epochs=cfg.epochs)
    for p in model.parameters():
        p.requires_grad_(True)
    return model
