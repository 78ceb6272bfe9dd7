"""The commands end to end on generated data: train from a frame-based teacher, evaluate (synthetic
and Cityscapes-format folders), convert an authors' checkpoint, the demo, and the error lines."""

from __future__ import annotations

import json

import fire
import pytest
import torch
import yaml
from cityscapes_folder import make_cityscapes
from original_reference import convert_original, randomise

from deltadist.build import build_model
from deltadist.cli import CONVERT, DEMO, EVAL, TRAIN
from deltadist.config import ModelConfig
from deltadist.conversion import KIND, load_original_checkpoint
from deltadist.cost import layer_costs
from deltadist.models import get_model
from effvid.data import SyntheticSpec, generate
from effvid.model_files import load_weights, read_model_file, read_state_dict, save_model
from effvid.reports import read_results

MODEL = {"arch": "tiny_segnet", "width": 4, "num_classes": 4}
QUIET = ["--engine.progress", "False"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A synthetic set, a frame-based teacher file and a delta model trained from it by deltadist-train."""
    root = tmp_path_factory.mktemp("dd")
    info = generate(
        root / "syn",
        SyntheticSpec(task="segmentation", num_videos=8, num_classes=2, num_frames=6, size=32, window=2),
    )
    transform = {"resize": 32, "crop": 32, "train_crop": "center", "flip": False}
    data = {"format": "synthetic_segmentation", "path_frame": str(info.storage_path), "batch_size": 4}
    cfg = root / "train.yml"
    cfg.write_text(
        yaml.safe_dump(
            {"data": {**data, "path_label": str(info.train_list), "transform": transform}, "model": MODEL}
        )
    )
    torch.manual_seed(0)
    teacher = get_model("tiny_segnet", num_classes=4, width=4)
    save_model(teacher, root / "teacher.pt", kind=f"{KIND}-frame", config="")
    args = ["--checkpoint.init", str(root / "teacher.pt"), "--checkpoint.format", "frame_based"]
    args += ["--task_loss", "ce", "--optimizer", "adam", "--beta", "0.5", "--engine.epochs", "1", *QUIET]
    fire.Fire(TRAIN, command=[str(cfg), *args, "--output_dir", str(root / "run")])
    return {"root": root, "info": info, "cfg": cfg, "teacher": teacher, "args": args, "data": data}


def test_train_starts_from_the_teacher_and_saves_the_delta_model(trained):
    run = trained["root"] / "run"
    state = read_model_file(run / "model.pt", kind=KIND).state_dict
    assert "high.0.student_lowrank.vertical.weight" in state and "fuse.0.gate.logit" in state
    assert "arch: tiny_segnet" in read_model_file(run / "model.pt", kind=KIND).config
    # the stem is outside the delta layers and was trained from the teacher's weights, not from scratch
    teacher = trained["teacher"].state_dict()
    moved = (state["stem.0.weight"] - teacher["stem.0.weight"]).abs().max()
    assert 0 < moved < 0.1 * teacher["stem.0.weight"].abs().max()
    costs = json.loads((run / "layer_costs.json").read_text())
    assert [r["name"] for r in costs["layers"]] == [
        "high.0",
        "down.0",
        "context.0.0",
        "context.1.0",
        "fuse.0",
    ]
    assert costs["unit"] == "MAC" and sum(r["cost"] for r in costs["layers"]) == pytest.approx(1.0)
    assert (run / "checkpoints").is_dir()


def test_eval_on_the_synthetic_set_writes_both_protocols(trained, capsys):
    info, out = trained["info"], trained["root"] / "eval"
    cfg = trained["root"] / "eval.yml"
    data = {**trained["data"], "path_label": str(info.val_list), "transform": {"resize": 32, "crop": 32}}
    cfg.write_text(yaml.safe_dump({"data": data, "model": MODEL}))
    init = ["--checkpoint.init", str(trained["root"] / "run" / "model.pt")]
    fire.Fire(EVAL, command=[str(cfg), *init, "--engine.progress", "False", "--output_dir", str(out)])
    printed = capsys.readouterr().out
    assert "pairs: mIoU" in printed and "streaming: mIoU" in printed and "per distance: d=0" in printed
    pairs = json.loads((out / "metrics_pairs.json").read_text())
    stream = json.loads((out / "metrics_streaming.json").read_text())
    assert set(pairs["miou_per_distance"]) == {"0", "1", "2"} and 0 <= pairs["miou"] <= 1
    assert stream["frames"] == stream["scored_frames"] == 6 * 2  # two validation videos, all frames labelled
    assert pairs["gmacs_per_frame"] < pairs["gmacs_per_frame_teacher"]


def test_eval_on_a_cityscapes_folder_end_to_end(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    cfg = tmp_path / "cs.yml"
    transform = {"resize": 24, "crop": 24}
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "format": "cityscapes",
                    "path_frame": str(root),
                    "subset": "val",
                    "transform": transform,
                },
                "model": {**MODEL, "num_classes": 19},
                "protocols": ["pairs"],
                "keyframe_interval": 2,
            }
        )
    )
    fire.Fire(
        EVAL,
        command=[
            str(cfg),
            "--random_weights",
            "True",
            "--engine.progress",
            "False",
            "--output_dir",
            str(tmp_path / "o"),
        ],
    )
    m = json.loads((tmp_path / "o" / "metrics_pairs.json").read_text())
    assert (
        list(m["miou_per_distance"]) == ["0", "1"] and m["labelled_frames"] == 2 and m["weights"] == "RANDOM"
    )
    assert m["frame_shape"] == [3, 24, 32] and not (tmp_path / "o" / "metrics_streaming.json").exists()


@pytest.fixture()
def original_checkpoint(tmp_path):
    ref = get_model("tiny_segnet", num_classes=4, width=4)
    convert_original(ref)
    randomise(ref, seed=3).eval()
    path = tmp_path / "dd-tiny.pth"
    torch.save({f"model.{k}": v for k, v in ref.state_dict().items()}, path)
    return path


def test_convert_writes_a_model_file_equal_to_the_strict_load(original_checkpoint, tmp_path):
    out = tmp_path / "out.pt"
    model_args = ["--model.arch", "tiny_segnet", "--model.width", "4", "--model.num_classes", "4"]
    CONVERT.main([str(original_checkpoint), str(out), *model_args])
    cfg = ModelConfig(**MODEL, bias_mode="original")
    ours, direct, hook = build_model(cfg), build_model(cfg), build_model(cfg)
    load_weights(ours, out, kind=KIND)
    load_original_checkpoint(direct, original_checkpoint)
    load_weights(hook, original_checkpoint, kind=KIND, fmt="original")  # the core's converter registry
    for other in (direct, hook):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), other.state_dict().values()))
    assert list(ours.state_dict()) == list(direct.state_dict())


def test_the_registered_converter_sends_deployed_checkpoints_to_deltadist_convert(original_checkpoint):
    from deltadist.conversion import original_to_effvid

    state = read_state_dict(original_checkpoint)
    deployed = {k: v for k, v in state.items() if not k.startswith(("model.fuse.0.g_", "model.fuse.0.W."))}
    deployed["model.fuse.0.W.weight"] = state["model.fuse.0.W.weight"]
    deployed["model.fuse.0.g_W.weight"] = state["model.fuse.0.g_Wa.weight"]
    with pytest.raises(
        ValueError,
        match="key 'fuse.0.g_W.weight' is of a deployed checkpoint; convert it with deltadist-convert",
    ):
        original_to_effvid(deployed)
    converted = original_to_effvid(state)
    assert "fuse.0.student_lowrank.horizontal.weight" in converted and "fuse.0.gate.logit" in converted
    assert not any(".g_" in k or k.startswith("model.") for k in converted)


def _error(command, argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        command.main(argv)
    return exc.value.code, capsys.readouterr().err


def test_error_lines_name_the_layer_or_file(trained, original_checkpoint, tmp_path, capsys):
    cfg, base = str(trained["cfg"]), [*trained["args"]]
    code, err = _error(
        TRAIN, [cfg, *base, "--model.include", "['nothing.*']", "--output_dir", str(tmp_path / "a")], capsys
    )
    assert code == 2 and "selects no Conv2d of TinySegNet, which has 7" in err
    model_args = ["--model.arch", "tiny_segnet", "--model.width", "4", "--model.num_classes", "4"]
    code, err = _error(
        CONVERT,
        [str(original_checkpoint), str(tmp_path / "x.pt"), *model_args, "--model.factor_ch", "2"],
        capsys,
    )
    assert (
        code == 1
        and "its key 'model.high.0.g_Wb.0.weight' is a rank-2 low-rank student where the model has rank 4"
        in err
    )
    torch.manual_seed(0)
    other = build_model(ModelConfig(**MODEL, exclude=["fuse.*"]))
    layer_costs(other, (3, 32, 32)).to_json(tmp_path / "costs.json")
    code, err = _error(
        TRAIN,
        [cfg, *base, "--cost_table", str(tmp_path / "costs.json"), "--output_dir", str(tmp_path / "b")],
        capsys,
    )
    assert code == 1 and "costs.json" in err and "missing ['fuse.0']" in err
    root = make_cityscapes(tmp_path / "odd", odd_frame=True)
    data = ["--data.format", "cityscapes", "--data.path_frame", str(root), "--data.subset", "val"]
    code, err = _error(
        EVAL,
        [
            *data,
            "--data.transform.resize",
            "24",
            "--data.transform.crop",
            "24",
            "--random_weights",
            "True",
            "--model.arch",
            "tiny_segnet",
        ],
        capsys,
    )
    assert code == 1 and "frame 19 is 32x24 but frame 18 is 34x24" in err


def test_demo_tiny_end_to_end(tmp_path, capsys):
    size = ["--size", "32", "--data.transform.resize", "32", "--data.transform.crop", "32"]
    small = [
        "--num_videos",
        "8",
        "--num_classes",
        "2",
        "--num_frames",
        "6",
        "--width",
        "4",
        "--teacher.epochs",
        "1",
        "--delta.epochs",
        "1",
    ]
    fire.Fire(
        DEMO, command=["--root", str(tmp_path / "data"), "--output_dir", str(tmp_path / "run"), *small, *size]
    )
    printed = capsys.readouterr().out
    assert "[teacher training:" in printed and "Target" in printed
    rows = read_results(tmp_path / "run" / "results.json")
    assert [r.setting for r in rows] == [
        "frame by frame",
        "all full students (untrained: exact teacher)",
        "all low-rank students",
        "gated, beta=0.2",
        "gated, beta=0.5",
        "gated, latency-aware, beta=0.2",
    ]
    teacher, full, low = rows[:3]
    assert full.metrics["miou"] == pytest.approx(teacher.metrics["miou"])  # exact students
    assert low.gmacs_per_video < 0.6 * teacher.gmacs_per_video and low.extra["full_students"] == 0
    assert "per FRAME" in teacher.extra["per_frame"]
    assert "Target" in (tmp_path / "run" / "results.txt").read_text()
    assert (tmp_path / "run" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
