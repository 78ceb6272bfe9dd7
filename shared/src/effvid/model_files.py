"""Every model file a user hands over is read here, through one ``torch.load`` call.

Three kinds of file:

* our model files (``model.pt``): ``{"format": "effvid-<kind>-v1", "state_dict", "config"}``,
  written by :func:`save_model`;
* engine training checkpoints (``checkpoints/checkpoint_<iteration>.pt``), read by the engine;
* the authors' checkpoints, turned into our layout by a converter that their package registers
  in :data:`CONVERTERS` under ``"<kind>/<format>"`` (e.g. ``"frameexit/original"``).

Loading is always ``weights_only=True``. A missing, truncated, non-PyTorch or non-weights file is
a :class:`ModelFileError` naming the file and what was expected - never torch's advice to
unpickle arbitrary objects. Weights with a NaN or an infinity are refused, naming the tensor.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effvid.checkpoint import load_checked
from effvid.io import atomic_torch_save
from effvid.registry import Registry

__all__ = [
    "CONVERTERS",
    "ModelFile",
    "ModelFileError",
    "first_nonfinite",
    "load_weights",
    "read_model_file",
    "read_state_dict",
    "read_torch_file",
    "register_converter",
    "save_model",
]

Converter = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
CONVERTERS: Registry[Converter] = Registry("checkpoint converter")


class ModelFileError(ValueError):
    """A model or checkpoint file is missing, unreadable, of the wrong kind, or holds bad values."""


def register_converter(kind: str, fmt: str) -> Callable[[Converter], Converter]:
    """Decorator: ``fn(their_state_dict) -> our_state_dict`` for ``--checkpoint.format fmt`` of ``kind``."""
    return CONVERTERS.register(f"{kind}/{fmt}")


def _numpy_globals() -> list[Any]:
    """Beyond tensors: numpy arrays, dtypes and scalars (the engine's checkpointed RNG states;
    the ``best_top1`` kind of number the originals saved beside their weights)."""
    import numpy as np

    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed it
    dtypes = [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float32, np.float64, np.bool_)]
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def read_torch_file(
    path: str | os.PathLike[str], *, expected: str, map_location: str | torch.device = "cpu"
) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and ``expected``."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: file not found (expected {expected})")
    size = p.stat().st_size
    with p.open("rb") as fh:
        head = fh.read(4)
    if not zipfile.is_zipfile(p):  # torch.save writes zip archives (legacy files: a pickle, b"\x80")
        if size == 0:
            raise ModelFileError(f"{p}: empty (expected {expected})")
        if head.startswith(b"PK"):
            raise ModelFileError(
                f"{p}: truncated or corrupt (an incomplete zip archive; expected {expected})"
            )
        if not head.startswith(b"\x80"):
            raise ModelFileError(
                f"{p}: not a PyTorch file (neither a zip archive nor a pickle; expected {expected})"
            )
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            what = f" (it references {found.group(1)})" if found else ""
            raise ModelFileError(
                f"{p}: holds Python objects other than tensors and containers{what}; effvid loads "
                f"weights only, never arbitrary pickled code (expected {expected})"
            ) from None
        raise ModelFileError(
            f"{p}: not a PyTorch file ({text.splitlines()[0]}; expected {expected})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        raise ModelFileError(
            f"{p}: unreadable or corrupt ({str(exc).splitlines()[0]}; expected {expected})"
        ) from None


def first_nonfinite(state: Mapping[str, Any]) -> str | None:
    """Name of the first floating-point tensor holding a NaN or an infinity, or None."""
    for key, value in state.items():
        if (
            isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ):
            return key
    return None


def _check_finite(state: Mapping[str, Any], source: str) -> None:
    bad = first_nonfinite(state)
    if bad is not None:
        raise ModelFileError(
            f"{source}: tensor '{bad}' holds non-finite values (NaN or infinity); refusing it"
        )


def read_state_dict(
    path: str | os.PathLike[str],
    *,
    expected: str = "a state_dict",
    strip_prefix: str | None = None,
    refuse_ours: str | None = None,
) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is
    unwrapped). ``strip_prefix`` (e.g. ``"module."``) must prefix every key when given.
    ``refuse_ours``: one of our model files is an error, with this hint on how to load it."""
    obj = read_torch_file(path, expected=expected)
    if refuse_ours and isinstance(obj, Mapping) and str(obj.get("format", "")).startswith("effvid-"):
        raise ModelFileError(
            f"{path}: is an effvid model file ({obj['format']}), not {expected}; {refuse_ours}"
        )
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFileError(
            f"{path}: does not hold a state dict (a mapping of names to tensors; expected {expected})"
        )
    state = dict(obj)
    if strip_prefix:
        bad = [k for k in state if not k.startswith(strip_prefix)]
        if bad:
            raise ModelFileError(f"{path}: key '{bad[0]}' lacks the expected prefix '{strip_prefix}'")
        state = {k[len(strip_prefix) :]: v for k, v in state.items()}
    return state


@dataclass(frozen=True)
class ModelFile:
    """A model file of ours: its weights and the resolved config (YAML) of the run that made it."""

    kind: str
    state_dict: dict[str, torch.Tensor]
    config: str


def _format(kind: str) -> str:
    return f"effvid-{kind}-v1"


def save_model(
    model: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike[str], *, kind: str, config: str
) -> None:
    """Atomically write ``{"format": "effvid-<kind>-v1", "state_dict", "config"}``.

    Non-finite weights are refused (a diverged run must not leave a usable-looking model).
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    state = {k: v.detach().cpu() for k, v in state.items()}
    _check_finite(state, str(path))
    atomic_torch_save({"format": _format(kind), "state_dict": state, "config": config}, path)


def read_model_file(path: str | os.PathLike[str], *, kind: str) -> ModelFile:
    """Read one of our ``kind`` model files; another file is an error that says what it is."""
    expected = f"an effvid {kind} model file ({_format(kind)})"
    obj = read_torch_file(path, expected=expected)
    fmt = obj.get("format") if isinstance(obj, Mapping) else None
    if fmt != _format(kind):
        if isinstance(fmt, str) and fmt.startswith("effvid-"):
            raise ModelFileError(f"{path}: is a {fmt} file, not {expected}")
        if isinstance(obj, Mapping) and "trainer" in obj:
            raise ModelFileError(
                f"{path}: is a training checkpoint, not {expected}; the run's model.pt is written when it ends"
            )
        raise ModelFileError(
            f"{path}: is not {expected}; for the authors' checkpoints pass --checkpoint.format "
            f"({', '.join(n.split('/', 1)[1] for n in CONVERTERS.names() if n.startswith(kind + '/')) or 'none known'})"
        )
    state = obj.get("state_dict")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: its 'state_dict' is not a mapping of names to tensors")
    _check_finite(state, str(path))
    return ModelFile(kind, dict(state), str(obj.get("config", "")))


def load_weights(model: nn.Module, path: str | os.PathLike[str], *, kind: str, fmt: str = "effvid") -> None:
    """Load ``path`` into ``model`` strictly: our file of ``kind`` (``fmt="effvid"``) or an authors'
    checkpoint through the converter registered as ``"<kind>/<fmt>"``."""
    if fmt == "effvid":
        state = read_model_file(path, kind=kind).state_dict
    else:
        convert = CONVERTERS.get(f"{kind}/{fmt}")
        state = convert(
            read_state_dict(
                path,
                expected=f"an authors' {kind} checkpoint in the '{fmt}' layout",
                refuse_ours="load it with --checkpoint.format effvid",
            )
        )
        _check_finite(state, str(path))
    load_checked(model, state, source=str(path))
