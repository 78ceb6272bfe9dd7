"""Backbone registry: one interface over every registered builder."""

from __future__ import annotations

import pytest
import torch
import torchvision

from effvid.checkpoint import CheckpointMismatchError
from effvid.models import Backbone, get_backbone, list_backbones, register_backbone

EXPECTED_FEATURES = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "mobilenet_v2": 1280,
    "efficientnet_b0": 1280,
    "efficientnet_b3": 1536,
    "tiny_cnn": 128,
}


def test_registry_lists_the_required_backbones():
    assert set(EXPECTED_FEATURES) <= set(list_backbones())


@pytest.mark.parametrize("name", sorted(EXPECTED_FEATURES))
def test_interface_shapes_on_meta(name):
    with torch.device("meta"):
        net = get_backbone(name, num_classes=7).eval()  # eval: stochastic depth makes CPU tensors
    assert isinstance(net, Backbone)
    assert net.num_features == EXPECTED_FEATURES[name]
    x = torch.empty(2, 3, 64, 64, device="meta")
    maps = net.forward_feature_maps(x)
    assert maps.shape[:2] == (2, net.num_features) and maps.dim() == 4
    assert net.forward_features(x).shape == (2, net.num_features)
    assert net(x).shape == (2, 7)
    net.reset_classifier(None)
    assert net(x).shape == (2, net.num_features)
    net.reset_classifier(3)
    assert net.forward_head(net.forward_features(x)).shape == (2, 3)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_scaled_resnet_keeps_torchvision_names_at_a_fraction_of_the_width(name):
    narrow, full = get_backbone(name, width=16), get_backbone(name)
    a, b = narrow.state_dict(), full.state_dict()
    assert list(a) == list(b)  # same modules, same names: surgery and converters see the same net
    assert a["conv1.weight"].shape[0] == 16 and narrow.num_features == full.num_features // 4
    assert a["layer4.0.conv1.weight"].shape[0] == b["layer4.0.conv1.weight"].shape[0] // 4
    x = torch.randn(2, 3, 64, 64)
    assert narrow.eval()(x).shape == (2, narrow.num_features)
    with pytest.raises(ValueError, match="64 wide"):
        get_backbone(name, width=16, weights="DEFAULT")


def test_tiny_cnn_computes_and_pools_the_last_map():
    torch.manual_seed(0)
    net = get_backbone("tiny_cnn", width=8).eval()
    x = torch.randn(3, 3, 32, 32)
    maps = net.forward_feature_maps(x)
    assert maps.shape == (3, 64, 2, 2)
    torch.testing.assert_close(net.forward_features(x), maps.mean(dim=(2, 3)))
    stages = net.forward_stages(x)
    assert list(stages) == ["stages.0", "stages.1", "stages.2", "stages.3"]
    assert stages["stages.1"].shape == (3, 16, 8, 8)


@pytest.mark.parametrize(
    ("name", "builder", "classifier_prefix"),
    [
        ("resnet18", torchvision.models.resnet18, "fc."),
        ("mobilenet_v2", torchvision.models.mobilenet_v2, "classifier."),
    ],
)
def test_torchvision_state_dict_without_classifier_loads_strictly(tmp_path, name, builder, classifier_prefix):
    torch.manual_seed(0)
    reference = builder().eval()
    trunk = {k: v for k, v in reference.state_dict().items() if not k.startswith(classifier_prefix)}
    path = tmp_path / "trunk.pth"
    torch.save(trunk, path)
    net = get_backbone(name, weights=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    # the trunk is torchvision's, so features before the classifier agree exactly
    if name == "resnet18":
        expected = torch.flatten(
            reference.avgpool(torch.nn.Sequential(*list(reference.children())[:-2])(x)), 1
        )
    else:
        expected = reference.features(x).mean(dim=(2, 3))
    torch.testing.assert_close(net.forward_features(x), expected)


def test_mismatched_weights_file_is_a_readable_error(tmp_path):
    state = get_backbone("tiny_cnn", width=8).state_dict()
    path = tmp_path / "w8.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r"w8\.pth does not match.*shape-mismatched") as info:
        get_backbone("tiny_cnn", width=16, weights=str(path))
    assert "stages.0.0.0.weight: checkpoint (8, 3, 3, 3) vs model (16, 3, 3, 3)" in str(info.value)


def test_unknown_backbone_and_weights_names():
    with pytest.raises(KeyError, match=r"unknown backbone 'resnet5'\. Did you mean 'resnet50'"):
        get_backbone("resnet5")
    with pytest.raises(
        ValueError,
        match=r"weights 'IMAGENET_V9' is neither an existing state_dict file nor one of ResNet18_Weights",
    ):
        get_backbone("resnet18", weights="IMAGENET_V9")


def test_register_backbone_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("resnet50")(lambda **kw: None)


@pytest.mark.parametrize(
    ("name", "stages", "last"),
    [
        ("resnet18", ["layer1", "layer2", "layer3", "layer4"], (512, 32)),
        ("tiny_cnn", ["stages.0", "stages.1", "stages.2", "stages.3"], (128, 16)),
        ("mobilenet_v2", [f"features.{i}" for i in range(19)], (1280, 32)),
    ],
)
def test_stage_interface_is_the_same_for_every_family(name, stages, last):
    with torch.device("meta"):
        net = get_backbone(name).eval()
    info = net.feature_info(64)
    assert [s.name for s in info] == stages == list(net.stage_names)
    assert (info[-1].channels, info[-1].reduction) == last
    maps = net.forward_stages(torch.empty(1, 3, 64, 64, device="meta"))
    assert list(maps) == stages and maps[stages[-1]].shape == (1, last[0], 64 // last[1], 64 // last[1])


def test_builders_pass_keywords_to_torchvision():
    with torch.device("meta"):
        dilated = get_backbone("resnet50", replace_stride_with_dilation=[False, False, True])
        frozen = get_backbone("resnet18", norm_layer=torchvision.ops.FrozenBatchNorm2d)
    assert dilated.feature_info(64)[-1].reduction == 16  # DC5: the last stage keeps stride 16
    assert isinstance(frozen.bn1, torchvision.ops.FrozenBatchNorm2d)
    with pytest.raises(TypeError):
        get_backbone("resnet18", no_such_option=1)
