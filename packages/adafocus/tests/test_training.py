"""The per-stage training steps: what each trains, what stays frozen, the losses and rewards."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from original_reference import calibrate_batchnorm, center_actor, randomise
from test_model import tiny

from adafocus.crop import crop_patches
from adafocus.steps import (
    BackbonePretrainStep,
    ClassifierStep,
    DifferentiablePolicyStep,
    PolicyStep,
    WarmUpStep,
    step_cross_entropy,
)


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    model = randomise(tiny(), 6)
    video = torch.randn(3, 4, 3, 40, 40)
    center_actor(model.policy, model(video).glance_maps)
    return model, {"video": video, "label": torch.tensor([0, 3, 4])}


def _grads(model):
    return {
        name.split(".")[0]
        for name, p in model.named_parameters()
        if p.grad is not None and p.grad.abs().sum() > 0
    }


def test_step_cross_entropy_averages_every_step():
    logits = torch.zeros(1, 2, 3)
    logits[0, 0, 1] = 10.0
    loss = step_cross_entropy(logits, torch.tensor([1]))
    expected = (F.cross_entropy(logits[0, :1], torch.tensor([1])) + torch.log(torch.tensor(3.0))) / 2
    torch.testing.assert_close(loss, expected)


def test_stage0_trains_one_backbone_on_averaged_frame_logits(setup):
    model, batch = setup
    frames = batch["video"].flatten(0, 1)  # 40 x 40: the focus sees them whole, the glance at 32
    for which, inputs in (("focus", frames), ("glance", F.interpolate(frames, size=(32, 32)))):
        loss, _ = BackbonePretrainStep(model, which).eval()(batch)
        logits = getattr(model, which)(inputs).view(3, 4, -1).mean(1)
        torch.testing.assert_close(loss, F.cross_entropy(logits, batch["label"]))
    step = BackbonePretrainStep(model, "focus")
    step.train()
    assert model.focus.training and not model.glance.training and not model.classifier.training
    step(batch)[0].backward()
    assert _grads(model) == {"focus"}
    assert {id(p) for p in step.trainable_parameters()} == {id(p) for p in model.focus.parameters()}
    with pytest.raises(ValueError, match="which must be 'glance' or 'focus'"):
        BackbonePretrainStep(model, "policy")
    with pytest.raises(ValueError, match="has no classification head"):
        BackbonePretrainStep(tiny(backbone_heads=False), "glance")


def test_stage1_random_patches_train_focus_and_classifier_only(setup):
    model, batch = setup
    step = WarmUpStep(model, generator=torch.Generator().manual_seed(1)).train()
    glance_stats = model.glance.stages[0][0][1].running_mean.clone()
    loss, logs = step(batch)
    loss.backward()
    assert _grads(model) == {"focus", "classifier"}
    assert torch.equal(model.glance.stages[0][0][1].running_mean, glance_stats)  # frozen BN stays put
    assert 0.0 <= logs["acc_last"] <= 1.0 and loss.item() > 0


def test_stage2_rewards_follow_the_original_order(setup):
    model, batch = setup
    step = PolicyStep(model, generator=torch.Generator().manual_seed(2)).train()
    assert model.policy.training and not model.classifier.training and not model.focus.training
    rollout, _ = step.collect(batch)
    assert rollout.states.shape == (4, 3, 32, 2, 2) and rollout.rewards.shape == (4, 3)
    # replay: same draws, then frame by frame as the original's stage-2 loop
    g = torch.Generator().manual_seed(2)
    video, labels = batch["video"], batch["label"]
    with torch.no_grad():
        out = model(video, sample=True, generator=g)
        assert torch.equal(out.actions.t(), rollout.actions)
        random_corners = torch.stack(
            [torch.randint(0, 24, (12,), generator=g), torch.randint(0, 24, (12,), generator=g)], 1
        )
        random_corners = random_corners.view(3, 4, 2)
        hidden, rewards = None, []
        for t in range(4):
            frame = video[:, t]
            pooled = model.glance.forward_features(F.interpolate(frame, size=(32, 32)))
            base_feat = torch.cat(
                [pooled, model.focus.forward_features(crop_patches(frame, random_corners[:, t], 16))], 1
            )
            base_logits, _ = model.classifier.step(base_feat, hidden)  # does not advance the state
            feat = torch.cat(
                [pooled, model.focus.forward_features(crop_patches(frame, out.top_left[:, t], 16))], 1
            )
            logits, hidden = model.classifier.step(feat, hidden)
            p = torch.softmax(logits, 1).gather(1, labels[:, None])[:, 0]
            p_base = torch.softmax(base_logits, 1).gather(1, labels[:, None])[:, 0]
            rewards.append(p - p_base)
    torch.testing.assert_close(rollout.rewards, torch.stack(rewards), rtol=1e-5, atol=1e-6)
    assert rollout.rewards.abs().max() > 1e-4  # policy and random patches do differ
    loss, logs = step(batch)
    loss.backward()
    assert _grads(model) == {"policy"}
    assert logs["approx_kl"] == pytest.approx(0.0, abs=1e-6) and logs["clip_fraction"] == 0.0


def test_stage2_frame_reward_judges_each_patch_from_a_fresh_state(setup):
    model, batch = setup
    seq_rollout, _ = PolicyStep(model, generator=torch.Generator().manual_seed(2)).train().collect(batch)
    step = PolicyStep(model, reward="frame", generator=torch.Generator().manual_seed(2)).train()
    rollout, _ = step.collect(batch)
    assert torch.equal(rollout.actions, seq_rollout.actions)  # same draws, other reward
    g = torch.Generator().manual_seed(2)
    video, labels = batch["video"], batch["label"]
    with torch.no_grad():
        out = model(video, sample=True, generator=g)
        random_corners = torch.stack(
            [torch.randint(0, 24, (12,), generator=g), torch.randint(0, 24, (12,), generator=g)], 1
        ).view(3, 4, 2)
        rewards = []
        for t in range(4):
            frame = video[:, t]
            pooled = model.glance.forward_features(F.interpolate(frame, size=(32, 32)))
            p = {}
            for name, corners in (("policy", out.top_left[:, t]), ("random", random_corners[:, t])):
                feat = torch.cat([pooled, model.focus.forward_features(crop_patches(frame, corners, 16))], 1)
                logits, _ = model.classifier.step(feat, None)  # the zero state at every step
                p[name] = torch.softmax(logits, 1).gather(1, labels[:, None])[:, 0]
            rewards.append(p["policy"] - p["random"])
    torch.testing.assert_close(rollout.rewards, torch.stack(rewards), rtol=1e-5, atol=1e-6)
    # from step 1 on the two rewards differ (the sequence reward sees the classifier's state)
    assert (rollout.rewards[1:] - seq_rollout.rewards[1:]).abs().max() > 1e-4
    torch.testing.assert_close(rollout.rewards[0], seq_rollout.rewards[0])
    with pytest.raises(ValueError, match="reward must be"):
        PolicyStep(model, reward="episode")


def test_stage3_trains_the_classifier_on_argmax_patches(setup):
    model, batch = setup
    step = ClassifierStep(model).train()
    assert model.classifier.training and not model.policy.training and not model.focus.training
    loss, _ = step(batch)
    loss.backward()
    assert _grads(model) == {"classifier"}
    step.eval()
    loss_eval, _ = step(batch)
    with torch.no_grad():
        expected = step_cross_entropy(model(batch["video"]).logits, batch["label"])
    torch.testing.assert_close(loss_eval, expected)


def test_stage1_and_stage3_steps_fit_a_fixed_batch():
    g = torch.Generator().manual_seed(5)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    video = torch.randn(6, 3, 3, 32, 32, generator=g) * 0.5
    video += torch.randn(5, 1, 3, 1, 1, generator=g)[labels] * 2  # a colour per class
    batch = {"video": video, "label": labels}
    for make in (lambda m: WarmUpStep(m, generator=torch.Generator().manual_seed(6)), ClassifierStep):
        torch.manual_seed(4)
        model = tiny(dropout=0.0)
        # statistics as after pre-training: untrained BN would shrink the features to ~1e-4
        calibrate_batchnorm(model.glance, video.flatten(0, 1))
        calibrate_batchnorm(model.focus, torch.randn(16, 3, 16, 16, generator=g))
        step = make(model).train()
        opt = torch.optim.Adam(step.trainable_parameters(), lr=0.01)
        first = step(batch)[0].item()
        for _ in range(25):
            opt.zero_grad()
            loss, _ = step(batch)
            loss.backward()
            opt.step()
        # 1.56 is the best a prediction blind to the videos can do (label frequencies)
        assert first > 1.4 and loss.item() < 0.6, (type(step).__name__, first, loss.item())


def test_differentiable_stage2_trains_the_policy_through_the_crop(setup):
    model, batch = setup
    step = DifferentiablePolicyStep(model, generator=torch.Generator().manual_seed(3)).train()
    assert model.policy.training and not model.focus.training and not model.classifier.training
    loss, logs = step(batch)
    loss.backward()
    assert _grads(model) == {"policy"}  # through the focus network's input, not its weights
    assert 0 < logs["entropy"] <= math.log(9)
    # forward: the classifier's loss on hard patches at the sampled grid points (40-px frames,
    # 16-px patches, a 3x3 grid: corners 0, 12, 24 are whole pixels, so the crops agree exactly)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        maps = model(batch["video"]).glance_maps
        hidden, logits = None, []
        for t in range(maps.shape[1]):
            step_logits, hidden = model.policy.step(maps[:, t], hidden)
            logits.append(step_logits)
        probs = torch.softmax(torch.stack(logits, 1), 2)
        actions = torch.multinomial(probs.flatten(0, 1), 1, generator=g).view(3, 4)
        corners = model.actions_to_top_left(actions, (40, 40))
        expected = step_cross_entropy(model(batch["video"], top_left=corners).logits, batch["label"])
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-5)
    # the expected-position estimator crops between grid points: another loss, gradients still flow
    model.zero_grad()
    soft = DifferentiablePolicyStep(model, estimator="expected").train()
    soft_loss, _ = soft(batch)
    soft_loss.backward()
    assert _grads(model) == {"policy"} and not torch.isclose(soft_loss, loss)
    with pytest.raises(ValueError, match="estimator must be"):
        DifferentiablePolicyStep(model, estimator="gumbel")


def test_stage3_with_the_focus_network(setup):
    model, batch = setup
    step = ClassifierStep(model, train_focus=True).train()
    assert model.focus.training and model.classifier.training and not model.glance.training
    step(batch)[0].backward()
    assert _grads(model) == {"focus", "classifier"}
    assert {id(p) for p in step.trainable_parameters()} == {
        id(p) for part in (model.focus, model.classifier) for p in part.parameters()
    }
