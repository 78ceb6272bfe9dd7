"""The AdaFocus network: shapes, full-size parameter counts, batched == frame-by-frame."""

from __future__ import annotations

import pytest
import torch
from original_reference import center_actor, randomise

from adafocus.crop import crop_patches
from adafocus.model import AdaFocus
from effvid.models import get_backbone


def tiny(**kw):
    args = dict(
        num_classes=5,
        glance="tiny_cnn",
        focus="tiny_cnn",
        glance_kwargs={"width": 4},
        focus_kwargs={"width": 4},
        patch_size=16,
        grid=3,
        glance_size=32,
        policy_hidden=12,
        classifier_hidden=10,
        dropout=0.5,
    )
    args.update(kw)
    return AdaFocus(**args)


def test_default_model_has_the_papers_sizes():
    with torch.device("meta"):
        model = AdaFocus(num_classes=200)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert model.policy.map_size == (7, 7) and model.policy.num_actions == 49
    assert count(model.glance) == 2_480_072  # MobileNetV2 + 200-way stage-0 head (the notes' count)
    assert count(model.focus) == 23_917_832
    assert count(model.policy) == 7_996_466
    assert count(model.classifier) == 13_580_488  # GRU(3328 -> 1024) + Linear(1024, 200)
    with torch.device("meta"):
        small_glance = AdaFocus(num_classes=200, glance_size=96, backbone_heads=False)
    assert small_glance.policy.map_size == (3, 3)  # ceil(96 / 32): the state dim follows the glance size
    assert small_glance.policy.state_encoder[3].in_features == 32 * 9


def test_forward_shapes_and_glance_resize():
    torch.manual_seed(0)
    model = tiny().eval()
    clips = torch.randn(2, 4, 3, 40, 48)  # frames larger than the glance size and not square
    out = model(clips)
    assert out.logits.shape == (2, 4, 5) and out.video_logits.shape == (2, 5)
    assert out.actions.shape == (2, 4) and out.top_left.shape == (2, 4, 2)
    assert out.glance_maps.shape == (2, 4, 32, 2, 2)  # tiny_cnn width 4: 32 channels, stride 16
    # positions on the 3x3 grid of a 40x48 frame with 16-px patches: rows {0, 12, 24}, columns {0, 16, 32}
    assert set(out.top_left[..., 0].flatten().tolist()) <= {0, 12, 24}
    assert set(out.top_left[..., 1].flatten().tolist()) <= {0, 16, 32}
    assert out.actions.eq(out.top_left[..., 0] // 12 * 3 + out.top_left[..., 1] // 16).all()
    with pytest.raises(ValueError, match="a 16x16 patch does not fit in 12x40 frames"):
        model(torch.randn(1, 2, 3, 12, 40))
    with pytest.raises(ValueError, match=r"clips must be \(B, T, 3, H, W\)"):
        model(torch.randn(2, 3, 40, 48))


def test_batched_equals_frame_by_frame():
    torch.manual_seed(1)
    model = randomise(tiny(), 2)
    clips = torch.randn(3, 5, 3, 48, 48)
    center_actor(model.policy, model(clips).glance_maps)
    batched = model(clips)
    reference = model.forward_frame_by_frame(clips)
    assert torch.equal(batched.actions, reference.actions)
    assert len(set(batched.actions.flatten().tolist())) >= 3, "the test needs varied positions"
    assert torch.equal(batched.top_left, reference.top_left)
    torch.testing.assert_close(batched.logits, reference.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched.log_probs, reference.log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched.features, reference.features, rtol=1e-5, atol=1e-5)


def test_the_focus_sees_the_full_resolution_patch():
    torch.manual_seed(2)
    model = randomise(tiny(), 3)
    clips = torch.randn(2, 3, 3, 64, 64)
    out = model(clips)
    frames = clips.flatten(0, 1)
    patches = crop_patches(frames, out.top_left.flatten(0, 1), 16)
    expected_local = model.focus.forward_features(patches)
    pooled = model.glance.forward_features(torch.nn.functional.interpolate(frames, size=(32, 32)))
    logits, _ = model.classifier(torch.cat([pooled, expected_local], 1).view(2, 3, -1))
    torch.testing.assert_close(out.logits, logits)


def test_given_patches_skip_the_policy_and_train_focus_and_classifier():
    torch.manual_seed(3)
    model = tiny().train()
    clips = torch.randn(2, 3, 3, 32, 32)
    corners = torch.randint(0, 17, (2, 3, 2))
    out = model(clips, top_left=corners)
    assert out.actions is None and torch.equal(out.top_left, corners)
    loss = torch.nn.functional.cross_entropy(
        out.logits.flatten(0, 1), torch.tensor([1, 2]).repeat_interleave(3)
    )
    loss.backward()
    assert model.focus.stages[0][0][0].weight.grad.abs().sum() > 0
    assert model.classifier.gru.weight_ih_l0.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.policy.parameters())


def test_training_mode_samples_positions_reproducibly():
    model = randomise(tiny(), 4)
    clips = torch.randn(4, 6, 3, 32, 32)
    center_actor(model.policy, model(clips).glance_maps)
    model.train()
    a = model(clips, generator=torch.Generator().manual_seed(0)).actions
    b = model(clips, generator=torch.Generator().manual_seed(0)).actions
    assert torch.equal(a, b)
    greedy = model(clips, sample=False).actions
    assert not torch.equal(a, greedy)  # 24 draws from 9 positions: sampling differs from the argmax


def test_built_modules_as_backbones():
    glance = get_backbone("tiny_cnn", width=4)
    model = AdaFocus(
        num_classes=3,
        glance=glance,
        focus="tiny_cnn",
        focus_kwargs={"width": 2},
        patch_size=16,
        grid=2,
        glance_size=32,
        policy_hidden=8,
        classifier_hidden=8,
    )
    assert model.glance is glance and model.classifier.gru.input_size == 32 + 16
    with pytest.raises(ValueError, match="keyword arguments apply only to a backbone given by name"):
        AdaFocus(num_classes=3, glance=glance, glance_kwargs={"width": 4})


def test_policy_gradients_never_reach_the_glance():
    model = tiny().train()
    out = model(torch.randn(2, 3, 3, 32, 32))
    out.log_probs.sum().backward()
    assert all(p.grad is None for p in model.glance.parameters())
    assert model.policy.actor.weight.grad.abs().sum() > 0
