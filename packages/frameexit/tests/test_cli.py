"""Commands end to end on generated data: training, inference (frames and LMDB), sweep, conversion,
the shipped ActivityNet config with an original-layout checkpoint."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import cv2
import fire
import numpy as np
import pytest
import torch
import yaml
from original_reference import OriginalFrameExit, randomise

from effvid.config import ConfigError
from effvid.data import DataConfig, SyntheticSpec, build_dataset, close_lmdb_envs, generate
from effvid.reports import read_results
from frameexit.build import build_model
from frameexit.cli import CONVERT, INFER, SWEEP, TRAIN
from frameexit.data import frameexit_data_config
from frameexit.evaluation import evaluate_dataset

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SPEC = {"num_classes": 4, "num_videos": 16, "num_frames": 12, "size": 32}


def write_config(path: Path, info, storage: str) -> Path:
    cfg = {
        "data": {
            "format": "list",
            "storage": storage,
            "path_frame": str(info.storage_path),
            "path_label": str(info.train_list),
            "path_classid": str(info.classes),
            "num_frames": 4,
            "order": [2, 0, 3, 1],
            "batch_size": 5,
            "transform": {
                "style": "standard",
                "resize": 32,
                "crop": 32,
                "train_crop": "center",
                "flip": False,
            },
        },
        "model": {"backbone": "tiny_cnn", "backbone_width": 4, "num_class": 4, "hidden": 16},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A synthetic set in frames and LMDB form, and stage-1 + stage-2 models trained through the CLI."""
    root = tmp_path_factory.mktemp("fe")
    infos = {kind: generate(root / kind, SyntheticSpec(storage=kind, **SPEC)) for kind in ("frames", "lmdb")}
    cfg = write_config(root / "cfg.yml", infos["lmdb"], "lmdb")
    engine = ["--engine.epochs", "1", "--data.batch_size", "4", "--engine.progress", "False"]
    fire.Fire(TRAIN, command=[str(cfg), "--output_dir", str(root / "s1"), *engine])
    fire.Fire(
        TRAIN,
        command=[
            str(cfg),
            "--stage",
            "2",
            "--beta",
            "0.1",
            "--checkpoint.init",
            str(root / "s1" / "model.pt"),
            "--output_dir",
            str(root / "s2"),
            *engine,
        ],
    )
    return {"root": root, "infos": infos, "cfg": cfg}


def test_training_validates_and_keeps_the_best(trained):
    info = trained["infos"]["lmdb"]
    out = trained["root"] / "with-val"
    fire.Fire(
        TRAIN,
        command=[
            str(trained["cfg"]),
            "--output_dir",
            str(out),
            "--engine.epochs",
            "2",
            "--engine.eval_every",
            "1",
            "--val_list",
            str(info.val_list),
            "--engine.progress",
            "False",
        ],
    )
    scores = [json.loads((out / f"metrics_val_epoch{e}.json").read_text())["hit1"] for e in (1, 2)]
    (best,) = (out / "best").iterdir()
    assert best.name == f"best_model_{1 + scores.index(max(scores))}_hit1={max(scores):.4f}.pt"
    with pytest.raises(ConfigError, match="engine.eval_every needs val_list"):
        fire.Fire(TRAIN, command=[str(trained["cfg"]), "--engine.eval_every", "1", "--print_config"])


