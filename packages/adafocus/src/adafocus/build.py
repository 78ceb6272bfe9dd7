"""The model from its config section, and the model files that stages hand to each other.

Every stage writes a ``model.pt`` of its own kind (:data:`KINDS`): ``adafocus-stage0`` ...
``adafocus-stage2``, and ``adafocus`` for the final model of stage 3. A stage reads the previous
stage's file only: another kind is an error naming the file and what it holds, as is a file
whose model settings differ from this run's (``model.patch_size`` changes no weight shape, so
a strict state-dict load alone would not notice it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict

import yaml

from adafocus.config import FREE_MODEL_KEYS, CheckpointConfig, ModelConfig
from adafocus.model import AdaFocus
from effvid.checkpoint import load_checked
from effvid.config import ConfigError
from effvid.model_files import ModelFile, ModelFileError, read_model_file, read_torch_file

__all__ = [
    "KIND",
    "KINDS",
    "build_model",
    "load_checkpoint",
    "read_stage_file",
    "stage_of_kind",
]

KINDS = {0: "adafocus-stage0", 1: "adafocus-stage1", 2: "adafocus-stage2", 3: "adafocus"}
KIND = KINDS[3]  # the final model; also what adafocus-convert writes for the authors' final files


def stage_of_kind(kind: str) -> int:
    return next(stage for stage, k in KINDS.items() if k == kind)


def _width_kwargs(name: str, width: float | None, key: str) -> dict:
    if width is None:
        return {}
    if name == "tiny_cnn":
        if width != int(width):
            raise ConfigError(f"{key}: tiny_cnn takes an integer width (channels), got {width}")
        return {"width": int(width)}
    if name == "mobilenet_v2":
        return {"width_mult": float(width)}
    raise ConfigError(f"{key} applies to tiny_cnn and mobilenet_v2 backbones, not '{name}'")


def build_model(cfg: ModelConfig, *, backbone_weights: bool = False) -> AdaFocus:
    """An :class:`AdaFocus` as ``cfg`` describes it (both backbones with stage-0 heads).

    ``backbone_weights``: load ``model.glance_weights`` / ``model.focus_weights`` (stage 0's
    starting point; later stages start from the previous stage's file instead).
    """
    glance_kwargs = _width_kwargs(cfg.glance, cfg.glance_width, "model.glance_width")
    focus_kwargs = _width_kwargs(cfg.focus, cfg.focus_width, "model.focus_width")
    if backbone_weights:
        if cfg.glance_weights:
            glance_kwargs["weights"] = cfg.glance_weights
        if cfg.focus_weights:
            focus_kwargs["weights"] = cfg.focus_weights
    model = AdaFocus(
        num_classes=cfg.num_class,
        glance=cfg.glance.removeprefix("torchvision."),
        focus=cfg.focus.removeprefix("torchvision."),
        patch_size=cfg.patch_size,
        grid=cfg.grid,
        glance_size=cfg.glance_size,
        glance_mode=cfg.glance_mode,
        policy_hidden=cfg.policy_hidden,
        classifier_hidden=cfg.classifier_hidden,
        dropout=cfg.dropout,
        glance_kwargs=glance_kwargs,
        focus_kwargs=focus_kwargs,
    )
    h, w = model.policy.map_size
    if min(h, w) < 2:
        raise ConfigError(
            f"model.glance_size {cfg.glance_size} leaves the {cfg.glance} glance a {h}x{w} feature map: "
            f"the policy could not tell where anything is on its {cfg.grid}x{cfg.grid} grid; "
            "raise model.glance_size"
        )
    return model


def _model_differences(path: str, config_text: str, cfg: ModelConfig) -> list[str]:
    try:
        saved = (yaml.safe_load(config_text) or {}).get("model")
    except yaml.YAMLError:
        saved = None
    if not isinstance(saved, dict):
        raise ModelFileError(f"{path}: its recorded config has no model section to check this run's against")
    ours = asdict(cfg)
    return [
        f"model.{k} {saved.get(k)!r} there, {v!r} here"
        for k, v in ours.items()
        if k not in FREE_MODEL_KEYS and saved.get(k) != v
    ]


def _format_of(path: str | os.PathLike[str]) -> str | None:
    try:
        obj = read_torch_file(path, expected="a model file")
    except ModelFileError:
        return None
    return obj.get("format") if isinstance(obj, dict) else None


def read_stage_file(
    path: str | os.PathLike[str], *, kinds: Sequence[str], purpose: str, model_cfg: ModelConfig | None = None
) -> ModelFile:
    """Our model file of one of ``kinds``; anything else is an error naming the file and what it is.

    ``purpose`` completes "<purpose> needs ...", e.g. "stage 2" or "adafocus-test". With
    ``model_cfg``, the file's model settings must equal it (but for :data:`FREE_MODEL_KEYS`).
    """
    try:
        found = read_model_file(path, kind=kinds[0])
    except ModelFileError:
        fmt = _format_of(path)
        kind = next((k for k in KINDS.values() if fmt == f"effvid-{k}-v1"), None)
        if kind is None:
            raise
        if kind not in kinds:
            needed = " or ".join(f"the output of stage {stage_of_kind(k)} ({k})" for k in kinds)
            raise ModelFileError(
                f"{path}: is the output of stage {stage_of_kind(kind)} ({kind}); {purpose} needs {needed}"
            ) from None
        found = read_model_file(path, kind=kind)
    if model_cfg is not None:
        diff = _model_differences(str(path), found.config, model_cfg)
        if diff:
            raise ModelFileError(
                f"{path}: was trained with other model settings ({'; '.join(diff)}); "
                "give this run the model settings of the stage it continues"
            )
    return found


def load_checkpoint(
    model: AdaFocus,
    cfg: CheckpointConfig,
    *,
    kinds: Sequence[str],
    purpose: str,
    model_cfg: ModelConfig | None = None,
    original_stage: int = 3,
) -> str:
    """Load ``cfg.init`` strictly into ``model``; returns the kind loaded.

    Our files must be of one of ``kinds``; the authors' (``format: original``) go through the
    converter registered as ``adafocus/original`` (a stage-1 file of theirs has no policy yet).
    """
    if cfg.format == "original":
        from adafocus.conversion import load_original_checkpoint

        load_original_checkpoint(model, cfg.init, allow_missing_policy=original_stage == 1)
        return KINDS[original_stage]
    found = read_stage_file(cfg.init, kinds=kinds, purpose=purpose, model_cfg=model_cfg)
    load_checked(model, found.state_dict, source=str(cfg.init))
    return found.kind
