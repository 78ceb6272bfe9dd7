"""The four stages on the engine: what each trains, the checked hand-offs between them (a wrong
stage's file is an error naming it), optimiser groups and the temperature schedule."""

from __future__ import annotations

import fire
import pytest
import torch
import yaml
from conftest import ENGINE
from ignite.engine import Engine

from effvid.config import ConfigError, load_config
from effvid.engine import find_latest_checkpoint, read_training_checkpoint
from effvid.model_files import ModelFileError, read_model_file
from videoiq.cli import TEST, TRAIN
from videoiq.config import OptimConfig, TrainConfig
from videoiq.model import AnyPrecisionResNet, VideoIQ
from videoiq.policy import PrecisionPolicy
from videoiq.training import TemperatureSchedule, any_precision_groups, policy_groups, prepare_stage


def _state(path, kind):
    return read_model_file(path, kind=kind).state_dict


def _config(stages, *args: str) -> TrainConfig:
    """The tiny run's config with command-line style overrides (lists as Fire would parse them)."""
    overrides = {
        k.lstrip("-"): yaml.safe_load(v) if v.startswith("[") else v for k, v in zip(args[::2], args[1::2])
    }
    return load_config(TrainConfig, stages["cfg"], overrides)


def test_each_stage_writes_its_kind_and_trains_its_part(stages):
    files = stages["files"]
    fmt = {k: torch.load(p, weights_only=True)["format"] for k, p in files.items()}
    assert fmt == {
        "fp": "effvid-videoiq-fp-v1",
        "ap": "effvid-videoiq-ap-v1",
        "pb": "effvid-videoiq-policy-backbone-v1",
        "policy": "effvid-videoiq-v1",
    }
    ap, policy = _state(files["ap"], "videoiq-ap"), _state(files["policy"], "videoiq")
    # stage policy: the recogniser is the ap stage's, BatchNorm statistics and clips included
    assert all(torch.equal(policy[f"recognizer.{k}"], v) for k, v in ap.items())
    assert not any(k.startswith("teacher") for k in policy)
    # the temperature followed the schedule: 5.0 * 0.956 after the one epoch
    assert policy["policy.temperature"].item() == pytest.approx(5.0 * 0.956)
    # the any-precision network started from the float one: its stem moved little in one epoch
    fp = _state(files["fp"], "videoiq-fp")
    assert (ap["backbone.conv1.weight"] - fp["backbone.conv1.weight"]).abs().max() < 0.05
    assert {k for k in ap if ".clips." in k} and "backbone.layer1.0.bn1.bns.2.running_mean" in ap


def test_stage_policy_loads_every_previous_stage_exactly(stages):
    files = stages["files"]
    cfg = _config(
        stages,
        "--stage", "policy",
        "--checkpoint.init", str(files["ap"]),
        "--checkpoint.teacher", str(files["fp"]),
        "--checkpoint.policy_backbone", str(files["pb"]),
    )  # fmt: skip
    stage = prepare_stage(cfg)
    model: VideoIQ = stage.model
    ap, fp, pb = (
        _state(files["ap"], "videoiq-ap"),
        _state(files["fp"], "videoiq-fp"),
        _state(files["pb"], "videoiq-policy-backbone"),
    )
    assert all(torch.equal(v, ap[k]) for k, v in model.recognizer.state_dict().items())
    assert all(torch.equal(v, pb[f"backbone.{k}"]) for k, v in model.policy.backbone.state_dict().items())
    assert all(torch.equal(v, fp[k]) for k, v in stage.step.teacher.state_dict().items())
    assert all(not p.requires_grad for p in model.recognizer.parameters())
    trained = {id(p) for g in stage.groups for p in g["params"]}
    assert trained == {id(p) for p in model.policy.parameters()}
    # the frozen recogniser keeps its BatchNorm statistics through a training step
    before = {k: v.clone() for k, v in model.recognizer.state_dict().items()}
    batch = {"video": torch.randn(2, 4, 3, 32, 32), "label": torch.tensor([0, 2])}
    stage.step.train()(batch)[0].backward()
    assert all(torch.equal(before[k], v) for k, v in model.recognizer.state_dict().items())


WRONG = [
    # (stage, key, which stage's file is given, the kind expected, the stage that writes it)
    ("ap", "--checkpoint.init", "ap", "videoiq-fp", "fp"),
    ("ap", "--checkpoint.teacher", "pb", "videoiq-fp", "fp"),
    ("policy", "--checkpoint.init", "fp", "videoiq-ap", "ap"),
    ("policy", "--checkpoint.teacher", "ap", "videoiq-fp", "fp"),
    ("policy", "--checkpoint.policy_backbone", "fp", "videoiq-policy-backbone", "policy_backbone"),
    ("policy_backbone", "--checkpoint.init", "policy", "videoiq-policy-backbone", "policy_backbone"),
    ("fp", "--checkpoint.init", "ap", "videoiq-fp", "fp"),
]


