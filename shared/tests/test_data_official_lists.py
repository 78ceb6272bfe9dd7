"""FCVID and Sports-1M / Mini-Sports1M: readers of the official annotation files and the
build-lists path from them to dataset lists; extract-frames over class sub-folders."""

from __future__ import annotations

import functools
import logging

import fire
import numpy as np
import pytest

from effvid.data import (
    DataError,
    SyntheticSpec,
    VideoClassificationDataset,
    VideoRecord,
    encode_jpeg,
    generate,
    open_storage,
    read_fcvid_official,
    read_generic_list,
    read_sports1m_partition,
    read_youtube_ids,
    uniform_indices,
    youtube_id,
)
from effvid.tools.build_lists import BUILD_LISTS
from effvid.tools.extract_frames import EXTRACT


def _write_fcvid(tmp_path, rows, num_classes=239):
    """rows: (path, subset, positive classes) -> the two official files."""
    split = tmp_path / "FCVID_VideoName_TrainTestSplit.txt"
    labels = tmp_path / "FCVID_Label.txt"
    split.write_text("".join(f"{path} {subset}\n" for path, subset, _ in rows))
    lines = []
    for _, _, positive in rows:
        row = ["0"] * num_classes
        for c in positive:
            row[c] = "1"
        lines.append("\t".join(row) + "\n")
    labels.write_text("".join(lines))
    return split, labels


def test_fcvid_official_split_and_label_matrix(tmp_path):
    split, labels = _write_fcvid(
        tmp_path,
        [
            ("makingCake/abc.mp4", "train", [17]),
            ("beach/v 2.mp4", "test", [3, 238]),  # a space in the path; two labels
            ("panda/p.mp4", "test", [0]),
        ],
    )
    test = read_fcvid_official(split, labels, subset="test")
    assert test == [VideoRecord("v 2.mp4", None, (3, 238)), VideoRecord("p.mp4", None, (0,))]
    train = read_fcvid_official(split, labels, subset="train", key="path")
    assert train == [VideoRecord("makingCake/abc.mp4", None, (17,))]
    # floats as numpy writes them are read too
    labels.write_text(labels.read_text().replace("\t0", "\t0.000000e+00").replace("1\t", "1.000000e+00\t"))
    assert read_fcvid_official(split, labels, subset="test") == test


def test_fcvid_official_bad_input(tmp_path):
    split, labels = _write_fcvid(tmp_path, [("a/x.mp4", "train", [1]), ("b/y.mp4", "test", [2])])
    with open(split, "a") as f:
        f.write("c/z.mp4 test\n")
    with pytest.raises(DataError, match=r"lists 3 videos but .*FCVID_Label\.txt has 2 label rows"):
        read_fcvid_official(split, labels)
    split, labels = _write_fcvid(tmp_path, [("a/x.mp4", "val", [1])])
    with pytest.raises(
        DataError, match=r"Split\.txt:1: expected '<video path> train\|test', got 'a/x\.mp4 val'"
    ):
        read_fcvid_official(split, labels)
    split, labels = _write_fcvid(tmp_path, [("a/x.mp4", "test", [1])], num_classes=200)
    with pytest.raises(DataError, match=r"Label\.txt:1: expected 239 values, each 0 or 1, got 200 values"):
        read_fcvid_official(split, labels)
    split, labels = _write_fcvid(tmp_path, [("a/x.mp4", "test", [])])
    with pytest.raises(DataError, match=r"Label\.txt:1: video 'a/x\.mp4' has no positive label"):
        read_fcvid_official(split, labels)
    split, labels = _write_fcvid(tmp_path, [("a/x.mp4", "test", [1]), ("b/x.mp4", "test", [2])])
    with pytest.raises(DataError, match=r":2: video key 'x\.mp4' also names line 1; use key='path'"):
        read_fcvid_official(split, labels)
    assert [r.key for r in read_fcvid_official(split, labels, key="path")] == ["a/x.mp4", "b/x.mp4"]
    with pytest.raises(DataError, match="FCVID label file not found"):
        read_fcvid_official(split, tmp_path / "nope.txt")


