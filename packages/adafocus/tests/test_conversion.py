"""The authors' checkpoint layout -> our model: keys, strictness, identical behaviour."""

from __future__ import annotations

import pytest
import torch
from original_reference import OriginalGFV, calibrate_batchnorm, center_actor, randomise

from adafocus.conversion import (
    convert_original_state_dict,
    load_original_checkpoint,
    read_original_checkpoint,
)
from adafocus.model import AdaFocus
from effvid.checkpoint import CheckpointMismatchError, check_state_dict
from effvid.model_files import ModelFileError

SMALL = dict(num_classes=6, patch_size=32, glance_size=64, policy_hidden=32, classifier_hidden=24)


def _ours(**kw):
    args = dict(SMALL, focus="resnet50")
    args.update(kw)
    return AdaFocus(**args)


def _checkpoint(ref: OriginalGFV) -> dict:
    """The dict the original's training script saves (stage 2/3, random_patch=false)."""
    return {
        "epoch": 3,
        "model_state_dict": ref.state_dict(),
        "glancer": ref.glancer.state_dict(),
        "focuser": ref.focuser.state_dict(),
        "fc": ref.classifier.state_dict(),
        "scaler": {},
        "policy": ref.focuser.policy.policy.state_dict(),
        "acc": torch.tensor(71.5),
        "best_acc": torch.tensor(72.0),
        "optimizer": None,
    }


@pytest.fixture(scope="module")
def original():
    """A random original (the released backbones, small recurrent widths) whose policy picks varied positions."""
    ref = randomise(OriginalGFV(focus_arch="resnet50", **SMALL), 0)
    ref.focuser.policy.policy_old.load_state_dict(ref.focuser.policy.policy.state_dict())  # as PPO keeps them
    calibration = torch.Generator().manual_seed(1)
    calibrate_batchnorm(ref.glancer.net.features, torch.randn(16, 3, 64, 64, generator=calibration))
    calibrate_batchnorm(ref.focuser.net, torch.randn(16, 3, 32, 32, generator=calibration))
    ours = _ours().eval()
    ours.load_state_dict(convert_original_state_dict(ref.state_dict()))
    torch.manual_seed(0)
    clips = torch.randn(3, 4, 3, 72, 72)
    center_actor(ours.policy, ours(clips).glance_maps)
    with torch.no_grad():  # write the centred actor back into every policy copy of the original
        for policy in (ref.focuser.policy.policy, ref.focuser.policy.policy_old):
            policy.actor[0].bias.copy_(ours.policy.actor.bias)
    return ref, clips


def test_full_size_checkpoint_keys_and_shapes_map_strictly():
    with torch.device("meta"):
        ref = OriginalGFV()  # MobileNetV2, ResNet-50, 200 classes, 7x7 grid, P = 128: the released layout
        ours = AdaFocus(num_classes=200)
    original = ref.state_dict()
    assert len(original) == 662  # the notes' count, both policy copies included
    assert original["focuser.policy.policy_old.state_encoder.3.weight"].shape == (1024, 1568)
    assert original["glancer.net.classifier.1.weight"].shape == (200, 1280)
    assert original["classifier.gru.weight_ih_l0"].shape == (3072, 3328)
    converted = convert_original_state_dict(original)
    assert len(converted) == 662 - 11  # one policy copy dropped
    check_state_dict(ours, converted)  # raises on any missing, unexpected or mis-shaped key
    assert converted["policy.actor.weight"].shape == (49, 1024) and "glance.head.weight" in converted


