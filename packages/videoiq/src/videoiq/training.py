"""The four stages on the effvid engine: the step modules of :mod:`videoiq.steps` under the core's
``setup_trainer`` / ``run_trainer`` (checkpoints and resume, AMP, DistributedDataParallel).

=================  ==============================  ===========================================
stage              optimiser groups                from the previous stages
=================  ==============================  ===========================================
fp                 everything at ``lr``            -
ap                 shared weights ``lr / #bits``;  ``--checkpoint.init`` (the float network it
                   BatchNorms ``lr``; the clips     starts from), ``--checkpoint.teacher`` (KD;
                   of bit width b ``q_lr[b]``,      default: the init file)
                   ``q_weight_decay[b]``
policy_backbone    everything at ``lr``            -
policy             LSTM, action layer, head at     ``--checkpoint.init`` (the any-precision
                   ``p_lr``; MobileNetV2 at        network, frozen with its BatchNorm
                   ``p_b_lr``                      statistics), ``--checkpoint.teacher``,
                                                   ``--checkpoint.policy_backbone``
=================  ==============================  ===========================================

The optimiser is SGD with momentum (the original's) or Adam, cosine-annealed per iteration. In
stage policy the Gumbel temperature follows ``T_e = T_0 * decay^e`` after ``e`` epochs
(:class:`TemperatureSchedule`, an ignite handler checkpointed with the run).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from effvid.checkpoint import load_checked
from effvid.data import build_dataset, worker_init_fn
from effvid.engine import make_dataloader, run_trainer, setup_trainer
from videoiq.build import (
    KIND,
    KIND_AP,
    KIND_FP,
    KIND_POLICY_BACKBONE,
    build_any_precision,
    build_policy_backbone,
    build_teacher,
    build_videoiq,
    load_any_precision,
    load_policy_backbone,
    load_teacher,
    read_stage_file,
)
from videoiq.config import OptimConfig, TrainConfig
from videoiq.model import AnyPrecisionResNet
from videoiq.policy import PrecisionPolicy
from videoiq.steps import AnyPrecisionStep, FloatStep, PolicyStep

__all__ = [
    "AnyPrecisionStep",
    "FloatStep",
    "PolicyStep",
    "Stage",
    "TemperatureSchedule",
    "any_precision_groups",
    "make_optimizer",
    "policy_groups",
    "prepare_stage",
    "train",
]

_BN = re.compile(r"(^|\.)bn\d")  # the original's "bn" names: stem and block BNs, not the downsample ones


class TemperatureSchedule:
    """The policy's Gumbel-softmax temperature per epoch: ``initial * rate ** epochs_done``.

    Set at every epoch start and end from the trainer's epoch count (the original multiplies in
    place after each epoch), so a resumed run continues the schedule; its state is checkpointed
    (``to_save_extra``) with the run.
    """

    def __init__(self, policy: PrecisionPolicy, initial: float, rate: float) -> None:
        self.policy, self.initial, self.rate = policy, float(initial), float(rate)

    def value(self, epochs_done: int) -> float:
        return self.initial * self.rate**epochs_done

    def _set(self, epochs_done: int) -> None:
        self.policy.temperature.fill_(self.value(epochs_done))

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: self._set(e.state.epoch - 1))
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: self._set(e.state.epoch))

    def state_dict(self) -> dict[str, float]:
        return {"initial": self.initial, "rate": self.rate}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.initial, self.rate = float(state["initial"]), float(state["rate"])


def _per_bit(values: list[float], family: tuple[int, ...]) -> list[float]:
    return values * len(family) if len(values) == 1 else list(values)


def any_precision_groups(model: AnyPrecisionResNet, cfg: OptimConfig) -> list[dict[str, Any]]:
    """The original's step-2 groups: the clips of each bit width at its ``q_lr`` / ``q_weight_decay``;
    BatchNorms (stem and blocks; not the downsample BNs, whose names lack "bn") at ``lr``; the
    rest - whose gradients sum over the bit widths - at ``lr / #bits``."""
    family = model.family
    q_lr, q_wd = _per_bit(cfg.q_lr, family), _per_bit(cfg.q_weight_decay, family)
    clips: dict[int, list[nn.Parameter]] = {b: [] for b in family}
    bns, shared = [], []
    for name, p in model.named_parameters():
        if ".clips." in name:
            clips[int(name.rsplit(".", 1)[1])].append(p)
        elif _BN.search(name):
            bns.append(p)
        else:
            shared.append(p)
    groups = [
        {"params": shared, "lr": cfg.lr / len(family), "weight_decay": cfg.weight_decay, "name": "shared"},
        {"params": bns, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "bn"},
    ]
    groups += [
        {"params": clips[b], "lr": q_lr[i], "weight_decay": q_wd[i], "name": f"clips@{b}"}
        for i, b in enumerate(family)
    ]
    return groups


def policy_groups(policy: PrecisionPolicy, cfg: OptimConfig) -> list[dict[str, Any]]:
    """Stage 4: the LSTM, action layer and head at ``p_lr``; the MobileNetV2 at ``p_b_lr``."""
    backbone = list(policy.backbone.parameters())
    ids = {id(p) for p in backbone}
    leaf = [p for p in policy.parameters() if id(p) not in ids]
    return [
        {"params": leaf, "lr": cfg.p_lr, "weight_decay": cfg.weight_decay, "name": "policy"},
        {"params": backbone, "lr": cfg.p_b_lr, "weight_decay": cfg.weight_decay, "name": "policy_backbone"},
    ]


