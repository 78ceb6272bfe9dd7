"""MACs per video: unit costs measured on the meta device, checked against real batch-1 runs."""

from __future__ import annotations

import pytest
import torch
from original_reference import randomise
from test_model import tiny

from adafocus.cost import measure_unit_costs, video_macs
from adafocus.model import AdaFocus
from effvid.flops import crosscheck


def test_paper_costs_at_full_size():
    with torch.device("meta"):
        model = AdaFocus(num_classes=200, patch_size=128)
    costs = measure_unit_costs(model, (224, 224))
    # 1x1 conv 1280->32 on 7x7, Linear 1568->1024, GRU 1024 (input and hidden), actor 1024->49
    assert costs["policy"] == 1280 * 32 * 49 + 1568 * 1024 + 6 * 1024 * 1024 + 1024 * 49 == 9_954_304
    assert costs["classifier"] == 3 * (3328 * 1024 + 1024 * 1024) + 1024 * 200 == 13_574_144
    assert costs["glance"] / 1e9 == pytest.approx(0.2995, abs=5e-5)
    assert costs["focus"] / 1e9 == pytest.approx(1.3346, abs=5e-5)
    per_video = video_macs(16, costs)
    assert per_video["total"].dtype == torch.float64
    assert float(per_video["total"]) / 1e9 == pytest.approx(26.52, abs=0.005)  # the paper: about 26.6
    with torch.device("meta"):
        p96 = AdaFocus(num_classes=200, patch_size=96)
    assert float(video_macs(16, measure_unit_costs(p96, (224, 224)))["total"]) / 1e9 == pytest.approx(
        17.18, abs=0.005
    )


def test_dynamic_count_matches_the_flop_counter_on_batch_one_runs():
    model = randomise(tiny(), 0)
    clips = torch.randn(2, 4, 3, 40, 48)  # glance resize to 32: interpolation is not a MAC
    costs = measure_unit_costs(model, (40, 48))
    macs = video_macs(torch.tensor([4, 4]), costs)
    assert torch.equal(macs["total"], sum(macs[u] for u in ("glance", "policy", "focus", "classifier")))
    for i in range(2):
        crosscheck(lambda i=i: model(clips[i : i + 1]), macs["total"][i], what=f"video {i}")
        crosscheck(lambda i=i: model.forward_frame_by_frame(clips[i : i + 1]), macs["total"][i])
    # a video that stopped after 2 steps costs 2 steps: the first two frames run alone
    short = video_macs(2, costs)["total"]
    crosscheck(lambda: model(clips[:1, :2]), short)
    with pytest.raises(AssertionError, match="dynamic MAC count"):
        crosscheck(lambda: model(clips[:1]), short)
