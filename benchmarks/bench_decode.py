"""Decoding a frame for a 224-px model: full JPEG decode vs libjpeg's reduced-size decode.

For JPEG frames of several sizes (textured synthetic pictures, quality 90), times the core's
``decode_image`` in full and with ``min_side`` (``--data.reduced_decode true``: 1/2, 1/4 or 1/8 of
the size by DCT scaling, the short side kept >= the model input), each followed by a preprocessing
to the model input (FrameExit's resize to 224x224 by default, ``--style standard`` for a short-side
resize to 256 and a 224 centre crop), and prints ms per frame, the speed-up and how far the model
input moves (mean and max absolute difference, in normalised units).

    python benchmarks/bench_decode.py [--repeats 30] [--style frameexit|standard]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import machine

from effvid.data import TransformConfig, build_transform, decode_image, encode_jpeg

SIZES = {"350p (466x350)": (350, 466), "480p": (480, 854), "720p": (720, 1280), "1080p": (1080, 1920)}


def picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like test picture: smooth gradients, edges and noise (JPEG sizes like a real frame's)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin((x + y) / 37.0)], -1) * 200
    blocks = (((x // 53) + (y // 41)) % 2)[..., None] * 40
    noise = rng.normal(0, 8, (height, width, 3))
    return np.clip(base + blocks + noise, 0, 255).astype(np.uint8)


def time_per_frame(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--style", choices=("frameexit", "standard"), default="frameexit")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.style == "frameexit":
        import frameexit.data  # noqa: F401  (registers the style)

        cfg = TransformConfig(style="frameexit", resize=224, crop=224, train_crop="center", flip=False)
    else:
        cfg = TransformConfig(style="standard", resize=256, crop=224)
    transform = build_transform(cfg, train=False)
    print(machine(), f"; preprocessing: {args.style}, short side kept >= {cfg.resize}")
    print(
        f"{'frame':<16} {'full ms':>8} {'reduced ms':>11} {'factor':>7} {'speed-up':>9} {'mean |d|':>9} {'max |d|':>8}"
    )

    def model_input(data: bytes, min_side: int | None) -> torch.Tensor:
        frame = torch.from_numpy(decode_image(data, where="bench", min_side=min_side)).permute(2, 0, 1)
        return transform(frame[None])[0]

    for name, (h, w) in SIZES.items():
        data = encode_jpeg(picture(h, w), quality=90)
        full = time_per_frame(lambda d=data: model_input(d, None), args.repeats)
        reduced = time_per_frame(lambda d=data: model_input(d, cfg.resize), args.repeats)
        factor = h // decode_image(data, where="bench", min_side=cfg.resize).shape[0]
        diff = (model_input(data, None) - model_input(data, cfg.resize)).abs()
        print(
            f"{name:<16} {full:>8.2f} {reduced:>11.2f} {f'1/{factor}':>7} {full / reduced:>8.2f}x "
            f"{diff.mean():>9.4f} {diff.max():>8.3f}"
        )


if __name__ == "__main__":
    main()
