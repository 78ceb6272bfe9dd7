"""Early-exit inference over an active set: equal to the full forward, per-video MACs checked."""

from __future__ import annotations

import pytest
import torch
from original_reference import center_actor, randomise
from test_model import tiny

from adafocus.cost import measure_unit_costs, video_macs
from adafocus.inference import early_exit, inference_copy
from effvid.flops import crosscheck
from effvid.models.optimize import FastInferenceConfig


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = randomise(tiny(), 5)
    clips = torch.randn(6, 4, 3, 40, 40) * torch.linspace(0.3, 3, 6).view(6, 1, 1, 1, 1)
    center_actor(model.policy, model(clips).glance_maps)
    with torch.no_grad():
        full = model(clips)
    return model, clips, full


def test_without_threshold_equals_the_batched_forward(setup, monkeypatch):
    """Stepping (frames from a step loader) gives the batched forward's result; given whole clips,
    early_exit runs the batched forward itself (one glance call) and returns the same."""
    model, clips, full = setup
    stepped = early_exit(model, lambda active, step: clips[active, step], 6, num_steps=4)
    calls = []
    original = model.glance_frames
    monkeypatch.setattr(model, "glance_frames", lambda frames: calls.append(len(frames)) or original(frames))
    batched = early_exit(model, clips)
    assert calls == [6 * 4]
    for result in (stepped, batched):
        assert result.exit_step.tolist() == [3] * 6 and not result.skipped.any()
        assert torch.equal(result.actions, full.actions) and torch.equal(result.top_left, full.top_left)
        torch.testing.assert_close(result.logits, full.video_logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(result.step_logits, full.logits, rtol=1e-5, atol=1e-5)


def test_confident_videos_leave_early_with_the_same_step_predictions(setup):
    model, clips, full = setup
    conf = torch.softmax(full.logits, 2).amax(2)  # (B, T)
    first = conf[:, 0].sort().values
    threshold = float(first[2] + first[3]) / 2  # half the videos are confident after one frame
    result = early_exit(model, clips, threshold=threshold)
    expected = [next((t for t in range(4) if conf[i, t] >= threshold), 3) for i in range(6)]
    assert result.exit_step.tolist() == expected
    assert len(set(expected)) >= 2, f"the test needs varied exits, got {expected}"
    for i, s in enumerate(expected):
        torch.testing.assert_close(result.logits[i], full.logits[i, s], rtol=1e-5, atol=1e-5)
        assert torch.equal(result.actions[i, : s + 1], full.actions[i, : s + 1])
        assert result.actions[i, s + 1 :].eq(-1).all() and result.top_left[i, s + 1 :].eq(-1).all()
    # per-video MACs: the units of the steps run, as FlopCounterMode measures on batch-1 runs
    costs = measure_unit_costs(model, (40, 40))
    macs = video_macs(result.steps_used, costs)["total"]
    for i in (0, 5):
        crosscheck(
            lambda i=i: early_exit(model, clips[i : i + 1], threshold=threshold), macs[i], what=f"video {i}"
        )


def test_step_loader_decodes_only_active_videos(setup):
    model, clips, _ = setup
    requested = []

    def load_step(active, step):
        requested.append((step, list(active)))
        return clips[active, step]

    result = early_exit(model, load_step, 6, num_steps=4, threshold=0.0)  # everyone exits at step 0
    assert result.exit_step.tolist() == [0] * 6 and requested == [(0, [0, 1, 2, 3, 4, 5])]
    with pytest.raises(ValueError, match="needs batch_size and num_steps"):
        early_exit(model, load_step)


def _with_repeats(clips):
    """Frames 1 and 3 repeat frames 0 and 2: their glance maps are the same (similarity 1)."""
    return clips[:, [0, 0, 2, 2]].clone()


def test_skipped_frames_reach_neither_policy_nor_focus_and_cost_only_the_glance(setup):
    model, clips, _ = setup
    repeated = _with_repeats(clips)
    with torch.no_grad():
        maps = model(repeated).glance_maps.flatten(2)
    assert (torch.cosine_similarity(maps[:, 2], maps[:, 0], dim=1) < 0.999).all(), "test frames too alike"
    calls = {"focus": 0, "policy": 0, "classifier": 0}

    def counter(name):
        def hook(module, args, output):
            calls[name] += args[0].shape[0] if name != "classifier" else args[0].shape[0] * args[0].shape[1]

        return hook

    handles = [
        model.policy.state_encoder.register_forward_hook(counter("policy")),
        model.classifier.register_forward_hook(counter("classifier")),
    ]
    focus_features = model.focus.forward_features  # the focus network runs through this method

    def counted_focus(patches):
        calls["focus"] += patches.shape[0]
        return focus_features(patches)

    model.focus.forward_features = counted_focus
    try:
        result = early_exit(model, repeated, skip_similarity=0.999)
    finally:
        del model.focus.forward_features
        for h in handles:
            h.remove()
    assert result.skipped.tolist() == [[False, True, False, True]] * 6
    assert result.focused_steps.tolist() == [2] * 6 and result.steps_used.tolist() == [4] * 6
    assert calls == {"focus": 12, "policy": 12, "classifier": 12}  # 6 videos x 2 focused frames
    assert result.top_left[:, [1, 3]].eq(-1).all() and result.actions[:, [1, 3]].eq(-1).all()
    # a skipped frame changes nothing: the prediction is that of the clip without the repeats
    with torch.no_grad():
        kept = model(clips[:, [0, 2]])
    torch.testing.assert_close(result.logits, kept.video_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.step_logits[:, 1], result.step_logits[:, 0])
    assert torch.equal(result.actions[:, [0, 2]], kept.actions)
    # cost: 4 glances, 2 x (policy + focus + classifier), as FlopCounterMode measures
    costs = measure_unit_costs(model, (40, 40))
    macs = video_macs(result.steps_used, costs, focused=result.focused_steps)
    expected = 4 * costs["glance"] + 2 * (costs["policy"] + costs["focus"] + costs["classifier"])
    assert float(macs["total"][0]) == expected
    for i in (0, 3):
        crosscheck(
            lambda i=i: early_exit(model, repeated[i : i + 1], skip_similarity=0.999), macs["total"][i]
        )


def test_skipping_with_exit_and_without_similar_frames(setup):
    model, clips, full = setup
    # similarity above 1 is never reached by different frames: nothing is skipped
    plain = early_exit(model, clips, skip_similarity=1.0)
    assert not plain.skipped.any()
    torch.testing.assert_close(plain.logits, full.video_logits, rtol=1e-5, atol=1e-5)
    # -1 skips every frame after the first: one focused step, then the exit at the last step
    everything = early_exit(model, clips, skip_similarity=-1.0)
    assert everything.skipped[:, 1:].all() and not everything.skipped[:, 0].any()
    torch.testing.assert_close(everything.logits, full.logits[:, 0], rtol=1e-5, atol=1e-5)
    # with an exit threshold, a video leaves at its first confident step; skipped steps are
    # still counted as steps reached, not as focused
    conf = torch.softmax(full.logits[:, 0], 1).amax(1)
    threshold = float(conf.median())
    both = early_exit(model, _with_repeats(clips), skip_similarity=0.999, threshold=threshold)
    step_conf = torch.softmax(both.step_logits, 2).amax(2)  # NaN after the exit
    for i in range(6):
        steps = int(both.steps_used[i])
        assert (step_conf[i, : steps - 1] < threshold).all()
        assert steps == 4 or step_conf[i, steps - 1] >= threshold
        assert steps == 1 or conf[i] < threshold
        assert int(both.focused_steps[i]) == (steps + 1) // 2
    assert set(both.steps_used.tolist()) - {1} and 1 in both.steps_used.tolist()
    with pytest.raises(ValueError, match="cosine similarity"):
        early_exit(model, clips, skip_similarity=1.5)


@pytest.mark.parametrize(
    "fast",
    [FastInferenceConfig(), FastInferenceConfig(fold_bn=False), FastInferenceConfig(channels_last=False)],
)
def test_inference_copy_keeps_the_outputs(setup, fast):
    """BatchNorm folded / channels-last glance and focus networks: same positions, logits to rounding,
    on the batched forward and the step-by-step path with skipping and exits; the model untouched."""
    model, clips, full = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quick = inference_copy(model, fast, device=torch.device("cpu"))
    if fast.fold_bn:
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in quick.glance_net.modules())
    with torch.no_grad():
        out = quick(clips)
    assert torch.equal(out.actions, full.actions)
    torch.testing.assert_close(out.video_logits, full.video_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.glance_maps, full.glance_maps, rtol=1e-4, atol=1e-5)
    repeated = _with_repeats(clips)
    a = early_exit(model, repeated, threshold=0.6, skip_similarity=0.999)
    b = early_exit(quick, repeated, threshold=0.6, skip_similarity=0.999)
    assert torch.equal(a.exit_step, b.exit_step) and torch.equal(a.actions, b.actions)
    assert torch.equal(a.focused_steps, b.focused_steps)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_inference_copy_refuses_int8(setup):
    with pytest.raises(ValueError, match=r"adafocus: --fast.int8 is not supported"):
        inference_copy(setup[0], FastInferenceConfig(int8=True), device=torch.device("cpu"))
