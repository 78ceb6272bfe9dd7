"""Data layer: backends x samplers x formats, bad input, the synthetic benchmark, the tools."""

from __future__ import annotations

import functools
import json
import logging

import cv2
import fire
import numpy as np
import pytest
import torch

from effvid.data import (
    DataError,
    FrameFolderStorage,
    LmdbStorage,
    SegmentationClipDataset,
    SegmentationRecord,
    SyntheticSpec,
    TransformConfig,
    VideoClassificationDataset,
    VideoFileStorage,
    VideoRecord,
    apply_order,
    build_transform,
    close_lmdb_envs,
    decode_image,
    dense_clip_indices,
    encode_jpeg,
    generate,
    open_storage,
    read_activitynet,
    read_cityscapes,
    read_class_list,
    read_fcvid,
    read_generic_list,
    read_kinetics_csv,
    read_minisports1m,
    segment_indices,
    uniform_indices,
    write_lmdb,
)
from effvid.tools.build_lists import BUILD_LISTS
from effvid.tools.build_lmdb import BUILD_LMDB, build_lmdb
from effvid.tools.extract_frames import EXTRACT

SMALL = {"num_classes": 4, "num_videos": 12, "num_frames": 8, "size": 32}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return {
        kind: generate(root / kind, SyntheticSpec(storage=kind, **SMALL))
        for kind in ("frames", "lmdb", "video")
    }


# ----------------------------------------------------------------------------- sampling


def test_uniform_indices_match_frameexit():
    assert uniform_indices(50, 10) == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49]
    assert uniform_indices(12, 10) == [0, 1, 2, 4, 5, 6, 8, 9, 10, 11]
    assert uniform_indices(5, 10) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert apply_order(uniform_indices(50, 10), (5, 0, 9, 2, 7, 4, 6, 3, 8, 1)) == [
        27,
        0,
        49,
        11,
        38,
        22,
        33,
        16,
        44,
        5,
    ]
    with pytest.raises(ValueError, match="must be a permutation of 0..2"):
        apply_order([1, 2, 3], [0, 0, 1])
    with pytest.raises(ValueError, match="cannot sample from a video with 0 frames"):
        uniform_indices(0, 10)


def test_segment_indices_train_and_test():
    assert segment_indices(16, 4, train=False) == [2, 6, 10, 14]
    rng = np.random.default_rng(0)
    idx = segment_indices(16, 4, train=True, rng=rng)
    assert all(4 * k <= i < 4 * (k + 1) for k, i in enumerate(idx))
    short = segment_indices(3, 5, train=True, rng=rng)
    assert short == sorted(short) and all(0 <= i < 3 for i in short)
    with pytest.raises(ValueError, match="needs an rng"):
        segment_indices(16, 4, train=True)


def test_dense_clip_indices():
    assert dense_clip_indices(20, clip_len=4, frame_interval=2, num_clips=1, train=False) == [6, 8, 10, 12]
    two = dense_clip_indices(20, clip_len=2, frame_interval=1, num_clips=2, train=False)
    assert two == [4, 5, 14, 15]
    tr = dense_clip_indices(
        6, clip_len=4, frame_interval=2, num_clips=1, train=True, rng=np.random.default_rng(1)
    )
    assert len(tr) == 4 and tr[-1] == 5  # wraps to the last frame


# ----------------------------------------------------------------------------- backends x samplers

SAMPLERS = {
    "uniform": functools.partial(uniform_indices, n=5),
    "segment": functools.partial(segment_indices, n=4, train=False),
    "dense": functools.partial(dense_clip_indices, clip_len=3, frame_interval=2, num_clips=1, train=False),
}


@pytest.mark.parametrize("kind", ["frames", "lmdb", "video"])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_backend_x_sampler_dataset(synth, kind, sampler):
    info = synth[kind]
    storage = open_storage(kind, info.storage_path)
    records = read_generic_list(info.train_list)
    ds = VideoClassificationDataset(records, storage, sampler=SAMPLERS[sampler], num_classes=4)
    item = ds[1]
    expected_t = {"uniform": 5, "segment": 4, "dense": 3}[sampler]
    assert item["video"].shape == (expected_t, 3, 32, 32) and item["video"].dtype == torch.uint8
    assert item["label"].item() == records[1].labels[0] and item["key"] == records[1].key
    # the frames are the ones the sampler chose: compare with a direct read
    direct = storage.read_frames(records[1].key, SAMPLERS[sampler](8))
    assert torch.equal(item["video"], torch.from_numpy(np.stack(direct)).permute(0, 3, 1, 2))
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["video"].shape == (2, expected_t, 3, 32, 32)


