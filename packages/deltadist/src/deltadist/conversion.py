"""The authors' checkpoints -> a converted model's weights, loaded strictly.

Two layouts come from Qualcomm-AI-research/delta-distillation:

* **delta-distilled** (``test/*.pth``; also what its training script saves): keys prefixed
  ``model.`` (plus the loss's ``loss.criterion.weight``), and per delta layer ``<p>``:
  ``<p>.W.*`` (teacher), ``<p>.g_Wa.*`` (full student), ``<p>.g_Wb.0.weight`` ``(r, Cin, kh, 1)``,
  ``<p>.g_Wb.1.weight`` ``(Cout, r, 1, kw)`` (+ ``.bias`` when the teacher has one),
  ``<p>.g_gate.bias`` (0-dim logit, > 0 selects the full student); ``<p>.g_W.*`` may repeat one
  student (an alias registered at the first ``.eval()``; dropped here). A deployed checkpoint
  has ``<p>.g_W.*`` *instead of* the students and gate; it loads into a model deployed to the same
  choices (:func:`load_original_state_dict` deploys it so).
* **frame-based** (``train/*_frame_based.pth``): the plain network's state dict. Its
  convolutions become the teachers, the students are initialised from them (copy and SVD) and the
  gates keep their initial logit, as the original's training starts.

Conversion renames (``W`` -> ``teacher``, ``g_Wa`` -> ``student_full``, ``g_Wb.0``/``.1`` ->
``student_lowrank.vertical``/``.horizontal``, ``g_gate.bias`` -> ``gate.logit``) and every key and
shape is checked: a student of another rank, a student bias in a model built with the corrected
bias, a key of another layout, is an error that names the checkpoint's key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from deltadist.delta import DeltaConv, delta_layers
from effvid.checkpoint import CheckpointMismatchError, load_checked
from effvid.model_files import read_state_dict, register_converter

KIND = "deltadist"

__all__ = [
    "KIND",
    "convert_original_state_dict",
    "load_frame_based_state_dict",
    "load_original_checkpoint",
    "load_original_state_dict",
    "original_to_effvid",
]

_RENAMES = [
    ("W.", "teacher."),
    ("g_Wa.", "student_full."),
    ("g_Wb.0.", "student_lowrank.vertical."),
    ("g_Wb.1.", "student_lowrank.horizontal."),
    ("g_gate.bias", "gate.logit"),
]
_DEPLOYED_RENAMES = [("g_W.0.", "student.vertical."), ("g_W.1.", "student.horizontal."), ("g_W.", "student.")]


def _strip_wrapper(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the training wrapper's ``model.`` prefix and its loss buffers."""
    state = {k: v for k, v in state.items() if not k.startswith("loss.")}
    if state and all(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items()}
    return state


