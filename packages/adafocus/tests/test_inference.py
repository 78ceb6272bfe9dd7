"""Early-exit inference over an active set: equal to the full forward, per-video MACs checked."""

from __future__ import annotations

import pytest
import torch
from original_reference import center_actor, randomise
from test_model import tiny

from adafocus.cost import measure_unit_costs, video_macs
from adafocus.inference import early_exit
from effvid.flops import crosscheck


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = randomise(tiny(), 5)
    clips = torch.randn(6, 4, 3, 40, 40) * torch.linspace(0.3, 3, 6).view(6, 1, 1, 1, 1)
    center_actor(model.policy, model(clips).glance_maps)
    with torch.no_grad():
        full = model(clips)
    return model, clips, full


def test_without_threshold_equals_the_batched_forward(setup):
    model, clips, full = setup
    result = early_exit(model, clips)
    assert result.exit_step.tolist() == [3] * 6
    assert torch.equal(result.actions, full.actions) and torch.equal(result.top_left, full.top_left)
    torch.testing.assert_close(result.logits, full.video_logits, rtol=1e-5, atol=1e-5)


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
