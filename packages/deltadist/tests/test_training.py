"""Training on the core's engine: parameter groups, the distillation switch, cost tables, and a
tiny run in which the cost loss turns gates off."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine, Events

from deltadist.build import build_model
from deltadist.config import ModelConfig
from deltadist.cost import layer_costs
from deltadist.delta import delta_layers
from deltadist.losses import CrossEntropy2d, DeltaDistillationLoss
from deltadist.training import (
    attach_distill_switch,
    measure_layer_costs,
    param_groups,
    read_cost_table,
    train_delta,
)
from effvid.engine import EngineConfig
from effvid.model_files import ModelFileError

CFG = ModelConfig(arch="tiny_segnet", num_classes=3, width=4)


class Clips(torch.utils.data.Dataset):
    """Pairs of 16x16 frames (the second a small change of the first) and a mask of the labelled one."""

    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        first = torch.randn(n, 1, 3, 16, 16, generator=g)
        self.video = torch.cat([first, first + 0.05 * torch.randn(n, 1, 3, 16, 16, generator=g)], 1)
        self.mask = (self.video[:, -1, 0] > 0).long() + (self.video[:, -1, 1] > 1).long()

    def __len__(self) -> int:
        return len(self.video)

    def __getitem__(self, item):
        i = item[0] if isinstance(item, tuple) else item
        return {"video": self.video[i], "mask": self.mask[i]}


def model(**kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**CFG.__dict__, **kw}))


def test_two_parameter_groups_students_and_gates_vs_the_rest():
    net = model()
    groups = param_groups(net, lr=0.001, lr_students=0.01)
    assert [g["name"] for g in groups] == ["students", "rest"] and [g["lr"] for g in groups] == [0.01, 0.001]
    names = {id(p): n for n, p in net.named_parameters()}
    students = [names[id(p)] for p in groups[0]["params"]]
    rest = [names[id(p)] for p in groups[1]["params"]]
    assert len(students) == 5 * 4  # per layer: full weight, two low-rank weights, gate logit
    assert all(".student_" in n or n.endswith("gate.logit") for n in students)
    assert "high.0.teacher.weight" in rest and "classifier.weight" in rest and "stem.1.weight" in rest
    assert len(students) + len(rest) == len(list(net.parameters()))
    forced = model(students="lowrank")  # forced students: the gates are frozen, left out
    assert not any(n.endswith("gate.logit") for n, p in forced.named_parameters() if p.requires_grad)
    assert len(param_groups(forced, lr=1, lr_students=1)[0]["params"]) == 5 * 3


def test_distillation_switches_off_after_the_fraction_of_iterations():
    net = model()
    loss = DeltaDistillationLoss(net, CrossEntropy2d(), alpha=0.5, beta=0.0)
    engine = Engine(lambda e, b: loss.current_alpha)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    attach_distill_switch(engine, loss, 0.4)
    engine.run([0] * 5, max_epochs=2)  # 10 iterations: the first 4 distil
    assert seen == [0.5] * 4 + [0.0] * 6


def test_cost_tables_json_round_trip_and_mismatch_names_the_file(tmp_path):
    net = model()
    costs = measure_layer_costs(net, (3, 16, 16), "macs")
    assert costs == layer_costs(net, (3, 16, 16)) and sum(costs.values) == pytest.approx(1.0)
    path = tmp_path / "costs.json"
    costs.to_json(path)
    assert read_cost_table(path, net) == costs
    other = build_model(ModelConfig(**{**CFG.__dict__, "exclude": ["fuse.*"]}))
    with pytest.raises(
        ModelFileError, match=r"costs\.json: .*5 rows do not match the model's 4 delta layers.*'fuse\.0'"
    ):
        read_cost_table(path, other)
    (tmp_path / "bad.json").write_text(json.dumps({"unit": "MAC"}))
    with pytest.raises(ModelFileError, match="bad.json: .*not a layer cost table"):
        read_cost_table(tmp_path / "bad.json", net)
    latency = measure_layer_costs(net, (3, 16, 16), "latency", repeats=2)
    assert latency.names == costs.names and latency.unit == "ms"
    assert sum(latency.values) == pytest.approx(1.0) and min(latency.values) > 0


def _full_cost(net, costs) -> float:
    """The cost term of the eval-mode choices: sum of the costs of the layers on their full student."""
    return sum(
        c for (n, layer), c in zip(delta_layers(net).items(), costs.values) if layer.choice() == "full"
    )


def test_a_tiny_training_run_lowers_the_cost_term(tmp_path):
    net = model(gate_init=0.1)  # every gate starts on the full student
    costs = layer_costs(net, (3, 16, 16))
    before = _full_cost(net, costs)
    assert before == pytest.approx(1.0)
    common = dict(
        task_loss=CrossEntropy2d(), costs=costs, batch_size=4, optimizer="adam", lr=1e-4, lr_students=0.1
    )
    teacher_before = net.high[0].teacher.weight.detach().clone()
    assert train_delta(
        net, Clips(), cfg=EngineConfig(epochs=3, progress=False), run_dir=tmp_path / "a", beta=5.0, **common
    )
    after = _full_cost(net, costs)
    assert after < 0.5 * before
    assert not torch.equal(net.high[0].teacher.weight, teacher_before)  # the teachers train too
    # a resumed finished run trains nothing more
    assert not train_delta(
        net, Clips(), cfg=EngineConfig(epochs=3, progress=False), run_dir=tmp_path / "a", beta=5.0, **common
    )
    # without the cost loss the same run keeps the full students
    same = model(gate_init=0.1)
    train_delta(
        same, Clips(), cfg=EngineConfig(epochs=3, progress=False), run_dir=tmp_path / "b", beta=0.0, **common
    )
    assert _full_cost(same, costs) > after
