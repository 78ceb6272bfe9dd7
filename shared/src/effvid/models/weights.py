"""Where a backbone's weights come from: nowhere (default), a local file, or a torchvision enum."""

from __future__ import annotations

from pathlib import Path

import torchvision

__all__ = ["resolve_weights"]


def resolve_weights(
    enum: type[torchvision.models.WeightsEnum], weights: str | None
) -> tuple[torchvision.models.WeightsEnum | None, Path | None]:
    """Split ``weights`` into (torchvision enum member, local path); at most one is set.

    ``None`` -> random init. A value naming an existing file -> load it after construction.
    Otherwise it must be a member name of ``enum`` (e.g. ``"IMAGENET1K_V2"`` or ``"DEFAULT"``),
    which torchvision downloads on first use (never done by tests or the default configs).
    """
    if weights is None:
        return None, None
    path = Path(weights)
    if path.is_file():
        return None, path
    try:
        return enum[weights], None
    except KeyError:
        names = ", ".join(m.name for m in enum)
        raise ValueError(
            f"weights '{weights}' is neither an existing state_dict file nor one of {enum.__name__}: {names}"
        ) from None
