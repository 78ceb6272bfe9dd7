"""Building the model from config, and our checkpoint files (weights + the resolved config)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from effvid.checkpoint import load_checked
from effvid.io import atomic_torch_save
from frameexit.config import CheckpointConfig, ModelConfig
from frameexit.conversion import load_original_checkpoint
from frameexit.model import FrameExitModel

__all__ = ["build_model", "load_weights", "save_model"]

FORMAT = "effvid-frameexit-v1"


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


def save_model(model: FrameExitModel, path: str | os.PathLike[str], *, config_yaml: str) -> None:
    """Atomically write ``{"format", "state_dict", "config"}``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({"format": FORMAT, "state_dict": state, "config": config_yaml}, path)


def load_weights(model: FrameExitModel, cfg: CheckpointConfig) -> None:
    """Load ``cfg.init`` (our format, or the authors' with ``format=original``), strictly."""
    if cfg.init is None:
        return
    path = Path(cfg.init)
    if cfg.format == "original":
        load_original_checkpoint(model, path)
    elif cfg.format == "effvid":
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
            raise ValueError(
                f"{path} is not a frameexit checkpoint (format '{FORMAT}'); "
                "for the authors' .pth files use --checkpoint.format original"
            )
        load_checked(model, obj["state_dict"], source=str(path))
    else:
        raise ValueError(f"checkpoint.format must be effvid or original, got '{cfg.format}'")
