"""Clip loading speed: frame folders vs LMDB vs video files.

Generates a synthetic set of 224x224 videos in each storage form, then reads clips of 8 uniformly
sampled frames, videos in shuffled order, through VideoClassificationDataset + DataLoader with 0, 1
and 2 workers, and prints clips/s and decoded MB/s (uint8 RGB bytes produced per second). LMDB is
measured as opened by default (``readahead=False``) and with ``readahead=True`` ("lmdb+ra").

    python benchmarks/bench_data.py [--videos 48] [--root /tmp/effvid-bench-data] [--repeats 2] [--cold]

``--cold`` empties the OS page cache before every timed pass (needs root on Linux), the situation of
a dataset larger than memory; without it, files are read from a warm cache and decoding dominates.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import torch

from effvid.data import (
    SyntheticSpec,
    VideoClassificationDataset,
    close_lmdb_envs,
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


#: the storages compared: label -> (generated storage kind, open_storage options)
VARIANTS = {
    "frames": ("frames", {}),
    "lmdb": ("lmdb", {}),
    "lmdb+ra": ("lmdb", {"readahead": True}),
    "video": ("video", {}),
}


def _open(info, variant: str):
    """The variant's storage and every video, in a fixed shuffled order (as training reads them)."""
    kind, options = VARIANTS[variant]
    close_lmdb_envs()  # lmdb and lmdb+ra open the same file with different options
    records = read_generic_list(info.train_list) + read_generic_list(info.val_list)
    random.Random(0).shuffle(records)
    return open_storage(kind, info.storage_path, **options), records


def _best_rate(one_pass, repeats: int, cold: bool) -> float:
    """Best items/s of ``repeats`` calls of ``one_pass`` (which returns its item count). Cold: LMDB
    maps are closed first, since the page-cache drop cannot evict pages a map holds."""
    best = 0.0
    for _ in range(repeats):
        if cold:
            close_lmdb_envs()
            drop_page_cache()
        start = time.perf_counter()
        n = one_pass()
        best = max(best, n / (time.perf_counter() - start))
    return best


def measure(info, variant: str, workers: int, repeats: int, cold: bool) -> tuple[float, float]:
    storage, records = _open(info, variant)
    ds = VideoClassificationDataset(
        records, storage, sampler=functools.partial(uniform_indices, n=8), num_classes=4
    )

    def make_loader(persistent: bool):
        return torch.utils.data.DataLoader(
            ds,
            batch_size=1,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
            num_workers=workers,
            worker_init_fn=worker_init_fn,
            persistent_workers=persistent,
        )

    # warm: persistent workers, one warm-up batch. cold: every pass starts workers afresh (their
    # start-up is timed), so that no process keeps an LMDB map across the page-cache drop
    loader = make_loader(workers > 0 and not cold)
    if not cold:
        next(iter(loader))
    best = _best_rate(lambda: sum(1 for _ in loader), repeats, cold)
    return best, best * 8 * 224 * 224 * 3 / 1e6


def measure_io(info, variant: str, repeats: int, cold: bool) -> float:
    """Clips/s reading the 8 frames' encoded bytes only (no decoding): the storage's own cost."""
    storage, records = _open(info, variant)

    def one_pass() -> int:
        for r in records:  # one call per clip, as datasets read (LMDB: one transaction)
            storage.read_bytes_many(r.key, uniform_indices(storage.num_frames(r.key), 8))
        return len(records)

    return _best_rate(one_pass, repeats, cold)


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
    for variant, (kind, _) in VARIANTS.items():
        for workers in (0, 1, 2):
            clips, mbs = measure(infos[kind], variant, workers, args.repeats, args.cold)
            results[variant, workers] = clips
            print(f"{variant:<8} {workers:>7} {clips:>9.1f} {mbs:>8.1f}")
    for variant in ("lmdb", "lmdb+ra"):
        ratios = ", ".join(
            f"{results[variant, w] / results['frames', w]:.2f}x ({w} workers)" for w in (0, 1, 2)
        )
        print(f"{variant} / frame folder: {ratios}")
    io = {
        v: measure_io(infos[VARIANTS[v][0]], v, args.repeats, args.cold)
        for v in ("frames", "lmdb", "lmdb+ra")
    }
    print(
        f"encoded bytes only (no decoding), 0 workers: frames {io['frames']:.0f} clips/s, "
        f"lmdb {io['lmdb']:.0f} ({io['lmdb'] / io['frames']:.2f}x), "
        f"lmdb+ra {io['lmdb+ra']:.0f} ({io['lmdb+ra'] / io['frames']:.2f}x)"
    )


if __name__ == "__main__":
    main()