def test_converted_checkpoint_behaves_identically(original, tmp_path):
    ref, clips = original
    path = tmp_path / "128s3_checkpoint.pth.tar"
    torch.save(_checkpoint(ref), path)
    ours = _ours()
    load_original_checkpoint(ours, path)
    ours.eval()
    expected_logits, expected_actions = ref.evaluate(clips.flatten(1, 2))  # (B, 3T, H, W) as the original
    with torch.no_grad():
        got = ours(clips)
    assert torch.equal(got.actions, expected_actions)
    assert len(set(expected_actions.flatten().tolist())) >= 4, "the test needs varied positions"
    # 72 - 32 = 40 is not a multiple of 6: floor matters (rows/columns 0, 6, 13, 20, 26, 33, 40)
    assert set(got.top_left.flatten().tolist()) <= {0, 6, 13, 20, 26, 33, 40}
    torch.testing.assert_close(got.logits, expected_logits, rtol=0, atol=1e-4)
    scores, expected_scores = torch.softmax(got.video_logits, 1), torch.softmax(expected_logits[:, -1], 1)
    torch.testing.assert_close(scores, expected_scores, rtol=0, atol=1e-4)
    print(
        f"max |logit diff| {float((got.logits - expected_logits).abs().max()):.2e} of max |logit| {float(expected_logits.abs().max()):.1f}; max score diff {float((scores - expected_scores).abs().max()):.2e}"
    )
    # the bare GFV state dict and the model_state_dict entry load the same weights
    bare = tmp_path / "gfv.pth"
    torch.save(ref.state_dict(), bare)
    assert read_original_checkpoint(bare).keys() == set(ref.state_dict())
    whole_only = tmp_path / "whole.pth"
    torch.save({"epoch": 1, "model_state_dict": ref.state_dict(), "best_acc": torch.tensor(1.0)}, whole_only)
    assert read_original_checkpoint(whole_only).keys() == set(ref.state_dict())
    assert read_original_checkpoint(path).keys() == set(ref.state_dict()) | {
        f"policy.{k}" for k in ref.focuser.policy.policy.state_dict()
    }


def test_converter_is_strict_with_readable_messages(original, tmp_path):
    ref, _ = original
    state = dict(ref.state_dict())
    del state["classifier.fc.bias"]
    state["focuser.net.extra.weight"] = torch.zeros(1)
    state["glancer.net.features.0.0.weight"] = torch.zeros(32, 3, 5, 5)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_original_checkpoint(_ours(), path)
    msg = str(info.value)
    assert "broken.pth does not match the model: 1 missing, 1 unexpected, 1 shape-mismatched" in msg
    assert "missing     classifier.fc.bias" in msg and "unexpected  focus.extra.weight" in msg
    assert "shape       glance.features.0.0.weight: checkpoint (32, 3, 5, 5) vs model (32, 3, 3, 3)" in msg
    # a stage-1 file (random patches) has no policy: every policy key is reported missing
    no_policy = {k: v for k, v in ref.state_dict().items() if ".policy." not in k}
    with pytest.raises(CheckpointMismatchError, match="11 missing") as info:
        load_checked_from(no_policy, tmp_path / "stage1.pth")
    assert "missing     policy.gru.weight_hh_l0" in str(info.value)


def load_checked_from(state, path):
    torch.save(state, path)
    load_original_checkpoint(_ours(), path)


def test_policy_copies_must_agree_unless_one_is_chosen(original):
    ref, _ = original
    state = dict(ref.state_dict())
    state["focuser.policy.policy.gru.bias_hh_l0"] = state["focuser.policy.policy.gru.bias_hh_l0"] + 1
    with pytest.raises(
        ValueError,
        match=r"'focuser.policy.policy_old.' and 'focuser.policy.policy.' differ at 'gru.bias_hh_l0'",
    ):
        convert_original_state_dict(state)
    chosen = convert_original_state_dict(state, policy_copy="focuser.policy.policy.")
    assert torch.equal(chosen["policy.gru.bias_hh_l0"], state["focuser.policy.policy.gru.bias_hh_l0"])
    old = convert_original_state_dict(state, policy_copy="focuser.policy.policy_old.")
    assert torch.equal(old["policy.gru.bias_hh_l0"], state["focuser.policy.policy_old.gru.bias_hh_l0"])
    with pytest.raises(ValueError, match="policy_copy must be one of"):
        convert_original_state_dict(state, policy_copy="policy_old")


def test_not_an_adafocus_file(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"epoch": 1, "net": {"w": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match=r"other.pth is not an AdaFocus checkpoint.*\['epoch', 'net'\]"):
        read_original_checkpoint(path)
    with pytest.raises(
        ModelFileError, match=r"missing\.pth: file not found \(expected an AdaFocus checkpoint"
    ):
        read_original_checkpoint(tmp_path / "missing.pth")
