"""Unit MACs, clip MACs against FlopCounterMode, the cost vector and its JSON, the gate cost."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_model import clips_like, tiny

from deltadist.cost import (
    LayerCosts,
    clip_macs,
    gate_cost,
    layer_costs,
    layer_costs_from_latency,
    measure_unit_costs,
)
from deltadist.delta import convert_to_delta, delta_layers, deploy, forward_clip, set_clip_length
from deltadist.models import get_model
from effvid.flops import crosscheck, latency_table

# Tiny at 16x16 (hand-computed: Cout * Cin * kernel positions * output positions)
UNITS = {
    "frame": 3 * 8 * 9 * 256 + 16 * 5 * 256,  # the stem and the classifier, per frame
    "body.0.teacher": 8 * 8 * 9 * 64,
    "body.0.full": 8 * 8 * 9 * 64,
    "body.0.lowrank": 2 * 8 * 3 * 8 * 16 + 8 * 2 * 3 * 64,  # 3x1 stride (2,1) to 8x16, then 1x3 stride (1,2)
    "body.2.teacher": 16 * 8 * 3 * 64,
    "body.2.full": 16 * 8 * 3 * 64,
    "body.2.lowrank": 4 * 8 * 3 * 64 + 16 * 4 * 64,  # (3,1) kernel: the horizontal part is 1x1
    "body.5.teacher": 16 * 16 * 64,
    "body.5.full": 16 * 16 * 64,
    "body.5.lowrank": 4 * 16 * 64 + 16 * 4 * 64,
}


def converted_tiny(**kw):
    net = tiny(dtype=torch.float32)
    convert_to_delta(net, **kw)
    return net


def test_unit_costs_are_the_hand_computed_macs():
    units = measure_unit_costs(converted_tiny(), (3, 16, 16))
    assert units.macs == UNITS


def test_clip_macs_match_flopcountermode_for_mixed_and_deployed_models():
    net = converted_tiny()
    with torch.no_grad():
        delta_layers(net)["body.2"].gate.logit.fill_(2.0)
    units = measure_unit_costs(net, (3, 16, 16))
    clip = clips_like(b=1, t=3, dtype=torch.float32)
    expected = 3 * UNITS["frame"] + sum(UNITS[f"{n}.teacher"] for n in ("body.0", "body.2", "body.5"))
    expected += 2 * (UNITS["body.0.lowrank"] + UNITS["body.2.full"] + UNITS["body.5.lowrank"])
    assert clip_macs(net, units, 3) == expected
    assert (
        crosscheck(lambda: forward_clip(net, clip), clip_macs(net, units, 3), what="3-frame clip") == expected
    )
    assert clip_macs(net, units, 1) == UNITS["frame"] + sum(
        UNITS[f"{n}.teacher"] for n in ("body.0", "body.2", "body.5")
    )
    deploy(net)
    deployed_units = measure_unit_costs(net, (3, 16, 16))
    assert (
        "body.2.lowrank" not in deployed_units.macs and deployed_units["body.2.full"] == UNITS["body.2.full"]
    )
    crosscheck(lambda: forward_clip(net, clip), clip_macs(net, deployed_units, 3), what="deployed clip")


def test_ddrnet23_slim_macs_per_frame_at_full_resolution_from_units():
    net = get_model("ddrnet23_slim")
    convert_to_delta(net)
    units = measure_unit_costs(net, (3, 1024, 2048))
    for layer in delta_layers(net).values():
        layer.force = "lowrank"
    # the all-low-rank K = 3 figure of test_ddrnet (counted there on the whole clip)
    assert clip_macs(net, units, 3) / 3 == pytest.approx(17.285832704e9, abs=1)
    assert clip_macs(net, units, 1) == pytest.approx(36.281319424e9, abs=1)


def test_layer_costs_json_and_the_check_against_the_model(tmp_path):
    net = converted_tiny()
    costs = layer_costs(net, (3, 16, 16))
    full = [UNITS[f"body.{i}.full"] for i in (0, 2, 5)]
    assert costs.names == ("body.0", "body.2", "body.5") and costs.unit == "MAC"
    assert costs.values == pytest.approx([f / sum(full) for f in full], rel=1e-12)
    extra = layer_costs(net, (3, 16, 16), student_cost="extra", normalise=False)
    assert extra.values == tuple(
        float(UNITS[f"body.{i}.full"] - UNITS[f"body.{i}.lowrank"]) for i in (0, 2, 5)
    )
    costs.to_json(tmp_path / "costs.json")
    assert json.loads((tmp_path / "costs.json").read_text())["layers"][1] == {
        "name": "body.2",
        "cost": costs.values[1],
    }
    assert LayerCosts.from_json(tmp_path / "costs.json") == costs
    costs.check(net)
    other = converted_tiny(exclude=["body.5"])
    with pytest.raises(
        ValueError,
        match=r"3 rows do not match the model's 2 delta layers: missing \[\], not in the model \['body.5'\]",
    ):
        costs.check(other)
    (tmp_path / "bad.json").write_text(json.dumps({"unit": "MAC"}))
    with pytest.raises(ValueError, match="is not a layer cost table: missing 'layers'"):
        LayerCosts.from_json(tmp_path / "bad.json")


def test_layer_costs_from_a_latency_table():
    net = converted_tiny()
    set_clip_length(net, 2)
    clip = clips_like(b=1, t=2, dtype=torch.float32).flatten(0, 1)
    tables = {}
    for student in ("full", "lowrank"):
        for layer in delta_layers(net).values():
            layer.force = student
        tables[student] = latency_table(net, clip, repeats=2, warmup=0)
    costs = layer_costs_from_latency(net, tables["full"])
    assert costs.unit == "ms" and costs.names == ("body.0", "body.2", "body.5")
    assert sum(costs.values) == pytest.approx(1.0) and all(v > 0 for v in costs.values)
    ms = layer_costs_from_latency(net, tables["full"], normalise=False)
    assert ms.values[0] == pytest.approx(tables["full"].ms_of("body.0.student_full"))
    with pytest.raises(ValueError, match="no row for 'body.0.student_full'"):
        layer_costs_from_latency(net, tables["lowrank"])


def test_gate_cost_is_the_gate_weighted_sum_and_trains_the_logits():
    net = converted_tiny().train()
    costs = LayerCosts(("body.0", "body.2", "body.5"), (0.5, 0.3, 0.2), "MAC")
    with pytest.raises(ValueError, match="no sampled gate"):
        gate_cost(net, costs)
    set_clip_length(net, 2)
    torch.manual_seed(0)
    net(clips_like(b=2, t=2, dtype=torch.float32).flatten(0, 1))
    g = [float(layer.gate_value.detach()) for layer in delta_layers(net).values()]
    loss = gate_cost(net, costs)
    assert float(loss.detach()) == pytest.approx(0.5 * g[0] + 0.3 * g[1] + 0.2 * g[2])
    loss.backward()
    assert all(
        layer.gate.logit.grad is not None and float(layer.gate.logit.grad) > 0
        for layer in delta_layers(net).values()
    )
    # a single-frame pass samples nothing: no stale gates from the pass before
    set_clip_length(net, 1)
    net(clips_like(b=1, t=1, dtype=torch.float32).flatten(0, 1))
    with pytest.raises(ValueError, match="'body.0' has no sampled gate"):
        gate_cost(net, costs)
