"""The ILSVRC2015 VID list builder on a generated download: XML per frame -> the COCO-format JSON
that the reader and the clips use."""

from __future__ import annotations

import numpy as np
import pytest

from deltadist.detection.data import VidClips, read_vid_json
from deltadist.detection.vid_json import build_vid_json, main
from effvid.data import DataError, encode_jpeg, open_storage

_XML = """<annotation><folder>{folder}</folder><filename>{stem}</filename>
<size><width>80</width><height>60</height></size>{objects}</annotation>"""
_OBJ = """<object><trackid>{track}</trackid><name>{synset}</name><bndbox><xmax>{x1}</xmax><xmin>{x0}</xmin>
<ymax>{y1}</ymax><ymin>{y0}</ymin></bndbox><occluded>0</occluded><generated>0</generated></object>"""


def _download(root, split, snippets, frames):
    for s in range(snippets):
        rel = f"VID/{split}/ILSVRC2015_{split}_{s:08d}"
        (root / "Annotations" / rel).mkdir(parents=True)
        (root / "Data" / rel).mkdir(parents=True)
        for f in range(frames):
            obj = _OBJ.format(track=0, synset="n02958343", x0=10 + f, y0=5, x1=40 + f, y1=30)
            (root / "Annotations" / rel / f"{f:06d}.xml").write_text(
                _XML.format(
                    folder=rel,
                    stem=f"{f:06d}",
                    objects=obj if f % 3 else obj + obj.replace("n02958343", "n02391049"),
                )
            )
            (root / "Data" / rel / f"{f:06d}.JPEG").write_bytes(
                encode_jpeg(np.full((60, 80, 3), 100, np.uint8))
            )


def test_builds_the_json_the_reader_takes(tmp_path, capsys):
    _download(tmp_path, "val", 2, 12)
    out = tmp_path / "val.json"
    main([str(tmp_path), "val", str(out)])
    assert "2 videos, 24 frames, 32 boxes" in capsys.readouterr().out
    ann = read_vid_json(out)
    assert ann.num_classes == 30 and [v.key for v in ann.videos] == [
        "val/ILSVRC2015_val_00000000",
        "val/ILSVRC2015_val_00000001",
    ]
    first = ann.videos[0]
    assert first.boxes[1].tolist() == [[11.0, 5.0, 41.0, 30.0]] and first.labels[1].tolist() == [7]  # car
    assert sorted(first.labels[0].tolist()) == [7, 30]  # car, zebra
    clips = VidClips(ann, open_storage("frames", tmp_path / "Data" / "VID"), size=40, clip_length=10)
    item = clips[0]
    assert item["video"].shape == (10, 3, 40, 40)
    assert item["targets"][1]["boxes"].tolist() == [[5.5, 2.5, 20.5, 15.0]]  # scaled by 40 / 80
    assert build_vid_json(tmp_path, "val", tmp_path / "every2.json", every=2)["videos"] == 1


def test_bad_download_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="Annotations/VID/train: not found"):
        build_vid_json(tmp_path, "train", tmp_path / "x.json")
    _download(tmp_path, "train", 1, 2)
    xml = tmp_path / "Annotations/VID/train/ILSVRC2015_train_00000000/000001.xml"
    xml.write_text(xml.read_text().replace("n02958343", "n99999999"))
    with pytest.raises(
        DataError, match="000001.xml: object class 'n99999999' is not one of the 30 VID synsets"
    ):
        build_vid_json(tmp_path, "train", tmp_path / "x.json")
