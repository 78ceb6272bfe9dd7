"""Checked loading of state dicts, for our checkpoints and the converters of the authors' ones.

The originals loaded with ``strict=False`` and so hid missing keys. Here loading is strict unless
the caller names (glob patterns) what may be missing or unexpected, and any problem raises one
:class:`CheckpointMismatchError` whose message lists every missing, unexpected and mis-shaped key.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "CheckpointMismatchError",
    "check_state_dict",
    "load_checked",
    "remap_state_dict",
]

Rule = tuple[str, "str | None"]


class CheckpointMismatchError(RuntimeError):
    """A state dict does not fit a model; the message is a table of every problem."""

    def __init__(
        self,
        source: str,
        missing: Sequence[str],
        unexpected: Sequence[str],
        mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
        lines = [
            f"checkpoint {source or '<state dict>'} does not match the model: "
            f"{len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} shape-mismatched key(s)"
        ]
        for key in missing:
            lines.append(f"  missing     {key}")
        for key in unexpected:
            lines.append(f"  unexpected  {key}")
        for key, got, want in mismatched:
            lines.append(f"  shape       {key}: checkpoint {tuple(got)} vs model {tuple(want)}")
        super().__init__("\n".join(lines))


def remap_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    rules: Sequence[Rule] | Callable[[str], str | None],
) -> dict[str, torch.Tensor]:
    """Rename keys. ``rules`` is a callable ``key -> new key | None`` or a list of
    ``(regex, replacement)`` applied in order with :func:`re.sub` (the first that matches wins);
    a ``None`` replacement drops the key. Keys no rule matches are kept. Two keys mapped to one
    name is an error.
    """
    compiled = None if callable(rules) else [(re.compile(p), r) for p, r in rules]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if compiled is None:
            new = rules(key)  # type: ignore[operator]
        else:
            new = key
            for pattern, repl in compiled:
                if pattern.search(key):
                    new = None if repl is None else pattern.sub(repl, key)
                    break
        if new is None:
            continue
        if new in out:
            raise ValueError(f"remapping sends two checkpoint keys to '{new}' (the second is '{key}')")
        out[new] = value
    return out


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def check_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    allow_missing: Sequence[str] = (),
    allow_unexpected: Sequence[str] = (),
    source: str = "",
) -> None:
    """Raise :class:`CheckpointMismatchError` unless every key and shape fits ``model``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not _matches(k, allow_missing)]
    unexpected = [k for k in state_dict if k not in expected and not _matches(k, allow_unexpected)]
    mismatched = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, missing, unexpected, mismatched)


def load_checked(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    allow_missing: Sequence[str] = (),
    allow_unexpected: Sequence[str] = (),
    source: str = "",
) -> None:
    """Check (see :func:`check_state_dict`) then load; allowed-unexpected keys are ignored."""
    check_state_dict(
        model, state_dict, allow_missing=allow_missing, allow_unexpected=allow_unexpected, source=source
    )
    expected = model.state_dict()
    model.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=not allow_missing)
