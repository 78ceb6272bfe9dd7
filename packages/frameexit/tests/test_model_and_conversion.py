"""Model shapes, exit rules, the authors' checkpoint converter, batched vs batch-1 equivalence."""

from __future__ import annotations

import copy

import pytest
import torch
from original_reference import OriginalFrameExit, randomise

from effvid.checkpoint import CheckpointMismatchError, check_state_dict
from effvid.flops import crosscheck
from effvid.models.optimize import FastInferenceConfig, optimize_for_inference
from frameexit import FrameExitModel
from frameexit.conversion import convert_original_state_dict, load_original_checkpoint
from frameexit.inference import (
    ExitGuard,
    FrameFeatures,
    early_exit,
    guard_margins,
    measure_unit_costs,
    video_macs,
)
from frameexit.losses import gate_pseudo_labels, step_losses


def tiny(**kw):
    args = dict(backbone="tiny_cnn", backbone_kwargs={"width": 4}, num_classes=5, num_frames=4, hidden=16)
    args.update(kw)
    return FrameExitModel(**args)


def test_training_forward_shapes():
    model = tiny()
    logits, gates, z = model(torch.randn(3, 4, 3, 32, 32))
    assert logits.shape == (3, 4, 5) and gates.shape == (3, 3) and z.shape == (3, 4, 16)
    assert torch.all(z[:, 1:] >= z[:, :-1])  # running max never decreases
    assert len(model.gates) == 3 and len(model.classifiers) == 4
    with pytest.raises(ValueError, match="expected 4 frames per video, got 5"):
        model(torch.randn(1, 5, 3, 32, 32))


