"""The data layer's registries. A package adds its own entries without editing the core::

    from effvid.data import TRANSFORMS

    @TRANSFORMS.register("mystyle")
    def _mystyle(cfg: TransformConfig, train: bool) -> Callable[[Tensor], Tensor]: ...

* ``STORAGES``: name -> ``(path, **options) -> VideoStorage`` (a storage class; its
  ``config_options`` name the ``data.*`` keys that set the options)
* ``FORMATS``: name -> ``(cfg: DataConfig, num_classes) -> Listing`` (the list/annotation reader)
* ``FRAME_SAMPLERS``: name -> ``(cfg: DataConfig, train) -> sampler(num_frames, *, rng) -> indices``
* ``TRANSFORMS``: style -> ``(cfg: TransformConfig, train) -> clip transform``
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from effvid.registry import Registry

__all__ = ["FORMATS", "FRAME_SAMPLERS", "STORAGES", "TRANSFORMS", "FrameSampler", "Listing"]

FrameSampler = Callable[..., Sequence[int]]  # (num_frames, *, rng: np.random.Generator | None)


@dataclass(frozen=True)
class Listing:
    """What a format reader returns: the records, whether labels are multi-hot, the task, a
    storage when the format implies one (Cityscapes' folder layout) and, for segmentation, the
    map from stored mask values to training ids."""

    records: Sequence[Any]
    multi_label: bool = False
    task: str = "classification"
    storage: Any = None
    mask_map: dict[int, int] | None = None


STORAGES: Registry[Callable[..., Any]] = Registry("storage")
FORMATS: Registry[Callable[..., Listing]] = Registry("data format")
FRAME_SAMPLERS: Registry[Callable[..., FrameSampler]] = Registry("frame sampler")
TRANSFORMS: Registry[Callable[..., Callable[[Any], Any]]] = Registry("transform style")
