"""Metrics against hand-computed values, scikit-learn, and a 2-process gloo run."""

from __future__ import annotations

import json
import math

import ignite.distributed as idist
import pytest
import torch
from conftest import free_port
from ignite.exceptions import NotComputableError
from sklearn.metrics import average_precision_score

from effvid.metrics import CocoAP50, HitAt1, MeanIoU, VideoMAP, average_precision, topk_accuracy


def feed(metric, *output):
    metric.reset()
    metric.update(output)
    return metric.compute()


def test_hit_at_1_multi_label_and_single_label():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]])
    multi_hot = torch.tensor([[0, 1, 1], [0, 1, 0], [1, 0, 1], [1, 0, 0]])
    assert feed(HitAt1(), scores, multi_hot) == 0.5  # videos 0 and 2 hit
    labels = torch.tensor([1, 0, 0, 1])
    assert feed(HitAt1(), scores, labels) == 0.75
    assert feed(topk_accuracy(1), scores, labels) == 0.75
    assert feed(topk_accuracy(2), scores, labels) == 1.0
    with pytest.raises(NotComputableError):
        HitAt1().compute()
    with pytest.raises(ValueError, match=r"target must be \(B,\) class indices or \(B, 3\) multi-hot"):
        feed(HitAt1(), scores, torch.zeros(4, 5))


def test_average_precision_hand_computed():
    # ranking: v2 (pos), v0 (neg), v3 (pos), v1 (neg) -> precision at the positives: 1/1, 2/3
    scores = torch.tensor([0.8, 0.1, 0.9, 0.5])
    positives = torch.tensor([0, 0, 1, 1])
    assert average_precision(scores, positives) == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(average_precision(scores, torch.zeros(4)))


def test_video_map_matches_sklearn_and_skips_classes_without_positives():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(40, 6, generator=g)
    target = (torch.rand(40, 6, generator=g) > 0.7).long()
    target[:, 4] = 0  # a class without positives is left out
    metric = VideoMAP()
    metric.reset()
    for chunk in range(0, 40, 7):  # several updates
        metric.update((scores[chunk : chunk + 7], target[chunk : chunk + 7]))
    per_class = metric.per_class()
    assert math.isnan(per_class[4])
    expected = [
        average_precision_score(target[:, c].numpy(), scores[:, c].numpy()) for c in range(6) if c != 4
    ]
    assert metric.compute() == pytest.approx(sum(expected) / len(expected), abs=1e-12)


def test_mean_iou_hand_computed_with_ignore_index():
    target = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
    metric = MeanIoU(num_classes=3, ignore_index=255)
    # class 0: TP 1, FP 0, FN 1 -> 1/2; class 1: TP 2, FP 1, FN 0 -> 2/3; class 2: 1/1
    assert feed(metric, pred, target) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    logits = torch.nn.functional.one_hot(pred.clamp(max=2), 3).permute(0, 3, 1, 2).float()
    assert feed(metric, logits, target) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    with pytest.raises(ValueError, match=r"target labels must be in \[0, 3\) or the ignore index 255"):
        feed(metric, pred, torch.full_like(target, 7))


def test_coco_ap50_perfect_missed_and_partial():
    tgt = [{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [1, 2]}]
    perfect = [{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "scores": [0.9, 0.8], "labels": [1, 2]}]
    assert feed(CocoAP50(), perfect, tgt) == pytest.approx(1.0)
    # IoU of [0,0,10,10] with [0,0,10,6] is 0.6 (>= 0.5): still a hit; [20,20,30,30] vs [25,25,35,35]: 1/7, a miss
    partial = [{"boxes": [[0, 0, 10, 6], [25, 25, 35, 35]], "scores": [0.9, 0.8], "labels": [1, 2]}]
    assert feed(CocoAP50(), partial, tgt) == pytest.approx(0.5)
    with pytest.raises(NotComputableError):
        CocoAP50().compute()


# ----------------------------------------------------------------------------- DDP


def _all_metrics(scores, labels, multi_hot, seg_pred, seg_tgt, boxes_pred, boxes_tgt):
    out = {}
    for name, metric, output in [
        ("hit1", HitAt1(), (scores, multi_hot)),
        ("top1", topk_accuracy(1), (scores, labels)),
        ("map", VideoMAP(), (scores, multi_hot)),
        ("miou", MeanIoU(num_classes=3), (seg_pred, seg_tgt)),
        ("ap50", CocoAP50(), (boxes_pred, boxes_tgt)),
    ]:
        metric.reset()
        metric.update(output)
        out[name] = metric.compute()
    return out


def _data():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(10, 5, generator=g)
    labels = torch.randint(0, 5, (10,), generator=g)
    multi_hot = torch.nn.functional.one_hot(labels, 5)
    multi_hot[::3, 0] = 1
    seg_tgt = torch.randint(0, 3, (10, 4, 4), generator=g)
    seg_tgt[:, 0, 0] = 255
    seg_pred = torch.randint(0, 3, (10, 4, 4), generator=g)
    boxes_tgt = [{"boxes": [[i, i, i + 10, i + 10]], "labels": [i % 2]} for i in range(10)]
    boxes_pred = [
        {"boxes": [[i + (i % 3) * 3, i, i + 10, i + 10]], "scores": [0.1 * (i + 1)], "labels": [i % 2]}
        for i in range(10)
    ]
    return scores, labels, multi_hot, seg_pred, seg_tgt, boxes_pred, boxes_tgt


def _ddp_worker(local_rank, out_path):
    rank, world = idist.get_rank(), idist.get_world_size()
    data = _data()
    # uneven shards: rank 0 gets 6 videos, rank 1 gets 4
    sl = slice(0, 6) if rank == 0 else slice(6, 10)
    shard = [d[sl] for d in data]
    result = _all_metrics(*shard)
    if rank == 0:
        result["world"] = world
        with open(out_path, "w") as f:
            json.dump(result, f)


def test_two_process_gloo_equals_one_process(tmp_path):
    single = _all_metrics(*_data())
    out = tmp_path / "ddp.json"
    with idist.Parallel(backend="gloo", nproc_per_node=2, master_port=free_port()) as parallel:
        parallel.run(_ddp_worker, str(out))
    ddp = json.loads(out.read_text())
    assert ddp.pop("world") == 2
    assert ddp == pytest.approx(single, abs=1e-12)
