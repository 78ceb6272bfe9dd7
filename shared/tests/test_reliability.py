"""Faults a user meets: truncated videos, corrupt frames, concurrent or killed builds, file modes,
non-finite values in outputs, errors at the command line, run directories that must not be reused."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from effvid.cli import build_command
from effvid.config import MISSING, RunConfig, option
from effvid.data import DataConfig, DataError, FrameFolderStorage, LmdbStorage, build_dataset
from effvid.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from effvid.tools.build_lmdb import BUILD_LMDB, build_lmdb
from effvid.tools.extract_frames import EXTRACT


def _avi(path: Path, frames: int = 20) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


@pytest.fixture
def truncated(tmp_path):
    """A folder with a whole video and one cut at 60% of its bytes (opens; fewer frames decode)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    _avi(videos / "whole.avi")
    data = _avi(tmp_path / "full.avi").read_bytes()
    (videos / "cut.avi").write_bytes(data[: int(len(data) * 0.6)])
    return videos


def test_truncated_video_is_an_error_by_default(tmp_path, truncated, capsys):
    out = tmp_path / "frames"
    args = ["--videos", str(truncated), "--frames", str(out), "--workers", "1"]
    with pytest.raises(SystemExit) as info:
        EXTRACT.main(args)
    assert "1 of 2 videos failed" in str(info.value.code)
    assert "cut.avi decodes to 12 of the 20 frames its container lists" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["whole.avi"]  # nothing written for the cut one


def test_truncated_video_kept_on_request_is_never_done(tmp_path, truncated, capsys):
    out = tmp_path / "frames"
    args = ["--videos", str(truncated), "--frames", str(out), "--workers", "1", "--on_short", "keep"]
    EXTRACT.main(args)
    printed = capsys.readouterr().out
    assert "1 short video(s) kept as INCOMPLETE (retried on a rerun): cut.avi" in printed
    storage = FrameFolderStorage(out)
    assert storage.num_frames("whole.avi") == 20
    assert storage.num_frames("cut.avi") == 11  # 12 decoded, the one at the cut dropped
    assert (out / "cut.avi" / "INCOMPLETE").read_text() == "decoded 12 of 20 listed frames\n"
    EXTRACT.main(args)  # a rerun: the whole video is done, the short one is tried again
    assert "2 videos, 1 already done, 1 to do" in capsys.readouterr().out


def _frames(root: Path) -> Path:
    for key in ("a", "b"):
        folder = root / key
        folder.mkdir(parents=True)
        for i in range(3):
            ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 40 * i, np.uint8))
            (folder / f"img_{i + 1:05d}.jpg").write_bytes(buf.tobytes())
    return root


def test_build_lmdb_refuses_a_corrupt_frame_naming_it(tmp_path, capsys):
    src = _frames(tmp_path / "frames")
    (src / "b" / "img_00002.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(SystemExit) as info:
        BUILD_LMDB.main(["--source", str(src), "--output", str(tmp_path / "x.lmdb")])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "video 'b' frame 1" in err and "img_00002.jpg" in err and "corrupt image data" in err
    assert "Traceback" not in err and err.count("build-lmdb: error:") == 1
    assert not (tmp_path / "x.lmdb").exists() and not list(tmp_path.glob(".x.lmdb.tmp-*"))


def test_build_lmdb_one_build_per_destination_and_stale_temp_removed(tmp_path, capsys):
    src = _frames(tmp_path / "frames")
    out = tmp_path / "x.lmdb"
    with open(tmp_path / ".x.lmdb.lock", "w") as held:  # another build holds the destination
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SystemExit):
            BUILD_LMDB.main(["--source", str(src), "--output", str(out)])
        assert "another build-lmdb is writing" in capsys.readouterr().err
    stale = tmp_path / ".x.lmdb.tmp-99999"  # left by a killed build
    stale.mkdir()
    (stale / "data.mdb").write_bytes(b"half")
    assert build_lmdb(src, out) == 2
    assert "removing" in capsys.readouterr().out and not stale.exists()
    assert LmdbStorage(out).num_frames("b") == 3


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
        os.umask(0o002)
        atomic_write_json(tmp_path / "b.json", {"x": 1})
        assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o664
    finally:
        os.umask(old)


def test_strict_json_never_writes_nan(tmp_path):
    with pytest.raises(ValueError, match=r"line 2: value at probs\.1 is not finite"):
        atomic_write_jsonl(tmp_path / "p.jsonl", [{"probs": [0.5, 0.5]}, {"probs": [0.5, float("nan")]}])
    with pytest.raises(ValueError, match=r"m\.json: value at top1 is not finite"):
        atomic_write_json(tmp_path / "m.json", {"top1": float("inf")})
    assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "m.json").exists()


