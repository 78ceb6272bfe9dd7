"""Plain dict registries (torchvision's ``register_model`` idea), one per kind of thing.

Backbones, storages, list formats, frame samplers, preprocessing styles and checkpoint
converters are each looked up by name in a :class:`Registry`; a package adds its own entries by
decorating a builder, without editing the core::

    STORAGES = Registry("storage")

    @STORAGES.register("frames")
    def _frames(path, cfg): ...

    STORAGES.get("lmbd")   # RegistryError: unknown storage 'lmbd'. Did you mean 'lmdb'? Valid: frames, lmdb, video
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry", "RegistryError"]

T = TypeVar("T")


class RegistryError(KeyError, ValueError):
    """An unknown name; the message lists the valid ones. (A ``ValueError`` too, so a config
    schema that checks a name in ``__post_init__`` reports it as a configuration error.)"""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Names -> entries of one kind (``kind`` is used in messages: "unknown storage 'x'")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None, *, replace: bool = False) -> Callable[[T], T]:
        """Register ``entry`` under ``name``; without ``entry``, a decorator. A second entry under
        one name is an error unless ``replace``."""

        def add(obj: T) -> T:
            if name in self._entries and not replace and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = obj
            return obj

        if entry is not None:
            add(entry)
        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def check(self, name: str, *, key: str | None = None) -> str:
        """Return ``name`` if registered, else raise naming the config ``key`` and the valid names."""
        if name not in self._entries:
            prefix = f"{key}: " if key else ""
            raise RegistryError(prefix + self.unknown_message(name))
        return name

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), list(self._entries), n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} '{name}'.{hint} Valid: {', '.join(self.names()) or '(none registered)'}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
