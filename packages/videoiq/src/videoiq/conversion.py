"""State dicts saved by the original code (sunxm2357/VideoIQ) -> our model + separate teacher.

Two layouts, each usually with the ``module.`` prefix of DataParallel/DDP:

* ``resnet_videoiq`` (step 4, ``policy_best.pth.tar``): ``backbone.*`` (any-precision ResNet and,
  with ``--is_32fp``, its ``*_32fp`` float copy), ``policy_net.*``, ``fc.*`` -> :class:`VideoIQ`;
* ``resnet_pact_ap`` (step 2): the same backbone keys at the top level, plus ``fc``, ``fc_32fp``
  and the unused buffer ``swap_r`` -> :class:`AnyPrecisionResNet`.

Renames (``{b}`` a bit width, ``k`` a conv index)::

    layerL.i.q_alpha{k}_{b}            -> backbone.layerL.i.quant{k}.clips.{b}
    layerL.i.bn{k}_{b}.*               -> backbone.layerL.i.bn{k}.bns.{b}.*
    layerL.0.downsample_{b}.0.weight   -> backbone.layerL.0.downsample.0.weight   (one tied tensor)
    layerL.0.downsample_{b}.1.*        -> backbone.layerL.0.downsample.1.bns.{b}.*
    conv1_32fp / bn1_32fp / layerL_32fp.i.* / downsample_32 / fc_32fp -> the teacher's torchvision names
    policy_net.features.i.conv.{0,1,3,4,6,7}  -> policy.backbone.features.i.conv.{0.0,0.1,1.0,1.1,2,3}
    policy_net.conv.{0,1}              -> policy.backbone.features.18.{0,1}

Bit widths the checkpoint has beyond the model's family are dropped; a family bit width it lacks
is an error. Everything else loads strictly through :func:`effvid.checkpoint.load_checked`.

Registered with the core (:func:`effvid.model_files.register_converter`) as format ``original``
of our kinds: ``videoiq`` (a ``resnet_videoiq`` state -> :class:`VideoIQ` keys, the teacher left
out), ``videoiq-ap`` (``resnet_pact_ap`` -> :class:`AnyPrecisionResNet`) and ``videoiq-fp`` (the
``*_32fp`` float teacher of either). A ``--use_fp_as_bb`` model needs the model-aware
:func:`load_original_checkpoint`, which gives its float branch the teacher's trunk.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from effvid.checkpoint import load_checked
from effvid.model_files import read_state_dict, register_converter
from videoiq.model import AnyPrecisionResNet, FullPrecisionTeacher, VideoIQ

__all__ = [
    "KIND",
    "KIND_AP",
    "KIND_FP",
    "KIND_POLICY_BACKBONE",
    "ConvertedState",
    "convert_original_state_dict",
    "load_original_checkpoint",
]

#: kinds of our model files (effvid.model_files), one per stage of the pipeline
KIND_FP = "videoiq-fp"
KIND_AP = "videoiq-ap"
KIND_POLICY_BACKBONE = "videoiq-policy-backbone"
KIND = "videoiq"

_BITS = re.compile(r"(?:^|\.)layer\d+\.\d+\.q_alpha1_(\d+)$")
_MBV2_EXPAND = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
_MBV2_DW = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}


@dataclass
class ConvertedState:
    model: dict[str, torch.Tensor]  # keys of VideoIQ (layout "videoiq") or AnyPrecisionResNet ("ap")
    teacher: dict[str, torch.Tensor] | None  # FullPrecisionTeacher keys, None without --is_32fp
    layout: str  # "videoiq" or "ap"
    checkpoint_family: tuple[int, ...]  # bit widths present in the checkpoint, largest first


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _backbone_key(key: str, family: Sequence[int]) -> tuple[str, str] | None:
    """Original backbone key (no ``backbone.`` prefix) -> (``"model"``/``"teacher"``, our key);
    None drops it. Raises on a key of no known form."""
    if key == "swap_r":
        return None  # unused buffer of the authors' "swap" experiments
    m = re.fullmatch(r"(conv1|bn1)_32fp\.(.+)", key)
    if m:
        return "teacher", f"backbone.{m[1]}.{m[2]}"
    m = re.fullmatch(r"(layer\d+)_32fp\.(\d+)\.(.+)", key)
    if m:
        rest = re.sub(r"^downsample_32\.", "downsample.", m[3])
        return "teacher", f"backbone.{m[1]}.{m[2]}.{rest}"
    if key.startswith("fc_32fp."):
        return "teacher", "fc." + key[len("fc_32fp.") :]
    if re.fullmatch(r"(conv1|bn1)\..+", key):
        return "model", "backbone." + key
    m = re.fullmatch(r"(layer\d+\.\d+)\.(.+)", key)
    if not m:
        raise ValueError(f"unknown key '{key}' in an original VideoIQ backbone")
    block, rest = m[1], m[2]
    patterns = [
        (r"q_alpha(\d)_(\d+)", lambda r: (int(r[2]), f"quant{r[1]}.clips.{r[2]}")),
        (r"bn(\d)_(\d+)\.(.+)", lambda r: (int(r[2]), f"bn{r[1]}.bns.{r[2]}.{r[3]}")),
        (r"downsample_(\d+)\.0\.(.+)", lambda r: (int(r[1]), f"downsample.0.{r[2]}")),
        (r"downsample_(\d+)\.1\.(.+)", lambda r: (int(r[1]), f"downsample.1.bns.{r[1]}.{r[2]}")),
        (r"conv(\d)\.(.+)", lambda r: (None, f"conv{r[1]}.{r[2]}")),
    ]
    for pattern, make in patterns:
        r = re.fullmatch(pattern, rest)
        if r:
            bits, new = make(r)
            if bits is not None and bits not in family:
                return None
            return "model", f"backbone.{block}.{new}"
    if re.fullmatch(r"(bn\d|q_alpha\d)\..+|q_alpha\d", rest):
        raise ValueError(
            f"key '{key}': a BatchNorm or clip shared by all bit widths; only checkpoints trained with "
            "--switch_bn and --switch_clipval are supported"
        )
    raise ValueError(f"unknown key '{key}' in an original VideoIQ backbone")


def _policy_key(key: str) -> str:
    """``policy_net.*`` key (prefix removed) -> our ``policy.*`` key."""
    if "q_alpha" in key:
        raise ValueError(f"key 'policy_net.{key}': quantised policies (--p_bit < 32) are not supported")
    m = re.fullmatch(r"features\.(\d+)\.conv\.(\d)\.(.+)", key)
    if m:
        table = _MBV2_DW if m[1] == "1" else _MBV2_EXPAND  # block 1 has expand ratio 1
        return f"policy.backbone.features.{m[1]}.conv.{table[m[2]]}.{m[3]}"
    if key.startswith("features.0."):
        return "policy.backbone." + key
    m = re.fullmatch(r"conv\.(\d)\.(.+)", key)
    if m:
        return f"policy.backbone.features.18.{m[1]}.{m[2]}"
    return "policy." + key


def convert_original_state_dict(
    state: Mapping[str, torch.Tensor], *, bit_width_family: Sequence[int] | None = None, source: str = ""
) -> ConvertedState:
    """Rename an original state dict (with or without ``module.``) to our keys.

    ``bit_width_family``: the family of the model to load (default: the checkpoint's). Raises
    ``ValueError`` naming ``source`` if the state is not a VideoIQ layout or lacks a bit width.
    """
    where = f"checkpoint {source}" if source else "state dict"
    state = _strip_module(state)
    layout = "videoiq" if any(k.startswith("backbone.") for k in state) else "ap"
    found = sorted({int(m[1]) for k in state if (m := _BITS.search(k))}, reverse=True)
    if not found:
        raise ValueError(
            f"{where} is not a VideoIQ any-precision network: no key like 'backbone.layer1.0.q_alpha1_4' "
            "(resnet_videoiq) or 'layer1.0.q_alpha1_4' (resnet_pact_ap)"
        )
    family = tuple(bit_width_family) if bit_width_family is not None else tuple(found)
    missing = [b for b in family if b not in found]
    if missing:
        raise ValueError(
            f"{where} has bit widths {tuple(found)}; the model's family {family} also needs {missing}"
        )
    if max(family) != max(found):
        warnings.warn(
            f"the checkpoint's largest bit width is {max(found)}, the model's {max(family)}: weights are "
            "truncated from a different grid, so the lower bit widths differ from those it was trained with",
            stacklevel=2,
        )
    model: dict[str, torch.Tensor] = {}
    teacher: dict[str, torch.Tensor] = {}
    prefix = "recognizer." if layout == "videoiq" else ""
    for key, value in state.items():
        if layout == "videoiq":
            if key.startswith("policy_net."):
                model[_policy_key(key[len("policy_net.") :])] = value
                continue
            if key.startswith("fc."):
                model["recognizer." + key] = value
                continue
            if not key.startswith("backbone."):
                raise ValueError(f"{where}: unknown key '{key}' in a resnet_videoiq state dict")
            key = key[len("backbone.") :]
        elif key.startswith("fc."):
            model[key] = value
            continue
        target = _backbone_key(key, family)
        if target is None:
            continue
        which, new = target
        out, new = (model, prefix + new) if which == "model" else (teacher, new)
        if new in out:  # the tied downsample conv appears once per bit width
            if not torch.equal(out[new], value):
                raise ValueError(f"{where}: '{key}' differs from another bit width's copy of the tied tensor")
            continue
        out[new] = value
    return ConvertedState(model, teacher or None, layout, tuple(found))


def _with_float_branch(model: VideoIQ, converted: ConvertedState, source: str) -> dict[str, torch.Tensor]:
    """Check the policy's action count (a clear message for --use_fp_as_bb) and give a model with a
    float branch the checkpoint's float trunk (the original's ``*_32fp`` copy served both roles)."""
    linear = converted.model.get("policy.linear.weight")
    if linear is not None and linear.shape[0] != model.policy.num_actions:
        hint = ""
        if linear.shape[0] == model.policy.num_actions + 1 and model.float_branch is None:
            hint = "; it was trained with --use_fp_as_bb: build VideoIQ(float_branch=True)"
        elif linear.shape[0] == model.policy.num_actions - 1 and model.float_branch is not None:
            hint = "; it was trained without --use_fp_as_bb: build VideoIQ(float_branch=False)"
        raise ValueError(
            f"checkpoint {source}: the policy has {linear.shape[0]} actions, the model "
            f"{model.policy.num_actions} (precisions {model.precisions}, skips {model.skip_list}){hint}"
        )
    if model.float_branch is None:
        return converted.model
    if converted.teacher is None:
        raise ValueError(f"checkpoint {source} has no float trunk (*_32fp keys) for the model's float branch")
    trunk = {
        "float_branch." + k[len("backbone.") :]: v
        for k, v in converted.teacher.items()
        if k.startswith("backbone.")
    }
    return {**converted.model, **trunk}


def load_original_checkpoint(
    model: VideoIQ | AnyPrecisionResNet,
    checkpoint: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    *,
    teacher: FullPrecisionTeacher | None = None,
) -> ConvertedState:
    """Load an original checkpoint file (or state dict) into ``model`` and ``teacher``, strictly.

    ``model`` is a :class:`VideoIQ` for a ``resnet_videoiq`` checkpoint, an
    :class:`AnyPrecisionResNet` for a ``resnet_pact_ap`` one. The checkpoint's float teacher is
    loaded into ``teacher`` when given (an error if the checkpoint has none) and left out otherwise;
    a ``--use_fp_as_bb`` checkpoint needs ``VideoIQ(float_branch=True)``, whose float branch gets
    the teacher's trunk.
    """
    if isinstance(checkpoint, Mapping):
        state, source = checkpoint, ""
    else:
        state, source = read_state_dict(checkpoint, expected="a VideoIQ checkpoint"), str(checkpoint)
    family = model.family
    converted = convert_original_state_dict(state, bit_width_family=family, source=source)
    want = "videoiq" if isinstance(model, VideoIQ) else "ap"
    if converted.layout != want:
        names = {"videoiq": "resnet_videoiq (step 4)", "ap": "resnet_pact_ap (step 2)"}
        raise ValueError(
            f"checkpoint {source or '<state dict>'} is a {names[converted.layout]} state dict, "
            f"but the model is a {type(model).__name__}, which loads {names[want]} ones"
        )
    state = converted.model
    if isinstance(model, VideoIQ):
        state = _with_float_branch(model, converted, source or "<state dict>")
    load_checked(model, state, source=source)
    if teacher is not None:
        if converted.teacher is None:
            raise ValueError(f"checkpoint {source or '<state dict>'} has no float teacher (*_32fp keys)")
        load_checked(teacher, converted.teacher, source=f"{source} (teacher)")
    return converted


def _layout_part(state: Mapping[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    converted = convert_original_state_dict(state)
    if converted.layout != layout:
        names = {"videoiq": "resnet_videoiq (step 4)", "ap": "resnet_pact_ap (step 2)"}
        raise ValueError(f"the checkpoint is a {names[converted.layout]} state dict, not {names[layout]}")
    return converted.model


@register_converter(KIND, "original")
def _original_videoiq(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return _layout_part(state, "videoiq")


@register_converter(KIND_AP, "original")
def _original_ap(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return _layout_part(state, "ap")


@register_converter(KIND_FP, "original")
def _original_teacher(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    teacher = convert_original_state_dict(state).teacher
    if teacher is None:
        raise ValueError("the checkpoint has no float teacher (*_32fp keys; trained without --is_32fp)")
    return teacher