@pytest.mark.parametrize("stage,key,given,kind,writer", WRONG)
def test_a_stage_handed_another_stage_s_file_names_it(stages, tmp_path, stage, key, given, kind, writer):
    files = stages["files"]
    needed = {
        "ap": ["--checkpoint.init", str(files["fp"])],
        "policy": ["--checkpoint.init", str(files["ap"]), "--checkpoint.teacher", str(files["fp"])],
    }.get(stage, [])
    args = dict(zip(needed[::2], needed[1::2]))
    args[key] = str(files[given])
    command = [*stages["cfg"], "--stage", stage, *[x for kv in args.items() for x in kv]]
    with pytest.raises(ModelFileError) as err:
        fire.Fire(TRAIN, command=[*command, "--output_dir", str(tmp_path / "run"), *ENGINE])
    message = str(err.value)
    assert str(files[given]) in message and f"not an effvid {kind} model file" in message
    assert f"{key} of stage {stage} takes the model.pt of stage {writer}" in message
    assert not (tmp_path / "run").exists()  # the failed run left nothing behind


def test_test_and_policy_refuse_other_files(stages, tmp_path):
    files, cfg = stages["files"], stages["cfg"][0]
    with pytest.raises(
        ModelFileError, match="not an effvid videoiq model file.*takes the model.pt of stage policy"
    ):
        fire.Fire(
            TEST, command=[cfg, "--checkpoint.init", str(files["ap"]), "--output_dir", str(tmp_path / "t")]
        )
    checkpoint = sorted((files["policy"].parent / "checkpoints").glob("checkpoint_*.pt"))[-1]
    with pytest.raises(ModelFileError, match="is a training checkpoint"):
        prepare_stage(_config(stages, "--stage", "policy", "--checkpoint.init", str(checkpoint)))


