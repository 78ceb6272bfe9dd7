"""Command schemas: defaults, stage choice, geometry errors naming the key, backbone widths."""

from __future__ import annotations

import fire
import pytest
import torch

from adafocus.build import build_model
from adafocus.cli import TEST, TRAIN
from adafocus.config import ModelConfig, TrainConfig
from effvid.config import ConfigError, load_config


def _load(**overrides):
    return load_config(TrainConfig, [], {"data.path_frame": "x", **overrides})


def test_defaults_are_the_papers_recipe():
    cfg = _load()
    assert (cfg.model.glance, cfg.model.focus, cfg.model.patch_size, cfg.model.grid) == (
        "mobilenet_v2",
        "resnet50",
        128,
        7,
    )
    assert cfg.model.glance_size == 224 and cfg.model.classifier_hidden == cfg.model.policy_hidden == 1024
    assert (cfg.data.sampler, cfg.data.num_frames, cfg.data.batch_size) == ("segments", 16, 64)
    assert (cfg.data.transform.crop, cfg.data.transform.train_crop) == (224, "multiscale")
    assert (cfg.ppo.gamma, cfg.ppo.clip, cfg.ppo.value_coef, cfg.ppo.entropy_coef) == (0.7, 0.2, 0.5, 0.01)
    assert cfg.ppo.epochs > 1  # several update epochs per rollout; --ppo.epochs 1 is the original's
    assert (cfg.lr.stage0, cfg.lr.stage1_focus, cfg.lr.stage1_classifier, cfg.lr.policy) == (
        0.01,
        5e-4,
        0.05,
        3e-4,
    )
    assert (
        cfg.lr.stage3_classifier == 0.005
        and cfg.optim.name == "sgd"
        and cfg.stage0_parts == ["glance", "focus"]
    )
    assert _load(**{"ppo.epochs": 1}).ppo.epochs == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"stage": 4}, "stage must be one of 0, 1, 2, 3; got 4"),
        ({"policy_training": "rl"}, "policy_training must be one of ppo, differentiable"),
        ({"stage0_parts": ["focus", "policy"]}, "stage0_parts must be one of glance, focus; got 'policy'"),
        (
            {"model.patch_size": 256},
            r"model\.patch_size 256 does not fit in the 224x224 frames \(data\.transform\.crop\)",
        ),
        (
            {"model.patch_size": 60, "data.transform.crop": 64, "data.transform.resize": 64},
            r"model\.grid 7 asks for 7 patch positions per side, but a 60-px patch in 64-px frames "
            r"\(data\.transform\.crop\) has only 5 offsets",
        ),
        ({"model.grid": 1}, "model.grid must be >= 2"),
        ({"model.glance_mode": "cubic"}, "model.glance_mode must be one of nearest, bilinear, area"),
        ({"ppo.epochs": 0}, "ppo.epochs must be >= 1"),
        ({"ppo.gamma": 1.5}, r"ppo\.gamma must be in \[0, 1\]"),
        ({"lr.policy": -1.0}, r"lr\.policy must be a finite number >= 0"),
        ({"optim.name": "rmsprop"}, "optim.name must be one of sgd, adam"),
    ],
)
def test_bad_settings_are_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _load(**overrides)


def test_the_grid_needs_as_many_offsets_as_positions():
    assert _load(**{"model.patch_size": 218}).model.patch_size == 218  # offsets 0..6: 7 positions
    with pytest.raises(ConfigError, match="has only 6 offsets and the grid falls on 6 distinct ones"):
        _load(**{"model.patch_size": 219})


def test_glance_too_small_for_a_map_names_the_key():
    cfg = ModelConfig(
        num_class=3,
        glance="tiny_cnn",
        glance_width=4,
        focus="tiny_cnn",
        focus_width=4,
        patch_size=16,
        grid=3,
        glance_size=16,
        policy_hidden=8,
        classifier_hidden=8,
    )
    with pytest.raises(
        ConfigError, match=r"model\.glance_size 16 leaves the tiny_cnn glance a 1x1 feature map"
    ):
        build_model(cfg)
    cfg.glance_size = 32
    assert build_model(cfg).policy.map_size == (2, 2)


def test_backbone_widths():
    cfg = ModelConfig(
        num_class=3,
        glance="mobilenet_v2",
        glance_width=0.25,
        focus="tiny_cnn",
        focus_width=6,
        patch_size=32,
        grid=3,
        glance_size=64,
        policy_hidden=8,
        classifier_hidden=8,
    )
    with torch.device("meta"):
        model = build_model(cfg)
    assert model.glance.features[0][0].out_channels == 8  # 32 x 0.25
    assert model.focus.num_features == 48
    cfg.focus_width = 2.5
    with pytest.raises(ConfigError, match=r"model\.focus_width: tiny_cnn takes an integer width"):
        build_model(cfg)
    cfg.focus, cfg.focus_width = "resnet18", 2
    with pytest.raises(ConfigError, match=r"model\.focus_width applies to tiny_cnn and mobilenet_v2"):
        build_model(cfg)


def test_help_and_print_config(capsys):
    fire.Fire(TRAIN, command=["--help"])
    text = capsys.readouterr().out
    assert "--stage  int  (default: 1)" in text and "--ppo.epochs  int  (default: 4)" in text
    assert "--policy_training" in text and "--stage3_focus" in text
    fire.Fire(TEST, command=["--print_config"])
    assert "exit_threshold: null" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="no weights: give --checkpoint.init"):
        fire.Fire(TEST, command=["--data.path_frame", "x"])