def test_rerun_nan_and_changed_settings_through_the_cli(trained, capsys):
    """A finished run is not retrained; a diverging run fails with no model written."""
    s1 = trained["root"] / "s1"
    before = (s1 / "model.pt").stat().st_mtime_ns
    engine = ["--engine.epochs", "1", "--data.batch_size", "4", "--engine.progress", "False"]
    TRAIN.main([str(trained["cfg"]), "--output_dir", str(s1), *engine])
    assert "already holds the finished run" in capsys.readouterr().out
    assert (s1 / "model.pt").stat().st_mtime_ns == before
    with pytest.raises(SystemExit) as info:
        TRAIN.main([str(trained["cfg"]), "--output_dir", str(s1), *engine, "--lr", "0.5"])
    assert info.value.code == 2 and "lr changed" in capsys.readouterr().err
    nan_run = trained["root"] / "nan"
    with pytest.raises(SystemExit) as info:
        TRAIN.main([str(trained["cfg"]), "--output_dir", str(nan_run), *engine, "--lr", "1e30"])
    assert info.value.code == 1
    assert re.search(
        r"frameexit-train: error: training loss is (nan|inf) at iteration \d+", capsys.readouterr().err
    )
    assert not (nan_run / "model.pt").exists()
    with pytest.raises(SystemExit) as info:  # inference needs weights, said at config load
        INFER.main([str(trained["cfg"]), "--output_dir", str(trained["root"] / "noweights")])
    assert info.value.code == 2 and "no weights: give --checkpoint.init" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        INFER.main([str(trained["cfg"]), "--model.first_threshold", "nan", "--random_weights", "true"])
    assert (
        info.value.code == 2
        and "model.first_threshold must be a probability in [0, 1]; got nan" in capsys.readouterr().err
    )


def test_nonfinite_scores_fail_and_skipped_videos_are_recorded(trained, tmp_path):
    info = trained["infos"]["lmdb"]
    listed = tmp_path / "val_plus_missing.txt"
    listed.write_text(info.val_list.read_text() + "not_downloaded 12 1\n")
    out = tmp_path / "skip"
    INFER.main(
        [
            str(trained["cfg"]),
            "--data.path_label",
            str(listed),
            "--data.on_missing",
            "skip",
            "--checkpoint.init",
            str(trained["root"] / "s2" / "model.pt"),
            "--output_dir",
            str(out),
        ]
    )
    metrics = json.loads((out / "metrics_eval.json").read_text())
    assert metrics["skipped_videos"] == {"count": 1, "keys": ["not_downloaded"]}
    data = _lmdb_val_data(trained, order=[2, 0, 3, 1])
    data.transform.style, data.transform.resize, data.transform.crop = "standard", 32, 32
    model = build_model(yaml_model(), num_frames=4)
    with torch.no_grad():
        model.mlp[0].bias.fill_(float("nan"))  # every frame feature, every step
    with pytest.raises(FloatingPointError, match=r"non-finite class scores for \d+ video\(s\), first 'vid_"):
        evaluate_dataset(
            model,
            build_dataset(data, num_classes=4),
            batch_size=4,
            device=torch.device("cpu"),
            progress=False,
        )


