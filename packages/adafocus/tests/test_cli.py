"""The commands end to end on generated data: every training stage and hand-off, test, show."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import fire
import pytest
import torch
import yaml

from adafocus.cli import CONVERT, DEMO, SHOW, TEST, TRAIN
from adafocus.config import EvalConfig
from effvid.config import ConfigError, load_config
from effvid.data import SyntheticSpec, build_dataset, generate
from effvid.engine import read_training_checkpoint
from effvid.model_files import ModelFileError
from effvid.reports import read_results

SPEC = {"num_classes": 4, "num_videos": 16, "num_frames": 8, "size": 48}
MODEL = {
    "num_class": 4,
    "glance": "tiny_cnn",
    "glance_width": 4,
    "focus": "tiny_cnn",
    "focus_width": 4,
    "patch_size": 16,
    "grid": 3,
    "glance_size": 32,
    "policy_hidden": 12,
    "classifier_hidden": 10,
    "dropout": 0.0,
}
FAST = ["--engine.epochs", "1", "--engine.progress", "False", "--data.batch_size", "4"]


def write_config(path: Path, info, storage: str, **model) -> Path:
    cfg = {
        "data": {
            "format": "list",
            "storage": storage,
            "path_frame": str(info.storage_path),
            "path_label": str(info.train_list),
            "path_classid": str(info.classes),
            "sampler": "uniform",
            "num_frames": 4,
            "batch_size": 4,
            "transform": {"resize": 48, "crop": 48, "train_crop": "center", "flip": False},
        },
        "model": {**MODEL, **model},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def train(cfg: Path, out: Path, *args: str) -> Path:
    fire.Fire(TRAIN, command=[str(cfg), *FAST, *args, "--output_dir", str(out)])
    return out / "model.pt"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A tiny benchmark in frames and LMDB form, and every stage trained through adafocus-train."""
    root = tmp_path_factory.mktemp("af")
    infos = {kind: generate(root / kind, SyntheticSpec(storage=kind, **SPEC)) for kind in ("frames", "lmdb")}
    cfg = write_config(root / "cfg.yml", infos["lmdb"], "lmdb")
    files = {"s0": train(cfg, root / "s0", "--stage", "0")}
    files["s1"] = train(cfg, root / "s1", "--stage", "1", "--checkpoint.init", str(files["s0"]))
    files["s2"] = train(
        cfg, root / "s2", "--stage", "2", "--ppo.epochs", "3", "--checkpoint.init", str(files["s1"])
    )
    files["s2d"] = train(
        cfg,
        root / "s2d",
        "--stage",
        "2",
        "--policy_training",
        "differentiable",
        "--checkpoint.init",
        str(files["s1"]),
    )
    files["s3"] = train(cfg, root / "s3", "--stage", "3", "--checkpoint.init", str(files["s2"]))
    files["s3f"] = train(
        cfg, root / "s3f", "--stage", "3", "--stage3_focus", "true", "--checkpoint.init", str(files["s2d"])
    )
    return {"root": root, "infos": infos, "cfg": cfg, "files": files}


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _changed(a: dict, b: dict) -> set[str]:
    """Top-level parts (glance, focus, policy, classifier) whose tensors differ."""
    return {k.split(".")[0] for k in a if not torch.equal(a[k], b[k])}


