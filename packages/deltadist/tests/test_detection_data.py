"""ImageNet-VID-format detection data on a generated folder: the COCO JSON reader, training pairs,
evaluation clips, frames vs LMDB storage, errors, and AP50 with and without the original's filter."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from deltadist.detection.data import ORIGINAL_STILL_ID, VidClips, VidPairs, collate_detection, read_vid_json
from deltadist.detection.evaluation import clip_predictor, evaluate_detection, filter_original
from deltadist.detection.synthetic import generate_vid_detection
from effvid.data import DataError, open_storage
from effvid.draws import Draw


@pytest.fixture(scope="module")
def vid(tmp_path_factory):
    root = tmp_path_factory.mktemp("vid")
    return generate_vid_detection(
        root, num_videos={"train": 3, "val": 2}, num_frames=12, size=48, num_classes=3, stills=2, seed=1
    )


def test_reader_groups_videos_and_stills(vid):
    ann = read_vid_json(vid["train"])
    assert ann.num_classes == 3 and ann.num_images() == 3 * 12 + 2
    videos = [v for v in ann.videos if not v.still]
    stills = [v for v in ann.videos if v.still]
    assert [v.key for v in videos] == ["train/vid_00000", "train/vid_00001", "train/vid_00002"]
    assert all(len(v.image_ids) == 12 for v in videos)
    assert [(s.key, s.still_index, s.image_ids[0]) for s in stills] == [
        ("det/stills_0000", 0, ORIGINAL_STILL_ID),
        ("det/stills_0000", 1, ORIGINAL_STILL_ID + 1),
    ]
    boxes = videos[0].boxes[0]
    assert boxes.shape[1] == 4 and bool((boxes[:, 2] > boxes[:, 0]).all())
    assert set(videos[0].labels[0].tolist()) <= {1, 2, 3}
    # without video_id / frame_id, frames group by folder and sort by name
    data = json.loads(vid["val"].read_text())
    for image in data["images"]:
        del image["video_id"], image["frame_id"]
    plain = vid["val"].with_name("val_plain.json")
    plain.write_text(json.dumps(data))
    assert [v.key for v in read_vid_json(plain).videos] == [v.key for v in read_vid_json(vid["val"]).videos]


def test_pairs_clips_and_storages(vid, tmp_path):
    ann = read_vid_json(vid["train"])
    storage = open_storage("frames", vid["frames"])
    pairs = VidPairs(ann, storage, size=64, frames_per_video=5, max_offset=9)
    assert len(pairs) == 3 * 5 + 2
    item = pairs[Draw(0, 123)]
    assert item["video"].shape == (2, 3, 64, 64) and len(item["targets"]) == 2
    first, second = (int(t["image_id"]) for t in item["targets"])
    assert first <= second  # ordered in time: the earlier frame is the keyframe
    assert item["targets"][0]["scale"] == pytest.approx(64 / 48)
    still = pairs[Draw(len(pairs) - 1, 5)]
    assert torch.equal(still["video"][0], still["video"][1])  # a DET still: two identical frames
    assert int(still["targets"][0]["image_id"]) == ORIGINAL_STILL_ID + 1
    val = read_vid_json(vid["val"])
    clips = VidClips(val, open_storage("frames", vid["frames"]), size=48, clip_length=5)
    assert len(clips) == 2 * 3  # 12 frames -> clips of 5, 5, 2 (+3 padding)
    last = clips[2]
    assert last["real"].tolist() == [True, True, False, False, False]
    assert torch.equal(last["video"][1], last["video"][4])
    batch = collate_detection([clips[0], clips[1]])
    assert batch["video"].shape == (2, 5, 3, 48, 48) and len(batch["targets"]) == 10
    # the same frames from an LMDB
    lmdb = generate_vid_detection(
        tmp_path,
        num_videos={"train": 3, "val": 2},
        num_frames=12,
        size=48,
        num_classes=3,
        storage="lmdb",
        seed=1,
    )
    from_lmdb = VidClips(
        read_vid_json(lmdb["val"]), open_storage("lmdb", lmdb["frames"]), size=48, clip_length=5
    )
    assert torch.equal(from_lmdb[1]["video"], clips[1]["video"])


def test_errors_name_the_file_and_folder(vid, tmp_path):
    data = json.loads(vid["val"].read_text())
    data["annotations"][0]["category_id"] = 99
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"bad.json annotations\[0\]: category_id 99 is not in categories"):
        read_vid_json(bad)
    data = json.loads(vid["val"].read_text())
    dropped = next(im["id"] for im in data["images"] if im["file_name"] == "val/vid_00003/000011.jpg")
    data["images"] = [im for im in data["images"] if im["id"] != dropped]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != dropped]
    short = tmp_path / "short.json"
    short.write_text(json.dumps(data))
    clips = VidClips(read_vid_json(short), open_storage("frames", vid["frames"]), size=48, clip_length=5)
    with pytest.raises(DataError, match="lists 11 frames of folder 'val/vid_00003' but the storage has 12"):
        for i in range(len(clips)):
            clips[i]
    with pytest.raises(DataError, match="missing key 'images'"):
        bad.write_text("{}")
        read_vid_json(bad)


def _oracle(dataset, noise: float = 0.0):
    """Predictions = the ground truth (score 0.9) of each frame, looked up by the frames' targets."""
    truth = {}
    for i in range(len(dataset)):
        item = dataset[i]
        for frame, target in zip(item["video"], item["targets"]):
            truth[frame.sum().item()] = target

    def predict(frames, _t):
        out = []
        for frame in frames:
            t = truth[frame.sum().item()]
            n = len(t["labels"])
            out.append({"boxes": t["boxes"] + noise, "scores": torch.full((n,), 0.9), "labels": t["labels"]})
        return out

    return predict