def test_two_stage_training_trains_the_right_parts(trained):
    s1 = torch.load(trained["root"] / "s1" / "model.pt", weights_only=True)
    s2 = torch.load(trained["root"] / "s2" / "model.pt", weights_only=True)
    assert s1["format"] == "effvid-frameexit-v1" and "num_class: 4" in s1["config"]
    a, b = s1["state_dict"], s2["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("gates."))  # frozen in stage 2
    assert not torch.equal(a["gates.0.fc1.weight"], b["gates.0.fc1.weight"])  # gates learned
    assert torch.equal(a["gates.2.fc1.weight"], b["gates.2.fc1.weight"])  # the last gate is never used
    assert (trained["root"] / "s2" / "checkpoints").is_dir() and (
        trained["root"] / "s2" / "config.yaml"
    ).is_file()


@pytest.mark.parametrize("storage", ["frames", "lmdb"])
def test_infer_writes_metrics_and_predictions(trained, storage, capsys):
    info = trained["infos"][storage]
    cfg = write_config(trained["root"] / f"infer-{storage}.yml", info, storage)
    out = trained["root"] / f"infer-{storage}"
    fire.Fire(
        INFER,
        command=[
            str(cfg),
            "--data.path_label",
            str(info.val_list),
            "--checkpoint.init",
            str(trained["root"] / "s2" / "model.pt"),
            "--output_dir",
            str(out),
        ],
    )
    printed = capsys.readouterr().out
    assert "top1/Hit@1" in printed and "GMACs per video" in printed and "exit histogram" in printed
    metrics = json.loads((out / "metrics_eval.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    val_keys = [line.split()[0] for line in info.val_list.read_text().splitlines()]
    assert [r["video"] for r in rows] == val_keys and metrics["num_videos"] == len(val_keys)
    for r in rows:
        assert r["frames_used"] == r["exit_step"] + 1 and 1 <= r["frames_used"] <= 4
        assert len(r["probs"]) == 4 and abs(sum(r["probs"]) - 1) < 1e-4
        assert r["gmacs"] > r["gmacs_backbone"] > 0 and r["labels"] == [int(r["labels"][0])]
    assert metrics["mean_frames"] == pytest.approx(np.mean([r["frames_used"] for r in rows]))
    assert sum(metrics["exit_histogram"].values()) == pytest.approx(1.0)
    assert 0.0 <= metrics["hit1"] <= 1.0 and 0.0 <= metrics["map"] <= 1.0


def _lmdb_val_data(trained, **options) -> DataConfig:
    """The generated validation list over the generated LMDB, 4 frames per video."""
    info = trained["infos"]["lmdb"]
    return DataConfig(
        format="list",
        storage="lmdb",
        path_frame=str(info.storage_path),
        path_label=str(info.val_list),
        num_frames=4,
        **options,
    )


def test_streaming_decodes_only_the_frames_used(trained, monkeypatch):
    data = _lmdb_val_data(trained, order=[2, 0, 3, 1], batch_size=3)
    data.transform.style, data.transform.resize, data.transform.crop = "standard", 32, 32
    dataset = build_dataset(data, num_classes=4)
    model = build_model(yaml_model(), num_frames=4)
    model.first_threshold = 0.0  # every video exits after its first frame
    import effvid.data.storage as storage_module

    decoded = []
    original = storage_module.decode_image
    monkeypatch.setattr(
        storage_module,
        "decode_image",
        lambda data, *, where, min_side=None: decoded.append(where) or original(data, where=where),
    )
    result = evaluate_dataset(
        model, dataset, batch_size=3, device=torch.device("cpu"), stream=True, prefetch=False, progress=False
    )
    used = sum(r["frames_used"] for r in result.rows)
    assert used == len(dataset) and len(decoded) == used + 1  # +1: the frame-shape probe of frame 0

    # prefetching decodes each running video's next frame ahead: at most one frame in vain per video
    # (how many of those ran before the run ended and dropped them depends on timing)
    decoded.clear()
    ahead = evaluate_dataset(
        model, dataset, batch_size=3, device=torch.device("cpu"), stream=True, prefetch=True, progress=False
    )
    assert ahead.rows == result.rows
    assert used + 1 <= len(decoded) <= used + 1 + len(dataset)


def test_capped_run_counts_the_macs_that_ran(trained):
    """--max_steps k with exits on: a video stopped at the cap consults no gate at step k-1."""
    from effvid.flops import crosscheck
    from frameexit.inference import early_exit

    data = _lmdb_val_data(trained, order=[2, 0, 3, 1], batch_size=4)
    data.transform.style, data.transform.resize, data.transform.crop = "standard", 32, 32
    dataset = build_dataset(data, num_classes=4)
    model = build_model(yaml_model(), num_frames=4).eval()
    model.first_threshold, model.gate_threshold = 1.0, 1.0  # nobody exits before the cap
    result = evaluate_dataset(
        model, dataset, batch_size=4, device=torch.device("cpu"), max_steps=2, progress=False
    )
    for i, row in enumerate(result.rows[:3]):
        assert row["frames_used"] == 2
        frames = dataset[i]["video"][None]
        crosscheck(
            lambda f=frames: early_exit(model, lambda a, s: f[a, s], 1, max_steps=2), row["gmacs"] * 1e9
        )


def test_lmdb_readahead_option_reaches_the_storage(trained):
    data = _lmdb_val_data(trained, order=[0, 1, 2, 3])
    assert build_dataset(data, num_classes=4).storage.readahead is False
    data.lmdb_readahead = True
    close_lmdb_envs()  # one process maps a database once: other tests opened it without readahead
    dataset = build_dataset(data, num_classes=4)
    assert dataset.storage.readahead is True and dataset[0]["video"].shape[0] == 4
    close_lmdb_envs()


def yaml_model():
    from frameexit.config import ModelConfig

    return ModelConfig(backbone="tiny_cnn", backbone_width=4, num_class=4, hidden=16)


def test_sweep_writes_table_and_curve(trained):
    info = trained["infos"]["lmdb"]
    out = trained["root"] / "sweep"
    fire.Fire(
        SWEEP,
        command=[
            str(trained["cfg"]),
            "--data.path_label",
            str(info.val_list),
            "--checkpoint.init",
            str(trained["root"] / "s2" / "model.pt"),
            "--thresholds",
            "[0.2,0.9]",
            "--output_dir",
            str(out),
        ],
    )
    lines = (out / "tradeoff.csv").read_text().splitlines()
    assert lines[0] == "gate_threshold,hit1,map,mean_frames,mean_gmacs" and len(lines) == 3
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"


def _fake_activitynet(root: Path) -> dict[str, Path]:
    classes = [f"class {i}" for i in range(200)]
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    db = {"a_1": ["class 3"], "b-2": ["class 7", "class 150"], "c3": ["class 199"], "t": ["class 0"]}
    ann = {
        "database": {
            k: {"subset": "training" if k == "t" else "validation", "annotations": [{"label": x} for x in v]}
            for k, v in db.items()
        }
    }
    (root / "anet.json").write_text(json.dumps(ann))
    (root / "split.txt").write_text("v_a_1.mp4\nv_b-2.mp4\nv_c3.mp4\n")
    rng = np.random.default_rng(0)
    for vid in ("a_1", "b-2", "c3"):
        folder = root / "frames" / f"v_{vid}.mp4"
        folder.mkdir(parents=True)
        for i in range(1, 13):
            cv2.imwrite(
                str(folder / f"image_{i:05d}.jpeg"), rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
            )
        (folder / "thumbnail.jpg").write_bytes(b"not read: the pattern is *.jpeg")
    return {
        "frames": root / "frames",
        "json": root / "anet.json",
        "classes": root / "classes.txt",
        "split": root / "split.txt",
    }


def test_activitynet_config_with_original_checkpoint_and_converter(tmp_path):
    paths = _fake_activitynet(tmp_path)
    ref = randomise(OriginalFrameExit(), 0)  # the released layout: ResNet-50, 4096, 200 classes, 10 gates-1
    ckpt = tmp_path / "activitynet_checkpoint_25gmac.pth"
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, ckpt)
    common = [
        str(CONFIGS / "activitynet.yml"),
        "--data.path_frame",
        str(paths["frames"]),
        "--data.path_split",
        str(paths["split"]),
        "--data.path_label",
        str(paths["json"]),
        "--data.path_classid",
        str(paths["classes"]),
        "--data.num_workers",
        "0",
        "--data.frame_pattern",
        "*.jpeg",  # these folders also hold a thumbnail.jpg, which is not a frame
    ]
    fire.Fire(
        INFER,
        command=[
            *common,
            "--checkpoint.init",
            str(ckpt),
            "--checkpoint.format",
            "original",
            "--output_dir",
            str(tmp_path / "orig"),
        ],
    )
    fire.Fire(
        CONVERT,
        command=[
            "--src",
            str(ckpt),
            "--dst",
            str(tmp_path / "model.pt"),
            "--output_dir",
            str(tmp_path / "c"),
        ],
    )
    fire.Fire(
        INFER,
        command=[
            *common,
            "--checkpoint.init",
            str(tmp_path / "model.pt"),
            "--checkpoint.format",
            "effvid",
            "--output_dir",
            str(tmp_path / "ours"),
        ],
    )
    a = [json.loads(x) for x in (tmp_path / "orig" / "predictions.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "ours" / "predictions.jsonl").read_text().splitlines()]
    assert [r["video"] for r in a] == ["v_a_1.mp4", "v_b-2.mp4", "v_c3.mp4"]
    assert a[1]["labels"] == [7, 150]  # multi-label ActivityNet video
    assert a == b
    # the original's batch-1 loop on the same preprocessed frames exits at the same step
    cfg_model = build_model(
        yaml.safe_load((CONFIGS / "activitynet.yml").read_text()) and _anet_model(),
        num_frames=10,
    )
    assert cfg_model.first_threshold == 0.99
    data = frameexit_data_config()
    data = replace(
        data,
        path_frame=str(paths["frames"]),
        path_split=str(paths["split"]),
        path_label=str(paths["json"]),
        path_classid=str(paths["classes"]),
        frame_pattern="*.jpeg",
    )
    dataset = build_dataset(data, num_classes=200)
    for i, row in enumerate(a):
        step, probs = ref.run_video(dataset[i]["video"])
        assert row["exit_step"] == step
        assert np.allclose(row["probs"], probs.numpy(), atol=1e-5)


def _anet_model():
    from frameexit.config import ModelConfig

    return ModelConfig(**yaml.safe_load((CONFIGS / "activitynet.yml").read_text())["model"])


def test_shipped_configs_resolve(capsys):
    for name in ("activitynet", "minikinetics", "synthetic_train"):  # shipped configs, by name
        command = TRAIN if name.startswith("synthetic") else INFER
        fire.Fire(command, command=[name, "--print_config"])
        assert "path_frame" in capsys.readouterr().out
    with pytest.raises(
        ConfigError, match=r"config file not found: activitynett .*shipped: activitynet, minikinetics"
    ):
        fire.Fire(INFER, command=["activitynett", "--print_config"])


def test_demo_end_to_end_tiny(tmp_path, monkeypatch, capsys):
    from frameexit.cli import DEMO

    monkeypatch.chdir(tmp_path)
    fast = ["--epochs", "1", "--progress", "False"]
    fire.Fire(
        DEMO,
        command=[
            "--root",
            "synth",
            "--data.storage",
            "frames",
            "--num_videos",
            "16",
            "--model.num_class",
            "4",
            "--model.backbone",
            "tiny_cnn",
            "--model.backbone_width",
            "4",
            "--model.hidden",
            "16",
            "--data.num_frames",
            "4",
            "--data.order",
            "[2,0,3,1]",
            "--data.batch_size",
            "8",
            "--data.transform.style",
            "standard",
            "--data.transform.resize",
            "64",
            "--data.transform.crop",
            "64",
            *[a.replace("--", "--stage1.") if a.startswith("--") else a for a in fast],
            *[a.replace("--", "--stage2.") if a.startswith("--") else a for a in fast],
            "--finetune_epochs",
            "1",
            "--betas",
            "[0.1]",
            "--output_dir",
            "run",
        ],
    )
    out = capsys.readouterr().out
    assert "FrameExit, no exit (4 frames)" in out and "FrameExit, beta=0.1" in out
    assert ("Target met" in out) or ("Target NOT met" in out)
    rows = read_results(tmp_path / "run" / "results.json")
    assert [r.label for r in rows][-1] == "FrameExit, beta=0.1" and len(rows) == 5  # 2 models, k=1,2, 1 beta
    assert all(r.gmacs_per_video > 0 and r.videos_per_s > 0 for r in rows)
    assert rows[2].setting == "k=1" and rows[2].frames_per_video == 1.0
    assert "Target" in (tmp_path / "run" / "results.txt").read_text()  # the verdict is in the file too
    assert (tmp_path / "run" / "tradeoff.png").is_file() and (
        tmp_path / "run" / "stage1" / "model.pt"
    ).is_file()


def _torchrun(script: str, args: list[str]) -> str:
    """Run ``script args`` as ``torchrun --nproc_per_node 2`` does; returns its stdout."""
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    rendezvous = ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    done = subprocess.run(
        [*launcher, *rendezvous, script, *args], timeout=300, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("launch", ["spawn", "torchrun"])
def test_train_with_two_gloo_processes(trained, capfd, launch):
    """frameexit-train spawning its processes, or started by torchrun: one gloo group, rank 0 saves."""
    import os
    import shutil
    import sys

    out = trained["root"] / f"ddp-{launch}"
    args = [str(trained["cfg"]), "--output_dir", str(out), "--engine.epochs", "1"]
    args += ["--data.batch_size", "4", "--engine.progress", "False", "--engine.backend", "gloo"]
    if launch == "spawn":
        fire.Fire(TRAIN, command=[*args, "--engine.nproc_per_node", "2"])
        printed = capfd.readouterr().out
    else:
        script = shutil.which("frameexit-train", path=os.path.dirname(sys.executable))
        assert script, "the frameexit-train console script is installed next to the interpreter"
        printed = _torchrun(script, args)
    assert "trained on 2 process(es)" in printed
    before = torch.load(trained["root"] / "s1" / "model.pt", weights_only=True)["state_dict"]
    after = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert set(after) == set(before) and not torch.equal(
        after["classifiers.0.weight"], before["classifiers.0.weight"]
    )


def test_infer_speed_options_through_the_cli(trained):
    """--fast (fold + channels-last, the default) gives the plain run's exits and probabilities;
    int8 and bf16 run end to end and give valid probabilities (their accuracy is the benchmark's)."""
    info = trained["infos"]["frames"]
    cfg = write_config(trained["root"] / "infer-fast.yml", info, "frames")
    base = [
        str(cfg),
        "--data.path_label",
        str(info.val_list),
        "--checkpoint.init",
        str(trained["root"] / "s2" / "model.pt"),
    ]

    def run(name: str, *options: str) -> list[dict]:
        out = trained["root"] / f"infer-{name}"
        fire.Fire(INFER, command=[*base, "--output_dir", str(out), *options])
        return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]

    plain = run("plain", "--fast.fold_bn", "false", "--fast.channels_last", "false")
    fast = run("fast")
    assert [r["exit_step"] for r in fast] == [r["exit_step"] for r in plain]
    np.testing.assert_allclose([r["probs"] for r in fast], [r["probs"] for r in plain], atol=1e-4)
    for name, options in (("int8", ("--fast.int8", "true")), ("bf16", ("--engine.amp", "bf16"))):
        # the exit guard (on by default) keeps float32's exits; probabilities move by the approximation
        rows = run(name, *options)
        assert [r["exit_step"] for r in rows] == [r["exit_step"] for r in plain]
        np.testing.assert_allclose([r["probs"] for r in rows], [r["probs"] for r in plain], atol=0.05)
        assert all(isinstance(r["rechecked"], bool) for r in rows)
        metrics = json.loads((trained["root"] / f"infer-{name}" / "metrics_eval.json").read_text())
        assert metrics["seconds"]["setup"] > 0 and metrics["seconds"]["videos"] > 0
        guard = metrics["exit_guard"]
        assert len(guard["margins_logit"]) == 3 and all(m > 0 for m in guard["margins_logit"])
        assert guard["factor"] == 4.0 and guard["calibration_videos"] == 4
        unguarded = run(f"{name}-unguarded", *options, "--exit_guard", "null")
        assert len(unguarded) == len(plain) and "rechecked" not in unguarded[0]
        assert all(abs(sum(r["probs"]) - 1) < 1e-3 and 1 <= r["frames_used"] <= 4 for r in unguarded)
