"""The four training stages on the effvid engine, each writing the model file the next one reads.

=====  ==============================  ======================================  ====================
stage  reads                           trains                                  writes
=====  ==============================  ======================================  ====================
0      (``model.*_weights``)            each backbone alone, with its head      ``adafocus-stage0``
1      ``adafocus-stage0``              focus + classifier, random patches      ``adafocus-stage1``
2      ``adafocus-stage1``              the policy: PPO, or differentiable      ``adafocus-stage2``
3      ``adafocus-stage2``              the classifier (optionally the focus)   ``adafocus``
=====  ==============================  ======================================  ====================

Stages 0, 1, 3 and the differentiable stage 2 are one optimiser step per batch: the core's
:func:`~effvid.engine.setup_trainer` (checkpoints and resume, AMP, data parallel). PPO collects a
rollout and then takes ``ppo.epochs`` optimiser steps on it, so stage 2 builds its own step and
attaches the core's handlers to it (checkpoints and resume, progress, TensorBoard, stop on a
non-finite loss); it runs in one process, as the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from torch import nn

from adafocus.build import KINDS, build_model, load_checkpoint
from adafocus.config import OptimConfig, TrainConfig
from adafocus.model import AdaFocus
from adafocus.policy import ppo_update
from adafocus.steps import (
    BackbonePretrainStep,
    ClassifierStep,
    DifferentiablePolicyStep,
    PolicyStep,
    WarmUpStep,
    step_cross_entropy,
)
from effvid.config import ConfigError, config_to_yaml
from effvid.data import DataConfig, build_dataset, worker_init_fn
from effvid.engine import (
    EngineConfig,
    attach_checkpointing,
    attach_nonfinite_stop,
    attach_progress,
    attach_tensorboard,
    autocast,
    fit,
    make_dataloader,
    resolve_device,
    run_distributed,
    run_trainer,
    seed_everything,
    to_device,
)
from effvid.model_files import save_model

__all__ = [
    "BackbonePretrainStep",
    "ClassifierStep",
    "DifferentiablePolicyStep",
    "PolicyStep",
    "WarmUpStep",
    "fit_ppo",
    "run_training",
    "step_cross_entropy",
    "train_stage",
]

ParamGroups = Sequence[tuple[nn.Module, float]]


def _only_trainable(model: nn.Module, groups: ParamGroups) -> list[dict[str, Any]]:
    """Optimiser groups ``[{"params", "lr"}]``; every other parameter of ``model`` is frozen
    (DistributedDataParallel needs each parameter that requires grad to get one)."""
    chosen = {id(p) for part, _ in groups for p in part.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    return [{"params": list(part.parameters()), "lr": lr} for part, lr in groups]


def _optimizer(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _fit(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: torch.utils.data.Dataset,
    data: DataConfig,
    engine: EngineConfig,
    run_dir: str | Path,
    *,
    cosine: bool,
) -> bool:
    """The core's standard loop; the step module sets which parts train (the rest stays in eval)."""
    return fit(
        objective,
        optimizer,
        dataset,
        engine,
        run_dir,
        batch_size=data.train_batch_size,
        num_workers=data.num_workers,
        cosine=cosine,
        worker_init_fn=worker_init_fn,
    )


def _loader(dataset: torch.utils.data.Dataset, data: DataConfig, engine: EngineConfig):
    return make_dataloader(
        dataset,
        batch_size=data.train_batch_size,
        train=True,
        seed=engine.seed,
        num_workers=data.num_workers,
        worker_init_fn=worker_init_fn,
        drop_last=len(dataset) > data.train_batch_size,
    )


def fit_ppo(
    objective: PolicyStep,
    optimizer: torch.optim.Optimizer,
    dataset: torch.utils.data.Dataset,
    data: DataConfig,
    engine: EngineConfig,
    run_dir: str | Path,
    *,
    epochs_per_rollout: int,
) -> bool:
    """Stage 2 by PPO: per batch, one rollout (sampled positions, rewards against random patches)
    and ``epochs_per_rollout`` updates of the policy on it, on an ignite Engine carrying the
    core's checkpoint, progress, TensorBoard and non-finite handlers."""
    if idist.get_world_size() > 1:
        raise ConfigError("stage 2 with policy_training=ppo runs in one process (no engine.backend)")
    device = resolve_device(engine.device)
    objective.to(device)
    ppo = {k: getattr(objective, k) for k in ("gamma", "clip", "value_coef", "entropy_coef")}

    def step(trainer: Engine, batch: Any) -> dict[str, float]:
        objective.train()
        batch = to_device(batch, device)
        with autocast(device, engine.amp):
            rollout, logs = objective.collect(batch)
        for name in ("states", "log_probs", "rewards"):  # the update runs in float32
            setattr(rollout, name, getattr(rollout, name).float())
        history = ppo_update(objective.model.policy, optimizer, rollout, epochs=epochs_per_rollout, **ppo)
        first, last = history[0], history[-1]
        return {
            **logs,
            "loss": last["loss"],
            "entropy": last["entropy"],
            "value_loss": last["value_loss"],
            "approx_kl": last["approx_kl"],
            "clip_fraction": last["clip_fraction"],
            "loss_first_epoch": first["loss"],
        }

    trainer = Engine(step)
    attach_nonfinite_stop(trainer)
    attach_checkpointing(
        trainer,
        {"model": objective, "optimizer": optimizer},
        run_dir,
        every=engine.checkpoint_every,
        keep=engine.keep_checkpoints,
        device=device,
    )
    if engine.progress:
        attach_progress(trainer, output_keys=("loss", "reward"))
    attach_tensorboard(trainer, run_dir, every=engine.log_every, optimizers={"policy": optimizer})
    return run_trainer(trainer, _loader(dataset, data, engine), epochs=engine.epochs)