def test_frames_and_lmdb_hold_identical_bytes_and_video_is_close(synth):
    folder = open_storage("frames", synth["frames"].storage_path)
    db = open_storage("lmdb", synth["lmdb"].storage_path)
    video = open_storage("video", synth["video"].storage_path)
    assert folder.keys() == db.keys() == [k.removesuffix(".mp4") for k in video.keys()]
    assert folder.read_bytes("vid_00003", 5) == db.read_bytes("vid_00003", 5)
    clip = db.read_bytes_many("vid_00003", [7, 0, 7])
    assert clip == folder.read_bytes_many("vid_00003", [7, 0, 7]) and clip[0] == clip[2] != clip[1]
    with pytest.raises(DataError, match=r"video 'vid_00003': frame 8 requested but the video has 8 frames"):
        db.read_bytes_many("vid_00003", [0, 8])
    a = folder.read_frames("vid_00003", [5])[0].astype(int)
    b = video.read_frames("vid_00003.mp4", [5])[0].astype(int)
    assert a.shape == b.shape and np.abs(a - b).mean() < 12  # both lossy codecs of one frame


def test_video_reads_any_order_with_repeats_and_seeks(synth):
    video = VideoFileStorage(synth["video"].storage_path, seek_threshold=2)
    frames = video.read_frames("vid_00001.mp4", [7, 0, 7, 3])
    sequential = VideoFileStorage(synth["video"].storage_path, seek_threshold=1000).read_frames(
        "vid_00001.mp4", [0, 3, 7]
    )
    assert np.array_equal(frames[1], sequential[0]) and np.array_equal(frames[3], sequential[1])
    assert np.array_equal(frames[0], frames[2]) and np.array_equal(frames[0], sequential[2])


def _count_decodes(monkeypatch) -> list[str]:
    """From now on, every frame the storages decode is named in the returned list."""
    import effvid.data.storage as storage_module

    decoded: list[str] = []
    original = storage_module.decode_image

    def counting(data, *, where, min_side=None):
        decoded.append(where)
        return original(data, where=where, min_side=min_side)

    monkeypatch.setattr(storage_module, "decode_image", counting)
    return decoded


def test_load_frames_streams_only_requested_positions(synth, monkeypatch):
    storage = open_storage("lmdb", synth["lmdb"].storage_path)
    decoded = _count_decodes(monkeypatch)
    ds = VideoClassificationDataset(
        read_generic_list(synth["lmdb"].val_list),
        storage,
        sampler=functools.partial(uniform_indices, n=4),
        num_classes=4,
        order=[2, 0, 3, 1],
    )
    order = ds.frame_indices(0)
    assert order == apply_order(uniform_indices(8, 4), [2, 0, 3, 1])
    clip = ds.load_frames(0, [0, 1])
    assert clip.shape == (2, 3, 32, 32)
    assert sorted(int(w.rsplit(" ", 1)[1]) for w in decoded) == sorted(order[:2])  # only those two frames


def test_multi_label_targets(synth):
    storage = open_storage("frames", synth["frames"].storage_path)
    records = [VideoRecord("vid_00000", None, (0, 2)), VideoRecord("vid_00001", None, (3,))]
    ds = VideoClassificationDataset(
        records, storage, sampler=SAMPLERS["uniform"], num_classes=4, multi_label=True
    )
    assert ds[0]["label"].tolist() == [1.0, 0.0, 1.0, 0.0] and ds[1]["label"].tolist() == [0.0, 0.0, 0.0, 1.0]


# ----------------------------------------------------------------------------- formats


def test_activitynet_json(tmp_path, synth):
    classes = tmp_path / "classes.txt"
    classes.write_text("Archery\nBowling\nCooking\n")
    ann = {
        "database": {
            "abc_1": {
                "subset": "validation",
                "annotations": [{"label": "Bowling"}, {"label": "Archery"}, {"label": "Bowling"}],
            },
            "x-y": {"subset": "validation", "annotations": [{"label": "Cooking"}]},
            "t": {"subset": "training", "annotations": [{"label": "Cooking"}]},
        }
    }
    path = tmp_path / "anet.json"
    path.write_text(json.dumps(ann))
    records = read_activitynet(path, read_class_list(classes))
    assert records == [VideoRecord("v_abc_1.mp4", None, (0, 1)), VideoRecord("v_x-y.mp4", None, (2,))]
    ann["database"]["x-y"]["annotations"][0]["label"] = "Dancing"
    path.write_text(json.dumps(ann))
    with pytest.raises(
        DataError, match=r"video 'v_x-y\.mp4' has label 'Dancing', which is not in the class list"
    ):
        read_activitynet(path, read_class_list(classes))


