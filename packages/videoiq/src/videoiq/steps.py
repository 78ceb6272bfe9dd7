"""One training step per stage of the original pipeline, as modules for the effvid engine:
``forward(batch) -> (loss, logs)`` with ``batch = {"video": (B, T, 3, H, W), "label": (B,) or (B, K)}``.

=======  ==========================  =========================================  ====================
stage    module                      trains                                     loss
=======  ==========================  =========================================  ====================
1        :class:`FloatStep`          the float teacher                          CE
2        :class:`AnyPrecisionStep`   the any-precision ResNet (all bit widths)  per bit: CE + KD
3        :class:`FloatStep`          the policy's MobileNetV2 as a classifier   CE
4        :class:`PolicyStep`         the policy only                            CE + KD + policy CE
                                                                                + balance, cost, entropy
=======  ==========================  =========================================  ====================

:mod:`videoiq.training` runs them on the effvid engine.

The original ran its frozen parts in train mode, so their BatchNorm statistics kept moving and the
step-2 teacher's dropout stayed on (notes §11.7). Here frozen parts run in eval mode unless
``frozen_train_mode=True`` asks for the original's behaviour.
"""

from __future__ import annotations

import torch
from torch import nn

from videoiq.losses import (
    balanced_loss,
    classification_loss,
    efficiency_codebook,
    efficiency_loss,
    kd_loss,
    policy_entropy,
)
from videoiq.model import AnyPrecisionResNet, FullPrecisionTeacher, VideoIQ

__all__ = ["AnyPrecisionStep", "FloatStep", "PolicyStep"]

LOSS_TYPES = ("CE", "KD", "KD_CE")


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class FloatStep(nn.Module):
    """Stages 1 and 3: a float classifier (clip (B, T, 3, H, W) -> logits (B, K)) with cross-entropy:
    the float ResNet, or the policy's MobileNetV2 (:class:`~videoiq.policy.PolicyBackboneClassifier`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss = classification_loss(self.model(batch["video"]), batch["label"])
        return loss, {"ce": float(loss.detach())}


class AnyPrecisionStep(nn.Module):
    """Stage 2: every bit width of the family, largest first, on the same batch; the sum of the
    per-bit losses (the original's one backward per bit before a single optimiser step).

    ``loss_type`` (the original's ``--loss_type``): ``"CE"`` every bit width on the labels;
    ``"KD_CE"`` CE plus ``kd_weight`` x KD to the float teacher's softmax for every bit width;
    ``"KD"`` the largest bit width gets CE + KD, the others KD only. Without a teacher the
    largest bit width's detached output is the KD target of the others (in-place distillation).
    """

    def __init__(
        self,
        model: AnyPrecisionResNet,
        teacher: FullPrecisionTeacher | None = None,
        *,
        loss_type: str = "KD_CE",
        kd_weight: float = 1.0,
        frozen_train_mode: bool = False,
    ) -> None:
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got '{loss_type}'")
        self.model, self.loss_type, self.kd_weight = model, loss_type, kd_weight
        self.teacher = _frozen(teacher) if teacher is not None else None
        self.frozen_train_mode = frozen_train_mode

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        video, label = batch["video"], batch["label"]
        target = None
        if self.teacher is not None and self.loss_type != "CE":
            self.teacher.train(self.training and self.frozen_train_mode)
            with torch.no_grad():
                target = self.teacher(video)
        total = video.new_zeros(())
        logs: dict[str, float] = {}
        try:
            for idx, bits in enumerate(self.model.family):
                out = self.model(video, bits)
                ce = classification_loss(out, label)
                if self.loss_type == "CE":
                    loss = ce
                elif idx == 0:
                    loss = ce
                    if target is None:
                        target = out.detach()
                    else:
                        loss = loss + self.kd_weight * kd_loss(out, target)
                else:
                    kd = self.kd_weight * kd_loss(out, target)
                    loss = kd if self.loss_type == "KD" else ce + kd
                total = total + loss
                logs[f"loss@{bits}"] = float(loss.detach())
                logs[f"ce@{bits}"] = float(ce.detach())
        finally:
            self.model.set_bit_width(self.model.family[0])
        return total, logs


class PolicyStep(nn.Module):
    """Stage 4: the policy learns on a frozen recognition network (its fc and clips included).

    ``loss = CE + KD + policy_w CE(policy head) + balanced_w balanced + efficient_w efficiency +
    entropy_w entropy`` (notes §2.4; README weights e.g. efficient_w 0.16, balanced_w 1). KD's
    target is the float teacher when given, else the first precision choice's prediction on every
    frame (the original's ``out_h``). Decisions are hard Gumbel samples at the policy's temperature
    (decay it once per epoch). The balanced term's target is 1/A over all A actions; the original
    used 1/(A-1) with ``--use_fp_as_bb`` (it forgot the float choice).
    """

    def __init__(
        self,
        model: VideoIQ,
        teacher: FullPrecisionTeacher | None = None,
        *,
        loss_type: str = "KD_CE",
        policy_w: float = 1.0,
        balanced_w: float = 0.0,
        efficient_w: float = 0.0,
        entropy_w: float = 0.0,
        frozen_train_mode: bool = False,
    ) -> None:
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got '{loss_type}'")
        self.model, self.loss_type = model, loss_type
        _frozen(model.recognizer)
        if model.float_branch is not None:
            _frozen(model.float_branch)
        self.teacher = _frozen(teacher) if teacher is not None else None
        self.weights = {
            "policy_ce": policy_w,
            "balanced": balanced_w,
            "efficiency": efficient_w,
            "entropy": entropy_w,
        }
        self.frozen_train_mode = frozen_train_mode
        self.register_buffer(
            "codebook", efficiency_codebook(model.precision_bits, len(model.skip_list)), persistent=False
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        video, label = batch["video"], batch["label"]
        frozen_mode = self.training and self.frozen_train_mode
        self.model.recognizer.train(frozen_mode)
        if self.model.float_branch is not None:
            self.model.float_branch.train(frozen_mode)
        out = self.model(video)
        terms: dict[str, torch.Tensor] = {}
        if self.loss_type != "KD":
            terms["ce"] = classification_loss(out.logits, label)
        if self.loss_type != "CE":
            with torch.no_grad():
                if self.teacher is not None:
                    self.teacher.train(frozen_mode)
                    target = self.teacher(video)
                else:
                    rec, (b, t) = self.model.recognizer, video.shape[:2]
                    top = rec.fc(rec.dropout(out.features[:, :, 0].flatten(0, 1)))
                    target = top.view(b, t, -1).mean(dim=1)
            terms["kd"] = kd_loss(out.logits, target)
        if out.policy.class_logits is not None:
            terms["policy_ce"] = classification_loss(out.policy.class_logits, label)
        terms["balanced"] = balanced_loss(out.policy.decisions)
        terms["efficiency"] = efficiency_loss(out.policy.decisions, self.codebook)
        terms["entropy"] = policy_entropy(out.policy.log_probs)
        loss = sum(self.weights.get(name, 1.0) * value for name, value in terms.items())
        logs = {name: float(value.detach()) for name, value in terms.items()}
        usage = out.policy.decisions.detach().float().mean(dim=(0, 1))
        names = [f"{p}bit" if p != "float" else p for p in self.model.precisions]
        names += [f"skip{s}" for s in self.model.skip_list]
        logs.update({f"usage/{n}": float(u) for n, u in zip(names, usage)})
        logs["temperature"] = float(self.model.policy.temperature)
        return loss, logs