def test_youtube_ids_from_urls_and_lists(tmp_path):
    assert youtube_id("https://www.youtube.com/watch?v=UDqivjS-lpI") == "UDqivjS-lpI"
    assert youtube_id("http://youtube.com/watch?feature=x&v=-_aBcDeF012") == "-_aBcDeF012"
    assert youtube_id("https://youtu.be/UDqivjS-lpI") == "UDqivjS-lpI"
    assert youtube_id("UDqivjS-lpI") == "UDqivjS-lpI"
    assert youtube_id("https://www.youtube.com/watch?v=short") is None
    ids = tmp_path / "ids.txt"
    ids.write_text("https://www.youtube.com/watch?v=UDqivjS-lpI 168\nAAAAAAAAAAA,3\nUDqivjS-lpI\n")
    assert read_youtube_ids(ids) == ["UDqivjS-lpI", "AAAAAAAAAAA"]
    ids.write_text("UDqivjS-lpI\nnot-an-id 4\n")
    with pytest.raises(
        DataError, match=r"ids\.txt:2: expected a YouTube URL or 11-character id first, got 'not-an-id'"
    ):
        read_youtube_ids(ids)


def test_sports1m_partition_subset_and_errors(tmp_path, caplog):
    part = tmp_path / "test_partition.txt"
    part.write_text(
        "https://www.youtube.com/watch?v=UDqivjS-lpI 168,169\n"
        "https://www.youtube.com/watch?v=AAAAAAAAAAA 0\n"
        "https://www.youtube.com/watch?v=UDqivjS-lpI 3\n"
        "https://www.youtube.com/watch?v=BBBBBBBBBBB 486\n"
    )
    with caplog.at_level(logging.WARNING):
        records = read_sports1m_partition(part)
    assert "1 videos are listed more than once; their labels were merged" in caplog.text
    assert records == [
        VideoRecord("UDqivjS-lpI.mp4", None, (3, 168, 169)),
        VideoRecord("AAAAAAAAAAA.mp4", None, (0,)),
        VideoRecord("BBBBBBBBBBB.mp4", None, (486,)),
    ]
    mini = read_sports1m_partition(part, ids=["BBBBBBBBBBB", "AAAAAAAAAAA"], key_template="{id}")
    assert [r.key for r in mini] == ["BBBBBBBBBBB", "AAAAAAAAAAA"]
    with pytest.raises(DataError, match=r"video 'CCCCCCCCCCC' of the subset is not in the partition file"):
        read_sports1m_partition(part, ids=["CCCCCCCCCCC"])
    part.write_text("https://www.youtube.com/watch?v=UDqivjS-lpI 487\n")
    with pytest.raises(DataError, match=r"partition\.txt:1: video 'UDqivjS-lpI' needs labels in \[0, 487\)"):
        read_sports1m_partition(part)
    part.write_text("https://www.youtube.com/watch?v=UDqivjS-lpI\n")
    with pytest.raises(DataError, match=r"partition\.txt:1: expected '<YouTube URL> <label,label,\.\.\.>'"):
        read_sports1m_partition(part)


def _frames(root, keys, counts):
    """A frame root with one folder of tiny JPEGs per key."""
    image = encode_jpeg(np.full((8, 8, 3), 128, np.uint8))
    for key, n in zip(keys, counts):
        (root / key).mkdir(parents=True)
        for i in range(n):
            (root / key / f"image_{i + 1:05d}.jpg").write_bytes(image)
    return root


def _build(tmp_path, run, *args):
    fire.Fire(BUILD_LISTS, command=[*map(str, args)])