def test_kinetics_csv_minikinetics_and_generic_lists(tmp_path, caplog):
    csv_path = tmp_path / "kinetics_val.csv"
    csv_path.write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        '"air drumming",7LSJ2Ryv1a8,0,10,val,0\n'
        "abseiling,a-b_c,12.0,22.0,val,0\n"
        "yoga,zzz,1,11,val,0\n"
    )
    classes = ["abseiling", "air drumming"]
    with pytest.raises(
        DataError, match=r"video 'zzz_000001_000011\.mp4' has label 'yoga', which is not in the class list"
    ):
        read_kinetics_csv(csv_path, classes)
    with caplog.at_level(logging.WARNING):
        records = read_kinetics_csv(csv_path, classes, skip_other_classes=True)
    assert "skipped 1 of 3 videos" in caplog.text
    assert records == [
        VideoRecord("7LSJ2Ryv1a8_000000_000010.mp4", None, (1,)),
        VideoRecord("a-b_c_000012_000022.mp4", None, (0,)),
    ]
    split = read_kinetics_csv(csv_path, classes, keys=["a-b_c_000012_000022.mp4"])
    assert [r.key for r in split] == ["a-b_c_000012_000022.mp4"]
    fc = tmp_path / "fcvid.txt"
    fc.write_text("vids/a 1 40 3 17\nvids/b 1 10 238\n")
    assert read_fcvid(fc) == [VideoRecord("vids/a", 40, (3, 17)), VideoRecord("vids/b", 10, (238,))]
    fa = tmp_path / "fcvid_ada.txt"
    fa.write_text("vids/a,40,3,17\n")
    assert read_fcvid(fa, style="adafocus") == [VideoRecord("vids/a", 40, (3, 17))]
    ms = tmp_path / "ms.txt"
    ms.write_text("x/v1;1;30;486\n")
    assert read_minisports1m(ms) == [VideoRecord("x/v1", 30, (486,))]
    ms.write_text("x/v1;1;30;487\n")
    with pytest.raises(DataError, match=r"ms\.txt:1: video 'x/v1' has a label outside \[0, 487\)"):
        read_minisports1m(ms)
    bad = tmp_path / "bad.txt"
    bad.write_text("onlypath\n")
    with pytest.raises(DataError, match=r"bad\.txt:1: expected 'path num_frames label\.\.\.'"):
        read_generic_list(bad)


def test_cityscapes_sequences_and_segmentation_dataset(tmp_path):
    city = "aachen"
    seq_dir = tmp_path / "leftImg8bit_sequence" / "val" / city
    gt_dir = tmp_path / "gtFine" / "val" / city
    seq_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    for f in range(0, 30):
        img = np.full((8, 16, 3), f * 8, dtype=np.uint8)
        cv2.imwrite(str(seq_dir / f"{city}_000001_{f:06d}_leftImg8bit.png"), img)
    label_ids = np.full((8, 16), 7, dtype=np.uint8)  # road
    label_ids[:, :4] = 26  # car
    label_ids[0, 0] = 0  # unlabeled -> ignore
    cv2.imwrite(str(gt_dir / f"{city}_000001_000019_gtFine_labelIds.png"), label_ids)
    records, storage = read_cityscapes(tmp_path, "val")
    assert records == [
        SegmentationRecord(
            "aachen_000001_000019", 30, 19, gt_dir / "aachen_000001_000019_gtFine_labelIds.png"
        )
    ]
    from effvid.data.formats import CITYSCAPES_TRAIN_IDS

    ds = SegmentationClipDataset(records, storage, clip_len=3, distance=2, mask_map=CITYSCAPES_TRAIN_IDS)
    item = ds[0]
    assert item["video"].shape == (3, 3, 8, 16)
    assert item["video"][:, 0, 0, 0].tolist() == [15 * 8, 17 * 8, 19 * 8]  # frames 15, 17, 19
    assert item["mask"][0, 0] == 255 and item["mask"][1, 0] == 13 and item["mask"][1, 8] == 0
    (seq_dir / f"{city}_000001_000005_leftImg8bit.png").unlink()
    with pytest.raises(DataError, match="lacks snippet frame .*_000005_leftImg8bit.png"):
        read_cityscapes(tmp_path, "val")


def test_synthetic_segmentation_masks(tmp_path):
    info = generate(tmp_path / "seg", SyntheticSpec(task="segmentation", **SMALL))
    meta = json.loads((tmp_path / "seg" / "meta.json").read_text())["videos"][0]
    records = [SegmentationRecord(meta["key"], 8, 7, info.masks / meta["key"] / "00007.png")]
    ds = SegmentationClipDataset(records, FrameFolderStorage(info.storage_path), clip_len=2)
    mask = ds[0]["mask"]
    expected = meta["label"] + 1 if 7 in meta["evidence_frames"] else SMALL["num_classes"] + 1
    assert set(mask.unique().tolist()) == {0, expected}
    assert 0.01 < (mask > 0).float().mean() < 0.1  # a small object


# ----------------------------------------------------------------------------- bad input


def test_corrupt_image_bytes(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "00001.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DataError, match=r"video 'v1' frame 0 \(.*00001\.jpg\): corrupt image data"):
        FrameFolderStorage(tmp_path).read_frames("v1", [0])
    with pytest.raises(DataError, match="empty image data"):
        decode_image(b"", where="x")


def _textured(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 3) % 256], -1).astype(np.uint8)


