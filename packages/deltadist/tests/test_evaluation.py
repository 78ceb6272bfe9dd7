"""The two evaluations on a generated Cityscapes-format folder and on the synthetic benchmark."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from cityscapes_folder import make_cityscapes

from deltadist.build import build_model
from deltadist.config import ModelConfig
from deltadist.cost import clip_macs, measure_unit_costs
from deltadist.data import KeyframePairs, load_clip
from deltadist.delta import copy_teacher_model, forward_clip
from deltadist.evaluation import evaluate_frames, evaluate_pairs, evaluate_streaming, time_per_frame
from effvid.data import DataConfig, DataError, SyntheticSpec, TransformConfig, build_dataset, generate
from effvid.draws import Draw
from effvid.metrics import MeanIoU

NO_RESIZE = TransformConfig(resize=24, crop=24, train_crop="center", flip=False)


def cityscapes(root, **kw):
    make_cityscapes(root, **kw)
    cfg = DataConfig(
        format="cityscapes", path_frame=str(root), subset="val", num_frames=2, transform=NO_RESIZE
    )
    return build_dataset(cfg, num_classes=19)


def lowrank_model(classes=19):
    torch.manual_seed(0)
    return build_model(
        ModelConfig(arch="tiny_segnet", num_classes=classes, width=4, students="lowrank")
    ).eval()


def test_pairs_protocol_scores_each_distance_and_amortises(tmp_path):
    dataset = cityscapes(tmp_path / "cs")
    model = lowrank_model()
    result = evaluate_pairs(model, dataset, num_classes=19, keyframe_interval=3, batch_size=2)
    m = result.metrics
    assert list(m["miou_per_distance"]) == ["0", "1", "2"] and m["labelled_frames"] == 2
    assert m["miou"] == pytest.approx(sum(m["miou_per_distance"].values()) / 3)
    # distance 1 by hand: clips [18, 19] of both cities, the labelled frame scored at label size
    metric = MeanIoU(19)
    for r in dataset.records:
        video, mask = load_clip(dataset, r.key, [18, 19], [r.mask_path])
        assert mask.unique().tolist() == [0, 10, 13, 255]  # road, sky, car, unlabelled
        with torch.no_grad():
            logits = forward_clip(model, video[None])[:, -1]
        metric.update((F.interpolate(logits, size=mask.shape[-2:], mode="bilinear").argmax(1), mask))
    assert m["miou_per_distance"]["1"] == pytest.approx(metric.compute())
    costs = measure_unit_costs(model, (3, 24, 24))
    assert m["gmacs_per_frame"] == pytest.approx(clip_macs(model, costs, 3) / 3 / 1e9)
    assert m["gmacs_per_frame_teacher"] == pytest.approx(clip_macs(model, costs, 1) / 1e9)
    assert m["gmacs_per_frame"] < 0.6 * m["gmacs_per_frame_teacher"]
    assert "amortised over K=3" in result.summary()


def test_streaming_equals_the_pair_at_the_labelled_frames_distance(tmp_path):
    """Frame 19 streamed with a keyframe every 3 frames from frame 0 has its keyframe at 18."""
    dataset = cityscapes(tmp_path / "cs")
    model = lowrank_model()
    pairs = evaluate_pairs(model, dataset, num_classes=19, keyframe_interval=3).metrics
    stream = evaluate_streaming(model, dataset, num_classes=19, keyframe_interval=3, batch_size=2).metrics
    assert stream["miou"] == pytest.approx(pairs["miou_per_distance"]["1"], abs=1e-9)
    assert stream["frames"] == 2 * 20 and stream["keyframes"] == 2 * 7 and stream["scored_frames"] == 2
    costs = measure_unit_costs(model, (3, 24, 24))
    key, delta = clip_macs(model, costs, 1), clip_macs(model, costs, 2) - clip_macs(model, costs, 1)
    assert stream["gmacs_per_frame"] == pytest.approx((7 * key + 13 * delta) / 20 / 1e9)
    assert stream["ms_per_frame"] > 0
    r = dataset.records[0]
    video = load_clip(dataset, r.key, range(6), [r.mask_path])[0]
    with torch.no_grad():
        before = forward_clip(model, video[None])
        assert time_per_frame(model, video, keyframe_interval=3, rounds=1) > 0  # streams 6 frames, twice
        assert torch.equal(forward_clip(model, video[None]), before)  # no stream state left behind
    # the teacher alone: every frame through the plain network (K = 1 gives the same mIoU)
    teacher = build_model(ModelConfig(arch="tiny_segnet", num_classes=19, width=4, students="full")).eval()
    one = evaluate_streaming(teacher, dataset, num_classes=19, keyframe_interval=1).metrics
    plain = evaluate_frames(copy_teacher_model(teacher), dataset, num_classes=19).metrics
    assert plain["miou"] == pytest.approx(one["miou"]) and plain["gmacs_per_frame"] == pytest.approx(
        one["gmacs_per_frame"]
    )


def test_frames_of_different_sizes_in_a_clip_are_an_error_naming_the_frame(tmp_path):
    dataset = cityscapes(tmp_path / "cs", odd_frame=True)
    with pytest.raises(
        DataError, match="clip of video 'bonn_000000_000019': frame 19 is 32x24 but frame 18 is 34x24"
    ):
        evaluate_pairs(lowrank_model(), dataset, num_classes=19, keyframe_interval=3)


def test_synthetic_format_every_frame_labelled_and_seeded_pairs(tmp_path):
    info = generate(
        tmp_path / "syn",
        SyntheticSpec(task="segmentation", num_videos=4, num_classes=2, num_frames=6, size=32, window=2),
    )
    transform = TransformConfig(resize=32, crop=32, train_crop="center", flip=True)
    cfg = DataConfig(
        format="synthetic_segmentation",
        path_frame=str(info.storage_path),
        path_label=str(info.train_list),
        transform=transform,
    )
    base = build_dataset(cfg, num_classes=4, train=True)
    keys = [line.split()[0] for line in info.train_list.read_text().splitlines()]
    assert len(base) == 6 * len(keys) and [r.labeled_index for r in base.records[:6]] == list(range(6))
    pairs = KeyframePairs(base, max_distance=2)
    a, b = pairs[Draw(5, 11)], pairs[Draw(5, 11)]
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["mask"], b["mask"])  # same seed, same draw
    assert a["video"].shape == (2, 3, 32, 32) and a["mask"].shape == (32, 32)
    assert set(a["mask"].unique().tolist()) <= {0, 1, 2, 3}
    # the keyframe is 1 or 2 frames before the labelled frame 5 (flips move both frames alike)
    seen = {tuple(pairs[Draw(5, s)]["video"][0].flatten()[:50].tolist()) for s in range(12)}
    assert 2 <= len(seen) <= 4
    val = build_dataset(DataConfig(**{**cfg.__dict__, "path_label": str(info.val_list)}), num_classes=4)
    result = evaluate_streaming(lowrank_model(4), val, num_classes=4, keyframe_interval=3).metrics
    assert result["scored_frames"] == result["frames"] == 6 * len(val.records) // 6
    with pytest.raises(DataError, match="no masks/ folder"):
        build_dataset(
            DataConfig(**{**cfg.__dict__, "path_label": str(tmp_path / "elsewhere.txt")}), num_classes=4
        )
