"""Models from their config section, and the stages' model files, checked when they load.

Each stage writes its own kind of model file, and each hand-off reads exactly one kind, so a
file from the wrong stage is an error naming the file, what it is and what was expected:

=====================  ===========================  ===========================================
stage                  writes (kind)                reads
=====================  ===========================  ===========================================
fp                     ``videoiq-fp``               ``--checkpoint.init``: videoiq-fp (optional)
ap                     ``videoiq-ap``               ``--checkpoint.init`` (start), ``--checkpoint.teacher``
                                                    (KD; default: the init file): videoiq-fp
policy_backbone        ``videoiq-policy-backbone``  ``--checkpoint.init``: videoiq-policy-backbone (optional)
policy                 ``videoiq``                  ``--checkpoint.init``: videoiq-ap; ``--checkpoint.teacher``:
                                                    videoiq-fp; ``--checkpoint.policy_backbone``:
                                                    videoiq-policy-backbone
=====================  ===========================  ===========================================

An any-precision file serves a model whose bit-width family it covers (the extra bit widths are
dropped; a missing one is an error); a policy backbone serves a policy of its input size and width.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping

import torch
import yaml
from torch import nn

from effvid.checkpoint import load_checked
from effvid.model_files import ModelFile, ModelFileError, read_model_file
from videoiq.config import ModelConfig
from videoiq.conversion import KIND, KIND_AP, KIND_FP, KIND_POLICY_BACKBONE, load_original_checkpoint
from videoiq.model import AnyPrecisionResNet, FullPrecisionTeacher, VideoIQ
from videoiq.policy import PolicyBackboneClassifier

__all__ = [
    "KIND",
    "KIND_AP",
    "KIND_FP",
    "KIND_POLICY_BACKBONE",
    "build_any_precision",
    "build_policy_backbone",
    "build_teacher",
    "build_videoiq",
    "fit_family",
    "load_any_precision",
    "load_model_file",
    "load_policy_backbone",
    "load_teacher",
    "read_stage_file",
]

_STAGE_OF = {KIND_FP: "fp", KIND_AP: "ap", KIND_POLICY_BACKBONE: "policy_backbone", KIND: "policy"}
_CLIP_KEY = re.compile(r"\.clips\.(\d+)$")
_BITS_KEY = re.compile(r"\.(?:bns|clips)\.(\d+)(?:\.|$)")  # a per-bit-width BatchNorm or clip


def build_teacher(cfg: ModelConfig) -> FullPrecisionTeacher:
    return FullPrecisionTeacher(arch=cfg.arch, num_classes=cfg.num_class, backbone_kwargs=cfg.backbone_kwargs)


def build_any_precision(cfg: ModelConfig) -> AnyPrecisionResNet:
    return AnyPrecisionResNet(
        arch=cfg.arch,
        num_classes=cfg.num_class,
        bit_width_family=cfg.bit_width_family,
        q_init=cfg.q_init_value,
        dropout=cfg.dropout,
        mean_aligned=cfg.mean_aligned,
        backbone_kwargs=cfg.backbone_kwargs,
    )


def build_policy_backbone(cfg: ModelConfig) -> PolicyBackboneClassifier:
    return PolicyBackboneClassifier(
        num_classes=cfg.num_class,
        input_size=cfg.policy_input_size,
        backbone=cfg.policy_arch,
        width=cfg.policy_width,
        dropout=cfg.dropout,
    )


def build_videoiq(cfg: ModelConfig, *, temperature: float | None = None) -> VideoIQ:
    return VideoIQ(
        arch=cfg.arch,
        num_classes=cfg.num_class,
        bit_width_family=cfg.bit_width_family,
        skip_list=cfg.skip_list,
        q_init=cfg.q_init_value,
        dropout=cfg.dropout,
        mean_aligned=cfg.mean_aligned,
        policy_head=cfg.policy_head,
        float_branch=cfg.float_branch,
        backbone_kwargs=cfg.backbone_kwargs,
        policy_kwargs={**cfg.policy_kwargs, **({"temperature": temperature} if temperature else {})},
    )


def read_stage_file(path: str, kind: str, role: str) -> ModelFile:
    """Our model file of ``kind`` at ``path``; another file is an error naming ``role`` (the key
    that gave it) and the stage whose output it takes."""
    try:
        return read_model_file(path, kind=kind)
    except ModelFileError as exc:
        raise ModelFileError(f"{exc}; {role} takes the model.pt of stage {_STAGE_OF[kind]}") from None


def fit_family(
    state: Mapping[str, torch.Tensor], family: tuple[int, ...], source: str
) -> dict[str, torch.Tensor]:
    """An any-precision state dict (keys ``...bns.<b>.``, ``...clips.<b>``) for a model of ``family``:
    the bit widths beyond it dropped; a bit width it lacks is an error naming ``source``."""
    found = sorted({int(m[1]) for k in state if (m := _CLIP_KEY.search(k))}, reverse=True)
    missing = [b for b in family if b not in found]
    if missing:
        raise ModelFileError(
            f"{source}: has the bit widths {found}; model.bit_width_family {list(family)} also needs {missing}"
        )
    if found and max(found) != max(family):
        warnings.warn(
            f"{source}: trained with largest bit width {max(found)}, the model's is {max(family)}: its "
            "weights are truncated from another grid, so the lower bit widths differ from the trained ones",
            stacklevel=2,
        )
    return {k: v for k, v in state.items() if (m := _BITS_KEY.search(k)) is None or int(m[1]) in family}


def _check_policy_fit(file: ModelFile, cfg: ModelConfig, path: str) -> None:
    """A policy backbone pretrained at another input size or width does not serve this policy."""
    trained = (yaml.safe_load(file.config) or {}).get("model", {})
    for key in ("policy_input_size", "policy_arch", "policy_width"):
        if key in trained and trained[key] != getattr(cfg, key):
            raise ModelFileError(
                f"{path}: the policy backbone was trained with model.{key} {trained[key]}; "
                f"this model has {getattr(cfg, key)}"
            )


def load_teacher(path: str, cfg: ModelConfig, role: str) -> FullPrecisionTeacher:
    teacher = build_teacher(cfg)
    load_checked(teacher, read_stage_file(path, KIND_FP, role).state_dict, source=path)
    return teacher


def load_any_precision(model: AnyPrecisionResNet, path: str, role: str) -> None:
    state = read_stage_file(path, KIND_AP, role).state_dict
    load_checked(model, fit_family(state, model.family, path), source=path)


def load_policy_backbone(backbone: nn.Module, path: str, cfg: ModelConfig, role: str) -> None:
    """The ``backbone.*`` weights of a stage-3 file into the policy's MobileNetV2 (its fc unused)."""
    file = read_stage_file(path, KIND_POLICY_BACKBONE, role)
    _check_policy_fit(file, cfg, path)
    state = {k[len("backbone.") :]: v for k, v in file.state_dict.items() if k.startswith("backbone.")}
    load_checked(backbone, state, source=path)


def load_model_file(model: VideoIQ, path: str, *, fmt: str = "effvid") -> None:
    """A trained VideoIQ, strictly: our ``videoiq`` file (``fmt="effvid"``) or an authors'
    ``resnet_videoiq`` checkpoint (``"original"``); the any-precision part fitted to the family."""
    if fmt == "original":
        load_original_checkpoint(model, path)
        return
    state = read_stage_file(path, KIND, "--checkpoint.init").state_dict
    load_checked(model, fit_family(state, model.family, path), source=path)
