"""The one exception type of the data layer: bad or missing input, named precisely."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(RuntimeError):
    """A video, frame, file or key is missing or unreadable. The message names it and what was expected."""
