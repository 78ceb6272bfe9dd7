"""The commands end to end on generated frame folders and LMDB: videoiq-test's outputs, sampled
decisions, videoiq-convert on an original-layout checkpoint, help texts, the tiny demo."""

from __future__ import annotations

import json

import fire
import pytest
import torch
import yaml
from conftest import SPEC, write_config
from original_reference import OrigResNetPACTAP, OrigResNetVideoIQ, randomise

from effvid.cli import RunDirError
from effvid.config import ConfigError, load_config
from effvid.model_files import load_weights, read_model_file
from effvid.reports import read_results
from videoiq.cli import CONVERT, DEMO, TEST, TRAIN
from videoiq.config import TrainConfig
from videoiq.model import VideoIQ
from videoiq.training import prepare_stage


def _test(stages, storage: str, out, *args: str) -> tuple[dict, list[dict], str]:
    info = stages["infos"][storage]
    cfg = write_config(stages["root"] / f"test-{storage}.yml", info, storage)
    command = [str(cfg), "--data.path_label", str(info.val_list), "--output_dir", str(out), *args]
    fire.Fire(TEST, command=[*command, "--engine.progress", "False"])
    metrics = json.loads((out / "metrics_eval.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return metrics, rows, info.val_list.read_text()


@pytest.mark.parametrize("storage", ["frames", "lmdb"])
def test_videoiq_test_reports_accuracy_policy_and_three_costs(stages, storage, tmp_path, capsys):
    policy = str(stages["files"]["policy"])
    metrics, rows, val = _test(stages, storage, tmp_path / "t", "--checkpoint.init", policy)
    printed = capsys.readouterr().out
    assert "top1:" in printed and "mAP:" in printed and "policy (argmax decisions): 32bit" in printed
    assert "paper formula" in printed and "GBitOPs" in printed
    assert [r["video"] for r in rows] == [line.split()[0] for line in val.splitlines()]
    assert metrics["num_videos"] == len(rows) and metrics["decisions"] == "argmax"
    assert set(metrics["policy_distribution"]) == {"32bit", "4bit", "2bit", "skip1"}
    assert sum(metrics["policy_distribution"].values()) == pytest.approx(1.0)
    names = {"32bit": 32, "4bit": 4, "2bit": 2, "skip1": 0}
    for r in rows:
        assert len(r["actions"]) == len(r["bits"]) == 4  # one decision per frame
        assert [names[a] for a in r["actions"]] == r["bits"]
        assert abs(sum(r["probs"]) - 1) < 1e-4 and len(r["probs"]) == 3 and len(r["labels"]) == 1
        assert r["gflops_paper"] > 0 and r["gmacs"] > 0 and r["gbitops"] > r["gmacs"]
    assert metrics["mean_gmacs"] == pytest.approx(sum(r["gmacs"] for r in rows) / len(rows))
    assert metrics["paper_constants"] == "measured for this model and input"
    assert 0 <= metrics["top1"] <= 1 and 0 <= metrics["map"] <= 1


def test_decisions_are_deterministic_unless_sampled(stages, tmp_path):
    policy = str(stages["files"]["policy"])
    _, a, _ = _test(stages, "lmdb", tmp_path / "a", "--checkpoint.init", policy)
    _, b, _ = _test(stages, "frames", tmp_path / "b", "--checkpoint.init", policy)
    assert [r["actions"] for r in a] == [r["actions"] for r in b]  # same videos, either storage
    assert all(abs(x - y) < 1e-5 for ra, rb in zip(a, b) for x, y in zip(ra["probs"], rb["probs"]))
    m, s1, _ = _test(stages, "lmdb", tmp_path / "s1", "--checkpoint.init", policy, "--sample", "true")
    _, s2, _ = _test(stages, "lmdb", tmp_path / "s2", "--checkpoint.init", policy, "--sample", "true")
    assert m["decisions"] == "sampled" and s1 == s2  # seeded (--seed)


def _original_checkpoint(tmp_path, layout: str):
    torch.manual_seed(0)
    if layout == "videoiq":
        ref = OrigResNetVideoIQ(18, 4, [32, 4, 2], [1], 2.0, True, True, 3)
    else:
        ref = OrigResNetPACTAP(18, 4, [32, 4, 2], 2.0, True, 3)
    path = tmp_path / f"{layout}.pth.tar"
    state = {f"module.{k}": v for k, v in randomise(ref, 0).state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state, "best_top1": 1.5}, path)
    return path


ORIGINAL_MODEL = ["--model.arch", "resnet18", "--model.num_class", "3", "--model.policy_head", "true"]


def test_convert_an_original_checkpoint_and_test_it_both_ways(stages, tmp_path):
    src = _original_checkpoint(tmp_path, "videoiq")
    dst, teacher = tmp_path / "converted.pt", tmp_path / "teacher.pt"
    CONVERT.main(
        [
            str(src),
            str(dst),
            *ORIGINAL_MODEL,
            "--teacher_dst",
            str(teacher),
            "--output_dir",
            str(tmp_path / "c"),
        ]
    )
    assert read_model_file(dst, kind="videoiq").state_dict and read_model_file(teacher, kind="videoiq-fp")
    model = ["--model.width", "64", "--model.policy_width", "1.0", "--model.policy_hidden", "512"]
    args = [*ORIGINAL_MODEL, *model]
    _, ours, _ = _test(stages, "lmdb", tmp_path / "ours", "--checkpoint.init", str(dst), *args)
    _, theirs, _ = _test(
        stages,
        "lmdb",
        tmp_path / "theirs",
        "--checkpoint.init",
        str(src),
        "--checkpoint.format",
        "original",
        *args,
    )
    assert ours == theirs
    # the converter registered with the core serves its generic loader too
    net = VideoIQ(arch="resnet18", num_classes=3, skip_list=(1,), policy_head=True)
    load_weights(net, src, kind="videoiq", fmt="original")
    converted = read_model_file(dst, kind="videoiq").state_dict
    assert all(torch.equal(v, converted[k]) for k, v in net.state_dict().items())


def test_convert_a_step2_checkpoint_feeds_stage_policy(stages, tmp_path):
    src = _original_checkpoint(tmp_path, "ap")
    ap, fp = tmp_path / "ap.pt", tmp_path / "fp.pt"
    CONVERT.main(
        [str(src), str(ap), *ORIGINAL_MODEL, "--teacher_dst", str(fp), "--output_dir", str(tmp_path / "c")]
    )
    assert torch.load(ap, weights_only=True)["format"] == "effvid-videoiq-ap-v1"
    overrides = {
        "stage": "policy",
        "checkpoint.init": str(ap),
        "checkpoint.teacher": str(fp),
        "model.width": 64,
    }
    overrides.update({"model.num_class": 3, "model.policy_width": 1.0})
    stage = prepare_stage(load_config(TrainConfig, stages["cfg"], overrides))
    converted = read_model_file(ap, kind="videoiq-ap").state_dict
    assert all(torch.equal(v, converted[k]) for k, v in stage.model.recognizer.state_dict().items())
    with pytest.raises(SystemExit) as exit_code:  # three paths: a clear configuration error
        CONVERT.main([str(src), str(ap), str(fp)])
    assert exit_code.value.code == 2


def test_convert_refuses_a_checkpoint_of_another_layout_naming_the_file(stages, tmp_path, capsys):
    import torchvision

    float_net = torchvision.models.resnet18(num_classes=3).state_dict()  # the original's step 1
    src = tmp_path / "resnet18_float.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in float_net.items()}}, src)
    for path in (src, stages["files"]["ap"]):  # and one of our own model files
        with pytest.raises(SystemExit) as exit_code:
            CONVERT.main([str(path), str(tmp_path / "out.pt"), "--output_dir", str(tmp_path / "c")])
        assert exit_code.value.code == 1
        err = capsys.readouterr().err
        assert f"checkpoint {path} is not a VideoIQ any-precision network" in err
        assert "reads resnet_videoiq or resnet_pact_ap checkpoints" in err
    assert not (tmp_path / "out.pt").exists()


def test_help_and_print_config(capsys):
    for command in (TRAIN, TEST, CONVERT, DEMO):
        fire.Fire(command, command=["--help"])
        out = capsys.readouterr().out
        assert "--model.bit_width_family" in out or "--model.arch" in out
    fire.Fire(TRAIN, command=["--print_config"])
    assert "stage: ???" in capsys.readouterr().out  # required
    fire.Fire(DEMO, command=["--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["width"] == 16 and printed["efficient_ws"]


def test_shipped_configs_resolve(capsys):
    from pathlib import Path

    configs = Path(__file__).resolve().parent.parent / "configs"
    fire.Fire(
        TRAIN,
        command=[
            str(configs / "synthetic.yml"),
            str(configs / "synthetic_train.yml"),
            "--stage",
            "fp",
            "--print_config",
        ],
    )
    fire.Fire(TEST, command=[str(configs / "synthetic.yml"), "--random_weights", "true", "--print_config"])
    fire.Fire(DEMO, command=[str(configs / "synthetic_demo.yml"), "--print_config"])
    assert capsys.readouterr().out.count("path_frame") == 3


def test_demo_end_to_end_tiny(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = SPEC
    fast = ["--epochs", "1", "--progress", "False"]
    stages = [
        f"--{s}.{a[2:]}" if a.startswith("--") else a
        for s in ("fp", "ap", "policy_backbone", "policy")
        for a in fast
    ]
    command = [
        "--root", "synth", "--data.storage", "frames", "--num_videos", str(spec["num_videos"]),
        "--model.num_class", "3", "--model.width", "4", "--model.policy_hidden", "8",
        "--model.policy_input_size", "32", "--data.num_frames", "4", "--data.batch_size", "4",
        "--data.transform.resize", "32", "--data.transform.crop", "32",
        *stages, "--efficient_ws", "[0.5]", "--output_dir", "run",
    ]  # fmt: skip
    fire.Fire(DEMO, command=command)
    out = capsys.readouterr().out
    assert "VideoIQ, efficient_w=0.5" in out and "any-precision, 2 bits" in out
    assert "evidence-free frames" in out and ("Target met" in out or "Target NOT met" in out)
    assert "[stage ap (ap):" in out  # elapsed time per stage
    rows = read_results(tmp_path / "run" / "results.json")
    assert [r.label for r in rows] == [
        "full precision, float resnet18",
        "any-precision, 32 bits",
        "any-precision, 4 bits",
        "any-precision, 2 bits",
        "VideoIQ, efficient_w=0.5",
    ]
    assert all(r.extra["gbitops_per_video"] > 0 and r.videos_per_s > 0 for r in rows)
    assert (
        rows[2].extra["gbitops_per_video"]
        < rows[1].extra["gbitops_per_video"]
        == rows[0].extra["gbitops_per_video"]
    )
    assert {"evidence_free_skip_or_lowest", "evidence_relative_cost"} <= set(rows[-1].extra)
    assert "Target" in (tmp_path / "run" / "results.txt").read_text()
    assert (tmp_path / "run" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "synth" / "meta.json").read_text())["spec"]["size"] == 32
    # the stages of a run are reused by a rerun with the same settings, never by one with others
    with pytest.raises(
        RunDirError, match=r"run/fp holds a stage run with other settings \(optim.lr changed\)"
    ):
        fire.Fire(DEMO, command=[*command, "--optim.lr", "0.01"])


def test_evidence_rates_by_frame_group():
    import numpy as np

    from videoiq.demo import evidence_rates

    actions = [["skip1", "2bit", "4bit", "32bit"], ["2bit", "32bit", "skip1", "4bit"]]
    evidence = np.array([[False, False, True, True], [False, True, False, True]])
    costs = {"32bit": 1.0, "4bit": 0.25, "2bit": 1 / 16, "skip1": 0.0}
    r = evidence_rates(actions, evidence, lowest="2bit", costs=costs)
    assert (r["evidence_free_frames"], r["evidence_frames"]) == (4, 4)
    assert (r["evidence_free_skip"], r["evidence_free_lowest_bits"], r["evidence_free_skip_or_lowest"]) == (
        0.5,
        0.5,
        1.0,
    )
    assert r["evidence_skip_or_lowest"] == 0.0
    assert r["evidence_free_relative_cost"] == pytest.approx(1 / 32) and r[
        "evidence_relative_cost"
    ] == pytest.approx(2.5 / 4)


def test_int8_option_runs_low_bit_frames_on_int8_kernels(stages, tmp_path, capsys, monkeypatch):
    policy = str(stages["files"]["policy"])
    # sampled (seeded) decisions: the one-epoch policy's argmax keeps every frame at 32 bits
    sampled = ["--checkpoint.init", policy, "--sample", "true"]
    _, fake, _ = _test(stages, "lmdb", tmp_path / "fake", *sampled)
    metrics, rows, _ = _test(
        stages,
        "lmdb",
        tmp_path / "int8",
        *sampled,
        "--int8",
        "true",
        "--engine.device",
        "cpu",
    )
    assert "int8: bit widths [4, 2] on the x86 int8 kernels" in capsys.readouterr().out
    assert metrics["int8"] == {
        "branches": [4, 2],
        "float_path": [32],
        "engine": "x86",
        "calibration_frames": 12,  # the first batch: the 3 held-out videos, 4 frames each
    }
    # the policy is the same float network: the same decisions; only the <= 8-bit frames change
    assert [r["actions"] for r in rows] == [r["actions"] for r in fake]
    low = [i for i, r in enumerate(rows) if any(b in (2, 4) for b in r["bits"])]
    assert low, "the tiny policy sent no frame to 4 or 2 bits"
    assert any(rows[i]["probs"] != fake[i]["probs"] for i in low)  # int8 kernels, not the float path
    for r, f in zip(rows, fake):
        if not any(b in (2, 4) for b in r["bits"]):
            assert r["probs"] == pytest.approx(f["probs"], abs=1e-5)
    # on a GPU (stood in for here: this machine may have none) the option is a clear error
    monkeypatch.setattr("videoiq.cli.resolve_device", lambda name: torch.device("cuda"))
    with pytest.raises(ConfigError, match="CPU kernels only"):
        _test(stages, "lmdb", tmp_path / "gpu", *sampled, "--int8", "true", "--engine.device", "cuda")
