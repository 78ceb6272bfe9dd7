"""The authors' checkpoints (blackfeather-wang/AdaFocus, implementation A) -> :class:`AdaFocus`.

A ``checkpoint.pth.tar`` of the original holds ``model_state_dict`` (the whole ``GFV``) and the
sub-dicts the original actually loads from: ``glancer``, ``focuser``, ``fc`` and ``policy``. In the
``GFV`` layout

* ``glancer.net.*`` is torchvision's MobileNetV2, its stage-0 head ``classifier.1``;
* ``focuser.net.*`` is torchvision's ResNet-50, its stage-0 head ``fc``;
* the policy appears twice, ``focuser.policy.policy.*`` and ``focuser.policy.policy_old.*``
  (PPO's two copies; the original acts with ``policy_old``), and the file's ``policy`` entry is a
  third copy (which the original's stage 3 loads into both);
* ``classifier.{gru,fc}.*`` is the recurrent classifier.

Conversion renames every key, keeps one policy copy (by default all copies must be equal, else an
error names the first differing key) and loads strictly: a missing, unexpected or mis-shaped key
is an error listing all of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from adafocus.model import AdaFocus
from effvid.checkpoint import load_checked, remap_state_dict
from effvid.model_files import CONVERTERS, read_torch_file, register_converter

__all__ = [
    "POLICY_COPIES",
    "convert_original_state_dict",
    "load_original_checkpoint",
    "read_original_checkpoint",
]

# Prefixes under which the original stores the policy; "policy." is the file's separate entry.
POLICY_COPIES = ("focuser.policy.policy_old.", "focuser.policy.policy.", "policy.")

RULES = [
    (r"^glancer\.net\.classifier\.1\.", "glance.head."),
    (r"^glancer\.net\.", "glance."),
    (r"^focuser\.net\.fc\.", "focus.head."),
    (r"^focuser\.net\.", "focus."),
    (r"^classifier\.", "classifier."),
]
POLICY_RULES = [
    (r"^actor\.0\.", "policy.actor."),
    (r"^critic\.0\.", "policy.critic."),
    (r"^", "policy."),
]


def _policy_copies(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    copies: dict[str, dict[str, torch.Tensor]] = {}
    for prefix in POLICY_COPIES:
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            copies[prefix] = sub
    return copies


@register_converter("adafocus", "original")
def convert_original_state_dict(
    state: Mapping[str, torch.Tensor], *, policy_copy: str | None = None, source: str = ""
) -> dict[str, torch.Tensor]:
    """Rename an original ``GFV`` state dict (optionally with the file's ``policy.*`` copy) to ours.

    Args:
        state: original keys -> tensors.
        policy_copy: which policy copy to keep (one of :data:`POLICY_COPIES`); ``None`` keeps
            ``policy_old`` (the copy that acts) and requires every present copy to equal it.
        source: the file name, for error messages.
    """
    where = f" in {source}" if source else ""
    copies = _policy_copies(state)
    if policy_copy is not None:
        if policy_copy not in POLICY_COPIES:
            raise ValueError(f"policy_copy must be one of {POLICY_COPIES}, got {policy_copy!r}")
        if policy_copy not in copies:
            raise KeyError(f"no policy copy under '{policy_copy}'{where}; present: {sorted(copies)}")
        chosen = copies[policy_copy]
    elif copies:
        first = next(iter(copies))  # POLICY_COPIES order: policy_old first when present
        chosen = copies[first]
        for prefix, other in copies.items():
            for key in sorted(set(chosen) | set(other)):
                a, b = chosen.get(key), other.get(key)
                same_values = (
                    a is not None and b is not None and (a.is_meta or b.is_meta or torch.equal(a, b))
                )
                if a is None or b is None or a.shape != b.shape or not same_values:
                    raise ValueError(
                        f"the policy copies '{first}' and '{prefix}' differ at '{key}'{where}; "
                        "pass policy_copy= to choose one"
                    )
    else:
        chosen = {}
    rest = {k: v for k, v in state.items() if not k.startswith(POLICY_COPIES)}
    out = remap_state_dict(rest, RULES)
    for key, value in remap_state_dict(chosen, POLICY_RULES).items():
        if key in out:
            raise ValueError(f"two checkpoint keys map to '{key}'{where}")
        out[key] = value
    return out


def read_original_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read an original file into the ``GFV`` layout (plus ``policy.*`` for its policy entry).

    Accepts the training checkpoint (its ``glancer`` / ``focuser`` / ``fc`` / ``policy``
    sub-dicts, as the original loads them, else ``model_state_dict``) or a bare ``GFV`` state dict.
    """
    p = Path(path)
    obj = read_torch_file(
        p, expected="an AdaFocus checkpoint ('glancer'/'focuser'/'fc' entries or a state dict)"
    )
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint {p} holds a {type(obj).__name__}, not a dict")
    parts = {"glancer": "glancer.", "focuser": "focuser.", "fc": "classifier.", "policy": "policy."}
    if all(isinstance(obj.get(k), Mapping) for k in ("glancer", "focuser", "fc")):
        state = {}
        for entry, prefix in parts.items():
            if isinstance(obj.get(entry), Mapping):
                state.update({prefix + k: v for k, v in obj[entry].items()})
    elif isinstance(obj.get("model_state_dict"), Mapping):
        state = dict(obj["model_state_dict"])
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = dict(obj)
    else:
        raise ValueError(
            f"checkpoint {p} is not an AdaFocus checkpoint: expected 'glancer'/'focuser'/'fc' entries, "
            f"'model_state_dict' or a state dict; found keys {sorted(map(str, obj))[:8]}"
        )
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"checkpoint {p}: '{bad[0]}' is not a tensor")
    return state


def load_original_checkpoint(
    model: AdaFocus,
    path: str | os.PathLike[str],
    *,
    policy_copy: str | None = None,
    allow_missing_policy: bool = False,
) -> None:
    """Load an authors' checkpoint file into ``model`` (strict; see the module docstring), through
    the converter registered as ``adafocus/original``. ``allow_missing_policy``: a stage-1 file
    (trained on random patches) has no policy; ``model``'s keeps its initialisation."""
    convert = CONVERTERS.get("adafocus/original")
    state = convert(read_original_checkpoint(path), policy_copy=policy_copy, source=str(path))
    load_checked(model, state, allow_missing=("policy.*",) if allow_missing_policy else (), source=str(path))
