"""Image decoding/encoding with OpenCV (RGB uint8 arrays)."""

from __future__ import annotations

import cv2
import numpy as np

from effvid.data.errors import DataError

__all__ = ["decode_image", "encode_jpeg", "encode_png", "jpeg_size", "worker_init_fn"]

#: libjpeg's DCT-domain scaling: decode at 1/2, 1/4 or 1/8 of the size for a fraction of the work
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
#: start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header without decoding it; None if ``data`` is not a
    JPEG or its header cannot be read (the decoder then reports the problem)."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF:
            if pos + 9 > len(data):
                return None
            return int.from_bytes(data[pos + 5 : pos + 7], "big"), int.from_bytes(
                data[pos + 7 : pos + 9], "big"
            )
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def decode_image(data: bytes, *, where: str, min_side: int | None = None) -> np.ndarray:
    """Encoded JPEG/PNG bytes -> (H, W, 3) RGB uint8. ``where`` names the frame in errors.

    ``min_side``: a JPEG whose short side is at least twice ``min_side`` is decoded at 1/2, 1/4 or
    1/8 of its size (the largest reduction that keeps the short side >= ``min_side``) by libjpeg's
    DCT scaling, which does a fraction of the work of a full decode. The pixels differ slightly
    from a full decode followed by a resize; PNGs and smaller JPEGs are decoded in full.
    """
    if not data:
        raise DataError(f"{where}: empty image data (expected JPEG or PNG bytes)")
    flag = cv2.IMREAD_COLOR
    if min_side is not None:
        size = jpeg_size(data)
        if size is not None:
            short = min(size)
            flag = next((f for factor, f in _REDUCED if short // factor >= min_side), flag)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if image is None:
        raise DataError(f"{where}: corrupt image data ({len(data)} bytes could not be decoded as JPEG/PNG)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_jpeg(rgb: np.ndarray, *, quality: int = 95) -> bytes:
    """(H, W, 3) RGB uint8 -> JPEG bytes (deterministic for a given input and quality)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DataError("JPEG encoding failed")
    return buf.tobytes()


def encode_png(image: np.ndarray) -> bytes:
    """(H, W) label map or (H, W, 3) RGB -> lossless PNG bytes."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise DataError("PNG encoding failed")
    return buf.tobytes()


def worker_init_fn(_: int) -> None:
    """DataLoader worker setup: OpenCV's own thread pool would oversubscribe the cores."""
    cv2.setNumThreads(0)
