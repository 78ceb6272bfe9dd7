"""The converted model from its config section, and the weights named by a checkpoint section."""

from __future__ import annotations

from torch import nn

from deltadist.config import CheckpointConfig, ModelConfig
from deltadist.conversion import KIND, load_frame_based_state_dict, load_original_checkpoint
from deltadist.delta import convert_to_delta, delta_layers
from deltadist.models import get_model
from effvid.config import ConfigError
from effvid.model_files import load_weights, read_state_dict

__all__ = ["build_model", "build_teacher", "load_checkpoint"]


def build_teacher(cfg: ModelConfig) -> nn.Module:
    """The plain (frame-based) network."""
    kwargs = {"width": cfg.width} if cfg.arch == "tiny_segnet" else {}
    return get_model(cfg.arch, num_classes=cfg.num_classes, **kwargs)


def build_model(cfg: ModelConfig, teacher: nn.Module | None = None) -> nn.Module:
    """``teacher`` (default: a fresh :func:`build_teacher`) converted in place by the config's rule;
    with ``students`` full / lowrank every layer is forced to that student and its gate frozen."""
    model = build_teacher(cfg) if teacher is None else teacher
    try:
        _convert(model, cfg)
    except ValueError as exc:  # the rule selects nothing, or a layer cannot be converted
        raise ConfigError(f"model ({cfg.arch}): {exc}") from None
    force_students(model, cfg.students)
    return model


def _convert(model: nn.Module, cfg: ModelConfig) -> None:
    convert_to_delta(
        model,
        include=cfg.include,
        exclude=cfg.exclude,
        skip_first=cfg.skip_first,
        skip_last=cfg.skip_last,
        factor_ch=cfg.factor_ch,
        reduction=cfg.reduction,  # type: ignore[arg-type]
        gate_init=cfg.gate_init,
        bias_mode=cfg.bias_mode,  # type: ignore[arg-type]
    )


def force_students(model: nn.Module, students: str) -> None:
    """``"full"`` / ``"lowrank"``: every layer uses that student and its gate does not learn;
    ``"gated"``: the gates choose."""
    for layer in delta_layers(model).values():
        if layer.deployed:
            continue
        layer.force = None if students == "gated" else students  # type: ignore[assignment]
        layer.gate.logit.requires_grad_(students == "gated")


def load_checkpoint(model: nn.Module, cfg: CheckpointConfig) -> None:
    """Load ``cfg.init`` into the converted ``model``, strictly (see ``checkpoint.format``)."""
    if cfg.init is None:
        return
    if cfg.format == "effvid":
        load_weights(model, cfg.init, kind=KIND)
    elif cfg.format == "original":
        load_original_checkpoint(model, cfg.init)
    else:
        state = read_state_dict(cfg.init, expected="a frame-based network's state dict")
        load_frame_based_state_dict(model, state, source=cfg.init)