def test_each_stage_writes_its_kind_and_trains_only_its_parts(chain):
    f = {name: _load(path) for name, path in chain["files"].items()}
    kinds = {name: obj["format"] for name, obj in f.items()}
    assert kinds == {
        "s0": "effvid-adafocus-stage0-v1",
        "s1": "effvid-adafocus-stage1-v1",
        "s2": "effvid-adafocus-stage2-v1",
        "s2d": "effvid-adafocus-stage2-v1",
        "s3": "effvid-adafocus-v1",
        "s3f": "effvid-adafocus-v1",
    }
    sd = {name: obj["state_dict"] for name, obj in f.items()}
    assert _changed(sd["s0"], sd["s1"]) == {"focus", "classifier"}  # the glance stays frozen
    assert _changed(sd["s1"], sd["s2"]) == {"policy"}
    assert _changed(sd["s1"], sd["s2d"]) == {"policy"}
    assert _changed(sd["s2"], sd["s3"]) == {"classifier"}  # as the released code
    assert _changed(sd["s2d"], sd["s3f"]) == {"focus", "classifier"}  # --stage3_focus: as the paper
    # stage 0 trained both backbones with their heads, each alone, in its own run folder
    assert (chain["root"] / "s0" / "glance" / "checkpoints").is_dir()
    assert (chain["root"] / "s0" / "focus" / "checkpoints").is_dir()
    assert "stage: 2" in f["s2"]["config"] and "epochs: 3" in f["s2"]["config"]
    ppo_checkpoint = next((chain["root"] / "s2" / "checkpoints").glob("checkpoint_*.pt"))
    assert {"model", "optimizer", "trainer", "rng"} <= set(read_training_checkpoint(ppo_checkpoint))


def test_a_finished_stage_is_not_trained_again(chain, capsys):
    train(chain["cfg"], chain["root"] / "s3", "--stage", "3", "--checkpoint.init", str(chain["files"]["s2"]))
    assert "already holds the finished run" in capsys.readouterr().out


def test_hand_offs_are_checked(chain, tmp_path):
    cfg, files = chain["cfg"], chain["files"]
    with pytest.raises(
        ModelFileError,
        match=r"s0/model\.pt: is the output of stage 0 \(adafocus-stage0\); stage 2 needs the output of "
        r"stage 1 \(adafocus-stage1\)",
    ):
        train(cfg, tmp_path / "a", "--stage", "2", "--checkpoint.init", str(files["s0"]))
    assert not (tmp_path / "a").exists()  # a run that failed at once leaves nothing behind
    with pytest.raises(
        ModelFileError, match=r"s3/model\.pt: is the output of stage 3 \(adafocus\); stage 3 needs"
    ):
        train(cfg, tmp_path / "b", "--stage", "3", "--checkpoint.init", str(files["s3"]))
    with pytest.raises(ConfigError, match=r"stage 1 continues from stage 0: give --checkpoint.init"):
        train(cfg, tmp_path / "c", "--stage", "1")
    with pytest.raises(ModelFileError, match=r"other model settings \(model\.patch_size 16 there, 24 here\)"):
        train(
            cfg,
            tmp_path / "d",
            "--stage",
            "2",
            "--model.patch_size",
            "24",
            "--checkpoint.init",
            str(files["s1"]),
        )
    with pytest.raises(ConfigError, match="stage must be one of 0, 1, 2, 3; got 4"):
        train(cfg, tmp_path / "e", "--stage", "4")
    with pytest.raises(ConfigError, match="policy_training must be one of ppo, differentiable"):
        train(cfg, tmp_path / "f", "--stage", "2", "--policy_training", "gumbel")
    with pytest.raises(ModelFileError, match=r"s0/model\.pt: is the output of stage 0 .*adafocus-test needs"):
        fire.Fire(
            TEST,
            command=[str(cfg), "--checkpoint.init", str(files["s0"]), "--output_dir", str(tmp_path / "g")],
        )


def test_train_command_line_errors_exit_with_one_line(chain, capsys):
    with pytest.raises(SystemExit) as info:
        TRAIN.main([str(chain["cfg"]), "--stage", "2", "--checkpoint.init", str(chain["files"]["s3"])])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "adafocus-train: error:" in err and "is the output of stage 3 (adafocus)" in err


