"""Clip loading speed: frame folders vs LMDB vs video files.

Generates a synthetic set of 224x224 videos in each storage form, then reads clips of 8 uniformly
sampled frames through VideoClassificationDataset + DataLoader with 0, 1 and 2 workers, and prints
clips/s and decoded MB/s (uint8 RGB bytes produced per second).

    python benchmarks/bench_data.py [--videos 48] [--root /tmp/effvid-bench-data] [--repeats 2] [--cold]

``--cold`` empties the OS page cache before every timed pass (needs root on Linux), the situation of
a dataset larger than memory; without it, files are read from a warm cache and decoding dominates.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from effvid.data import (
    SyntheticSpec,
    VideoClassificationDataset,
    generate,
    open_storage,
    read_generic_list,
    uniform_indices,
    worker_init_fn,
)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def drop_page_cache() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def measure(info, kind: str, workers: int, repeats: int, cold: bool) -> tuple[float, float]:
    storage = open_storage(kind, info.storage_path)
    records = read_generic_list(info.train_list) + read_generic_list(info.val_list)
    ds = VideoClassificationDataset(
        records, storage, sampler=functools.partial(uniform_indices, n=8), num_classes=4
    )
    loader = torch.utils.data.DataLoader(
        ds, batch_size=1, num_workers=workers, worker_init_fn=worker_init_fn, persistent_workers=workers > 0
    )
    next(iter(loader))  # warm-up: worker start, LMDB open, page cache
    best = 0.0
    for _ in range(repeats):
        if cold:
            drop_page_cache()
        start = time.perf_counter()
        n = sum(1 for _ in loader)
        best = max(best, n / (time.perf_counter() - start))
    return best, best * 8 * 224 * 224 * 3 / 1e6


def measure_io(info, kind: str, repeats: int, cold: bool) -> float:
    """Clips/s reading the 8 frames' encoded bytes only (no decoding): the storage's own cost."""
    storage = open_storage(kind, info.storage_path)
    records = read_generic_list(info.train_list) + read_generic_list(info.val_list)
    best = 0.0
    for _ in range(repeats):
        if cold:
            drop_page_cache()
        start = time.perf_counter()
        for r in records:
            for i in uniform_indices(storage.num_frames(r.key), 8):
                storage.read_bytes(r.key, i)
        best = max(best, len(records) / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "effvid-bench-data"))
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each timed pass")
    args = parser.parse_args()
    torch.set_num_threads(1)
    infos = {
        kind: generate(
            Path(args.root) / f"{kind}-{args.videos}",
            SyntheticSpec(storage=kind, size=224, num_frames=16, num_videos=args.videos, num_classes=4),
        )
        for kind in ("frames", "lmdb", "video")
    }
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}")
    print(
        f"clips of 8 frames at 224x224 from {args.videos} videos of 16 frames, batch 1, best of {args.repeats}"
    )
    print(f"{'storage':<8} {'workers':>7} {'clips/s':>9} {'MB/s':>8}")
    results = {}
    for kind, info in infos.items():
        for workers in (0, 1, 2):
            clips, mbs = measure(info, kind, workers, args.repeats, args.cold)
            results[kind, workers] = clips
            print(f"{kind:<8} {workers:>7} {clips:>9.1f} {mbs:>8.1f}")
    for workers in (0, 1, 2):
        print(
            f"LMDB / frame folder speed-up with {workers} workers: {results['lmdb', workers] / results['frames', workers]:.2f}x"
        )
    io = {kind: measure_io(infos[kind], kind, args.repeats, args.cold) for kind in ("frames", "lmdb")}
    print(
        f"encoded bytes only (no decoding), 0 workers: frames {io['frames']:.0f} clips/s, "
        f"LMDB {io['lmdb']:.0f} clips/s ({io['lmdb'] / io['frames']:.2f}x)"
    )


if __name__ == "__main__":
    main()