def test_build_lists_fcvid_official_to_dataset(tmp_path):
    split, labels = _write_fcvid(
        tmp_path, [("cake/a.mp4", "test", [5]), ("cake/b.mp4", "train", [1]), ("beach/c.mp4", "test", [2, 7])]
    )
    frames = _frames(tmp_path / "frames", ["a.mp4", "c.mp4"], [5, 3])
    out = tmp_path / "lists"
    common = ["--format", "fcvid", "--annotations", split, "--labels", labels, "--out_dir", out]
    _build(tmp_path, "r1", *common, "--subset", "test", "--name", "test", "--frames", frames)
    assert (out / "split_test.txt").read_text() == "a.mp4\nc.mp4\n"
    assert (out / "test.txt").read_text() == "a.mp4 5 5\nc.mp4 3 2 7\n"
    records = read_generic_list(out / "test.txt", num_classes=239)
    ds = VideoClassificationDataset(
        records,
        open_storage("frames", frames),
        sampler=functools.partial(uniform_indices, n=4),
        num_classes=239,
        multi_label=True,
    )
    item = ds[1]
    assert tuple(item["video"].shape) == (4, 3, 8, 8)
    assert item["label"].nonzero().flatten().tolist() == [2, 7]
    with pytest.raises(DataError, match=r"--labels \(FCVID_Label\.txt\) is required"):
        _build(tmp_path, "r2", "--format", "fcvid", "--annotations", split, "--out_dir", out)
    with pytest.raises(DataError, match=r"listed video 'b\.mp4' has no frames in"):
        _build(tmp_path, "r3", *common, "--subset", "train", "--name", "train", "--frames", frames)
    split.write_text("cake/a.mp4 test\ncake/b.mp4 train\nbeach/c c.mp4 test\n")
    with pytest.raises(DataError, match=r"video key 'c c\.mp4' contains whitespace"):
        _build(tmp_path, "r4", *common, "--subset", "test", "--name", "test", "--frames", frames)


def test_build_lists_minisports1m_skips_missing_videos_with_a_count(tmp_path, caplog, capsys):
    part = tmp_path / "train_partition.txt"
    part.write_text(
        "https://www.youtube.com/watch?v=AAAAAAAAAAA 10\n"
        "https://www.youtube.com/watch?v=BBBBBBBBBBB 20,21\n"
        "https://www.youtube.com/watch?v=CCCCCCCCCCC 30\n"
    )
    ids = tmp_path / "train_minisports1m.txt"
    ids.write_text("CCCCCCCCCCC\nhttps://www.youtube.com/watch?v=BBBBBBBBBBB\n")
    frames = _frames(tmp_path / "frames", ["CCCCCCCCCCC.mp4"], [6])
    out = tmp_path / "lists"
    common = [
        "--format",
        "sports1m",
        "--annotations",
        part,
        "--ids",
        ids,
        "--out_dir",
        out,
        "--name",
        "train",
    ]
    with pytest.raises(DataError, match=r"listed video 'BBBBBBBBBBB\.mp4' has no frames"):
        _build(tmp_path, "r1", *common, "--frames", frames)
    assert not (out / "train.txt").exists()  # nothing half-written
    with caplog.at_level(logging.WARNING):
        _build(tmp_path, "r2", *common, "--frames", frames, "--on_missing", "skip")
    assert "leaving out video 'BBBBBBBBBBB.mp4'" in caplog.text
    assert "1 listed videos left out" in capsys.readouterr().out
    assert (out / "train.txt").read_text() == "CCCCCCCCCCC.mp4 6 30\n"
    assert (out / "split_train.txt").read_text() == "CCCCCCCCCCC.mp4\n"
    classes = tmp_path / "labels.txt"
    classes.write_text("".join(f"sport {i}\n" for i in range(25)))
    with pytest.raises(DataError, match=r"video 'CCCCCCCCCCC' needs labels in \[0, 25\)"):
        _build(tmp_path, "r3", *common, "--classes", classes)


def test_extract_frames_recursive_keeps_flat_names(tmp_path):
    info = generate(
        tmp_path / "synth",
        SyntheticSpec(storage="video", num_classes=2, num_videos=4, num_frames=6, window=2, size=32),
    )
    videos = tmp_path / "videos"
    for cls, name in (("cake", "vid_00000.mp4"), ("beach", "vid_00001.mp4")):
        (videos / cls).mkdir(parents=True)
        (videos / cls / name).write_bytes((info.storage_path / name).read_bytes())
    frames = tmp_path / "frames"
    args = ["--videos", str(videos), "--frames", str(frames), "--workers", "1"]
    with pytest.raises(DataError, match=r"no video with extension .* in .*videos$"):
        fire.Fire(EXTRACT, command=[*args])
    fire.Fire(EXTRACT, command=[*args, "--recursive", "true"])
    assert sorted(p.name for p in frames.iterdir()) == ["vid_00000.mp4", "vid_00001.mp4"]
    assert open_storage("frames", frames).num_frames("vid_00001.mp4") == 6
    (videos / "beach" / "vid_00000.mp4").write_bytes(b"")
    with pytest.raises(DataError, match=r"two videos are both named 'vid_00000\.mp4'"):
        fire.Fire(EXTRACT, command=[*args, "--recursive", "true"])