def _test(chain, storage: str, out: Path, *args: str) -> tuple[dict, list[dict]]:
    info = chain["infos"][storage]
    cfg = write_config(out.parent / f"{out.name}.yml", info, storage)
    command = [str(cfg), "--data.path_label", str(info.val_list), "--output_dir", str(out)]
    fire.Fire(TEST, command=[*command, "--engine.progress", "False", *args])
    metrics = json.loads((out / "metrics_eval.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return metrics, rows


@pytest.mark.parametrize("storage", ["frames", "lmdb"])
def test_test_writes_metrics_and_per_frame_patches(chain, storage, tmp_path, capsys):
    metrics, rows = _test(chain, storage, tmp_path / "t", "--checkpoint.init", str(chain["files"]["s3"]))
    printed = capsys.readouterr().out
    assert "top1" in printed and "GMACs per video" in printed and "videos/s" in printed
    val_keys = [line.split()[0] for line in chain["infos"][storage].val_list.read_text().splitlines()]
    assert [r["video"] for r in rows] == val_keys and metrics["num_videos"] == len(val_keys)
    assert 0 <= metrics["top1"] <= 1 and 0 <= metrics["map"] <= 1 and metrics["policy"] == "argmax"
    for r in rows:
        assert r["steps_used"] == 4 and r["exit_step"] == 3  # no threshold: every step
        assert len(r["patches"]) == len(r["step_probs"]) == len(r["actions"]) == 4
        for (top, left, bottom, right), action in zip(r["patches"], r["actions"]):
            assert bottom - top == right - left == 16 and 0 <= top and bottom <= 48 and right <= 48
            assert (top, left) == (action // 3 * 16, action % 3 * 16)  # the 3x3 grid, 32-px span
        assert all(abs(sum(p) - 1) < 1e-4 for p in r["step_probs"]) and r["probs"] == r["step_probs"][-1]
        assert r["gmacs"] == pytest.approx(metrics["mean_gmacs"])


def test_exit_threshold_and_random_patches(chain, tmp_path):
    s3 = str(chain["files"]["s3"])
    full, _ = _test(chain, "lmdb", tmp_path / "full", "--checkpoint.init", s3)
    early, rows = _test(chain, "lmdb", tmp_path / "early", "--checkpoint.init", s3, "--exit_threshold", "0")
    assert early["mean_steps"] == 1 and all(len(r["patches"]) == 1 for r in rows)
    assert early["mean_gmacs"] == pytest.approx(full["mean_gmacs"] / 4)
    random, rows = _test(chain, "lmdb", tmp_path / "random", "--checkpoint.init", s3, "--policy", "random")
    assert all(a == -1 for r in rows for a in r["actions"])  # positions not from the policy ...
    costs = random["unit_costs_macs"]
    assert random["mean_gmacs"] * 1e9 == pytest.approx(full["mean_gmacs"] * 1e9 - 4 * costs["policy"])
    stage1, _ = _test(
        chain,
        "lmdb",
        tmp_path / "stage1",
        "--checkpoint.init",
        str(chain["files"]["s1"]),
        "--policy",
        "random",
    )
    assert stage1["num_videos"] == full["num_videos"]  # a stage-1 model is evaluated on random patches
    # frame skipping at similarity -1: every frame after the first is only glanced
    skip, rows = _test(chain, "lmdb", tmp_path / "skip", "--checkpoint.init", s3, "--skip_similarity", "-1")
    assert skip["mean_steps"] == 4 and skip["mean_focused"] == 1 and skip["skip_similarity"] == -1
    assert all(r["skipped"] == [1, 2, 3] and r["patches"][1:] == [None] * 3 for r in rows)
    costs = skip["unit_costs_macs"]
    focused_once = 4 * costs["glance"] + costs["policy"] + costs["focus"] + costs["classifier"]
    assert skip["mean_gmacs"] * 1e9 == pytest.approx(focused_once)


def test_show_draws_the_patches(chain, tmp_path, capsys):
    info = chain["infos"]["frames"]
    cfg = write_config(tmp_path / "show.yml", info, "frames")
    key = info.val_list.read_text().split()[0]
    fire.Fire(
        SHOW,
        command=[
            str(cfg),
            "--data.path_label",
            str(info.val_list),
            "--checkpoint.init",
            str(chain["files"]["s3"]),
            "--video",
            key,
            "--columns",
            "2",
            "--output_dir",
            str(tmp_path / "show"),
        ],
    )
    assert f"picture: {tmp_path / 'show' / f'patches_{key}.png'}" in capsys.readouterr().out
    image = cv2.imread(str(tmp_path / "show" / f"patches_{key}.png"))
    assert image.shape[0] > 2 * 2 * 48 and image.shape[1] == 2 * (2 * 48 + 2)  # 2 rows of 2 frames, x2
    assert (image == (40, 220, 40)[::-1]).all(axis=2).sum() > 4 * 16  # the green patch outlines
    with pytest.raises(Exception, match=r"video 'nope' is not in"):
        fire.Fire(
            SHOW,
            command=[
                str(cfg),
                "--checkpoint.init",
                str(chain["files"]["s3"]),
                "--video",
                "nope",
                "--output_dir",
                str(tmp_path / "x"),
            ],
        )


def test_authors_checkpoint_through_the_registered_converter(tmp_path):
    """adafocus-test on the authors' file (--checkpoint.format original) and on its adafocus-convert
    output give the same predictions, and the original's own evaluation picks the same patches."""
    from original_reference import OriginalGFV, randomise
    from test_conversion import SMALL, _checkpoint

    ref = randomise(OriginalGFV(focus_arch="resnet50", **SMALL), 0).eval()
    ref.focuser.policy.policy_old.load_state_dict(ref.focuser.policy.policy.state_dict())
    ckpt = tmp_path / "128s3_checkpoint.pth.tar"
    torch.save(_checkpoint(ref), ckpt)
    info = generate(tmp_path / "data", SyntheticSpec(storage="frames", num_classes=6, num_videos=12, size=64))
    model = {"num_class": 6, "glance": "mobilenet_v2", "focus": "resnet50", "patch_size": 32, "grid": 7}
    model.update(glance_size=64, policy_hidden=32, classifier_hidden=24)
    cfg = write_config(tmp_path / "orig.yml", info, "frames", **model)
    cfg_text = yaml.safe_load(cfg.read_text())
    for key in ("glance_width", "focus_width"):
        del cfg_text["model"][key]
    cfg_text["data"]["transform"].update(resize=64, crop=64)
    cfg.write_text(yaml.safe_dump(cfg_text))
    common = [str(cfg), "--data.path_label", str(info.val_list), "--engine.progress", "False"]
    fire.Fire(TEST, command=[*common, "--checkpoint.init", str(ckpt), "--checkpoint.format", "original",
                             "--output_dir", str(tmp_path / "orig")])  # fmt: skip
    fire.Fire(CONVERT, command=[str(cfg), "--src", str(ckpt), "--dst", str(tmp_path / "model.pt"),
                                "--output_dir", str(tmp_path / "c")])  # fmt: skip
    assert _load(tmp_path / "model.pt")["format"] == "effvid-adafocus-v1"
    fire.Fire(
        TEST,
        command=[
            *common,
            "--checkpoint.init",
            str(tmp_path / "model.pt"),
            "--output_dir",
            str(tmp_path / "ours"),
        ],
    )
    a = (tmp_path / "orig" / "predictions.jsonl").read_text().splitlines()
    b = (tmp_path / "ours" / "predictions.jsonl").read_text().splitlines()
    assert a == b and len(a) == 6

    data = load_config(
        EvalConfig, [str(cfg)], {"data.path_label": str(info.val_list), "random_weights": True}
    ).data
    dataset = build_dataset(data, num_classes=6)
    for i, line in enumerate(a):
        row = json.loads(line)
        logits, actions = ref.evaluate(dataset[i]["video"].flatten(0, 1)[None])
        assert row["actions"] == actions[0].tolist()
        expected = torch.softmax(logits[0, -1], 0)
        assert torch.allclose(torch.tensor(row["probs"]), expected, atol=1e-4)
    # a stage-1 file of theirs (random patches) has no policy: converted as adafocus-stage1
    no_policy = _checkpoint(ref)
    no_policy["policy"] = None
    for entry in ("model_state_dict", "focuser"):
        no_policy[entry] = {k: v for k, v in no_policy[entry].items() if "policy." not in k}
    torch.save(no_policy, tmp_path / "128checkpoint.pth.tar")
    convert = [str(cfg), "--src", str(tmp_path / "128checkpoint.pth.tar"), "--dst", str(tmp_path / "s1.pt")]
    with pytest.raises(Exception, match=r"11 missing"):
        fire.Fire(CONVERT, command=[*convert, "--output_dir", str(tmp_path / "c3")])
    fire.Fire(CONVERT, command=[*convert, "--stage", "1", "--output_dir", str(tmp_path / "c1")])
    assert _load(tmp_path / "s1.pt")["format"] == "effvid-adafocus-stage1-v1"


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_shipped_configs_resolve(capsys):
    for name, command in (
        ("activitynet.yml", TRAIN),
        ("synthetic_train.yml", TRAIN),
        ("synthetic.yml", DEMO),
    ):
        fire.Fire(command, command=[str(CONFIGS / name), "--print_config"])
        assert "patch_size" in capsys.readouterr().out
    fire.Fire(TEST, command=[str(CONFIGS / "activitynet.yml"), "--random_weights", "true", "--print_config"])
    assert "patch_size: 128" in capsys.readouterr().out


def test_demo_end_to_end_tiny(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fast = []
    for stage in ("stage0", "stage1", "stage2", "stage3"):
        fast += [f"--{stage}.epochs", "1", f"--{stage}.progress", "False"]
    model = {"glance_width": 4, "focus_width": 4, "patch_size": 16, "grid": 3, "glance_size": 32}
    model.update(policy_hidden=12, classifier_hidden=10)
    options = [f"--model.{k}={v}" for k, v in model.items()]
    fire.Fire(
        DEMO,
        command=["--root", "synth", "--num_videos", "24", "--size", "48", "--data.num_frames", "4",
                 "--data.batch_size", "8", "--exit_thresholds", "[0.5]", *options, *fast, "--output_dir", "run"],
    )  # fmt: skip
    out = capsys.readouterr().out
    for text in ("full frame", "glance alone", "AdaFocus, random patches", "AdaFocus, policy by PPO",
                 "AdaFocus, policy by differentiable crop", "AdaFocus+, PPO policy, exit at p>=0.5",
                 "AdaFocus+, PPO policy, skip + exit at p>=0.5", "AdaFocus+, PPO policy, skip at similarity>=",
                 "Patches holding at least half of the object", "[stage2-ppo:"):  # fmt: skip
        assert text in out
    assert ("Target met" in out) or ("Target NOT met" in out)
    rows = read_results(tmp_path / "run" / "results.json")
    assert len(rows) == 8 and all(r.gmacs_per_video > 0 and r.videos_per_s > 0 for r in rows)
    skip_row = rows[5]  # frames: those the focus network saw; every frame was glanced
    assert skip_row.setting.startswith("PPO policy, skip at") and skip_row.extra["frames_glanced"] == 4
    assert skip_row.frames_per_video <= 4 and skip_row.gmacs_per_video <= rows[3].gmacs_per_video
    assert rows[0].gmacs_per_video > rows[2].gmacs_per_video  # a patch costs less than the frame
    assert 0 <= rows[2].extra["coverage"] <= 1
    for name in ("results.txt", "tradeoff.png", "patches_ppo.png", "stage3-ppo/model.pt", "stage0/model.pt"):
        assert (tmp_path / "run" / name).is_file()