def test_bit_width_family_and_policy_size_must_fit_the_files(stages):
    files = stages["files"]
    base = ["--stage", "policy", "--checkpoint.init", str(files["ap"])]
    with pytest.raises(
        ModelFileError, match=r"has the bit widths \[32, 4, 2\]; .*\[32, 8, 4\] also needs \[8\]"
    ):
        prepare_stage(_config(stages, *base, "--model.bit_width_family", "[32,8,4]"))
    # a narrower family loads (the extra bit widths dropped), with a warning on the changed grid
    with pytest.warns(UserWarning, match="largest bit width 32, the model's is 4"):
        model = prepare_stage(_config(stages, *base, "--model.bit_width_family", "[4,2]")).model
    assert model.family == (4, 2) and sorted(model.recognizer.backbone.layer1[0].quant1.clips) == ["2", "4"]
    bigger = [
        "--data.transform.resize",
        "48",
        "--data.transform.crop",
        "48",
        "--model.policy_input_size",
        "48",
    ]
    with pytest.raises(ModelFileError, match=r"policy_input_size 32; this model has 48"):
        prepare_stage(_config(stages, *base, *bigger, "--checkpoint.policy_backbone", str(files["pb"])))
    other = ["--model.policy_arch", "tiny_cnn", "--checkpoint.policy_backbone", str(files["pb"])]
    with pytest.raises(ModelFileError, match=r"model.policy_arch mobilenet_v2; this model has tiny_cnn"):
        prepare_stage(_config(stages, *base, *other))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--stage", "joint"], "stage must be one of fp, ap, policy_backbone, policy"),
        (["--stage", "policy"], "stage policy .* give --checkpoint.init"),
        (["--stage", "fp", "--model.policy_input_size", "64"], r"model.policy_input_size \(64\) exceeds .*data.transform.crop \(32\)"),
        (["--stage", "fp", "--model.policy_input_size", "16"], "model.policy_input_size must be >= 32"),
        (["--stage", "ap", "--optim.q_lr", "[0.1,0.1]"], r"optim.q_lr has 2 values for the 3 bit widths"),
        (["--stage", "ap", "--model.bit_width_family", "[4,32]"], "model.bit_width_family: .*largest"),
        (["--stage", "fp", "--checkpoint.teacher", "x.pt"], "stage fp does not use checkpoint.teacher"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(stages, args, message):
    with pytest.raises(ConfigError, match=message):
        _config(stages, *args)


def test_optimiser_groups_are_the_original_s():
    model = AnyPrecisionResNet(arch="resnet18", num_classes=3, backbone_kwargs={"width": 4})
    cfg = OptimConfig(lr=0.3)
    groups = {g["name"]: g for g in any_precision_groups(model, cfg)}
    names = {id(p): n for n, p in model.named_parameters()}
    assert groups["shared"]["lr"] == pytest.approx(0.1) and groups["bn"]["lr"] == 0.3
    assert [groups[f"clips@{b}"]["lr"] for b in (32, 4, 2)] == [0.1, 0.1, 0.01]
    assert [groups[f"clips@{b}"]["weight_decay"] for b in (32, 4, 2)] == [5e-4, 5e-4, 6e-2]
    assert all(names[id(p)].endswith(".clips.2") for p in groups["clips@2"]["params"])
    shared = {names[id(p)] for p in groups["shared"]["params"]}
    assert "backbone.layer2.0.downsample.1.bns.4.weight" in shared  # as the original: no "bn" in its name
    assert "fc.weight" in shared and "backbone.layer1.0.conv1.weight" in shared
    assert {names[id(p)] for p in groups["bn"]["params"]} >= {
        "backbone.bn1.weight",
        "backbone.layer1.0.bn2.bns.2.bias",
    }
    assert sum(len(g["params"]) for g in groups.values()) == len(names)
    policy = PrecisionPolicy(num_bits=3, num_classes=3, hidden=8, width=0.25)
    leaf, backbone = policy_groups(policy, OptimConfig(p_lr=0.1, p_b_lr=0.001))
    assert (leaf["lr"], backbone["lr"]) == (0.1, 0.001)
    assert {id(p) for p in leaf["params"]} == {
        id(p) for m in (policy.rnn, policy.linear, policy.fc) for p in m.parameters()
    }


def test_temperature_schedule_per_epoch_and_on_resume():
    policy = PrecisionPolicy(num_bits=2, hidden=8, width=0.25)
    seen = []
    trainer = Engine(lambda e, b: seen.append((e.state.epoch, float(policy.temperature))))
    schedule = TemperatureSchedule(policy, 5.0, 0.5)
    schedule.attach(trainer)
    trainer.run([0, 1], max_epochs=2)
    assert seen == [(1, 5.0), (1, 5.0), (2, 2.5), (2, 2.5)] and float(policy.temperature) == 1.25
    # a resumed run (a new trainer at epoch 2 with the checkpointed state) continues the schedule
    policy.temperature.fill_(99.0)
    resumed, seen[:] = Engine(lambda e, b: seen.append((e.state.epoch, float(policy.temperature)))), []
    resumed.load_state_dict({"iteration": 4, "epoch_length": 2, "max_epochs": 2})
    again = TemperatureSchedule(policy, 1.0, 1.0)
    again.load_state_dict(schedule.state_dict())
    again.attach(resumed)
    resumed.run([0, 1], max_epochs=3)
    assert seen == [(3, 1.25), (3, 1.25)] and float(policy.temperature) == 0.625


def test_a_resumed_policy_run_continues_the_temperature(stages):
    files, root = stages["files"], stages["root"]
    args = ["--checkpoint.init", str(files["ap"]), "--checkpoint.policy_backbone", str(files["pb"])]
    first = stages["train"]("policy", root / "resume", *args)
    assert _state(first, "videoiq")["policy.temperature"].item() == pytest.approx(5.0 * 0.956)
    checkpoint = read_training_checkpoint(find_latest_checkpoint(root / "resume"))
    assert checkpoint["temperature"] == {"initial": 5.0, "rate": 0.956}
    fire.Fire(
        TRAIN,
        command=[*stages["cfg"], "--stage", "policy", *args, "--output_dir", str(root / "resume"), *ENGINE[2:],
                 "--engine.epochs", "2"],
    )  # fmt: skip
    assert _state(first, "videoiq")["policy.temperature"].item() == pytest.approx(5.0 * 0.956**2)


@pytest.mark.parametrize("stage", ["ap", "policy"])
def test_stages_train_under_distributed_data_parallel(stages, capfd, stage):
    """Two spawned gloo processes, one DDP group; frozen parts (teacher, recogniser) stay frozen."""
    files, out = stages["files"], stages["root"] / f"ddp-{stage}"
    paths = {
        "ap": ["--checkpoint.init", str(files["fp"])],
        "policy": ["--checkpoint.init", str(files["ap"]), "--checkpoint.teacher", str(files["fp"])],
    }[stage]
    ddp = ["--engine.backend", "gloo", "--engine.nproc_per_node", "2", "--engine.device", "cpu"]
    fire.Fire(
        TRAIN, command=[*stages["cfg"], "--stage", stage, *paths, *ddp, "--output_dir", str(out), *ENGINE]
    )
    assert "trained on 2 process(es)" in capfd.readouterr().out
    state = _state(out / "model.pt", "videoiq-ap" if stage == "ap" else "videoiq")
    if stage == "policy":
        ap = _state(files["ap"], "videoiq-ap")
        assert all(torch.equal(state[f"recognizer.{k}"], v) for k, v in ap.items())