def test_ap50_of_the_ground_truth_and_the_original_filter(vid):
    clips = VidClips(read_vid_json(vid["val"]), open_storage("frames", vid["frames"]), size=48, clip_length=5)
    perfect = evaluate_detection(_oracle(clips), clips, batch_size=2)
    assert perfect["ap50"] == pytest.approx(1.0) and perfect["frames"] == 24
    far = evaluate_detection(_oracle(clips, noise=30.0), clips, batch_size=2)
    assert far["ap50"] == pytest.approx(0.0)
    # the filter: low scores go, and so do images left without detections (their objects uncounted)
    preds = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10]]),
            "scores": torch.tensor([0.0005]),
            "labels": torch.tensor([1]),
        },
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10]]),
            "scores": torch.tensor([0.5]),
            "labels": torch.tensor([1]),
        },
    ]
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}] * 2
    kept_p, kept_t = filter_original(preds, targets)
    assert len(kept_p) == len(kept_t) == 1 and float(kept_p[0]["scores"]) == 0.5


def test_ap50_of_a_delta_efficientdet_on_clips(vid):
    pytest.importorskip("effdet")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from deltadist.detection.efficientdet import EfficientDetDetector, convert_efficientdet, efficientdet_tiny

    torch.manual_seed(0)
    net = efficientdet_tiny(num_classes=3, image_size=64)
    convert_efficientdet(net)
    detector = EfficientDetDetector(net).eval()
    clips = VidClips(
        read_vid_json(vid["val"]), open_storage("frames", vid["frames"]), size=64, clip_length=10
    )
    plain = evaluate_detection(clip_predictor(net, detector.predict), clips, batch_size=2)
    filtered = evaluate_detection(
        clip_predictor(net, detector.predict), clips, batch_size=2, original_filter=True
    )
    assert plain["frames"] == filtered["frames"] == 24
    assert 0.0 <= plain["ap50"] <= filtered["ap50"] + 1e-9 <= 1.0 + 1e-9