def make_optimizer(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class Stage:
    """What one stage trains: its step module, the model its ``model.pt`` holds, and how."""

    step: nn.Module
    model: nn.Module
    kind: str
    groups: list[dict[str, Any]]
    to_save_extra: dict[str, Any] = field(default_factory=dict)
    attach: Callable[[Engine], None] | None = None


def _say(message: str) -> None:
    import ignite.distributed as idist

    if idist.get_rank() == 0:
        print(message)


def prepare_stage(cfg: TrainConfig) -> Stage:
    """Build ``cfg.stage``'s model, load what it takes from the previous stages (checked), and
    the step module and optimiser groups that train it."""
    m, ckpt = cfg.model, cfg.checkpoint

    def whole(net: nn.Module) -> list[dict[str, Any]]:
        return [
            {"params": list(net.parameters()), "lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay}
        ]

    if cfg.stage == "fp":
        teacher = (
            load_teacher(ckpt.init, m, "--checkpoint.init of stage fp") if ckpt.init else build_teacher(m)
        )
        return Stage(FloatStep(teacher), teacher, KIND_FP, whole(teacher))
    if cfg.stage == "policy_backbone":
        net = build_policy_backbone(m)
        if ckpt.init:
            role = "--checkpoint.init of stage policy_backbone"
            load_checked(
                net, read_stage_file(ckpt.init, KIND_POLICY_BACKBONE, role).state_dict, source=ckpt.init
            )
        return Stage(FloatStep(net), net, KIND_POLICY_BACKBONE, whole(net))
    loss = cfg.loss
    if cfg.stage == "ap":
        model = build_any_precision(m)
        if ckpt.init:
            start = load_teacher(ckpt.init, m, "--checkpoint.init of stage ap")
            model = AnyPrecisionResNet.from_float(
                start,
                bit_width_family=m.bit_width_family,
                q_init=m.q_init_value,
                dropout=m.dropout,
                mean_aligned=m.mean_aligned,
            )
        else:
            _say("warning: stage ap without --checkpoint.init starts from random weights, not the fp stage's")
        teacher_path = ckpt.teacher or ckpt.init
        teacher = None
        if loss.loss_type != "CE" and teacher_path:
            teacher = load_teacher(teacher_path, m, "--checkpoint.teacher of stage ap")
            _say(f"KD teacher: {teacher_path}")
        elif loss.loss_type != "CE":
            _say("no teacher: the largest bit width is the KD target of the others (in-place distillation)")
        step = AnyPrecisionStep(
            model,
            teacher,
            loss_type=loss.loss_type,
            kd_weight=loss.kd_weight,
            frozen_train_mode=loss.frozen_train_mode,
        )
        return Stage(step, model, KIND_AP, any_precision_groups(model, cfg.optim))
    # policy: the any-precision network frozen, the policy trained on it
    model = build_videoiq(m, temperature=cfg.optim.temperature)
    load_any_precision(model.recognizer, ckpt.init, "--checkpoint.init of stage policy")  # type: ignore[arg-type]
    teacher = load_teacher(ckpt.teacher, m, "--checkpoint.teacher of stage policy") if ckpt.teacher else None
    if model.float_branch is not None:
        assert teacher is not None
        model.float_branch.load_state_dict(teacher.backbone.state_dict())
    if ckpt.policy_backbone:
        load_policy_backbone(
            model.policy.backbone, ckpt.policy_backbone, m, "--checkpoint.policy_backbone of stage policy"
        )
    else:
        _say("warning: no --checkpoint.policy_backbone: the policy's MobileNetV2 starts from random weights")
    step = PolicyStep(
        model,
        teacher,
        loss_type=loss.loss_type,
        policy_w=loss.policy_w,
        balanced_w=loss.balanced_w,
        efficient_w=loss.efficient_w,
        entropy_w=loss.entropy_w,
        frozen_train_mode=loss.frozen_train_mode,
    )
    schedule = TemperatureSchedule(model.policy, cfg.optim.temperature, cfg.optim.temperature_decay)
    return Stage(
        step,
        model,
        KIND,
        policy_groups(model.policy, cfg.optim),
        to_save_extra={"temperature": schedule},
        attach=schedule.attach,
    )


def train(cfg: TrainConfig, run_dir: str | Path) -> Stage | None:
    """Run ``cfg.stage`` into ``run_dir`` (resuming its checkpoints); returns the trained stage
    (``.model``, ``.kind``), or None when ``run_dir`` already held the finished run."""
    stage = prepare_stage(cfg)
    dataset = build_dataset(cfg.data, num_classes=cfg.model.num_class, train=True)
    optimizer = make_optimizer(stage.groups, cfg.optim)
    loader = make_dataloader(
        dataset,
        batch_size=cfg.data.train_batch_size,
        train=True,
        seed=cfg.engine.seed,
        num_workers=cfg.data.num_workers,
        worker_init_fn=worker_init_fn,
        drop_last=len(dataset) > cfg.data.train_batch_size,
    )
    epochs = cfg.engine.epochs
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
        if cfg.optim.cosine
        else None
    )
    trainer = setup_trainer(
        module=stage.step,
        optimizer=optimizer,
        cfg=cfg.engine,
        run_dir=run_dir,
        lr_scheduler=sched,
        to_save_extra=stage.to_save_extra,
    )
    if stage.attach is not None:
        stage.attach(trainer)
    return stage if run_trainer(trainer, loader, epochs=epochs) else None