def _continue_from(model: AdaFocus, cfg: TrainConfig) -> None:
    """Load the previous stage's output (required from stage 1 on), checked strictly."""
    stage, init = cfg.stage, cfg.checkpoint.init
    if init is None:
        if stage > 0:
            raise ConfigError(
                f"stage {stage} continues from stage {stage - 1}: give --checkpoint.init "
                f"<the stage-{stage - 1} run>/model.pt"
            )
        return
    if cfg.checkpoint.format == "original":
        if stage < 2:
            raise ConfigError(
                f"stage {stage} cannot start from an authors' checkpoint (their stage-0 backbones are "
                "separate files); convert their stage-1 file for stage 2, or start stage 0 from "
                "model.glance_weights / model.focus_weights"
            )
        load_checkpoint(model, cfg.checkpoint, kinds=(), purpose=f"stage {stage}", original_stage=stage - 1)
        return
    previous = KINDS[max(stage - 1, 0)]
    load_checkpoint(model, cfg.checkpoint, kinds=(previous,), purpose=f"stage {stage}", model_cfg=cfg.model)


def train_stage(model: AdaFocus, cfg: TrainConfig, run_dir: str | Path, dataset=None) -> bool:
    """Train ``model`` in place for ``cfg.stage`` (see the module docstring); False when the run
    directory already held the finished run."""
    run_dir = Path(run_dir)
    dataset = (
        dataset
        if dataset is not None
        else build_dataset(cfg.data, num_classes=cfg.model.num_class, train=True)
    )
    lr, optim, engine = cfg.lr, cfg.optim, cfg.engine
    cosine = optim.schedule == "cosine"
    if cfg.stage == 0:
        trained = False
        for part in cfg.stage0_parts:
            objective = BackbonePretrainStep(model, part)
            groups = _only_trainable(model, [(objective.backbone, lr.stage0)])
            print(f"stage 0: pre-training the {part} network alone")
            trained |= _fit(
                objective, _optimizer(groups, optim), dataset, cfg.data, engine, run_dir / part, cosine=cosine
            )
        return trained
    if cfg.stage == 1:
        objective = WarmUpStep(model)
        groups = _only_trainable(
            model, [(model.focus, lr.stage1_focus), (model.classifier, lr.stage1_classifier)]
        )
        return _fit(objective, _optimizer(groups, optim), dataset, cfg.data, engine, run_dir, cosine=cosine)
    if cfg.stage == 2:
        groups = _only_trainable(model, [(model.policy, lr.policy)])
        optimizer = torch.optim.Adam(groups)  # the original's policy optimiser, constant rate
        if cfg.policy_training == "differentiable":
            objective = DifferentiablePolicyStep(model)
            return _fit(objective, optimizer, dataset, cfg.data, engine, run_dir, cosine=False)
        p = cfg.ppo
        objective = PolicyStep(
            model,
            gamma=p.gamma,
            clip=p.clip,
            value_coef=p.value_coef,
            entropy_coef=p.entropy_coef,
            reward=p.reward,
        )
        return fit_ppo(objective, optimizer, dataset, cfg.data, engine, run_dir, epochs_per_rollout=p.epochs)
    objective = ClassifierStep(model, train_focus=cfg.stage3_focus)
    parts = [(model.classifier, lr.stage3_classifier)]
    if cfg.stage3_focus:
        parts.append((model.focus, lr.stage3_focus))
    groups = _only_trainable(model, parts)
    return _fit(objective, _optimizer(groups, optim), dataset, cfg.data, engine, run_dir, cosine=cosine)


def _train_process(local_rank: int, cfg: TrainConfig, run_dir: Path) -> None:
    seed_everything(cfg.engine.seed, deterministic=cfg.engine.deterministic)  # before the model's init
    model = build_model(cfg.model, backbone_weights=cfg.stage == 0 and cfg.checkpoint.init is None)
    _continue_from(model, cfg)
    trained = train_stage(model, cfg, run_dir)
    if not trained:
        print(f"{run_dir} already holds the finished run ({cfg.engine.epochs} epochs); nothing to train")
    if idist.get_rank() == 0:
        save_model(model, run_dir / "model.pt", kind=KINDS[cfg.stage], config=config_to_yaml(cfg))
        print(
            f"stage {cfg.stage} trained on {idist.get_world_size()} process(es); saved {run_dir / 'model.pt'} "
            f"({KINDS[cfg.stage]})"
        )


def run_training(cfg: TrainConfig, run_dir: Path) -> None:
    """``adafocus-train``: one process, spawned processes, or torchrun's (not for PPO)."""
    if cfg.stage == 2 and cfg.policy_training == "ppo" and cfg.engine.backend is not None:
        raise ConfigError("stage 2 with policy_training=ppo runs in one process: leave engine.backend unset")
    run_distributed(
        _train_process, cfg, run_dir, backend=cfg.engine.backend, nproc_per_node=cfg.engine.nproc_per_node
    )
