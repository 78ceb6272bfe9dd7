"""The DET part of the training JSON on a generated ILSVRC2015 DET folder: VID classes kept, other
objects and images without a VID object dropped, stills read at their folder index, merged with
the VID JSON into the file the reader and the training pairs take."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_detection_vid_json import _download

from deltadist.detection.data import ORIGINAL_STILL_ID, VidPairs, read_vid_json
from deltadist.detection.det_json import build_det_json, main
from effvid.data import DataError, encode_jpeg, open_storage
from effvid.draws import Draw

_XML = "<annotation><size><width>{w}</width><height>40</height></size>{objects}</annotation>"
_OBJ = (
    "<object><name>{synset}</name><bndbox><xmin>{x0}</xmin><ymin>4</ymin><xmax>{x1}</xmax>"
    "<ymax>30</ymax></bndbox></object>"
)
CAR, ZEBRA, PERSON = "n02958343", "n02391049", "n00007846"  # person is a DET class, not a VID one


def _det(root):
    """ILSVRC2013_train/<synset>/ and ILSVRC2014_train_0000/ folders; the images' grey levels are
    their order in the folder, so a read frame tells which file it came from."""
    folders = {
        "train/ILSVRC2013_train/n02958343": [
            ("n02958343_2", [CAR]),
            ("n02958343_10", [PERSON]),  # no VID object: dropped
            ("n02958343_11", [CAR, PERSON, ZEBRA]),
        ],
        "train/ILSVRC2014_train_0000": [
            ("ILSVRC2014_train_00000001", []),  # no object at all: dropped
            ("ILSVRC2014_train_00000002", [ZEBRA]),
        ],
    }
    for folder, images in folders.items():
        (root / "Annotations/DET" / folder).mkdir(parents=True)
        (root / "Data/DET" / folder).mkdir(parents=True)
        for i, (name, synsets) in enumerate(images):
            objects = "".join(_OBJ.format(synset=s, x0=2 + k, x1=20 + k) for k, s in enumerate(synsets))
            (root / "Annotations/DET" / folder / f"{name}.xml").write_text(_XML.format(w=60, objects=objects))
            grey = np.full((40, 60, 3), 40 * (i + 1), np.uint8)
            (root / "Data/DET" / folder / f"{name}.JPEG").write_bytes(encode_jpeg(grey, quality=100))


def test_det_stills_keep_vid_classes_and_their_folder_index(tmp_path):
    _det(tmp_path)
    det = build_det_json(tmp_path)
    names = [im["file_name"] for im in det["images"]]
    assert names == [
        "train/ILSVRC2013_train/n02958343/n02958343_2.JPEG",
        "train/ILSVRC2013_train/n02958343/n02958343_11.JPEG",
        "train/ILSVRC2014_train_0000/ILSVRC2014_train_00000002.JPEG",
    ]
    assert det["dropped"] == 2
    # natural order in the folder: _2, _10, _11 -> _11 is index 2
    assert [im["frame_id"] for im in det["images"]] == [0, 2, 1]
    assert [im["id"] for im in det["images"]] == [ORIGINAL_STILL_ID + i for i in range(3)]
    per_image = [
        [a["category_id"] for a in det["annotations"] if a["image_id"] == im["id"]] for im in det["images"]
    ]
    assert per_image == [[7], [7, 30], [30]]  # car, zebra; the person dropped
    assert det["annotations"][0]["bbox"] == [2.0, 4.0, 18.0, 26.0]
    # the original's list restricts the images
    (tmp_path / "list.txt").write_text("train/ILSVRC2013_train/n02958343/n02958343_11 1\n")
    only = build_det_json(tmp_path, image_list=tmp_path / "list.txt")
    assert [im["frame_id"] for im in only["images"]] == [2] and only["dropped"] == 0


def test_merged_json_reads_as_videos_plus_stills_and_trains_on_identical_pairs(tmp_path, capsys):
    _download(tmp_path, "train", 2, 4)
    _det(tmp_path)
    from deltadist.detection.vid_json import build_vid_json

    build_vid_json(tmp_path, "train", tmp_path / "vid.json")
    out = tmp_path / "vid_det.json"
    main([str(tmp_path), str(tmp_path / "vid.json"), str(out)])
    assert "8 VID frames and 3 DET stills (2 DET images without a VID class left out), 16 boxes" in (
        capsys.readouterr().out
    )
    ann = read_vid_json(out)
    assert ann.num_classes == 30
    videos = [v for v in ann.videos if not v.still]
    stills = [v for v in ann.videos if v.still]
    assert [v.key for v in videos] == [
        "VID/train/ILSVRC2015_train_00000000",
        "VID/train/ILSVRC2015_train_00000001",
    ]
    assert [(s.key, s.still_index) for s in stills] == [
        ("DET/train/ILSVRC2013_train/n02958343", 0),
        ("DET/train/ILSVRC2013_train/n02958343", 2),
        ("DET/train/ILSVRC2014_train_0000", 1),
    ]
    storage = open_storage("frames", tmp_path / "Data")
    pairs = VidPairs(ann, storage, size=30, frames_per_video=2)
    assert len(pairs) == 2 * 2 + 3
    item = pairs[Draw(5, 0)]  # the second still: the third image of its folder (grey 120)
    assert torch.equal(item["video"][0], item["video"][1])
    grey = float(item["video"][0][:, :10, :10].mean())
    expected = float(
        ((120 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])).mean()
    )
    assert grey == pytest.approx(expected, abs=0.05)
    assert [t["labels"].tolist() for t in item["targets"]] == [[7, 30], [7, 30]]
    assert item["targets"][0]["boxes"].tolist()[0] == pytest.approx([1.0, 2.0, 10.0, 15.0])  # scaled by 30/60
    # a folder that changed since the JSON was built is an error naming the image
    (tmp_path / "Data/DET/train/ILSVRC2013_train/n02958343/n02958343_1.JPEG").write_bytes(
        (tmp_path / "Data/DET/train/ILSVRC2013_train/n02958343/n02958343_2.JPEG").read_bytes()
    )
    fresh = VidPairs(
        read_vid_json(out), open_storage("frames", tmp_path / "Data"), size=30, frames_per_video=2
    )
    with pytest.raises(
        DataError, match="n02958343_2.JPEG' has frame_id 0, but frame 0 of that folder is n02958343_1.JPEG"
    ):
        fresh[Draw(4, 0)]


def test_det_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="Annotations/DET/train: not found"):
        build_det_json(tmp_path)
    _det(tmp_path)
    image = tmp_path / "Data/DET/train/ILSVRC2014_train_0000/ILSVRC2014_train_00000002.JPEG"
    data = image.read_bytes()
    image.unlink()
    with pytest.raises(DataError, match="ILSVRC2014_train_00000002.xml: its image .* is not found"):
        build_det_json(tmp_path)
    image.write_bytes(data)
    vid = {
        "images": [{"id": ORIGINAL_STILL_ID, "file_name": "a/0.JPEG"}],
        "annotations": [],
        "categories": [],
    }
    (tmp_path / "bad.json").write_text(json.dumps(vid))
    with pytest.raises(DataError, match="bad.json: its categories are not the 30 VID classes"):
        main([str(tmp_path), str(tmp_path / "bad.json"), str(tmp_path / "o.json")])
