"""The model from its config section, and the weights named by a checkpoint section."""

from __future__ import annotations

from effvid.model_files import load_weights
from frameexit.config import CheckpointConfig, ModelConfig
from frameexit.conversion import KIND
from frameexit.model import FrameExitModel

__all__ = ["build_model", "load_checkpoint"]


def build_model(cfg: ModelConfig, *, num_frames: int) -> FrameExitModel:
    kwargs = {"width": cfg.backbone_width} if cfg.backbone_width else {}
    return FrameExitModel(
        backbone=cfg.backbone.removeprefix("torchvision."),
        num_classes=cfg.num_class,
        num_frames=num_frames,
        hidden=cfg.hidden,
        first_threshold=cfg.first_threshold,
        gate_threshold=cfg.gate_threshold,
        backbone_kwargs=kwargs,
    )


def load_checkpoint(model: FrameExitModel, cfg: CheckpointConfig) -> None:
    """Load ``cfg.init`` (our model.pt, or the authors' with ``format=original``), strictly."""
    if cfg.init is not None:
        load_weights(model, cfg.init, kind=KIND, fmt=cfg.format)
