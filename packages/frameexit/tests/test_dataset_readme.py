"""datasets/activitynet/README.md, followed literally: generated .mp4 files through extract-frames,
build-lists and build-lmdb to frameexit-infer with an original-layout checkpoint."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import cv2
import numpy as np
import torch
from original_reference import OriginalFrameExit, randomise

from effvid.tools.build_lists import BUILD_LISTS
from effvid.tools.build_lmdb import BUILD_LMDB
from effvid.tools.extract_frames import EXTRACT
from frameexit.cli import INFER

README = Path(__file__).resolve().parents[3] / "datasets" / "activitynet" / "README.md"
COMMANDS = {
    "extract-frames": EXTRACT,
    "build-lists": BUILD_LISTS,
    "build-lmdb": BUILD_LMDB,
    "frameexit-infer": INFER,
}


def readme_commands() -> list[list[str]]:
    """The command lines of the README's first bash block, as a shell would split them."""
    block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert block, f"{README} has no bash block"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]


def make_data(root: Path) -> list[str]:
    """Three 3-second videos (10 fps), an annotation file with 200 training labels, the checkpoint."""
    videos = root / "videos"
    videos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = ["vid_a", "vid-b", "vid_c"]
    for vid in ids:
        writer = cv2.VideoWriter(str(videos / f"v_{vid}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (80, 60))
        for _ in range(30):
            writer.write(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
        writer.release()
    names = [f"activity {i:03d}" for i in range(200)]
    database = {
        f"train{i}": {"subset": "training", "annotations": [{"label": n}]} for i, n in enumerate(names)
    }
    labels = {"vid_a": [names[3]], "vid-b": [names[7], names[150]], "vid_c": [names[199]]}
    for vid, labs in labels.items():
        database[vid] = {"subset": "validation", "annotations": [{"label": n} for n in labs]}
    (root / "activity_net.v1-3.min.json").write_text(json.dumps({"database": database}))
    original = randomise(OriginalFrameExit(), 0)  # the released layout: ResNet-50, 4096, 200 classes
    state = {f"module.{k}": v for k, v in original.state_dict().items()}
    torch.save(state, root / "activitynet_checkpoint_25gmac.pth")
    return [f"v_{vid}.mp4" for vid in ids]


def test_readme_commands_from_mp4_to_results(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    keys = make_data(Path("data/activitynet"))
    commands = readme_commands()
    assert [c[0] for c in commands] == [
        "extract-frames",
        "build-lists",
        "build-lmdb",
        "frameexit-infer",
        "frameexit-infer",
    ]
    for argv in commands:
        COMMANDS[argv[0]].main(argv[1:])
    assert Path("data/activitynet/classes.txt").read_text().splitlines()[7] == "activity 007"
    assert Path("data/activitynet/split_validation.txt").read_text().split() == keys
    assert (Path("data/activitynet/frames") / keys[0] / "image_00001.jpg").is_file()
    runs = sorted(Path("runs").glob("frameexit-infer-*"))
    assert len(runs) == 2
    rows = [[json.loads(x) for x in (r / "predictions.jsonl").read_text().splitlines()] for r in runs]
    assert [r["video"] for r in rows[0]] == keys and rows[0] == rows[1]  # frames == LMDB
    assert rows[0][1]["labels"] == [7, 150]  # multi-label
    metrics = json.loads((runs[0] / "metrics_eval.json").read_text())
    assert metrics["num_videos"] == 3 and metrics["weights"].endswith(
        "activitynet_checkpoint_25gmac.pth (original)"
    )
    assert "top1/Hit@1" in capsys.readouterr().out