@dataclasses.dataclass
class Cmd(RunConfig):
    data: DataConfig = option(
        doc="data", default_factory=lambda: DataConfig(path_frame="frames", path_label="list.txt")
    )
    lr: float = option(0.1, "learning rate")
    name: str = option(MISSING, "a required key")


def _command(calls, *, resumable=False, name="toy-train"):
    def run(cfg, run_dir):
        calls.append(cfg)
        if cfg.lr < 0:
            build_dataset(cfg.data, num_classes=2)  # fails: the frame folder does not exist
        (run_dir / "out.txt").write_text("done")

    return build_command(run, Cmd, name=name, doc="toy", resumable=resumable)


def test_run_directory_rules(tmp_path, capsys):
    calls = []
    train, infer = _command(calls, resumable=True), _command(calls, name="toy-infer")
    run = tmp_path / "run"
    train.main(["--name", "x", "--output_dir", str(run)])
    assert (run / "config.yaml").read_text().startswith("# effvid command: toy-train\n")
    with pytest.raises(SystemExit) as info:  # another command's run is never overwritten
        infer.main(["--name", "x", "--output_dir", str(run)])
    assert info.value.code == 2
    assert "holds a run of 'toy-train'; refusing to overwrite it" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a changed training setting is named and refused
        train.main(["--name", "x", "--lr", "0.5", "--output_dir", str(run)])
    assert "other settings (lr changed)" in capsys.readouterr().err
    train.main(["--name", "x", "--data.num_workers", "3", "--output_dir", str(run)])  # safe to change
    assert "num_workers: 3" in (run / "config.yaml").read_text()  # config.yaml records what ran now
    train.main(["--name", "x", "--lr", "0.5", "--output_dir", str(run), "--fresh"])
    assert "moved the previous run to" in capsys.readouterr().out
    assert "lr: 0.5" in (run / "config.yaml").read_text()
    assert len(list(tmp_path.glob("run.old-*"))) == 1


def test_data_errors_are_one_line_and_a_failed_run_leaves_no_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("list.txt").write_text("a 3 0\n")
    calls = []
    cmd = _command(calls)
    with pytest.raises(SystemExit) as info:
        cmd.main(["--name", "x", "--lr", "-1", "--data.path_frame", "nowhere"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("toy-train: error: frame root folder not found: nowhere") and "Traceback" not in err
    assert not Path("runs").exists()  # neither the run's folder nor the runs/ it had to create
    with pytest.raises(SystemExit):
        cmd.main(["--name", "x", "--lr", "-1", "--data.path_frame", "nowhere", "--debug"])
    assert "Traceback" in capsys.readouterr().err


def test_registry_names_fail_at_config_load(capsys):
    calls = []
    with pytest.raises(SystemExit) as info:
        _command(calls).main(["--name", "x", "--data.storage", "lmbd"])
    assert info.value.code == 2 and not calls
    err = capsys.readouterr().err.strip()
    assert "data.storage: unknown storage 'lmbd'. Did you mean 'lmdb'? Valid: frames, lmdb, video" in err
    assert len(err.splitlines()) == 1


def test_null_means_none_for_optional_values(tmp_path):
    calls = []
    _command(calls).main(["--name", "x", "--data.path_label", "null", "--output_dir", str(tmp_path / "r")])
    assert calls[0].data.path_label is None


def test_nonfinite_model_output_is_refused():
    from effvid.model_files import first_nonfinite

    assert first_nonfinite({"a": torch.zeros(2), "b": torch.tensor([1.0, float("inf")])}) == "b"
    assert first_nonfinite({"a": torch.zeros(2, dtype=torch.int64)}) is None


def test_print_config_without_yaml_shows_defaults(capsys):
    _command([]).main(["--print_config"])
    out = capsys.readouterr().out
    assert "name: ???" in out and "lr: 0.1" in out and "storage: frames" in out


def test_dataset_reports_skipped_videos(tmp_path):
    root = _frames(tmp_path / "frames")
    (tmp_path / "list.txt").write_text("a 3 0\nmissing 3 1\nb 3 1\n")
    cfg = DataConfig(path_frame=str(root), path_label=str(tmp_path / "list.txt"), on_missing="skip")
    cfg.transform.resize = cfg.transform.crop = 16
    dataset = build_dataset(cfg, num_classes=2)
    assert len(dataset) == 2 and dataset.skipped == ["missing"]
    cfg.on_missing = "raise"
    with pytest.raises(DataError, match="listed video 'missing' is not usable"):
        build_dataset(cfg, num_classes=2)
    assert json.dumps(dataset.skipped) == '["missing"]'
