"""Layer surgery: swap chosen modules of a built model for new ones made from them.

VideoIQ turns a ResNet's convolutions into quantised ones and its BatchNorms into switchable
ones; Delta Distillation turns every chosen ``Conv2d`` into a delta layer. Both are the same
operation, done once here::

    >>> names = select_modules(net, nn.Conv2d, skip_first=1, skip_last=1)
    >>> replace_modules(net, names, lambda name, conv: DeltaConv(conv))   # returns the names
    >>> revert_modules(net)          # every module with a ``revert()`` goes back

Everything not replaced keeps its parameters, buffers and hooks; a replacement keeps its
position, so ``state_dict`` keys of untouched modules do not change.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from torch import nn

__all__ = ["Revertible", "get_submodule_parent", "replace_modules", "revert_modules", "select_modules"]

Match = type | tuple[type, ...] | Callable[[str, nn.Module], bool] | Sequence[str]


@runtime_checkable
class Revertible(Protocol):
    """A module made by surgery that can give back a plain module (``revert_modules`` uses it)."""

    def revert(self) -> nn.Module: ...


def get_submodule_parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """(parent module, attribute name) of the submodule called ``name`` (``"layer1.0.conv1"``)."""
    if not name:
        raise ValueError("the root module cannot be replaced in place; replace it yourself")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if child not in parent._modules:
        raise KeyError(f"model has no submodule '{name}'")
    return parent, child


def _is_types(match: object) -> bool:
    return isinstance(match, type) or (
        isinstance(match, tuple) and bool(match) and all(isinstance(t, type) for t in match)
    )


def _matcher(match: Match) -> Callable[[str, nn.Module], bool]:
    if _is_types(match):
        return lambda _name, module: isinstance(module, match)  # type: ignore[arg-type]
    if callable(match):
        return match  # type: ignore[return-value]
    names = list(match)  # type: ignore[arg-type]
    return lambda name, _module: name in names


def select_modules(
    model: nn.Module,
    types: type | tuple[type, ...],
    *,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    skip_first: int = 0,
    skip_last: int = 0,
) -> list[str]:
    """Names of the modules of ``types``, in module (registration) order, filtered by rule.

    Args:
        types: module classes to select (``nn.Conv2d``; subclasses count).
        include / exclude: glob patterns on the full module name (``"layer*.conv2"``).
        skip_first / skip_last: leave out that many of the selected modules at each end of the
            order (Delta Distillation's default for segmentation: the first and the last conv).
    """
    found = [
        name
        for name, module in model.named_modules()
        if name
        and isinstance(module, types)
        and any(fnmatch.fnmatchcase(name, p) for p in include)
        and not any(fnmatch.fnmatchcase(name, p) for p in exclude)
    ]
    return found[skip_first : len(found) - skip_last]


def replace_modules(
    model: nn.Module,
    match: Match,
    make: Callable[[str, nn.Module], nn.Module],
    *,
    allow_none: bool = False,
) -> list[str]:
    """Replace every submodule that ``match`` selects by ``make(name, old_module)``.

    Args:
        model: changed in place.
        match: a module class (or tuple of classes), a predicate ``(name, module) -> bool``, or a
            list of full module names (every name must exist).
        make: builds the replacement from the module it replaces (it may keep it inside).
        allow_none: return ``[]`` instead of raising when nothing matches.

    Returns:
        the replaced names, in module order. Modules inside a replaced one are not visited.

    Raises:
        KeyError: a listed name that the model does not have.
        ValueError: nothing matched (unless ``allow_none``), or ``make`` returned a non-module.
    """
    if not _is_types(match) and not callable(match):
        present = dict(model.named_modules())
        missing = [n for n in match if n not in present]  # type: ignore[union-attr]
        if missing:
            raise KeyError(f"model has no submodule(s) {missing}")
    selected = _matcher(match)
    chosen: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(done + ".") for done in chosen):
            continue
        if selected(name, module):
            chosen.append(name)
    if not chosen and not allow_none:
        raise ValueError(f"no module of {type(model).__name__} matches {match!r}; nothing to replace")
    for name in chosen:
        parent, child = get_submodule_parent(model, name)
        old = parent._modules[child]
        new = make(name, old)
        if not isinstance(new, nn.Module):
            raise ValueError(f"replacement for '{name}' is a {type(new).__name__}, not an nn.Module")
        setattr(parent, child, new)
    return chosen


def revert_modules(model: nn.Module, match: Match | None = None) -> list[str]:
    """The inverse of :func:`replace_modules`: every :class:`Revertible` module (that ``match``
    also selects, when given) is replaced by its ``revert()``. Returns the reverted names."""
    selected = _matcher(match) if match is not None else (lambda _n, _m: True)
    return replace_modules(
        model,
        lambda name, module: isinstance(module, Revertible) and selected(name, module),
        lambda _name, module: module.revert(),
        allow_none=True,
    )