def _split(key: str, layers: Mapping[str, DeltaConv]) -> tuple[str, str] | None:
    """``"a.b.g_Wa.weight"`` -> (``"a.b"``, ``"g_Wa.weight"``) when ``a.b`` is a delta layer."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in layers:
            return prefix, ".".join(parts[i:])
    return None


def _rename(rest: str, renames: list[tuple[str, str]]) -> str | None:
    for old, new in renames:
        if rest == old or rest.startswith(old):
            return new + rest[len(old) :]
    return None


def convert_original_state_dict(
    state: Mapping[str, torch.Tensor], model: nn.Module, *, source: str = "<state dict>"
) -> dict[str, torch.Tensor]:
    """Rename a delta-distilled checkpoint (training or deployed layout) to ``model``'s keys.

    ``model`` is the converted network (its delta layers tell which keys belong to one). Keys
    outside delta layers pass unchanged (the strict load checks them).

    Raises:
        ValueError: a key of a delta layer that the layout does not have (e.g. a frame-based
            ``<p>.weight``), or a student bias when the model uses the corrected bias.
    """
    return _convert(state, model, source)[0]


def _convert(
    state: Mapping[str, torch.Tensor], model: nn.Module, source: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """-> (converted state dict, converted key -> the checkpoint's key)."""
    layers = delta_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no delta layers; convert it first (convert_to_delta)")
    prefixed = bool(state) and all(k.startswith("model.") for k in state if not k.startswith("loss."))
    stripped = _strip_wrapper(state)
    has_students = set()
    for key in stripped:
        split = _split(key, layers)
        if split and split[1].startswith("g_Wa."):
            has_students.add(split[0])
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in stripped.items():
        original_key = f"model.{key}" if prefixed else key
        split = _split(key, layers)
        if split is None:
            out[key], origin[key] = value, original_key
            continue
        prefix, rest = split
        if rest.startswith("g_W.") and prefix in has_students:
            continue  # the alias of g_Wa or g_Wb registered by the original's first .eval()
        new = _rename(rest, _RENAMES if prefix in has_students else _DEPLOYED_RENAMES + _RENAMES)
        if new is None:
            raise ValueError(
                f"{source}: key '{original_key}' is not in the delta-distilled layout (<layer>.W.*, g_Wa.*, "
                "g_Wb.0/1.*, g_gate.bias, g_W.*); a frame-based checkpoint loads with load_frame_based_state_dict"
            )
        if new.startswith("student") and new.endswith(".bias") and layers[prefix].bias_mode != "original":
            raise ValueError(
                f"{source}: key '{original_key}' is a student bias, which the original adds on every delta "
                "frame; build the model with convert_to_delta(..., bias_mode='original') to load it"
            )
        if new == "gate.logit" and value.dim() != 0:
            raise ValueError(
                f"{source}: key '{original_key}' should be a 0-dim gate logit, has shape {tuple(value.shape)}"
            )
        out[f"{prefix}.{new}"], origin[f"{prefix}.{new}"] = value, original_key
    return out, origin


def _check_ranks(
    converted: Mapping[str, torch.Tensor], origin: Mapping[str, str], model: nn.Module, source: str
):
    """A low-rank student of another rank means another factor_ch/reduction: say so, by the checkpoint's key."""
    expected = model.state_dict()
    for key, value in converted.items():
        if re.search(r"\.(student_lowrank|student)\.vertical\.weight$", key) and key in expected:
            have, want = value.shape[0], expected[key].shape[0]
            if have != want:
                raise CheckpointMismatchError(
                    f"{source} (its key '{origin[key]}' is a rank-{have} low-rank student where the model has "
                    f"rank {want}; build the model with the checkpoint's factor_ch / reduction)",
                    [],
                    [],
                    [(origin[key], tuple(value.shape), tuple(expected[key].shape))],
                )


def load_original_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = ""
) -> None:
    """Load a delta-distilled state dict (training or deployed layout) into ``model``, strictly.

    A deployed checkpoint first deploys ``model``'s layers to the checkpoint's students (each
    layer's ``g_W`` shape says which); loading it into an already deployed model with other
    choices fails on the shapes.
    """
    source = source or "<state dict>"
    converted, origin = _convert(state, model, source)
    for name, layer in delta_layers(model).items():
        if layer.deployed:
            continue
        if f"{name}.student.weight" in converted:
            layer.force = "full"
            layer.deploy()
        elif f"{name}.student.vertical.weight" in converted:
            layer.force = "lowrank"
            layer.deploy()
    _check_ranks(converted, origin, model, source)
    load_checked(model, converted, source=source)


def load_original_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Read an authors' delta-distilled checkpoint file and load it (see :func:`load_original_state_dict`)."""
    load_original_state_dict(
        model, read_state_dict(path, expected="a delta-distilled checkpoint"), source=str(path)
    )


def load_frame_based_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = ""
) -> None:
    """Load a plain network's state dict into its converted model: the convolutions become the
    teachers, the students are re-initialised from them (copy; truncated SVD), gates are kept.
    Strict: every key of the plain network must be there and nothing else."""
    source = source or "<state dict>"
    layers = delta_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no delta layers; load the state dict directly")
    renamed = {}
    for key, value in _strip_wrapper(state).items():
        split = _split(key, layers)
        if split is not None and split[1] not in ("weight", "bias"):
            raise ValueError(
                f"{source}: key '{key}' belongs to a delta layer's submodule, not to a plain convolution; "
                "a delta-distilled checkpoint loads with load_original_state_dict"
            )
        renamed[key if split is None else f"{split[0]}.teacher.{split[1]}"] = value
    allow = [f"{name}.{part}*" for name in layers for part in ("student", "gate.")]
    load_checked(model, renamed, allow_missing=allow, source=source)
    for layer in layers.values():
        if not layer.deployed:
            layer.init_students()


_LAYER_KEY = re.compile(
    r"^(?P<layer>.+?)\.(?P<rest>(?:W|g_Wa|g_Wb\.[01]|g_W(?:\.[01])?)\.(?:weight|bias)|g_gate\.bias)$"
)


@register_converter(KIND, "original")
def original_to_effvid(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The core's converter hook (``load_weights(..., fmt="original")``): a delta-distilled state
    dict in the training layout renamed without a model (the layers are found by their keys).
    The deployed layout needs the model deployed first: :func:`load_original_checkpoint` does it."""
    stripped = _strip_wrapper(state)
    matches = {k: _LAYER_KEY.match(k) for k in stripped}
    with_students = {m["layer"] for m in matches.values() if m and m["rest"].startswith("g_Wa.")}
    out = {}
    for key, value in stripped.items():
        m = matches[key]
        if m is None:
            out[key] = value
            continue
        layer, rest = m["layer"], m["rest"]
        if rest.startswith("g_W."):
            if layer in with_students:
                continue  # the alias of one student, registered by the original's first .eval()
            raise ValueError(
                f"key '{key}' is of a deployed checkpoint; convert it with deltadist-convert "
                "(load_original_checkpoint deploys the model to the checkpoint's students first)"
            )
        out[f"{layer}.{_rename(rest, _RENAMES)}"] = value
    return out