def test_jpeg_size_reads_the_frame_header():
    from effvid.data import jpeg_size

    assert jpeg_size(encode_jpeg(_textured(35, 61))) == (35, 61)
    ok, progressive = cv2.imencode(".jpg", _textured(20, 30), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and jpeg_size(progressive.tobytes()) == (20, 30)
    assert jpeg_size(cv2.imencode(".png", _textured(8, 8))[1].tobytes()) is None
    assert jpeg_size(b"\xff\xd8garbage") is None and jpeg_size(b"") is None


@pytest.mark.parametrize(
    ("size", "min_side", "expected"),
    [
        ((480, 640), 224, (240, 320)),  # 1/2: 240 >= 224, 1/4 would be 120
        ((960, 1280), 224, (240, 320)),  # 1/4
        ((1920, 2560), 224, (240, 320)),  # 1/8
        ((400, 640), 224, (400, 640)),  # short side < 2 x 224: full size
        ((480, 640), None, (480, 640)),  # off
    ],
)
def test_reduced_size_decoding(size, min_side, expected):
    image = _textured(*size)
    data = encode_jpeg(image, quality=95)
    decoded = decode_image(data, where="x", min_side=min_side)
    assert decoded.shape == (*expected, 3)
    if expected != size:  # close to a full decode resized to the same size
        full = cv2.resize(decode_image(data, where="x"), expected[::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(decoded.astype(int) - full.astype(int)).mean() < 3
    png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
    assert decode_image(png, where="x", min_side=min_side).shape == (*size, 3)  # PNG: always full


def test_reduced_decode_option_reaches_the_storage_and_keeps_the_model_input(tmp_path):
    from effvid.data import DataConfig, build_dataset

    (tmp_path / "frames" / "v").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "frames" / "v" / f"img_{i}.jpg").write_bytes(encode_jpeg(_textured(240, 320)))
    (tmp_path / "list.txt").write_text("v 3 0\n")

    def data(reduced: bool) -> DataConfig:
        return DataConfig(
            format="list",
            path_frame=str(tmp_path / "frames"),
            path_label=str(tmp_path / "list.txt"),
            num_frames=2,
            reduced_decode=reduced,
            transform=TransformConfig(resize=64, crop=56),
        )

    plain, reduced = build_dataset(data(False), num_classes=2), build_dataset(data(True), num_classes=2)
    assert plain.storage.decode_min_side is None and reduced.storage.decode_min_side == 64
    assert reduced.storage.read_frames("v", [0])[0].shape == (120, 160, 3)  # 1/2: 120 >= 64 > 60
    a, b = plain.load_frames(0, [0, 1]), reduced.load_frames(0, [0, 1])
    assert a.shape == b.shape == (2, 3, 56, 56)
    assert (a - b).abs().mean() < 0.05  # normalised units: the same picture


def test_reduced_decode_is_refused_for_segmentation(tmp_path):
    from effvid.data import DataConfig, build_dataset

    seq_dir, gt_dir = tmp_path / "leftImg8bit_sequence" / "val" / "c", tmp_path / "gtFine" / "val" / "c"
    seq_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    for f in range(30):
        cv2.imwrite(str(seq_dir / f"c_000001_{f:06d}_leftImg8bit.png"), np.zeros((8, 16, 3), np.uint8))
    cv2.imwrite(str(gt_dir / "c_000001_000019_gtFine_labelIds.png"), np.full((8, 16), 7, np.uint8))
    cfg = DataConfig(format="cityscapes", path_frame=str(tmp_path), reduced_decode=True)
    with pytest.raises(DataError, match="data.reduced_decode: format 'cityscapes'"):
        build_dataset(cfg, num_classes=19)


def test_batch_size_per_device_and_for_training():
    from effvid.data import DataConfig

    auto = DataConfig(format="list", path_frame="x", batch_size=None)
    assert auto.batch_size_on("cpu") == 1 and auto.batch_size_on(torch.device("cuda", 0)) == 16
    assert DataConfig(format="list", path_frame="x", batch_size=5).batch_size_on("cpu") == 5
    with pytest.raises(ValueError, match="data.batch_size is null: training needs a number"):
        _ = auto.train_batch_size
    with pytest.raises(ValueError, match="data.batch_size must be >= 1, got 0"):
        DataConfig(format="list", path_frame="x", batch_size=0)


def test_prefetching_step_loader_gives_the_same_frames_and_decodes_ahead(synth, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from effvid.data.streaming import PrefetchingStepLoader, step_loader

    storage = open_storage("lmdb", synth["lmdb"].storage_path)
    ds = VideoClassificationDataset(
        read_generic_list(synth["lmdb"].val_list),
        storage,
        sampler=functools.partial(uniform_indices, n=4),
        num_classes=4,
    )
    ids = [0, 1, 2]
    plain = step_loader(ds, ids)
    schedule = [([0, 1, 2], 0), ([0, 2], 1), ([2], 2), ([2], 3)]  # videos leave step by step
    expected = [plain(active, step) for active, step in schedule]
    decoded = _count_decodes(monkeypatch)
    with ThreadPoolExecutor(1) as executor:
        ahead = step_loader(ds, ids, prefetch=executor)
        assert isinstance(ahead, PrefetchingStepLoader) and ahead.num_steps == 4
        ahead.prefetch([0, 1, 2], 0)
        for (active, step), frames in zip(schedule, expected):
            assert torch.equal(ahead(active, step), frames)
        executor.shutdown(wait=True)
    # every step prefetched for the videos running at the step before: 3 + 3 + 2 + 1, nothing past the last
    assert len(decoded) == 9

    # a prefetched frame that fails to decode matters only to a video that still needs it
    monkeypatch.undo()
    broken = {("2", 1)}

    def failing(active, step):
        if any((str(a), step) in broken for a in active):
            raise DataError(f"corrupt frame {step}")
        return plain(active, step)

    with ThreadPoolExecutor(1) as executor:
        loader = PrefetchingStepLoader(failing, executor, num_steps=4)
        loader([0, 1, 2], 0)  # prefetches step 1 of all three: fails because of video 2
        assert torch.equal(loader([0, 1], 1), plain([0, 1], 1))  # video 2 left: redone without it
        loader = PrefetchingStepLoader(failing, executor, num_steps=4)
        loader([0, 1, 2], 0)
        with pytest.raises(DataError, match="corrupt frame 1"):
            loader([1, 2], 1)


def test_missing_and_empty_frame_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    storage = FrameFolderStorage(tmp_path)
    with pytest.raises(
        DataError, match=r"video 'empty': frame folder .*empty has no frames matching \.jpg/\.jpeg/\.png"
    ):
        storage.num_frames("empty")
    with pytest.raises(DataError, match=r"video 'ghost': frame folder not found: .*ghost"):
        storage.num_frames("ghost")
    with pytest.raises(DataError, match="frame root folder not found"):
        FrameFolderStorage(tmp_path / "nope")


def test_truncated_video(tmp_path, synth):
    src = synth["video"].storage_path / "vid_00002.mp4"
    data = src.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # the index (moov atom) is lost
    (tmp_path / "whole.mp4").write_bytes(data)
    storage = VideoFileStorage(tmp_path)
    with pytest.raises(
        DataError, match=r"video 'cut\.mp4': OpenCV cannot open .*cut\.mp4 \(corrupt or unsupported\)"
    ):
        storage.read_frames("cut.mp4", [0])
    # a container whose header promises more frames than it holds
    storage._counts["whole.mp4"] = 12
    with pytest.raises(
        DataError, match=r"video 'whole\.mp4': .*whole\.mp4 ended after 8 frames but frame 10 was requested"
    ):
        storage.read_frames("whole.mp4", [0, 10])


def test_lmdb_without_key(synth, tmp_path):
    db = LmdbStorage(synth["lmdb"].storage_path)
    with pytest.raises(
        DataError, match=r"LMDB .* has no video 'vid_99999' \(missing key '__meta__/vid_99999'\)"
    ):
        db.num_frames("vid_99999")
    write_lmdb(
        tmp_path / "holey.lmdb",
        [("a", [encode_jpeg(np.zeros((4, 4, 3), np.uint8))], (4, 4))],
        map_size=1 << 20,
    )
    holey = LmdbStorage(tmp_path / "holey.lmdb")
    with pytest.raises(DataError, match=r"video 'a': frame 3 requested but the video has 1 frames"):
        holey.read_frames("a", [3])
    with pytest.raises(DataError, match="LMDB not found"):
        LmdbStorage(tmp_path / "none.lmdb")


def test_lmdb_readahead_option_and_closing_maps(tmp_path):
    frames = [encode_jpeg(np.full((16, 16, 3), v, np.uint8)) for v in (0, 100, 200)]
    write_lmdb(tmp_path / "ra.lmdb", [("v", frames, (16, 16))], map_size=1 << 20)
    plain = LmdbStorage(tmp_path / "ra.lmdb")
    assert plain.read_bytes_many("v", [2, 0]) == [frames[2], frames[0]]
    ahead = open_storage("lmdb", tmp_path / "ra.lmdb", readahead=True)
    with pytest.raises(
        DataError, match=r"already open in this process with readahead=False; call .*close_lmdb_envs"
    ):
        ahead.read_bytes("v", 1)
    assert close_lmdb_envs(tmp_path / "ra.lmdb") == 1
    assert ahead.read_bytes("v", 1) == frames[1]  # reopened with readahead
    assert close_lmdb_envs() >= 1
    assert plain.read_frames("v", [1])[0][0, 0].tolist() == decode_image(frames[1], where="x")[0, 0].tolist()


def test_list_naming_missing_video_raises_or_skips_with_log(synth, caplog):
    storage = open_storage("frames", synth["frames"].storage_path)
    records = [VideoRecord("vid_00000", 8, (1,)), VideoRecord("vid_ghost", 8, (0,))]
    with pytest.raises(
        DataError, match=r"listed video 'vid_ghost' is not usable: video 'vid_ghost': frame folder not found"
    ):
        VideoClassificationDataset(records, storage, sampler=SAMPLERS["uniform"], num_classes=4)
    with caplog.at_level(logging.WARNING):
        ds = VideoClassificationDataset(
            records, storage, sampler=SAMPLERS["uniform"], num_classes=4, on_missing="skip"
        )
    assert len(ds) == 1
    assert (
        "skipping listed video 'vid_ghost'" in caplog.text and "skipped 1 of 2 listed videos" in caplog.text
    )
    with pytest.raises(DataError, match="the dataset is empty"):
        VideoClassificationDataset(
            records[1:], storage, sampler=SAMPLERS["uniform"], num_classes=4, on_missing="skip"
        )
    with pytest.raises(DataError, match=r"video 'vid_00000' has label\(s\) \[1\] outside \[0, 1\)"):
        VideoClassificationDataset(records[:1], storage, sampler=SAMPLERS["uniform"], num_classes=1)


def test_class_list_errors(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("a\nb\na\n")
    with pytest.raises(DataError, match="class 'a' appears twice"):
        read_class_list(p)
    with pytest.raises(DataError, match="class list not found"):
        read_class_list(tmp_path / "none.txt")


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_has_its_properties(tmp_path):
    a = generate(tmp_path / "a", SyntheticSpec(storage="lmdb", **SMALL))
    b = generate(tmp_path / "b", SyntheticSpec(storage="lmdb", **SMALL))
    c = generate(tmp_path / "c", SyntheticSpec(storage="lmdb", seed=1, **SMALL))
    da, db, dc = (LmdbStorage(x.storage_path) for x in (a, b, c))
    assert all(da.read_bytes(k, i) == db.read_bytes(k, i) for k in da.keys() for i in range(8))
    assert any(da.read_bytes(k, 0) != dc.read_bytes(k, 0) for k in da.keys())
    assert (tmp_path / "a" / "train.txt").read_text() == (tmp_path / "b" / "train.txt").read_text()
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    kinds = {v["kind"] for v in meta["videos"]}
    assert kinds == {"early", "late"}
    for v in meta["videos"]:
        if v["kind"] == "late":
            assert len(v["evidence_frames"]) == 3 and 4 not in v["evidence_frames"]  # the centre has none
            assert set(v["evidence_frames"]) & set(uniform_indices(8, 5))  # some sampled frame sees it
        else:
            assert v["evidence_frames"] == list(range(8))
    frames = np.stack(da.read_frames("vid_00000", list(range(8)))).astype(int)
    assert np.abs(np.diff(frames, axis=0)).mean() < 12  # consecutive frames differ little
    assert generate(tmp_path / "a", SyntheticSpec(storage="lmdb", **SMALL)).root == tmp_path / "a"  # reused
    with pytest.raises(DataError, match="does not hold a synthetic benchmark of this spec"):
        generate(tmp_path / "a", SyntheticSpec(storage="lmdb", seed=5, **SMALL))


def test_synthetic_spec_validation():
    with pytest.raises(ValueError, match=r"num_classes must be in \[2, 12\]"):
        SyntheticSpec(num_classes=13)


# ----------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("crop", ["random", "multiscale", "center"])
def test_standard_transforms_one_draw_per_clip(crop):
    torch.manual_seed(0)
    frame = torch.randint(0, 256, (1, 3, 40, 60), dtype=torch.uint8)
    clip = frame.repeat(4, 1, 1, 1)
    out = build_transform(TransformConfig(resize=32, crop=28, train_crop=crop), train=True)(clip)
    assert out.shape == (4, 3, 28, 28) and out.dtype == torch.float32
    assert all(torch.equal(out[0], out[t]) for t in range(4))  # same crop/flip for every frame
    with pytest.raises(ValueError, match="cannot exceed"):
        TransformConfig(resize=20, crop=28)


# ----------------------------------------------------------------------------- tools


def test_mp4_folder_to_lmdb_dataset_with_two_commands(tmp_path, synth):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("vid_00000.mp4", "vid_00001.mp4"):
        (videos / name).write_bytes((synth["video"].storage_path / name).read_bytes())
    (videos / "broken.mp4").write_bytes(b"not a video")
    frames = tmp_path / "frames"
    args = ["--videos", str(videos), "--frames", str(frames), "--short_side", "48", "--workers", "1"]
    with pytest.raises(SystemExit, match="1 of 3 videos failed"):
        fire.Fire(EXTRACT, command=[*args])
    assert sorted(p.name for p in frames.iterdir()) == ["vid_00000.mp4", "vid_00001.mp4"]  # no partial folder
    (videos / "broken.mp4").unlink()
    fire.Fire(EXTRACT, command=[*args])  # resumes: nothing left to do
    folder = FrameFolderStorage(frames)
    assert folder.num_frames("vid_00000.mp4") == 8
    assert folder.read_frames("vid_00000.mp4", [0])[0].shape == (48, 48, 3)
    assert (frames / "vid_00000.mp4" / "image_00001.jpg").is_file()
    db = tmp_path / "frames.lmdb"
    fire.Fire(
        BUILD_LMDB,
        command=["--source", str(frames), "--output", str(db)],
    )
    storage = LmdbStorage(db)
    assert storage.keys() == ["vid_00000.mp4", "vid_00001.mp4"]
    assert storage.read_bytes("vid_00001.mp4", 3) == folder.read_bytes("vid_00001.mp4", 3)
    with pytest.raises(DataError, match="already exists"):
        fire.Fire(
            BUILD_LMDB,
            command=["--source", str(frames), "--output", str(db)],
        )
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\n")
    ann = tmp_path / "anet.json"
    ann.write_text(
        json.dumps({"database": {"vid_00000": {"subset": "validation", "annotations": [{"label": "b"}]}}})
    )
    fire.Fire(
        BUILD_LISTS,
        command=[
            "--format",
            "activitynet",
            "--annotations",
            str(ann),
            "--classes",
            str(classes),
            "--out_dir",
            str(tmp_path / "lists"),
        ],
    )
    assert (tmp_path / "lists" / "split_validation.txt").read_text() == "v_vid_00000.mp4\n"


def test_build_lmdb_from_video_files(tmp_path, synth):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("vid_00000.mp4", "vid_00001.mp4"):
        (videos / name).write_bytes((synth["video"].storage_path / name).read_bytes())
    assert build_lmdb(videos, tmp_path / "v.lmdb", source_kind="video", quality=95) == 2
    db, source = LmdbStorage(tmp_path / "v.lmdb"), VideoFileStorage(videos)
    assert db.keys() == ["vid_00000.mp4", "vid_00001.mp4"] and db.num_frames("vid_00001.mp4") == 8
    a = db.read_frames("vid_00001.mp4", [6])[0].astype(int)
    b = source.read_frames("vid_00001.mp4", [6])[0].astype(int)
    assert a.shape == b.shape and np.abs(a - b).mean() < 3  # only the JPEG re-encoding differs
    data = (videos / "vid_00001.mp4").read_bytes()
    (videos / "vid_00001.mp4").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(DataError, match=r"vid_00001\.mp4"):
        build_lmdb(videos, tmp_path / "w.lmdb", source_kind="video")
    assert not (tmp_path / "w.lmdb").exists() and not list(tmp_path.glob(".w.lmdb.tmp-*"))
    with pytest.raises(DataError, match="source_kind must be frames or video, got 'mp4'"):
        build_lmdb(videos, tmp_path / "x.lmdb", source_kind="mp4")


def test_build_lmdb_with_nested_keys_from_a_keys_file(tmp_path):
    """ImageNet VID's frame folders sit two or three levels below the data root: --keys names them."""
    root = tmp_path / "Data"
    for key, n in (("val/v0", 2), ("train/a/v1", 3)):
        (root / key).mkdir(parents=True)
        for i in range(n):
            (root / key / f"{i:06d}.JPEG").write_bytes(encode_jpeg(np.full((8, 8, 3), 40 * i, np.uint8)))
    (tmp_path / "keys.txt").write_text("val/v0\ntrain/a/v1\nval/v0\n\n")  # repeats and blank lines ignored
    keys = ["--keys", str(tmp_path / "keys.txt")]
    fire.Fire(BUILD_LMDB, command=["--source", str(root), "--output", str(tmp_path / "n.lmdb"), *keys])
    db = LmdbStorage(tmp_path / "n.lmdb")
    assert db.keys() == ["train/a/v1", "val/v0"] and db.num_frames("train/a/v1") == 3
    assert db.read_bytes("train/a/v1", 2) == (root / "train/a/v1/000002.JPEG").read_bytes()
    with pytest.raises(DataError, match=r"video 'val/v9': frame folder not found"):
        build_lmdb(root, tmp_path / "m.lmdb", keys=["val/v9"])
    with pytest.raises(DataError, match=r"--keys: file not found: .*no\.txt"):
        missing = ["--keys", str(tmp_path / "no.txt")]
        fire.Fire(BUILD_LMDB, command=["--source", str(root), "--output", str(tmp_path / "o.lmdb"), *missing])


def test_lmdb_in_dataloader_workers_after_parent_opened_it(synth):
    storage = open_storage("lmdb", synth["lmdb"].storage_path)
    ds = VideoClassificationDataset(  # construction reads metadata: the parent has the env open
        read_generic_list(synth["lmdb"].train_list), storage, sampler=SAMPLERS["uniform"], num_classes=4
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    batches = list(loader)
    assert sum(b["video"].shape[0] for b in batches) == len(ds)
    assert torch.equal(batches[0]["video"][0], ds[0]["video"])


@pytest.fixture(scope="module")
def standard_keys(tmp_path_factory, synth):
    """ActivityNet- and Kinetics-named videos in all three storage forms."""
    root = tmp_path_factory.mktemp("std")
    keys = {
        "v_abc_1.mp4": "vid_00000",
        "v_x-y.mp4": "vid_00001",
        "7LSJ2Ryv1a8_000000_000010.mp4": "vid_00002",
    }
    (root / "videos").mkdir()
    for key, src in keys.items():
        (root / "frames" / key).mkdir(parents=True)
        for i in range(8):
            data = (synth["frames"].storage_path / src / f"{i:05d}.jpg").read_bytes()
            (root / "frames" / key / f"image_{i + 1:05d}.jpg").write_bytes(data)
        (root / "videos" / key).write_bytes((synth["video"].storage_path / f"{src}.mp4").read_bytes())
    from effvid.tools.build_lmdb import build_lmdb

    build_lmdb(root / "frames", root / "frames.lmdb")
    classes = ["Archery", "Bowling", "air drumming"]
    (root / "anet.json").write_text(
        json.dumps(
            {
                "database": {
                    "abc_1": {
                        "subset": "validation",
                        "annotations": [{"label": "Archery"}, {"label": "Bowling"}],
                    },
                    "x-y": {"subset": "validation", "annotations": [{"label": "Bowling"}]},
                }
            }
        )
    )
    (root / "k.csv").write_text(
        'label,youtube_id,time_start,time_end,split\n"air drumming",7LSJ2Ryv1a8,0,10,val\n'
    )
    return root, classes


@pytest.mark.parametrize("kind", ["frames", "lmdb", "video"])
@pytest.mark.parametrize("fmt", ["activitynet", "kinetics"])
def test_standard_formats_over_every_backend(standard_keys, kind, fmt):
    root, classes = standard_keys
    path = {"frames": root / "frames", "lmdb": root / "frames.lmdb", "video": root / "videos"}[kind]
    if fmt == "activitynet":
        records, multi = read_activitynet(root / "anet.json", classes), True
    else:
        records, multi = read_kinetics_csv(root / "k.csv", classes), False
    for name, sampler in SAMPLERS.items():
        ds = VideoClassificationDataset(
            records, open_storage(kind, path), sampler=sampler, num_classes=3, multi_label=multi
        )
        item = ds[0]
        assert item["video"].shape[1:] == (3, 32, 32), name
        assert item["key"] == records[0].key
    if multi:
        assert ds[0]["label"].tolist() == [1.0, 1.0, 0.0]
    else:
        assert ds[0]["label"].item() == 2


def test_segmentation_frames_and_mask_share_one_transform(tmp_path):
    """A random crop + flip moves the labels with the pixels; the size check runs after it."""
    from effvid.data import FileListStorage

    rng = np.random.default_rng(0)
    folder = tmp_path / "seq"
    folder.mkdir()
    paths = []
    for i in range(3):
        frame = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
        frame[:, :30] = 0  # left half black
        cv2.imwrite(str(folder / f"f{i}.png"), frame)
        paths.append(folder / f"f{i}.png")
    mask = np.zeros((40, 60), np.uint8)
    mask[:, 30:] = 7  # the mask marks the right half
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    storage = FileListStorage({"clip": paths})
    records = [SegmentationRecord("clip", 3, 2, tmp_path / "m.png")]
    cfg = TransformConfig(resize=40, crop=32, train_crop="random", flip=True, mean=[0, 0, 0], std=[1, 1, 1])
    ds = SegmentationClipDataset(records, storage, clip_len=2, transform=build_transform(cfg, train=True))
    for seed in range(6):
        from effvid.draws import Draw

        item = ds[Draw(0, seed)]
        video, labels = item["video"], item["mask"]
        assert video.shape == (2, 3, 32, 32) and labels.shape == (32, 32) and labels.dtype == torch.int64
        dark = video[-1].sum(0) == 0
        assert torch.equal(dark, labels == 0)  # still aligned after crop and flip
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), mask[:20])
    bad = SegmentationClipDataset([SegmentationRecord("clip", 3, 2, small)], storage, clip_len=2)
    with pytest.raises(
        DataError, match=r"mask \(20, 60\) \(small\.png\) and frames \(40, 60\) differ in size after"
    ):
        bad[0]
