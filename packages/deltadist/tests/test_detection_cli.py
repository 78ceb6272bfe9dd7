"""``deltadist-train / -eval / -convert --task detection`` end to end on a generated VID-format
folder (efficientdet_tiny, 64x64): teacher -> delta model -> evaluation, resuming, converting the
authors' layouts, and the error lines."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from test_detection_conversion import _mmdet_layout, _original_layout, _randomise

pytest.importorskip("effdet")
warnings.filterwarnings("ignore", category=FutureWarning)

from deltadist.cli import CONVERT, EVAL, TRAIN  # noqa: E402
from deltadist.delta import delta_layers  # noqa: E402
from deltadist.detection.commands import FRAME_KIND, KIND  # noqa: E402
from deltadist.detection.efficientdet import convert_efficientdet, efficientdet_tiny  # noqa: E402
from deltadist.detection.synthetic import generate_vid_detection  # noqa: E402
from effvid.model_files import read_model_file  # noqa: E402

TINY = ["--task", "detection", "--model.detector", "efficientdet_tiny", "--model.num_classes", "3"]
TINY += ["--model.size", "64", "--engine.progress", "False"]


@pytest.fixture(scope="module")
def vid(tmp_path_factory):
    root = tmp_path_factory.mktemp("vid")
    paths = generate_vid_detection(
        root / "frames", num_videos={"train": 2, "val": 1}, num_frames=6, size=64, num_classes=3, stills=1
    )
    lmdb = generate_vid_detection(
        root / "lmdb", num_videos={"train": 0, "val": 1}, num_frames=6, size=64, num_classes=3, storage="lmdb"
    )
    return {"root": root, **paths, "lmdb": lmdb}


def _data(vid, split, frames=None):
    return ["--data.path_label", str(vid[split]), "--data.path_frame", str(frames or vid["frames"])]


@pytest.fixture(scope="module")
def runs(vid):
    """A frame-based teacher and a delta model trained from it, both by deltadist-train."""
    root = vid["root"]
    train = [*TINY, *_data(vid, "train"), "--data.batch_size", "4", "--frames_per_video", "2"]
    torch.manual_seed(0)
    TRAIN.main(
        [
            *train,
            "--model.delta",
            "false",
            "--lr",
            "1e-3",
            "--engine.epochs",
            "1",
            "--output_dir",
            str(root / "t"),
        ]
    )
    delta_args = [*train, "--checkpoint.init", str(root / "t" / "model.pt"), "--engine.epochs", "1"]
    delta_args += ["--output_dir", str(root / "d")]
    TRAIN.main(delta_args)
    return {"teacher": root / "t", "delta": root / "d", "delta_args": delta_args}


def test_train_teacher_then_delta_model_from_it(runs, capsys):
    teacher = read_model_file(runs["teacher"] / "model.pt", kind=FRAME_KIND)
    delta = read_model_file(runs["delta"] / "model.pt", kind=KIND)
    assert "detector: efficientdet_tiny" in delta.config and "delta: false" in teacher.config
    assert "class_net.predict.conv_pw.student_lowrank.vertical.weight" in delta.state_dict
    assert "class_net.predict.conv_pw.weight" in teacher.state_dict
    # the stem is outside the delta layers: trained on from the teacher's weights, not from scratch
    before, after = (
        teacher.state_dict["backbone.conv_stem.weight"],
        delta.state_dict["backbone.conv_stem.weight"],
    )
    assert 0 < float((after - before).abs().max()) < 0.1 * float(before.abs().max())
    costs = json.loads((runs["delta"] / "layer_costs.json").read_text())
    names = [r["name"] for r in costs["layers"]]
    assert "class_net.predict.conv_pw" in names and sum(r["cost"] for r in costs["layers"]) == pytest.approx(
        1
    )
    assert (runs["delta"] / "checkpoints").is_dir()
    # resuming the finished run trains nothing
    capsys.readouterr()
    TRAIN.main(runs["delta_args"])
    assert "already holds the finished run (1 epochs); nothing to train" in capsys.readouterr().out


def test_eval_ap50_and_macs_of_teacher_and_delta_model(runs, vid, tmp_path, capsys):
    val = [*TINY, *_data(vid, "val")]
    EVAL.main(
        [
            *val,
            "--model.delta",
            "false",
            "--checkpoint",
            str(runs["teacher"] / "model.pt"),
            "--output_dir",
            str(tmp_path / "t"),
        ]
    )
    EVAL.main([*val, "--checkpoint", str(runs["delta"] / "model.pt"), "--output_dir", str(tmp_path / "d")])
    printed = capsys.readouterr().out
    assert "detection (frame-based efficientdet_tiny, clips of 10): AP50" in printed
    assert (
        "detection (delta efficientdet_tiny, clips of 10): AP50" in printed
        and "layers on the full student" in printed
    )
    teacher = json.loads((tmp_path / "t" / "metrics_detection.json").read_text())
    delta = json.loads((tmp_path / "d" / "metrics_detection.json").read_text())
    assert teacher["frames"] == delta["frames"] == 6  # one video of 6 frames, padded to one clip of 10
    assert 0 <= teacher["ap50"] <= 1 and 0 <= delta["ap50"] <= 1
    assert delta["layers"] == len(json.loads((runs["delta"] / "layer_costs.json").read_text())["layers"])
    # gates start at -1 (low-rank students): the delta model amortised over 10 frames costs less
    assert delta["macs_per_frame"] < 0.8 * teacher["macs_per_frame"]
    assert delta["gmacs_per_frame"] == pytest.approx(delta["macs_per_frame"] / 1e9)
    # the original's filter, and the same video from an LMDB
    EVAL.main(
        [
            *TINY,
            *_data(vid, "val", vid["lmdb"]["frames"]),
            "--data.path_label",
            str(vid["lmdb"]["val"]),
            "--data.storage",
            "lmdb",
            "--original_filter",
            "True",
            "--checkpoint",
            str(runs["delta"] / "model.pt"),
            "--output_dir",
            str(tmp_path / "f"),
        ]
    )
    filtered = json.loads((tmp_path / "f" / "metrics_detection.json").read_text())
    assert filtered["original_filter"] is True and filtered["frames"] == 6
    assert "original filter" in capsys.readouterr().out


def test_convert_the_authors_efficientdet_then_evaluate_it(vid, tmp_path):
    source = efficientdet_tiny(num_classes=3)
    convert_efficientdet(source, bias_mode="original")
    _randomise(source)
    torch.save({"state_dict": _original_layout(source)}, tmp_path / "effdet-delta.pth")
    out = tmp_path / "converted.pt"
    CONVERT.main([str(tmp_path / "effdet-delta.pth"), str(out), *TINY[:6], "--model.size", "64"])
    ours = read_model_file(out, kind=KIND).state_dict
    want = source.state_dict()
    assert list(ours) == list(want) and all(torch.equal(ours[k], want[k]) for k in want)
    assert "bias_mode: original" in read_model_file(out, kind=KIND).config
    EVAL.main(
        [
            *TINY,
            *_data(vid, "val"),
            "--model.bias_mode",
            "original",
            "--checkpoint",
            str(out),
            "--output_dir",
            str(tmp_path / "e"),
        ]
    )
    metrics = json.loads((tmp_path / "e" / "metrics_detection.json").read_text())
    full = sum(layer.choice() == "full" for layer in delta_layers(source).values())
    assert metrics["full_students"] == full and metrics["weights"] == str(out)
    # a frame-based checkpoint converts to a plain model (--model.delta false)
    plain = efficientdet_tiny(num_classes=3)
    torch.save({f"model.{k}": v for k, v in plain.state_dict().items()}, tmp_path / "effdet-frame.pth")
    CONVERT.main(
        [str(tmp_path / "effdet-frame.pth"), str(tmp_path / "plain.pt"), *TINY[:6], "--model.delta", "false"]
    )
    got = read_model_file(tmp_path / "plain.pt", kind=FRAME_KIND).state_dict
    assert all(torch.equal(got[k], v) for k, v in plain.state_dict().items())


def _error(command, argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        command.main(argv)
    return exc.value.code, capsys.readouterr().err


def test_error_lines(runs, vid, tmp_path, capsys):
    from test_detection_faster_rcnn import _tiny as tiny_faster_rcnn

    frcnn = tmp_path / "frcnn.pth"
    torch.save(_mmdet_layout(tiny_faster_rcnn(), delta=False), frcnn)
    effdet = tmp_path / "effdet.pth"
    torch.save(efficientdet_tiny(num_classes=3).state_dict(), effdet)
    code, err = _error(CONVERT, [str(tmp_path / "missing.pth"), str(tmp_path / "x.pt"), *TINY[:6]], capsys)
    assert code == 1 and "missing.pth: file not found" in err
    code, err = _error(CONVERT, [str(frcnn), str(tmp_path / "x.pt"), *TINY[:6]], capsys)
    assert code == 1 and err.splitlines()[0] == (
        f"deltadist-convert: error: {frcnn}: expected an EfficientDet checkpoint in effdet's names "
        "(backbone.*, fpn.*, class_net.*, box_net.*); found mmdet names"
    )
    code, err = _error(
        CONVERT,
        [
            str(effdet),
            str(tmp_path / "x.pt"),
            "--task",
            "detection",
            "--model.detector",
            "faster_rcnn_r101_dc5",
        ],
        capsys,
    )
    assert (
        code == 1
        and f"{effdet}: expected a Faster R-CNN checkpoint in mmdet's names" in err
        and "found effdet names" in err
    )
    code, err = _error(
        CONVERT,
        [str(effdet), str(tmp_path / "x.pt"), "--task", "detection", "--model.detector", "yolo"],
        capsys,
    )
    assert (
        code == 2
        and "model.detector must be one of efficientdet_d0, efficientdet_tiny, faster_rcnn_r101_dc5; got 'yolo'"
        in err
    )
    assert not (tmp_path / "x.pt").exists()
    # a frame-based model file given as the delta model
    code, err = _error(
        EVAL,
        [
            *TINY,
            *_data(vid, "val"),
            "--checkpoint",
            str(runs["teacher"] / "model.pt"),
            "--output_dir",
            str(tmp_path / "e"),
        ],
        capsys,
    )
    assert (
        code == 1
        and "model.pt: holds a frame-based detector (effvid-deltadist-detection-frame-v1); evaluate it with "
        "--model.delta false"
        in err
    )
    code, err = _error(
        TRAIN,
        [
            *TINY,
            "--data.path_label",
            str(tmp_path / "none.json"),
            "--data.path_frame",
            str(vid["frames"]),
            "--output_dir",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert code == 1 and "none.json: annotation file not found" in err
    code, err = _error(TRAIN, ["--task", "tracking"], capsys)
    assert code == 2 and "task must be one of segmentation, detection; got 'tracking'" in err


def test_resume_continues_with_more_epochs(runs, vid, tmp_path, capsys):
    import shutil

    run = tmp_path / "d"
    shutil.copytree(runs["delta"], run)
    args = [a if a != str(runs["delta"]) else str(run) for a in runs["delta_args"]]
    args[args.index("--engine.epochs") + 1] = "2"
    before = read_model_file(run / "model.pt", kind=KIND).state_dict
    capsys.readouterr()
    TRAIN.main(args)
    assert "trained the delta efficientdet_tiny" in capsys.readouterr().out
    after = read_model_file(run / "model.pt", kind=KIND).state_dict
    assert not torch.equal(
        before["class_net.predict.conv_pw.gate.logit"], after["class_net.predict.conv_pw.gate.logit"]
    )
    # a changed learning setting is refused, naming it
    code, err = _error(TRAIN, [*args, "--alpha", "5"], capsys)
    assert code == 2 and "(alpha changed)" in err


def test_print_config_and_the_task_in_a_yaml(tmp_path, capsys):
    capsys.readouterr()
    TRAIN.main(["--task", "detection", "--print_config"])
    printed = capsys.readouterr().out
    assert (
        "task: detection" in printed and "detector: efficientdet_d0" in printed and "alpha: 100.0" in printed
    )
    cfg = tmp_path / "det.yml"
    cfg.write_text("task: detection\nmodel:\n  detector: faster_rcnn_r101_dc5\ndata:\n  path_label: v.json\n")
    EVAL.main([str(cfg), "--data.path_frame", "Data/VID", "--checkpoint", "m.pt", "--print_config"])
    printed = capsys.readouterr().out
    assert "detector: faster_rcnn_r101_dc5" in printed and "clip_length: 10" in printed
    (tmp_path / "seg.yml").write_text("task: segmentation\n")
    code, err = _error(TRAIN, [str(tmp_path / "seg.yml")], capsys)
    assert code == 2 and "seg.yml: 'task: segmentation' is the default; remove the key" in err
