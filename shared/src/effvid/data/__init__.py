"""Video data, in three separate concerns: storage (frame folders, LMDB, video files), decoding
(OpenCV) and frame sampling (pure functions); plus transforms, the standard datasets' list
formats, datasets built from them (``DataConfig`` + ``build_dataset``, through the registries
a package can extend), and the synthetic benchmark."""

from effvid.data.build import build_dataset, build_frame_sampler, open_configured_storage
from effvid.data.config import DataConfig
from effvid.data.datasets import SegmentationClipDataset, VideoClassificationDataset, check_records
from effvid.data.decode import decode_image, encode_jpeg, encode_png, jpeg_size, worker_init_fn
from effvid.data.errors import DataError
from effvid.data.formats import (
    SegmentationRecord,
    VideoRecord,
    read_activitynet,
    read_cityscapes,
    read_class_list,
    read_fcvid,
    read_fcvid_official,
    read_generic_list,
    read_kinetics_csv,
    read_minisports1m,
    read_split_file,
    read_sports1m_partition,
    read_youtube_ids,
    youtube_id,
)
from effvid.data.frame_sampling import apply_order, dense_clip_indices, segment_indices, uniform_indices
from effvid.data.registries import FORMATS, FRAME_SAMPLERS, STORAGES, TRANSFORMS, Listing
from effvid.data.storage import (
    FileListStorage,
    FrameFolderStorage,
    LmdbStorage,
    VideoFileStorage,
    VideoStorage,
    close_lmdb_envs,
    open_storage,
    write_lmdb,
)
from effvid.data.synthetic import SyntheticInfo, SyntheticSpec, generate
from effvid.data.transforms import TransformConfig, build_transform

__all__ = [
    "FORMATS",
    "FRAME_SAMPLERS",
    "STORAGES",
    "TRANSFORMS",
    "DataConfig",
    "DataError",
    "FileListStorage",
    "FrameFolderStorage",
    "Listing",
    "LmdbStorage",
    "SegmentationClipDataset",
    "SegmentationRecord",
    "SyntheticInfo",
    "SyntheticSpec",
    "TransformConfig",
    "VideoClassificationDataset",
    "VideoFileStorage",
    "VideoRecord",
    "VideoStorage",
    "apply_order",
    "build_dataset",
    "build_frame_sampler",
    "build_transform",
    "check_records",
    "close_lmdb_envs",
    "decode_image",
    "jpeg_size",
    "dense_clip_indices",
    "encode_jpeg",
    "encode_png",
    "generate",
    "open_configured_storage",
    "open_storage",
    "read_activitynet",
    "read_cityscapes",
    "read_class_list",
    "read_fcvid",
    "read_fcvid_official",
    "read_generic_list",
    "read_kinetics_csv",
    "read_minisports1m",
    "read_split_file",
    "read_sports1m_partition",
    "read_youtube_ids",
    "segment_indices",
    "uniform_indices",
    "worker_init_fn",
    "write_lmdb",
    "youtube_id",
]