def test_gate_pseudo_labels_hand_computed():
    # columns are 0-based steps 1, 2: tolerance beta * exp(2/2), beta * exp(3/2)
    ce = torch.tensor([[0.26, 0.4], [0.3, 0.5]])
    labels = gate_pseudo_labels(ce, beta=0.1)  # tolerances 0.2718, 0.4482
    assert labels.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    ce_step = step_losses(torch.tensor([[[10.0, 0.0], [0.0, 0.0]]]), torch.tensor([0]))
    assert ce_step[0, 0] == pytest.approx(4.54e-5, rel=1e-2) and ce_step[0, 1] == pytest.approx(
        0.6931, rel=1e-3
    )
    multi = step_losses(torch.zeros(1, 1, 4), torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    assert multi[0, 0] == pytest.approx(1.3863, rel=1e-3)  # -log(1/4) under a uniform prediction


def _original_pair(seed=0, first_threshold=None, **kw):
    ref = randomise(OriginalFrameExit(**kw), seed)
    model = FrameExitModel(
        backbone=kw["backbone"], num_classes=kw["num_class"], num_frames=kw["num_frames"], hidden=kw["hidden"]
    ).eval()
    load = convert_original_state_dict({f"module.{k}": v for k, v in ref.state_dict().items()})
    check_state_dict(model, load)
    model.load_state_dict(load)
    return ref, model


def _original_with_varied_exits():
    """A re-created original (ResNet-18) and our converted copy, with the step-0 threshold
    between two videos' confidences so that some exit at once and others continue."""
    kw = dict(backbone="resnet18", num_class=6, num_frames=5, hidden=32)
    ref, model = _original_pair(**kw)
    videos = torch.randn(8, 5, 3, 48, 48)
    with torch.no_grad():
        conf = torch.stack(
            [
                torch.softmax(ref.classifiers[0](ref.mlp(torch.flatten(ref.backbone(v[:1]), 1))), 1).max()
                for v in videos
            ]
        )
    ranked = conf.sort().values  # between two videos' confidences: last-bit differences cannot flip one
    threshold = float(ranked[3] + ranked[4]) / 2
    ref.first_threshold = model.first_threshold = threshold
    return ref, model, videos


def test_converted_checkpoint_behaves_identically_to_the_original():
    ref, model, videos = _original_with_varied_exits()
    expected = [ref.run_video(v) for v in videos]
    result = early_exit(model, lambda active, step: videos[active, step], len(videos))
    steps = [s for s, _ in expected]
    assert result.exit_step.tolist() == steps
    assert len(set(steps)) >= 2, f"the test needs varied exits, got {steps}"
    torch.testing.assert_close(result.probs, torch.stack([p for _, p in expected]), rtol=1e-4, atol=1e-6)


def test_fast_frame_network_keeps_the_originals_outputs():
    """BatchNorm folded + channels-last (the inference default): the original's exits, and its
    probabilities within 1e-4."""
    ref, model, videos = _original_with_varied_exits()
    expected = [ref.run_video(v) for v in videos]
    fast = optimize_for_inference(FrameFeatures(model), FastInferenceConfig(), device=torch.device("cpu"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    result = early_exit(model, lambda active, step: videos[active, step], len(videos), features=fast)
    assert result.exit_step.tolist() == [s for s, _ in expected]
    torch.testing.assert_close(result.probs, torch.stack([p for _, p in expected]), rtol=1e-4, atol=1e-5)


def _model_with_close_decisions(seed=0):
    """A tiny model whose step-0 threshold and step-1 gate bias each sit halfway between two
    videos' exact scores, so that a small error in the features flips some decisions."""
    torch.manual_seed(seed)
    model = tiny(num_frames=4).eval()
    brightness = torch.linspace(-2, 2, 12)[torch.randperm(12)].view(12, 1, 1, 1, 1)  # spreads the scores
    videos = torch.randn(12, 4, 3, 32, 32) * 0.5 + brightness + torch.randn(12, 4, 1, 1, 1)
    for m in model.modules():  # BatchNorm statistics of these videos: features that differ between them
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.train()
    with torch.no_grad():
        model.frame_features(videos.flatten(0, 1))
        model.eval()
        h = torch.stack([model.frame_features(v) for v in videos])
        z = torch.cummax(h, dim=1).values
        conf = torch.softmax(model.classify(z[:, 0], 0), 1).amax(1).sort().values
        model.first_threshold = float(conf[5] + conf[6]) / 2
        gate = model.gates[0](z[:, 1], z[:, 0]).sort().values
        model.gates[0].linear.bias -= float(gate[5] + gate[6]) / 2
    return model, videos, h


def test_exit_guard_keeps_the_exact_exits_of_an_approximate_frame_network():
    model, videos, h = _model_with_close_decisions()
    shift = 0.1 * h.std(dim=(0, 1)) * torch.randn(h.shape[-1], generator=torch.Generator().manual_seed(0))

    def approx(frames):
        return model.frame_features(frames) + shift

    def run(guard=None, ids=range(12)):
        ids = list(ids)
        return early_exit(model, lambda a, s: videos[ids][a, s], len(ids), features=approx, guard=guard)

    exact = early_exit(model, lambda a, s: videos[a, s], 12)
    unguarded = run()
    assert (unguarded.exit_step != exact.exit_step).any(), "the approximation must flip a decision"
    assert not unguarded.rechecked.any()
    approx_h = torch.stack([approx(v) for v in videos])
    margins = guard_margins(model, h, approx_h, factor=1.5)
    assert len(margins) == 3 and min(margins) > 0
    guarded = run(ExitGuard(model.frame_features, margins))
    assert guarded.exit_step.tolist() == exact.exit_step.tolist()
    assert 0 < int(guarded.rechecked.sum()) < 12  # some videos re-decided, not all
    again = guarded.rechecked
    torch.testing.assert_close(guarded.probs[again], exact.probs[again], rtol=1e-5, atol=1e-6)
    far = ~again  # never re-decided: their probabilities are the approximation's
    torch.testing.assert_close(guarded.probs[far], unguarded.probs[far], rtol=1e-5, atol=1e-6)
    for i in range(12):  # a batch mixing exact and approximate videos gives each video's own result
        one = run(ExitGuard(model.frame_features, margins), ids=[i])
        assert int(one.exit_step[0]) == int(guarded.exit_step[i])
        assert bool(one.rechecked[0]) == bool(guarded.rechecked[i])
        torch.testing.assert_close(one.probs[0], guarded.probs[i], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="finite logit distances >= 0"):
        ExitGuard(model.frame_features, [0.1, -1.0, 0.1])


def test_exit_scores_are_the_decisions_logits():
    model, videos, h = _model_with_close_decisions()
    z = torch.cummax(h, dim=1).values
    with torch.no_grad():
        logits = model.classify(z[:, 0], 0)
        score0 = model.exit_score(z[:, 0], None, 0, logits)
        p = torch.softmax(logits.double(), 1).amax(1)
        torch.testing.assert_close(score0, torch.log(p / (1 - p)))
        assert torch.equal(score0 > model.threshold_logit(0), model.exit_decision(z[:, 0], None, 0, logits))
        score1 = model.exit_score(z[:, 1], z[:, 0], 1)
        assert torch.equal(score1 > model.threshold_logit(1), model.exit_decision(z[:, 1], z[:, 0], 1))
    model.first_threshold, model.gate_threshold = 1.0, 0.0
    assert model.threshold_logit(0) == float("inf") and model.threshold_logit(1) == float("-inf")


def test_full_size_checkpoint_keys_and_shapes_map_strictly():
    with torch.device("meta"):
        ref = OriginalFrameExit()  # ResNet-50, 4096, 200 classes, 10 frames: the released layout
        ours = FrameExitModel(backbone="resnet50", num_classes=200)
    original = {f"module.{k}": v for k, v in ref.state_dict().items()}
    assert len(original) == 489
    assert original["module.exit_selector.8.conv1.weight"].shape == (128, 4096, 1, 1)
    assert original["module.backbone.7.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert original["module.classifiers.9.weight"].shape == (200, 4096)
    check_state_dict(ours, convert_original_state_dict(original))  # raises on any mismatch


def test_converter_is_strict_with_a_readable_message(tmp_path):
    ref = randomise(OriginalFrameExit(backbone="resnet18", num_class=3, num_frames=3, hidden=8), 1)
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    del state["module.classifiers.2.bias"]
    state["module.extra_head.weight"] = torch.zeros(1)
    state["module.mlp.layers.0.weight"] = torch.zeros(8, 100)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    model = FrameExitModel(backbone="resnet18", num_classes=3, num_frames=3, hidden=8)
    with pytest.raises(CheckpointMismatchError) as info:
        load_original_checkpoint(model, path)
    msg = str(info.value)
    assert "broken.pth does not match the model: 1 missing, 1 unexpected, 1 shape-mismatched" in msg
    assert "missing     classifiers.2.bias" in msg and "unexpected  extra_head.weight" in msg
    assert "shape       mlp.0.weight: checkpoint (8, 100) vs model (8, 512)" in msg


def test_batched_equals_batch_one_and_macs_match_flop_counter():
    torch.manual_seed(0)
    model = randomise(tiny(), 3)
    videos = torch.randn(7, 4, 3, 32, 32) * torch.linspace(0.2, 3, 7).view(7, 1, 1, 1, 1)
    with torch.no_grad():  # thresholds between observed values, so that exits vary
        logits, gates, _ = model(videos)
    conf = torch.softmax(logits[:, 0], 1).amax(1).sort().values
    model.first_threshold = float(conf[4] + conf[5]) / 2
    gate_p = torch.sigmoid(gates[:, 0]).sort().values
    model.gate_threshold = float(gate_p[2] + gate_p[3]) / 2
    batched = early_exit(model, lambda active, step: videos[active, step], 7)
    assert len(set(batched.exit_step.tolist())) >= 2
    costs = measure_unit_costs(model, (3, 32, 32))
    macs = video_macs(batched.exit_step, costs, model.num_frames)
    for i in range(7):
        one = early_exit(model, lambda active, step, i=i: videos[i : i + 1][active, step], 1)
        assert one.exit_step.item() == batched.exit_step[i].item()
        torch.testing.assert_close(one.probs[0], batched.probs[i], rtol=1e-5, atol=1e-6)
        crosscheck(
            lambda i=i: early_exit(model, lambda a, s: videos[i : i + 1][a, s], 1),
            macs["total"][i],
            what=f"video {i}",
        )
    assert torch.equal(macs["backbone"], batched.frames_used * costs["backbone"])


def test_static_mode_and_max_steps():
    model = randomise(tiny(first_threshold=0.0), 4)  # would always exit at step 0
    videos = torch.randn(3, 4, 3, 32, 32)
    gated = early_exit(model, lambda a, s: videos[a, s], 3)
    assert gated.exit_step.tolist() == [0, 0, 0]
    static = early_exit(model, lambda a, s: videos[a, s], 3, exits=False)
    assert static.exit_step.tolist() == [3, 3, 3]
    logits, _, _ = model(videos)
    torch.testing.assert_close(static.logits, logits[:, 3])
    first2 = early_exit(model, lambda a, s: videos[a, s], 3, exits=False, max_steps=2)
    torch.testing.assert_close(first2.logits, logits[:, 1])
    costs = measure_unit_costs(model, (3, 32, 32))
    macs = video_macs(static.exit_step, costs, 4, exits=False)
    assert macs["total"][0] == 4 * (costs["backbone"] + costs["mlp"]) + costs["classifier"]
    crosscheck(lambda: early_exit(model, lambda a, s: videos[:1][a, s], 1, exits=False), macs["total"][0])


def test_gate_polarity_is_negated_on_conversion():
    ref = randomise(OriginalFrameExit(backbone="resnet18", num_class=3, num_frames=3, hidden=8), 2)
    converted = convert_original_state_dict(copy.deepcopy(ref.state_dict()))
    assert torch.equal(converted["gates.0.linear.weight"], -ref.state_dict()["exit_selector.0.linear.weight"])
    assert converted["gates.1.fc1.weight"].shape == (128, 8)


def test_frameexit_preprocess_matches_the_original_recipe():
    from frameexit.data import FrameExitPreprocess

    clip = torch.randint(0, 256, (2, 3, 35, 47), dtype=torch.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    out = FrameExitPreprocess(24, mean, std)(clip)
    x = clip.float() / 255
    x = torch.nn.functional.interpolate(x, size=(24, int(24 * 47 / 35)), mode="bilinear", align_corners=False)
    left = int(round((int(24 * 47 / 35) - 24) / 2))
    x = x[..., :, left : left + 24]
    torch.testing.assert_close(
        out, (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    )
    assert out.shape == (2, 3, 24, 24)


def test_model_accepts_a_built_backbone():
    from effvid.models import get_backbone

    backbone = get_backbone("tiny_cnn", width=4)
    model = FrameExitModel(backbone=backbone, num_classes=3, num_frames=2, hidden=8)
    assert model.backbone is backbone
    with pytest.raises(ValueError, match="backbone_kwargs apply to a backbone given by name"):
        FrameExitModel(backbone=backbone, num_classes=3, num_frames=2, backbone_kwargs={"width": 4})
